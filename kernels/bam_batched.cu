#include "kernels/bam_batched.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/cuda_util.h"
#include "kernels/device_math.cuh"

namespace nammkit::kernels {

namespace {
constexpr int kRows = 32;  // query tokens per block
constexpr int kWarps = 4;
constexpr int kRowsPerWarp = kRows / kWarps;
constexpr int kTile = 32;  // key tokens per shared-memory tile: one per lane
constexpr int kMaxHidden = 128;
constexpr int kMaxHiddenPerLane = kMaxHidden / 32;

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// The member scoring sequence `seq` in pass z: every member in turn (z), or the sequence's own.
__device__ __forceinline__ int member_of(const int32_t* seq_params, int seq, int z) {
  return seq_params ? seq_params[seq] : z;
}

// qkv[z][t][c] = b_qkv[c] + sum_f x[t][f] W_qkv[f][c], for c < 3H, tokens t of sequence blockIdx.y
// under the member of pass z = blockIdx.z.
__global__ void bam_qkv_kernel(const float* __restrict__ x, const float* __restrict__ params, const int32_t* offsets,
                               const int32_t* seq_params, int n_params, int total, int F, int H,
                               double* __restrict__ qkv) {
  const int seq = blockIdx.y, z = blockIdx.z;
  const int start = offsets[seq], n = offsets[seq + 1] - start;
  const size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  const int C = 3 * H;
  if (idx >= static_cast<size_t>(n) * C) return;
  const size_t t = start + idx / C;
  const int c = static_cast<int>(idx % C);
  const float* W = params + static_cast<size_t>(member_of(seq_params, seq, z)) * n_params;  // W_qkv [F][3H], b_qkv
  double acc = W[F * C + c];
  for (int f = 0; f < F; ++f) acc += static_cast<double>(x[t * F + f]) * W[f * C + c];
  qkv[(static_cast<size_t>(z) * total + t) * C + c] = acc;
}

// Shared memory (doubles): W_o [H][2F] | b_o [2F] | w [F] | b, then q_s [kRows][H], k_s [kTile][H + 1],
// v_s [kTile][H], h_s [kRows][H], o_s [kRows][2F].
size_t attend_smem_bytes(int F, int H) {
  const size_t params = static_cast<size_t>(H) * 2 * F + 2 * F + F + 1;
  return sizeof(double) * (params + kRows * H + kTile * (H + 1) + kTile * H + kRows * H + kRows * 2 * F);
}

// Block: rows i0 .. i0 + 31 of sequence blockIdx.y in pass blockIdx.z. Row i streams keys j >= i
// with an online softmax, then applies the output projection, gated residual and read-out.
__global__ void __launch_bounds__(kWarps * 32)
    bam_attend_kernel(const float* __restrict__ x, const float* __restrict__ params, const double* __restrict__ qkv,
                      const int32_t* offsets, const int32_t* seq_params, int n_params, int total, int F, int H,
                      float* scores) {
  const int p = blockIdx.z, seq = blockIdx.y, tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int start = offsets[seq], n = offsets[seq + 1] - start;
  const int i0 = blockIdx.x * kRows;
  if (i0 >= n) return;
  const int C = 3 * H;
  const double* qkv_p = qkv + (static_cast<size_t>(p) * total + start) * C;

  extern __shared__ double sm[];
  const int n_out = 2 * F, n_epilogue = H * n_out + n_out + F + 1;
  double* W_o = sm;  // W_o [H][2F], b_o, w, b follow contiguously as in the parameter vector
  double* b_o = W_o + H * n_out;
  double* w_out = b_o + n_out;
  double* q_s = sm + n_epilogue;
  double* k_s = q_s + kRows * H;
  double* v_s = k_s + kTile * (H + 1);
  double* h_s = v_s + kTile * H;
  double* o_s = h_s + kRows * H;
  const float* P = params + static_cast<size_t>(member_of(seq_params, seq, p)) * n_params;
  const float* P_o = P + F * C + C;
  for (int i = tid; i < n_epilogue; i += blockDim.x) W_o[i] = P_o[i];
  for (int i = tid; i < kRows * H; i += blockDim.x) {
    const int r = i / H, h = i % H;
    q_s[i] = i0 + r < n ? qkv_p[static_cast<size_t>(i0 + r) * C + h] : 0.0;
  }
  const double scale = 1.0 / sqrt(static_cast<double>(H));

  double m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kMaxHiddenPerLane];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    m[rr] = -INFINITY;
    l[rr] = 0.0;
#pragma unroll
    for (int c = 0; c < kMaxHiddenPerLane; ++c) acc[rr][c] = 0.0;
  }

