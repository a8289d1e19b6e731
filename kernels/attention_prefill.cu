#include "kernels/attention_prefill.h"

#include <string>

#include "kernels/cuda_util.h"
#include "kernels/device_math.cuh"

namespace nammkit::kernels {

namespace {
using detail::BF16Bits;
using detail::F16Bits;
using detail::to_float;

constexpr int kRows = 32;              // rows (query, head) per block
constexpr int kWarps = 4;              // kRows / kWarps rows per warp
constexpr int kRowsPerWarp = kRows / kWarps;
constexpr int kTile = 32;              // keys per shared-memory tile: one per lane
constexpr int kMaxDPerLane = 256 / 32; // head_dim <= 256

// Shared memory: q_s [kRows][D] (pre-scaled), k_s [kTile][D + 1] (the pad avoids bank conflicts when
// lane j reads key j), v_s [kTile][D], p_s [kRows][kTile + 1] (probabilities of the probs pass).
size_t smem_bytes(int D) {
  return sizeof(float) * (static_cast<size_t>(kRows) * D + kTile * (D + 1) + kTile * D + kRows * (kTile + 1));
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32)
    prefill_kernel(const float* __restrict__ q, const void* const* keys, const void* const* values, const int* lens,
                   int T_q, int n_q_heads, int group, int D, int max_len, float scale, float* out, float* probs,
                   int probs_stride) {
  const int kvh = blockIdx.y, tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int queries_per_block = kRows / group;
  const int t0 = blockIdx.x * queries_per_block;
  const int len = min(lens[kvh], max_len);
  const int n_old = max(len - T_q, 0);
  const int t_last = min(T_q - 1, t0 + queries_per_block - 1);
  const int kv_end = min(len, n_old + t_last + 1);  // keys any row of this block can see

  extern __shared__ float smem[];
  float* q_s = smem;
  float* k_s = q_s + kRows * D;
  float* v_s = k_s + kTile * (D + 1);
  float* p_s = v_s + kTile * D;

  // Row r: query t0 + r / group, query head kvh * group + r % group; rows past the chunk are inert.
  for (int i = tid; i < kRows * D; i += blockDim.x) {
    const int r = i / D, d = i % D, t = t0 + r / group;
    const bool live = r < queries_per_block * group && t < T_q;
    q_s[i] = live ? q[(static_cast<size_t>(t) * n_q_heads + kvh * group + r % group) * D + d] * scale : 0.0f;
  }

  int visible[kRowsPerWarp];  // keys row r sees: min(len, n_old + t + 1); 0 for inert rows
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kMaxDPerLane];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int r = warp * kRowsPerWarp + rr, t = t0 + r / group;
    visible[rr] = (r < queries_per_block * group && t < T_q) ? min(len, n_old + t + 1) : 0;
    m[rr] = -INFINITY;
    l[rr] = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxDPerLane; ++i) acc[rr][i] = 0.0f;
  }

  const T* K = static_cast<const T*>(keys[kvh]);
  const T* V = static_cast<const T*>(values[kvh]);
  auto load_tile = [&](int j0, bool with_values) {
    for (int i = tid; i < kTile * D; i += blockDim.x) {
      const int jj = i / D, d = i % D, j = j0 + jj;
      const bool in = j < kv_end;
      k_s[jj * (D + 1) + d] = in ? to_float(K[static_cast<size_t>(j) * D + d]) : 0.0f;
      if (with_values) v_s[jj * D + d] = in ? to_float(V[static_cast<size_t>(j) * D + d]) : 0.0f;
    }
  };
  // Lane `lane` computes the logits of key j0 + lane for the warp's rows.
  auto logits = [&](int j0, float (&s)[kRowsPerWarp]) {
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) s[rr] = 0.0f;
    const float* krow = k_s + lane * (D + 1);
    const float* qrow = q_s + warp * kRowsPerWarp * D;
    for (int d = 0; d < D; ++d) {
      const float kd = krow[d];
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) s[rr] += qrow[rr * D + d] * kd;
    }
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr)
      if (j0 + lane >= visible[rr]) s[rr] = -INFINITY;
  };

  for (int j0 = 0; j0 < kv_end; j0 += kTile) {
    __syncthreads();  // the previous tile is no longer read (and q_s is complete on the first pass)
    load_tile(j0, true);
    __syncthreads();
    float s[kRowsPerWarp];
    logits(j0, s);
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const float m_new = fmaxf(m[rr], detail::warp_max(s[rr]));
      if (m_new == -INFINITY) continue;  // nothing visible to this row yet (uniform across the warp)
      const float p = expf(s[rr] - m_new);  // 0 for masked keys
      const float corr = expf(m[rr] - m_new);  // 0 on the first visible tile
      l[rr] = l[rr] * corr + detail::warp_sum(p);
      m[rr] = m_new;
#pragma unroll
      for (int i = 0; i < kMaxDPerLane; ++i) acc[rr][i] *= corr;
      for (int k = 0; k < kTile; ++k) {
        const float pk = __shfl_sync(detail::kFullMask, p, k);
        const float* vrow = v_s + k * D;
#pragma unroll
        for (int i = 0; i < kMaxDPerLane; ++i) {
          const int d = lane + 32 * i;
          if (d < D) acc[rr][i] += pk * vrow[d];
        }
      }
    }
  }

