#include "kernels/attention_decode.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/cuda_util.h"
#include "kernels/device_math.cuh"

namespace nammkit::kernels {

namespace {
using detail::BF16Bits;
using detail::F16Bits;
using detail::to_float;

constexpr int kThreads = 128;          // 4 warps per block
constexpr int kGroupChunk = 8;         // query heads accumulated in registers at once
constexpr int kSmemFloats = 48 * 1024 / 4;  // stay within the default dynamic shared memory limit
constexpr int kTargetBlocks = 4 * 132; // ~4 blocks per SM of an H100 SXM

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Workspace pieces, in order: partial outputs, partial maxima, partial sums, per-head max and sum of
// the whole row, and (with probs) the raw logits.
struct Workspace {
  float* part_o = nullptr;  // [n_q_heads][n_splits][head_dim], relative to part_m
  float* part_m = nullptr;  // [n_q_heads][n_splits], -inf for an empty split
  float* part_l = nullptr;  // [n_q_heads][n_splits], 0 for an empty split
  float* row_m = nullptr;   // [n_q_heads]
  float* row_l = nullptr;   // [n_q_heads]
  float* logits = nullptr;  // [n_q_heads][max_len] when probs are requested
  size_t bytes = 0;
};

Workspace layout(const DecodeShape& s, void* base) {
  const size_t hq = s.n_q_heads, splits = s.n_splits();
  char* p = static_cast<char*>(base);
  Workspace w;
  auto take = [&](float*& dst, size_t floats) {
    dst = base ? reinterpret_cast<float*>(p + w.bytes) : nullptr;
    w.bytes += align256(floats * sizeof(float));
  };
  take(w.part_o, hq * splits * s.head_dim);
  take(w.part_m, hq * splits);
  take(w.part_l, hq * splits);
  take(w.row_m, hq);
  take(w.row_l, hq);
  if (s.with_probs) take(w.logits, hq * static_cast<size_t>(s.max_len));
  return w;
}

// One block: split `blockIdx.x` of KV head `blockIdx.y`, for every query head of the group.
// Shared memory: q_s [group][head_dim] (pre-scaled) then p_s [group][split_keys] (logits, then exp).
template <typename T>
__global__ void decode_split_kernel(const float* __restrict__ q, const void* const* keys, const void* const* values,
                                    const int* lens, int group, int head_dim, int split_keys, int n_splits, float scale,
                                    int max_len, float* part_o, float* part_m, float* part_l, float* logits) {
  const int split = blockIdx.x, kvh = blockIdx.y, tid = threadIdx.x;
  const int lane = tid % 32, warp = tid / 32, n_warps = blockDim.x / 32;
  const int qh0 = kvh * group;
  const int j0 = split * split_keys;
  const int n = min(split_keys, min(lens[kvh], max_len) - j0);  // keys of this split; <= 0 when empty

  if (n <= 0) {  // an empty split: the combine kernel skips it
    for (int g = tid; g < group; g += blockDim.x) {
      part_m[(qh0 + g) * n_splits + split] = -INFINITY;
      part_l[(qh0 + g) * n_splits + split] = 0.0f;
    }
    for (int i = tid; i < group * head_dim; i += blockDim.x)
      part_o[(static_cast<size_t>(qh0 + i / head_dim) * n_splits + split) * head_dim + i % head_dim] = 0.0f;
    return;
  }

  extern __shared__ float smem[];
  float* q_s = smem;
  float* p_s = smem + group * head_dim;
  // The group's query heads are consecutive rows of q.
  for (int i = tid; i < group * head_dim; i += blockDim.x) q_s[i] = q[static_cast<size_t>(qh0) * head_dim + i] * scale;
  __syncthreads();

  // Logits: one warp per key, lanes across head_dim, so a key row is read once for the whole group.
  const T* K = static_cast<const T*>(keys[kvh]) + static_cast<size_t>(j0) * head_dim;
  for (int jj = warp; jj < n; jj += n_warps) {
    const T* krow = K + static_cast<size_t>(jj) * head_dim;
    for (int g0 = 0; g0 < group; g0 += kGroupChunk) {
      const int gn = min(kGroupChunk, group - g0);
      float acc[kGroupChunk] = {};
      for (int d = lane; d < head_dim; d += 32) {
        const float kd = to_float(krow[d]);
#pragma unroll
        for (int gg = 0; gg < kGroupChunk; ++gg)
          if (gg < gn) acc[gg] += q_s[(g0 + gg) * head_dim + d] * kd;
      }
#pragma unroll
      for (int gg = 0; gg < kGroupChunk; ++gg) {
        const float s = detail::warp_sum(acc[gg]);
        if (gg < gn && lane == 0) p_s[(g0 + gg) * split_keys + jj] = s;
      }
    }
  }
  __syncthreads();

  if (logits)
    for (int i = tid; i < group * n; i += blockDim.x) {
      const int g = i / n, jj = i % n;
      logits[static_cast<size_t>(qh0 + g) * max_len + j0 + jj] = p_s[g * split_keys + jj];
    }

  // Split-local softmax numerators: one warp per query head.
  for (int g = warp; g < group; g += n_warps) {
    float* row = p_s + g * split_keys;
    float m = -INFINITY;
    for (int jj = lane; jj < n; jj += 32) m = fmaxf(m, row[jj]);
    m = detail::warp_max(m);
    float l = 0.0f;
    for (int jj = lane; jj < n; jj += 32) {
      const float e = expf(row[jj] - m);
      row[jj] = e;
      l += e;
    }
    l = detail::warp_sum(l);
    if (lane == 0) {
      part_m[(qh0 + g) * n_splits + split] = m;
      part_l[(qh0 + g) * n_splits + split] = l;
    }
  }
  __syncthreads();

  // Partial outputs: threads across head_dim, so each value row is read coalesced, once per group.
  const T* V = static_cast<const T*>(values[kvh]) + static_cast<size_t>(j0) * head_dim;
  for (int d = tid; d < head_dim; d += blockDim.x) {
    for (int g0 = 0; g0 < group; g0 += kGroupChunk) {
      const int gn = min(kGroupChunk, group - g0);
      float acc[kGroupChunk] = {};
#pragma unroll 4
      for (int jj = 0; jj < n; ++jj) {
        const float v = to_float(V[static_cast<size_t>(jj) * head_dim + d]);
#pragma unroll
        for (int gg = 0; gg < kGroupChunk; ++gg)
          if (gg < gn) acc[gg] += p_s[(g0 + gg) * split_keys + jj] * v;
      }
      for (int gg = 0; gg < gn; ++gg)
        part_o[(static_cast<size_t>(qh0 + g0 + gg) * n_splits + split) * head_dim + d] = acc[gg];
    }
  }
}

// One block per query head: merges the splits with their maxima, out = sum_s o_s e^(m_s - M) / L.
__global__ void decode_combine_kernel(int n_splits, int head_dim, const float* part_o, const float* part_m,
                                      const float* part_l, float* out, float* row_m, float* row_l) {
  const int h = blockIdx.x, tid = threadIdx.x;
  const float* pm = part_m + static_cast<size_t>(h) * n_splits;
  const float* pl = part_l + static_cast<size_t>(h) * n_splits;
  float M = -INFINITY;
  for (int s = 0; s < n_splits; ++s)
    if (pl[s] > 0.0f) M = fmaxf(M, pm[s]);
  float L = 0.0f;
  for (int s = 0; s < n_splits; ++s)
    if (pl[s] > 0.0f) L += pl[s] * expf(pm[s] - M);
  const float inv = L > 0.0f ? 1.0f / L : 0.0f;
  for (int d = tid; d < head_dim; d += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < n_splits; ++s)
      if (pl[s] > 0.0f) acc += part_o[(static_cast<size_t>(h) * n_splits + s) * head_dim + d] * expf(pm[s] - M);
    out[static_cast<size_t>(h) * head_dim + d] = acc * inv;
  }
  if (tid == 0) {
    row_m[h] = M;
    row_l[h] = L;
  }
}

// probs[kvh][j] = mean over the group of exp(logit - M) / L; 0 past the head's length.
__global__ void decode_probs_kernel(const int* lens, int group, int max_len, int stride, const float* logits,
                                    const float* row_m, const float* row_l, float* probs) {
  const int kvh = blockIdx.y;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= stride) return;
  const int len = min(lens[kvh], max_len);
  float p = 0.0f;
  if (j < len) {
    for (int g = 0; g < group; ++g) {
      const int h = kvh * group + g;
      p += expf(logits[static_cast<size_t>(h) * max_len + j] - row_m[h]) / row_l[h];
    }
    p /= static_cast<float>(group);
  }
  probs[static_cast<size_t>(kvh) * stride + j] = p;
}

