// z-normalisation of the spectrogram features (spec §2.3): one mean and one population variance per
// frequency bin, pooled over layers, KV heads and tokens. Statistics are collected during a
// full-cache pass, merged across workers with the parallel-variance formula, then frozen and stored
// with the policy.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace nammkit {

// Running per-bin statistics (double precision accumulators).
class FeatureStats {
 public:
  FeatureStats() = default;
  explicit FeatureStats(int dim);
  // From stored values (mean, population variance, count), e.g. read from a policy file.
  FeatureStats(std::vector<double> mean, std::vector<double> var, int64_t count);
  // From the exact running state (mean, M2, count), e.g. sent by another rank: bit-for-bit the original.
  static FeatureStats from_moments(std::vector<double> mean, std::vector<double> m2, int64_t count);

  int dim() const { return static_cast<int>(mean_.size()); }
  int64_t count() const { return count_; }
  const std::vector<double>& mean() const { return mean_; }
  std::vector<double> variance() const;                  // population variance (divide by count); 0 when empty
  const std::vector<double>& m2() const { return m2_; }  // sum of squared deviations from the mean

  // Adds n rows of dim values ([n][dim] row-major).
  void add(const float* rows_NxD, int64_t n);
  // Merges another worker's statistics (Chan et al.'s parallel formula): the result equals the
  // statistics of the pooled rows.
  void merge(const FeatureStats& other);

 private:
  std::vector<double> mean_;
  std::vector<double> m2_;  // sum of squared deviations from the mean
  int64_t count_ = 0;
};

// Frozen statistics applied to features: z = (x - mean) / max(sqrt(var), 1e-7).
class FeatureNormalizer {
 public:
  FeatureNormalizer() = default;  // dim 0: must be set before use
  FeatureNormalizer(std::vector<float> mean, std::vector<float> var);
  // The identity (mean 0, var 1), as used before statistics exist.
  static FeatureNormalizer identity(int dim);
  static FeatureNormalizer from_stats(const FeatureStats& stats);

  int dim() const { return static_cast<int>(mean_.size()); }
  const std::vector<float>& mean() const { return mean_; }
  const std::vector<float>& var() const { return var_; }
  // out[i] = (in[i] - mean[i]) / max(sqrt(var[i]), 1e-7) for i < dim. `in` and `out` may alias.
  void apply(const float* in, float* out) const;

 private:
  std::vector<float> mean_, var_, denom_;
};

}  // namespace nammkit
