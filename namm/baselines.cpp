#include "namm/baselines.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>

#include "core/byte_io.h"
#include "core/error.h"
#include "namm/selection.h"

namespace nammkit {

namespace {
std::vector<int32_t> range_indices(int begin, int end) {
  std::vector<int32_t> v(std::max(end - begin, 0));
  std::iota(v.begin(), v.end(), begin);
  return v;
}

// Runs `select(head, n_keys, budget)` for every head whose cache exceeds the budget; returns
// {} (keep all) when none does. Heads within budget keep everything.
template <typename Select>
KeepLists apply_budget(const LayerWindow& w, const Budget& budget, Select select) {
  const int allowed = budget.tokens_for(w.tokens_seen());
  bool any = false;
  for (const auto& h : w.heads) any |= h.n_keys > allowed;
  if (!any) return {};
  KeepLists keep(w.heads.size());
  for (size_t h = 0; h < w.heads.size(); ++h) {
    const int n = w.heads[h].n_keys;
    keep[h] = n > allowed ? select(static_cast<int>(h), n, allowed) : range_indices(0, n);
  }
  return keep;
}

}  // namespace

Budget Budget::parse(const std::string& text, const std::string& where) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(v)) fail(where, "budget: not a number: '" + text + "'");
  Budget b;
  if (text.find_first_of(".eE") != std::string::npos || v < 1.0) {
    b = fraction(v);
  } else {
    if (v != std::floor(v)) fail(where, "budget: not an integer token count: '" + text + "'");
    b = tokens(static_cast<int>(v));
  }
  b.validate(where);
  return b;
}

void Budget::validate(const std::string& where) const {
  if (is_fraction) {
    if (!(value > 0.0 && value <= 1.0))
      fail(where, "budget: a fraction must be in (0, 1], got " + std::to_string(value));
  } else if (!(value >= 1.0) || value != std::floor(value) || value > 2147483647.0) {
    fail(where, "budget: a token count must be an integer >= 1, got " + std::to_string(value));
  }
}

int Budget::tokens_for(int64_t seen) const {
  if (!is_fraction) return static_cast<int>(value);
  // The epsilon absorbs binary rounding (0.1 * 30 = 2.9999999999999996 must give 3).
  const double t = std::floor(value * static_cast<double>(seen) + 1e-9);
  return static_cast<int>(std::max(1.0, t));
}

std::string Budget::to_string() const {
  if (!is_fraction) return std::to_string(static_cast<int64_t>(value));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", value);
  std::string s = buf;
  if (s.find_first_of(".e") == std::string::npos) s += ".0";  // keep it parseable as a fraction
  return s;
}

KeepLists KeepAllPolicy::update(const LayerWindow& window) {
  KeepLists keep;
  note_update(window, keep);
  return keep;
}

StreamingLlmPolicy::StreamingLlmPolicy(Budget budget, int sinks) : budget_(budget), sinks_(sinks) {
  budget_.validate("streaming");
  if (sinks < 0) fail("streaming", "sinks: expected >= 0, got " + std::to_string(sinks));
}

KeepLists StreamingLlmPolicy::update(const LayerWindow& window) {
  KeepLists keep = apply_budget(window, budget_, [&](int, int n, int allowed) {
    const int sinks = std::min(sinks_, allowed - 1);
    std::vector<int32_t> k = range_indices(0, sinks);
    for (int32_t j : range_indices(n - (allowed - sinks), n)) k.push_back(j);
    return k;
  });
  note_update(window, keep);
  return keep;
}

H2oPolicy::H2oPolicy(Budget budget, double heavy_ratio) : budget_(budget), heavy_ratio_(heavy_ratio) {
  budget_.validate("h2o");
  if (!(heavy_ratio >= 0.0 && heavy_ratio <= 1.0))
    fail("h2o", "heavy_ratio: expected a value in [0, 1], got " + std::to_string(heavy_ratio));
}

void H2oPolicy::begin_sequence(const ModelConfig& config) {
  note_sequence_start();
  accumulated_.assign(config.n_layers, std::vector<std::vector<float>>(config.n_kv_heads));
}