template <typename T>
void launch_split(const DecodeShape& s, const DecodeArgs& a, const Workspace& w, cudaStream_t stream) {
  const dim3 grid(s.n_splits(), s.n_kv_heads);
  const size_t smem = static_cast<size_t>(s.group()) * (s.head_dim + s.split_keys()) * sizeof(float);
  decode_split_kernel<T><<<grid, kThreads, smem, stream>>>(a.q_HxD, a.keys, a.values, a.lens, s.group(), s.head_dim,
                                                           s.split_keys(), s.n_splits(), a.scale, s.max_len, w.part_o,
                                                           w.part_m, w.part_l, w.logits);
  cuda_check_launch("decode_split_kernel");
}
}  // namespace

int DecodeShape::split_keys() const {
  const long long total = static_cast<long long>(max_len) * std::max(n_kv_heads, 1);
  long long keys = (total + kTargetBlocks - 1) / kTargetBlocks;
  keys = (keys + 63) / 64 * 64;
  // The group's logits and queries must fit in shared memory.
  const int g = std::max(group(), 1);
  const long long fit = static_cast<long long>(kSmemFloats - g * head_dim) / g / 64 * 64;
  return static_cast<int>(std::clamp<long long>(keys, 64, std::max<long long>(std::min<long long>(1024, fit), 64)));
}

