#include "evolution/trainer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "core/error.h"
#include "core/file_io.h"
#include "core/text.h"
#include "evolution/interrupt.h"

namespace nammkit::evo {

const char* to_string(TrainStatus status) {
  switch (status) {
    case TrainStatus::completed: return "completed";
    case TrainStatus::interrupted: return "interrupted";
    case TrainStatus::stopped: return "stopped";
  }
  return "?";
}

Trainer::Trainer(CmaesSettings settings, PopulationEvaluator& evaluator, TrainerOptions options)
    : cmaes_(std::move(settings)), evaluator_(evaluator), options_(std::move(options)) {
  if (!is_directory(options_.run_dir)) fail(options_.run_dir, "run_dir: not a directory");
  if (options_.stages.empty()) fail("trainer", "stages: at least one stage is needed");
  for (size_t i = 0; i < options_.stages.size(); ++i)
    if (options_.stages[i].generations < 0) fail("trainer", "stages[" + std::to_string(i) + "].generations: negative");
}

double Trainer::elapsed_seconds() const {
  return elapsed_base_ + std::chrono::duration<double>(std::chrono::steady_clock::now() - session_start_).count();
}

Checkpoint Trainer::make_checkpoint() const {
  Checkpoint c;
  c.cmaes = cmaes_.state();
  c.progress = progress_;
  c.config = options_.config;
  c.extra = extra_;
  return c;
}

void Trainer::resume(const std::string& path) {
  Checkpoint c = load_checkpoint(path);
  if (c.config != options_.config && !options_.allow_config_change)
    fail(path,
         "config: differs from the config this run was started with (restore that config, or start a new run "
         "in another output_dir)");
  if (c.progress.stage_index > static_cast<int>(options_.stages.size()))
    fail(path, "progress.stage_index: " + std::to_string(c.progress.stage_index) + " but the run has " +
                   std::to_string(options_.stages.size()) + " stages");
  cmaes_.restore(std::move(c.cmaes), path);
  progress_ = std::move(c.progress);
  extra_ = std::move(c.extra);
  elapsed_base_ = progress_.elapsed_seconds;
  resumed_ = true;
  truncate_log(log_path(), cmaes_.state().total_generations, c.last_log_line);
}

TrainResult Trainer::run() {
  if (options_.handle_sigint) install_sigint_handler();
  session_start_ = std::chrono::steady_clock::now();
  TrainResult result;
  // A fresh run records its starting point, so an interrupt during generation 0 can be resumed.
  if (!resumed_) {
    truncate_log(log_path(), 0);
    save_checkpoint(latest_path(), make_checkpoint());
    resumed_ = true;
  }
  const auto& stages = options_.stages;
  while (progress_.stage_index < static_cast<int>(stages.size())) {
    const Stage& stage = stages[progress_.stage_index];
    if (progress_.stage_generation >= stage.generations) {  // also skips empty stages
      ++progress_.stage_index;
      progress_.stage_generation = 0;
      continue;
    }
    // Between generations: latest.ckpt already holds the state we are in.
    if (interrupt_requested()) {
      result.status = TrainStatus::interrupted;
      return result;
    }
    if (cmaes_.stopped()) {
      result.status = TrainStatus::stopped;
      result.stop_reason = cmaes_.stop_reason();
      return result;
    }
    const auto t0 = std::chrono::steady_clock::now();
    const Eigen::MatrixXd& population = cmaes_.ask();
    GenerationEval eval = evaluator_.evaluate(population, cmaes_.state().total_generations, stage.task_set);
    if (eval.interrupted) {
      // ask() moved the RNG, so the in-memory state is ahead of latest.ckpt; the checkpoint (taken before
      // this generation) is the consistent resume point, and the generation is redone identically.
      result.status = TrainStatus::interrupted;
      return result;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    GenerationRecord record = run_generation(stage, eval, seconds);
    ++result.generations_run;
    print_progress(record, std::chrono::duration<double>(std::chrono::steady_clock::now() - session_start_).count(),
                   result.generations_run);
  }
  result.status = TrainStatus::completed;
  return result;
}

GenerationRecord Trainer::run_generation(const Stage& stage, const GenerationEval& eval, double seconds) {
  GenerationRecord r;
  r.generation = cmaes_.state().total_generations;
  r.stage = progress_.stage_index;
  r.task_set = stage.task_set;
  r.lambda = cmaes_.lambda();
  r.restarts = cmaes_.state().restarts;

  // Penalised failures are excluded from the mean/median so one crash does not distort the curve.
  std::vector<double> ok;
  std::vector<bool> failed(eval.fitness.size(), false);
  for (const MemberFailure& f : eval.failures) failed[f.member] = true;
  for (size_t i = 0; i < eval.fitness.size(); ++i)
    if (!failed[i]) ok.push_back(eval.fitness[i]);
  std::sort(ok.begin(), ok.end());
  if (!ok.empty()) {
    r.best_fitness = ok.back();
    r.mean_fitness = std::accumulate(ok.begin(), ok.end(), 0.0) / static_cast<double>(ok.size());
    const size_t m = ok.size() / 2;
    r.median_fitness = ok.size() % 2 ? ok[m] : 0.5 * (ok[m - 1] + ok[m]);
  }
  r.mean_cache_size = eval.mean_cache_size;
  r.evaluations = eval.evaluations;
  r.failures = static_cast<int>(eval.failures.size());
  r.failure_details = eval.failures;
  for (const MemberFailure& f : eval.failures)
    std::fprintf(stderr, "warning: generation %lld member %d failed (fitness penalised): %s\n",
                 static_cast<long long>(r.generation), f.member, f.reason.c_str());

  cmaes_.tell(eval.fitness);
  r.sigma = cmaes_.state().sigma;

  progress_.prompt_evaluations += eval.evaluations;
  progress_.failures += static_cast<int64_t>(eval.failures.size());
  // The move to the next stage happens lazily in run(), so a checkpoint taken at the end of a stage
  // still says "stage k, all its generations done": resuming with a longer stage k continues it.
  ++progress_.stage_generation;

  bool new_best = false;
  if (mean_evaluator_) {
    const double f = mean_evaluator_(cmaes_.state().mean, r.generation, stage.task_set);
    r.mean_eval_fitness = f;
    if (std::isfinite(f) && (!progress_.has_best_mean || f > progress_.best_mean_fitness)) {
      progress_.has_best_mean = true;
      progress_.best_mean_fitness = f;
      progress_.best_mean_generation = r.generation;
      const Eigen::VectorXd& mean = cmaes_.state().mean;
      progress_.best_mean.assign(mean.data(), mean.data() + mean.size());
      new_best = true;
    }
  }
  // Throughput of the population evaluation (ask + evaluate), the part that scales with the model.
  r.evals_per_second = seconds > 0 ? static_cast<double>(eval.evaluations) / seconds : GenerationRecord::kMissing;
  r.elapsed_seconds = elapsed_seconds();
  progress_.elapsed_seconds = r.elapsed_seconds;
  if (hook_) hook_(r);

  // Checkpoint before the log line: the log never describes a generation the checkpoint lacks.
  Checkpoint checkpoint = make_checkpoint();
  checkpoint.last_log_line = log_line(r);
  const std::string bytes = serialize_checkpoint(checkpoint);
  write_file_atomic(latest_path(), bytes);
  if (new_best) write_file_atomic(best_path(), bytes);
  append_log_line(log_path(), r);
  return r;
}

void Trainer::print_progress(const GenerationRecord& r, double session_seconds, int64_t session_generations) const {
  if (!options_.progress_line) return;
  int64_t total = 0, done = 0;
  for (size_t i = 0; i < options_.stages.size(); ++i) {
    total += options_.stages[i].generations;
    if (static_cast<int>(i) < progress_.stage_index) done += options_.stages[i].generations;
  }
  done += progress_.stage_generation;
  const double eta = session_generations > 0 ? session_seconds / session_generations * (total - done) : NAN;
  std::fprintf(stderr, "gen %lld/%lld stage %d/%zu  best %.6g  mean %.6g  sigma %.4g  %.1f evals/s  ETA %s%s\n",
               static_cast<long long>(done), static_cast<long long>(total), r.stage + 1, options_.stages.size(),
               r.best_fitness, r.mean_fitness, r.sigma, r.evals_per_second, format_duration(eta).c_str(),
               r.failures ? (" failures " + std::to_string(r.failures)).c_str() : "");
}

}  // namespace nammkit::evo
