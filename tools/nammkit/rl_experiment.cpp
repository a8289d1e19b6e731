// `nammkit evolve` with "trainer": "reinforce" | "ppo": the experiment of experiment.cpp (model, pools,
// full-cache references, normalisation statistics) trained by rl::RlTrainer instead of CMA-ES.
//
// Rollouts run on the population-evaluation machinery (evolution/population_eval.h): an iteration is an
// EvalRequest whose columns are samples_per_prompt copies of the current parameters, so item (k, prompt)
// is the k-th stochastic run of that prompt, run on TBB threads with run_items. Its reward is the
// prompt's share of the CMA-ES fitness (normalised score plus the cache term, tasks/fitness.h), its
// decisions are recorded in a DecisionTrace. Files: as for CMA-ES, plus heldout.jsonl when configured.
#include <tbb/global_control.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

#include "core/byte_io.h"
#include "core/error.h"
#include "core/file_io.h"
#include "evolution/interrupt.h"
#include "evolution/population_eval.h"
#include "evolution/rng.h"
#include "rl/rl_trainer.h"
#include "tools/nammkit/experiment.h"
#include "tools/nammkit/experiment_setup.h"

namespace nammkit::cli {
namespace {

class NammRolloutSource : public rl::RolloutSource {
 public:
  NammRolloutSource(const ExperimentConfig& config, const EvolutionSetup& setup, const FeatureNormalizer& normalizer)
      : config_(config), setup_(setup), normalizer_(normalizer) {
    for (const StageConfig& stage : config_.stages) {
      const StagePool& pool = setup_.pools.at(stage.name);
      evo::TbbEvalSettings s;
      s.pool_size = int(pool.entries.size());
      s.prompts_per_generation = stage.prompts_per_generation;
      s.seed = config_.seed;
      samplers_.emplace(stage.name,
                        std::make_unique<evo::TbbPopulationEvaluator>(
                            s, [this, &pool](std::span<const double> params, const evo::PromptContext& ctx) {
                              return rollout(pool, params, ctx);
                            }));
    }
  }

  std::vector<rl::Rollout> rollouts(std::span<const double> params, int64_t iteration, const std::string& task_set,
                                    bool* interrupted) override {
    const StagePool& pool = setup_.pools.at(task_set);
    const evo::TbbPopulationEvaluator& sampler = *samplers_.at(task_set);
    const int K = config_.rl.samples_per_prompt;
    Eigen::MatrixXd columns(Eigen::Index(params.size()), K);
    for (int k = 0; k < K; ++k)
      columns.col(k) = Eigen::Map<const Eigen::VectorXd>(params.data(), Eigen::Index(params.size()));
    evo::EvalRequest request;
    request.params = &columns;
    request.generation = iteration;
    request.task_set = task_set;
    request.prompts = sampler.prompts_for(iteration);
    weights_ = pool_weights(pool, request.prompts, config_.epsilon, config_.cache_weight);
    iteration_ = iteration;
    traces_.assign(size_t(K) * pool.entries.size(), DecisionTrace{});
    std::vector<size_t> items(request.items());
    for (size_t t = 0; t < items.size(); ++t) items[t] = t;
    const std::vector<evo::ItemOutcome> outcomes = sampler.run_here(request, items, interrupted);
    std::vector<rl::Rollout> out;
    if (*interrupted) return out;
    for (size_t t = 0; t < outcomes.size(); ++t) {
      const evo::PromptContext ctx = request.context(t);
      rl::Rollout r;
      r.prompt = ctx.prompt;
      r.task = pool.tasks[size_t(pool.entries[size_t(ctx.prompt)].task)].name;
      r.reward = outcomes[t].score.score;
      r.cache_size = outcomes[t].score.cache_size;
      r.error = outcomes[t].error;
      r.trace = std::move(trace_slot(ctx));
      out.push_back(std::move(r));
    }
    traces_.clear();
    return out;
  }

 private:
  DecisionTrace& trace_slot(const evo::PromptContext& ctx) {
    const size_t pool_size = traces_.size() / size_t(config_.rl.samples_per_prompt);
    return traces_[size_t(ctx.member) * pool_size + size_t(ctx.prompt)];
  }

  // The seed of sample k of a prompt at an iteration: independent of threads and of the other items.
  uint64_t rollout_seed(const evo::PromptContext& ctx) const {
    uint64_t s = evo::derive_seed(config_.seed ^ 0x524c524f4c4c4f55ull, static_cast<uint64_t>(iteration_));
    s = evo::derive_seed(s, static_cast<uint64_t>(ctx.prompt));
    return evo::derive_seed(s, static_cast<uint64_t>(ctx.member));
  }

