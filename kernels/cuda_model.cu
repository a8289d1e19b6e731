// Weight upload and the cuBLAS linear layer; see cuda_model.h.
#include "kernels/cuda_model.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/layer_ops.h"
#include "transformer/rope.h"

namespace nammkit::kernels {
namespace {

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}

DType choose_dtype(const Model& m, MatrixPrecision p) {
  if (p == MatrixPrecision::F16) return DType::F16;
  if (p == MatrixPrecision::BF16) return DType::BF16;
  return m.layers.empty() || m.layers[0].wq.dtype != DType::BF16 ? DType::F16 : DType::BF16;
}

// Converts W to `dtype` on the host, a block of rows at a time, and copies it to the device.
DeviceMatrix upload_matrix(const WeightMatrix& W, DType dtype, const std::string& name) {
  if (W.rows <= 0 || W.cols <= 0 || !W.data) fail(name, "empty weight matrix");
  DeviceMatrix out;
  out.dtype = dtype;
  out.rows = W.rows;
  out.cols = W.cols;
  out.data.resize(size_t(W.rows) * W.cols);
  if (W.dtype == dtype) {  // already f16 / bf16: raw bytes
    cuda_check(cudaMemcpy(out.data.get(), W.data, W.bytes(), cudaMemcpyHostToDevice), "cudaMemcpy (weights)");
    return out;
  }
  const int64_t block_rows = std::max<int64_t>(1, (int64_t(1) << 22) / W.cols);  // ~4M elements per copy
  std::vector<float> f32(size_t(block_rows) * W.cols);
  std::vector<uint16_t> bits(f32.size());
  for (int64_t r0 = 0; r0 < W.rows; r0 += block_rows) {
    const int64_t n_rows = std::min(block_rows, W.rows - r0);
    for (int64_t r = 0; r < n_rows; ++r) dequantize(W.dtype, W.row(r0 + r), f32.data() + size_t(r) * W.cols, W.cols);
    const size_t n = size_t(n_rows) * W.cols;
    for (size_t i = 0; i < n; ++i) bits[i] = dtype == DType::F16 ? f32_to_f16(f32[i]) : f32_to_bf16(f32[i]);
    cuda_check(cudaMemcpy(out.data.get() + size_t(r0) * W.cols, bits.data(), n * 2, cudaMemcpyHostToDevice),
               "cudaMemcpy (weights)");
  }
  return out;
}

DeviceBuffer<float> upload_vector(const std::vector<float>& v, size_t expected, const std::string& name) {
  if (v.size() != expected)
    fail(name, "expected " + std::to_string(expected) + " values, got " + std::to_string(v.size()));
  DeviceBuffer<float> d(v.size());
  if (!v.empty())
    cuda_check(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy (vector)");
  return d;
}

DeviceBuffer<double> upload_inv_freq(const ModelConfig& c) {
  const std::vector<double> f = rope_inverse_frequencies(c);
  DeviceBuffer<double> d(std::max<size_t>(f.size(), 1));
  cuda_check(cudaMemcpy(d.get(), f.data(), f.size() * sizeof(double), cudaMemcpyHostToDevice), "cudaMemcpy (inv_freq)");
  return d;
}

DeviceMatrix random_matrix(int64_t rows, int64_t cols, DType dtype, uint64_t seed) {
  DeviceMatrix m;
  m.dtype = dtype;
  m.rows = rows;
  m.cols = cols;
  m.data.resize(size_t(rows) * cols);
  fill_uniform(m.data.get(), dtype, m.data.size(), seed, std::sqrt(3.0f / float(cols)), nullptr);
  return m;
}

DeviceBuffer<float> ones(size_t n) {
  DeviceBuffer<float> d(n);
  fill_f32(d.get(), n, 1.0f, nullptr);
  return d;
}

size_t matrix_bytes(const DeviceMatrix& m) { return m.data.bytes(); }

}  // namespace

void cublas_check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS) fail(call, std::string("cuBLAS status ") + cublas_status_name(status));
}

CudaModel::CudaModel(const Model& model, MatrixPrecision precision) {
  model.validate();
  const ModelConfig& c = model.config;
  config_ = c;
  dtype_ = choose_dtype(model, precision);
  const std::string where = model.path.empty() ? std::string("cuda model") : model.path;
  token_embedding_ = upload_matrix(model.token_embedding, dtype_, where + ": token_embedding");
  tied_ = model.output.data == model.token_embedding.data && model.output.dtype == model.token_embedding.dtype &&
          model.output.rows == model.token_embedding.rows && model.output.cols == model.token_embedding.cols;
  if (!tied_) output_ = upload_matrix(model.output, dtype_, where + ": output");
  final_norm_ = upload_vector(model.final_norm, size_t(c.dim), where + ": final_norm");
  layers_.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = model.layers[l];
    DeviceLayer& D = layers_[l];
    const std::string p = where + ": layer " + std::to_string(l) + ": ";
    D.attn_norm = upload_vector(L.attn_norm, size_t(c.dim), p + "attn_norm");
    D.ffn_norm = upload_vector(L.ffn_norm, size_t(c.dim), p + "ffn_norm");
    if (c.qkv_bias) {
      D.bq = upload_vector(L.bq, size_t(c.q_dim()), p + "bq");
      D.bk = upload_vector(L.bk, size_t(c.kv_dim()), p + "bk");
      D.bv = upload_vector(L.bv, size_t(c.kv_dim()), p + "bv");
    }
    D.wq = upload_matrix(L.wq, dtype_, p + "wq");
    D.wk = upload_matrix(L.wk, dtype_, p + "wk");
    D.wv = upload_matrix(L.wv, dtype_, p + "wv");
    D.wo = upload_matrix(L.wo, dtype_, p + "wo");
    D.w_gate = upload_matrix(L.w_gate, dtype_, p + "w_gate");
    D.w_up = upload_matrix(L.w_up, dtype_, p + "w_up");
    D.w_down = upload_matrix(L.w_down, dtype_, p + "w_down");
  }
  inv_freq_ = upload_inv_freq(c);
  cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (model upload)");
}

