// CMA-ES costs in the NAMM regime (n = 4172, lambda = 32) and the 20-D Rastrigin IPOP evaluation count.
// One JSON object per line on stdout:
//   {"bench":"cmaes_generation","mode":"full"|"separable",...}  ask+tell wall time per generation
//     without a decomposition, the time of one eigendecomposition, and the amortised time per generation
//     with the lazy schedule (ask+tell + decomposition / gap);
//   {"bench":"checkpoint","n":4172,...}                        serialise + atomic write of the full state;
//   {"bench":"rastrigin_ipop","n":20,...}                      median evaluations over seeds.
// Usage: bench_cmaes [--quick]   (--quick: n = 1000 and 3 Rastrigin seeds, for a smoke run)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/file_io.h"
#include "evolution/checkpoint.h"
#include "evolution/cmaes.h"
#include "evolution/test_functions.h"

using namespace nammkit::evo;
using Clock = std::chrono::steady_clock;

static double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

static void bench_generation(int n, bool separable, int generations) {
  CmaesSettings s = namm_reference_settings(n, 1);
  s.separable = separable;
  s.reference_initial_jitter = !separable;  // forces one decomposition at generation 0: time it
  Cmaes es(s);
  std::vector<double> fitness(32);
  auto evaluate = [&](const Eigen::MatrixXd& X) {
    for (int k = 0; k < 32; ++k) fitness[k] = -(X.col(k).array() - 1.0).square().sum();
  };
  // Generation 0 includes the decomposition (full): time it separately.
  auto t0 = Clock::now();
  const Eigen::MatrixXd& X0 = es.ask();
  const double first_ask = seconds_since(t0);
  evaluate(X0);
  es.tell(fitness);

  double ask_tell = 0;
  for (int g = 0; g < generations; ++g) {
    t0 = Clock::now();
    const Eigen::MatrixXd& X = es.ask();
    ask_tell += seconds_since(t0);
    evaluate(X);
    t0 = Clock::now();
    es.tell(fitness);
    ask_tell += seconds_since(t0);
  }
  ask_tell /= generations;
  const int gap = es.constants().eigen_gap;
  const double eig = separable ? 0.0 : first_ask - ask_tell / 2;  // minus the sampling part, roughly
  std::printf(
      "{\"bench\":\"cmaes_generation\",\"mode\":\"%s\",\"n\":%d,\"lambda\":32,\"generations_timed\":%d,"
      "\"ask_tell_s\":%.4f,\"eigendecomposition_s\":%.3f,\"eigen_gap\":%d,\"amortised_s_per_generation\":%.4f,"
      "\"decompositions_in_timed_generations\":%lld}\n",
      separable ? "separable" : "full", n, generations, ask_tell, eig, separable ? 0 : gap,
      ask_tell + (separable ? 0.0 : eig / gap), static_cast<long long>(es.state().eigen_count - (separable ? 0 : 1)));
  std::fflush(stdout);

  if (!separable) {
    Checkpoint c;
    c.cmaes = es.state();
    const std::string path = (std::filesystem::temp_directory_path() / "nammkit_bench_cmaes.ckpt").string();
    t0 = Clock::now();
    const std::string bytes = serialize_checkpoint(c);
    nammkit::write_file_atomic(path, bytes);
    const double write_s = seconds_since(t0);
    t0 = Clock::now();
    Checkpoint back = load_checkpoint(path);
    const double read_s = seconds_since(t0);
    std::filesystem::remove(path);
    std::printf("{\"bench\":\"checkpoint\",\"n\":%d,\"bytes\":%zu,\"write_s\":%.3f,\"load_s\":%.3f}\n", n, bytes.size(),
                write_s, read_s);
    std::fflush(stdout);
  }
}

static void bench_rastrigin(int n, int seeds) {
  std::vector<double> evals;
  int success = 0;
  auto t0 = Clock::now();
  for (int seed = 1; seed <= seeds; ++seed) {
    CmaesSettings s;
    s.n = n;
    s.sigma0 = 2.0;
    s.seed = static_cast<uint64_t>(seed);
    Rng init(derive_seed(static_cast<uint64_t>(seed), 12345));
    for (int i = 0; i < n; ++i) s.mean0.push_back(init.uniform(-5.0, 5.0));
    s.restarts.enabled = true;
    s.restarts.max_restarts = 12;
    s.restarts.box_lower = -5.0;
    s.restarts.box_upper = 5.0;
    MinimiseResult r = minimise(rastrigin, s, 1e-8, 10000000);
    success += r.reached;
    evals.push_back(r.reached ? static_cast<double>(r.evaluations) : INFINITY);
  }
  std::sort(evals.begin(), evals.end());
  std::printf(
      "{\"bench\":\"rastrigin_ipop\",\"n\":%d,\"seeds\":%d,\"success\":%d,\"median_evaluations\":%.0f,"
      "\"reference\":285792,\"ratio\":%.3f,\"wall_s\":%.1f}\n",
      n, seeds, success, evals[evals.size() / 2], evals[evals.size() / 2] / 285792.0, seconds_since(t0));
  std::fflush(stdout);
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int n = quick ? 1000 : 4172;
  bench_generation(n, /*separable=*/true, 20);
  bench_generation(n, /*separable=*/false, 5);
  bench_rastrigin(20, quick ? 3 : 11);
  return 0;
}
