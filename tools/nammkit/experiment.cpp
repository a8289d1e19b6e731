#include "tools/nammkit/experiment.h"

#include <tbb/global_control.h>
#include <tbb/parallel_for.h>

#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>

#include "core/error.h"
#include "core/file_io.h"
#include "core/text.h"
#include "distributed/messages.pb.h"
#include "distributed/population_runner.h"
#include "distributed/work_split.h"
#include "evolution/interrupt.h"
#include "evolution/population_eval.h"
#include "evolution/trainer.h"
#include "namm/namm_policy.h"
#include "namm/policy_file.h"
#include "rl/rl_checkpoint.h"
#include "tasks/fitness.h"
#include "tasks/registry.h"
#include "tasks/runner.h"
#include "tools/nammkit/experiment_setup.h"
#include "tools/nammkit/rank_device.h"
#include "tools/nammkit/rl_rollouts.h"
#include "tools/nammkit/sample_runner.h"
#include "transformer/loader.h"

namespace nammkit::cli {
namespace {
// Dispatches each stage's generations to a TBB evaluator over that stage's pool and turns raw scores
// into the normalised fitness by tasks/fitness's prompt_weights (the mean over a generation's prompts
// is exactly the fitness combine_tasks gives on them).
class NammFitnessEvaluator : public evo::PopulationEvaluator {
 public:
  // `backend` and `population_threads`: EvolutionSetup::population_backend() and population_threads.
  NammFitnessEvaluator(const Backend& backend, int population_threads, const ExperimentConfig& config,
                       const NammConfig& namm, const std::map<std::string, StagePool>& pools,
                       const FeatureNormalizer& normalizer)
      : backend_(backend),
        population_threads_(population_threads),
        config_(config),
        namm_(namm),
        pools_(pools),
        normalizer_(normalizer) {
    for (const auto& [name, pool_entry] : pools_) {
      if (name == kHeldoutPool) continue;  // evaluated by HeldoutEvaluation, not as a stage
      const auto& pool = pool_entry;       // a lambda may not capture a structured binding before clang 16
      const StageConfig& stage = stage_config(name);
      evo::TbbEvalSettings s;
      s.pool_size = int(pool.entries.size());
      s.prompts_per_generation = stage.prompts_per_generation;
      s.seed = config_.seed;
      s.dedicated_threads = population_threads_;
      evaluators_.emplace(name, std::make_unique<evo::TbbPopulationEvaluator>(
                                    s, [this, &pool](std::span<const double> params, const evo::PromptContext& ctx) {
                                      return score_prompt(pool, params, ctx);
                                    }));
    }
  }

  evo::GenerationEval evaluate(const Eigen::MatrixXd& population, int64_t generation,
                               const std::string& task_set) override {
    prepare(generation, task_set);
    return evaluators_.at(task_set)->evaluate(population, generation, task_set);
  }

  double evaluate_mean(const Eigen::VectorXd& mean, int64_t generation, const std::string& task_set) {
    prepare(generation, task_set);
    return evaluators_.at(task_set)->evaluate_vector(std::span<const double>(mean.data(), mean.size()), generation,
                                                     task_set);
  }

  // Distributed runs: where every stage's items run (rank 0), and this rank's share of a request.
  void set_runner(evo::ItemRunner* runner) {
    for (auto& [name, evaluator] : evaluators_) evaluator->set_runner(runner);
  }
  std::vector<evo::ItemOutcome> run_share(const evo::EvalRequest& request, std::span<const size_t> items,
                                          bool* interrupted) {
    if (!evaluators_.count(request.task_set)) fail("evaluation request", "unknown stage '" + request.task_set + "'");
    prepare(request.generation, request.task_set);
    return evaluators_.at(request.task_set)->run_here(request, items, interrupted);
  }

 private:
  const StageConfig& stage_config(const std::string& name) const {
    for (const auto& s : config_.stages)
      if (s.name == name) return s;
    fail(config_.file, "stage '" + name + "' not found");
  }

  // Weights of the generation's prompts (computed before the parallel loop, read-only inside it).
  void prepare(int64_t generation, const std::string& task_set) {
    if (generation == prepared_generation_ && task_set == prepared_set_) return;
    const std::vector<int> chosen = evaluators_.at(task_set)->prompts_for(generation);
    weights_ = pool_weights(pools_.at(task_set), chosen, config_.epsilon, config_.cache_weight);
    prepared_generation_ = generation;
    prepared_set_ = task_set;
  }

  evo::PromptScore score_prompt(const StagePool& pool, std::span<const double> params, const evo::PromptContext& ctx) {
    const PoolEntry& e = pool.entries[ctx.prompt];
    NammPolicy policy(namm_, to_floats(params), normalizer_);
    RunOptions run;
    run.max_context = config_.max_context;
    run.session = config_.session;
    return prompt_score(weights_, ctx.prompt, run_sample(backend_, &policy, *e.sample, run));
  }