  // One stochastic run (called concurrently; each item writes only its own trace slot).
  evo::PromptScore rollout(const StagePool& pool, std::span<const double> params, const evo::PromptContext& ctx) {
    DecisionTrace& trace = trace_slot(ctx);
    NammPolicy policy(setup_.namm, to_floats(params), normalizer_);
    policy.set_sampling(StochasticKeep{config_.rl.temperature, rollout_seed(ctx)}, &trace);
    return prompt_score(weights_, ctx.prompt,
                        run_sample(*setup_.backend, &policy, *pool.entries[size_t(ctx.prompt)].sample, setup_.run));
  }

  const ExperimentConfig& config_;
  const EvolutionSetup& setup_;
  const FeatureNormalizer& normalizer_;
  std::map<std::string, std::unique_ptr<evo::TbbPopulationEvaluator>> samplers_;
  PromptWeights weights_;
  int64_t iteration_ = 0;
  std::vector<DecisionTrace> traces_;  // [sample][pool entry]
};

}  // namespace

int run_rl_training(const ExperimentConfig& config, const EvolveOptions& options) {
  const RunDirectory run_dir = open_run_directory(config, options.resume);
  const std::string& latest = run_dir.latest;

  const std::unique_ptr<EvolutionSetup> setup = build_setup(config, options.device, true);
  SampleRunner references(*setup->backend, entry_samples(*setup), setup->run, nullptr, "references");
  fill_references(config, *setup, references);

  ExtraState extra;
  if (options.resume) {
    extra = extra_from_json(rl::load_rl_checkpoint(latest).extra, latest);
  } else {
    std::fprintf(stderr, "collecting normalisation statistics (full cache, stage %s)...\n",
                 config.stages[0].name.c_str());
    extra.stats = collect_normalisation(config, *setup, nullptr);
  }
  const FeatureNormalizer normalizer = FeatureNormalizer::from_stats(extra.stats);

  NammRolloutSource source(config, *setup, normalizer);
  rl::RlTrainerOptions trainer_options;
  trainer_options.run_dir = config.output_dir;
  trainer_options.config = config.canonical;
  for (const auto& stage : config.stages) trainer_options.stages.push_back({stage.generations, stage.name});
  rl::RlTrainer trainer(config.rl, setup->namm.scorer, initial_params(config), source, trainer_options);
  trainer.set_extra_state(extra_to_json(extra));
  const HeldoutEvaluation heldout(config, *setup, normalizer);
  // The greedy policy's held-out score drives best.ckpt (NaN when not due: no evaluation).
  trainer.set_evaluator([&](std::span<const double> params, int64_t iteration, const std::string&) {
    if (!heldout.due(iteration)) return std::nan("");
    return heldout.evaluate(params, iteration, trainer.progress().model_runs);
  });
  int64_t iterations_this_session = 0;
  double last_eval = std::nan("");
  trainer.set_hook([&](const rl::RlRecord& record) {
    if (std::isfinite(record.eval)) last_eval = record.eval;
    if (options.stop_after > 0 && ++iterations_this_session >= options.stop_after) evo::request_interrupt();
  });
  if (options.resume) {
    trainer.resume(latest);
    heldout.truncate(trainer.progress().iteration);
  }
  const rl::RlStatus status = trainer.run();

  const rl::RlProgress& progress = trainer.progress();
  const std::string label = std::string(trainer_name(config.trainer));
  write_policy(config.output_dir + "/policy.nammp", config, setup->model, trainer.params(), extra.stats,
               progress.iteration, std::isfinite(last_eval) ? last_eval : 0.0, "final " + label + " parameters");
  if (progress.has_best)
    write_policy(config.output_dir + "/best_policy.nammp", config, setup->model, progress.best_params, extra.stats,
                 progress.best_iteration, progress.best_eval, "best held-out " + label + " parameters");
  const bool interrupted = status == rl::RlStatus::interrupted;
  std::fprintf(stderr, "%s after %lld iteration(s); policy written to %s/policy.nammp\n",
               interrupted ? "interrupted" : "completed", static_cast<long long>(progress.iteration),
               config.output_dir.c_str());
  if (interrupted) {
    std::fprintf(stderr, "interrupted: resume with  nammkit evolve %s --resume\n", config.file.c_str());
    return 130;
  }
  return 0;
}

}  // namespace nammkit::cli
