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

constexpr int kThreads = 128;               // 4 warps per block
constexpr int kGroupChunk = 8;              // query heads whose logits one lane accumulates at once
constexpr int kVGroupChunk = 4;             // query heads whose outputs one thread accumulates at once
constexpr int kKeysInFlight = 4;            // key rows each lane loads before it uses the first
constexpr int kSmemFloats = 48 * 1024 / 4;  // stay within the default dynamic shared memory limit
constexpr int kTargetBlocks = 4 * 132;      // ~4 blocks per SM of an H100 / H200

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Floats of the value phase's cross-row reduction buffer: (rows in parallel) x head_dim x kVGroupChunk,
// where rows x chunks-per-row <= kThreads and a chunk holds at most 16 bytes of elements (or a chunk is
// one element and a thread may take several when head_dim > kThreads).
int reduction_floats(DType kv_dtype, int head_dim) {
  const int per_chunk = 16 / static_cast<int>(kv_element_bytes(kv_dtype, "attention_decode"));
  return std::max(kThreads * per_chunk, head_dim) * kVGroupChunk;
}

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

// VEC consecutive elements of a K or V row as floats: one 16-byte load when VEC * sizeof(T) == 16
// (the caller checked the alignment), else VEC scalar loads.
template <typename T, int VEC>
__device__ __forceinline__ void load_chunk(const T* __restrict__ p, float (&out)[VEC]) {
  if constexpr (VEC * sizeof(T) == 16) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
    if constexpr (sizeof(T) == 4) {
#pragma unroll
      for (int e = 0; e < 4; ++e) out[e] = __uint_as_float(words[e]);
    } else {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        out[2 * e] = to_float(T{static_cast<uint16_t>(words[e] & 0xffffu)});
        out[2 * e + 1] = to_float(T{static_cast<uint16_t>(words[e] >> 16)});
      }
    }
  } else {
#pragma unroll
    for (int e = 0; e < VEC; ++e) out[e] = to_float(p[e]);
  }
}

// Logits of this split's keys for every query head of the group, into p_s [group][split_keys].
// A key row is cut into chunks of VEC elements; L lanes (a power of two) share one key, so a warp
// reads 32 / L rows per load, each lane keeps kKeysInFlight rows in flight, and the L partial dot
// products are summed by xor-shuffles that stay inside the key's lanes.
template <typename T, int VEC>
__device__ void split_logits(const T* __restrict__ K, int n, int group, int head_dim, int split_keys, const float* q_s,
                             float* p_s) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  const int chunks = head_dim / VEC;
  int L = 1;
  while (L < chunks && L < 32) L *= 2;
  const int keys_per_warp = 32 / L, sub = lane % L, slot = lane / L;
  const int stride = n_warps * keys_per_warp;  // keys between a lane's consecutive rows
  for (int g0 = 0; g0 < group; g0 += kGroupChunk) {
    const int gn = min(kGroupChunk, group - g0);
    for (int base = warp * keys_per_warp + slot; base < n + slot; base += stride * kKeysInFlight) {
      float acc[kKeysInFlight][kGroupChunk] = {};
      for (int c = sub; c < chunks; c += L) {
        float kv[kKeysInFlight][VEC];
#pragma unroll
        for (int u = 0; u < kKeysInFlight; ++u) {
          const int jj = base + u * stride;
          if (jj < n) {
            load_chunk<T, VEC>(K + static_cast<size_t>(jj) * head_dim + c * VEC, kv[u]);
          } else {
#pragma unroll
            for (int e = 0; e < VEC; ++e) kv[u][e] = 0.0f;
          }
        }
#pragma unroll
        for (int gg = 0; gg < kGroupChunk; ++gg) {
          if (gg < gn) {
            const float* qv = q_s + (g0 + gg) * head_dim + c * VEC;
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
              const float qe = qv[e];
#pragma unroll
              for (int u = 0; u < kKeysInFlight; ++u) acc[u][gg] += qe * kv[u][e];
            }
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kKeysInFlight; ++u) {
        const int jj = base + u * stride;
#pragma unroll
        for (int gg = 0; gg < kGroupChunk; ++gg) {
          if (gg < gn) {  // uniform across the warp, so the shuffles stay convergent
            float v = acc[u][gg];
            for (int off = L / 2; off > 0; off >>= 1) v += __shfl_xor_sync(detail::kFullMask, v, off);
            if (sub == 0 && jj < n) p_s[(g0 + gg) * split_keys + jj] = v;
          }
        }
      }
    }
  }
}