  for (int j0 = i0; j0 < n; j0 += kTile) {
    __syncthreads();  // previous tile consumed; on the first pass, parameters and q_s are complete
    for (int i = tid; i < kTile * H; i += blockDim.x) {
      const int jj = i / H, h = i % H, j = j0 + jj;
      const bool in = j < n;
      k_s[jj * (H + 1) + h] = in ? qkv_p[static_cast<size_t>(j) * C + H + h] : 0.0;
      v_s[jj * H + h] = in ? qkv_p[static_cast<size_t>(j) * C + 2 * H + h] : 0.0;
    }
    __syncthreads();
    const int j = j0 + lane;
    double s[kRowsPerWarp];
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) s[rr] = 0.0;
    for (int h = 0; h < H; ++h) {
      const double kh = k_s[lane * (H + 1) + h];
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) s[rr] += q_s[(warp * kRowsPerWarp + rr) * H + h] * kh;
    }
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int i = i0 + warp * kRowsPerWarp + rr;
      if (i >= n) continue;  // uniform across the warp
      const double logit = (j >= i && j < n) ? s[rr] * scale : -INFINITY;
      const double m_new = fmax(m[rr], detail::warp_max(logit));
      if (m_new == -INFINITY) continue;  // no key j >= i in this tile yet: uniform across the warp
      const double e = exp(logit - m_new);
      const double corr = exp(m[rr] - m_new);
      l[rr] = l[rr] * corr + detail::warp_sum(e);
      m[rr] = m_new;
#pragma unroll
      for (int c = 0; c < kMaxHiddenPerLane; ++c) acc[rr][c] *= corr;
      for (int k = 0; k < kTile; ++k) {
        const double ek = __shfl_sync(detail::kFullMask, e, k);
#pragma unroll
        for (int c = 0; c < kMaxHiddenPerLane; ++c) {
          const int h = lane + 32 * c;
          if (h < H) acc[rr][c] += ek * v_s[k * H + h];
        }
      }
    }
  }

  // Epilogue, one warp per row: h = att v; o = h W_o + b_o; y = x (1 + m) + r; score = y.w + b.
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int r = warp * kRowsPerWarp + rr, i = i0 + r;
    if (i >= n) continue;
    const double inv = 1.0 / l[rr];  // l >= 1: key i itself is always visible
#pragma unroll
    for (int c = 0; c < kMaxHiddenPerLane; ++c) {
      const int h = lane + 32 * c;
      if (h < H) h_s[r * H + h] = acc[rr][c] * inv;
    }
    __syncwarp();
    for (int c = lane; c < n_out; c += 32) {
      double o = b_o[c];
      for (int h = 0; h < H; ++h) o += h_s[r * H + h] * W_o[h * n_out + c];
      o_s[r * n_out + c] = o;
    }
    __syncwarp();
    double part = 0.0;
    for (int f = lane; f < F; f += 32) {
      const double xf = x[static_cast<size_t>(start + i) * F + f];
      part += (xf * (1.0 + o_s[r * n_out + F + f]) + o_s[r * n_out + f]) * w_out[f];
    }
    part = detail::warp_sum(part);
    if (lane == 0) scores[static_cast<size_t>(p) * total + start + i] = static_cast<float>(part + w_out[F]);
  }
}
}  // namespace

namespace {
// Passes over the tokens: every member (each scores everything), or one (each sequence its own member).
int n_passes(const BamBatch& b) { return b.seq_params.empty() ? b.n_members : 1; }
size_t qkv_bytes(const ScorerShape& shape, const BamBatch& b) {
  const int total = b.seq_offsets.empty() ? 0 : b.seq_offsets.back();
  return align256(sizeof(double) * static_cast<size_t>(n_passes(b)) * total * 3 * shape.hidden);
}
size_t offsets_bytes(const BamBatch& b) { return align256(sizeof(int32_t) * b.seq_offsets.size()); }
}  // namespace

size_t bam_workspace_bytes(const ScorerShape& shape, const BamBatch& b) {
  return qkv_bytes(shape, b) + offsets_bytes(b) + align256(sizeof(int32_t) * b.seq_params.size());
}

