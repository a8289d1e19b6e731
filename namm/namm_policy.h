// NammPolicy: the Neural Attention Memory Model as a MemoryPolicy (spec §2).
//
// At every update, for each KV head of the layer, in parallel:
//   1. the attention spectrogram EMA of every cached token is advanced (AttentionSpectrogram);
//   2. features_NxF = [recency embedding (8) | z-normalised EMA (17)] (25 per token);
//   3. the scorer (BAM or MLP) gives one score per token;
//   4. select_tokens() turns the scores of all heads of the layer into keep lists;
//   5. the per-token spectral state is gathered with the same keep lists as the KV cache.
// In CollectStats mode steps 3-5 are skipped: everything is kept and the un-normalised EMA of every
// cached token is pooled into collected_stats() (the reference's iteration-0 full-cache pass).
// In Sample mode step 4 is a Bernoulli draw per token (namm/stochastic_keep.h), recorded in a trace.
#pragma once
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "namm/bam_scorer.h"
#include "namm/normalization.h"
#include "namm/policy_stats.h"
#include "namm/recency.h"
#include "namm/selection.h"
#include "namm/spectrogram.h"
#include "namm/stochastic_keep.h"

namespace nammkit {

struct NammConfig {
  SpectrogramConfig spectrogram;
  RecencyConfig recency;
  ScorerShape scorer;  // scorer.n_features must be recency.dim + spectrogram.n_bins()
  SelectionOptions selection;

  // The paper's configuration (spec §2.3-2.5) with the given scorer.
  static NammConfig reference(ScorerKind kind = ScorerKind::Bam);
  int n_features() const { return recency.dim + spectrogram.n_bins(); }
  void validate(const std::string& where) const;
};

enum class NammMode : uint8_t {
  Evict,         // score and evict (inference, evolution)
  CollectStats,  // keep everything, accumulate normalisation statistics
  Sample,        // the stochastic policy of the RL trainers (namm/stochastic_keep.h): set by set_sampling()
};

class NammPolicy final : public RecordingPolicy {
 public:
  // `params` has config.scorer.n_params() values; `normalizer` has spectrogram.n_bins() dims.
  NammPolicy(NammConfig config, std::vector<float> params, FeatureNormalizer normalizer);
  ~NammPolicy() override;

  std::string name() const override;  // "namm_bam" / "namm_mlp"
  bool needs_attention() const override { return true; }
  bool needs_keys_values() const override { return false; }
  void begin_sequence(const ModelConfig& config) override;
  KeepLists update(const LayerWindow& window) override;

  const NammConfig& config() const { return config_; }
  const std::vector<float>& params() const { return params_; }
  const FeatureNormalizer& normalizer() const { return normalizer_; }
  // Replaces the parameters (same size), e.g. for the next population member. Takes effect at the
  // next update; per-sequence state is untouched.
  void set_params(std::vector<float> params);
  void set_normalizer(FeatureNormalizer normalizer);

  NammMode mode() const { return mode_; }
  void set_mode(NammMode mode);  // Sample only after set_sampling() gave it a trace
  // Sample mode: every head keeps the tokens drawn with p = sigma(score / temperature) (the selection
  // options are not used), and every update's features, actions and probabilities are appended to
  // `trace` (not owned; must outlive the runs). The draws restart with each begin_sequence().
  void set_sampling(const StochasticKeep& options, DecisionTrace* trace);
  // Statistics of the un-normalised spectrogram EMA pooled over every update in CollectStats mode.
  const FeatureStats& collected_stats() const { return collected_; }

  // Called (serially, in head order) with the features of every head at every update, before
  // scoring: lets a caller score many parameter vectors on the same features (score_population).
  using FeatureObserver = std::function<void(const LayerWindow& window, int kv_head, const float* features_NxF, int n)>;
  void set_feature_observer(FeatureObserver observer) { observer_ = std::move(observer); }

  // Scores computed elsewhere (the GPU runtime runs steps 1-3 on the device, kernels/namm_device.h):
  // whether this policy can take them -- Evict mode, the BAM scorer, no feature observer --, and the rest
  // of update() given each head's scores (step 4 with the same selection options and budget, and the
  // statistics): one keep list per head, never the empty "keep everything". The caller keeps the
  // per-token spectral state itself; this policy's own is not used.
  bool takes_external_scores() const;
  KeepLists select_from_scores(const LayerWindow& window, std::span<const std::vector<float>> scores);

 private:
  void ensure_state(const LayerWindow& window);
  KeepLists select(const LayerWindow& window, std::span<const std::vector<float>> scores) const;

  NammConfig config_;
  std::vector<float> params_;
  FeatureNormalizer normalizer_;
  std::unique_ptr<AttentionSpectrogram> spectrogram_;
  NammMode mode_ = NammMode::Evict;
  FeatureStats collected_;
  FeatureObserver observer_;
  StochasticKeep sampling_;
  DecisionTrace* trace_ = nullptr;
  std::vector<int64_t> layer_updates_;             // updates of each layer since the sequence began (Sample mode)
  std::vector<std::vector<SpectralState>> state_;  // [layer][kv_head]
};

}  // namespace nammkit
