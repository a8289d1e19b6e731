#include "evolution/cmaes_termination.h"

#include <algorithm>
#include <cmath>
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

bool stagnation(const CmaesState& s, const CmaesConstants& k) {
  // Over the last 20% of generations (at least 120 + 30 n / lambda, at most kMaxHistory): the median
  // of the most recent 30% of the best and of the median fitness values is not better than the median
  // of the oldest 30%, for both histories.
  const size_t min_window = 120 + static_cast<size_t>(std::ceil(30.0 * k.n / k.lambda));
  const size_t have = s.best_history.size();
  if (have < min_window) return false;
  size_t window = std::max(min_window, static_cast<size_t>(std::ceil(0.2 * static_cast<double>(s.generation))));
  window = std::min(window, have);
  const size_t part = std::max<size_t>(1, static_cast<size_t>(0.3 * static_cast<double>(window)));
  auto stagnant = [&](const std::vector<double>& h) {
    auto begin = h.end() - static_cast<std::ptrdiff_t>(window);
    std::vector<double> old(begin, begin + static_cast<std::ptrdiff_t>(part));
    std::vector<double> recent(h.end() - static_cast<std::ptrdiff_t>(part), h.end());
    return median_of(recent) <= median_of(old);
  };
  return stagnant(s.best_history) && stagnant(s.median_history);
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
