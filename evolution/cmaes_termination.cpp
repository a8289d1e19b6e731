#include "evolution/cmaes_termination.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace nammkit::evo {

namespace {

double median_of(std::vector<double> v) {
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  double hi = v[mid];
  if (v.size() % 2 == 1) return hi;
  double lo = *std::max_element(v.begin(), v.begin() + mid);
  return 0.5 * (lo + hi);
}

// Entry i of the covariance diagonal.
double c_diag(const CmaesState& s, int i) { return s.separable ? s.C(i, 0) : s.C(i, i); }

bool tolfun(const CmaesState& s, const CmaesConstants& k, double tol) {
  // Range of the best fitness over the last 10 + ceil(30 n / lambda) generations, and the range of
  // the current generation, both below tol.
  const size_t window = 10 + static_cast<size_t>(std::ceil(30.0 * k.n / k.lambda));
  if (s.best_history.size() < window) return false;
  auto first = s.best_history.end() - static_cast<std::ptrdiff_t>(window);
  auto [lo, hi] = std::minmax_element(first, s.best_history.end());
  return *hi - *lo < tol && s.last_generation_range < tol;
}

bool tolx(const CmaesState& s, double tol) {
  for (int i = 0; i < s.n; ++i)
    if (s.sigma * std::abs(s.p_c[i]) >= tol || s.sigma * std::sqrt(c_diag(s, i)) >= tol) return false;
  return true;
}

bool condition(const CmaesState& s, double max_condition) {
  const double dmax = s.D.maxCoeff(), dmin = s.D.minCoeff();
  return dmax * dmax > max_condition * dmin * dmin;
}

bool no_effect_axis(const CmaesState& s) {
  // Principal axis number (generation mod n), scaled to 0.1 sigma: the mean must move.
  const int i = static_cast<int>(s.generation % s.n);
  const double step = 0.1 * s.sigma * s.D[i];
  for (int j = 0; j < s.n; ++j) {
    const double axis = s.separable ? (j == i ? 1.0 : 0.0) : s.B(j, i);
    if (s.mean[j] + step * axis != s.mean[j]) return false;
  }
  return true;
}

bool no_effect_coord(const CmaesState& s) {
  for (int i = 0; i < s.n; ++i)
    if (s.mean[i] + 0.2 * s.sigma * std::sqrt(c_diag(s, i)) == s.mean[i]) return true;
  return false;
}

// pycma's `tolstagnation` (cma/evolution_strategy.py, _CMAStopDict; option default in
// cma/options_parameters.py), rewritten for maximised fitness. Hansen's tutorial (B.3) states the idea
// without pycma's guards, and without them the criterion fires on ill-conditioned problems while sigma
// is still adapting (a 40-D tablet stopped at generation 200 at f = 95.7 in 1 run of 11). With g the
// generations of this run, n the dimension and lambda the population size:
//
//   T = floor(100 + 100 n^1.5 / lambda)       the stagnation period (pycma's default tolstagnation)
//   h_best, h_med = best and median fitness of every 5th generation (g mod 5 == 0), newest first
//                   (pycma's fit.histbest / fit.histmedian; ours are kept per generation and thinned here)
//   l = floor(max(T / 10, |h_best| / 10))      entries per half: "/ 5" for the thinning, "/ 2" for the
//                                              two halves compared; at least 10% of the history each
//
//   stop iff  g > n (5 + 100 / lambda)
//        and  g - g_best > T / 2              the run's best was found in the first half of the period
//                                             (g_best = first generation of this run with the best
//                                             fitness; pycma: (countevals - best.evals) / popsize)
//        and  |h_best| > 100                  (so at least 505 generations)
//        and  max(T / 10, |h_best| / 10) <= g and 2 l < |h_best|
//        and  median(h_med[0, l)) <= median(h_med[l, 2l))     recent not better than the half before
//        and  median(h_best[0, l)) <= median(h_best[l, 2l))   ("<=": a flat fitness counts as stagnant)
//
// The guard on g_best is what keeps a converging run alive: on the tablet the best improves every few
// generations, so g - g_best never exceeds T / 2. Our histories hold the last kMaxHistory = 20000
// generations (pycma's 2e4 thinned entries cover 1e5): past that g_best is the best within the window,
// which can only make the criterion later, never earlier.
bool stagnation(const CmaesState& s, const CmaesConstants& k) {
  const double n = k.n, lambda = k.lambda;
  const int64_t g = s.generation;
  const double period = std::floor(100.0 + 100.0 * std::pow(n, 1.5) / lambda);
  if (static_cast<double>(g) <= n * (5.0 + 100.0 / lambda)) return false;
  const size_t have = std::min(s.best_history.size(), s.median_history.size());
  if (have == 0 || static_cast<int64_t>(have) > g) return false;
  const int64_t first_generation = g - static_cast<int64_t>(have) + 1;  // generation of history entry 0
  const auto best_it = std::max_element(s.best_history.end() - static_cast<std::ptrdiff_t>(have), s.best_history.end());
  const int64_t best_generation =
      first_generation + (best_it - (s.best_history.end() - static_cast<std::ptrdiff_t>(have)));
  if (static_cast<double>(g - best_generation) <= period / 2) return false;
  std::vector<double> h_best, h_med;  // every 5th generation, newest first
  for (size_t j = have; j-- > 0;) {
    if ((first_generation + static_cast<int64_t>(j)) % 5 != 0) continue;
    h_best.push_back(s.best_history[s.best_history.size() - have + j]);
    h_med.push_back(s.median_history[s.median_history.size() - have + j]);
  }
  if (h_best.size() <= 100) return false;
  const double l_real = std::max(period / 10.0, static_cast<double>(h_best.size()) / 10.0);
  if (l_real > static_cast<double>(g)) return false;
  const size_t l = static_cast<size_t>(l_real);
  if (l == 0 || 2 * l >= h_best.size()) return false;
  auto not_better = [l](const std::vector<double>& h) {
    const double recent = median_of(std::vector<double>(h.begin(), h.begin() + static_cast<std::ptrdiff_t>(l)));
    const double before = median_of(std::vector<double>(h.begin() + static_cast<std::ptrdiff_t>(l),
                                                        h.begin() + static_cast<std::ptrdiff_t>(2 * l)));
    return recent <= before;
  };
  return not_better(h_med) && not_better(h_best);
}

}  // namespace

std::string check_termination(const CmaesState& s, const CmaesConstants& k, const CmaesSettings& settings) {
  const StopSettings& stop = settings.stop;
  if (tolfun(s, k, stop.tolfun)) return "tolfun";
  if (tolx(s, stop.tolx_factor * settings.sigma0)) return "tolx";
  if (condition(s, stop.max_condition)) return "condition";
  if (stop.no_effect_axis && no_effect_axis(s)) return "no_effect_axis";
  if (stop.no_effect_coord && no_effect_coord(s)) return "no_effect_coord";
  if (stop.stagnation && stagnation(s, k)) return "stagnation";
  return "";
}

}  // namespace nammkit::evo
