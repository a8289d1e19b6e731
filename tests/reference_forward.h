// A deliberately naive Llama forward for tests: scalar loops, one token at a time, no KV-cache
// eviction, f64 accumulation. It shares nothing with transformer/session.cpp except the Model
// struct, so agreement between the two is evidence that the optimised path is right.
//
// `hidden(layer, kv_head, key_pos, query_pos)` may hide a key from a query (used to check that
// evicting tokens equals masking them out).
#pragma once
#include <cmath>
#include <functional>
#include <vector>

#include "transformer/model.h"

namespace nammkit::testing {

using KeyMask = std::function<bool(int layer, int kv_head, int key_pos, int query_pos)>;

inline std::vector<double> dense_row(const WeightMatrix& w, int64_t r) {
  std::vector<float> tmp(w.cols);
  dequantize(w.dtype, w.row(r), tmp.data(), w.cols);
  return {tmp.begin(), tmp.end()};
}

inline std::vector<double> linear(const WeightMatrix& w, const std::vector<double>& x) {
  std::vector<double> y(w.rows);
  for (int64_t r = 0; r < w.rows; ++r) {
    const std::vector<double> row = dense_row(w, r);
    double s = 0;
    for (int64_t c = 0; c < w.cols; ++c) s += row[c] * x[c];
    y[r] = s;
  }
  return y;
}

inline std::vector<double> rmsnorm(const std::vector<double>& x, const std::vector<float>& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double s = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * s * w[i];
  return y;
}

inline void rope(std::vector<double>& v, int n_heads, int d, int pos, const ModelConfig& c) {
  for (int h = 0; h < n_heads; ++h)
    for (int i = 0; i < d / 2; ++i) {
      const double freq = std::pow(double(c.rope_theta), -2.0 * i / d);
      const double a = pos * freq, cs = std::cos(a), sn = std::sin(a);
      const int i0 = h * d + (c.rope_style == RopeStyle::Interleaved ? 2 * i : i);
      const int i1 = h * d + (c.rope_style == RopeStyle::Interleaved ? 2 * i + 1 : i + d / 2);
      const double x0 = v[i0], x1 = v[i1];
      v[i0] = x0 * cs - x1 * sn;
      v[i1] = x0 * sn + x1 * cs;
    }
}

// Logits ([n][vocab]) for every position of `tokens`. Only RopeScaling::None is supported.
inline std::vector<std::vector<double>> reference_logits(const Model& m, const std::vector<int32_t>& tokens,
                                                         const KeyMask& hidden = {}) {
  const ModelConfig& c = m.config;
  const int d = c.head_dim;
  std::vector<std::vector<std::vector<double>>> K(c.n_layers), V(c.n_layers);  // [layer][pos][kv_dim]
  std::vector<std::vector<double>> out;
  for (int pos = 0; pos < int(tokens.size()); ++pos) {
    std::vector<double> x = dense_row(m.token_embedding, tokens[pos]);
    for (int l = 0; l < c.n_layers; ++l) {
      const LayerWeights& L = m.layers[l];
      std::vector<double> xn = rmsnorm(x, L.attn_norm, c.norm_eps);
      std::vector<double> q = linear(L.wq, xn), k = linear(L.wk, xn), v = linear(L.wv, xn);
      for (size_t i = 0; i < L.bq.size(); ++i) q[i] += L.bq[i];
      for (size_t i = 0; i < L.bk.size(); ++i) k[i] += L.bk[i];
      for (size_t i = 0; i < L.bv.size(); ++i) v[i] += L.bv[i];
      rope(q, c.n_heads, d, pos, c);
      rope(k, c.n_kv_heads, d, pos, c);
      K[l].push_back(k);
      V[l].push_back(v);
      std::vector<double> att(c.q_dim(), 0.0);
      for (int h = 0; h < c.n_heads; ++h) {
        const int g = h / c.group_size();
        std::vector<double> w(pos + 1, -INFINITY);
        double mx = -INFINITY;
        for (int j = 0; j <= pos; ++j) {
          if (hidden && hidden(l, g, j, pos)) continue;
          double s = 0;
          for (int i = 0; i < d; ++i) s += q[h * d + i] * K[l][j][g * d + i];
          w[j] = s / std::sqrt(double(d));
          mx = std::max(mx, w[j]);
        }
        double sum = 0;
        for (int j = 0; j <= pos; ++j) sum += (w[j] = std::isinf(w[j]) ? 0.0 : std::exp(w[j] - mx));
        for (int j = 0; j <= pos; ++j)
          for (int i = 0; i < d; ++i) att[h * d + i] += w[j] / sum * V[l][j][g * d + i];
      }
      std::vector<double> o = linear(L.wo, att);
      for (int i = 0; i < c.dim; ++i) x[i] += o[i];
      xn = rmsnorm(x, L.ffn_norm, c.norm_eps);
      std::vector<double> gte = linear(L.w_gate, xn), up = linear(L.w_up, xn);
      for (size_t i = 0; i < gte.size(); ++i) gte[i] = gte[i] / (1.0 + std::exp(-gte[i])) * up[i];
      std::vector<double> dn = linear(L.w_down, gte);
      for (int i = 0; i < c.dim; ++i) x[i] += dn[i];
    }
    out.push_back(linear(m.output, rmsnorm(x, m.final_norm, c.norm_eps)));
  }
  return out;
}

}  // namespace nammkit::testing
