// Helpers of the tests that compare two runtimes on the same model (GPU session vs CPU session, lockstep
// vs alone): random prompts and the relative difference of two logit rows.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "transformer/model.h"

namespace nammkit::testing {

// max |a - b| / max |b| over n values.
inline double relative_error(const float* a, const float* b, int n) {
  double diff = 0, ref = 0;
  for (int i = 0; i < n; ++i) {
    diff = std::max(diff, double(std::fabs(a[i] - b[i])));
    ref = std::max(ref, double(std::fabs(b[i])));
  }
  return diff / std::max(ref, 1e-12);
}

// n token ids uniform in [1, vocab) (0 is left out: a BOS or padding id in some vocabularies).
inline std::vector<int32_t> random_tokens(const Model& m, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> u(1, m.config.vocab_size - 1);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t& x : t) x = u(rng);
  return t;
}

}  // namespace nammkit::testing
