#include "namm/recency.h"

#include <cmath>

#include "core/error.h"

namespace nammkit {

void RecencyConfig::validate(const std::string& where) const {
  if (dim < 2 || dim % 2 != 0) fail(where, "recency_dim: expected an even value >= 2, got " + std::to_string(dim));
  if (!(max_freq > 0.0) || !std::isfinite(max_freq))
    fail(where, "recency_max_freq: expected a positive value, got " + std::to_string(max_freq));
}

void recency_embedding(const RecencyConfig& config, int64_t r, float* out) {
  const int half = config.dim / 2;
  for (int k = 0; k < half; ++k) {
    // Double precision: r reaches tens of thousands, where a float angle would lose digits.
    const double angle = static_cast<double>(r) * std::pow(config.max_freq, -static_cast<double>(k) / half);
    out[k] = static_cast<float>(std::sin(angle));
    out[half + k] = static_cast<float>(std::cos(angle));
  }
}

}  // namespace nammkit
