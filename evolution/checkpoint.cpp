#include "evolution/checkpoint.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <climits>
#include <cmath>
#include <cstring>

#include "checkpoint.pb.h"  // generated into the build root (protobuf_generate drops the folder)
#include "core/error.h"
#include "core/file_io.h"
#include "core/framed_payload.h"

namespace nammkit::evo {

namespace {

constexpr std::string_view kMagic = "NAMMCKPT";

template <typename Field>
void put_vector(Field* field, const Eigen::VectorXd& v) {
  field->Reserve(static_cast<int>(v.size()));
  for (Eigen::Index i = 0; i < v.size(); ++i) field->Add(v[i]);
}

void put_matrix(nammkit::DoubleMatrix* out, const Eigen::MatrixXd& m) {
  out->set_rows(static_cast<uint64_t>(m.rows()));
  out->set_cols(static_cast<uint64_t>(m.cols()));
  out->mutable_data()->Resize(static_cast<int>(m.size()), 0.0);
  if (m.size() == 0) return;  // memcpy with null pointers is undefined even for 0 bytes
  std::memcpy(out->mutable_data()->mutable_data(), m.data(), sizeof(double) * static_cast<size_t>(m.size()));
}

template <typename Field>
Eigen::VectorXd get_vector(const Field& field) {
  return Eigen::Map<const Eigen::VectorXd>(field.data(), field.size());
}

Eigen::MatrixXd get_matrix(const nammkit::DoubleMatrix& in, const std::string& where, const char* field) {
  const uint64_t rows = in.rows(), cols = in.cols();
  if (rows > (1u << 20) || cols > (1u << 20) || rows * cols != static_cast<uint64_t>(in.data_size()))
    fail(where, std::string(field) + ": " + std::to_string(in.data_size()) + " values for a " + std::to_string(rows) +
                    "x" + std::to_string(cols) + " matrix");
  return Eigen::Map<const Eigen::MatrixXd>(in.data().data(), static_cast<Eigen::Index>(rows),
                                           static_cast<Eigen::Index>(cols));
}

void to_proto(const CmaesState& s, nammkit::CmaesStateProto* p) {
  p->set_n(s.n);
  p->set_lambda(s.lambda);
  p->set_separable(s.separable);
  p->set_generation(s.generation);
  p->set_total_generations(s.total_generations);
  p->set_evaluations(s.evaluations);
  p->set_restarts(s.restarts);
  put_vector(p->mutable_mean(), s.mean);
  p->set_sigma(s.sigma);
  put_vector(p->mutable_p_sigma(), s.p_sigma);
  put_vector(p->mutable_p_c(), s.p_c);
  put_matrix(p->mutable_c(), s.C);
  put_matrix(p->mutable_b(), s.B);
  put_vector(p->mutable_d(), s.D);
  p->set_eigen_generation(s.eigen_generation);
  p->set_decomposition_pending(s.decomposition_pending);
  p->set_eigen_count(s.eigen_count);
  p->set_rng_state(s.rng.save());
  p->set_has_best(s.has_best);
  if (s.has_best) put_vector(p->mutable_best_x(), s.best_x);
  p->set_best_fitness(s.has_best ? s.best_fitness : 0.0);
  for (double v : s.best_history) p->add_best_history(v);
  for (double v : s.median_history) p->add_median_history(v);
  p->set_last_generation_range(s.last_generation_range);
  p->set_stop_reason(s.stop_reason);
}

CmaesState from_proto(const nammkit::CmaesStateProto& p, const std::string& where) {
  CmaesState s;
  s.n = p.n();
  s.lambda = p.lambda();
  s.separable = p.separable();
  s.generation = p.generation();
  s.total_generations = p.total_generations();
  s.evaluations = p.evaluations();
  s.restarts = p.restarts();
  s.mean = get_vector(p.mean());
  s.sigma = p.sigma();
  s.p_sigma = get_vector(p.p_sigma());
  s.p_c = get_vector(p.p_c());
  s.C = get_matrix(p.c(), where, "cmaes.c");
  s.B = get_matrix(p.b(), where, "cmaes.b");
  s.D = get_vector(p.d());
  s.eigen_generation = p.eigen_generation();
  s.decomposition_pending = p.decomposition_pending();
  s.eigen_count = p.eigen_count();
  s.rng.restore(p.rng_state(), where + ": cmaes");
  s.has_best = p.has_best();
  if (s.has_best) {
    s.best_x = get_vector(p.best_x());
    s.best_fitness = p.best_fitness();
  }
  s.best_history.assign(p.best_history().begin(), p.best_history().end());
  s.median_history.assign(p.median_history().begin(), p.median_history().end());
  s.last_generation_range = p.last_generation_range();
  s.stop_reason = p.stop_reason();
  validate_state(s, where + ": cmaes");
  return s;
}

void to_proto(const RunProgress& r, nammkit::RunProgressProto* p) {
  p->set_stage_index(r.stage_index);
  p->set_stage_generation(r.stage_generation);
  p->set_has_best_mean(r.has_best_mean);
  p->set_best_mean_fitness(r.best_mean_fitness);
  p->set_best_mean_generation(r.best_mean_generation);
  for (double v : r.best_mean) p->add_best_mean(v);
  p->set_elapsed_seconds(r.elapsed_seconds);
  p->set_prompt_evaluations(r.prompt_evaluations);
  p->set_failures(r.failures);
}

RunProgress from_proto(const nammkit::RunProgressProto& p, int n, const std::string& where) {
  RunProgress r;
  r.stage_index = p.stage_index();
  r.stage_generation = p.stage_generation();
  r.has_best_mean = p.has_best_mean();
  r.best_mean_fitness = p.best_mean_fitness();
  r.best_mean_generation = p.best_mean_generation();
  r.best_mean.assign(p.best_mean().begin(), p.best_mean().end());
  r.elapsed_seconds = p.elapsed_seconds();
  r.prompt_evaluations = p.prompt_evaluations();
  r.failures = p.failures();
  if (r.stage_index < 0 || r.stage_generation < 0) fail(where, "progress.stage_index: negative");
  if (r.has_best_mean) {
    if (static_cast<int>(r.best_mean.size()) != n)
      fail(where,
           "progress.best_mean: has " + std::to_string(r.best_mean.size()) + " values, n is " + std::to_string(n));
    if (!std::isfinite(r.best_mean_fitness)) fail(where, "progress.best_mean_fitness: not finite");
    for (double v : r.best_mean)
      if (!std::isfinite(v)) fail(where, "progress.best_mean: contains a non-finite value");
  } else if (!r.best_mean.empty()) {
    fail(where, "progress.best_mean: present although has_best_mean is false");
  }
  if (!std::isfinite(r.elapsed_seconds) || r.elapsed_seconds < 0) fail(where, "progress.elapsed_seconds: invalid");
  return r;
}

}  // namespace

std::string serialize_checkpoint(const Checkpoint& c) {
  nammkit::CheckpointProto proto;
  proto.set_format_version(kCheckpointFormatVersion);
  proto.set_config(c.config);
  proto.set_extra(c.extra);
  proto.set_last_log_line(c.last_log_line);
  to_proto(c.cmaes, proto.mutable_cmaes());
  to_proto(c.progress, proto.mutable_progress());
  if (proto.ByteSizeLong() > static_cast<size_t>(INT_MAX))
    fail("checkpoint", "size: over Protobuf's 2 GiB limit (full covariance with n above ~11,000)");
  std::string payload;
  // Deterministic serialisation: equal checkpoints give equal bytes (the resume test relies on it).
  {
    google::protobuf::io::StringOutputStream stream(&payload);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    if (!proto.SerializeToCodedStream(&coded)) fail("checkpoint", "serialisation failed");
  }
  return frame_payload(kMagic, kCheckpointFormatVersion, payload);
}

Checkpoint parse_checkpoint(const std::string& bytes, const std::string& where) {
  const std::string_view payload = unframe_payload(bytes, kMagic, kCheckpointFormatVersion, "checkpoint", where);
  if (payload.size() > static_cast<uint64_t>(INT_MAX)) fail(where, "payload: larger than Protobuf's 2 GiB limit");
  nammkit::CheckpointProto proto;
  if (!proto.ParseFromArray(payload.data(), static_cast<int>(payload.size())))
    fail(where, "payload: not a valid CheckpointProto");
  if (proto.format_version() != kCheckpointFormatVersion)
    fail(where, "format_version: message says " + std::to_string(proto.format_version()) + ", header says " +
                    std::to_string(kCheckpointFormatVersion));
  if (!proto.has_cmaes()) fail(where, "cmaes: missing");
  if (!proto.has_progress()) fail(where, "progress: missing");
  Checkpoint c;
  c.cmaes = from_proto(proto.cmaes(), where);
  c.progress = from_proto(proto.progress(), c.cmaes.n, where);
  c.config = proto.config();
  c.extra = proto.extra();
  c.last_log_line = proto.last_log_line();
  return c;
}

void save_checkpoint(const std::string& path, const Checkpoint& checkpoint) {
  write_file_atomic(path, serialize_checkpoint(checkpoint));
}

Checkpoint load_checkpoint(const std::string& path) { return parse_checkpoint(read_file(path), path); }

}  // namespace nammkit::evo
