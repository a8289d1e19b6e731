// Fitness of a memory policy (spec §3.2): per task, the policy's mean score divided by the
// full-cache mean score on the same prompts; fitness = the plain mean of these ratios over tasks,
// plus an optional cache-size term.
//
// Zero denominators (spec §9.8): the reference divides by (full mean + 1e-7), so a task the model
// cannot do with a full cache (stories260K on passkey, PassageRetrieval with a weak model) makes
// the ratio explode. Here the denominator is max(full mean, epsilon) with epsilon = 0.01 by default
// (1 point on LongBench's x100 scale): scores lie in [0, 1], so a task ratio is bounded by
// 1 / epsilon = 100, and every floored task is reported (TaskFitness::floored) so the caller can see
// that its ratio is not a real normalisation.
//
// Cache term (off by default, like the reference's auxiliary_loss: none):
//   cache_weight * (1 - mean cache size under the policy / mean cache size with the full cache),
// both means over all (layer, KV head) after each run, over all samples of all tasks.
#pragma once
#include <string>
#include <vector>

#include "tasks/reference_cache.h"
#include "tasks/runner.h"
#include "tasks/sample.h"
#include "transformer/memory_policy.h"
#include "transformer/model.h"

namespace nammkit {

struct FitnessOptions {
  double epsilon = 0.01;    // floor of a task's full-cache mean score
  double cache_weight = 0;  // weight of the cache-size term
  RunOptions run;
};

// One sample's result as fitness needs it.
struct Outcome {
  double score = 0;
  double mean_cache = 0;
};

struct TaskFitness {
  std::string task;
  int samples = 0;
  double score = 0;       // policy mean score
  double full_score = 0;  // full-cache mean score on the same samples
  double ratio = 0;       // score / max(full_score, epsilon)
  bool floored = false;   // full_score < epsilon: the denominator is epsilon
  double mean_cache = 0;
  double full_mean_cache = 0;
};

struct FitnessReport {
  double fitness = 0;  // mean_ratio + cache_term
  double mean_ratio = 0;
  double cache_term = 0;
  double epsilon = 0;
  int floored_tasks = 0;
  double mean_cache = 0;       // cache size under the policy, mean over all samples of all tasks
  double full_mean_cache = 0;  // the same with the full cache
  std::vector<TaskFitness> tasks;
};

// The pure normalisation (no model): policy and full outcomes of the same samples, in order.
// The denominator of a task's normalised score: the full-cache mean score, floored at epsilon when
// `floored`: for generated-text metrics and answer probabilities, which can be 0, or nearly, with the
// full cache (without the floor one lucky prompt would outweigh every other task). Per-token
// likelihoods exp(mean log p) are strictly positive and can lie far below any sensible floor
// (out-of-domain text): never floored. floors_at_epsilon says which a sample is.
bool floors_at_epsilon(const Sample& sample);
double normalisation_denominator(double full_score, bool floored, double epsilon);

TaskFitness normalise_task(const std::string& task, const std::vector<Outcome>& policy,
                           const std::vector<Outcome>& full, double epsilon, bool floored = true);
FitnessReport combine_tasks(std::vector<TaskFitness> tasks, double cache_weight, double epsilon);

// The same fitness as a sum over prompts, for population evaluators that score each prompt apart (CMA-ES
// generations sample prompts from a pool). For the prompts P of one evaluation, prompt p of task t(p):
//   value(p) = score(p) * weight(p) + cache_weight * (1 - cache(p) / full_cache_mean),
//   weight(p) = |P| / (|T| * n_t(p) * denominator_t),  denominator_t = normalisation_denominator(full mean of t)
// so that the mean of value(p) over P is exactly combine_tasks(normalise_task(...)).fitness.
struct PromptWeights {
  std::vector<double> weight;  // per prompt, in the order given
  double full_cache_mean = 1;  // mean full-cache cache size over the prompts (> 0)
  double cache_weight = 0;
  double value(size_t prompt, const Outcome& outcome) const {
    return outcome.score * weight[prompt] + cache_weight * (1.0 - outcome.mean_cache / full_cache_mean);
  }
};
// task[p]: the task index of prompt p; full[p]: its full-cache outcome; floored[p]: floors_at_epsilon
// of its sample.
PromptWeights prompt_weights(const std::vector<int>& task, const std::vector<Outcome>& full,
                             const std::vector<bool>& floored, double epsilon, double cache_weight);

// The reference cache's key of a backend's results: the model and, off the CPU, the device (GPU
// arithmetic differs in the last bits).
std::string reference_model_id(const Backend& backend);

// Full-cache outcomes of a task's samples: read from `cache`, computing (and saving) the missing ones,
// keyed by reference_model_id.
std::vector<Outcome> full_cache_outcomes(const Backend& backend, const Task& task, ReferenceCache& cache,
                                         const RunOptions& options);

// Runs every sample of every task under `policy` (a fresh session per sample) and normalises.
FitnessReport evaluate_fitness(const Backend& backend, MemoryPolicy* policy, const std::vector<Task>& tasks,
                               ReferenceCache& cache, const FitnessOptions& options = {});

}  // namespace nammkit
