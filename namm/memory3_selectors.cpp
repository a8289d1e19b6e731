#include "namm/memory3_selectors.h"

#include <algorithm>
#include <cmath>
#include <string_view>

#include "core/byte_io.h"
#include "core/error.h"
#include "namm/spectrogram.h"

namespace nammkit {

std::vector<int32_t> top_k_lower_index(std::span<const float> scores, int k) {
  const int n = static_cast<int>(scores.size());
  std::vector<int32_t> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  auto key = [&](int i) { return std::isnan(scores[i]) ? -INFINITY : scores[i]; };
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return key(a) > key(b); });
  order.resize(std::min(n, std::max(k, 0)));
  std::sort(order.begin(), order.end());
  return order;
}

namespace {

// NAMM scores of the chunk tokens from their own causal attention (see the header).
std::vector<float> namm_reference_scores(const EncodedReference& r, int layer, int g, const NammScoring& namm) {
  const int T = r.forward.n_tokens, P = r.prefix_len, n = r.n_chunk();
  if (r.forward.attention.empty()) fail("namm selector", "reference '" + r.id + "' was encoded without attention");
  const NammConfig& cfg = namm.config;
  const int hop = cfg.spectrogram.hop;
  const int nq = (n + hop - 1) / hop * hop;
  const auto& A = r.forward.attention[layer][g];
  std::vector<float> att(size_t(nq) * nq, 0.0f);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j <= i; ++j) att[size_t(i) * nq + j] = A[size_t(P + i) * T + P + j];
  // One spectrogram per call: its FFTW plan is cheap next to the forward pass, and keeping none
  // shared makes concurrent calls safe.
  AttentionSpectrogram spectrogram(cfg.spectrogram);
  SpectralState state;
  spectrogram.update(att.data(), nq, nq, state);
  std::vector<int64_t> ages(n);  // recency r_j = (n - 1) - j: the chunk's last token is the newest
  for (int j = 0; j < n; ++j) ages[j] = n - 1 - j;
  std::vector<float> scores(n);
  namm.score(state.ema_NxB.data(), ages, scores.data());
  return scores;
}

// Memory3's rules over pre-RoPE q/k of the chunk tokens, no causal mask; mean over the group.
std::vector<float> memory3_rule_scores(const EncodedReference& r, int layer, int g, const ModelConfig& c,
                                       bool softmax) {
  const int P = r.prefix_len, n = r.n_chunk(), d = c.head_dim, group = c.group_size();
  const auto& q = r.forward.q_pre[layer];
  const auto& k = r.forward.k_pre[layer];
  const double scale = 1.0 / std::sqrt(double(d));
  std::vector<double> s(size_t(n) * n);  // s[i][j] for one query head
  std::vector<double> agg(n, 0.0);
  std::vector<double> log_w(size_t(group) * n);
  for (int hh = 0; hh < group; ++hh) {
    const int h = g * group + hh;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j) {
        const float* qi = q.data() + size_t(P + i) * c.q_dim() + h * d;
        const float* kj = k.data() + size_t(P + j) * c.kv_dim() + g * d;
        double acc = 0;
        for (int e = 0; e < d; ++e) acc += double(qi[e]) * kj[e];
        s[size_t(i) * n + j] = acc * scale;
      }
    if (softmax) {
      for (int i = 0; i < n; ++i) {
        const double* row = s.data() + size_t(i) * n;
        const double mx = *std::max_element(row, row + n);
        double sum = 0;
        for (int j = 0; j < n; ++j) sum += std::exp(row[j] - mx);
        for (int j = 0; j < n; ++j) agg[j] += std::exp(row[j] - mx) / sum / group;
      }
    } else {
      for (int j = 0; j < n; ++j) {  // log Σ_i exp(s_ij)
        double mx = -INFINITY;
        for (int i = 0; i < n; ++i) mx = std::max(mx, s[size_t(i) * n + j]);
        double sum = 0;
        for (int i = 0; i < n; ++i) sum += std::exp(s[size_t(i) * n + j] - mx);
        log_w[size_t(hh) * n + j] = mx + std::log(sum);
      }
    }
  }
  std::vector<float> out(n);
  for (int j = 0; j < n; ++j) {
    if (softmax) {
      out[j] = static_cast<float>(agg[j]);
    } else {  // log of the group mean of w_j: logsumexp over heads - log G (monotone in the mean)
      double mx = -INFINITY;
      for (int hh = 0; hh < group; ++hh) mx = std::max(mx, log_w[size_t(hh) * n + j]);
      double sum = 0;
      for (int hh = 0; hh < group; ++hh) sum += std::exp(log_w[size_t(hh) * n + j] - mx);
      out[j] = static_cast<float>(mx + std::log(sum) - std::log(double(group)));
    }
  }
  return out;
}

// Per-token scores of the chunk's n tokens for one (layer, KV head) under options.selector.
std::vector<float> score_reference(const EncodedReference& r, int layer, int kv_head, const ModelConfig& config,
                                   const Memory3Options& options, const NammScoring* namm) {
  const int n = r.n_chunk();
  if (layer < 0 || layer >= config.n_layers || kv_head < 0 || kv_head >= config.n_kv_heads)
    fail("score_reference", "layer/KV head outside the model");
  std::vector<float> scores(n);
  switch (options.selector) {
    case Memory3Selector::Namm:
      if (!namm) fail("score_reference", "selector namm: no NAMM policy given");
      return namm_reference_scores(r, layer, kv_head, *namm);
    case Memory3Selector::ExpSum: return memory3_rule_scores(r, layer, kv_head, config, false);
    case Memory3Selector::SoftmaxSum: return memory3_rule_scores(r, layer, kv_head, config, true);
    case Memory3Selector::Random: {
      // Seeded by the chunk's token ids (FNV-1a of their bytes, the bank's token_hash), so a chunk
      // gets the same scores wherever it sits in the chunk file.
      const std::span<const int32_t> body(r.tokens.data() + r.prefix_len, n);
      uint64_t h = fnv1a64(std::string_view(reinterpret_cast<const char*>(body.data()), body.size_bytes()));
      h = splitmix64(options.seed ^ splitmix64(h ^ (uint64_t(layer) << 48) ^ (uint64_t(kv_head) << 32)));
      for (int j = 0; j < n; ++j) {
        h = splitmix64(h);
        scores[j] = static_cast<float>((h >> 40) * (1.0 / 16777216.0));
      }
      return scores;
    }
    case Memory3Selector::First:
      for (int j = 0; j < n; ++j) scores[j] = float(n - j);
      return scores;
    case Memory3Selector::Last:
      for (int j = 0; j < n; ++j) scores[j] = float(j);
      return scores;
  }
  return scores;
}

}  // namespace

std::vector<int32_t> select_reference_tokens(const EncodedReference& r, int layer, int kv_head,
                                             const ModelConfig& config, const Memory3Options& options,
                                             const NammScoring* namm) {
  const std::vector<float> scores = score_reference(r, layer, kv_head, config, options, namm);
  return top_k_lower_index(scores, options.k);
}

}  // namespace nammkit
