#include "namm/namm_scoring.h"

#include <string>

#include "core/error.h"
#include "namm/bam_scorer.h"
#include "namm/policy_file.h"
#include "namm/recency.h"

namespace nammkit {

NammScoring NammScoring::from(const PolicyFile& file) {
  validate_policy_file(file, "policy");
  if (file.kind() != POLICY_NAMM_BAM && file.kind() != POLICY_NAMM_MLP)
    fail("policy", std::string("kind: the namm selector needs a NAMM policy, got ") + policy_kind_name(file.kind()));
  return NammScoring{namm_config_from(file), std::vector<float>(file.params().begin(), file.params().end()),
                     normalizer_from(file)};
}

void NammScoring::score(const float* ema_NxB, std::span<const int64_t> ages, float* scores) const {
  const int n = static_cast<int>(ages.size());
  const int bins = config.spectrogram.n_bins(), rec = config.recency.dim, F = config.n_features();
  std::vector<float> x(size_t(n) * F);
  for (int j = 0; j < n; ++j) {
    float* row = x.data() + size_t(j) * F;
    recency_embedding(config.recency, ages[j], row);
    normalizer.apply(ema_NxB + size_t(j) * bins, row + rec);
  }
  score_tokens(config.scorer, params, x.data(), n, scores);
}

}  // namespace nammkit
