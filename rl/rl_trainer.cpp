#include "rl/rl_trainer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/file_io.h"
#include "core/text.h"
#include "evolution/interrupt.h"
#include "evolution/metrics_log.h"
#include "rl/policy_gradient.h"

namespace nammkit::rl {

namespace {
nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }
}  // namespace

const char* algorithm_name(Algorithm a) { return a == Algorithm::Ppo ? "ppo" : "reinforce"; }

void validate(const RlSettings& s, const std::string& where) {
  if (!(s.temperature > 0) || !std::isfinite(s.temperature))
    fail(where, "temperature: expected a finite value > 0, got " + std::to_string(s.temperature));
  if (s.samples_per_prompt < 1 || s.samples_per_prompt > 4096)
    fail(where, "samples_per_prompt: expected 1..4096, got " + std::to_string(s.samples_per_prompt));
  if (s.baseline.kind == BaselineKind::LeaveOneOut && s.samples_per_prompt < 2)
    fail(where, "samples_per_prompt: the leave_one_out baseline needs >= 2 samples per prompt, got " +
                    std::to_string(s.samples_per_prompt));
  if (!(s.baseline.decay >= 0 && s.baseline.decay < 1))
    fail(where, "baseline_decay: expected a value in [0, 1), got " + std::to_string(s.baseline.decay));
  if (s.ppo_epochs < 1 || s.ppo_epochs > 1000)
    fail(where, "ppo_epochs: expected 1..1000, got " + std::to_string(s.ppo_epochs));
  if (!(s.ppo_clip > 0 && s.ppo_clip < 1)) fail(where, "ppo_clip: expected a value in (0, 1)");
  validate(s.adam, where);
}

std::vector<RolloutGradient> RolloutSource::gradients(const ScorerShape& shape, std::span<const float> params,
                                                      std::span<const Rollout> batch, std::span<const size_t> used,
                                                      std::span<const double> advantages,
                                                      const SurrogateOptions& options) {
  std::vector<RolloutTerm> terms;
  for (size_t i = 0; i < used.size(); ++i) terms.push_back({&batch[used[i]].trace, advantages[i]});
  return rollout_gradients(shape, params, terms, options);
}

nlohmann::json to_json(const RlRecord& r) {
  return nlohmann::json{{"iteration", r.iteration},
                        {"stage", r.stage},
                        {"task_set", r.task_set},
                        {"algorithm", r.algorithm},
                        {"rollouts", r.rollouts},
                        {"failures", r.failures},
                        {"mean_reward", number_or_null(r.mean_reward)},
                        {"max_reward", number_or_null(r.max_reward)},
                        {"objective", number_or_null(r.objective)},
                        {"grad_norm", number_or_null(r.grad_norm)},
                        {"clip_fraction", number_or_null(r.clip_fraction)},
                        {"approx_kl", number_or_null(r.approx_kl)},
                        {"mean_log_prob", number_or_null(r.mean_log_prob)},
                        {"mean_cache_size", number_or_null(r.mean_cache_size)},
                        {"model_runs", r.model_runs},
                        {"eval", number_or_null(r.eval)},
                        {"runs_per_second", number_or_null(r.runs_per_second)},
                        {"elapsed_seconds", number_or_null(r.elapsed_seconds)}};
}

RlTrainer::RlTrainer(RlSettings settings, ScorerShape shape, std::vector<double> initial_params, RolloutSource& source,
                     RlTrainerOptions options)
    : settings_(settings),
      shape_(shape),
      params_(std::move(initial_params)),
      source_(source),
      options_(std::move(options)) {
  validate(settings_, "rl settings");
  if (static_cast<int>(params_.size()) != shape_.n_params())
    fail("rl trainer", "initial params: " + std::to_string(params_.size()) + " values for a scorer of " +
                           std::to_string(shape_.n_params()));
  if (!is_directory(options_.run_dir)) fail(options_.run_dir, "run_dir: not a directory");
  if (options_.stages.empty()) fail("rl trainer", "stages: at least one stage is needed");
  for (size_t i = 0; i < options_.stages.size(); ++i)
    if (options_.stages[i].iterations < 0) fail("rl trainer", "stages[" + std::to_string(i) + "].iterations: negative");
  session_start_ = std::chrono::steady_clock::now();
}

RlCheckpoint RlTrainer::make_checkpoint() const {
  RlCheckpoint c;
  c.algorithm = algorithm_name(settings_.algorithm);
  c.params = params_;
  c.adam = adam_;
  c.baselines = baselines_;
  c.progress = progress_;
  c.config = options_.config;
  c.extra = extra_;
  c.last_log_line = last_log_line_;
  return c;
}