KeepLists H2oPolicy::update(const LayerWindow& window) {
  if (static_cast<int>(accumulated_.size()) <= window.layer) accumulated_.resize(window.layer + 1);
  auto& layer = accumulated_[window.layer];
  if (layer.size() < window.heads.size()) layer.resize(window.heads.size());
  // Accumulate the attention every cached token received from this window's queries.
  for (size_t h = 0; h < window.heads.size(); ++h) {
    const HeadWindow& hw = window.heads[h];
    if (!hw.attention) fail("h2o", "layer " + std::to_string(window.layer) + ": no attention in the window");
    auto& acc = layer[h];
    if (static_cast<int>(acc.size()) > hw.n_keys) fail("h2o", "cache shrank behind the policy's back");
    acc.resize(hw.n_keys, 0.0f);
    for (int t = 0; t < window.n_queries; ++t) {
      const float* row = hw.attention + static_cast<size_t>(t) * hw.n_keys;
      for (int j = 0; j < hw.n_keys; ++j) acc[j] += row[j];
    }
  }
  KeepLists keep = apply_budget(window, budget_, [&](int h, int n, int allowed) {
    int heavy = static_cast<int>(std::floor(allowed * heavy_ratio_));
    heavy = std::min(heavy, allowed - 1);  // the newest token is always in the recent part
    const int recent = allowed - heavy;
    std::span<const float> older(layer[h].data(), n - recent);
    std::vector<int32_t> k = top_k_chronological(older, heavy);
    for (int32_t j : range_indices(n - recent, n)) k.push_back(j);
    return k;
  });
  for (size_t h = 0; h < keep.size(); ++h) {
    auto& acc = layer[h];
    for (size_t r = 0; r < keep[h].size(); ++r) acc[r] = acc[keep[h][r]];
    acc.resize(keep[h].size());
  }
  note_update(window, keep);
  return keep;
}

L2NormPolicy::L2NormPolicy(Budget budget) : budget_(budget) { budget_.validate("l2"); }

KeepLists L2NormPolicy::update(const LayerWindow& window) {
  const int d = window.head_dim;
  KeepLists keep = apply_budget(window, budget_, [&](int h, int n, int allowed) {
    const float* keys = window.heads[h].keys;
    // Lowest norm = highest score; the newest is kept separately.
    std::vector<float> neg_norm(n - 1);
    for (int j = 0; j < n - 1; ++j) {
      double s = 0;
      for (int i = 0; i < d; ++i)
        s += double{keys[static_cast<size_t>(j) * d + i]} * keys[static_cast<size_t>(j) * d + i];
      neg_norm[j] = -static_cast<float>(std::sqrt(s));
    }
    std::vector<int32_t> k = top_k_chronological(neg_norm, allowed - 1);
    k.push_back(n - 1);
    return k;
  });
  note_update(window, keep);
  return keep;
}

RandomPolicy::RandomPolicy(Budget budget, uint64_t seed) : budget_(budget), seed_(seed) { budget_.validate("random"); }

KeepLists RandomPolicy::update(const LayerWindow& window) {
  const int64_t seen = window.tokens_seen();
  KeepLists keep = apply_budget(window, budget_, [&](int h, int n, int allowed) {
    uint64_t state =
        splitmix64(seed_ ^ splitmix64((uint64_t(window.layer) << 48) ^ (uint64_t(h) << 40) ^ uint64_t(seen)));
    // Partial Fisher-Yates over the n - 1 older tokens; the newest is always kept.
    std::vector<int32_t> idx = range_indices(0, n - 1);
    for (int i = 0; i < allowed - 1; ++i) {
      state = splitmix64(state);
      const int j = i + static_cast<int>(state % static_cast<uint64_t>(n - 1 - i));
      std::swap(idx[i], idx[j]);
    }
    idx.resize(allowed - 1);
    std::sort(idx.begin(), idx.end());
    idx.push_back(n - 1);
    return idx;
  });
  note_update(window, keep);
  return keep;
}

}  // namespace nammkit
