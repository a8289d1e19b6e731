// Checkpoints of an evolution run: the full CMA-ES state, the trainer's progress, the experiment config
// and opaque caller state, as a Protobuf message (evolution/checkpoint.proto) in the frame of
// core/framed_payload.h with the magic "NAMMCKPT" (magic, format version, payload length, CRC-32).
//
// Loading validates the version, the sizes against n and the finiteness of every float; errors are
// nammkit::Error "<file>: <field>: <problem>". Files are written with write_file_atomic.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "evolution/cmaes_state.h"

namespace nammkit::evo {

inline constexpr uint32_t kCheckpointFormatVersion = 1;

// Where a multi-stage run is, and what the trainer tracks besides the CMA-ES state.
struct RunProgress {
  // The current stage and the generations completed in it; run() moves on once a stage is complete
  // (so a finished run ends at the last stage with all its generations done).
  int stage_index = 0;
  int64_t stage_generation = 0;
  bool has_best_mean = false;
  double best_mean_fitness = 0;  // best evaluation of the CMA-ES mean (valid when has_best_mean)
  int64_t best_mean_generation = 0;
  std::vector<double> best_mean;  // the mean vector that achieved it
  double elapsed_seconds = 0;
  int64_t prompt_evaluations = 0;
  int64_t failures = 0;
};

struct Checkpoint {
  CmaesState cmaes;
  RunProgress progress;
  std::string config;
  std::string extra;
  std::string last_log_line;  // the log line of the last generation done; empty before the first
};

// Serialised bytes (frame + message); deterministic for equal checkpoints.
std::string serialize_checkpoint(const Checkpoint& checkpoint);
// `where` names the source in errors (normally the file path).
Checkpoint parse_checkpoint(const std::string& bytes, const std::string& where);

void save_checkpoint(const std::string& path, const Checkpoint& checkpoint);
Checkpoint load_checkpoint(const std::string& path);

}  // namespace nammkit::evo
