// Decode attention on the GPU: one new query token per query head against a KV cache in which every
// (layer, KV head) has its own length (NAMM evicts per head, so lengths differ).
//
// Device layout (one layer):
//   q_HxD        [n_q_heads][head_dim] f32, post-RoPE
//   keys[h]      [len[h]][head_dim] of kv_dtype (f32, or f16 / bf16 bits), post-RoPE; values likewise
//   keys, values, lens: device arrays of n_kv_heads pointers / lengths
//   out_HxD      [n_q_heads][head_dim] f32
//   probs_KVxS   optional [n_kv_heads][probs_stride] f32: the post-softmax probabilities averaged over the
//                query heads of each KV head (GQA: query head h reads KV head h / (n_q_heads / n_kv_heads)).
//                Columns >= len[h] are written 0. nullptr skips the computation entirely.
//
// Flash-decoding: the cache is cut into splits of split_keys keys; one block handles one (split, KV
// head) and every query head of its group, so each key is read once per layer. Each block writes a
// partial (max, sum, un-normalised output) per query head; a combine kernel merges the splits. A head
// with len 0 gets a zero output. All work is enqueued on `stream`; nothing synchronises.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

#include "transformer/tensor.h"

namespace nammkit::kernels {

struct DecodeShape {
  DType kv_dtype = DType::F16;
  int n_q_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;         // <= 256
  int max_len = 0;          // >= every len[h]; sizes the grid and the workspace
  bool with_probs = false;  // whether probs_KVxS will be requested

  int group() const { return n_q_heads / n_kv_heads; }
  // Keys per split: enough splits for ~4 blocks per SM of an H100 at long contexts, multiples of 64.
  int split_keys() const;
  int n_splits() const;
  // Throws Error naming the field when the shape is unusable.
  void validate(const char* where) const;
};

// Bytes of device scratch attention_decode needs for `shape` (256-byte aligned pieces).
size_t decode_workspace_bytes(const DecodeShape& shape);

struct DecodeArgs {
  const float* q_HxD = nullptr;
  const void* const* keys = nullptr;    // device array [n_kv_heads] of device pointers
  const void* const* values = nullptr;  // device array [n_kv_heads] of device pointers
  const int* lens = nullptr;            // device array [n_kv_heads], each in [0, max_len]
  float scale = 0.0f;                   // logit scale, usually 1/sqrt(head_dim)
  float* out_HxD = nullptr;
  float* probs_KVxS = nullptr;  // required iff shape.with_probs
  int probs_stride = 0;         // >= max_len when probs are requested
};

// Enqueues the attention. `workspace` must hold decode_workspace_bytes(shape) bytes.
void attention_decode(const DecodeShape& shape, const DecodeArgs& args, void* workspace, size_t workspace_bytes,
                      cudaStream_t stream);

}  // namespace nammkit::kernels
