// CPU references of the CUDA kernels: plain C++ with the kernels' host-side layouts, used by the GPU
// tests as ground truth and tested on their own by tests/test_kernels_reference.cpp, which runs without
// a GPU (it is built with the kernels, i.e. where nvcc exists). Header-only: it needs no CUDA library.
//
// Attention is computed in double from the dequantised KV values, so the only differences a kernel may
// show are its own f32 rounding and summation order. The NAMM pieces reuse namm's CPU code.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "core/error.h"
#include "namm/bam_scorer.h"
#include "namm/normalization.h"
#include "namm/recency.h"
#include "namm/spectrogram.h"
#include "transformer/tensor.h"

namespace nammkit::kernels::ref {

// One KV head as host memory: [len][head_dim] keys and values of `dtype` (f32, or f16 / bf16 bits).
struct KvHead {
  const void* keys = nullptr;
  const void* values = nullptr;
  int len = 0;
};

namespace detail {
inline std::vector<float> to_f32(DType dtype, const void* data, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  if (n > 0) dequantize(dtype, data, out.data(), n);
  return out;
}

// softmax(scale * q.K[j]) over j < visible, times V: out_D gets the output; probs_row[j] += weight * p_j.
inline void attend_row(const float* q, const std::vector<float>& K, const std::vector<float>& V, int D, int visible,
                       float scale, float* out_D, float* probs_row, double weight) {
  std::fill_n(out_D, D, 0.0f);
  if (visible <= 0) return;
  std::vector<double> s(visible);
  for (int j = 0; j < visible; ++j) {
    double dot = 0;
    for (int d = 0; d < D; ++d) dot += static_cast<double>(q[d]) * K[static_cast<size_t>(j) * D + d];
    s[j] = dot * scale;
  }
  const double mx = *std::max_element(s.begin(), s.end());
  double sum = 0;
  for (double& v : s) sum += (v = std::exp(v - mx));
  std::vector<double> o(D, 0.0);
  for (int j = 0; j < visible; ++j) {
    const double p = s[j] / sum;
    for (int d = 0; d < D; ++d) o[d] += p * V[static_cast<size_t>(j) * D + d];
    if (probs_row) probs_row[j] += static_cast<float>(weight * p);
  }
  for (int d = 0; d < D; ++d) out_D[d] = static_cast<float>(o[d]);
}
}  // namespace detail

// Decode attention (kernels/attention_decode.h): q_HxD [n_q_heads][D], out_HxD likewise; probs_KVxS
// (optional) [n_kv_heads][probs_stride], the GQA average, 0 past each head's length.
inline void attention_decode(DType dtype, int n_q_heads, int D, std::span<const KvHead> heads, const float* q_HxD,
                             float scale, float* out_HxD, float* probs_KVxS, int probs_stride) {
  const int n_kv = static_cast<int>(heads.size()), group = n_q_heads / n_kv;
  if (probs_KVxS) std::fill_n(probs_KVxS, static_cast<size_t>(n_kv) * probs_stride, 0.0f);
  for (int kvh = 0; kvh < n_kv; ++kvh) {
    const KvHead& h = heads[kvh];
    const auto K = detail::to_f32(dtype, h.keys, int64_t{h.len} * D);
    const auto V = detail::to_f32(dtype, h.values, int64_t{h.len} * D);
    for (int g = 0; g < group; ++g) {
      const int qh = kvh * group + g;
      detail::attend_row(q_HxD + static_cast<size_t>(qh) * D, K, V, D, h.len, scale,
                         out_HxD + static_cast<size_t>(qh) * D,
                         probs_KVxS ? probs_KVxS + static_cast<size_t>(kvh) * probs_stride : nullptr, 1.0 / group);
    }
  }
}

// Prefill attention (kernels/attention_prefill.h): q_TxHxD [T][n_q_heads][D], out likewise; query t of
// head h sees keys 0 .. len - T + t; probs_KVxTxS (optional) [n_kv_heads][T][probs_stride].
inline void attention_prefill(DType dtype, int n_q_heads, int D, int T, std::span<const KvHead> heads,
                              const float* q_TxHxD, float scale, float* out_TxHxD, float* probs_KVxTxS,
                              int probs_stride) {
  const int n_kv = static_cast<int>(heads.size()), group = n_q_heads / n_kv;
  if (probs_KVxTxS) std::fill_n(probs_KVxTxS, static_cast<size_t>(n_kv) * T * probs_stride, 0.0f);
  for (int kvh = 0; kvh < n_kv; ++kvh) {
    const KvHead& h = heads[kvh];
    const auto K = detail::to_f32(dtype, h.keys, int64_t{h.len} * D);
    const auto V = detail::to_f32(dtype, h.values, int64_t{h.len} * D);
    const int n_old = std::max(h.len - T, 0);
    for (int t = 0; t < T; ++t)
      for (int g = 0; g < group; ++g) {
        const size_t row = (static_cast<size_t>(t) * n_q_heads + kvh * group + g) * D;
        float* probs = probs_KVxTxS ? probs_KVxTxS + (static_cast<size_t>(kvh) * T + t) * probs_stride : nullptr;
        detail::attend_row(q_TxHxD + row, K, V, D, std::min(h.len, n_old + t + 1), scale, out_TxHxD + row, probs,
                           1.0 / group);
      }
  }
}

// Compaction (kernels/kv_compact.h): rows_LxW is [len][row_bytes] raw bytes; row r <- row keep[r].
inline void compact_rows(void* rows, size_t row_bytes, int len, std::span<const int32_t> keep) {
  int32_t prev = -1;
  auto* base = static_cast<uint8_t*>(rows);
  for (size_t r = 0; r < keep.size(); ++r) {
    if (keep[r] <= prev || keep[r] >= len) fail("ref::compact_rows", "keep list not ascending or out of range");
    prev = keep[r];
    std::memmove(base + r * row_bytes, base + static_cast<size_t>(keep[r]) * row_bytes, row_bytes);
  }
}

// NAMM features of one (layer, KV head) update (kernels/spectrogram.h), as NammPolicy::update computes
// them: the spectrogram update of `state`, then [recency | normalised EMA] per key into features_NxF.
inline void spectrogram_features(const AttentionSpectrogram& spectrogram, const RecencyConfig& recency,
                                 const FeatureNormalizer& normalizer, const float* attention_QxN, int n_queries,
                                 int n_keys, const int32_t* positions_N, SpectralState& state, float* features_NxF) {
  spectrogram.update(attention_QxN, n_queries, n_keys, state);
  const int bins = spectrogram.config().n_bins(), F = recency.dim + bins;
  const int32_t newest = n_keys ? positions_N[n_keys - 1] : 0;
  for (int j = 0; j < n_keys; ++j) {
    float* row = features_NxF + static_cast<size_t>(j) * F;
    recency_embedding(recency, int64_t{newest} - positions_N[j], row);
    normalizer.apply(state.ema_NxB.data() + static_cast<size_t>(j) * bins, row + recency.dim);
  }
}

// Batched BAM scores (kernels/bam_batched.h): scores_PxN[p][offsets[s] + i] = score_tokens of sequence s
// under member p. params_PxM is [n_members][shape.n_params()].
inline void bam_scores_batched(const ScorerShape& shape, const float* params_PxM, int n_members,
                               std::span<const int32_t> seq_offsets, const float* features_NxF, float* scores_PxN) {
  const int total = seq_offsets.empty() ? 0 : seq_offsets.back();
  const size_t M = static_cast<size_t>(shape.n_params());
  for (int p = 0; p < n_members; ++p)
    for (size_t s = 0; s + 1 < seq_offsets.size(); ++s) {
      const int start = seq_offsets[s], n = seq_offsets[s + 1] - start;
      score_tokens(shape, std::span<const float>(params_PxM + p * M, M),
                   features_NxF + static_cast<size_t>(start) * shape.n_features, n,
                   scores_PxN + static_cast<size_t>(p) * total + start);
    }
}

// Each sequence under its own member (BamBatch::seq_params): scores_N[offsets[s] + i] = score_tokens of
// sequence s under member seq_params[s].
inline void bam_scores_per_sequence(const ScorerShape& shape, const float* params_PxM,
                                    std::span<const int32_t> seq_offsets, std::span<const int32_t> seq_params,
                                    const float* features_NxF, float* scores_N) {
  const size_t M = static_cast<size_t>(shape.n_params());
  for (size_t s = 0; s + 1 < seq_offsets.size(); ++s) {
    const int start = seq_offsets[s], n = seq_offsets[s + 1] - start;
    score_tokens(shape, std::span<const float>(params_PxM + seq_params[s] * M, M),
                 features_NxF + static_cast<size_t>(start) * shape.n_features, n, scores_N + start);
  }
}

}  // namespace nammkit::kernels::ref
