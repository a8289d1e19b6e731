#include "evolution/test_functions.h"

#include <cmath>
#include <numbers>
#include <vector>

#include "evolution/cmaes.h"

namespace nammkit::evo {

double sphere(const Eigen::VectorXd& x) { return x.squaredNorm(); }

double ellipsoid(const Eigen::VectorXd& x) {
  const Eigen::Index n = x.size();
  double f = 0;
  for (Eigen::Index i = 0; i < n; ++i) {
    const double e = n > 1 ? 6.0 * static_cast<double>(i) / static_cast<double>(n - 1) : 0.0;
    f += std::pow(10.0, e) * x[i] * x[i];
  }
  return f;
}

double tablet(const Eigen::VectorXd& x) {
  if (x.size() == 0) return 0.0;
  return 1e6 * x[0] * x[0] + x.tail(x.size() - 1).squaredNorm();
}

double cigar(const Eigen::VectorXd& x) {
  if (x.size() == 0) return 0.0;
  return x[0] * x[0] + 1e6 * x.tail(x.size() - 1).squaredNorm();
}

double rosenbrock(const Eigen::VectorXd& x) {
  double f = 0;
  for (Eigen::Index i = 0; i + 1 < x.size(); ++i) {
    const double a = x[i] * x[i] - x[i + 1], b = x[i] - 1.0;
    f += 100.0 * a * a + b * b;
  }
  return f;
}

double rastrigin(const Eigen::VectorXd& x) {
  double f = 10.0 * static_cast<double>(x.size());
  for (Eigen::Index i = 0; i < x.size(); ++i) f += x[i] * x[i] - 10.0 * std::cos(2.0 * std::numbers::pi * x[i]);
  return f;
}

MinimiseResult minimise(const std::function<double(const Eigen::VectorXd&)>& f, const CmaesSettings& settings,
                        double target, int64_t max_evaluations) {
  Cmaes es(settings);
  MinimiseResult result;
  std::vector<double> fitness;
  while (es.state().evaluations < max_evaluations && !es.stopped()) {
    const Eigen::MatrixXd& X = es.ask();
    fitness.resize(X.cols());
    for (Eigen::Index k = 0; k < X.cols(); ++k) fitness[k] = -f(X.col(k));
    es.tell(fitness);
    if (-es.state().best_fitness < target) {
      result.reached = true;
      break;
    }
  }
  result.evaluations = es.state().evaluations;
  result.best_f = -es.state().best_fitness;
  result.restarts = es.state().restarts;
  result.stop_reason = es.stop_reason();
  return result;
}

}  // namespace nammkit::evo
