#include "tasks/fitness.h"

#include <algorithm>
#include <map>

#include "core/error.h"

namespace nammkit {

bool floors_at_epsilon(const Sample& sample) {
  return sample.kind == SampleKind::Generate || sample.sequence_probability;
}

double normalisation_denominator(double full_score, bool floored, double epsilon) {
  return floored ? std::max(full_score, epsilon) : full_score;
}

TaskFitness normalise_task(const std::string& task, const std::vector<Outcome>& policy,
                           const std::vector<Outcome>& full, double epsilon, bool floored) {
  if (policy.size() != full.size())
    fail(task, "fitness: " + std::to_string(policy.size()) + " policy results for " + std::to_string(full.size()) +
                   " full-cache results");
  if (policy.empty()) fail(task, "fitness: the task has no samples");
  if (!(epsilon > 0)) fail(task, "fitness: epsilon must be > 0");
  TaskFitness t;
  t.task = task;
  t.samples = static_cast<int>(policy.size());
  for (size_t i = 0; i < policy.size(); ++i) {
    t.score += policy[i].score;
    t.full_score += full[i].score;
    t.mean_cache += policy[i].mean_cache;
    t.full_mean_cache += full[i].mean_cache;
  }
  const double n = static_cast<double>(policy.size());
  t.score /= n;
  t.full_score /= n;
  t.mean_cache /= n;
  t.full_mean_cache /= n;
  const double denominator = normalisation_denominator(t.full_score, floored, epsilon);
  t.floored = denominator != t.full_score;
  t.ratio = t.score / denominator;
  return t;
}

FitnessReport combine_tasks(std::vector<TaskFitness> tasks, double cache_weight, double epsilon) {
  if (tasks.empty()) fail("fitness", "no tasks");
  FitnessReport r;
  r.epsilon = epsilon;
  double cache = 0, full_cache = 0;
  int samples = 0;
  for (const auto& t : tasks) {
    r.mean_ratio += t.ratio;
    r.floored_tasks += t.floored;
    cache += t.mean_cache * t.samples;
    full_cache += t.full_mean_cache * t.samples;
    samples += t.samples;
  }
  r.mean_ratio /= static_cast<double>(tasks.size());
  r.mean_cache = samples ? cache / samples : 0.0;
  r.full_mean_cache = samples ? full_cache / samples : 0.0;
  if (cache_weight != 0 && full_cache > 0) r.cache_term = cache_weight * (1.0 - cache / full_cache);
  r.fitness = r.mean_ratio + r.cache_term;
  r.tasks = std::move(tasks);
  return r;
}

PromptWeights prompt_weights(const std::vector<int>& task, const std::vector<Outcome>& full,
                             const std::vector<bool>& floored, double epsilon, double cache_weight) {
  if (task.size() != full.size() || task.size() != floored.size() || task.empty())
    fail("fitness", "prompt_weights: " + std::to_string(task.size()) + " prompts, " + std::to_string(full.size()) +
                        " full-cache outcomes, " + std::to_string(floored.size()) + " floor flags");
  std::map<int, int> count;
  std::map<int, double> full_sum;
  double full_cache = 0;
  for (size_t p = 0; p < task.size(); ++p) {
    ++count[task[p]];
    full_sum[task[p]] += full[p].score;
    full_cache += full[p].mean_cache;
  }
  PromptWeights w;
  w.cache_weight = cache_weight;
  w.full_cache_mean = std::max(full_cache / double(task.size()), 1e-9);
  for (size_t p = 0; p < task.size(); ++p) {
    const int t = task[p];
    const double denominator = normalisation_denominator(full_sum[t] / count[t], floored[p], epsilon);
    w.weight.push_back(double(task.size()) / (double(count.size()) * count[t] * denominator));
  }
  return w;
}

std::string reference_model_id(const Backend& backend) {
  return model_identity(backend.model()) + (backend.device() == Device::Cpu ? "" : std::string("@") + backend.name());
}

std::vector<Outcome> full_cache_outcomes(const Backend& backend, const Task& task, ReferenceCache& cache,
                                         const RunOptions& options) {
  const std::string model_id = reference_model_id(backend);
  std::vector<Outcome> out;
  bool added = false;
  for (const Sample& s : task.samples) {
    const uint64_t fp = sample_fingerprint(s, options);
    if (auto e = cache.find(model_id, task.name, s.id, fp)) {
      out.push_back({e->score, e->mean_cache});
      continue;
    }
    const RunResult r = run_sample(backend, nullptr, s, options);
    cache.put(model_id, task.name, s.id, {fp, r.score, r.log_likelihood, r.cache.mean});
    out.push_back({r.score, r.cache.mean});
    added = true;
  }
  if (added) cache.save();
  return out;
}

FitnessReport evaluate_fitness(const Backend& backend, MemoryPolicy* policy, const std::vector<Task>& tasks,
                               ReferenceCache& cache, const FitnessOptions& options) {
  std::vector<TaskFitness> results;
  for (const Task& task : tasks) {
    const std::vector<Outcome> full = full_cache_outcomes(backend, task, cache, options.run);
    std::vector<Outcome> mine;
    for (const Sample& s : task.samples) {
      const RunResult r = run_sample(backend, policy, s, options.run);
      mine.push_back({r.score, r.cache.mean});
    }
    results.push_back(normalise_task(task.name, mine, full, options.epsilon, floors_at_epsilon(task.samples.front())));
  }
  return combine_tasks(std::move(results), options.cache_weight, options.epsilon);
}

}  // namespace nammkit
