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
#include "tasks/fitness.h"
#include "tasks/registry.h"
#include "tasks/runner.h"
#include "tools/nammkit/rank_device.h"
#include "tools/nammkit/sample_runner.h"
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

// What every rank of a run builds alike: the model on its device and every stage's prompt pool.
struct EvolutionSetup {
  Model model;
  std::unique_ptr<Backend> backend;
  NammConfig namm;
  std::map<std::string, StagePool> pools;
  std::vector<PoolEntry*> entries;  // every stage's entries in stage order: the index of a prompt in jobs
  RunOptions run;                   // the runs' context and session options
};

std::unique_ptr<EvolutionSetup> build_setup(const ExperimentConfig& config, DeviceChoice device, bool announce) {
  auto setup = std::make_unique<EvolutionSetup>();
  setup->model = load_model(config.model);
  setup->backend = make_backend(setup->model, device, !announce);
  if (announce) std::fprintf(stderr, "device: %s\n", setup->backend->name().c_str());
  setup->namm = NammConfig::reference(config.scorer);
  setup->namm.selection = config.selection;
  setup->run.max_context = config.max_context;
  setup->run.session = config.session;
  TaskContext context;
  context.tokenizer = &setup->model.tokenizer;
  for (size_t s = 0; s < config.stages.size(); ++s) {
    const StageConfig& stage = config.stages[s];
    if (setup->pools.count(stage.name))
      fail(config.file, "stages[" + std::to_string(s) + "].name: duplicate '" + stage.name + "'");
    StagePool& pool = setup->pools[stage.name];
    pool.tasks = build_task_set(stage.tasks, context, config.file + ": stages[" + std::to_string(s) + "].tasks");
    for (size_t t = 0; t < pool.tasks.size(); ++t)
      for (const Sample& sample : pool.tasks[t].samples) pool.entries.push_back(PoolEntry{int(t), &sample, {}});
    if (pool.entries.empty()) fail(config.file, "stages[" + std::to_string(s) + "].tasks: no prompts");
  }
  for (const StageConfig& stage : config.stages)
    for (PoolEntry& e : setup->pools.at(stage.name).entries) setup->entries.push_back(&e);
  return setup;
}

// The full-cache reference of every prompt: from the cache file where it has them, the rest run (on
// every rank when distributed) and stored.
void fill_references(const ExperimentConfig& config, EvolutionSetup& setup, SampleRunner& runner) {
  ReferenceCache references(config.output_dir + "/full_cache_scores.json");
  const std::string model_id = reference_model_id(*setup.backend);
  std::vector<int> missing;
  std::vector<std::string> task_of;  // per missing prompt: its task's name (the cache key)
  int index = 0;                     // of the entry in setup.entries (stage order)
  for (const StageConfig& stage : config.stages) {
    const StagePool& pool = setup.pools.at(stage.name);
    std::fprintf(stderr, "stage %s: computing full-cache references...\n", stage.name.c_str());
    for (const PoolEntry& e : pool.entries) {
      ++index;
      const std::string& task = pool.tasks[size_t(e.task)].name;
      if (auto hit = references.find(model_id, task, e.sample->id, sample_fingerprint(*e.sample, setup.run))) {
        setup.entries[size_t(index - 1)]->full = {hit->score, hit->mean_cache};
        continue;
      }
      missing.push_back(index - 1);
      task_of.push_back(task);
    }
  }
  if (missing.empty()) return;
  const std::vector<RunResult> results = runner.run(missing, nullptr, "the full-cache references");
  for (size_t i = 0; i < missing.size(); ++i) {
    PoolEntry& e = *setup.entries[size_t(missing[i])];
    const RunResult& r = results[i];
    references.put(model_id, task_of[i], e.sample->id,
                   {sample_fingerprint(*e.sample, setup.run), r.score, r.log_likelihood, r.cache.mean});
    e.full = {r.score, r.cache.mean};
  }
  references.save();
}

// The normalisation statistics of one prompt: a full-cache pass with NAMM in statistics mode
// (reference §2.3).
FeatureStats prompt_stats(const EvolutionSetup& setup, const Sample& sample) {
  NammPolicy policy(setup.namm, std::vector<float>(setup.namm.scorer.n_params(), 0.0f),
                    FeatureNormalizer::identity(setup.namm.spectrogram.n_bins()));
  policy.set_mode(NammMode::CollectStats);
  run_sample(*setup.backend, &policy, sample, setup.run);
  return policy.collected_stats();
}

