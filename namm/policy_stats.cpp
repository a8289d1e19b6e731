#include "namm/policy_stats.h"

#include <algorithm>
#include <numeric>

namespace nammkit {

int32_t LayerUpdateStats::max_kept() const { return kept.empty() ? 0 : *std::max_element(kept.begin(), kept.end()); }
int64_t LayerUpdateStats::total_kept() const { return std::accumulate(kept.begin(), kept.end(), int64_t{0}); }
void PolicyStats::record(const LayerWindow& window, const KeepLists& keep) {
  LayerUpdateStats u;
  u.sequence = sequences - 1;
  u.layer = window.layer;
  u.position = window.tokens_seen();
  const size_t n_heads = window.heads.size();
  u.before.resize(n_heads);
  u.kept.resize(n_heads);
  for (size_t h = 0; h < n_heads; ++h) {
    u.before[h] = window.heads[h].n_keys;
    u.kept[h] = keep.empty() ? window.heads[h].n_keys : static_cast<int32_t>(keep[h].size());
    tokens_before += u.before[h];
    tokens_kept += u.kept[h];
  }
  updates.push_back(std::move(u));
}

void PolicyStats::clear() { *this = PolicyStats{}; }

const LayerUpdateStats* PolicyStats::last_update(int layer) const {
  for (auto it = updates.rbegin(); it != updates.rend(); ++it) {
    if (it->sequence != sequences - 1) return nullptr;
    if (it->layer == layer) return &*it;
  }
  return nullptr;
}

const PolicyStats* policy_stats(const MemoryPolicy& policy) {
  const auto* p = dynamic_cast<const RecordingPolicy*>(&policy);
  return p ? &p->stats() : nullptr;
}

}  // namespace nammkit
