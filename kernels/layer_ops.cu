// Per-layer kernels of the GPU forward pass; see layer_ops.h.
#include "kernels/layer_ops.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "kernels/cuda_util.h"
#include "kernels/device_math.cuh"

namespace nammkit::kernels {
namespace {

using detail::BF16Bits;
using detail::F16Bits;
using detail::to_float;

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements (at least 1, at most 65535 * 16).
unsigned grid_for(size_t n) {
  const size_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 1048560 ? 1048560 : blocks));
}

void require(bool ok, const char* where, const std::string& what) {
  if (!ok) fail(where, what);
}

__global__ void rms_norm_kernel(const float* x, const float* weight, float eps, int dim, float* out) {
  const size_t row = blockIdx.x;
  const float* xr = x + row * dim;
  float* orow = out + row * dim;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  __shared__ float partial[kThreads / 32];
  ss = detail::warp_sum(ss);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float s = threadIdx.x < blockDim.x / 32 ? partial[threadIdx.x] : 0.0f;
    s = detail::warp_sum(s);
    if (threadIdx.x == 0) partial[0] = s;
  }
  __syncthreads();
  const float scale = rsqrtf(partial[0] / dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) orow[i] = xr[i] * scale * weight[i];
}

// One thread per (token, head, pair). Token t is at positions[t], or first_position + t without them.
__global__ void rope_kernel(float* x, int n_tokens, int n_heads, int head_dim, int row_stride, int64_t first_position,
                            const int32_t* positions, const double* inv_freq, bool interleaved) {
  const int half = head_dim / 2;
  const size_t total = size_t(n_tokens) * n_heads * half;
  for (size_t idx = blockIdx.x * size_t(blockDim.x) + threadIdx.x; idx < total; idx += size_t(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(idx % half);
    const int h = static_cast<int>((idx / half) % n_heads);
    const int t = static_cast<int>(idx / (size_t(half) * n_heads));
    double s, c;
    const int64_t position = positions ? int64_t(positions[t]) : first_position + t;
    sincos(double(position) * inv_freq[i], &s, &c);
    const float sf = static_cast<float>(s), cf = static_cast<float>(c);
    float* v = x + size_t(t) * row_stride + size_t(h) * head_dim;
    const int a = interleaved ? 2 * i : i;
    const int b = interleaved ? 2 * i + 1 : i + half;
    const float x0 = v[a], x1 = v[b];
    v[a] = x0 * cf - x1 * sf;
    v[b] = x0 * sf + x1 * cf;
  }
}

__global__ void swiglu_kernel(float* gate, const float* up, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    gate[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void add_kernel(float* x, const float* y, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    x[i] += y[i];
}

__global__ void add_bias_kernel(float* x, const float* bias, size_t n, int width) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    x[i] += bias[i % width];
}

template <typename T>
__global__ void gather_kernel(const T* table, const int32_t* tokens, int n_tokens, int dim, float* out) {
  const size_t n = size_t(n_tokens) * dim;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t t = i / dim, c = i % dim;
    out[i] = to_float(table[size_t(tokens[t]) * dim + c]);
  }
}

__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(F16Bits* p, float x) { p->bits = __half_as_ushort(__float2half_rn(x)); }
__device__ __forceinline__ void store(BF16Bits* p, float x) { p->bits = __bfloat16_as_ushort(__float2bfloat16_rn(x)); }

template <typename T>
__global__ void convert_kernel(const float* in, T* out, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    store(out + i, in[i]);
}

// Where stacked row r of a lockstep step goes (kernels/batch_plan.h); without it (one sequence) row r
// is token r of a chunk of n_rows tokens at first_position + r, and the sequence is slot 0.
struct RowMap {
  const int32_t* row_slot = nullptr;
  const int32_t* row_t = nullptr;
  const int32_t* slot_tokens = nullptr;
  const int32_t* row_positions = nullptr;
  int64_t first_position = 0;
};

// One thread per (row, KV head, element). The row's sequence (slot) has its KV heads at pointer index
// slot * n_kv_heads + h; its chunk's T rows are the last T of each head (lens include the chunk).
template <typename T>
__global__ void append_kernel(const float* k, const float* v, int n_rows, int n_kv_heads, int head_dim,
                              void* const* keys, void* const* values, int32_t* const* positions, const int* lens,
                              RowMap map) {
  const int kv_dim = n_kv_heads * head_dim;
  const size_t total = size_t(n_rows) * kv_dim;
  for (size_t idx = blockIdx.x * size_t(blockDim.x) + threadIdx.x; idx < total; idx += size_t(gridDim.x) * blockDim.x) {
    const int r = static_cast<int>(idx / kv_dim);
    const int col = static_cast<int>(idx % kv_dim);
    const int slot = map.row_slot ? map.row_slot[r] : 0;
    const int t = map.row_t ? map.row_t[r] : r;
    const int chunk = map.slot_tokens ? map.slot_tokens[slot] : n_rows;
    const int h = slot * n_kv_heads + col / head_dim, e = col % head_dim;
    const size_t row = size_t(lens[h] - chunk + t);
    store(static_cast<T*>(keys[h]) + row * head_dim + e, k[idx]);
    store(static_cast<T*>(values[h]) + row * head_dim + e, v[idx]);
    if (e == 0 && positions)
      positions[h][row] = map.row_positions ? map.row_positions[r] : static_cast<int32_t>(map.first_position + t);
  }
}

// dst row i = src row index[i] (gather) or dst row index[i] = src row i (scatter); rows of `width` floats.
__global__ void copy_rows_kernel(const float* src, const int32_t* index, int n_rows, int width, float* dst,
                                 bool scatter) {
  const size_t total = size_t(n_rows) * width;
  for (size_t idx = blockIdx.x * size_t(blockDim.x) + threadIdx.x; idx < total; idx += size_t(gridDim.x) * blockDim.x) {
    const size_t i = idx / width, c = idx % width;
    const size_t mapped = size_t(index[i]);
    if (scatter) dst[mapped * width + c] = src[idx];
    else dst[idx] = src[mapped * width + c];
  }
}

void launch_append(const float* k, const float* v, int n_rows, int n_kv_heads, int head_dim, DType dtype,
                   void* const* keys, void* const* values, int32_t* const* positions, const int* lens,
                   const RowMap& map, cudaStream_t stream) {
  require(n_rows >= 0 && n_kv_heads > 0 && head_dim > 0, "append_kv", "bad shape");
  const size_t n = size_t(n_rows) * n_kv_heads * head_dim;
  if (n == 0) return;
  switch (dtype) {
    case DType::F32:
      append_kernel<float><<<grid_for(n), kThreads, 0, stream>>>(k, v, n_rows, n_kv_heads, head_dim, keys, values,
                                                                 positions, lens, map);
      break;
    case DType::F16:
      append_kernel<F16Bits><<<grid_for(n), kThreads, 0, stream>>>(k, v, n_rows, n_kv_heads, head_dim, keys, values,
                                                                   positions, lens, map);
      break;
    case DType::BF16:
      append_kernel<BF16Bits><<<grid_for(n), kThreads, 0, stream>>>(k, v, n_rows, n_kv_heads, head_dim, keys, values,
                                                                    positions, lens, map);
      break;
    default: fail("append_kv", std::string("unsupported KV dtype ") + dtype_name(dtype));
  }
  cuda_check_launch("append_kernel");
}

void launch_rope(float* x, int n_tokens, int n_heads, int head_dim, int row_stride, int64_t first_position,
                 const int32_t* positions, const double* inv_freq, RopeStyle style, cudaStream_t stream) {
  require(n_tokens >= 0 && n_heads > 0 && head_dim > 0 && head_dim % 2 == 0 && row_stride >= n_heads * head_dim,
          "rope_rows", "bad shape");
  const size_t total = size_t(n_tokens) * n_heads * (head_dim / 2);
  if (total == 0) return;
  rope_kernel<<<grid_for(total), kThreads, 0, stream>>>(x, n_tokens, n_heads, head_dim, row_stride, first_position,
                                                        positions, inv_freq, style == RopeStyle::Interleaved);
  cuda_check_launch("rope_kernel");
}

void launch_copy_rows(const float* src, const int32_t* index, int n_rows, int width, float* dst, bool scatter,
                      cudaStream_t stream) {
  require(n_rows >= 0 && width > 0, scatter ? "scatter_rows" : "gather_rows", "bad shape");
  const size_t n = size_t(n_rows) * width;
  if (n == 0) return;
  copy_rows_kernel<<<grid_for(n), kThreads, 0, stream>>>(src, index, n_rows, width, dst, scatter);
  cuda_check_launch("copy_rows_kernel");
}

__device__ __forceinline__ uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

template <typename T>
__global__ void fill_uniform_kernel(T* out, size_t n, uint64_t seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint64_t r = splitmix64(seed * 0x100000001B3ull + i);
    const float u = static_cast<float>(r >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    store(out + i, (2.0f * u - 1.0f) * scale);
  }
}

__global__ void fill_f32_kernel(float* out, size_t n, float value) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = value;
}

}  // namespace

