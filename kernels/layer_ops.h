// Small per-layer kernels of the GPU forward pass (kernels/cuda_session.h). Each mirrors a CPU step of
// transformer/session.cpp; all work on row-major f32 activations, are enqueued on `stream` and do not
// synchronise. Every launch is checked (cuda_check_launch) and shapes are validated on the host.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "transformer/model.h"
#include "transformer/tensor.h"

namespace nammkit::kernels {

// out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight, for n_rows rows of `dim` (x and out may alias).
void rms_norm_rows(const float* x, const float* weight, float eps, int n_rows, int dim, float* out,
                   cudaStream_t stream);

// Rotates n_tokens rows of n_heads head vectors (head_dim each; rows row_stride floats apart) in
// place. Token t has absolute position first_position + t. inv_freq: [head_dim/2] device doubles
// (rope_inverse_frequencies()); angles and their sine/cosine in double, as apply_rope does.
void rope_rows(float* x, int n_tokens, int n_heads, int head_dim, int row_stride, int64_t first_position,
               const double* inv_freq, RopeStyle style, cudaStream_t stream);

// As rope_rows, token t at absolute position positions[t] ([n_tokens] device int32): the stacked rows of
// a lockstep step, each sequence at its own position.
void rope_rows_at(float* x, int n_tokens, int n_heads, int head_dim, int row_stride, const int32_t* positions,
                  const double* inv_freq, RopeStyle style, cudaStream_t stream);

// gate[i] = silu(gate[i]) * up[i] for i < n.
void swiglu(float* gate, const float* up, size_t n, cudaStream_t stream);

// x[i] += y[i] for i < n (the residual add).
void add_inplace(float* x, const float* y, size_t n, cudaStream_t stream);

// x[t][i] += bias[i] for n_rows rows of `width`.
void add_bias_rows(float* x, const float* bias, int n_rows, int width, cudaStream_t stream);

// out[t] = table[tokens[t]] as f32 ([n_tokens][dim]); table is [vocab][dim] f16 or bf16 bits (or f32).
// Token ids must already be checked against the vocabulary (the caller does, on the host).
void embedding_gather(const void* table, DType dtype, const int32_t* tokens, int n_tokens, int dim, float* out,
                      cudaStream_t stream);

// out[i] = in[i] rounded to dtype (F16 or BF16 bits, round to nearest even; F32 copies).
void convert_from_f32(const float* in, DType dtype, void* out, size_t n, cudaStream_t stream);

// Appends a chunk's keys and values to every KV head of one layer. k and v are [n_tokens][n_kv_heads *
// head_dim] f32 (post-RoPE keys); head h gets rows lens[h] - n_tokens .. lens[h] - 1 (lens already
// include the chunk), stored as dtype, and positions[h][row] = first_position + t when positions is
// non-null. keys/values/positions are device arrays of n_kv_heads device pointers.
void append_kv(const float* k, const float* v, int n_tokens, int n_kv_heads, int head_dim, DType dtype,
               void* const* keys, void* const* values, int32_t* const* positions, const int* lens,
               int64_t first_position, cudaStream_t stream);

// append_kv for the stacked rows of a lockstep step (kernels/batch_plan.h): row r belongs to sequence
// slot row_slot[r], is token row_t[r] of its chunk of slot_tokens[slot] tokens, at absolute position
// row_positions[r]. keys/values/positions/lens are [n_slots * n_kv_heads] device arrays, slot-major,
// lens already including each chunk. All index arrays are device memory.
void append_kv_rows(const float* k, const float* v, int n_rows, int n_kv_heads, int head_dim, DType dtype,
                    void* const* keys, void* const* values, int32_t* const* positions, const int* lens,
                    const int32_t* row_slot, const int32_t* row_t, const int32_t* slot_tokens,
                    const int32_t* row_positions, cudaStream_t stream);

// dst[i] = src[index[i]] (gather_rows) or dst[index[i]] = src[i] (scatter_rows) for n_rows rows of
// `width` floats; index is a device int32 array of n_rows entries.
void gather_rows(const float* src, const int32_t* index, int n_rows, int width, float* dst, cudaStream_t stream);
void scatter_rows(const float* src, const int32_t* index, int n_rows, int width, float* dst, cudaStream_t stream);

// Fills n elements (dtype F32, F16 or BF16) with reproducible pseudo-random values uniform in
// [-scale, scale] (a hash of seed and index; for synthetic benchmark weights).
void fill_uniform(void* out, DType dtype, size_t n, uint64_t seed, float scale, cudaStream_t stream);
// Fills n f32 with `value`.
void fill_f32(float* out, size_t n, float value, cudaStream_t stream);

}  // namespace nammkit::kernels
