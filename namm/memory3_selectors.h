// Memory3 selectors (spec memory3_bmojo.md §2.3, §5.2): which k of a reference chunk's n tokens a
// memory bank keeps, per memory layer and KV head. Every selector gives one score per chunk token
// (BOS and prefix tokens are never candidates); the top k by score are kept, ties to the lower
// index, the kept indices sorted ascending.
//
//   namm         NAMM features over the chunk's own causal attention (GQA-averaged, RoPE; what the
//                encoder forward pass produces and what NAMM was trained on), the chunk being one
//                update window of a fresh spectrogram state; then BAM scores (namm_bam) or the linear
//                read-out (namm_mlp) with the policy's parameters and normalisation statistics.
//                The STFT needs n_q % hop == 0: the [n, n] matrix is zero-padded to [n_q, n_q],
//                n_q = n rounded up to a multiple of hop; padding keys receive no attention and
//                padding queries give none, and both are dropped before scoring.
//                Recency: r_j = (n - 1) - j.
//   exp-sum      Memory3 as implemented: w_j = Σ_i exp(q_i·k_j/√d), pre-RoPE q and k, no causal mask,
//                queries and keys = the chunk tokens. Per query head, then the MEAN over the query
//                heads of the KV group (the paper leaves GQA open; the bank records "mean"). Computed
//                in log space, so large logits cannot overflow.
//   softmax-sum  Memory3's stated rule: w_j = Σ_i softmax_j(q_i·k_j/√d), same inputs and aggregation.
//   random       seeded uniform scores per (chunk tokens, layer, head): reproducible.
//   first / last the k oldest / newest chunk tokens.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "namm/export_memory3.h"
#include "namm/namm_scoring.h"
#include "transformer/model.h"

namespace nammkit {

// The min(k, n) indices with the highest scores, ties to the lower index, ascending. NaN ranks last.
std::vector<int32_t> top_k_lower_index(std::span<const float> scores, int k);

// The tokens options.selector keeps (options.k of them, or all n when n < k) for one (layer, KV
// head) of an encoded chunk. Chunk-relative indices (0 = the first token after the prefix).
// `namm` is required for Memory3Selector::Namm, which also needs the chunk encoded with attention.
std::vector<int32_t> select_reference_tokens(const EncodedReference& ref, int layer, int kv_head,
                                             const ModelConfig& config, const Memory3Options& options,
                                             const NammScoring* namm);

}  // namespace nammkit
