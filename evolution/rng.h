// The one random source of the evolution engine: a 64-bit Mersenne Twister plus a cache-free normal
// generator, so that its whole state is the engine state and can be saved and restored bit-for-bit.
//
// std::normal_distribution is deliberately not used: it keeps a spare value between calls (state that
// is implementation-defined and not serialisable) and its algorithm differs between standard libraries.
#pragma once
#include <cstdint>
#include <random>
#include <string>

namespace nammkit::evo {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : engine_(seed) {}

  // Uniform in [0, 1) with 53 random bits.
  double uniform();
  // Uniform in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Fills out[0..count) with independent N(0, 1) draws (Box-Muller; pairs are used whole, an odd
  // tail uses the cosine branch only, so nothing is carried over to the next call).
  void fill_normal(double* out, size_t count);
  double normal();

  // The exact engine state as text (the standard operator<< format) and back. restore() throws
  // nammkit::Error("<where>: <field>: ...") on a malformed state.
  std::string save() const;
  void restore(const std::string& state, const std::string& where);

  bool operator==(const Rng& other) const { return engine_ == other.engine_; }

 private:
  std::mt19937_64 engine_;
};

// A seed derived from a base seed and a stream index (splitmix64 mixing), e.g. per generation.
uint64_t derive_seed(uint64_t seed, uint64_t stream);

}  // namespace nammkit::evo
