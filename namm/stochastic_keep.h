// The stochastic NAMM policy of the RL trainers (rl/): a keep/evict action per cached token.
//
// At every update, for each (layer, KV head), the scorer's output s_j defines the keep probability
//   p_j = sigma(s_j / tau)            (tau: the temperature)
// and a Bernoulli draw a_j ~ p_j is the action: 1 keeps token j, 0 evicts it. The newest token of a head
// is always kept and is not an action (as in select_tokens). Every head keeps exactly its sampled tokens
// (the per_head rule); the greedy policy used at evaluation is the deterministic threshold rule
// s_j >= 0, i.e. p_j >= 1/2.
//
// A rollout records, for every update, what the policy saw and did (a DecisionBlock): the scorer's
// input features, the actions and the keep probabilities they were drawn with. That is all a policy
// gradient needs: the log-probability of the run's actions is sum_j log(a_j p_j + (1 - a_j)(1 - p_j)),
// whose gradient with respect to the scorer parameters is sum_j (a_j - p_j) / tau * d s_j / d theta
// (rl/policy_gradient.h), and PPO re-scores the same features under new parameters.
//
// The draws are counter-based (a hash of the seed, layer, update index, head and token), so a rollout
// is a pure function of (parameters, seed, prompt) whatever the thread schedule.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace nammkit {

struct StochasticKeep {
  double temperature = 1.0;  // tau > 0
  uint64_t seed = 0;         // of this rollout
};

// What the policy saw and did at one update of one (layer, KV head).
struct DecisionBlock {
  int layer = 0;
  int kv_head = 0;
  int n = 0;                        // cached tokens scored (the newest included)
  std::vector<float> features_NxF;  // the scorer's input, row-major
  std::vector<uint8_t> keep_N;      // the action: 1 keep, 0 evict (the newest token: 1, not an action)
  std::vector<double> keep_prob_N;  // p_j the action was drawn with (the newest token: 1)
};

// Every block of one rollout, in update order (layer by layer as the runtime calls them, heads in order).
struct DecisionTrace {
  std::vector<DecisionBlock> blocks;

  int64_t decisions() const;  // actions taken: tokens scored minus the forced newest ones
  double log_prob() const;    // sum over actions of log pi(a_j)
};

// p = sigma(score / temperature), in double.
double keep_probability(float score, double temperature);

// The uniform in [0, 1) that decides token `token` of (layer, update, head) under `seed`.
double keep_uniform(uint64_t seed, int layer, int64_t update, int head, int token);

// Samples the actions of one head's n scores; fills `block` (features are the caller's) and returns the
// kept indices in ascending order. `update` counts this layer's updates since the sequence began.
std::vector<int32_t> sample_keep(std::span<const float> scores, const StochasticKeep& options, int layer,
                                 int64_t update, int head, DecisionBlock& block);

}  // namespace nammkit