void RlTrainer::resume(const std::string& path) {
  RlCheckpoint c = load_rl_checkpoint(path);
  if (c.config != options_.config && !options_.allow_config_change)
    fail(path,
         "config: differs from the config this run was started with (restore that config, or start a new run "
         "in another output_dir)");
  if (c.algorithm != algorithm_name(settings_.algorithm))
    fail(path, "algorithm: the checkpoint is of a '" + c.algorithm + "' run, the settings say '" +
                   algorithm_name(settings_.algorithm) + "'");
  if (c.params.size() != params_.size())
    fail(path,
         "params: " + std::to_string(c.params.size()) + " values for a scorer of " + std::to_string(params_.size()));
  if (c.progress.stage_index > static_cast<int>(options_.stages.size()))
    fail(path, "stage_index: " + std::to_string(c.progress.stage_index) + " but the run has " +
                   std::to_string(options_.stages.size()) + " stages");
  params_ = std::move(c.params);
  adam_ = std::move(c.adam);
  baselines_ = std::move(c.baselines);
  progress_ = std::move(c.progress);
  extra_ = std::move(c.extra);
  last_log_line_ = std::move(c.last_log_line);
  elapsed_base_ = progress_.elapsed_seconds;
  evo::truncate_log(log_path(), progress_.iteration, last_log_line_, "iteration");
}

RlStatus RlTrainer::run() {
  if (options_.handle_sigint) evo::install_sigint_handler();
  session_start_ = std::chrono::steady_clock::now();
  if (progress_.iteration == 0 && last_log_line_.empty()) {  // a fresh run records its starting point
    evo::truncate_log(log_path(), 0, "", "iteration");
    save_rl_checkpoint(latest_path(), make_checkpoint());
  }
  int64_t session_iterations = 0;
  while (progress_.stage_index < static_cast<int>(options_.stages.size())) {
    const RlStage& stage = options_.stages[static_cast<size_t>(progress_.stage_index)];
    if (progress_.stage_iteration >= stage.iterations) {
      ++progress_.stage_index;
      progress_.stage_iteration = 0;
      continue;
    }
    if (evo::interrupt_requested()) return RlStatus::interrupted;
    bool interrupted = false;
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Rollout> rollouts = source_.rollouts(params_, progress_.iteration, stage.task_set, &interrupted);
    if (interrupted) return RlStatus::interrupted;  // latest.ckpt is the state before this iteration
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const RlRecord record = run_iteration(stage, rollouts, seconds);
    ++session_iterations;
    print_progress(record, std::chrono::duration<double>(std::chrono::steady_clock::now() - session_start_).count(),
                   session_iterations);
  }
  return RlStatus::completed;
}

