// NAMM's recency feature (spec §2.3): the age of a cached token, r = pos_newest - pos_j, embedded as
// [sin(r f_0), ..., sin(r f_{d/2-1}), cos(r f_0), ..., cos(r f_{d/2-1})] with f_k = max_freq^(-k/(d/2)).
// It is prepended to the spectrogram features and is not normalised.
#pragma once
#include <cstdint>
#include <string>

namespace nammkit {

struct RecencyConfig {
  int dim = 8;                // even; half sines, half cosines
  double max_freq = 50000.0;  // f_k = max_freq^(-k / (dim/2)): 1, 0.066874, 0.0044721, 0.00029907

  void validate(const std::string& where) const;
};

// Writes the `config.dim` values of the embedding of age `r` (>= 0) to `out`.
void recency_embedding(const RecencyConfig& config, int64_t r, float* out);

}  // namespace nammkit
