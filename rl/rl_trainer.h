// The iteration loop of an RL training run (REINFORCE or PPO) over a list of stages, with a checkpoint
// and a log line per iteration, resume, and Ctrl-C handling: the RL counterpart of evolution/trainer.h.
//
// One iteration:
//   1. rollouts: samples_per_prompt stochastic runs of each of the iteration's prompts under the current
//      parameters (a RolloutSource; its seeds are functions of (seed, iteration, prompt, sample));
//   2. advantages from the rewards (rl/advantage.h); failed rollouts are counted and left out;
//   3. REINFORCE: one Adam step on the policy gradient; PPO: ppo_epochs Adam steps on the clipped
//      surrogate of the same rollouts (rl/policy_gradient.h);
//   4. optionally an evaluation of the greedy policy (drives best.ckpt);
//   5. RUN_DIR/latest.ckpt written, then one line appended to RUN_DIR/log.jsonl.
// A resumed run repeats exactly what the uninterrupted run would have done.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "namm/bam_scorer.h"
#include "namm/stochastic_keep.h"
#include "rl/adam.h"
#include "rl/advantage.h"
#include "rl/policy_gradient.h"
#include "rl/rl_checkpoint.h"

namespace nammkit::rl {

enum class Algorithm : uint8_t { Reinforce, Ppo };
const char* algorithm_name(Algorithm a);  // "reinforce", "ppo"

struct RlSettings {
  Algorithm algorithm = Algorithm::Reinforce;
  double temperature = 1.0;  // tau of p = sigma(score / tau)
  int samples_per_prompt = 4;
  int ppo_epochs = 4;     // Adam steps per batch (PPO)
  double ppo_clip = 0.2;  // epsilon (PPO)
  AdamSettings adam;
  BaselineSettings baseline;
};
// Throws nammkit::Error("<where>: <field>: ...").
void validate(const RlSettings& settings, const std::string& where);

// One stochastic run of one prompt.
struct Rollout {
  int prompt = 0;    // index in the stage's pool
  std::string task;  // the moving-average baseline's key
  double reward = 0;
  double cache_size = std::numeric_limits<double>::quiet_NaN();
  DecisionTrace trace;    // empty when it stays on the rank that ran the rollout (distributed runs)
  int64_t decisions = 0;  // the trace's decisions() and log_prob(); filled from the trace when it is here
  double log_prob = 0;
  std::string error;  // non-empty: the run failed (not used for learning)
};

class RolloutSource {
 public:
  virtual ~RolloutSource() = default;
  // samples_per_prompt rollouts of each prompt of `iteration` under `params` (the policy's stochastic
  // mode with the given temperature). Sets *interrupted when an interrupt request stopped it early.
  virtual std::vector<Rollout> rollouts(std::span<const double> params, int64_t iteration, const std::string& task_set,
                                        bool* interrupted) = 0;
  // The per-rollout gradient sums (rl/policy_gradient.h) at `params` of the rollouts batch[used[i]] with
  // advantages[i], in that order; `batch` is the last rollouts() result. The default computes them here
  // from the traces (in parallel); a distributed source asks the ranks that hold them.
  virtual std::vector<RolloutGradient> gradients(const ScorerShape& shape, std::span<const float> params,
                                                 std::span<const Rollout> batch, std::span<const size_t> used,
                                                 std::span<const double> advantages, const SurrogateOptions& options);
};

struct RlStage {
  int iterations = 0;
  std::string task_set;
};

struct RlTrainerOptions {
  std::string run_dir;  // must exist
  std::vector<RlStage> stages;
  std::string config;  // stored in every checkpoint, checked on resume
  bool progress_line = true;
  bool handle_sigint = true;
  bool allow_config_change = false;
};

// The log line of one iteration; NaN values are written as null.
struct RlRecord {
  static constexpr double kMissing = std::numeric_limits<double>::quiet_NaN();
  int64_t iteration = 0;
  int stage = 0;
  std::string task_set;
  std::string algorithm;
  int rollouts = 0;
  int failures = 0;
  double mean_reward = kMissing;
  double max_reward = kMissing;
  double objective = kMissing;      // of the first epoch (theta = theta_old)
  double grad_norm = kMissing;      // of the first epoch, before clipping
  double clip_fraction = kMissing;  // PPO: of the last epoch
  double approx_kl = kMissing;      // PPO: of the last epoch
  double mean_log_prob = kMissing;  // per decision, of the rollouts
  double mean_cache_size = kMissing;
  int64_t model_runs = 0;  // cumulative training rollouts (the x axis of learning curves)
  double eval = kMissing;  // the greedy policy's evaluation, when done
  double runs_per_second = kMissing;
  double elapsed_seconds = kMissing;
};
nlohmann::json to_json(const RlRecord& record);

enum class RlStatus { completed, interrupted };

// Evaluates the greedy policy after an iteration (higher is better) or returns NaN to skip it.
using GreedyEvaluator =
    std::function<double(std::span<const double> params, int64_t iteration, const std::string& task_set)>;
// Called after each iteration's update, before its checkpoint.
using IterationHook = std::function<void(const RlRecord& record)>;

class RlTrainer {
 public:
  RlTrainer(RlSettings settings, ScorerShape shape, std::vector<double> initial_params, RolloutSource& source,
            RlTrainerOptions options);

  void set_evaluator(GreedyEvaluator fn) { evaluator_ = std::move(fn); }
  void set_hook(IterationHook fn) { hook_ = std::move(fn); }
  void set_extra_state(std::string extra) { extra_ = std::move(extra); }

  // Continues from a checkpoint (errors name the file and field); drops log lines it has not completed.
  void resume(const std::string& checkpoint_path);
  RlStatus run();

  const std::vector<double>& params() const { return params_; }
  const RlProgress& progress() const { return progress_; }
  RlCheckpoint make_checkpoint() const;
  std::string latest_path() const { return options_.run_dir + "/latest.ckpt"; }
  std::string best_path() const { return options_.run_dir + "/best.ckpt"; }
  std::string log_path() const { return options_.run_dir + "/log.jsonl"; }

 private:
  RlRecord run_iteration(const RlStage& stage, std::vector<Rollout>& rollouts, double rollout_seconds);
  void print_progress(const RlRecord& r, double session_seconds, int64_t session_iterations) const;

  RlSettings settings_;
  ScorerShape shape_;
  std::vector<double> params_;
  RolloutSource& source_;
  RlTrainerOptions options_;
  GreedyEvaluator evaluator_;
  IterationHook hook_;
  std::string extra_;
  AdamState adam_;
  MovingBaselines baselines_;
  RlProgress progress_;
  std::string last_log_line_;
  double elapsed_base_ = 0;
  std::chrono::steady_clock::time_point session_start_;
};

}  // namespace nammkit::rl
