// The generation loop of an evolution run: ask -> evaluate -> tell, over a list of stages, with a
// checkpoint and a log line per generation, resume, and Ctrl-C handling.
//
// Files in options.run_dir:
//   latest.ckpt  the state after the last completed generation (written before every log line; a fresh
//                run writes it once before generation 0 too)
//   best.ckpt    the state when the evaluation of the CMA-ES mean was best (only with a mean evaluator)
//   log.jsonl    one line per generation (evolution/metrics_log.h)
// A resumed run (resume("RUN_DIR/latest.ckpt")) repeats exactly what the uninterrupted run would have
// done: the CMA-ES state and RNG are restored bit-for-bit and prompts are sampled by (seed, generation).
#pragma once
#include <Eigen/Dense>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "evolution/checkpoint.h"
#include "evolution/cmaes.h"
#include "evolution/metrics_log.h"
#include "evolution/population_eval.h"

namespace nammkit::evo {

// One stage of training: a number of generations on one task set. A stage continues from the
// previous stage's CMA-ES state (nothing is reset between stages).
struct Stage {
  int generations = 0;
  std::string task_set;  // opaque id handed to the evaluator
};

struct TrainerOptions {
  std::string run_dir;  // must exist
  std::vector<Stage> stages;
  std::string config;                // experiment config, stored in every checkpoint
  bool progress_line = true;         // one line per generation on stderr
  bool handle_sigint = true;         // install the SIGINT handler (evolution/interrupt.h)
  bool allow_config_change = false;  // resume() with a config different from the checkpoint's
};

enum class TrainStatus {
  completed,    // all stages done
  interrupted,  // SIGINT: latest.ckpt holds the last completed generation; resume continues from it
  stopped,      // a CMA-ES stop criterion with no restart left
};
const char* to_string(TrainStatus status);

struct TrainResult {
  TrainStatus status = TrainStatus::completed;
  int64_t generations_run = 0;  // in this call
  std::string stop_reason;
};

// Evaluates the CMA-ES mean after a generation (fitness, higher is better), or returns NaN to skip it
// this generation. Drives best.ckpt and the log's mean_eval_fitness.
using MeanEvaluator =
    std::function<double(const Eigen::VectorXd& mean, int64_t generation, const std::string& task_set)>;
// Called after each generation's update, before its checkpoint (e.g. to refresh the extra state).
using GenerationHook = std::function<void(const GenerationRecord& record)>;

class Trainer {
 public:
  Trainer(CmaesSettings settings, PopulationEvaluator& evaluator, TrainerOptions options);

  void set_mean_evaluator(MeanEvaluator fn) { mean_evaluator_ = std::move(fn); }
  void set_generation_hook(GenerationHook fn) { hook_ = std::move(fn); }
  // Opaque caller state saved in every checkpoint and restored by resume().
  void set_extra_state(std::string extra) { extra_ = std::move(extra); }

  // Continues from a checkpoint; drops log lines of generations it has not completed.
  // Throws Error naming the file and field when the checkpoint does not fit the settings/config.
  void resume(const std::string& checkpoint_path);

  // Runs the remaining generations of all stages.
  TrainResult run();

  const Cmaes& strategy() const { return cmaes_; }
  const RunProgress& progress() const { return progress_; }
  Checkpoint make_checkpoint() const;
  std::string latest_path() const { return options_.run_dir + "/latest.ckpt"; }
  std::string best_path() const { return options_.run_dir + "/best.ckpt"; }
  std::string log_path() const { return options_.run_dir + "/log.jsonl"; }

 private:
  GenerationRecord run_generation(const Stage& stage, const GenerationEval& eval, double seconds);
  void print_progress(const GenerationRecord& record, double session_seconds, int64_t session_generations) const;
  double elapsed_seconds() const;

  Cmaes cmaes_;
  PopulationEvaluator& evaluator_;
  TrainerOptions options_;
  MeanEvaluator mean_evaluator_;
  GenerationHook hook_;
  std::string extra_;
  RunProgress progress_;
  bool resumed_ = false;
  double elapsed_base_ = 0;  // elapsed seconds of earlier sessions
  std::chrono::steady_clock::time_point session_start_;
};

}  // namespace nammkit::evo