CudaModel CudaModel::synthetic(const ModelConfig& c, DType dtype, uint64_t seed) {
  if (dtype != DType::F16 && dtype != DType::BF16) fail("synthetic cuda model", "dtype must be f16 or bf16");
  if (c.dim <= 0 || c.hidden_dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 ||
      c.vocab_size <= 0 || c.n_heads % c.n_kv_heads != 0)
    fail("synthetic cuda model", "bad config");
  CudaModel m;
  m.config_ = c;
  m.dtype_ = dtype;
  m.tied_ = c.tied_embeddings;
  uint64_t s = seed * 1000;
  m.token_embedding_ = random_matrix(c.vocab_size, c.dim, dtype, ++s);
  if (!m.tied_) m.output_ = random_matrix(c.vocab_size, c.dim, dtype, ++s);
  m.final_norm_ = ones(c.dim);
  m.layers_.resize(c.n_layers);
  for (DeviceLayer& D : m.layers_) {
    D.attn_norm = ones(c.dim);
    D.ffn_norm = ones(c.dim);
    if (c.qkv_bias) {
      D.bq = DeviceBuffer<float>(c.q_dim());
      D.bk = DeviceBuffer<float>(c.kv_dim());
      D.bv = DeviceBuffer<float>(c.kv_dim());
      fill_f32(D.bq.get(), D.bq.size(), 0.0f, nullptr);
      fill_f32(D.bk.get(), D.bk.size(), 0.0f, nullptr);
      fill_f32(D.bv.get(), D.bv.size(), 0.0f, nullptr);
    }
    D.wq = random_matrix(c.q_dim(), c.dim, dtype, ++s);
    D.wk = random_matrix(c.kv_dim(), c.dim, dtype, ++s);
    D.wv = random_matrix(c.kv_dim(), c.dim, dtype, ++s);
    D.wo = random_matrix(c.dim, c.q_dim(), dtype, ++s);
    D.w_gate = random_matrix(c.hidden_dim, c.dim, dtype, ++s);
    D.w_up = random_matrix(c.hidden_dim, c.dim, dtype, ++s);
    D.w_down = random_matrix(c.dim, c.hidden_dim, dtype, ++s);
  }
  m.inv_freq_ = upload_inv_freq(c);
  cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (synthetic model)");
  return m;
}

size_t CudaModel::bytes() const {
  size_t b = matrix_bytes(token_embedding_) + (tied_ ? 0 : matrix_bytes(output_)) + final_norm_.bytes();
  for (const DeviceLayer& D : layers_)
    b += D.attn_norm.bytes() + D.ffn_norm.bytes() + D.bq.bytes() + D.bk.bytes() + D.bv.bytes() + matrix_bytes(D.wq) +
         matrix_bytes(D.wk) + matrix_bytes(D.wv) + matrix_bytes(D.wo) + matrix_bytes(D.w_gate) + matrix_bytes(D.w_up) +
         matrix_bytes(D.w_down);
  return b;
}

void linear(cublasHandle_t handle, const DeviceMatrix& W, const void* x_half, int n_tokens, float* out) {
  if (n_tokens <= 0) return;
  if (W.rows > INT32_MAX || W.cols > INT32_MAX) fail("linear", "matrix too large for cublasGemmEx");
  const cudaDataType_t type = W.dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F;
  const float alpha = 1.0f, beta = 0.0f;
  const int m = static_cast<int>(W.rows), k = static_cast<int>(W.cols);
  // Rows in blocks that keep each operand under 2^30 elements: the 32-bit API's index range, with room
  // (a lockstep step stacks a whole population's chunks: 256 x 512 rows x 14336 is 1.9e9).
  const int block = static_cast<int>(std::max<int64_t>(1, (int64_t{1} << 30) / std::max(m, k)));
  const size_t elem = 2;  // f16 / bf16 bytes
  for (int first = 0; first < n_tokens; first += block) {
    const int rows = std::min(block, n_tokens - first);
    // Column-major view: out^T [rows x T] = W (col-major [cols x rows], transposed) * x^T [cols x T].
    cublas_check(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, rows, k, &alpha, W.data.get(), type, k,
                              static_cast<const char*>(x_half) + size_t(first) * k * elem, type, k, &beta,
                              out + size_t(first) * m, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx");
  }
}

}  // namespace nammkit::kernels
