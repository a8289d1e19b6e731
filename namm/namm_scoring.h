// NAMM token scores outside NammPolicy: a trained NAMM's configuration, parameters and normalisation
// statistics taken from a policy file, and the feature-and-score step both export targets share
// (Memory3's namm selector scores a reference chunk once; B'MOJO's namm scorer scores a head's cache
// at every update). Spectrogram state stays with the caller, because the two keep it differently
// (a fresh state per chunk vs. one carried across updates and gathered on eviction).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "namm/namm_policy.h"
#include "namm/normalization.h"
#include "namm/policy.pb.h"

namespace nammkit {

struct NammScoring {
  NammConfig config;
  std::vector<float> params;
  FeatureNormalizer normalizer;

  // From a NAMM policy file (validated here; any other kind is an Error naming it).
  static NammScoring from(const PolicyFile& file);

  // Scores of n = ages.size() tokens, exactly as NammPolicy computes them: per token the features
  // [recency embedding of its age | normalised spectrogram EMA row], then the BAM / linear scorer.
  // `ema_NxB` is SpectralState::ema_NxB (n rows of spectrogram.n_bins()); `ages[j]` is how many
  // positions token j lies behind the newest one.
  void score(const float* ema_NxB, std::span<const int64_t> ages, float* scores) const;
};

}  // namespace nammkit
