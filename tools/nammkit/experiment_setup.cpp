#include "tools/nammkit/experiment_setup.h"

#include <tbb/parallel_for.h>

#include <cmath>
#include <cstdio>
#include <numeric>
#include <sstream>

#include "core/error.h"
#include "core/file_io.h"
#include "core/text.h"
#include "distributed/messages.pb.h"
#include "distributed/work_split.h"
#include "evolution/interrupt.h"
#include "evolution/metrics_log.h"
#include "namm/policy_file.h"
#include "tasks/fitness.h"
#include "tasks/reference_cache.h"

namespace nammkit::cli {
namespace {

// Stage pools in config order, then the held-out pool when configured.
std::vector<std::string> pool_names(const ExperimentConfig& config) {
  std::vector<std::string> names;
  for (const StageConfig& s : config.stages) names.push_back(s.name);
  if (config.heldout_every > 0) names.push_back(kHeldoutPool);
  return names;
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

}  // namespace

void finish_distributed(dist::Coordinator* coordinator, int64_t iterations) {
  if (!coordinator) return;
  coordinator->stop();
  const dist::Coordinator::Traffic& t = coordinator->traffic();
  std::fprintf(stderr,
               "distributed run: rank 0 sent %llu bytes in %llu messages and received %llu bytes in %llu messages "
               "(%lld generations / iterations done)\n",
               static_cast<unsigned long long>(t.sent_bytes), static_cast<unsigned long long>(t.sent_messages),
               static_cast<unsigned long long>(t.received_bytes), static_cast<unsigned long long>(t.received_messages),
               static_cast<long long>(iterations));
}

RunDirectory open_run_directory(const ExperimentConfig& config, bool resume) {
  evo::clear_interrupt();
  RunDirectory dir;
  if (config.threads > 0)
    dir.threads = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, config.threads);
  try {
    make_writable_directory(config.output_dir);
  } catch (const Error& e) {
    fail(config.file, std::string("output_dir: ") + e.what());
  }
  dir.lock = std::make_unique<FileLock>(config.output_dir + "/.lock");
  remove_stale_temporaries(config.output_dir);  // left by a process killed mid-write
  dir.latest = config.output_dir + "/latest.ckpt";
  if (resume && !file_exists(dir.latest)) fail(dir.latest, "--resume: no checkpoint to resume from");
  if (!resume && file_exists(dir.latest))
    fail(config.output_dir,
         "already holds a run (latest.ckpt); pass --resume to continue it or pick another output_dir");
  write_file_atomic(config.output_dir + "/config.json", config.source);
  return dir;
}

std::vector<float> to_floats(std::span<const double> v) { return std::vector<float>(v.begin(), v.end()); }

PromptWeights pool_weights(const StagePool& pool, std::span<const int> chosen, double epsilon, double cache_weight) {
  std::vector<int> task;
  std::vector<Outcome> full;
  std::vector<bool> floored;
  for (int p : chosen) {
    const PoolEntry& e = pool.entries[size_t(p)];
    task.push_back(e.task);
    full.push_back(e.full);
    floored.push_back(floors_at_epsilon(*e.sample));
  }
  PromptWeights w = prompt_weights(task, full, floored, epsilon, cache_weight);
  const std::vector<double> by_position = std::move(w.weight);
  w.weight.assign(pool.entries.size(), 0.0);
  for (size_t i = 0; i < chosen.size(); ++i) w.weight[size_t(chosen[i])] = by_position[i];
  return w;
}

evo::PromptScore prompt_score(const PromptWeights& weights, int prompt, const RunResult& r) {
  evo::PromptScore out;
  out.score = weights.value(size_t(prompt), Outcome{r.score, r.cache.mean});
  out.cache_size = r.cache.mean;
  return out;
}

std::string extra_to_json(const ExtraState& e) {
  return nlohmann::json{
      {"mean", e.stats.mean()}, {"var", e.stats.variance()}, {"count", e.stats.count()}, {"model_runs", e.model_runs}}
      .dump();
}

ExtraState extra_from_json(const std::string& text, const std::string& where) {
  try {
    const auto j = nlohmann::json::parse(text);
    ExtraState e;
    e.stats = FeatureStats(j.at("mean").get<std::vector<double>>(), j.at("var").get<std::vector<double>>(),
                           j.at("count").get<int64_t>());
    e.model_runs = j.value("model_runs", int64_t{0});  // absent in checkpoints of earlier versions
    return e;
  } catch (const nlohmann::json::exception& e) {
    fail(where, std::string("extra state (normalisation statistics): ") + e.what());
  }
}

bool use_lockstep(const BatchingConfig& batching, const Backend& backend) {
  switch (batching.mode) {
    case BatchingMode::Members: return false;
    case BatchingMode::Lockstep: return true;
    case BatchingMode::Auto: break;
  }
  return backend.device() == Device::Cpu && backend.model().weight_bytes_per_token() >= kLockstepAutoBytes;
}

std::unique_ptr<EvolutionSetup> build_setup(const ExperimentConfig& config, DeviceChoice device, bool announce) {
  auto setup = std::make_unique<EvolutionSetup>();
  setup->model = load_model(config.model);
  setup->backend = make_backend(setup->model, device, !announce);
  if (announce) std::fprintf(stderr, "device: %s\n", setup->backend->name().c_str());
  if (use_lockstep(config.batching, *setup->backend)) {
    LockstepCapacity capacity;
    capacity.sequences = config.batching.sequences;
    capacity.rows = config.batching.sequences * config.session.prefill_chunk;
    capacity.max_len = config.max_context > 0 ? config.max_context : setup->model.config.max_seq_len;
    setup->lockstep_backend = setup->backend->new_lockstep_backend(capacity);
    if (!setup->lockstep_backend)
      fail(config.file, "batching.mode: \"lockstep\": the backend " + setup->backend->name() +
                            " has no lockstep form; use \"auto\" or \"members\"");
    setup->population_threads = config.batching.sequences;
  }
  if (announce)
    std::fprintf(stderr, "population: %s\n",
                 setup->lockstep_backend
                     ? ("lockstep batches of up to " + std::to_string(setup->population_threads) + " sequences").c_str()
                     : "one session per sequence, in parallel");
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
  if (config.heldout_every > 0) {
    StagePool& pool = setup->pools[kHeldoutPool];
    pool.tasks = build_task_set(config.heldout_tasks, context, config.file + ": heldout.tasks");
    for (size_t t = 0; t < pool.tasks.size(); ++t)
      for (const Sample& sample : pool.tasks[t].samples) pool.entries.push_back(PoolEntry{int(t), &sample, {}});
    if (pool.entries.empty()) fail(config.file, "heldout.tasks: no prompts");
  }
  for (const std::string& name : pool_names(config))
    for (PoolEntry& e : setup->pools.at(name).entries) setup->entries.push_back(&e);
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
  for (const std::string& name : pool_names(config)) {
    const StagePool& pool = setup.pools.at(name);
    std::fprintf(stderr, "%s%s: computing full-cache references...\n", name == kHeldoutPool ? "" : "stage ",
                 name == kHeldoutPool ? "held-out prompts" : name.c_str());
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

HeldoutEvaluation::HeldoutEvaluation(const ExperimentConfig& config, const EvolutionSetup& setup,
                                     const FeatureNormalizer& normalizer, dist::Coordinator* coordinator)
    : config_(config), setup_(setup), normalizer_(normalizer), coordinator_(coordinator) {}

bool HeldoutEvaluation::due(int64_t iteration) const {
  return config_.heldout_every > 0 && (iteration + 1) % config_.heldout_every == 0;
}

std::string HeldoutEvaluation::path() const { return config_.output_dir + "/heldout.jsonl"; }

double HeldoutEvaluation::evaluate(std::span<const double> params, int64_t iteration, int64_t model_runs) const {
  const StagePool& pool = setup_.pools.at(kHeldoutPool);
  const size_t n = pool.entries.size();
  std::vector<RunResult> results(n);
  std::vector<std::string> errors(n);
  const std::vector<float> p = to_floats(params);
  auto run_all = [&] {
    tbb::parallel_for(size_t{0}, n, [&](size_t i) {
      try {
        NammPolicy policy(setup_.namm, p, normalizer_);
        results[i] = run_sample(*setup_.backend, &policy, *pool.entries[i].sample, setup_.run);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  };
  if (coordinator_) coordinator_->busy(run_all);
  else run_all();
  size_t failures = 0;
  for (size_t i = 0; i < n; ++i)
    if (!errors[i].empty() || !std::isfinite(results[i].score)) {
      ++failures;
      std::fprintf(stderr, "held-out evaluation after iteration %lld: prompt %zu failed: %s\n",
                   static_cast<long long>(iteration), i, errors[i].empty() ? "score is not finite" : errors[i].c_str());
    }
  std::vector<int> all(n);
  std::iota(all.begin(), all.end(), 0);
  const PromptWeights w = pool_weights(pool, all, config_.epsilon, 0.0);
  double score = 0, cache = 0, full_cache = 0;
  for (size_t i = 0; i < n; ++i) {
    score += w.value(i, Outcome{results[i].score, results[i].cache.mean});
    cache += results[i].cache.mean;
    full_cache += pool.entries[i].full.mean_cache;
  }
  score = failures ? std::nan("") : score / static_cast<double>(n);
  const double line_cache = cache / static_cast<double>(n);
  const double fraction = full_cache > 0 ? cache / full_cache : 1.0;
  append_line(path(), nlohmann::json{{"iteration", iteration},
                                     {"model_runs", model_runs},
                                     {"score", score},
                                     {"mean_cache_size", line_cache},
                                     {"cache_fraction", fraction},
                                     {"fitness", score + config_.cache_weight * (1.0 - fraction)},
                                     {"failures", failures}}
                          .dump());
  return score;
}

void HeldoutEvaluation::start(bool resumed, int64_t iteration) const {
  if (config_.heldout_every <= 0) return;
  evo::truncate_log(path(), resumed ? iteration : -1, "", "iteration");
  if (resumed) return;
  const double score = evaluate(initial_params(config_), -1, 0);
  std::fprintf(stderr, "held-out score of the initial policy: %.6g\n", score);
}

}  // namespace nammkit::cli
