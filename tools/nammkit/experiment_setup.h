// What every trainer of an experiment (CMA-ES in experiment.cpp, REINFORCE / PPO in rl_experiment.cpp)
// builds alike from an ExperimentConfig: the model, every stage's prompt pool with its full-cache
// references, the normalisation statistics, the held-out evaluation, and the policy files it writes.
#pragma once
#include <tbb/global_control.h>

#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/file_io.h"
#include "distributed/coordinator.h"
#include "distributed/messages.pb.h"
#include "distributed/population_runner.h"
#include "evolution/population_eval.h"
#include "namm/namm_policy.h"
#include "tasks/fitness.h"
#include "tasks/registry.h"
#include "tasks/runner.h"
#include "tools/nammkit/experiment.h"
#include "tools/nammkit/experiment_config.h"
#include "tools/nammkit/sample_runner.h"
#include "transformer/backend.h"
#include "transformer/loader.h"

namespace nammkit::cli {

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

// The pool name of the held-out prompts (config "heldout"); not a valid stage name.
inline const std::string kHeldoutPool = "(heldout)";

// What every rank of a run builds alike: the model on its device and every pool (each stage's, and the
// held-out one when configured).
struct EvolutionSetup {
  Model model;
  std::unique_ptr<Backend> backend;
  // Where the population's sequences run (config "batching", resolved by build_setup): `backend` with
  // TBB across sequences (population_threads 0), or its lockstep form (Backend::new_lockstep_backend:
  // the CPU's or the GPU's batches) whose sequences run on population_threads dedicated threads
  // (evo::run_items).
  std::unique_ptr<Backend> lockstep_backend;
  int population_threads = 0;
  const Backend& population_backend() const { return lockstep_backend ? *lockstep_backend : *backend; }
  NammConfig namm;
  std::map<std::string, StagePool> pools;
  std::vector<PoolEntry*> entries;  // every pool's entries (stages in order, then held-out): indices in jobs
  RunOptions run;                   // the runs' context and session options
};

// Whether a run's population runs in lockstep batches (config "batching"): "members" never; "lockstep"
// always, on the CPU or on CUDA (kernels/cuda_lockstep.h); "auto" on the CPU when the model reads at
// least kLockstepAutoBytes of weights per token, where shared weight reads pay (see README "Batched
// population evaluation" for the measurements). "auto" does not pick CUDA's batches: that path has
// not yet run on a GPU (tests/test_kernels_lockstep.cpp is its check), so it is opt-in until it has.
inline constexpr size_t kLockstepAutoBytes = size_t{100} << 20;
bool use_lockstep(const BatchingConfig& batching, const Backend& backend);

// A training run's hold on OUTPUT_DIR for its lifetime: the thread limit (config "threads"), the
// directory's lock (one process per run directory: a second one would interleave the log and the
// checkpoints), and the checks that a fresh run does not overwrite one and a resumed run has one.
// Also clears a pending interrupt request and writes OUTPUT_DIR/config.json.
struct RunDirectory {
  std::unique_ptr<tbb::global_control> threads;
  std::unique_ptr<FileLock> lock;
  std::string latest;  // OUTPUT_DIR/latest.ckpt
};
RunDirectory open_run_directory(const ExperimentConfig& config, bool resume);

std::unique_ptr<EvolutionSetup> build_setup(const ExperimentConfig& config, DeviceChoice device, bool announce);

// The full-cache reference of every prompt: from OUTPUT_DIR/full_cache_scores.json where it has them, the
// rest run (on every rank when distributed) and stored.
void fill_references(const ExperimentConfig& config, EvolutionSetup& setup, SampleRunner& runner);

// The normalisation statistics over the first prompts of stage 1, merged in prompt order.
FeatureStats collect_normalisation(const ExperimentConfig& config, const EvolutionSetup& setup,
                                   dist::Coordinator* coordinator);

// The jobs every rank of a distributed run answers: the references, the normalisation statistics.
void register_jobs(const ExperimentConfig& config, EvolutionSetup& setup, SampleRunner& references,
                   dist::Coordinator& coordinator);

// The statistics as they travel between ranks (exact moments).
dist::FeatureStatsMsg stats_message(const FeatureStats& s);
FeatureStats stats_from_message(const dist::FeatureStatsMsg& m);

// A trainer's run state kept in the checkpoints' opaque "extra" field: the normalisation statistics and
// the training runs spent so far (JSON).
struct ExtraState {
  FeatureStats stats;
  int64_t model_runs = 0;
};
std::string extra_to_json(const ExtraState& extra);

// A run's contribution to the fitness: its share of the normalised score plus the cache term, and its
// mean cache size (what the population evaluation and the RL rollouts report per prompt).
evo::PromptScore prompt_score(const PromptWeights& weights, int prompt, const RunResult& result);
ExtraState extra_from_json(const std::string& text, const std::string& where);

void write_policy(const std::string& path, const ExperimentConfig& config, const Model& model,
                  const std::vector<double>& params, const FeatureStats& stats, int64_t generation, double fitness,
                  const std::string& note);

SampleAt entry_samples(const EvolutionSetup& setup);
dist::ItemCost item_cost(const ExperimentConfig& config, const EvolutionSetup& setup);

std::vector<float> to_floats(std::span<const double> v);

// The fitness weights of the prompts `chosen` (pool indices) of a pool, indexed by pool entry (0 for the
// others): value(entry, outcome) is that prompt's share of the normalised fitness (tasks/fitness.h).
PromptWeights pool_weights(const StagePool& pool, std::span<const int> chosen, double epsilon, double cache_weight);

// Evaluates a parameter vector with the deterministic (greedy) policy on the held-out prompts and
// appends {"iteration", "model_runs", "score", "mean_cache_size", "cache_fraction", "fitness"} to
// OUTPUT_DIR/heldout.jsonl. score = mean over prompts of the task-normalised score (score / full-cache
// score, tasks weighted equally; no cache term); cache_fraction = mean cache / mean full cache;
// fitness = score + cache_weight (1 - cache_fraction), the training fitness on held-out prompts.
// Returns the score. A prompt whose run fails (one line on stderr each) makes the point's score and
// fitness null (NaN returned) rather than ending the training.
class HeldoutEvaluation {
 public:
  // `coordinator`: on the root of a distributed run, the evaluation runs inside busy() so the workers
  // keep getting heartbeats while it runs on the root alone.
  HeldoutEvaluation(const ExperimentConfig& config, const EvolutionSetup& setup, const FeatureNormalizer& normalizer,
                    dist::Coordinator* coordinator);
  bool due(int64_t iteration) const;  // after iteration `iteration` (0-based): every config.heldout_every
  double evaluate(std::span<const double> params, int64_t iteration, int64_t model_runs) const;
  // Before the first iteration: a fresh run evaluates the initial parameters (iteration -1, 0 model
  // runs: the common starting point of every trainer); a resumed run drops the lines of the iterations
  // from `iteration` on, which it will redo. Nothing when no held-out tasks are configured.
  void start(bool resumed, int64_t iteration) const;
  std::string path() const;

 private:
  const ExperimentConfig& config_;
  const EvolutionSetup& setup_;
  const FeatureNormalizer& normalizer_;
  dist::Coordinator* coordinator_;
};

// The REINFORCE / PPO part of run_evolution (rl_experiment.cpp), after the set-up every trainer shares.
int train_rl(const ExperimentConfig& config, const EvolveOptions& options, const EvolutionSetup& setup,
             const ExtraState& extra, const FeatureNormalizer& normalizer, dist::Coordinator* coordinator,
             const std::string& latest);

// The root of a distributed run: releases the workers and prints what was exchanged. Nothing when null.
void finish_distributed(dist::Coordinator* coordinator, int64_t iterations);

}  // namespace nammkit::cli
