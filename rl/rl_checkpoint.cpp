#include "rl/rl_checkpoint.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <climits>
#include <cmath>

#include "core/error.h"
#include "core/file_io.h"
#include "core/framed_payload.h"
#include "rl_checkpoint.pb.h"

namespace nammkit::rl {

namespace {

constexpr std::string_view kMagic = "NAMMRLCK";

template <typename Field>
std::vector<double> finite_values(const Field& field, const std::string& where, const char* name) {
  std::vector<double> out(field.begin(), field.end());
  for (size_t i = 0; i < out.size(); ++i)
    if (!std::isfinite(out[i])) fail(where, std::string(name) + "[" + std::to_string(i) + "]: not finite");
  return out;
}

}  // namespace

std::string serialize_rl_checkpoint(const RlCheckpoint& c) {
  nammkit::RlCheckpointProto p;
  p.set_format_version(kRlCheckpointFormatVersion);
  p.set_algorithm(c.algorithm);
  p.mutable_params()->Add(c.params.begin(), c.params.end());
  p.mutable_adam_m()->Add(c.adam.m.begin(), c.adam.m.end());
  p.mutable_adam_v()->Add(c.adam.v.begin(), c.adam.v.end());
  p.set_adam_t(c.adam.t);
  for (const auto& [task, value] : c.baselines) (*p.mutable_baselines())[task] = value;
  const RlProgress& g = c.progress;
  p.set_iteration(g.iteration);
  p.set_stage_index(g.stage_index);
  p.set_stage_iteration(g.stage_iteration);
  p.set_model_runs(g.model_runs);
  p.set_failures(g.failures);
  p.set_elapsed_seconds(g.elapsed_seconds);
  p.set_has_best(g.has_best);
  p.set_best_eval(g.best_eval);
  p.set_best_iteration(g.best_iteration);
  p.mutable_best_params()->Add(g.best_params.begin(), g.best_params.end());
  p.set_config(c.config);
  p.set_extra(c.extra);
  p.set_last_log_line(c.last_log_line);
  std::string payload;
  {
    google::protobuf::io::StringOutputStream stream(&payload);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);  // the map in key order: equal checkpoints, equal bytes
    if (!p.SerializeToCodedStream(&coded)) fail("rl checkpoint", "serialisation failed");
  }
  return frame_payload(kMagic, kRlCheckpointFormatVersion, payload);
}

RlCheckpoint parse_rl_checkpoint(const std::string& bytes, const std::string& where) {
  const std::string_view payload = unframe_payload(bytes, kMagic, kRlCheckpointFormatVersion, "RL checkpoint", where);
  if (payload.size() > static_cast<uint64_t>(INT_MAX)) fail(where, "payload: larger than Protobuf's 2 GiB limit");
  nammkit::RlCheckpointProto p;
  if (!p.ParseFromArray(payload.data(), static_cast<int>(payload.size())))
    fail(where, "payload: not a valid RlCheckpointProto");
  if (p.format_version() != kRlCheckpointFormatVersion)
    fail(where, "format_version: message says " + std::to_string(p.format_version()));
  RlCheckpoint c;
  c.algorithm = p.algorithm();
  if (c.algorithm != "reinforce" && c.algorithm != "ppo") fail(where, "algorithm: unknown '" + c.algorithm + "'");
  c.params = finite_values(p.params(), where, "params");
  if (c.params.empty()) fail(where, "params: empty");
  c.adam.m = finite_values(p.adam_m(), where, "adam_m");
  c.adam.v = finite_values(p.adam_v(), where, "adam_v");
  c.adam.t = p.adam_t();
  if (c.adam.t < 0) fail(where, "adam_t: negative");
  const bool adam_fresh = c.adam.t == 0 && c.adam.m.empty() && c.adam.v.empty();
  if (!adam_fresh && (c.adam.m.size() != c.params.size() || c.adam.v.size() != c.params.size()))
    fail(where, "adam_m/adam_v: " + std::to_string(c.adam.m.size()) + "/" + std::to_string(c.adam.v.size()) +
                    " values for " + std::to_string(c.params.size()) + " parameters");
  for (const auto& [task, value] : p.baselines()) {
    if (!std::isfinite(value)) fail(where, "baselines[" + task + "]: not finite");
    c.baselines[task] = value;
  }
  RlProgress& g = c.progress;
  g.iteration = p.iteration();
  g.stage_index = p.stage_index();
  g.stage_iteration = p.stage_iteration();
  g.model_runs = p.model_runs();
  g.failures = p.failures();
  g.elapsed_seconds = p.elapsed_seconds();
  if (g.iteration < 0 || g.stage_index < 0 || g.stage_iteration < 0 || g.model_runs < 0 || g.failures < 0 ||
      !std::isfinite(g.elapsed_seconds))
    fail(where, "progress: negative or non-finite counters");
  g.has_best = p.has_best();
  g.best_eval = p.best_eval();
  g.best_iteration = p.best_iteration();
  g.best_params = finite_values(p.best_params(), where, "best_params");
  if (g.has_best && (g.best_params.size() != c.params.size() || !std::isfinite(g.best_eval)))
    fail(where, "best_params: " + std::to_string(g.best_params.size()) + " values for " +
                    std::to_string(c.params.size()) + " parameters");
  c.config = p.config();
  c.extra = p.extra();
  c.last_log_line = p.last_log_line();
  return c;
}

void save_rl_checkpoint(const std::string& path, const RlCheckpoint& checkpoint) {
  write_file_atomic(path, serialize_rl_checkpoint(checkpoint));
}

RlCheckpoint load_rl_checkpoint(const std::string& path) { return parse_rl_checkpoint(read_file(path), path); }

}  // namespace nammkit::rl