#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int r = warp * kRowsPerWarp + rr, t = t0 + r / group;
    if (r >= queries_per_block * group || t >= T_q) continue;  // inert row
    const float inv = l[rr] > 0.0f ? 1.0f / l[rr] : 0.0f;
    float* orow = out + (static_cast<size_t>(t) * n_q_heads + kvh * group + r % group) * D;
#pragma unroll
    for (int i = 0; i < kMaxDPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < D) orow[d] = acc[rr][i] * inv;
    }
  }
  if (!probs) return;

  // Second pass with the final max and sum: p = exp(s - m) / l per row, then averaged over the group in
  // a fixed order (deterministic) for each of the block's queries.
  for (int j0 = 0; j0 < kv_end; j0 += kTile) {
    __syncthreads();
    load_tile(j0, false);
    __syncthreads();
    float s[kRowsPerWarp];
    logits(j0, s);
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = warp * kRowsPerWarp + rr;
      p_s[r * (kTile + 1) + lane] = l[rr] > 0.0f ? expf(s[rr] - m[rr]) / l[rr] : 0.0f;
    }
    __syncthreads();
    for (int i = tid; i < queries_per_block * kTile; i += blockDim.x) {
      const int tq = i / kTile, k = i % kTile, t = t0 + tq, j = j0 + k;
      if (t >= T_q || j >= kv_end) continue;
      float sum = 0.0f;
      for (int g = 0; g < group; ++g) sum += p_s[(tq * group + g) * (kTile + 1) + k];
      probs[(static_cast<size_t>(kvh) * T_q + t) * probs_stride + j] = sum / static_cast<float>(group);
    }
  }
}

template <typename T>
void launch(const PrefillShape& s, const PrefillArgs& a, cudaStream_t stream) {
  const size_t smem = smem_bytes(s.head_dim);
  cuda_check(cudaFuncSetAttribute(prefill_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "cudaFuncSetAttribute(prefill_kernel)");
  const int queries_per_block = kRows / s.group();
  const dim3 grid((s.n_queries + queries_per_block - 1) / queries_per_block, s.n_kv_heads);
  prefill_kernel<T><<<grid, kWarps * 32, smem, stream>>>(a.q_TxHxD, a.keys, a.values, a.lens, s.n_queries, s.n_q_heads,
                                                        s.group(), s.head_dim, s.max_len, a.scale, a.out_TxHxD,
                                                        a.probs_KVxTxS, a.probs_stride);
  cuda_check_launch("prefill_kernel");
}
}  // namespace

void PrefillShape::validate(const char* where) const {
  kv_element_bytes(kv_dtype, where);
  if (n_kv_heads < 1) fail(where, "n_kv_heads: expected >= 1, got " + std::to_string(n_kv_heads));
  if (n_q_heads < 1 || n_q_heads % n_kv_heads != 0)
    fail(where, "n_q_heads: expected a positive multiple of n_kv_heads " + std::to_string(n_kv_heads) + ", got " +
                    std::to_string(n_q_heads));
  if (group() > kRows) fail(where, "group: expected <= 32 query heads per KV head, got " + std::to_string(group()));
  if (head_dim < 1 || head_dim > 256) fail(where, "head_dim: expected 1..256, got " + std::to_string(head_dim));
  if (n_queries < 1) fail(where, "n_queries: expected >= 1, got " + std::to_string(n_queries));
  if (max_len < n_queries)
    fail(where, "max_len: expected >= n_queries " + std::to_string(n_queries) + ", got " + std::to_string(max_len));
}

void attention_prefill(const PrefillShape& s, const PrefillArgs& a, cudaStream_t stream) {
  const char* where = "attention_prefill";
  s.validate(where);
  if (!a.q_TxHxD || !a.keys || !a.values || !a.lens || !a.out_TxHxD) fail(where, "a required device pointer is null");
  if (a.probs_KVxTxS) {
    if (a.probs_stride < s.max_len)
      fail(where, "probs_stride: expected >= max_len " + std::to_string(s.max_len) + ", got " + std::to_string(a.probs_stride));
    // The kernel writes only visible keys; everything else must read 0.
    cuda_check(cudaMemsetAsync(a.probs_KVxTxS, 0,
                               sizeof(float) * static_cast<size_t>(s.n_kv_heads) * s.n_queries * a.probs_stride, stream),
               "cudaMemsetAsync(probs)");
  }
  switch (s.kv_dtype) {
    case DType::F32: launch<float>(s, a, stream); break;
    case DType::F16: launch<F16Bits>(s, a, stream); break;
    default: launch<BF16Bits>(s, a, stream); break;  // validate() admitted only BF16 here
  }
}

}  // namespace nammkit::kernels
