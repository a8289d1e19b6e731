#include "rl/advantage.h"

#include <cmath>

namespace nammkit::rl {

const char* baseline_name(BaselineKind kind) {
  return kind == BaselineKind::MovingAverage ? "moving_average" : "leave_one_out";
}

std::vector<double> advantages(std::span<const RewardSample> samples, const BaselineSettings& settings,
                               MovingBaselines& baselines) {
  std::vector<double> a(samples.size());
  if (settings.kind == BaselineKind::LeaveOneOut) {
    std::map<int, std::pair<double, int>> by_prompt;  // sum, count
    for (const RewardSample& s : samples) {
      by_prompt[s.prompt].first += s.reward;
      ++by_prompt[s.prompt].second;
    }
    for (size_t i = 0; i < samples.size(); ++i) {
      const auto [sum, count] = by_prompt.at(samples[i].prompt);
      // A prompt left with one sample (its others failed) has nothing to be compared with: advantage 0.
      a[i] = count < 2 ? 0.0 : samples[i].reward - (sum - samples[i].reward) / (count - 1);
    }
  } else {
    std::map<std::string, std::pair<double, int>> by_task;
    for (const RewardSample& s : samples) {
      by_task[s.task].first += s.reward;
      ++by_task[s.task].second;
    }
    for (size_t i = 0; i < samples.size(); ++i) {
      const auto it = baselines.find(samples[i].task);
      const auto [sum, count] = by_task.at(samples[i].task);
      // A task's first batch has no average yet: the mean of the batch's other rewards of the task, so
      // that no baseline includes the rollout's own reward (0 for a lone sample).
      if (it != baselines.end()) a[i] = samples[i].reward - it->second;
      else a[i] = count < 2 ? 0.0 : samples[i].reward - (sum - samples[i].reward) / (count - 1);
    }
    for (const auto& [task, sc] : by_task) {  // after the advantages: b never includes its own batch
      const double mean = sc.first / sc.second;
      const auto it = baselines.find(task);
      baselines[task] = it == baselines.end() ? mean : settings.decay * it->second + (1 - settings.decay) * mean;
    }
  }
  if (settings.normalize && a.size() > 1) {
    double mean = 0, var = 0;
    for (double x : a) mean += x;
    mean /= static_cast<double>(a.size());
    for (double x : a) var += (x - mean) * (x - mean);
    const double sd = std::sqrt(var / static_cast<double>(a.size()));
    if (sd > 1e-12)
      for (double& x : a) x /= sd;
  }
  return a;
}

}  // namespace nammkit::rl