void rms_norm_rows(const float* x, const float* weight, float eps, int n_rows, int dim, float* out,
                   cudaStream_t stream) {
  require(n_rows >= 0 && dim > 0, "rms_norm_rows", "bad shape");
  if (n_rows == 0) return;
  rms_norm_kernel<<<n_rows, kThreads, 0, stream>>>(x, weight, eps, dim, out);
  cuda_check_launch("rms_norm_kernel");
}

void rope_rows(float* x, int n_tokens, int n_heads, int head_dim, int row_stride, int64_t first_position,
               const double* inv_freq, RopeStyle style, cudaStream_t stream) {
  launch_rope(x, n_tokens, n_heads, head_dim, row_stride, first_position, nullptr, inv_freq, style, stream);
}

void rope_rows_at(float* x, int n_tokens, int n_heads, int head_dim, int row_stride, const int32_t* positions,
                  const double* inv_freq, RopeStyle style, cudaStream_t stream) {
  launch_rope(x, n_tokens, n_heads, head_dim, row_stride, 0, positions, inv_freq, style, stream);
}

void swiglu(float* gate, const float* up, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  swiglu_kernel<<<grid_for(n), kThreads, 0, stream>>>(gate, up, n);
  cuda_check_launch("swiglu_kernel");
}

void add_inplace(float* x, const float* y, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  add_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, y, n);
  cuda_check_launch("add_kernel");
}

