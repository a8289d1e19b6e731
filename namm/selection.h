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
};

// scores_per_head[h] holds the scores of head h's cached tokens (oldest first). Returns one
// ascending keep list per head (never the "keep everything" empty outer vector).
KeepLists select_tokens(std::span<const std::span<const float>> scores_per_head, const SelectionOptions& options);

// The `k` indices of `scores` with the highest scores (ties: newer first), in ascending order.
// Shared with the baselines.
std::vector<int32_t> top_k_chronological(std::span<const float> scores, int k);

}  // namespace nammkit
