// Prefill attention on the GPU: a chunk of T new query tokens per query head against a KV cache whose
// last T rows per head are the chunk's own keys (appended before the call). Causal within the chunk:
// query t of KV head h sees keys 0 .. n_old + t, with n_old = len[h] - T (heads may differ in length).
//
// Device layout (one layer):
//   q_TxHxD       [T][n_q_heads][head_dim] f32, post-RoPE (the activations' row-major layout)
//   keys[h]       [len[h]][head_dim] of kv_dtype (f32, or f16 / bf16 bits); values likewise; len[h] >= T
//   out_TxHxD     [T][n_q_heads][head_dim] f32
//   probs_KVxTxS  optional [n_kv_heads][T][probs_stride] f32: post-softmax probabilities averaged over the
//                 query heads of each KV head (query head h uses KV head h / group); 0 where a key is not
//                 visible to the query. nullptr skips the second pass that computes them.
//
// Flash-attention style: a block takes a tile of rows, a row being one (query, query head of the group),
// and streams the visible keys through shared memory with an online softmax, so the T x len logits are
// never stored. Two kernels (kernels/NOTES_prefill.md):
//   - tensor cores (f16 / bf16 KV, head_dim a multiple of 16, sm_80+): 64 rows per block, mma.sync
//     m16n8k16 with f32 accumulators; Q (pre-scaled) and P are rounded to the KV type, so results differ
//     from f32 math by O(2^-11) (f16) or O(2^-8) (bf16) relative to the output's scale;
//   - general (f32 KV, any other head_dim): 32 rows per block, f32 arithmetic on CUDA cores.
// Both compute probs in a second sweep over the keys with the final row max and sum. Enqueued on
// `stream`; nothing synchronises.
#pragma once
#include <cuda_runtime_api.h>

#include "transformer/tensor.h"

namespace nammkit::kernels {

struct PrefillShape {
  DType kv_dtype = DType::F16;
  int n_q_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;   // <= 256
  int n_queries = 0;  // T
  int max_len = 0;    // >= every len[h]

  int group() const { return n_q_heads / n_kv_heads; }  // <= 32
  void validate(const char* where) const;
};

struct PrefillArgs {
  const float* q_TxHxD = nullptr;
  const void* const* keys = nullptr;    // device array [n_kv_heads] of device pointers
  const void* const* values = nullptr;  // device array [n_kv_heads] of device pointers
  const int* lens = nullptr;            // device array [n_kv_heads], each in [T, max_len]
  float scale = 0.0f;                   // logit scale, usually 1/sqrt(head_dim)
  float* out_TxHxD = nullptr;
  float* probs_KVxTxS = nullptr;  // optional
  int probs_stride = 0;           // >= max_len when probs are requested
};

void attention_prefill(const PrefillShape& shape, const PrefillArgs& args, cudaStream_t stream);

}  // namespace nammkit::kernels
