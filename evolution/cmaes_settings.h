// Settings of one CMA-ES run: everything the strategy needs before its first ask().
// Plain data; validate_settings() checks it and names the bad field.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace nammkit::evo {

// Criteria that end one CMA-ES run (and, with IPOP, trigger a restart). Hansen, "The CMA Evolution
// Strategy: A Tutorial" (arXiv 1604.00772), appendix B.3; values are those of the tutorial, except
// stagnation, which follows pycma's tolstagnation with its guards (cmaes_termination.cpp).
struct StopSettings {
  double tolfun = 1e-12;        // range of recent best fitness values and of the current generation
  double tolx_factor = 1e-12;   // tolx = tolx_factor * sigma0, on sigma*|p_c| and sigma*sqrt(C_ii)
  double max_condition = 1e14;  // condition number of C
  bool no_effect_axis = true;   // adding 0.1 sigma along a principal axis leaves the mean unchanged
  bool no_effect_coord = true;  // adding 0.2 sigma sqrt(C_ii) leaves a mean coordinate unchanged
  bool stagnation = true;       // pycma's tolstagnation: no progress over 100 + 100 n^1.5 / lambda generations
};

// IPOP-CMA-ES (Auger & Hansen 2005): on a stop criterion, restart with lambda multiplied by
// lambda_factor, sigma = sigma0, fresh paths and C = I. Evaluations and the best member are counted
// across restarts.
struct RestartSettings {
  bool enabled = false;
  int max_restarts = 9;
  double lambda_factor = 2.0;
  // The mean a restart starts from: uniform in [box_lower, box_upper]^n drawn from the strategy's RNG
  // when box_lower < box_upper, otherwise the initial mean again.
  double box_lower = 0.0;
  double box_upper = 0.0;
};

struct CmaesSettings {
  int n = 0;                  // dimension
  int lambda = 0;             // population size; 0 = Hansen's default 4 + floor(3 ln n)
  double elite_ratio = 0.5;   // mu = floor(lambda * elite_ratio) members get positive weights
  double sigma0 = 1.0;        // initial step size
  std::vector<double> mean0;  // initial mean; empty = all zeros
  uint64_t seed = 0;
  double c_m = 1.0;  // learning rate of the mean
  // Separable (diagonal) CMA-ES, Ros & Hansen 2008: C is diagonal, c1 and c_mu are multiplied by
  // (n+2)/3, ask/tell cost O(n) per member and no eigendecomposition is needed.
  bool separable = false;
  // Decompose C only every max(1, floor(1/(10 n (c1 + c_mu)))) generations (Hansen's tutorial, B.2);
  // between decompositions members are sampled from the last B, D. false = every generation, as the
  // NAMM reference code does (at n = 4172 that is minutes per generation for no measurable gain:
  // the gap there is 25 generations while C moves by ~1e-6 per generation).
  bool lazy_eigen = true;
  // The NAMM reference adds 1e-6 to every entry of C (not only the diagonal) at generation 0 of a run,
  // before the first decomposition (spec §3.1). On for the NAMM preset; off by default because on
  // small benchmark problems it is a pointless rank-one perturbation and it forces a full
  // eigendecomposition before the first generation (at n = 4172 about 40 s here). Full covariance
  // only: a diagonal C cannot hold off-diagonal entries, so separable runs ignore it.
  bool reference_initial_jitter = false;
  StopSettings stop;
  RestartSettings restarts;
};

// The NAMM reference configuration (spec §3.1): lambda 32, elite ratio 0.5, sigma0 0.065, mean 0,
// C = I plus the generation-0 jitter, c_m 1, full covariance, no restarts.
CmaesSettings namm_reference_settings(int n, uint64_t seed);

// Hansen's default population size 4 + floor(3 ln n).
int default_lambda(int n);

// Throws nammkit::Error("cmaes settings: <field>: <problem>").
void validate_settings(const CmaesSettings& settings);

}  // namespace nammkit::evo
