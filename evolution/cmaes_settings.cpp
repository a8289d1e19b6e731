#include "evolution/cmaes_settings.h"

#include <cmath>

#include "core/error.h"

namespace nammkit::evo {

CmaesSettings namm_reference_settings(int n, uint64_t seed) {
  CmaesSettings s;
  s.n = n;
  s.lambda = 32;
  s.elite_ratio = 0.5;
  s.sigma0 = 0.065;
  s.seed = seed;
  s.c_m = 1.0;
  s.reference_initial_jitter = true;
  return s;
}

int default_lambda(int n) { return 4 + static_cast<int>(std::floor(3.0 * std::log(static_cast<double>(n)))); }

void validate_settings(const CmaesSettings& s) {
  const std::string where = "cmaes settings";
  if (s.n < 1) fail(where, "n: must be >= 1, got " + std::to_string(s.n));
  if (s.lambda != 0 && s.lambda < 2) fail(where, "lambda: must be 0 (default) or >= 2");
  if (!(s.elite_ratio > 0.0 && s.elite_ratio <= 0.5))
    fail(where, "elite_ratio: must be in (0, 0.5] (the elite must have positive recombination weights)");
  if (!(s.sigma0 > 0.0) || !std::isfinite(s.sigma0)) fail(where, "sigma0: must be finite and > 0");
  if (!s.mean0.empty() && static_cast<int>(s.mean0.size()) != s.n)
    fail(where, "mean0: has " + std::to_string(s.mean0.size()) + " values, n is " + std::to_string(s.n));
  for (double v : s.mean0)
    if (!std::isfinite(v)) fail(where, "mean0: not finite");
  if (!(s.c_m > 0.0 && s.c_m <= 1.0)) fail(where, "c_m: must be in (0, 1]");
  if (s.restarts.enabled) {
    if (s.restarts.max_restarts < 0) fail(where, "restarts.max_restarts: must be >= 0");
    if (!(s.restarts.lambda_factor >= 1.0)) fail(where, "restarts.lambda_factor: must be >= 1");
    if (s.restarts.box_lower > s.restarts.box_upper) fail(where, "restarts.box: lower > upper");
  }
}

}  // namespace nammkit::evo
