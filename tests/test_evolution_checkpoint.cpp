// Checkpoints: bit-for-bit resume of the CMA-ES (full, separable, lazy mid-gap, across an IPOP restart)
// and rejection of truncated, corrupted, wrong-version and inconsistent files with errors that name the
// file and the field.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file_io.h"
#include "evolution/checkpoint.h"
#include "evolution/cmaes.h"
#include "evolution/test_functions.h"

using namespace nammkit::evo;
namespace fs = std::filesystem;

namespace {

std::string temp_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("nammkit_test_evolution_checkpoint_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

void step(Cmaes& es, double (*f)(const Eigen::VectorXd&)) {
  const Eigen::MatrixXd& X = es.ask();
  std::vector<double> fitness(X.cols());
  for (Eigen::Index k = 0; k < X.cols(); ++k) fitness[k] = -f(X.col(k));
  es.tell(fitness);
}

Checkpoint wrap(const CmaesState& state) {
  Checkpoint c;
  c.cmaes = state;
  c.config = "config text";
  c.extra = std::string("opaque\0bytes", 12);
  c.progress.stage_index = 1;
  c.progress.elapsed_seconds = 12.5;
  return c;
}

// Runs `total` generations straight, and `split` + checkpoint file + fresh object + the rest; the two
// final states must serialise to the same bytes.
void expect_bit_for_bit_resume(const CmaesSettings& settings, double (*f)(const Eigen::VectorXd&), int split, int total,
                               const std::string& name) {
  Cmaes straight(settings);
  for (int g = 0; g < total; ++g) step(straight, f);

  const std::string path = temp_dir(name) + "/latest.ckpt";
  {
    Cmaes first(settings);
    for (int g = 0; g < split; ++g) step(first, f);
    save_checkpoint(path, wrap(first.state()));
  }
  Checkpoint loaded = load_checkpoint(path);
  EXPECT_EQ(loaded.config, "config text");
  EXPECT_EQ(loaded.extra, std::string("opaque\0bytes", 12));
  Cmaes resumed(settings);
  resumed.restore(loaded.cmaes, path);
  for (int g = split; g < total; ++g) step(resumed, f);

  // (EXPECT_TRUE, not EXPECT_EQ: a failure would print megabytes of serialised state.)
  EXPECT_TRUE(serialize_checkpoint(wrap(straight.state())) == serialize_checkpoint(wrap(resumed.state()))) << name;
  EXPECT_TRUE(straight.state().mean == resumed.state().mean) << name;
}

}  // namespace

TEST(EvolutionCheckpoint, ResumeIsBitForBitFull) {
  CmaesSettings s;
  s.n = 12;
  s.seed = 42;
  s.mean0.assign(12, 0.5);
  expect_bit_for_bit_resume(s, rosenbrock, 3, 6, "full");
}

TEST(EvolutionCheckpoint, ResumeIsBitForBitSeparable) {
  CmaesSettings s;
  s.n = 40;
  s.seed = 43;
  s.separable = true;
  s.mean0.assign(40, 1.0);
  expect_bit_for_bit_resume(s, ellipsoid, 3, 6, "separable");
}

// n = 600, lambda = 32: decomposition gap 3. Resuming at generation 4 restores a B, D that are a
// generation older than C, and the reference jitter makes generation 0 decompose.
TEST(EvolutionCheckpoint, ResumeIsBitForBitMidLazyGap) {
  CmaesSettings s = namm_reference_settings(600, 44);
  expect_bit_for_bit_resume(s, sphere, 4, 7, "lazy");
}

TEST(EvolutionCheckpoint, ResumeIsBitForBitAcrossIpopRestart) {
  CmaesSettings s;
  s.n = 2;
  s.seed = 45;
  s.sigma0 = 2.0;
  s.mean0 = {3.0, -2.0};
  s.restarts.enabled = true;
  s.restarts.box_lower = -5;
  s.restarts.box_upper = 5;
  // Find a generation count that spans a restart, then split before it.
  Cmaes probe(s);
  int g = 0;
  while (probe.state().restarts == 0 && g < 5000) {
    step(probe, rastrigin);
    ++g;
  }
  ASSERT_EQ(probe.state().restarts, 1);
  expect_bit_for_bit_resume(s, rastrigin, g - 5, g + 10, "ipop");
}

TEST(EvolutionCheckpoint, RestoreRejectsAStateOfAnotherProblem) {
  CmaesSettings s;
  s.n = 5;
  Cmaes es(s);
  step(es, sphere);
  CmaesSettings other = s;
  other.n = 6;
  Cmaes wrong_n(other);
  EXPECT_THROW(wrong_n.restore(es.state(), "x.ckpt"), nammkit::Error);
  other = s;
  other.separable = true;
  Cmaes wrong_kind(other);
  EXPECT_THROW(wrong_kind.restore(es.state(), "x.ckpt"), nammkit::Error);
}

namespace {

std::string valid_bytes() {
  CmaesSettings s;
  s.n = 6;
  s.seed = 1;
  Cmaes es(s);
  step(es, sphere);
  step(es, sphere);
  return serialize_checkpoint(wrap(es.state()));
}

// Loads `bytes` from a file and returns the error message ("" when it loads).
std::string load_error(const std::string& bytes, const std::string& path) {
  nammkit::write_file_atomic(path, bytes);
  try {
    load_checkpoint(path);
  } catch (const nammkit::Error& e) {
    return e.what();
  }
  return "";
}

void expect_error(const std::string& message, const std::string& path, const std::string& field) {
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find(field), std::string::npos) << "expected '" << field << "' in: " << message;
}

}  // namespace

