// CMA-ES with an ask/tell interface, fitness MAXIMISED (as the NAMM reference; minimise f by telling
// -f). Full covariance with active negative weights (Hansen's tutorial, arXiv 1604.00772, as spec §3.1
// describes it) or separable/diagonal (Ros & Hansen 2008), lazy eigendecomposition, optional IPOP
// restarts. The strategy does not evaluate anything: the caller evaluates the population ask() returns
// and passes the fitness values to tell().
//
//   Cmaes es(settings);
//   while (...) {
//     const Eigen::MatrixXd& X = es.ask();      // n x lambda, column k = member k
//     std::vector<double> f = evaluate(X);       // higher is better
//     es.tell(f);
//   }
//
// Per generation, in tell() (members sorted by descending fitness, y_i = (x_i - mean)/sigma):
//   mean    += c_m sigma sum_{i<mu} w_i y_i
//   p_sigma  = (1-c_sigma) p_sigma + sqrt(c_sigma(2-c_sigma)mu_eff) C^{-1/2} y_w
//   h_sigma  = ||p_sigma|| / sqrt(1-(1-c_sigma)^{2g}) < (1.4 + 2/(n+1)) E||N||   (g = generation, from 1)
//   p_c      = (1-c_c) p_c + h_sigma sqrt(c_c(2-c_c)mu_eff) y_w
//   w°_i     = w_i (w_i >= 0) or w_i n / ||C^{-1/2} y_i||^2 (w_i < 0)
//   C        = (1 + c1(1-h_sigma)c_c(2-c_c) - c1 - c_mu sum w) C + c1 p_c p_c^T + c_mu sum w°_i y_i y_i^T
//   sigma   *= exp((c_sigma/d_sigma)(||p_sigma||/E||N|| - 1))
// C^{-1/2} is that of the decomposition members were sampled from (B D^{-1} B^T), so C^{-1/2} y_i is
// exactly B z_i and ||C^{-1/2} y_i|| = ||z_i||: with the lazy schedule this is what keeps the paths
// consistent with the sampling distribution (as in pycma).
#pragma once
#include <Eigen/Dense>
#include <span>
#include <string>

#include "evolution/cmaes_constants.h"
#include "evolution/cmaes_settings.h"
#include "evolution/cmaes_state.h"

namespace nammkit::evo {

class Cmaes {
 public:
  // Validates the settings (nammkit::Error naming the field) and sets up generation 0.
  explicit Cmaes(CmaesSettings settings);

  // The population of the current generation, n x lambda (column k = member k). Repeated calls before
  // tell() return the same population. Decomposes C first when the lazy schedule says so.
  const Eigen::MatrixXd& ask();

  // Fitness of each member of the last ask() (size lambda, all finite; higher is better). Updates the
  // distribution, the best member and the stop criteria; with IPOP restarts a met criterion restarts the
  // run with a larger population (the next ask() returns it). Throws Error on a size mismatch,
  // a non-finite value or a tell() without ask().
  void tell(std::span<const double> fitness);

  // True when a stop criterion is met and no restart follows (restarts disabled or exhausted).
  // (After a restart the reason names its cause, but generation is 0 again: not stopped.)
  bool stopped() const { return !state_.stop_reason.empty() && state_.generation > 0; }
  // The last criterion met ("" = none); after an IPOP restart it names the criterion that caused it.
  const std::string& stop_reason() const { return state_.stop_reason; }

  const CmaesState& state() const { return state_; }
  const CmaesConstants& constants() const { return constants_; }
  const CmaesSettings& settings() const { return settings_; }
  int n() const { return state_.n; }
  int lambda() const { return state_.lambda; }

  // Continues from a saved state (e.g. a checkpoint) taken between a tell() and the next ask().
  // Validates it against the settings; throws Error("<where>: <field>: ...").
  void restore(CmaesState state, const std::string& where);

 private:
  void start(int lambda, const Eigen::VectorXd& mean);  // generation 0 of a run or of a restart
  void decompose();
  void update_full(const std::vector<int>& order, double h_sigma);
  void update_separable(const std::vector<int>& order, double h_sigma);
  void record_history(std::span<const double> fitness, const std::vector<int>& order);
  void maybe_restart();

  CmaesSettings settings_;
  CmaesConstants constants_;
  CmaesState state_;
  // The population of the pending ask(): standard normal Z, Y = B D Z, X = mean + sigma Y.
  bool asked_ = false;
  Eigen::MatrixXd Z_, Y_, X_;
};

}  // namespace nammkit::evo
