#include "kernels/attention_prefill.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "kernels/cuda_util.h"
#include "kernels/device_math.cuh"

namespace nammkit::kernels {

namespace {
using detail::BF16Bits;
using detail::F16Bits;
using detail::to_float;

constexpr int kRows = 32;  // rows (query, head) per block
constexpr int kWarps = 4;  // kRows / kWarps rows per warp
constexpr int kRowsPerWarp = kRows / kWarps;
constexpr int kTile = 32;               // keys per shared-memory tile: one per lane
constexpr int kMaxDPerLane = 256 / 32;  // head_dim <= 256

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
  auto logits = [&](int j0, float(&s)[kRowsPerWarp]) {
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
      if (m_new == -INFINITY) continue;        // nothing visible to this row yet (uniform across the warp)
      const float p = expf(s[rr] - m_new);     // 0 for masked keys
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
void launch_general(const PrefillShape& s, const PrefillArgs& a, cudaStream_t stream) {
  const size_t smem = smem_bytes(s.head_dim);
  cuda_check(
      cudaFuncSetAttribute(prefill_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
      "cudaFuncSetAttribute(prefill_kernel)");
  const int queries_per_block = kRows / s.group();
  const dim3 grid((s.n_queries + queries_per_block - 1) / queries_per_block, s.n_kv_heads);
  prefill_kernel<T><<<grid, kWarps * 32, smem, stream>>>(a.q_TxHxD, a.keys, a.values, a.lens, s.n_queries, s.n_q_heads,
                                                         s.group(), s.head_dim, s.max_len, a.scale, a.out_TxHxD,
                                                         a.probs_KVxTxS, a.probs_stride);
  cuda_check_launch("prefill_kernel");
}

// ---------------------------------------------------------------------------------------------------
// Tensor-core path (f16 / bf16 KV, head_dim a multiple of 16 up to 256, sm_80+): flash-attention-2
// with mma.sync.m16n8k16 (f16 or bf16 inputs, f32 accumulators).
//
// A block owns kTcRows = 64 rows (row r = query t0 + r / group, query head kvh * group + r % group, as
// the general kernel), 4 warps of 16 rows each. Q is converted once to the KV type, pre-scaled by
// scale * log2(e) (so the softmax uses exp2), into shared memory. Key/value tiles of kBc keys are
// double-buffered in shared memory with 16-byte cp.async (scalar loads when a head's K or V pointer is
// not 16-byte aligned; rows are D * 2 bytes, a multiple of 32). Per tile and warp:
//   S[16][kBc] = Q K^T            (ldmatrix Q and K, f32 accumulators in registers)
//   -inf where key j >= visible(row) = min(len, n_old + t + 1) (0 for inert rows)
//   online softmax in f32 (running max m and per-thread partial sums l, quad-reduced at the end)
//   P = exp2(S - m) rounded to the KV type, straight from the S accumulators into A fragments
//   O[16][D] += P V               (ldmatrix.trans V)
// Tiles past the block's last visible key are never loaded; a warp skips the math of a tile none of
// its rows sees. Fully masked rows keep m = -inf and l = 0 and are guarded (exp2 of a finite base), so
// they produce 0, never NaN. Blocks are issued latest queries first (the longest causal rows).
//
// Probabilities (optional): a second sweep over the key tiles (K only) recomputes S with the same
// instructions, p = exp2(S - m_final) / l_final in f32, staged in shared memory (over the V buffers)
// and averaged over the group in a fixed order, exactly like the general kernel's second pass.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 with .f16/.bf16 inputs; g = lane / 4, c = lane % 4):
//   A (16x16, row): a0 = (g, 2c..2c+1), a1 = (g+8, 2c..), a2 = (g, 2c+8..), a3 = (g+8, 2c+8..)
//   B (16x8, col):  b0 = (k 2c..2c+1, n g), b1 = (k 2c+8.., n g)
//   C (16x8, f32):  c0,c1 = (g, 2c..2c+1), c2,c3 = (g+8, 2c..2c+1)
// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i, register i receives matrix i
// (lane holds row lane/4, columns 2(lane%4)..+1; with .trans row 2(lane%4)..+1, column lane/4).
namespace tc {

constexpr int kTcWarps = 4;
constexpr int kTcRows = 16 * kTcWarps;  // rows per block
constexpr int kPad = 8;                 // shared row stride D + 8 elements: conflict-free ldmatrix

__host__ __device__ constexpr int key_tile(int d_max) {
  return d_max > 128 ? 32 : 64;
}  // keeps the S registers in budget

// Shared memory of one block: Q [64][D+8], K [2][kBc][D+8], V [2][kBc][D+8] (16-bit elements); the probs
// sweep reuses the V area as P [64][kBc+8] f32, so the last area is the larger of the two.
size_t tc_smem_bytes(int D, int kBc) {
  const size_t stride = static_cast<size_t>(D) + kPad;
  const size_t q = 2 * kTcRows * stride, k = 2 * 2 * kBc * stride, v = k;
  const size_t p = sizeof(float) * kTcRows * (kBc + 8);
  return q + k + std::max(v, p);
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem)), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Two floats rounded to the KV type, packed low = first (the lower column / k index).
__device__ __forceinline__ uint32_t pack2(F16Bits, float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);  // .x = lo: the low 16 bits
  return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t pack2(BF16Bits, float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// d += a * b for one m16n8k16 tile.
__device__ __forceinline__ void mma(F16Bits, float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma(BF16Bits, float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(detail::kFullMask, v, 1));
  return fmaxf(v, __shfl_xor_sync(detail::kFullMask, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(detail::kFullMask, v, 1);
  return v + __shfl_xor_sync(detail::kFullMask, v, 2);
}

// T: F16Bits or BF16Bits. kDMax: 64, 128 or 256, D <= kDMax a multiple of 16 (kExactD: D == kDMax, the
// loop bounds are then compile-time). qscale = scale * log2(e).
template <typename T, int kDMax, bool kExactD>
__global__ void __launch_bounds__(kTcWarps * 32)
    prefill_mma_kernel(const float* __restrict__ q, const void* const* keys, const void* const* values, const int* lens,
                       int T_q, int n_q_heads, int group, int D, int max_len, float qscale, float* __restrict__ out,
                       float* __restrict__ probs, int probs_stride) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int kBc = key_tile(kDMax);  // keys per tile
  constexpr int kNT = kBc / 8;          // n-tiles of S per warp (8 keys each)
  constexpr int kKC = kDMax / 16;       // 16-wide chunks of D at most
  const T tag{};
  const int nk = kExactD ? kKC : D / 16;  // 16-wide chunks of D
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int g = lane / 4, c = lane % 4;

  const int kvh = blockIdx.y;
  const int queries_per_block = kTcRows / group, live_rows = queries_per_block * group;
  const int t0 = (gridDim.x - 1 - blockIdx.x) * queries_per_block;  // latest queries first
  const int len = min(lens[kvh], max_len);
  const int n_old = max(len - T_q, 0);
  const int t_last = min(T_q - 1, t0 + queries_per_block - 1);
  const int kv_end = min(len, n_old + t_last + 1);  // keys any row of this block can see
  const int n_tiles = (kv_end + kBc - 1) / kBc;
  const int stride = D + kPad;  // shared row stride (elements)

  extern __shared__ __align__(16) unsigned char tc_smem[];
  uint16_t* q_s = reinterpret_cast<uint16_t*>(tc_smem);  // [kTcRows][stride]
  uint16_t* k_s = q_s + kTcRows * stride;                // [2][kBc][stride]
  uint16_t* v_s = k_s + 2 * kBc * stride;                // [2][kBc][stride]
  float* p_s = reinterpret_cast<float*>(v_s);            // probs sweep: [kTcRows][kBc + 8]
  constexpr int kPStride = kBc + 8;

  // Q -> shared, rounded to T after scaling; inert rows are 0.
  {
    const int quads = D / 4;
    const bool q_vec = (reinterpret_cast<uintptr_t>(q) & 15) == 0;
    for (int i = tid; i < kTcRows * quads; i += blockDim.x) {
      const int r = i / quads, d = (i - r * quads) * 4, t = t0 + r / group;
      float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (r < live_rows && t < T_q) {
        const float* src = q + (static_cast<size_t>(t) * n_q_heads + kvh * group + r % group) * D + d;
        if (q_vec) {
          x = *reinterpret_cast<const float4*>(src);
        } else {
          x = make_float4(src[0], src[1], src[2], src[3]);
        }
      }
      *reinterpret_cast<uint2*>(q_s + r * stride + d) =
          make_uint2(pack2(tag, x.x * qscale, x.y * qscale), pack2(tag, x.z * qscale, x.w * qscale));
    }
  }

  // Keys visible to this thread's two rows (g and g + 8 of the warp), and the least / most over the
  // warp's 16 rows (inert rows see nothing).
  auto row_visible = [&](int r) {
    const int t = t0 + r / group;
    return (r < live_rows && t < T_q) ? min(len, n_old + t + 1) : 0;
  };
  const int vis0 = row_visible(warp * 16 + g), vis1 = row_visible(warp * 16 + g + 8);
  int warp_min_vis = INT_MAX, warp_max_vis = 0;
  for (int i = 0; i < 16; ++i) {
    const int v = row_visible(warp * 16 + i);
    warp_min_vis = min(warp_min_vis, v);
    warp_max_vis = max(warp_max_vis, v);
  }

  const uint16_t* K = static_cast<const uint16_t*>(keys[kvh]);
  const uint16_t* V = static_cast<const uint16_t*>(values[kvh]);
  const bool kv_vec = ((reinterpret_cast<uintptr_t>(K) | reinterpret_cast<uintptr_t>(V)) & 15) == 0;

  // Tile `tile` (keys tile * kBc ..) into buffer tile % 2; keys at or past kv_end are zero-filled (a
  // masked key's P is exactly 0, and 0 * 0 keeps O finite). Always commits one cp.async group.
  auto load_tile = [&](int tile, bool with_values) {
    const int j0 = tile * kBc;
    uint16_t* ks = k_s + (tile & 1) * kBc * stride;
    uint16_t* vs = v_s + (tile & 1) * kBc * stride;
    if (kv_vec) {
      const int chunks = D / 8;  // 16-byte chunks per row
      for (int i = tid; i < kBc * chunks; i += blockDim.x) {
        const int jj = i / chunks, d = (i - jj * chunks) * 8, j = j0 + jj;
        if (j < kv_end) {
          cp_async16(ks + jj * stride + d, K + static_cast<size_t>(j) * D + d);
          if (with_values) cp_async16(vs + jj * stride + d, V + static_cast<size_t>(j) * D + d);
        } else {
          *reinterpret_cast<uint4*>(ks + jj * stride + d) = make_uint4(0, 0, 0, 0);
          if (with_values) *reinterpret_cast<uint4*>(vs + jj * stride + d) = make_uint4(0, 0, 0, 0);
        }
      }
    } else {
      for (int i = tid; i < kBc * D; i += blockDim.x) {
        const int jj = i / D, d = i - jj * D, j = j0 + jj;
        const bool in = j < kv_end;
        ks[jj * stride + d] = in ? K[static_cast<size_t>(j) * D + d] : uint16_t{0};
        if (with_values) vs[jj * stride + d] = in ? V[static_cast<size_t>(j) * D + d] : uint16_t{0};
      }
    }
    cp_async_commit();
  };

  // ldmatrix row addresses of this lane. Q (A operand, rows of the warp x 16 of D): matrices (rows 0-7,
  // d 0-7), (rows 8-15, d 0-7), (rows 0-7, d 8-15), (rows 8-15, d 8-15) = a0..a3.
  const uint32_t q_addr = smem_u32(q_s + (warp * 16 + lane % 16) * stride + (lane / 16) * 8);
  // K (B operand of S, 16 keys x 16 of D): matrices (keys 0-7, d 0-7), (keys 0-7, d 8-15),
  // (keys 8-15, d 0-7), (keys 8-15, d 8-15) = b0, b1 of n-tile 2i and b0, b1 of n-tile 2i + 1.
  const int k_lane = ((lane % 8) + (lane / 16) * 8) * stride + ((lane / 8) % 2) * 8;
  // V (B operand of O, 16 keys x 16 of D, transposed): matrices (keys 0-7, d 0-7), (keys 8-15, d 0-7),
  // (keys 0-7, d 8-15), (keys 8-15, d 8-15) = b0, b1 of d-tile 2i and b0, b1 of d-tile 2i + 1.
  const int v_lane = (lane % 16) * stride + (lane / 16) * 8;

  // S = Q K^T of the warp's 16 rows against tile buffer `buf`, masked: key j0 + 8 * nt + 2c + e.
  auto scores = [&](float(&s)[kNT][4], int buf, int j0) {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
    const uint32_t k_addr = smem_u32(k_s + buf * kBc * stride + k_lane);
#pragma unroll
    for (int kc = 0; kc < kKC; ++kc) {
      if (kc < nk) {
        uint32_t a[4];
        ldsm_x4(a, q_addr + kc * 16 * 2);
#pragma unroll
        for (int np = 0; np < kNT / 2; ++np) {
          uint32_t b[4];
          ldsm_x4(b, k_addr + (np * 16 * stride + kc * 16) * 2);
          mma(tag, s[2 * np], a, b[0], b[1]);
          mma(tag, s[2 * np + 1], a, b[2], b[3]);
        }
      }
    }
    if (j0 + kBc > warp_min_vis) {  // some row of the warp stops inside this tile
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const int j = j0 + nt * 8 + 2 * c;
        if (j >= vis0) s[nt][0] = -INFINITY;
        if (j + 1 >= vis0) s[nt][1] = -INFINITY;
        if (j >= vis1) s[nt][2] = -INFINITY;
        if (j + 1 >= vis1) s[nt][3] = -INFINITY;
      }
    }
  };

  float m_run[2] = {-INFINITY, -INFINITY};  // running max (log2 units) of rows g, g + 8; quad-uniform
  float l_run[2] = {0.0f, 0.0f};            // this thread's part of the running sums
  float o[2 * kKC][4];                      // O of d-tile dt: (g, 8dt + 2c..), (g + 8, 8dt + 2c..)
#pragma unroll
  for (int dt = 0; dt < 2 * kKC; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;

  if (n_tiles > 0) load_tile(0, true);
  for (int it = 0; it < n_tiles; ++it) {
    if (it + 1 < n_tiles) {
      load_tile(it + 1, true);  // into the buffer freed by the previous iteration's closing barrier
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // tile `it` (and, on the first pass, Q) visible to all
    const int j0 = it * kBc, buf = it & 1;
    if (j0 < warp_max_vis) {  // warp-uniform
      float s[kNT][4];
      scores(s, buf, j0);

      float mx[2] = {m_run[0], m_run[1]};
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
      }
      float base[2], corr[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        mx[h] = quad_max(mx[h]);
        base[h] = mx[h] == -INFINITY ? 0.0f : mx[h];  // nothing visible yet: p = exp2(-inf) = 0, no NaN
        corr[h] = exp2f(m_run[h] - base[h]);          // 0 while m_run is -inf
        m_run[h] = mx[h];
      }

      // P = exp2(S - m) into A fragments: k-chunk kc of P is n-tiles 2kc (a0, a1) and 2kc + 1 (a2, a3).
      uint32_t pa[kNT / 2][4];
      float rs[2] = {0.0f, 0.0f};
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const float p0 = exp2f(s[nt][0] - base[0]), p1 = exp2f(s[nt][1] - base[0]);
        const float p2 = exp2f(s[nt][2] - base[1]), p3 = exp2f(s[nt][3] - base[1]);
        rs[0] += p0 + p1;
        rs[1] += p2 + p3;
        pa[nt / 2][(nt % 2) * 2 + 0] = pack2(tag, p0, p1);
        pa[nt / 2][(nt % 2) * 2 + 1] = pack2(tag, p2, p3);
      }
      l_run[0] = l_run[0] * corr[0] + rs[0];
      l_run[1] = l_run[1] * corr[1] + rs[1];
#pragma unroll
      for (int dt = 0; dt < 2 * kKC; ++dt) {
        o[dt][0] *= corr[0];
        o[dt][1] *= corr[0];
        o[dt][2] *= corr[1];
        o[dt][3] *= corr[1];
      }

      const uint32_t v_addr = smem_u32(v_s + buf * kBc * stride + v_lane);
#pragma unroll
      for (int kc = 0; kc < kNT / 2; ++kc) {
#pragma unroll
        for (int dp = 0; dp < kKC; ++dp) {
          if (dp < nk) {
            uint32_t b[4];
            ldsm_x4_trans(b, v_addr + (kc * 16 * stride + dp * 16) * 2);
            mma(tag, o[2 * dp], pa[kc], b[0], b[1]);
            mma(tag, o[2 * dp + 1], pa[kc], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();  // buffer `buf` free for the load two tiles ahead
  }

  l_run[0] = quad_sum(l_run[0]);
  l_run[1] = quad_sum(l_run[1]);
  const bool out_vec = (reinterpret_cast<uintptr_t>(out) & 7) == 0;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = warp * 16 + g + 8 * h, t = t0 + r / group;
    if (r >= live_rows || t >= T_q) continue;  // inert row
    const float inv = l_run[h] > 0.0f ? 1.0f / l_run[h] : 0.0f;
    float* orow = out + (static_cast<size_t>(t) * n_q_heads + kvh * group + r % group) * D;
#pragma unroll
    for (int dt = 0; dt < 2 * kKC; ++dt) {
      if (dt < 2 * nk) {
        const int d = dt * 8 + 2 * c;
        const float x = o[dt][2 * h] * inv, y = o[dt][2 * h + 1] * inv;
        if (out_vec) {
          *reinterpret_cast<float2*>(orow + d) = make_float2(x, y);
        } else {
          orow[d] = x;
          orow[d + 1] = y;
        }
      }
    }
  }
  if (!probs) return;

  // Second sweep with the final max and sum: p = exp2(s - m) / l per row into p_s (over the V buffers,
  // unused now; the last main-loop barrier has passed), then the group mean in a fixed order.
  float pbase[2], pinv[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    pbase[h] = m_run[h] == -INFINITY ? 0.0f : m_run[h];
    pinv[h] = l_run[h] > 0.0f ? 1.0f / l_run[h] : 0.0f;
  }
  if (n_tiles > 0) load_tile(0, false);
  for (int it = 0; it < n_tiles; ++it) {
    if (it + 1 < n_tiles) {
      load_tile(it + 1, false);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int j0 = it * kBc, buf = it & 1;
    float* p0 = p_s + (warp * 16 + g) * kPStride + 2 * c;
    float* p1 = p0 + 8 * kPStride;
    if (j0 < warp_max_vis) {
      float s[kNT][4];
      scores(s, buf, j0);
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        *reinterpret_cast<float2*>(p0 + nt * 8) =
            make_float2(exp2f(s[nt][0] - pbase[0]) * pinv[0], exp2f(s[nt][1] - pbase[0]) * pinv[0]);
        *reinterpret_cast<float2*>(p1 + nt * 8) =
            make_float2(exp2f(s[nt][2] - pbase[1]) * pinv[1], exp2f(s[nt][3] - pbase[1]) * pinv[1]);
      }
    } else {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        *reinterpret_cast<float2*>(p0 + nt * 8) = make_float2(0.0f, 0.0f);
        *reinterpret_cast<float2*>(p1 + nt * 8) = make_float2(0.0f, 0.0f);
      }
    }
    __syncthreads();
    for (int i = tid; i < queries_per_block * kBc; i += blockDim.x) {
      const int tq = i / kBc, k = i % kBc, t = t0 + tq, j = j0 + k;
      if (t >= T_q || j >= kv_end) continue;
      float sum = 0.0f;
      for (int gg = 0; gg < group; ++gg) sum += p_s[(tq * group + gg) * kPStride + k];
      probs[(static_cast<size_t>(kvh) * T_q + t) * probs_stride + j] = sum / static_cast<float>(group);
    }
    __syncthreads();  // p_s and buffer `buf` free again
  }
#else
  __trap();  // the host takes this path only on sm_80+ devices
#endif
}

template <typename T, int kDMax, bool kExactD>
void launch_mma(const PrefillShape& s, const PrefillArgs& a, cudaStream_t stream) {
  const size_t smem = tc_smem_bytes(s.head_dim, key_tile(kDMax));
  auto* kernel = prefill_mma_kernel<T, kDMax, kExactD>;
  cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "cudaFuncSetAttribute(prefill_mma_kernel)");
  const int queries_per_block = kTcRows / s.group();
  const dim3 grid((s.n_queries + queries_per_block - 1) / queries_per_block, s.n_kv_heads);
  const float qscale = a.scale * 1.4426950408889634f;  // log2(e): the kernel's softmax uses exp2
  kernel<<<grid, kTcWarps * 32, smem, stream>>>(a.q_TxHxD, a.keys, a.values, a.lens, s.n_queries, s.n_q_heads,
                                                s.group(), s.head_dim, s.max_len, qscale, a.out_TxHxD, a.probs_KVxTxS,
                                                a.probs_stride);
  cuda_check_launch("prefill_mma_kernel");
}

template <typename T>
void launch(const PrefillShape& s, const PrefillArgs& a, cudaStream_t stream) {
  const int D = s.head_dim;
  if (D == 64) return launch_mma<T, 64, true>(s, a, stream);
  if (D == 128) return launch_mma<T, 128, true>(s, a, stream);
  if (D == 256) return launch_mma<T, 256, true>(s, a, stream);
  if (D < 64) return launch_mma<T, 64, false>(s, a, stream);
  if (D < 128) return launch_mma<T, 128, false>(s, a, stream);
  return launch_mma<T, 256, false>(s, a, stream);
}
}  // namespace tc

// Whether the current device runs the tensor-core kernel (mma.sync with f16 / bf16 inputs: sm_80+).
bool device_has_mma(const char* where) {
  int device = 0, major = 0;
  cuda_check(cudaGetDevice(&device), where);
  cuda_check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), where);
  return major >= 8;
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
      fail(where, "probs_stride: expected >= max_len " + std::to_string(s.max_len) + ", got " +
                      std::to_string(a.probs_stride));
    // The kernel writes only visible keys; everything else must read 0.
    cuda_check(
        cudaMemsetAsync(a.probs_KVxTxS, 0,
                        sizeof(float) * static_cast<size_t>(s.n_kv_heads) * s.n_queries * a.probs_stride, stream),
        "cudaMemsetAsync(probs)");
  }
  // Tensor cores for 16-bit KV when head_dim is a multiple of 16 (mma tiles); the general f32 kernel
  // otherwise (f32 KV, other head_dims, pre-sm_80 devices).
  const bool mma = s.kv_dtype != DType::F32 && s.head_dim % 16 == 0 && device_has_mma(where);
  switch (s.kv_dtype) {
    case DType::F32: launch_general<float>(s, a, stream); break;
    case DType::F16: mma ? tc::launch<F16Bits>(s, a, stream) : launch_general<F16Bits>(s, a, stream); break;
    default:  // validate() admitted only BF16 here
      mma ? tc::launch<BF16Bits>(s, a, stream) : launch_general<BF16Bits>(s, a, stream);
      break;
  }
}

}  // namespace nammkit::kernels