void bam_score_batched(const ScorerShape& shape, const BamBatch& b, void* workspace, size_t workspace_bytes,
                       cudaStream_t stream) {
  const char* where = "bam_score_batched";
  shape.validate(where);
  if (shape.kind != ScorerKind::Bam) fail(where, "only the BAM scorer runs on the GPU");
  const int F = shape.n_features, H = shape.hidden;
  if (H > kMaxHidden) fail(where, "hidden: expected <= 128, got " + std::to_string(H));
  if (b.n_members < 1) fail(where, "n_members: expected >= 1, got " + std::to_string(b.n_members));
  if (b.seq_params.empty() && b.n_members > 65535)
    fail(where, "n_members: expected 1..65535 (one launch pass each), got " + std::to_string(b.n_members));
  const auto& off = b.seq_offsets;
  if (off.size() < 2 || off.size() - 1 > 65535 || off.front() != 0)
    fail(where, "seq_offsets: expected 2..65536 offsets starting at 0");
  int max_len = 0;
  for (size_t s = 1; s < off.size(); ++s) {
    if (off[s] < off[s - 1]) fail(where, "seq_offsets: not ascending at " + std::to_string(s));
    max_len = std::max(max_len, off[s] - off[s - 1]);
  }
  const int total = off.back(), n_seqs = static_cast<int>(off.size()) - 1;
  if (!b.seq_params.empty()) {
    if (static_cast<int>(b.seq_params.size()) != n_seqs)
      fail(where, "seq_params: expected " + std::to_string(n_seqs) + " entries (one per sequence), got " +
                      std::to_string(b.seq_params.size()));
    for (size_t s = 0; s < b.seq_params.size(); ++s)
      if (b.seq_params[s] < 0 || b.seq_params[s] >= b.n_members)
        fail(where, "seq_params[" + std::to_string(s) + "]: expected 0.." + std::to_string(b.n_members - 1) + ", got " +
                        std::to_string(b.seq_params[s]));
  }
  if (total == 0) return;
  if (!b.features_NxF || !b.params_PxM || !b.scores_PxN) fail(where, "a required device pointer is null");
  const size_t needed = bam_workspace_bytes(shape, b);
  if (!workspace || workspace_bytes < needed)
    fail(where, "workspace: expected " + std::to_string(needed) + " bytes, got " + std::to_string(workspace_bytes));
  auto* qkv = static_cast<double*>(workspace);
  auto* offsets = reinterpret_cast<int32_t*>(static_cast<char*>(workspace) + qkv_bytes(shape, b));
  cuda_check(cudaMemcpyAsync(offsets, off.data(), sizeof(int32_t) * off.size(), cudaMemcpyHostToDevice, stream),
             "cudaMemcpyAsync(seq_offsets)");
  int32_t* seq_params = nullptr;
  if (!b.seq_params.empty()) {
    seq_params = reinterpret_cast<int32_t*>(reinterpret_cast<char*>(offsets) + offsets_bytes(b));
    cuda_check(cudaMemcpyAsync(seq_params, b.seq_params.data(), sizeof(int32_t) * b.seq_params.size(),
                               cudaMemcpyHostToDevice, stream),
               "cudaMemcpyAsync(seq_params)");
  }
  const unsigned passes = static_cast<unsigned>(n_passes(b));

  const size_t qkv_threads = static_cast<size_t>(max_len) * 3 * H;
  bam_qkv_kernel<<<dim3(static_cast<unsigned>((qkv_threads + 255) / 256), n_seqs, passes), 256, 0, stream>>>(
      b.features_NxF, b.params_PxM, offsets, seq_params, shape.n_params(), total, F, H, qkv);
  cuda_check_launch("bam_qkv_kernel");

  const size_t smem = attend_smem_bytes(F, H);
  int device = 0, smem_max = 0;
  cuda_check(cudaGetDevice(&device), "cudaGetDevice");
  cuda_check(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
             "cudaDeviceGetAttribute");
  if (smem > static_cast<size_t>(smem_max))
    fail(where,
         "shape needs " + std::to_string(smem) + " bytes of shared memory, the device has " + std::to_string(smem_max));
  cuda_check(
      cudaFuncSetAttribute(bam_attend_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
      "cudaFuncSetAttribute(bam_attend_kernel)");
  const dim3 grid((max_len + kRows - 1) / kRows, n_seqs, passes);
  bam_attend_kernel<<<grid, kWarps * 32, smem, stream>>>(b.features_NxF, b.params_PxM, qkv, offsets, seq_params,
                                                         shape.n_params(), total, F, H, b.scores_PxN);
  cuda_check_launch("bam_attend_kernel");
}

}  // namespace nammkit::kernels
