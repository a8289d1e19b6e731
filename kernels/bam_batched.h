// The BAM token scorer on the GPU (spec §2.4, parameter layout §3.1), batched over the tokens of many
// (layer, KV head) sequences and many population members: what score_population does on the CPU for
// one sequence, for all of them in one launch. Each member has its own parameter vector. Two modes:
//   - every member scores every sequence (the same features under λ parameter vectors), or
//   - each sequence is scored by its own member (seq_params): a lockstep batch, where sequence s holds
//     the features of member seq_params[s]'s own run.
//
// Per sequence of n tokens and member p: qkv = x W_qkv + b_qkv; token i attends to tokens j >= i (the
// backward mask) with softmax(q_i.k_j / sqrt(H)); o = (att v) W_o + b_o; y = x (1 + o[F:]) + o[:F];
// score = y.w + b. Weights are input-major: W[i][o] = p[offset + i*out + o].
//
// Device layout:
//   features_NxF  [total_tokens][F] f32: the sequences one after another
//   params_PxM    [n_members][shape.n_params()] f32
//   scores_PxN    [n_members][total_tokens] f32, or [total_tokens] with seq_params
// Arithmetic is double, as score_tokens does, so GPU and CPU agree to ~1e-6 even where logits cancel.
// A qkv scratch of (members scoring each token) * total_tokens * 3H doubles lives in the workspace.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "namm/bam_scorer.h"

namespace nammkit::kernels {

struct BamBatch {
  int n_members = 0;
  std::span<const int32_t> seq_offsets;  // host: [n_seqs + 1] ascending token offsets, first 0, last total_tokens
  std::span<const int32_t> seq_params;   // host: empty, or [n_seqs] the member (0..n_members-1) scoring each
  const float* features_NxF = nullptr;
  const float* params_PxM = nullptr;
  float* scores_PxN = nullptr;
};

// Bytes of device scratch bam_score_batched needs for `batch` (qkv scratch plus the uploaded offsets and
// members); only its n_members, seq_offsets and seq_params are read.
size_t bam_workspace_bytes(const ScorerShape& shape, const BamBatch& batch);

// Throws Error for a non-BAM shape, hidden > 128, bad offsets or members, or too little workspace. The
// offsets and members are uploaded on `stream` (the host copies may be reused on return); scoring runs
// asynchronously.
void bam_score_batched(const ScorerShape& shape, const BamBatch& batch, void* workspace, size_t workspace_bytes,
                       cudaStream_t stream);

}  // namespace nammkit::kernels
