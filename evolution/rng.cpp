#include "evolution/rng.h"

#include <cmath>
#include <numbers>
#include <sstream>

#include "core/byte_io.h"
#include "core/error.h"

namespace nammkit::evo {

double Rng::uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

void Rng::fill_normal(double* out, size_t count) {
  size_t i = 0;
  auto pair = [this](double& c, double& s) {
    double u1 = uniform();
    double u2 = uniform();
    double r = std::sqrt(-2.0 * std::log(1.0 - u1));  // 1 - u1 is in (0, 1]: log is finite
    double t = 2.0 * std::numbers::pi * u2;
    c = r * std::cos(t);
    s = r * std::sin(t);
  };
  for (; i + 1 < count; i += 2) pair(out[i], out[i + 1]);
  if (i < count) {
    double unused;
    pair(out[i], unused);
  }
}

double Rng::normal() {
  double v;
  fill_normal(&v, 1);
  return v;
}

std::string Rng::save() const {
  std::ostringstream out;
  out << engine_;
  return out.str();
}

void Rng::restore(const std::string& state, const std::string& where) {
  std::istringstream in(state);
  std::mt19937_64 engine;
  in >> engine;
  if (in.fail()) fail(where, "rng_state: malformed Mersenne Twister state");
  in >> std::ws;
  if (!in.eof()) fail(where, "rng_state: trailing characters after the engine state");
  engine_ = engine;
}

// The splitmix64 sequence started at `seed`, element `stream` (splitmix64 adds the golden-ratio
// increment itself): the same values as the former hand-written mix.
uint64_t derive_seed(uint64_t seed, uint64_t stream) { return splitmix64(seed + 0x9E3779B97F4A7C15ull * stream); }

}  // namespace nammkit::evo
