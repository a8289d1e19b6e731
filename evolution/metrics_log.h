// The per-generation log of a run: RUN_DIR/log.jsonl, one JSON object per generation, e.g.
//   {"generation":12,"stage":0,"task_set":"qa","lambda":32,"restarts":0,"best_fitness":0.52,
//    "mean_fitness":0.41,"median_fitness":0.43,"mean_eval_fitness":0.47,"sigma":0.0651,
//    "mean_cache_size":812.5,"evaluations":2048,"evals_per_second":33.1,"elapsed_seconds":950.2,
//    "failures":1,"failure_details":[{"member":7,"reason":"prompt 3: score is nan"}]}
// Values that were not measured (no cache size reported, mean not evaluated) are null.
#pragma once
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "evolution/population_eval.h"

namespace nammkit::evo {

struct GenerationRecord {
  static constexpr double kMissing = std::numeric_limits<double>::quiet_NaN();
  int64_t generation = 0;  // 0-based global index of the generation this line describes
  int stage = 0;
  std::string task_set;
  int lambda = 0;
  int restarts = 0;
  double best_fitness = kMissing;  // of this generation's population
  double mean_fitness = kMissing;
  double median_fitness = kMissing;
  double mean_eval_fitness = kMissing;  // evaluation of the CMA-ES mean after the update, if done
  double sigma = kMissing;              // after the update
  double mean_cache_size = kMissing;
  int64_t evaluations = 0;  // elementary evaluations this generation
  double evals_per_second = kMissing;
  double elapsed_seconds = kMissing;  // since the run started (all sessions)
  int failures = 0;
  std::vector<MemberFailure> failure_details;
};

nlohmann::json to_json(const GenerationRecord& record);
// Throws Error("<where>: <field>: ...") on a missing or mistyped field.
GenerationRecord record_from_json(const nlohmann::json& j, const std::string& where);

// The record as one log line (no newline).
std::string log_line(const GenerationRecord& record);
// Appends one line and flushes it.
void append_log_line(const std::string& path, const GenerationRecord& record);
// All records of a log file; errors name the file and line. A missing file is an error.
std::vector<GenerationRecord> read_log(const std::string& path);
// Drops the lines of generations >= `generation` (a resumed run re-does them); atomic rewrite.
// `last_line` (the checkpoint's copy of generation - 1's line, if any) is appended when the log lacks
// that generation: a kill between the checkpoint's rename and the append lost it. Otherwise a
// missing file is left missing.
// `key` is the field holding the index (rl/'s logs count "iteration"s).
void truncate_log(const std::string& path, int64_t generation, const std::string& last_line = "",
                  const std::string& key = "generation");

}  // namespace nammkit::evo