// Partial outputs of this split: part_o[h][split][:] = sum_j p_s[g][j] V[j][:] for the group's heads.
// Threads take (row lane r, chunk c): R rows advance in parallel, each thread reads VEC elements of a
// row per load, and the R partial sums meet in red_s [R][kVGroupChunk][head_dim].
template <typename T, int VEC>
__device__ void split_values(const T* __restrict__ V, int n, int group, int head_dim, int split_keys, int n_splits,
                             int split, int qh0, const float* p_s, float* red_s, float* part_o) {
  const int tid = threadIdx.x;
  const int chunks = head_dim / VEC;
  const int R = max(1, static_cast<int>(blockDim.x) / chunks);
  const int r = tid / chunks;
  for (int g0 = 0; g0 < group; g0 += kVGroupChunk) {
    const int gn = min(kVGroupChunk, group - g0);
    for (int c = tid % chunks; c < chunks; c += static_cast<int>(blockDim.x)) {  // one pass unless chunks > threads
      if (r >= R) break;
      float acc[kVGroupChunk][VEC] = {};
#pragma unroll 2  // on an H200, unrolling 4 was no faster (1.05 vs 1.13 TB/s at 32K, one run each)
      for (int jj = r; jj < n; jj += R) {
        float v[VEC];
        load_chunk<T, VEC>(V + static_cast<size_t>(jj) * head_dim + c * VEC, v);
#pragma unroll
        for (int gg = 0; gg < kVGroupChunk; ++gg) {
          const float p = gg < gn ? p_s[(g0 + gg) * split_keys + jj] : 0.0f;
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[gg][e] += p * v[e];
        }
      }
#pragma unroll
      for (int gg = 0; gg < kVGroupChunk; ++gg)
#pragma unroll
        for (int e = 0; e < VEC; ++e) red_s[(r * kVGroupChunk + gg) * head_dim + c * VEC + e] = acc[gg][e];
    }
    __syncthreads();
    for (int i = tid; i < gn * head_dim; i += blockDim.x) {
      const int gg = i / head_dim, d = i % head_dim;
      float sum = 0.0f;
      for (int rr = 0; rr < R; ++rr) sum += red_s[(rr * kVGroupChunk + gg) * head_dim + d];
      part_o[(static_cast<size_t>(qh0 + g0 + gg) * n_splits + split) * head_dim + d] = sum;
    }
    __syncthreads();  // red_s is reused by the next group chunk
  }
}

// One block: split `blockIdx.x` of KV head `blockIdx.y`, for every query head of the group, so each
// key and value row is read from memory once per layer.
// Shared memory: q_s [group][head_dim] (pre-scaled), p_s [group][split_keys] (logits, then exp), red_s.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    decode_split_kernel(const float* __restrict__ q, const void* const* keys, const void* const* values,
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
  float* red_s = p_s + group * split_keys;
  // The group's query heads are consecutive rows of q.
  for (int i = tid; i < group * head_dim; i += blockDim.x) q_s[i] = q[static_cast<size_t>(qh0) * head_dim + i] * scale;
  __syncthreads();

  const T* K = static_cast<const T*>(keys[kvh]) + static_cast<size_t>(j0) * head_dim;
  const T* V = static_cast<const T*>(values[kvh]) + static_cast<size_t>(j0) * head_dim;
  // 16-byte loads need every row start aligned: the head's base pointer and the row pitch.
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  const bool vec16 =
      head_dim % kVec == 0 && reinterpret_cast<uintptr_t>(K) % 16 == 0 && reinterpret_cast<uintptr_t>(V) % 16 == 0;
  if (vec16) split_logits<T, kVec>(K, n, group, head_dim, split_keys, q_s, p_s);
  else split_logits<T, 1>(K, n, group, head_dim, split_keys, q_s, p_s);
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

  if (vec16) split_values<T, kVec>(V, n, group, head_dim, split_keys, n_splits, split, qh0, p_s, red_s, part_o);
  else split_values<T, 1>(V, n, group, head_dim, split_keys, n_splits, split, qh0, p_s, red_s, part_o);
}