  const Backend& backend_;
  int population_threads_;
  const ExperimentConfig& config_;
  const NammConfig& namm_;
  const std::map<std::string, StagePool>& pools_;
  const FeatureNormalizer& normalizer_;
  std::map<std::string, std::unique_ptr<evo::TbbPopulationEvaluator>> evaluators_;
  int64_t prepared_generation_ = -1;
  std::string prepared_set_;
  PromptWeights weights_;
};

}  // namespace

int run_evolution(const ExperimentConfig& config, const EvolveOptions& options, dist::Coordinator* coordinator) {
  const RunDirectory run_dir = open_run_directory(config, options.resume);
  const std::string& latest = run_dir.latest;

  if (coordinator) {
    std::fprintf(stderr, "distributed run: %d ranks; this is %s\n", coordinator->size(),
                 coordinator->describe(0).c_str());
    select_rank_gpu(options.device, coordinator->local_rank());
  }
  auto build = [&] { return build_setup(config, options.device, true); };
  const std::unique_ptr<EvolutionSetup> setup = coordinator ? coordinator->busy(build) : build();
  const Model& model = setup->model;
  SampleRunner references(*setup->backend, entry_samples(*setup), setup->run, coordinator, "references");
  if (coordinator) {
    register_jobs(config, *setup, references, *coordinator);
    dist::HelloMsg hello;
    hello.set_config_hash(config.hash());
    coordinator->run("hello", hello.SerializeAsString(), "loading the model and the tasks");
  }
  fill_references(config, *setup, references);

  // Normalisation statistics: collected once, then carried by the checkpoints.
  const bool rl_trainer = config.trainer != TrainerKind::Cmaes;
  ExtraState extra;
  if (options.resume) {
    extra =
        extra_from_json(rl_trainer ? rl::load_rl_checkpoint(latest).extra : evo::load_checkpoint(latest).extra, latest);
  } else {
    std::fprintf(stderr, "collecting normalisation statistics (full cache, stage %s)...\n",
                 config.stages[0].name.c_str());
    extra.stats = collect_normalisation(config, *setup, coordinator);
  }
  const FeatureStats& stats = extra.stats;
  const FeatureNormalizer normalizer = FeatureNormalizer::from_stats(stats);

  if (coordinator) {
    // The workers get the statistics and the references, then build the same evaluator / rollout source.
    dist::EvolveStateMsg state;
    *state.mutable_stats() = stats_message(stats);
    for (const PoolEntry* e : setup->entries) {
      state.add_full_score(e->full.score);
      state.add_full_cache(e->full.mean_cache);
    }
    coordinator->on("evolve_state", [](const std::string&) { return std::string(); });  // rank 0 has it all
    coordinator->run("evolve_state", state.SerializeAsString(), "handing out the references");
  }
  if (rl_trainer) return train_rl(config, options, *setup, extra, normalizer, coordinator, latest);

  evo::TrainerOptions trainer_options;
  trainer_options.run_dir = config.output_dir;
  trainer_options.config = config.canonical;
  for (const auto& stage : config.stages) trainer_options.stages.push_back({stage.generations, stage.name});
  NammFitnessEvaluator evaluator(setup->population_backend(), setup->population_threads, config, setup->namm,
                                 setup->pools, normalizer);
  std::unique_ptr<dist::DistributedItemRunner> runner;
  if (coordinator) {
    dist::serve_items(*coordinator, "evaluate",
                      [&evaluator](const evo::EvalRequest& request, std::span<const size_t> items, bool* interrupted) {
                        return evaluator.run_share(request, items, interrupted);
                      });
    runner = std::make_unique<dist::DistributedItemRunner>(*coordinator, "evaluate", item_cost(config, *setup));
    evaluator.set_runner(runner.get());
  }
  evo::Trainer trainer(config.cmaes, evaluator, trainer_options);
  trainer.set_extra_state(extra_to_json(extra));
  const HeldoutEvaluation heldout(config, *setup, normalizer, coordinator);
  trainer.set_mean_evaluator([&](const Eigen::VectorXd& mean, int64_t generation, const std::string& task_set) {
    return evaluator.evaluate_mean(mean, generation, task_set);
  });
  double last_mean_fitness = 0;  // provenance of policy.nammp: the mean's evaluation at its generation
  int64_t generations_this_session = 0;
  trainer.set_generation_hook([&](const evo::GenerationRecord& record) {
    if (std::isfinite(record.mean_eval_fitness)) last_mean_fitness = record.mean_eval_fitness;
    // Training runs: the population's, plus one per prompt for the mean's evaluation.
    const int64_t prompts = record.lambda > 0 ? record.evaluations / record.lambda : 0;
    extra.model_runs += record.evaluations + (std::isfinite(record.mean_eval_fitness) ? prompts : 0);
    if (heldout.due(record.generation)) {
      const Eigen::VectorXd& mean = trainer.strategy().state().mean;
      const double score = heldout.evaluate(std::span<const double>(mean.data(), size_t(mean.size())),
                                            record.generation, extra.model_runs);
      std::fprintf(stderr, "held-out score of the mean after generation %lld: %.6g\n",
                   static_cast<long long>(record.generation), score);
    }
    trainer.set_extra_state(extra_to_json(extra));
    // --stop-after: the trainer checks the interrupt flag after this generation's checkpoint.
    if (options.stop_after > 0 && ++generations_this_session >= options.stop_after) evo::request_interrupt();
  });
  if (options.resume) trainer.resume(latest);
  heldout.start(options.resume, trainer.strategy().state().total_generations);

  const evo::TrainResult result = trainer.run();
  finish_distributed(coordinator, result.generations_run);
  const evo::CmaesState& state = trainer.strategy().state();
  const evo::RunProgress& progress = trainer.progress();
  const std::vector<double> mean(state.mean.data(), state.mean.data() + state.mean.size());
  write_policy(config.output_dir + "/policy.nammp", config, model, mean, stats, state.generation, last_mean_fitness,
               "final CMA-ES mean");
  if (progress.has_best_mean)
    write_policy(config.output_dir + "/best_policy.nammp", config, model, progress.best_mean, stats,
                 progress.best_mean_generation, progress.best_mean_fitness, "best evaluated CMA-ES mean");
  std::fprintf(stderr, "%s after %lld generation(s) this session; policy written to %s/policy.nammp\n",
               evo::to_string(result.status), static_cast<long long>(result.generations_run),
               config.output_dir.c_str());
  if (result.status == evo::TrainStatus::interrupted) {
    std::fprintf(stderr, "interrupted: resume with  nammkit evolve %s --resume\n", config.file.c_str());
    return 130;
  }
  return 0;
}

int serve_evolution(const std::string& config_path, const EvolveOptions& options, dist::Coordinator& coordinator) {
  std::optional<ExperimentConfig> config;
  std::unique_ptr<EvolutionSetup> setup;
  std::unique_ptr<tbb::global_control> threads;
  try {
    config = load_experiment_config(config_path);
    if (config->threads > 0)
      threads = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, config->threads);
    select_rank_gpu(options.device, coordinator.local_rank());
    setup = coordinator.busy([&] { return build_setup(*config, options.device, false); });
  } catch (const std::exception& e) {
    // Reported by rank 0 when it hands out the first job, so that one line names what went wrong.
    coordinator.set_setup_error(coordinator.describe(coordinator.rank()) + ", loading: " + e.what());
    coordinator.serve();
    return 1;
  }
  SampleRunner references(*setup->backend, entry_samples(*setup), setup->run, &coordinator, "references");
  register_jobs(*config, *setup, references, coordinator);
  // The evaluator exists once rank 0 has handed out the statistics and the references.
  std::unique_ptr<FeatureNormalizer> normalizer;
  std::unique_ptr<NammFitnessEvaluator> evaluator;
  std::unique_ptr<NammRolloutSource> rollouts;  // the RL trainers
  coordinator.on("evolve_state", [&](const std::string& payload) {
    dist::EvolveStateMsg state;
    if (!state.ParseFromString(payload) || state.full_score_size() != int(setup->entries.size()) ||
        state.full_cache_size() != int(setup->entries.size()))
      fail("evolve_state", "malformed or for other tasks");
    for (size_t i = 0; i < setup->entries.size(); ++i)
      setup->entries[i]->full = {state.full_score(int(i)), state.full_cache(int(i))};
    normalizer = std::make_unique<FeatureNormalizer>(FeatureNormalizer::from_stats(stats_from_message(state.stats())));
    if (config->trainer == TrainerKind::Cmaes)
      evaluator = std::make_unique<NammFitnessEvaluator>(setup->population_backend(), setup->population_threads,
                                                         *config, setup->namm, setup->pools, *normalizer);
    else rollouts = std::make_unique<NammRolloutSource>(*config, *setup, *normalizer, &coordinator);
    return std::string();
  });
  auto rollout_source = [&]() -> NammRolloutSource& {
    if (!rollouts) fail("rl job", "before the statistics and references arrived, or not an RL run");
    return *rollouts;
  };
  coordinator.on("rl_rollouts", [&](const std::string& payload) { return rollout_source().serve_rollouts(payload); });
  coordinator.on("rl_gradients", [&](const std::string& payload) { return rollout_source().serve_gradients(payload); });
  dist::serve_items(coordinator, "evaluate",
                    [&](const evo::EvalRequest& request, std::span<const size_t> items, bool* interrupted) {
                      if (!evaluator) fail("evaluate", "before the statistics and references arrived");
                      return evaluator->run_share(request, items, interrupted);
                    });
  coordinator.serve();
  return 0;
}

}  // namespace nammkit::cli
