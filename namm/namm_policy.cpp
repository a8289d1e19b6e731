#include "namm/namm_policy.h"

#include <tbb/parallel_for.h>

#include <cmath>

#include "core/error.h"

namespace nammkit {

NammConfig NammConfig::reference(ScorerKind kind) {
  NammConfig c;
  c.scorer.kind = kind;
  c.scorer.n_features = c.n_features();
  return c;
}

void NammConfig::validate(const std::string& where) const {
  spectrogram.validate(where);
  recency.validate(where);
  scorer.validate(where);
  if (scorer.n_features != n_features())
    fail(where, "n_features: expected recency_dim + n_fft/2 + 1 = " + std::to_string(n_features()) + ", got " +
                    std::to_string(scorer.n_features));
  if (!std::isfinite(selection.threshold)) fail(where, "threshold: not finite");
  if (selection.max_tokens_per_head < 0)
    fail(where, "max_tokens_per_head: expected >= 0, got " + std::to_string(selection.max_tokens_per_head));
  if (!(selection.keep_fraction >= 0 && selection.keep_fraction <= 1))
    fail(where, "keep_fraction: expected 0 (threshold rule) or a fraction in (0, 1], got " +
                    std::to_string(selection.keep_fraction));
}

NammPolicy::NammPolicy(NammConfig config, std::vector<float> params, FeatureNormalizer normalizer) : config_(config) {
  config_.validate("NammPolicy");
  set_params(std::move(params));
  set_normalizer(std::move(normalizer));
  spectrogram_ = std::make_unique<AttentionSpectrogram>(config_.spectrogram);
  collected_ = FeatureStats(config_.spectrogram.n_bins());
}

NammPolicy::~NammPolicy() = default;

std::string NammPolicy::name() const { return std::string("namm_") + scorer_kind_name(config_.scorer.kind); }

void NammPolicy::set_params(std::vector<float> params) {
  if (static_cast<int>(params.size()) != config_.scorer.n_params())
    fail("NammPolicy", "params: expected " + std::to_string(config_.scorer.n_params()) + " values, got " +
                           std::to_string(params.size()));
  params_ = std::move(params);
}

void NammPolicy::set_normalizer(FeatureNormalizer normalizer) {
  if (normalizer.dim() != config_.spectrogram.n_bins())
    fail("NammPolicy", "normalisation stats: expected " + std::to_string(config_.spectrogram.n_bins()) + " bins, got " +
                           std::to_string(normalizer.dim()));
  normalizer_ = std::move(normalizer);
}

void NammPolicy::set_mode(NammMode mode) {
  if (mode == NammMode::Sample && !trace_) fail("NammPolicy", "Sample mode: call set_sampling() first");
  mode_ = mode;
}

void NammPolicy::set_sampling(const StochasticKeep& options, DecisionTrace* trace) {
  if (!(options.temperature > 0) || !std::isfinite(options.temperature))
    fail("NammPolicy", "temperature: expected a finite value > 0, got " + std::to_string(options.temperature));
  if (!trace) fail("NammPolicy", "set_sampling: no trace to record the decisions in");
  sampling_ = options;
  trace_ = trace;
  mode_ = NammMode::Sample;
}

void NammPolicy::begin_sequence(const ModelConfig& config) {
  note_sequence_start();
  state_.assign(config.n_layers, std::vector<SpectralState>(config.n_kv_heads));
  layer_updates_.assign(config.n_layers, 0);
}

void NammPolicy::ensure_state(const LayerWindow& window) {
  // Tolerates a runtime that never called begin_sequence(): state grows to what the windows need.
  if (static_cast<int>(state_.size()) <= window.layer) state_.resize(window.layer + 1);
  if (static_cast<int>(layer_updates_.size()) <= window.layer) layer_updates_.resize(window.layer + 1, 0);
  auto& layer = state_[window.layer];
  if (layer.size() < window.heads.size()) layer.resize(window.heads.size());
}

KeepLists NammPolicy::update(const LayerWindow& window) {
  if (stats().sequences == 0) note_sequence_start();
  ensure_state(window);
  const int n_heads = static_cast<int>(window.heads.size());
  const int n_bins = config_.spectrogram.n_bins(), overlap = config_.spectrogram.overlap();
  const int rec = config_.recency.dim, F = config_.n_features();
  const bool collect = mode_ == NammMode::CollectStats;
  auto& states = state_[window.layer];
  for (int h = 0; h < n_heads; ++h)
    if (!window.heads[h].attention)
      fail("NammPolicy", "layer " + std::to_string(window.layer) + " head " + std::to_string(h) +
                             ": no attention in the window (the runtime must record it when needs_attention())");

  std::vector<std::vector<float>> features(n_heads), scores(n_heads);
  std::vector<FeatureStats> head_stats(n_heads, FeatureStats(n_bins));
  auto extract = [&](int h) {
    const HeadWindow& hw = window.heads[h];
    const int n = hw.n_keys;
    spectrogram_->update(hw.attention, window.n_queries, n, states[h]);
    if (collect) {
      head_stats[h].add(states[h].ema_NxB.data(), n);
      return;
    }
    auto& x = features[h];
    x.resize(static_cast<size_t>(n) * F);
    const int32_t newest = n ? hw.positions[n - 1] : 0;
    for (int j = 0; j < n; ++j) {
      float* row = x.data() + static_cast<size_t>(j) * F;
      recency_embedding(config_.recency, int64_t{newest} - hw.positions[j], row);
      normalizer_.apply(states[h].ema_NxB.data() + static_cast<size_t>(j) * n_bins, row + rec);
    }
  };
  auto score = [&](int h) {
    const int n = window.heads[h].n_keys;
    scores[h].resize(n);
    score_tokens(config_.scorer, params_, features[h].data(), n, scores[h].data());
  };

  if (collect || !observer_) {
    tbb::parallel_for(0, n_heads, [&](int h) {
      extract(h);
      if (!collect) score(h);
    });
  } else {
    tbb::parallel_for(0, n_heads, extract);
    for (int h = 0; h < n_heads; ++h) observer_(window, h, features[h].data(), window.heads[h].n_keys);
    tbb::parallel_for(0, n_heads, score);
  }

  if (collect) {
    for (const auto& s : head_stats) collected_.merge(s);  // fixed order: deterministic sums
    KeepLists keep_all;
    note_update(window, keep_all);
    return keep_all;
  }

  KeepLists keep;
  if (mode_ == NammMode::Sample) {
    const int64_t update = layer_updates_[window.layer]++;
    std::vector<DecisionBlock> blocks(n_heads);
    keep.resize(n_heads);
    tbb::parallel_for(0, n_heads, [&](int h) {
      keep[h] = sample_keep(scores[h], sampling_, window.layer, update, h, blocks[h]);
      blocks[h].features_NxF = std::move(features[h]);
    });
    for (auto& b : blocks) trace_->blocks.push_back(std::move(b));  // head order: deterministic
  } else {
    keep = select(window, scores);
  }
  for (int h = 0; h < n_heads; ++h) states[h].gather(keep[h], n_bins, overlap);
  note_update(window, keep);
  return keep;
}

KeepLists NammPolicy::select(const LayerWindow& window, std::span<const std::vector<float>> scores) const {
  std::vector<std::span<const float>> views(scores.begin(), scores.end());
  return select_tokens(views, with_budget(config_.selection, window.tokens_seen()));
}

bool NammPolicy::takes_external_scores() const {
  return mode_ == NammMode::Evict && config_.scorer.kind == ScorerKind::Bam && !observer_;
}

KeepLists NammPolicy::select_from_scores(const LayerWindow& window, std::span<const std::vector<float>> scores) {
  const char* where = "NammPolicy::select_from_scores";
  if (!takes_external_scores()) fail(where, "only in Evict mode with the BAM scorer and no feature observer");
  if (scores.size() != window.heads.size())
    fail(where,
         "expected " + std::to_string(window.heads.size()) + " heads' scores, got " + std::to_string(scores.size()));
  for (size_t h = 0; h < scores.size(); ++h)
    if (static_cast<int>(scores[h].size()) != window.heads[h].n_keys)
      fail(where, "head " + std::to_string(h) + ": expected " + std::to_string(window.heads[h].n_keys) +
                      " scores, got " + std::to_string(scores[h].size()));
  if (stats().sequences == 0) note_sequence_start();
  KeepLists keep = select(window, scores);
  note_update(window, keep);
  return keep;
}

}  // namespace nammkit