std::vector<FeatureStats> prompt_stats_here(const EvolutionSetup& setup, const StagePool& pool,
                                            std::span<const int> prompts) {
  std::vector<FeatureStats> out(prompts.size());
  tbb::parallel_for(size_t(0), prompts.size(),
                    [&](size_t i) { out[i] = prompt_stats(setup, *pool.entries[size_t(prompts[i])].sample); });
  return out;
}

dist::FeatureStatsMsg stats_message(const FeatureStats& s) {
  dist::FeatureStatsMsg m;
  m.mutable_mean()->Add(s.mean().begin(), s.mean().end());
  m.mutable_m2()->Add(s.m2().begin(), s.m2().end());
  m.set_count(s.count());
  return m;
}
FeatureStats stats_from_message(const dist::FeatureStatsMsg& m) {
  return FeatureStats::from_moments({m.mean().begin(), m.mean().end()}, {m.m2().begin(), m.m2().end()}, m.count());
}

// The normalisation statistics over the first prompts of stage 1, merged in prompt order (so the result
// does not depend on which rank or thread ran which prompt).
FeatureStats collect_normalisation(const ExperimentConfig& config, const EvolutionSetup& setup,
                                   dist::Coordinator* coordinator) {
  const StagePool& pool = setup.pools.at(config.stages[0].name);
  const int n =
      config.norm_samples > 0 ? std::min<int>(config.norm_samples, pool.entries.size()) : int(pool.entries.size());
  std::vector<int> prompts(static_cast<size_t>(n));
  std::iota(prompts.begin(), prompts.end(), 0);
  std::vector<FeatureStats> per_prompt;
  if (!coordinator) {
    per_prompt = prompt_stats_here(setup, pool, prompts);
  } else {
    std::vector<double> costs;
    for (int p : prompts) costs.push_back(expected_tokens(*pool.entries[size_t(p)].sample, config.max_context));
    dist::SampleJobMsg job;
    for (int p : prompts) job.add_sample(p);
    for (int r : dist::assign_by_cost(costs, coordinator->size())) job.add_rank_of_sample(r);
    const std::vector<std::string> replies =
        coordinator->run("normalisation", job.SerializeAsString(), "the normalisation statistics");
    per_prompt.resize(size_t(n));
    for (size_t r = 0; r < replies.size(); ++r) {
      dist::FeatureStatsListMsg reply;
      if (!reply.ParseFromString(replies[r]))
        fail(coordinator->describe(int(r)), "normalisation: reply does not parse");
      const std::vector<size_t> mine =
          dist::items_of(std::vector<int>(job.rank_of_sample().begin(), job.rank_of_sample().end()), int(r));
      if (size_t(reply.stats_size()) != mine.size())
        fail(coordinator->describe(int(r)), "normalisation: wrong number of statistics in the reply");
      for (size_t i = 0; i < mine.size(); ++i) per_prompt[mine[i]] = stats_from_message(reply.stats(int(i)));
    }
  }
  FeatureStats total(setup.namm.spectrogram.n_bins());
  for (const auto& s : per_prompt) total.merge(s);  // in order: deterministic
  if (total.count() == 0)
    fail(config.file,
         "normalization: no policy update happened on stage 1's prompts (prompts shorter than "
         "session.update_interval?)");
  return total;
}

// The jobs every rank answers (rank 0 its own share): the references' runs, the normalisation
// statistics, and the population's items.
void register_jobs(const ExperimentConfig& config, EvolutionSetup& setup, SampleRunner& references,
                   dist::Coordinator& coordinator) {
  coordinator.on("hello", [&config, &coordinator](const std::string& payload) {
    dist::HelloMsg hello;
    if (!hello.ParseFromString(payload)) fail("hello", "does not parse");
    if (hello.config_hash() != config.hash())
      fail(coordinator.describe(coordinator.rank()),
           config.file + ": differs from rank 0's config (hash " + config.hash() + " vs " + hello.config_hash() + ")");
    return std::string();
  });
  references.serve();
  coordinator.on("normalisation", [&config, &setup, &coordinator](const std::string& payload) {
    dist::SampleJobMsg job;
    if (!job.ParseFromString(payload) || job.sample_size() != job.rank_of_sample_size())
      fail("normalisation", "malformed request");
    const StagePool& pool = setup.pools.at(config.stages[0].name);
    std::vector<int> mine;
    for (int i = 0; i < job.sample_size(); ++i)
      if (job.rank_of_sample(i) == coordinator.rank()) {
        if (job.sample(i) < 0 || size_t(job.sample(i)) >= pool.entries.size()) fail("normalisation", "bad prompt");
        mine.push_back(job.sample(i));
      }
    dist::FeatureStatsListMsg reply;
    for (const FeatureStats& s : prompt_stats_here(setup, pool, mine)) *reply.add_stats() = stats_message(s);
    return reply.SerializeAsString();
  });
}

