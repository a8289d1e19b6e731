// What a policy kept, per layer and KV head, at every update: the statistics a caller reads to
// report cache sizes (the reference's mem_stats/.../dynamic_cache_sizes).
#pragma once
#include <cstdint>
#include <vector>

#include "transformer/memory_policy.h"

namespace nammkit {

struct LayerUpdateStats {
  int64_t sequence = 0;  // index of the sequence (begin_sequence() calls) it belongs to
  int64_t position = 0;  // absolute tokens seen at this update
  int layer = 0;
  std::vector<int32_t> before;  // [n_kv_heads] cached tokens before the update
  std::vector<int32_t> kept;    // [n_kv_heads] cached tokens after it

  int32_t max_kept() const;
  int64_t total_kept() const;
};

struct PolicyStats {
  std::vector<LayerUpdateStats> updates;  // one per (update, layer), in call order
  int64_t sequences = 0;
  int64_t tokens_before = 0;  // summed over every update, layer and head
  int64_t tokens_kept = 0;

  int64_t tokens_evicted() const { return tokens_before - tokens_kept; }
  // Records one update from its window and the keep lists returned (empty outer = keep all).
  void record(const LayerWindow& window, const KeepLists& keep);
  void clear();
  // Of the most recent update of `layer` in the current sequence; nullptr when none.
  const LayerUpdateStats* last_update(int layer) const;
};

// Base of every nammkit policy: a MemoryPolicy that records PolicyStats across sequences.
class RecordingPolicy : public MemoryPolicy {
 public:
  const PolicyStats& stats() const { return stats_; }

 protected:
  // Derived classes call this from begin_sequence() and update().
  void note_sequence_start() { ++stats_.sequences; }
  void note_update(const LayerWindow& window, const KeepLists& keep) { stats_.record(window, keep); }

 private:
  PolicyStats stats_;
};

// The statistics of `policy` when it is a RecordingPolicy, else nullptr.
const PolicyStats* policy_stats(const MemoryPolicy& policy);

}  // namespace nammkit