TEST(EvolutionCheckpoint, ValidFileLoads) {
  const std::string path = temp_dir("valid") + "/ok.ckpt";
  EXPECT_EQ(load_error(valid_bytes(), path), "");
}

TEST(EvolutionCheckpoint, TruncatedFileIsRejectedAtEveryLength) {
  const std::string bytes = valid_bytes();
  const std::string path = temp_dir("truncated") + "/cut.ckpt";
  // Every prefix, including those ending on a Protobuf field boundary (which Protobuf alone accepts).
  for (size_t len = 0; len < bytes.size(); len += (len < 64 ? 1 : 7)) {
    const std::string message = load_error(bytes.substr(0, len), path);
    ASSERT_NE(message, "") << "prefix of " << len << " bytes loaded";
    expect_error(message, path, "truncated");
  }
}

TEST(EvolutionCheckpoint, CorruptedPayloadIsRejected) {
  const std::string path = temp_dir("corrupt") + "/flip.ckpt";
  std::string bytes = valid_bytes();
  for (size_t pos : {size_t{40}, bytes.size() / 2, bytes.size() - 1}) {
    std::string bad = bytes;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x10);
    expect_error(load_error(bad, path), path, "checksum");
  }
  std::string trailing = bytes + "xx";
  expect_error(load_error(trailing, path), path, "trailing");
  std::string magic = bytes;
  magic[0] = 'X';
  expect_error(load_error(magic, path), path, "magic");
  expect_error(load_error("", path), path, "header");
}

TEST(EvolutionCheckpoint, WrongVersionIsRejected) {
  const std::string path = temp_dir("version") + "/v2.ckpt";
  std::string bytes = valid_bytes();
  bytes[8] = 2;  // format version field of the header
  const std::string message = load_error(bytes, path);
  expect_error(message, path, "format_version");
  EXPECT_NE(message.find("2"), std::string::npos);
}

TEST(EvolutionCheckpoint, InconsistentSizesAndNonFiniteValuesAreRejected) {
  const std::string path = temp_dir("inconsistent") + "/bad.ckpt";
  CmaesSettings s;
  s.n = 6;
  Cmaes es(s);
  step(es, sphere);

  CmaesState state = es.state();
  state.mean.resize(5);
  expect_error(load_error(serialize_checkpoint(wrap(state)), path), path, "mean");

  state = es.state();
  state.C.resize(6, 5);
  expect_error(load_error(serialize_checkpoint(wrap(state)), path), path, "C");

  state = es.state();
  state.p_sigma[2] = NAN;
  expect_error(load_error(serialize_checkpoint(wrap(state)), path), path, "p_sigma");

  state = es.state();
  state.sigma = std::numeric_limits<double>::infinity();
  expect_error(load_error(serialize_checkpoint(wrap(state)), path), path, "sigma");

  Checkpoint c = wrap(es.state());
  c.progress.has_best_mean = true;
  c.progress.best_mean_fitness = 1.0;
  c.progress.best_mean = {1.0, 2.0};
  expect_error(load_error(serialize_checkpoint(c), path), path, "best_mean");
}

TEST(EvolutionCheckpoint, MissingFileNamesThePath) {
  try {
    load_checkpoint("/nonexistent/dir/latest.ckpt");
    FAIL();
  } catch (const nammkit::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/latest.ckpt"), std::string::npos);
  }
}
