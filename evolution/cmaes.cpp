#include "evolution/cmaes.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "evolution/cmaes_termination.h"

namespace nammkit::evo {

namespace {

int mu_for(int lambda, double elite_ratio) { return std::max(1, static_cast<int>(std::floor(lambda * elite_ratio))); }

}  // namespace

Cmaes::Cmaes(CmaesSettings settings) : settings_(std::move(settings)) {
  validate_settings(settings_);
  state_.n = settings_.n;
  state_.separable = settings_.separable;
  state_.rng = Rng(settings_.seed);
  Eigen::VectorXd mean0 = settings_.mean0.empty()
                              ? Eigen::VectorXd::Zero(settings_.n)
                              : Eigen::Map<const Eigen::VectorXd>(settings_.mean0.data(), settings_.n).eval();
  start(settings_.lambda > 0 ? settings_.lambda : default_lambda(settings_.n), mean0);
}

void Cmaes::start(int lambda, const Eigen::VectorXd& mean) {
  const int n = settings_.n;
  constants_ =
      compute_constants(n, lambda, mu_for(lambda, settings_.elite_ratio), settings_.separable, settings_.lazy_eigen);
  CmaesState& s = state_;
  s.lambda = lambda;
  s.generation = 0;
  s.mean = mean;
  s.sigma = settings_.sigma0;
  s.p_sigma = Eigen::VectorXd::Zero(n);
  s.p_c = Eigen::VectorXd::Zero(n);
  s.D = Eigen::VectorXd::Ones(n);
  s.eigen_generation = 0;
  s.decomposition_pending = false;
  if (settings_.separable) {
    s.C = Eigen::MatrixXd::Ones(n, 1);
    s.B.resize(0, 0);
  } else {
    // C = I is its own decomposition (B = I, D = 1): no eigensolver call needed at generation 0.
    s.C = Eigen::MatrixXd::Identity(n, n);
    s.B = Eigen::MatrixXd::Identity(n, n);
    if (settings_.reference_initial_jitter) {
      s.C.array() += 1e-6;
      s.decomposition_pending = true;
    }
  }
  s.best_history.clear();
  s.median_history.clear();
  s.last_generation_range = 0;
  asked_ = false;
}

void Cmaes::decompose() {
  CmaesState& s = state_;
  // Symmetrise first (GEMM rounding makes C_ij and C_ji differ in the last bits), as the reference does.
  Eigen::MatrixXd sym = 0.5 * (s.C + s.C.transpose());
  s.C.swap(sym);
  sym.resize(0, 0);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(s.C);
  if (solver.info() != Eigen::Success) fail("cmaes", "C: eigendecomposition did not converge");
  s.D = solver.eigenvalues().cwiseMax(1e-20).cwiseSqrt();
  s.B = solver.eigenvectors();
  s.eigen_generation = s.generation;
  s.decomposition_pending = false;
  ++s.eigen_count;
}

const Eigen::MatrixXd& Cmaes::ask() {
  if (asked_) return X_;
  CmaesState& s = state_;
  const int n = s.n, lambda = s.lambda;
  if (settings_.separable) {
    s.D = s.C.col(0).cwiseMax(1e-20).cwiseSqrt();
  } else if (s.decomposition_pending || s.generation - s.eigen_generation >= constants_.eigen_gap) {
    decompose();
  }
  Z_.resize(n, lambda);
  s.rng.fill_normal(Z_.data(), static_cast<size_t>(n) * lambda);  // column-major: member by member
  if (settings_.separable) {
    Y_ = s.D.asDiagonal() * Z_;
  } else {
    Y_.noalias() = s.B * (s.D.asDiagonal() * Z_);
  }
  X_ = (s.sigma * Y_).colwise() + s.mean;
  asked_ = true;
  return X_;
}

void Cmaes::tell(std::span<const double> fitness) {
  if (!asked_) fail("cmaes", "tell: called without a pending ask()");
  CmaesState& s = state_;
  if (static_cast<int>(fitness.size()) != s.lambda)
    fail("cmaes",
         "tell: got " + std::to_string(fitness.size()) + " fitness values, lambda is " + std::to_string(s.lambda));
  for (size_t i = 0; i < fitness.size(); ++i)
    if (!std::isfinite(fitness[i])) fail("cmaes", "tell: fitness of member " + std::to_string(i) + " is not finite");

  // Descending fitness; ties keep member order so the ranking is deterministic.
  std::vector<int> order(s.lambda);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return fitness[a] > fitness[b]; });

  s.evaluations += s.lambda;
  ++s.generation;
  ++s.total_generations;
  if (!s.has_best || fitness[order[0]] > s.best_fitness) {
    s.has_best = true;
    s.best_fitness = fitness[order[0]];
    s.best_x = X_.col(order[0]);
  }

  const auto& k = constants_;
  Eigen::VectorXd y_w = Eigen::VectorXd::Zero(s.n), z_w = Eigen::VectorXd::Zero(s.n);
  for (int i = 0; i < k.mu; ++i) {
    y_w.noalias() += k.weights_truncated[i] * Y_.col(order[i]);
    z_w.noalias() += k.weights_truncated[i] * Z_.col(order[i]);
  }
  s.mean.noalias() += settings_.c_m * s.sigma * y_w;

  const double ps_coef = std::sqrt(k.c_sigma * (2.0 - k.c_sigma) * k.mu_eff);
  if (settings_.separable) {
    s.p_sigma = (1.0 - k.c_sigma) * s.p_sigma + ps_coef * z_w;
  } else {
    s.p_sigma = (1.0 - k.c_sigma) * s.p_sigma + ps_coef * (s.B * z_w);
  }
  const double ps_norm = s.p_sigma.norm();
  const double ps_bias = std::sqrt(1.0 - std::pow(1.0 - k.c_sigma, 2.0 * static_cast<double>(s.generation)));
  const double h_sigma = ps_norm / ps_bias < (1.4 + 2.0 / (s.n + 1.0)) * k.chi_n ? 1.0 : 0.0;
  s.p_c = (1.0 - k.c_c) * s.p_c + h_sigma * std::sqrt(k.c_c * (2.0 - k.c_c) * k.mu_eff) * y_w;

  if (settings_.separable) {
    update_separable(order, h_sigma);
  } else {
    update_full(order, h_sigma);
  }
  s.sigma *= std::exp((k.c_sigma / k.d_sigma) * (ps_norm / k.chi_n - 1.0));
  if (!std::isfinite(s.sigma) || s.sigma <= 0) fail("cmaes", "sigma: became " + std::to_string(s.sigma));

  record_history(fitness, order);
  asked_ = false;
  s.stop_reason = check_termination(s, k, settings_);
  if (!s.stop_reason.empty()) maybe_restart();
}

