// A Model's weights on the GPU, for CudaSession (kernels/cuda_session.h).
//
// Matrices are stored as f16 or bf16 ([rows][cols] row-major, as on the host) and multiplied with
// cuBLAS (cublasGemmEx, f16/bf16 inputs, f32 accumulation and output). Precision::Auto keeps bf16
// checkpoints in bf16 and stores everything else (f32, f16, Q8_0) as f16. Q8_0 matrices are
// dequantised once at upload (not kept as Q8_0 blocks): simple, exact up to the f16 rounding of each
// weight, at twice the Q8_0 memory. Norm weights and biases stay f32; RoPE's inverse frequencies
// (rope_inverse_frequencies()) are uploaded once as doubles.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cuda_util.h"
#include "transformer/model.h"

namespace nammkit::kernels {

// Throws Error("<call>: cuBLAS status <name>") unless `status` is CUBLAS_STATUS_SUCCESS.
void cublas_check(cublasStatus_t status, const char* call);

struct DeviceMatrix {
  DType dtype = DType::F16;  // F16 or BF16 (raw bits)
  int64_t rows = 0;
  int64_t cols = 0;
  DeviceBuffer<uint16_t> data;  // [rows][cols]
};

struct DeviceLayer {
  DeviceBuffer<float> attn_norm, ffn_norm;  // [dim]
  DeviceBuffer<float> bq, bk, bv;           // empty unless qkv_bias
  DeviceMatrix wq, wk, wv, wo, w_gate, w_up, w_down;
};

enum class MatrixPrecision : uint8_t { Auto, F16, BF16 };

class CudaModel {
 public:
  // Uploads every weight of `model` (which must outlive nothing: the CudaModel keeps no host pointer
  // except the config). Throws Error naming the tensor or CUDA call on failure.
  explicit CudaModel(const Model& model, MatrixPrecision precision = MatrixPrecision::Auto);

  // A model of shape `config` with pseudo-random weights generated on the device (uniform, scaled by
  // 1/sqrt(fan-in); norms 1): for benchmarks of large shapes without a checkpoint. dtype F16 or BF16.
  static CudaModel synthetic(const ModelConfig& config, DType dtype, uint64_t seed = 1);

  CudaModel(CudaModel&&) = default;
  CudaModel& operator=(CudaModel&&) = default;

  const ModelConfig& config() const { return config_; }
  DType matrix_dtype() const { return dtype_; }
  const DeviceMatrix& token_embedding() const { return token_embedding_; }
  const DeviceMatrix& output() const { return tied_ ? token_embedding_ : output_; }
  const std::vector<DeviceLayer>& layers() const { return layers_; }
  const float* final_norm() const { return final_norm_.get(); }
  const double* inv_freq() const { return inv_freq_.get(); }  // [head_dim / 2]
  size_t bytes() const;                                       // device bytes of all weights

 private:
  CudaModel() = default;
  ModelConfig config_;
  DType dtype_ = DType::F16;
  bool tied_ = false;
  DeviceMatrix token_embedding_, output_;
  std::vector<DeviceLayer> layers_;
  DeviceBuffer<float> final_norm_;
  DeviceBuffer<double> inv_freq_;
};

// out[t][r] = sum_c x[t][c] * W[r][c] for t < n_tokens (a linear layer, no bias), on `handle`'s stream.
// x_half is [n_tokens][W.cols] of W.dtype (activations converted with convert_from_f32); out is
// [n_tokens][W.rows] f32.
void linear(cublasHandle_t handle, const DeviceMatrix& W, const void* x_half, int n_tokens, float* out);

}  // namespace nammkit::kernels
