// Checkpoints of an RL training run: parameters, Adam state, baselines, progress, config and opaque
// caller state, as a Protobuf message (rl/rl_checkpoint.proto) in the frame of core/framed_payload.h
// with the magic "NAMMRLCK". Loading checks sizes and finiteness; errors are nammkit::Error
// "<file>: <field>: <problem>". Written with write_file_atomic (a kill leaves the old or the new file).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "rl/adam.h"
#include "rl/advantage.h"

namespace nammkit::rl {

inline constexpr uint32_t kRlCheckpointFormatVersion = 1;

struct RlProgress {
  int64_t iteration = 0;  // completed, all stages
  int stage_index = 0;
  int64_t stage_iteration = 0;
  int64_t model_runs = 0;
  int64_t failures = 0;
  double elapsed_seconds = 0;
  bool has_best = false;
  double best_eval = 0;
  int64_t best_iteration = 0;
  std::vector<double> best_params;
};

struct RlCheckpoint {
  std::string algorithm;
  std::vector<double> params;
  AdamState adam;
  MovingBaselines baselines;
  RlProgress progress;
  std::string config;
  std::string extra;
  std::string last_log_line;
};

std::string serialize_rl_checkpoint(const RlCheckpoint& checkpoint);  // deterministic bytes
RlCheckpoint parse_rl_checkpoint(const std::string& bytes, const std::string& where);
void save_rl_checkpoint(const std::string& path, const RlCheckpoint& checkpoint);
RlCheckpoint load_rl_checkpoint(const std::string& path);

}  // namespace nammkit::rl