// Active weights: the negative ones rescaled by n / ||C^{-1/2} y_i||^2 = n / ||z_i||^2.
static std::vector<double> active_weights(const CmaesConstants& k, const Eigen::MatrixXd& Z,
                                          const std::vector<int>& order) {
  std::vector<double> w(k.weights);
  for (int i = 0; i < k.lambda; ++i)
    if (w[i] < 0) w[i] *= k.n / std::max(Z.col(order[i]).squaredNorm(), 1e-300);
  return w;
}

void Cmaes::update_full(const std::vector<int>& order, double h_sigma) {
  CmaesState& s = state_;
  const auto& k = constants_;
  const std::vector<double> w = active_weights(k, Z_, order);
  const double decay = 1.0 + k.c1 * (1.0 - h_sigma) * k.c_c * (2.0 - k.c_c) - k.c1 - k.cmu * k.weight_sum;
  // Members with weight 0 (between mu and the zero crossing) contribute nothing: leave them out.
  std::vector<int> used;
  for (int i = 0; i < k.lambda; ++i)
    if (w[i] != 0.0) used.push_back(i);
  Eigen::MatrixXd Ys(s.n, static_cast<Eigen::Index>(used.size()));
  Eigen::MatrixXd Yw(s.n, static_cast<Eigen::Index>(used.size()));
  for (size_t j = 0; j < used.size(); ++j) {
    Ys.col(j) = Y_.col(order[used[j]]);
    Yw.col(j) = (k.cmu * w[used[j]]) * Ys.col(j);
  }
  s.C *= decay;
  s.C.noalias() += (k.c1 * s.p_c) * s.p_c.transpose();
  s.C.noalias() += Yw * Ys.transpose();
}

void Cmaes::update_separable(const std::vector<int>& order, double h_sigma) {
  CmaesState& s = state_;
  const auto& k = constants_;
  const std::vector<double> w = active_weights(k, Z_, order);
  const double decay = 1.0 + k.c1 * (1.0 - h_sigma) * k.c_c * (2.0 - k.c_c) - k.c1 - k.cmu * k.weight_sum;
  Eigen::VectorXd c = decay * s.C.col(0) + k.c1 * s.p_c.cwiseAbs2();
  for (int i = 0; i < k.lambda; ++i)
    if (w[i] != 0.0) c.noalias() += (k.cmu * w[i]) * Y_.col(order[i]).cwiseAbs2();
  s.C.col(0) = c;
}

void Cmaes::record_history(std::span<const double> fitness, const std::vector<int>& order) {
  CmaesState& s = state_;
  const int lambda = s.lambda;
  const double best = fitness[order[0]];
  const double median =
      lambda % 2 ? fitness[order[lambda / 2]] : 0.5 * (fitness[order[lambda / 2 - 1]] + fitness[order[lambda / 2]]);
  s.best_history.push_back(best);
  s.median_history.push_back(median);
  if (s.best_history.size() > CmaesState::kMaxHistory) {
    s.best_history.erase(s.best_history.begin());
    s.median_history.erase(s.median_history.begin());
  }
  s.last_generation_range = best - fitness[order[lambda - 1]];
}

void Cmaes::maybe_restart() {
  const RestartSettings& r = settings_.restarts;
  if (!r.enabled || state_.restarts >= r.max_restarts) return;  // stopped() is now true
  const int n = settings_.n;
  Eigen::VectorXd mean(n);
  if (r.box_lower < r.box_upper) {
    for (int i = 0; i < n; ++i) mean[i] = state_.rng.uniform(r.box_lower, r.box_upper);
  } else if (settings_.mean0.empty()) {
    mean.setZero();
  } else {
    mean = Eigen::Map<const Eigen::VectorXd>(settings_.mean0.data(), n);
  }
  ++state_.restarts;
  const int lambda = static_cast<int>(std::lround(state_.lambda * r.lambda_factor));
  std::string reason = state_.stop_reason;
  start(std::max(lambda, state_.lambda), mean);
  state_.stop_reason = reason;
}

void Cmaes::restore(CmaesState state, const std::string& where) {
  validate_state(state, where);
  if (state.n != settings_.n)
    fail(where, "n: checkpoint has " + std::to_string(state.n) + ", settings " + std::to_string(settings_.n));
  if (state.separable != settings_.separable) fail(where, "separable: differs from the settings");
  constants_ = compute_constants(state.n, state.lambda, mu_for(state.lambda, settings_.elite_ratio),
                                 settings_.separable, settings_.lazy_eigen);
  state_ = std::move(state);
  asked_ = false;
}

}  // namespace nammkit::evo