void add_bias_rows(float* x, const float* bias, int n_rows, int width, cudaStream_t stream) {
  require(n_rows >= 0 && width > 0, "add_bias_rows", "bad shape");
  const size_t n = size_t(n_rows) * width;
  if (n == 0) return;
  add_bias_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, bias, n, width);
  cuda_check_launch("add_bias_kernel");
}

void embedding_gather(const void* table, DType dtype, const int32_t* tokens, int n_tokens, int dim, float* out,
                      cudaStream_t stream) {
  require(n_tokens >= 0 && dim > 0, "embedding_gather", "bad shape");
  const size_t n = size_t(n_tokens) * dim;
  if (n == 0) return;
  switch (dtype) {
    case DType::F32:
      gather_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<const float*>(table), tokens, n_tokens, dim, out);
      break;
    case DType::F16:
      gather_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<const F16Bits*>(table), tokens, n_tokens, dim,
                                                          out);
      break;
    case DType::BF16:
      gather_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<const BF16Bits*>(table), tokens, n_tokens, dim,
                                                          out);
      break;
    default: fail("embedding_gather", std::string("unsupported table dtype ") + dtype_name(dtype));
  }
  cuda_check_launch("gather_kernel");
}

void convert_from_f32(const float* in, DType dtype, void* out, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  switch (dtype) {
    case DType::F32: convert_kernel<<<grid_for(n), kThreads, 0, stream>>>(in, static_cast<float*>(out), n); break;
    case DType::F16: convert_kernel<<<grid_for(n), kThreads, 0, stream>>>(in, static_cast<F16Bits*>(out), n); break;
    case DType::BF16: convert_kernel<<<grid_for(n), kThreads, 0, stream>>>(in, static_cast<BF16Bits*>(out), n); break;
    default: fail("convert_from_f32", std::string("unsupported dtype ") + dtype_name(dtype));
  }
  cuda_check_launch("convert_kernel");
}

void append_kv(const float* k, const float* v, int n_tokens, int n_kv_heads, int head_dim, DType dtype,
               void* const* keys, void* const* values, int32_t* const* positions, const int* lens,
               int64_t first_position, cudaStream_t stream) {
  RowMap map;
  map.first_position = first_position;
  launch_append(k, v, n_tokens, n_kv_heads, head_dim, dtype, keys, values, positions, lens, map, stream);
}

void append_kv_rows(const float* k, const float* v, int n_rows, int n_kv_heads, int head_dim, DType dtype,
                    void* const* keys, void* const* values, int32_t* const* positions, const int* lens,
                    const int32_t* row_slot, const int32_t* row_t, const int32_t* slot_tokens,
                    const int32_t* row_positions, cudaStream_t stream) {
  RowMap map;
  map.row_slot = row_slot;
  map.row_t = row_t;
  map.slot_tokens = slot_tokens;
  map.row_positions = row_positions;
  launch_append(k, v, n_rows, n_kv_heads, head_dim, dtype, keys, values, positions, lens, map, stream);
}

void gather_rows(const float* src, const int32_t* index, int n_rows, int width, float* dst, cudaStream_t stream) {
  launch_copy_rows(src, index, n_rows, width, dst, false, stream);
}

void scatter_rows(const float* src, const int32_t* index, int n_rows, int width, float* dst, cudaStream_t stream) {
  launch_copy_rows(src, index, n_rows, width, dst, true, stream);
}

void fill_uniform(void* out, DType dtype, size_t n, uint64_t seed, float scale, cudaStream_t stream) {
  if (n == 0) return;
  switch (dtype) {
    case DType::F32:
      fill_uniform_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<float*>(out), n, seed, scale);
      break;
    case DType::F16:
      fill_uniform_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<F16Bits*>(out), n, seed, scale);
      break;
    case DType::BF16:
      fill_uniform_kernel<<<grid_for(n), kThreads, 0, stream>>>(static_cast<BF16Bits*>(out), n, seed, scale);
      break;
    default: fail("fill_uniform", std::string("unsupported dtype ") + dtype_name(dtype));
  }
  cuda_check_launch("fill_uniform_kernel");
}

void fill_f32(float* out, size_t n, float value, cudaStream_t stream) {
  if (n == 0) return;
  fill_f32_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, n, value);
  cuda_check_launch("fill_f32_kernel");
}

}  // namespace nammkit::kernels
