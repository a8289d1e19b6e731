#include "namm/selection.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "namm/baselines.h"

namespace nammkit {

std::vector<int32_t> top_k_chronological(std::span<const float> scores, int k) {
  const int n = static_cast<int>(scores.size());
  k = std::clamp(k, 0, n);
  std::vector<int32_t> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  if (k < n) {
    // NaN ranks below everything; equal scores rank the newer token first.
    auto better = [&](int32_t a, int32_t b) {
      const float sa = scores[a], sb = scores[b];
      const bool na = std::isnan(sa), nb = std::isnan(sb);
      if (na != nb) return nb;
      if (!na && sa != sb) return sa > sb;
      return a > b;
    };
    std::nth_element(idx.begin(), idx.begin() + k, idx.end(), better);
    idx.resize(k);
  }
  std::sort(idx.begin(), idx.end());
  return idx;
}

SelectionOptions with_budget(const SelectionOptions& options, int64_t tokens_seen) {
  if (options.keep_fraction <= 0) return options;
  SelectionOptions ranked = options;
  ranked.mode = SelectionMode::PerHead;
  ranked.threshold = -std::numeric_limits<float>::infinity();  // every non-NaN score passes
  const int allowed = Budget::fraction(options.keep_fraction).tokens_for(tokens_seen);
  ranked.max_tokens_per_head =
      options.max_tokens_per_head > 0 ? std::min(options.max_tokens_per_head, allowed) : allowed;
  return ranked;
}

KeepLists select_tokens(std::span<const std::span<const float>> scores_per_head, const SelectionOptions& options) {
  const int n_heads = static_cast<int>(scores_per_head.size());
  // The newest token always passes: copy the scores with the last one forced to +inf.
  std::vector<std::vector<float>> scores(n_heads);
  std::vector<int> passing(n_heads, 0);
  for (int h = 0; h < n_heads; ++h) {
    scores[h].assign(scores_per_head[h].begin(), scores_per_head[h].end());
    if (!scores[h].empty()) scores[h].back() = std::numeric_limits<float>::infinity();
    for (float s : scores[h]) passing[h] += (s >= options.threshold);  // false for NaN
  }
  const int shared_k = n_heads ? *std::max_element(passing.begin(), passing.end()) : 0;
  KeepLists keep(n_heads);
  for (int h = 0; h < n_heads; ++h) {
    int k = options.mode == SelectionMode::SharedMaxK ? shared_k : passing[h];
    if (options.max_tokens_per_head > 0) k = std::min(k, options.max_tokens_per_head);
    // top-k by score equals "the passing tokens" whenever k == passing[h], so one path serves both.
    keep[h] = top_k_chronological(scores[h], k);
  }
  return keep;
}

}  // namespace nammkit