int DecodeShape::n_splits() const {
  const int k = split_keys();
  return std::max(1, (max_len + k - 1) / k);
}

void DecodeShape::validate(const char* where) const {
  kv_element_bytes(kv_dtype, where);
  if (n_kv_heads < 1) fail(where, "n_kv_heads: expected >= 1, got " + std::to_string(n_kv_heads));
  if (n_q_heads < 1 || n_q_heads % n_kv_heads != 0)
    fail(where, "n_q_heads: expected a positive multiple of n_kv_heads " + std::to_string(n_kv_heads) + ", got " +
                    std::to_string(n_q_heads));
  if (head_dim < 1 || head_dim > 256) fail(where, "head_dim: expected 1..256, got " + std::to_string(head_dim));
  if (max_len < 0) fail(where, "max_len: expected >= 0, got " + std::to_string(max_len));
  if (static_cast<long long>(group()) * (head_dim + 64) > kSmemFloats)
    fail(where, "group of " + std::to_string(group()) + " query heads per KV head does not fit in shared memory");
}

size_t decode_workspace_bytes(const DecodeShape& shape) {
  shape.validate("decode_workspace_bytes");
  return layout(shape, nullptr).bytes;
}

void attention_decode(const DecodeShape& s, const DecodeArgs& a, void* workspace, size_t workspace_bytes,
                      cudaStream_t stream) {
  const char* where = "attention_decode";
  s.validate(where);
  if (!a.q_HxD || !a.keys || !a.values || !a.lens || !a.out_HxD) fail(where, "a required device pointer is null");
  if (s.with_probs != (a.probs_KVxS != nullptr))
    fail(where, "probs_KVxS: must be given exactly when the shape has with_probs");
  if (s.with_probs && a.probs_stride < s.max_len)
    fail(where, "probs_stride: expected >= max_len " + std::to_string(s.max_len) + ", got " + std::to_string(a.probs_stride));
  const Workspace w = layout(s, workspace);
  if (!workspace || workspace_bytes < w.bytes)
    fail(where, "workspace: expected " + std::to_string(w.bytes) + " bytes, got " + std::to_string(workspace_bytes));

  switch (s.kv_dtype) {
    case DType::F32: launch_split<float>(s, a, w, stream); break;
    case DType::F16: launch_split<F16Bits>(s, a, w, stream); break;
    default: launch_split<BF16Bits>(s, a, w, stream); break;  // validate() admitted only BF16 here
  }
  decode_combine_kernel<<<s.n_q_heads, kThreads, 0, stream>>>(s.n_splits(), s.head_dim, w.part_o, w.part_m, w.part_l,
                                                             a.out_HxD, w.row_m, w.row_l);
  cuda_check_launch("decode_combine_kernel");
  if (s.with_probs && a.probs_stride > 0) {
    const dim3 grid((a.probs_stride + 255) / 256, s.n_kv_heads);
    decode_probs_kernel<<<grid, 256, 0, stream>>>(a.lens, s.group(), s.max_len, a.probs_stride, w.logits, w.row_m,
                                                  w.row_l, a.probs_KVxS);
    cuda_check_launch("decode_probs_kernel");
  }
}

}  // namespace nammkit::kernels
