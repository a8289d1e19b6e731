// Baselines and advantages of REINFORCE / PPO: A_r = reward_r - b_r, which leaves the policy gradient
// unbiased when b_r does not depend on rollout r's own actions, and cuts its variance.
//
//  - moving_average: b = an exponential moving average of the rewards of the rollout's task, updated
//    after the batch with the batch's mean reward of that task (the first batch of a task, with no
//    average yet, uses the mean of the batch's other rewards of the task);
//  - leave_one_out: b_r = the mean reward of the *other* samples of the same prompt in this batch
//    (RLOO, Kool et al. 2019; configs need at least 2 samples per prompt). A prompt left with a single
//    sample (the others failed) gets advantage 0: it carries no comparison.
// Optionally the advantages are then divided by their standard deviation over the batch (as PPO
// implementations usually do; Adam is nearly invariant to that scale, the clip is not).
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace nammkit::rl {

enum class BaselineKind : uint8_t { MovingAverage, LeaveOneOut };
const char* baseline_name(BaselineKind kind);  // "moving_average", "leave_one_out"

struct BaselineSettings {
  BaselineKind kind = BaselineKind::LeaveOneOut;
  double decay = 0.9;      // moving_average: b <- decay b + (1 - decay) batch mean
  bool normalize = false;  // divide the advantages by their standard deviation over the batch
};

struct RewardSample {
  int prompt = 0;    // index in the stage's prompt pool (samples of one prompt share it)
  std::string task;  // the moving average's key
  double reward = 0;
};

// The moving averages, by task (saved in checkpoints).
using MovingBaselines = std::map<std::string, double>;

// Advantages of a batch, in the order of `samples`. Updates `baselines` (moving_average only).
std::vector<double> advantages(std::span<const RewardSample> samples, const BaselineSettings& settings,
                               MovingBaselines& baselines);

}  // namespace nammkit::rl
