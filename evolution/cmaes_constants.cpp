#include "evolution/cmaes_constants.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace nammkit::evo {

CmaesConstants compute_constants(int n, int lambda, int mu, bool separable, bool lazy_eigen) {
  if (n < 1 || lambda < 2 || mu < 1 || mu > lambda)
    fail("cmaes constants", "n/lambda/mu: invalid (" + std::to_string(n) + ", " + std::to_string(lambda) + ", " +
                                std::to_string(mu) + ")");
  CmaesConstants k;
  k.n = n;
  k.lambda = lambda;
  k.mu = mu;
  const double N = n;

  // Raw weights w'_i = ln((lambda+1)/2) - ln(i+1). The elite (i < mu) must all be positive.
  std::vector<double> raw(lambda);
  for (int i = 0; i < lambda; ++i) raw[i] = std::log((lambda + 1) / 2.0) - std::log(i + 1.0);
  if (raw[mu - 1] <= 0.0) fail("cmaes constants", "mu: elite member " + std::to_string(mu) + " has weight <= 0");

  double sum_pos = 0, sum_pos_sq = 0, sum_neg = 0, sum_neg_sq = 0;
  for (int i = 0; i < mu; ++i) {
    sum_pos += raw[i];
    sum_pos_sq += raw[i] * raw[i];
  }
  // With mu below the zero crossing (elite ratio < 0.5) the positive raw weights between mu and the
  // crossing get weight 0: they are neither recombined nor actively penalised.
  for (int i = mu; i < lambda; ++i)
    if (raw[i] < 0) {
      sum_neg += raw[i];
      sum_neg_sq += raw[i] * raw[i];
    }
  k.mu_eff = sum_pos * sum_pos / sum_pos_sq;
  k.mu_eff_neg = sum_neg_sq > 0 ? sum_neg * sum_neg / sum_neg_sq : 0.0;

  k.c_sigma = (k.mu_eff + 2.0) / (N + k.mu_eff + 5.0);
  k.d_sigma = 1.0 + 2.0 * std::max(0.0, std::sqrt((k.mu_eff - 1.0) / (N + 1.0)) - 1.0) + k.c_sigma;
  k.c_c = (4.0 + k.mu_eff / N) / (N + 4.0 + 2.0 * k.mu_eff / N);
  k.c1 = 2.0 / ((N + 1.3) * (N + 1.3) + k.mu_eff);
  k.cmu = std::min(1.0 - k.c1, 2.0 * (k.mu_eff - 2.0 + 1.0 / k.mu_eff) / ((N + 2.0) * (N + 2.0) + k.mu_eff));
  if (separable) {
    const double scale = (N + 2.0) / 3.0;
    k.c1 = std::min(1.0, k.c1 * scale);
    k.cmu = std::min(1.0 - k.c1, k.cmu * scale);
  }
  k.chi_n = std::sqrt(N) * (1.0 - 1.0 / (4.0 * N) + 1.0 / (21.0 * N * N));

  // alpha_neg: the three bounds of the tutorial (eq. 50-53): alpha_mu^-, alpha_mueff^-, alpha_posdef^-.
  // With cmu == 0 (n = 1 edge cases) the first bound is unbounded.
  double a_mu = k.cmu > 0 ? 1.0 + k.c1 / k.cmu : INFINITY;
  double a_mueff = 1.0 + 2.0 * k.mu_eff_neg / (k.mu_eff + 2.0);
  double a_posdef = k.cmu > 0 ? (1.0 - k.c1 - k.cmu) / (N * k.cmu) : INFINITY;
  k.alpha_neg = std::min({a_mu, a_mueff, a_posdef});
  if (!std::isfinite(k.alpha_neg)) k.alpha_neg = 0.0;

  k.weights.assign(lambda, 0.0);
  for (int i = 0; i < mu; ++i) k.weights[i] = raw[i] / sum_pos;
  for (int i = mu; i < lambda; ++i)
    if (raw[i] < 0 && sum_neg < 0) k.weights[i] = k.alpha_neg * raw[i] / -sum_neg;
  k.weights_truncated.assign(k.weights.begin(), k.weights.begin() + mu);
  k.weight_sum = 0;
  for (double w : k.weights) k.weight_sum += w;

  k.eigen_gap = 1;
  if (lazy_eigen && !separable) {
    double gap = std::floor(1.0 / (10.0 * N * (k.c1 + k.cmu)));
    k.eigen_gap = static_cast<int>(std::clamp(gap, 1.0, 1e9));
  }
  return k;
}

}  // namespace nammkit::evo
