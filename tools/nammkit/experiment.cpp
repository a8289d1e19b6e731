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

#include "core/error.h"
#include "core/file_io.h"
#include "core/text.h"
#include "evolution/interrupt.h"
#include "evolution/population_eval.h"
#include "evolution/trainer.h"
#include "namm/namm_policy.h"
#include "namm/policy_file.h"
#include "tasks/fitness.h"
#include "tasks/registry.h"
#include "tasks/runner.h"
#include "transformer/loader.h"

namespace nammkit::cli {
namespace {

// One prompt of a stage's pool with its full-cache reference.
struct PoolEntry {
  int task = 0;
  const Sample* sample = nullptr;
  Outcome full;
};

struct StagePool {
  std::vector<Task> tasks;
  std::vector<PoolEntry> entries;
};

// The normalisation statistics travel in the checkpoint's opaque "extra" state as JSON.
std::string stats_to_json(const FeatureStats& s) {
  return nlohmann::json{{"mean", s.mean()}, {"var", s.variance()}, {"count", s.count()}}.dump();
}
FeatureStats stats_from_json(const std::string& text, const std::string& where) {
  try {
    const auto j = nlohmann::json::parse(text);
    return FeatureStats(j.at("mean").get<std::vector<double>>(), j.at("var").get<std::vector<double>>(),
                        j.at("count").get<int64_t>());
  } catch (const nlohmann::json::exception& e) {
    fail(where, std::string("normalisation statistics: ") + e.what());
  }
}

std::vector<float> to_floats(std::span<const double> v) { return std::vector<float>(v.begin(), v.end()); }

// Dispatches each stage's generations to a TBB evaluator over that stage's pool and turns raw scores
// into the normalised fitness by tasks/fitness's prompt_weights (the mean over a generation's prompts
// is exactly the fitness combine_tasks gives on them).
class NammFitnessEvaluator : public evo::PopulationEvaluator {
 public:
  NammFitnessEvaluator(const Backend& backend, const ExperimentConfig& config, const NammConfig& namm,
                       const std::map<std::string, StagePool>& pools, const FeatureNormalizer& normalizer)
      : backend_(backend), config_(config), namm_(namm), pools_(pools), normalizer_(normalizer) {
    for (const auto& [name, pool] : pools_) {
      const StageConfig& stage = stage_config(name);
      evo::TbbEvalSettings s;
      s.pool_size = int(pool.entries.size());
      s.prompts_per_generation = stage.prompts_per_generation;
      s.seed = config_.seed;
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

 private:
  const StageConfig& stage_config(const std::string& name) const {
    for (const auto& s : config_.stages)
      if (s.name == name) return s;
    fail(config_.file, "stage '" + name + "' not found");
  }

  // Weights of the generation's prompts (computed before the parallel loop, read-only inside it).
  void prepare(int64_t generation, const std::string& task_set) {
    if (generation == prepared_generation_ && task_set == prepared_set_) return;
    const StagePool& pool = pools_.at(task_set);
    const std::vector<int> chosen = evaluators_.at(task_set)->prompts_for(generation);
    std::vector<int> task;
    std::vector<Outcome> full;
    std::vector<SampleKind> kind;
    for (int p : chosen) {
      task.push_back(pool.entries[p].task);
      full.push_back(pool.entries[p].full);
      kind.push_back(pool.entries[p].sample->kind);
    }
    const PromptWeights w = prompt_weights(task, full, kind, config_.epsilon, config_.cache_weight);
    weights_ = w;
    weights_.weight.assign(pool.entries.size(), 0.0);  // indexed by pool entry
    for (size_t i = 0; i < chosen.size(); ++i) weights_.weight[chosen[i]] = w.weight[i];
    prepared_generation_ = generation;
    prepared_set_ = task_set;
  }

  evo::PromptScore score_prompt(const StagePool& pool, std::span<const double> params, const evo::PromptContext& ctx) {
    const PoolEntry& e = pool.entries[ctx.prompt];
    NammPolicy policy(namm_, to_floats(params), normalizer_);
    RunOptions run;
    run.max_context = config_.max_context;
    run.session = config_.session;
    const RunResult r = run_sample(backend_, &policy, *e.sample, run);
    evo::PromptScore out;
    out.score = weights_.value(size_t(ctx.prompt), Outcome{r.score, r.cache.mean});
    out.cache_size = r.cache.mean;
    return out;
  }

  const Backend& backend_;
  const ExperimentConfig& config_;
  const NammConfig& namm_;
  const std::map<std::string, StagePool>& pools_;
  const FeatureNormalizer& normalizer_;
  std::map<std::string, std::unique_ptr<evo::TbbPopulationEvaluator>> evaluators_;
  int64_t prepared_generation_ = -1;
  std::string prepared_set_;
  PromptWeights weights_;
};

// Full-cache pass over the first prompts of stage 1 with NAMM in statistics mode (reference §2.3).
FeatureStats collect_normalisation(const Backend& backend, const ExperimentConfig& config, const NammConfig& namm,
                                   const StagePool& pool) {
  const int n =
      config.norm_samples > 0 ? std::min<int>(config.norm_samples, pool.entries.size()) : int(pool.entries.size());
  ScorerShape shape = namm.scorer;
  std::vector<FeatureStats> per_sample(n);
  tbb::parallel_for(0, n, [&](int i) {
    NammPolicy policy(namm, std::vector<float>(shape.n_params(), 0.0f),
                      FeatureNormalizer::identity(namm.spectrogram.n_bins()));
    policy.set_mode(NammMode::CollectStats);
    RunOptions run;
    run.max_context = config.max_context;
    run.session = config.session;
    run_sample(backend, &policy, *pool.entries[i].sample, run);
    per_sample[i] = policy.collected_stats();
  });
  FeatureStats total(namm.spectrogram.n_bins());
  for (const auto& s : per_sample) total.merge(s);  // in order: deterministic
  if (total.count() == 0)
    fail(config.file,
         "normalization: no policy update happened on stage 1's prompts (prompts shorter than "
         "session.update_interval?)");
  return total;
}

void write_policy(const std::string& path, const ExperimentConfig& config, const Model& model,
                  const std::vector<double>& params, const FeatureStats& stats, int64_t generation, double fitness,
                  const std::string& note) {
  PolicyFile f = make_namm_policy_file(config.scorer);
  f.set_update_interval(config.session.update_interval);
  f.mutable_namm()->set_selection(config.selection.mode == SelectionMode::PerHead ? SELECTION_PER_HEAD
                                                                                  : SELECTION_SHARED_MAX_K);
  f.mutable_namm()->set_max_tokens_per_head(config.selection.max_tokens_per_head);
  f.clear_params();
  for (double p : params) f.add_params(static_cast<float>(p));
  set_norm_stats(f, stats);
  set_base_model(f, model);
  Provenance* prov = f.mutable_provenance();
  prov->set_config_hash(config.hash());
  prov->set_generation(generation);
  prov->set_fitness(fitness);
  prov->set_created_at(utc_now_iso8601());
  prov->set_nammkit_version(nammkit_version());
  prov->set_note(note);
  save_policy(f, path);
}

}  // namespace

int run_evolution(const ExperimentConfig& config, const EvolveOptions& options) {
  evo::clear_interrupt();
  std::unique_ptr<tbb::global_control> threads;
  if (config.threads > 0)
    threads = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, config.threads);
  try {
    make_writable_directory(config.output_dir);
  } catch (const Error& e) {
    fail(config.file, std::string("output_dir: ") + e.what());
  }
  // One process per run directory: a second evolve on it would interleave the log and checkpoints.
  const FileLock lock(config.output_dir + "/.lock");
  remove_stale_temporaries(config.output_dir);  // left by a process killed mid-write
  const std::string latest = config.output_dir + "/latest.ckpt";
  if (options.resume && !file_exists(latest)) fail(latest, "--resume: no checkpoint to resume from");
  if (!options.resume && file_exists(latest))
    fail(config.output_dir,
         "already holds a run (latest.ckpt); pass --resume to continue it or pick another output_dir");
  write_file_atomic(config.output_dir + "/config.json", config.source);