void write_policy(const std::string& path, const ExperimentConfig& config, const Model& model,
                  const std::vector<double>& params, const FeatureStats& stats, int64_t generation, double fitness,
                  const std::string& note) {
  PolicyFile f = make_namm_policy_file(config.scorer);
  f.set_update_interval(config.session.update_interval);
  f.set_attention_bf16(config.session.attention_bf16);
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

SampleAt entry_samples(const EvolutionSetup& setup) {
  return [&setup](int i) -> const Sample& {
    if (i < 0 || size_t(i) >= setup.entries.size()) fail("sample job", "prompt " + std::to_string(i) + " out of range");
    return *setup.entries[size_t(i)]->sample;
  };
}

dist::ItemCost item_cost(const ExperimentConfig& config, const EvolutionSetup& setup) {
  return [&config, &setup](const std::string& task_set, int prompt) {
    return expected_tokens(*setup.pools.at(task_set).entries.at(size_t(prompt)).sample, config.max_context);
  };
}

}  // namespace

int run_evolution(const ExperimentConfig& config, const EvolveOptions& options, dist::Coordinator* coordinator) {
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
    stats = collect_normalisation(config, *setup, coordinator);
    extra = stats_to_json(stats);
  }
  const FeatureNormalizer normalizer = FeatureNormalizer::from_stats(stats);

  NammFitnessEvaluator evaluator(*setup->backend, config, setup->namm, setup->pools, normalizer);
  std::unique_ptr<dist::DistributedItemRunner> runner;
  if (coordinator) {
    // The workers get the statistics and the references, then build the same evaluator.
    dist::EvolveStateMsg state;
    *state.mutable_stats() = stats_message(stats);
    for (const PoolEntry* e : setup->entries) {
      state.add_full_score(e->full.score);
      state.add_full_cache(e->full.mean_cache);
    }
    coordinator->on("evolve_state", [](const std::string&) { return std::string(); });  // rank 0 has it all
    coordinator->run("evolve_state", state.SerializeAsString(), "handing out the references");
    dist::serve_items(*coordinator, "evaluate",
                      [&evaluator](const evo::EvalRequest& request, std::span<const size_t> items, bool* interrupted) {
                        return evaluator.run_share(request, items, interrupted);
                      });
    runner = std::make_unique<dist::DistributedItemRunner>(*coordinator, "evaluate", item_cost(config, *setup));
    evaluator.set_runner(runner.get());
  }
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
  if (coordinator) {
    coordinator->stop();
    const dist::Coordinator::Traffic& t = coordinator->traffic();
    std::fprintf(stderr,
                 "distributed run: rank 0 sent %llu bytes in %llu messages and received %llu bytes in %llu messages "
                 "(%lld generations this session)\n",
                 static_cast<unsigned long long>(t.sent_bytes), static_cast<unsigned long long>(t.sent_messages),
                 static_cast<unsigned long long>(t.received_bytes),
                 static_cast<unsigned long long>(t.received_messages), static_cast<long long>(result.generations_run));
  }
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
  coordinator.on("evolve_state", [&](const std::string& payload) {
    dist::EvolveStateMsg state;
    if (!state.ParseFromString(payload) || state.full_score_size() != int(setup->entries.size()) ||
        state.full_cache_size() != int(setup->entries.size()))
      fail("evolve_state", "malformed or for other tasks");
    for (size_t i = 0; i < setup->entries.size(); ++i)
      setup->entries[i]->full = {state.full_score(int(i)), state.full_cache(int(i))};
    normalizer = std::make_unique<FeatureNormalizer>(FeatureNormalizer::from_stats(stats_from_message(state.stats())));
    evaluator =
        std::make_unique<NammFitnessEvaluator>(*setup->backend, *config, setup->namm, setup->pools, *normalizer);
    return std::string();
  });
  dist::serve_items(coordinator, "evaluate",
                    [&](const evo::EvalRequest& request, std::span<const size_t> items, bool* interrupted) {
                      if (!evaluator) fail("evaluate", "before the statistics and references arrived");
                      return evaluator->run_share(request, items, interrupted);
                    });
  coordinator.serve();
  return 0;
}

}  // namespace nammkit::cli
