// Standard benchmark functions for checking and benchmarking the CMA-ES (all minimised, optimum 0).
// Used by tests/test_evolution_*.cpp and bench/bench_cmaes.cpp.
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <functional>
#include <string>

#include "evolution/cmaes_settings.h"

namespace nammkit::evo {

double sphere(const Eigen::VectorXd& x);
// f = sum 10^(6 (i-1)/(n-1)) x_i^2: condition number 1e6, separable.
double ellipsoid(const Eigen::VectorXd& x);
// f = 1e6 x_1^2 + sum_{i>1} x_i^2: one short axis, condition 1e6.
double tablet(const Eigen::VectorXd& x);
// f = x_1^2 + 1e6 sum_{i>1} x_i^2: one long axis, condition 1e6.
double cigar(const Eigen::VectorXd& x);
double rosenbrock(const Eigen::VectorXd& x);
double rastrigin(const Eigen::VectorXd& x);

struct MinimiseResult {
  int64_t evaluations = 0;  // at the generation that first reached the target (or at the end)
  bool reached = false;     // f < target
  double best_f = 0;
  int restarts = 0;
  std::string stop_reason;  // why the run ended when the target was not reached
};

// Runs the strategy on f (maximising -f) until the best f < target, the evaluation budget is spent or
// the strategy stops. Evaluations are counted in whole generations, as the reference figures are.
MinimiseResult minimise(const std::function<double(const Eigen::VectorXd&)>& f, const CmaesSettings& settings,
                        double target, int64_t max_evaluations);

}  // namespace nammkit::evo
