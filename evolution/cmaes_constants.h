// The strategy parameters of CMA-ES derived from (n, lambda, mu): recombination weights with active
// negative weights, learning rates and damping. Hansen's tutorial (arXiv 1604.00772) table 1, as
// implemented by the NAMM reference `get_cma_defaults` (spec §3.1). For n = 4172, lambda = 32, mu = 16:
// mu_eff 9.1788, mu_eff^- 12.677, c1 1.148e-7, c_mu 8.366e-7, c_sigma 0.0026704, d_sigma 1.0026704,
// c_c 0.00095838, E||N(0,I)|| 64.587, top weights 0.1977, 0.1488, 0.1202, 0.0999.
#pragma once
#include <vector>

namespace nammkit::evo {

struct CmaesConstants {
  int n = 0;
  int lambda = 0;
  int mu = 0;
  // All lambda weights, best first: w_0..w_{mu-1} > 0 summing to 1; the tail <= 0 summing to -alpha,
  // used (rescaled per member) by the active covariance update.
  std::vector<double> weights;
  // The first mu weights: the mean update and the evolution paths use only these.
  std::vector<double> weights_truncated;
  double mu_eff = 0;      // (sum w+)^2 / sum w+^2
  double mu_eff_neg = 0;  // the same over the negative raw weights
  double c1 = 0;          // rank-one learning rate
  double cmu = 0;         // rank-mu learning rate
  double c_sigma = 0;     // cumulation for sigma
  double d_sigma = 0;     // damping for sigma
  double c_c = 0;         // cumulation for the rank-one path
  double chi_n = 0;       // E||N(0, I)|| = sqrt(n) (1 - 1/(4n) + 1/(21 n^2))
  double alpha_neg = 0;   // min(1 + c1/cmu, 1 + 2 mu_eff^-/(mu_eff+2), (1-c1-cmu)/(n cmu))
  double weight_sum = 0;  // sum of all weights = 1 - alpha_neg (enters the decay of C)
  int eigen_gap = 1;      // generations between eigendecompositions (1 = every generation)
};

// Full CMA-ES constants. separable: c1 and c_mu multiplied by (n+2)/3 (Ros & Hansen 2008), capped so
// that c1 + c_mu <= 1. lazy_eigen: eigen_gap = max(1, floor(1/(10 n (c1 + c_mu)))), else 1.
CmaesConstants compute_constants(int n, int lambda, int mu, bool separable, bool lazy_eigen);

}  // namespace nammkit::evo
