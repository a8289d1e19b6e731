#include "evolution/cmaes_state.h"

#include <cmath>

#include "core/error.h"

namespace nammkit::evo {

namespace {

template <typename M>
void check_finite(const M& m, const std::string& where, const char* field) {
  if (!m.allFinite()) fail(where, std::string(field) + ": contains a non-finite value");
}

template <typename M>
void check_shape(const M& m, Eigen::Index rows, Eigen::Index cols, const std::string& where, const char* field) {
  if (m.rows() != rows || m.cols() != cols)
    fail(where, std::string(field) + ": shape " + std::to_string(m.rows()) + "x" + std::to_string(m.cols()) +
                    ", expected " + std::to_string(rows) + "x" + std::to_string(cols));
}

}  // namespace

void validate_state(const CmaesState& s, const std::string& where) {
  if (s.n < 1) fail(where, "n: must be >= 1");
  if (s.lambda < 2) fail(where, "lambda: must be >= 2");
  if (s.generation < 0 || s.total_generations < s.generation || s.evaluations < 0 || s.restarts < 0)
    fail(where, "generation: counters are inconsistent");
  const Eigen::Index n = s.n;
  check_shape(s.mean, n, 1, where, "mean");
  check_shape(s.p_sigma, n, 1, where, "p_sigma");
  check_shape(s.p_c, n, 1, where, "p_c");
  check_shape(s.D, n, 1, where, "D");
  if (s.separable) {
    check_shape(s.C, n, 1, where, "C");
    check_shape(s.B, 0, 0, where, "B");
  } else {
    check_shape(s.C, n, n, where, "C");
    check_shape(s.B, n, n, where, "B");
  }
  check_finite(s.mean, where, "mean");
  check_finite(s.p_sigma, where, "p_sigma");
  check_finite(s.p_c, where, "p_c");
  check_finite(s.C, where, "C");
  check_finite(s.B, where, "B");
  check_finite(s.D, where, "D");
  if (!(s.sigma > 0) || !std::isfinite(s.sigma)) fail(where, "sigma: must be finite and > 0");
  if (s.eigen_generation < 0 || s.eigen_generation > s.generation) fail(where, "eigen_generation: out of range");
  if (s.has_best) {
    check_shape(s.best_x, n, 1, where, "best_x");
    check_finite(s.best_x, where, "best_x");
    if (!std::isfinite(s.best_fitness)) fail(where, "best_fitness: not finite");
  } else if (s.best_x.size() != 0) {
    fail(where, "best_x: present although has_best is false");
  }
  if (s.best_history.size() != s.median_history.size() || s.best_history.size() > CmaesState::kMaxHistory)
    fail(where, "best_history: size inconsistent with median_history");
  for (double v : s.best_history)
    if (!std::isfinite(v)) fail(where, "best_history: contains a non-finite value");
  for (double v : s.median_history)
    if (!std::isfinite(v)) fail(where, "median_history: contains a non-finite value");
  if (!std::isfinite(s.last_generation_range)) fail(where, "last_generation_range: not finite");
}

}  // namespace nammkit::evo