// One block per query head: merges the splits with their maxima, out = sum_s o_s e^(m_s - M) / L.
// Shared memory: w_s [n_splits], each split's weight e^(m_s - M) (0 for an empty split).
__global__ void decode_combine_kernel(int n_splits, int head_dim, const float* part_o, const float* part_m,
                                      const float* part_l, float* out, float* row_m, float* row_l) {
  extern __shared__ float w_s[];
  __shared__ float red[kThreads / 32];
  const int h = blockIdx.x, tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const float* pm = part_m + static_cast<size_t>(h) * n_splits;
  const float* pl = part_l + static_cast<size_t>(h) * n_splits;
  float M = -INFINITY;
  for (int s = tid; s < n_splits; s += blockDim.x)
    if (pl[s] > 0.0f) M = fmaxf(M, pm[s]);
  M = detail::warp_max(M);
  if (lane == 0) red[warp] = M;
  __syncthreads();
  M = -INFINITY;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) M = fmaxf(M, red[w]);
  __syncthreads();
  float L = 0.0f;
  for (int s = tid; s < n_splits; s += blockDim.x) {
    const float w = pl[s] > 0.0f ? expf(pm[s] - M) : 0.0f;
    w_s[s] = w;
    L += pl[s] * w;
  }
  L = detail::warp_sum(L);
  if (lane == 0) red[warp] = L;
  __syncthreads();
  L = 0.0f;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) L += red[w];
  const float inv = L > 0.0f ? 1.0f / L : 0.0f;
  for (int d = tid; d < head_dim; d += blockDim.x) {
    float acc = 0.0f;
    for (int s = 0; s < n_splits; ++s)
      if (w_s[s] > 0.0f) acc += part_o[(static_cast<size_t>(h) * n_splits + s) * head_dim + d] * w_s[s];
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
  const size_t smem =
      (static_cast<size_t>(s.group()) * (s.head_dim + s.split_keys()) + reduction_floats(s.kv_dtype, s.head_dim)) *
      sizeof(float);
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
  // The group's logits and queries and the value phase's reduction buffer must fit in shared memory.
  const int g = std::max(group(), 1);
  const long long fit =
      static_cast<long long>(kSmemFloats - g * head_dim - reduction_floats(kv_dtype, head_dim)) / g / 64 * 64;
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
  if (static_cast<long long>(group()) * (head_dim + 64) + reduction_floats(kv_dtype, head_dim) > kSmemFloats)
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
    fail(where,
         "probs_stride: expected >= max_len " + std::to_string(s.max_len) + ", got " + std::to_string(a.probs_stride));
  const Workspace w = layout(s, workspace);
  if (!workspace || workspace_bytes < w.bytes)
    fail(where, "workspace: expected " + std::to_string(w.bytes) + " bytes, got " + std::to_string(workspace_bytes));

  switch (s.kv_dtype) {
    case DType::F32: launch_split<float>(s, a, w, stream); break;
    case DType::F16: launch_split<F16Bits>(s, a, w, stream); break;
    default: launch_split<BF16Bits>(s, a, w, stream); break;  // validate() admitted only BF16 here
  }
  decode_combine_kernel<<<s.n_q_heads, kThreads, sizeof(float) * s.n_splits(), stream>>>(
      s.n_splits(), s.head_dim, w.part_o, w.part_m, w.part_l, a.out_HxD, w.row_m, w.row_l);
  cuda_check_launch("decode_combine_kernel");
  if (s.with_probs && a.probs_stride > 0) {
    const dim3 grid((a.probs_stride + 255) / 256, s.n_kv_heads);
    decode_probs_kernel<<<grid, 256, 0, stream>>>(a.lens, s.group(), s.max_len, a.probs_stride, w.logits, w.row_m,
                                                  w.row_l, a.probs_KVxS);
    cuda_check_launch("decode_probs_kernel");
  }
}

}  // namespace nammkit::kernels
