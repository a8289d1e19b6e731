#include "namm/normalization.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace nammkit {

FeatureStats::FeatureStats(int dim) : mean_(dim, 0.0), m2_(dim, 0.0) {}

FeatureStats::FeatureStats(std::vector<double> mean, std::vector<double> var, int64_t count)
    : mean_(std::move(mean)), m2_(std::move(var)), count_(count) {
  if (mean_.size() != m2_.size()) fail("FeatureStats", "mean and var differ in size");
  if (count_ < 0) fail("FeatureStats", "count: negative");
  for (double& v : m2_) v *= static_cast<double>(count_);
}

FeatureStats FeatureStats::from_moments(std::vector<double> mean, std::vector<double> m2, int64_t count) {
  if (mean.size() != m2.size()) fail("FeatureStats", "mean and M2 differ in size");
  if (count < 0) fail("FeatureStats", "count: negative");
  FeatureStats s;
  s.mean_ = std::move(mean);
  s.m2_ = std::move(m2);
  s.count_ = count;
  return s;
}

std::vector<double> FeatureStats::variance() const {
  std::vector<double> v(m2_.size(), 0.0);
  if (count_ > 0)
    for (size_t i = 0; i < v.size(); ++i) v[i] = m2_[i] / static_cast<double>(count_);
  return v;
}

void FeatureStats::add(const float* rows_NxD, int64_t n) {
  if (n <= 0) return;
  // Two-pass statistics of the batch, then one merge: stable even when the mean is large.
  const int d = dim();
  FeatureStats batch(d);
  batch.count_ = n;
  for (int64_t r = 0; r < n; ++r)
    for (int i = 0; i < d; ++i) batch.mean_[i] += rows_NxD[r * d + i];
  for (int i = 0; i < d; ++i) batch.mean_[i] /= static_cast<double>(n);
  for (int64_t r = 0; r < n; ++r)
    for (int i = 0; i < d; ++i) {
      const double dx = rows_NxD[r * d + i] - batch.mean_[i];
      batch.m2_[i] += dx * dx;
    }
  merge(batch);
}

void FeatureStats::merge(const FeatureStats& other) {
  if (other.count_ == 0) return;
  if (count_ == 0) {
    *this = other;
    return;
  }
  if (other.dim() != dim())
    fail("FeatureStats::merge", "dimension mismatch: " + std::to_string(dim()) + " vs " + std::to_string(other.dim()));
  const double na = static_cast<double>(count_), nb = static_cast<double>(other.count_), n = na + nb;
  for (int i = 0; i < dim(); ++i) {
    const double delta = other.mean_[i] - mean_[i];
    mean_[i] += delta * nb / n;
    m2_[i] += other.m2_[i] + delta * delta * na * nb / n;
  }
  count_ += other.count_;
}

FeatureNormalizer::FeatureNormalizer(std::vector<float> mean, std::vector<float> var)
    : mean_(std::move(mean)), var_(std::move(var)) {
  if (mean_.size() != var_.size())
    fail("FeatureNormalizer",
         "mean has " + std::to_string(mean_.size()) + " values, var " + std::to_string(var_.size()));
  denom_.resize(var_.size());
  // The reference divides by max(sqrt(var), 1e-7), so a constant bin does not explode to inf.
  for (size_t i = 0; i < var_.size(); ++i) denom_[i] = std::max(std::sqrt(std::max(var_[i], 0.0f)), 1e-7f);
}

FeatureNormalizer FeatureNormalizer::identity(int dim) {
  return FeatureNormalizer(std::vector<float>(dim, 0.0f), std::vector<float>(dim, 1.0f));
}

FeatureNormalizer FeatureNormalizer::from_stats(const FeatureStats& stats) {
  std::vector<float> mean(stats.mean().begin(), stats.mean().end());
  std::vector<double> v = stats.variance();
  return FeatureNormalizer(std::move(mean), std::vector<float>(v.begin(), v.end()));
}

void FeatureNormalizer::apply(const float* in, float* out) const {
  for (size_t i = 0; i < mean_.size(); ++i) out[i] = (in[i] - mean_[i]) / denom_[i];
}

}  // namespace nammkit
