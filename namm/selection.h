// Turning per-token scores into keep lists (spec §2.5).
//
// A token passes when score >= threshold (0 in the reference); the newest token of every head is
// always kept (its score is forced to +inf), and NaN scores never pass.
//
//  - SharedMaxK (the reference, default): the cache of a layer is rectangular, so every head keeps
//    its K highest-scoring tokens with K = the largest per-head count of passing tokens. Heads
//    with fewer passing tokens keep some failing ones. Kept indices are returned in chronological
//    (ascending) order.
//  - PerHead (the cleaner variant): every head keeps exactly its passing tokens.
// An optional cap (max_tokens_per_head > 0) then keeps at most that many, highest scores first.
//  - keep_fraction > 0 replaces the threshold by a budget, for comparing a NAMM with the baselines at
//    a fixed cache size: every head keeps its floor(keep_fraction * tokens seen) highest-scoring
//    tokens (the baselines' Budget rule with the NAMM's ranking); with_budget() resolves it.
// Ties in score are broken towards the newer token, so selection is deterministic.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "transformer/memory_policy.h"

namespace nammkit {

enum class SelectionMode : uint8_t { SharedMaxK, PerHead };

struct SelectionOptions {
  SelectionMode mode = SelectionMode::SharedMaxK;
  float threshold = 0.0f;
  int max_tokens_per_head = 0;  // 0: no cap (the reference)
  double keep_fraction = 0;     // 0: the threshold rule (the reference); in (0, 1]: a budget
};

// The options for an update after `tokens_seen` tokens: unchanged without keep_fraction; with it, the
// threshold rule replaced by "top floor(keep_fraction * tokens_seen) per head" (PerHead, every score
// passes, that count as the cap, or the existing cap if smaller).
SelectionOptions with_budget(const SelectionOptions& options, int64_t tokens_seen);

// scores_per_head[h] holds the scores of head h's cached tokens (oldest first). Returns one
// ascending keep list per head (never the "keep everything" empty outer vector).
KeepLists select_tokens(std::span<const std::span<const float>> scores_per_head, const SelectionOptions& options);

// The `k` indices of `scores` with the highest scores (ties: newer first), in ascending order.
// Shared with the baselines.
std::vector<int32_t> top_k_chronological(std::span<const float> scores, int k);

}  // namespace nammkit
