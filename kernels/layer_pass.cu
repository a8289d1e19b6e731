// Shared pieces of the GPU forward pass; see layer_pass.h.
#include "kernels/layer_pass.h"

#include <algorithm>

#include "kernels/attention_decode.h"
#include "kernels/attention_prefill.h"
#include "kernels/layer_ops.h"

namespace nammkit::kernels {

void RowActivations::reserve(const ModelConfig& c, int rows, cudaStream_t stream) {
  if (rows <= rows_capacity) return;
  cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (activations)");
  const size_t R = size_t(std::max(rows, 2 * rows_capacity));
  x.resize(R * c.dim);
  xn.resize(R * c.dim);
  q.resize(R * c.q_dim());
  attn.resize(R * c.q_dim());
  k.resize(R * c.kv_dim());
  v.resize(R * c.kv_dim());
  proj.resize(R * c.dim);
  gate.resize(R * c.hidden_dim);
  up.resize(R * c.hidden_dim);
  xh.resize(R * std::max({c.dim, c.q_dim(), c.hidden_dim}));
  rows_capacity = static_cast<int>(R);
}

void project_qkv(cublasHandle_t cublas, const CudaModel& model, int layer, RowActivations& a, int rows,
                 cudaStream_t stream) {
  const ModelConfig& c = model.config();
  const DeviceLayer& L = model.layers()[size_t(layer)];
  rms_norm_rows(a.x.get(), L.attn_norm.get(), c.norm_eps, rows, c.dim, a.xn.get(), stream);
  convert_from_f32(a.xn.get(), model.matrix_dtype(), a.xh.get(), size_t(rows) * c.dim, stream);
  linear(cublas, L.wq, a.xh.get(), rows, a.q.get());
  linear(cublas, L.wk, a.xh.get(), rows, a.k.get());
  linear(cublas, L.wv, a.xh.get(), rows, a.v.get());
  if (c.qkv_bias) {
    add_bias_rows(a.q.get(), L.bq.get(), rows, c.q_dim(), stream);
    add_bias_rows(a.k.get(), L.bk.get(), rows, c.kv_dim(), stream);
    add_bias_rows(a.v.get(), L.bv.get(), rows, c.kv_dim(), stream);
  }
}

void finish_layer(cublasHandle_t cublas, const CudaModel& model, int layer, RowActivations& a, int rows,
                  cudaStream_t stream) {
  const ModelConfig& c = model.config();
  const DeviceLayer& L = model.layers()[size_t(layer)];
  const DType wdt = model.matrix_dtype();
  convert_from_f32(a.attn.get(), wdt, a.xh.get(), size_t(rows) * c.q_dim(), stream);
  linear(cublas, L.wo, a.xh.get(), rows, a.proj.get());
  add_inplace(a.x.get(), a.proj.get(), size_t(rows) * c.dim, stream);

  rms_norm_rows(a.x.get(), L.ffn_norm.get(), c.norm_eps, rows, c.dim, a.xn.get(), stream);
  convert_from_f32(a.xn.get(), wdt, a.xh.get(), size_t(rows) * c.dim, stream);
  linear(cublas, L.w_gate, a.xh.get(), rows, a.gate.get());
  linear(cublas, L.w_up, a.xh.get(), rows, a.up.get());
  swiglu(a.gate.get(), a.up.get(), size_t(rows) * c.hidden_dim, stream);
  convert_from_f32(a.gate.get(), wdt, a.xh.get(), size_t(rows) * c.hidden_dim, stream);
  linear(cublas, L.w_down, a.xh.get(), rows, a.proj.get());
  add_inplace(a.x.get(), a.proj.get(), size_t(rows) * c.dim, stream);
}

void output_logits(cublasHandle_t cublas, const CudaModel& model, const float* x_rows, int rows, RowActivations& a,
                   float* logits, cudaStream_t stream) {
  const ModelConfig& c = model.config();
  rms_norm_rows(x_rows, model.final_norm(), c.norm_eps, rows, c.dim, a.xn.get(), stream);
  convert_from_f32(a.xn.get(), model.matrix_dtype(), a.xh.get(), size_t(rows) * c.dim, stream);
  linear(cublas, model.output(), a.xh.get(), rows, logits);
}

void attend(const AttentionCall& call, DeviceBuffer<uint8_t>& decode_ws, cudaStream_t stream) {
  if (call.n_queries == 1) {
    DecodeShape shape;
    shape.kv_dtype = call.kv_dtype;
    shape.n_q_heads = call.n_q_heads;
    shape.n_kv_heads = call.n_kv_heads;
    shape.head_dim = call.head_dim;
    shape.max_len = call.max_len;
    shape.with_probs = call.probs != nullptr;
    grow(decode_ws, decode_workspace_bytes(shape), stream);
    DecodeArgs args;
    args.q_HxD = call.q;
    args.keys = call.keys;
    args.values = call.values;
    args.lens = call.lens;
    args.scale = call.scale;
    args.out_HxD = call.out;
    args.probs_KVxS = call.probs;
    args.probs_stride = call.probs ? call.max_len : 0;
    attention_decode(shape, args, decode_ws.get(), decode_ws.size(), stream);
    return;
  }
  PrefillShape shape;
  shape.kv_dtype = call.kv_dtype;
  shape.n_q_heads = call.n_q_heads;
  shape.n_kv_heads = call.n_kv_heads;
  shape.head_dim = call.head_dim;
  shape.n_queries = call.n_queries;
  shape.max_len = call.max_len;
  PrefillArgs args;
  args.q_TxHxD = call.q;
  args.keys = call.keys;
  args.values = call.values;
  args.lens = call.lens;
  args.scale = call.scale;
  args.out_TxHxD = call.out;
  args.probs_KVxTxS = call.probs;
  args.probs_stride = call.probs ? call.max_len : 0;
  attention_prefill(shape, args, stream);
}

}  // namespace nammkit::kernels
