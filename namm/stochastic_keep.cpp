#include "namm/stochastic_keep.h"

#include <cmath>

#include "core/byte_io.h"

namespace nammkit {

int64_t DecisionTrace::decisions() const {
  int64_t d = 0;
  for (const DecisionBlock& b : blocks) d += b.n > 0 ? b.n - 1 : 0;
  return d;
}

double DecisionTrace::log_prob() const {
  double lp = 0;
  for (const DecisionBlock& b : blocks)
    for (int j = 0; j + 1 < b.n; ++j) lp += std::log(b.keep_N[j] ? b.keep_prob_N[j] : 1.0 - b.keep_prob_N[j]);
  return lp;
}

double keep_probability(float score, double temperature) {
  // 1 / (1 + e^-x) written so that neither branch overflows.
  const double x = static_cast<double>(score) / temperature;
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

double keep_uniform(uint64_t seed, int layer, int64_t update, int head, int token) {
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ static_cast<uint64_t>(layer));
  h = splitmix64(h ^ static_cast<uint64_t>(update));
  h = splitmix64(h ^ static_cast<uint64_t>(head));
  h = splitmix64(h ^ static_cast<uint64_t>(token));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

std::vector<int32_t> sample_keep(std::span<const float> scores, const StochasticKeep& options, int layer,
                                 int64_t update, int head, DecisionBlock& block) {
  const int n = static_cast<int>(scores.size());
  block.layer = layer;
  block.kv_head = head;
  block.n = n;
  block.keep_N.assign(n, 1);
  block.keep_prob_N.assign(n, 1.0);
  std::vector<int32_t> keep;
  keep.reserve(n);
  for (int j = 0; j < n; ++j) {
    if (j + 1 < n) {
      // A NaN score gets p = NaN: the comparison below is false, so it is evicted, and its log-probability
      // is NaN, which the trainer reports as a failed rollout rather than learning from it.
      block.keep_prob_N[j] = keep_probability(scores[j], options.temperature);
      block.keep_N[j] = keep_uniform(options.seed, layer, update, head, j) < block.keep_prob_N[j] ? 1 : 0;
    }
    if (block.keep_N[j]) keep.push_back(j);
  }
  return keep;
}

}  // namespace nammkit