  const Model model = load_model(config.model);
  const std::unique_ptr<Backend> backend = make_backend(model, options.device);
  std::fprintf(stderr, "device: %s\n", backend->name().c_str());
  NammConfig namm = NammConfig::reference(config.scorer);
  namm.selection = config.selection;

  // Task pools and their full-cache references.
  TaskContext context;
  context.tokenizer = &model.tokenizer;
  ReferenceCache references(config.output_dir + "/full_cache_scores.json");
  RunOptions full_run;
  full_run.max_context = config.max_context;
  full_run.session = config.session;
  std::map<std::string, StagePool> pools;
  for (size_t s = 0; s < config.stages.size(); ++s) {
    const StageConfig& stage = config.stages[s];
    if (pools.count(stage.name))
      fail(config.file, "stages[" + std::to_string(s) + "].name: duplicate '" + stage.name + "'");
    StagePool& pool = pools[stage.name];
    pool.tasks = build_task_set(stage.tasks, context, config.file + ": stages[" + std::to_string(s) + "].tasks");
    std::fprintf(stderr, "stage %s: computing full-cache references...\n", stage.name.c_str());
    for (size_t t = 0; t < pool.tasks.size(); ++t) {
      const std::vector<Outcome> full = full_cache_outcomes(*backend, pool.tasks[t], references, full_run);
      for (size_t i = 0; i < pool.tasks[t].samples.size(); ++i)
        pool.entries.push_back(PoolEntry{int(t), &pool.tasks[t].samples[i], full[i]});
    }
    if (pool.entries.empty()) fail(config.file, "stages[" + std::to_string(s) + "].tasks: no prompts");
  }