RlRecord RlTrainer::run_iteration(const RlStage& stage, std::vector<Rollout>& rollouts, double rollout_seconds) {
  RlRecord r;
  r.iteration = progress_.iteration;
  r.stage = progress_.stage_index;
  r.task_set = stage.task_set;
  r.algorithm = algorithm_name(settings_.algorithm);
  r.rollouts = static_cast<int>(rollouts.size());

  // Failed rollouts (an error, a non-finite reward or log-probability) do not enter the update.
  std::vector<size_t> used;
  double cache_sum = 0, log_prob_sum = 0;
  int cache_count = 0;
  int64_t decisions = 0;
  for (size_t i = 0; i < rollouts.size(); ++i) {
    Rollout& ro = rollouts[i];
    if (!ro.trace.blocks.empty()) {
      ro.decisions = ro.trace.decisions();
      ro.log_prob = ro.trace.log_prob();
    }
    if (ro.error.empty() && !std::isfinite(ro.reward)) ro.error = "reward is not finite";
    if (ro.error.empty()) {
      if (!std::isfinite(ro.log_prob)) ro.error = "log-probability of the actions is not finite (a NaN score?)";
      else {
        log_prob_sum += ro.log_prob;
        decisions += ro.decisions;
      }
    }
    if (!ro.error.empty()) {
      ++r.failures;
      std::fprintf(stderr, "iteration %lld: rollout of prompt %d failed: %s\n", static_cast<long long>(r.iteration),
                   ro.prompt, ro.error.c_str());
      continue;
    }
    used.push_back(i);
    if (std::isfinite(ro.cache_size)) {
      cache_sum += ro.cache_size;
      ++cache_count;
    }
  }
  progress_.failures += r.failures;
  progress_.model_runs += static_cast<int64_t>(rollouts.size());
  if (used.empty()) fail("iteration " + std::to_string(r.iteration), "every rollout failed");

  std::vector<RewardSample> rewards;
  double sum = 0;
  r.max_reward = -INFINITY;
  for (size_t i : used) {
    const Rollout& ro = rollouts[i];
    rewards.push_back({ro.prompt, ro.task, ro.reward});
    sum += ro.reward;
    r.max_reward = std::max(r.max_reward, ro.reward);
  }
  r.mean_reward = sum / static_cast<double>(used.size());
  if (cache_count) r.mean_cache_size = cache_sum / cache_count;
  if (decisions) r.mean_log_prob = log_prob_sum / static_cast<double>(decisions);
  const std::vector<double> adv = advantages(rewards, settings_.baseline, baselines_);

  const bool ppo = settings_.algorithm == Algorithm::Ppo;
  SurrogateOptions so;
  so.temperature = settings_.temperature;
  so.clip = ppo ? settings_.ppo_clip : 0.0;
  const int epochs = decisions == 0 ? 0 : ppo ? settings_.ppo_epochs : 1;  // nothing was decided: no step
  std::vector<float> params_f(params_.size());
  for (int e = 0; e < epochs; ++e) {
    std::transform(params_.begin(), params_.end(), params_f.begin(), [](double v) { return static_cast<float>(v); });
    SurrogateResult g =
        combine_rollout_gradients(source_.gradients(shape_, params_f, rollouts, used, adv, so), decisions);
    if (e == 0) r.objective = g.objective;
    const AdamStep step = adam_ascent_step(settings_.adam, adam_, params_, g.gradient);
    if (e == 0) r.grad_norm = step.grad_norm;
    if (ppo) {
      r.clip_fraction = g.clip_fraction;
      r.approx_kl = g.approx_kl;
    }
  }
  ++progress_.iteration;
  ++progress_.stage_iteration;
  r.model_runs = progress_.model_runs;
  // Throughput of the rollouts, the part that scales with the model.
  if (rollout_seconds > 0) r.runs_per_second = static_cast<double>(rollouts.size()) / rollout_seconds;

  bool new_best = false;
  if (evaluator_) {
    r.eval = evaluator_(params_, r.iteration, stage.task_set);
    if (std::isfinite(r.eval) && (!progress_.has_best || r.eval > progress_.best_eval)) {
      progress_.has_best = true;
      progress_.best_eval = r.eval;
      progress_.best_iteration = r.iteration;
      progress_.best_params = params_;
      new_best = true;
    }
  }
  const double elapsed =
      elapsed_base_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - session_start_).count();
  r.elapsed_seconds = elapsed;
  progress_.elapsed_seconds = elapsed;
  if (hook_) hook_(r);

  // Checkpoint before the log line: the log never describes an iteration the checkpoint lacks.
  last_log_line_ = to_json(r).dump();
  const std::string bytes = serialize_rl_checkpoint(make_checkpoint());
  write_file_atomic(latest_path(), bytes);
  if (new_best) write_file_atomic(best_path(), bytes);
  append_line(log_path(), last_log_line_);
  return r;
}

void RlTrainer::print_progress(const RlRecord& r, double session_seconds, int64_t session_iterations) const {
  if (!options_.progress_line) return;
  int64_t total = 0, done = 0;
  for (size_t i = 0; i < options_.stages.size(); ++i) {
    total += options_.stages[i].iterations;
    if (static_cast<int>(i) < progress_.stage_index) done += options_.stages[i].iterations;
  }
  done += progress_.stage_iteration;
  const double eta = session_iterations > 0 ? session_seconds / session_iterations * (total - done) : NAN;
  std::string eval = std::isfinite(r.eval) ? "  eval " + std::to_string(r.eval).substr(0, 8) : "";
  std::fprintf(stderr, "%s iter %lld/%lld stage %d/%zu  reward mean %.6g max %.6g%s  |g| %.3g  %.1f runs/s  ETA %s%s\n",
               r.algorithm.c_str(), static_cast<long long>(done), static_cast<long long>(total), r.stage + 1,
               options_.stages.size(), r.mean_reward, r.max_reward, eval.c_str(), r.grad_norm, r.runs_per_second,
               format_duration(eta).c_str(), r.failures ? (" failures " + std::to_string(r.failures)).c_str() : "");
}

}  // namespace nammkit::rl
