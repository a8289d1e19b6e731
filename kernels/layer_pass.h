// The pieces of the GPU forward pass that do not depend on how rows map to sequences, shared by
// CudaSession (the rows of one sequence's chunk) and CudaLockstepGroup (the stacked chunks of many):
// the dense parts of a layer, the attention call over a KV-head list, and the output layer.
//
// All activations are row-major f32 [rows][width] on the device; GEMM inputs are rounded to the weights'
// type (f16 / bf16) in `xh` first. Work is enqueued on the given stream (the cuBLAS handle must be bound
// to it); nothing synchronises except a reserve() that grows.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda_model.h"
#include "kernels/cuda_util.h"

namespace nammkit::kernels {

// Activations of up to rows_capacity rows.
struct RowActivations {
  DeviceBuffer<float> x, xn;     // [rows][dim]: the residual stream, its normalised copy
  DeviceBuffer<float> q, attn;   // [rows][q_dim]: queries, attention output
  DeviceBuffer<float> k, v;      // [rows][kv_dim]
  DeviceBuffer<float> proj;      // [rows][dim]: O and down projections before the residual add
  DeviceBuffer<float> gate, up;  // [rows][hidden_dim]
  DeviceBuffer<uint16_t> xh;     // [rows][max(dim, q_dim, hidden_dim)]: GEMM input in the weights' type
  int rows_capacity = 0;

  // Room for `rows` rows (at least double the old capacity when it grows, after the stream is idle;
  // contents are lost then).
  void reserve(const ModelConfig& c, int rows, cudaStream_t stream);
};

// xn = RMSNorm(x) (attention norm), then q, k, v = xn Wq, xn Wk, xn Wv (+ biases); before RoPE.
void project_qkv(cublasHandle_t cublas, const CudaModel& model, int layer, RowActivations& a, int rows,
                 cudaStream_t stream);

// The rest of the layer after attention: x += attn Wo; x += W_down(silu(RMSNorm(x) W_gate) * RMSNorm(x) W_up).
void finish_layer(cublasHandle_t cublas, const CudaModel& model, int layer, RowActivations& a, int rows,
                  cudaStream_t stream);

// logits [rows][vocab] = RMSNorm(x_rows) W_out for `rows` rows of x_rows ([rows][dim]; may be a.xn).
void output_logits(cublasHandle_t cublas, const CudaModel& model, const float* x_rows, int rows, RowActivations& a,
                   float* logits, cudaStream_t stream);

// One attention call of one layer over a list of KV heads (kernels/attention_decode.h for one query,
// kernels/attention_prefill.h for more): queries [n_queries][n_q_heads][head_dim], KV heads as device
// pointer arrays with lengths that include the queries' own keys.
struct AttentionCall {
  DType kv_dtype = DType::F16;
  int n_q_heads = 0, n_kv_heads = 0, head_dim = 0;
  int n_queries = 0;  // 1: decode kernel
  int max_len = 0;    // >= every length
  const float* q = nullptr;
  const void* const* keys = nullptr;
  const void* const* values = nullptr;
  const int* lens = nullptr;
  float scale = 0.0f;
  float* out = nullptr;
  float* probs = nullptr;  // optional [n_kv_heads][n_queries][max_len]: the GQA-averaged probabilities
};

// Enqueues the call; `decode_ws` grows to what the decode kernel needs.
void attend(const AttentionCall& call, DeviceBuffer<uint8_t>& decode_ws, cudaStream_t stream);

}  // namespace nammkit::kernels