  evo::TrainerOptions trainer_options;
  trainer_options.run_dir = config.output_dir;
  trainer_options.config = config.canonical;
  for (const auto& stage : config.stages) trainer_options.stages.push_back({stage.generations, stage.name});

  // Normalisation statistics: collected once, then carried by the checkpoints.
  FeatureStats stats;
  std::string extra;
  if (options.resume) {
    extra = evo::load_checkpoint(latest).extra;
    stats = stats_from_json(extra, latest);
  } else {
    std::fprintf(stderr, "collecting normalisation statistics (full cache, stage %s)...\n",
                 config.stages[0].name.c_str());
    stats = collect_normalisation(*backend, config, namm, pools.at(config.stages[0].name));
    extra = stats_to_json(stats);
  }
  const FeatureNormalizer normalizer = FeatureNormalizer::from_stats(stats);

  NammFitnessEvaluator evaluator(*backend, config, namm, pools, normalizer);
  evo::Trainer trainer(config.cmaes, evaluator, trainer_options);
  trainer.set_extra_state(extra);
  trainer.set_mean_evaluator([&](const Eigen::VectorXd& mean, int64_t generation, const std::string& task_set) {
    return evaluator.evaluate_mean(mean, generation, task_set);
  });
  double last_mean_fitness = 0;  // provenance of policy.nammp: the mean's evaluation at its generation
  int64_t generations_this_session = 0;
  trainer.set_generation_hook([&](const evo::GenerationRecord& record) {
    if (std::isfinite(record.mean_eval_fitness)) last_mean_fitness = record.mean_eval_fitness;
    // --stop-after: the trainer checks the interrupt flag after this generation's checkpoint.
    if (options.stop_after > 0 && ++generations_this_session >= options.stop_after) evo::request_interrupt();
  });
  if (options.resume) trainer.resume(latest);

  const evo::TrainResult result = trainer.run();
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

}  // namespace nammkit::cli
