// CMA-ES core: the reference constants (spec §3.1), benchmark functions against the published
// (non-active) CMA-ES evaluation counts, separable vs full, state invariants.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "evolution/cmaes.h"
#include "evolution/cmaes_constants.h"
#include "evolution/test_functions.h"
#include "transformer/error.h"

using namespace nammkit::evo;

TEST(EvolutionCmaesConstants, ReproduceSpecTableForNammRegime) {
  const CmaesConstants k = compute_constants(4172, 32, 16, /*separable=*/false, /*lazy_eigen=*/true);
  auto rel = [](double got, double want) { return std::abs(got - want) / std::abs(want); };
  EXPECT_LT(rel(k.mu_eff, 9.1788), 1e-4) << k.mu_eff;
  EXPECT_LT(rel(k.mu_eff_neg, 12.677), 1e-4) << k.mu_eff_neg;
  EXPECT_LT(rel(k.c1, 1.148e-7), 1e-3) << k.c1;
  EXPECT_LT(rel(k.cmu, 8.366e-7), 1e-3) << k.cmu;
  EXPECT_LT(rel(k.c_sigma, 0.0026704), 1e-4) << k.c_sigma;
  EXPECT_LT(rel(k.d_sigma, 1.0026704), 1e-7) << k.d_sigma;
  EXPECT_LT(rel(k.c_c, 0.00095838), 1e-4) << k.c_c;
  EXPECT_LT(rel(k.chi_n, 64.587), 1e-4) << k.chi_n;
  EXPECT_LT(rel(k.alpha_neg, 1.13726), 1e-3) << k.alpha_neg;
  const double top[] = {0.1977, 0.1488, 0.1202, 0.0999};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(k.weights[i], top[i], 5e-5) << i;
  double pos = 0, neg = 0;
  for (double w : k.weights) (w > 0 ? pos : neg) += w;
  EXPECT_NEAR(pos, 1.0, 1e-12);
  EXPECT_NEAR(neg, -k.alpha_neg, 1e-12);
  ASSERT_EQ(k.weights_truncated.size(), 16u);
  // Lazy decomposition gap: floor(1 / (10 n (c1 + c_mu))) = 25 generations.
  EXPECT_EQ(k.eigen_gap, 25);
  EXPECT_EQ(compute_constants(4172, 32, 16, false, false).eigen_gap, 1);
}

TEST(EvolutionCmaesConstants, SeparableScalesLearningRates) {
  const CmaesConstants full = compute_constants(100, 17, 8, false, true);
  const CmaesConstants sep = compute_constants(100, 17, 8, true, true);
  EXPECT_NEAR(sep.c1, full.c1 * 102.0 / 3.0, 1e-15);
  EXPECT_NEAR(sep.cmu, full.cmu * 102.0 / 3.0, 1e-15);
  EXPECT_EQ(default_lambda(10), 10);
  EXPECT_EQ(default_lambda(20), 12);
}
