// The scorers' backward pass (namm/scorer_grad.h):
//  - its forward scores equal score_tokens (BAM and MLP);
//  - the analytic gradient equals central finite differences on every parameter of a small BAM, on a
//    random subset of the reference BAM (F 25, H 32) beyond one attention row block, and for the MLP;
//  - against PyTorch float64 autograd (tests/fixtures/scorer_grad_{bam,mlp}.json, made by
//    tools/reference/scorer_grad_fixture.py);
//  - n = 1, n = 0, accumulation into the gradient, and the parameter-count error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "namm/bam_scorer.h"
#include "namm/scorer_grad.h"

namespace nammkit {
namespace {

// Values on the grid k * 2^-12 with |value| < 1: value +- 2^-9 is still exact in float, so the
// finite differences below perturb the parameters by exactly +-h and +-2h.
std::vector<float> grid_vector(size_t n, double sigma, std::mt19937& rng) {
  std::normal_distribution<double> g(0.0, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(std::round(std::clamp(g(rng), -0.99, 0.99) * 4096.0) / 4096.0);
  return v;
}

std::vector<double> normal_vector(size_t n, std::mt19937& rng) {
  std::normal_distribution<double> g(0.0, 1.0);
  std::vector<double> v(n);
  for (double& x : v) x = g(rng);
  return v;
}

// sum_i u_i score_i in double: the scores that scorer_backward computes, with a zero upstream.
double objective(const ScorerShape& shape, const std::vector<float>& p, const std::vector<float>& x, int n,
                 const std::vector<double>& u) {
  std::vector<double> zero(n, 0.0), grad(shape.n_params(), 0.0), scores(n);
  scorer_backward(shape, p, x.data(), n, zero.data(), grad.data(), scores.data());
  return std::inner_product(u.begin(), u.end(), scores.begin(), 0.0);
}

// Central differences with Richardson extrapolation, D = (4 D(h) - D(2h)) / 3: the truncation error
// is O(h^4) ~ 1e-12 at h = 2^-10 rather than O(h^2) ~ 1e-7, and the rounding error of the double
// objective, ~1e-16 |f| / h ~ 1e-13, stays small too; a wrong gradient term is off by O(1).
double finite_difference(const ScorerShape& shape, std::vector<float> p, const std::vector<float>& x, int n,
                         const std::vector<double>& u, int k) {
  const float p0 = p[k];
  auto f = [&](double step) {
    p[k] = static_cast<float>(p0 + step);  // exact: see grid_vector
    return objective(shape, p, x, n, u);
  };
  const double h = 1.0 / 1024;
  const double d1 = (f(h) - f(-h)) / (2 * h), d2 = (f(2 * h) - f(-2 * h)) / (4 * h);
  return (4 * d1 - d2) / 3;
}

struct Case {
  ScorerShape shape;
  int n;
  std::vector<float> p, x;
  std::vector<double> u, grad;
};

Case make_case(ScorerShape shape, int n, double sigma_p, uint32_t seed) {
  std::mt19937 rng(seed);
  Case c{shape,
         n,
         grid_vector(shape.n_params(), sigma_p, rng),
         grid_vector(static_cast<size_t>(n) * shape.n_features, 0.5, rng),
         normal_vector(n, rng),
         std::vector<double>(shape.n_params(), 0.0)};
  scorer_backward(shape, c.p, c.x.data(), n, c.u.data(), c.grad.data());
  return c;
}

// Largest |fd - analytic| / (|analytic| + 1e-3 max|analytic|) over the parameters `which`: relative,
// with a floor for the parameters whose gradient is (near) zero.
double max_fd_error(const Case& c, const std::vector<int>& which) {
  double gmax = 0, worst = 0;
  for (double v : c.grad) gmax = std::max(gmax, std::fabs(v));
  for (int k : which) {
    const double fd = finite_difference(c.shape, c.p, c.x, c.n, c.u, k);
    const double err = std::fabs(fd - c.grad[k]) / (std::fabs(c.grad[k]) + 1e-3 * gmax);
    EXPECT_LT(err, 1e-6) << "parameter " << k << ": analytic " << c.grad[k] << ", finite difference " << fd;
    worst = std::max(worst, err);
  }
  return worst;
}

std::vector<int> all_indices(int n) {
  std::vector<int> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

TEST(ScorerGrad, ForwardScoresEqualScoreTokens) {
  for (ScorerKind kind : {ScorerKind::Bam, ScorerKind::Mlp}) {
    for (int n : {1, 40, 150}) {  // 150 > one attention row block
      const ScorerShape shape{kind, 25, 32};
      const Case c = make_case(shape, n, 0.3, 100 + n);
      std::vector<float> want(n);
      score_tokens(shape, c.p, c.x.data(), n, want.data());
      std::vector<double> got(n), zero(n, 0.0), grad(shape.n_params(), 0.0);
      scorer_backward(shape, c.p, c.x.data(), n, zero.data(), grad.data(), got.data());
      // score_tokens rounds to float (and the MLP sums in float): relative to each score, with a floor
      // of 1e-2 of the largest for scores near zero.
      double smax = 0, worst = 0;
      for (float v : want) smax = std::max(smax, std::fabs(double{v}));
      for (int i = 0; i < n; ++i) {
        EXPECT_NEAR(got[i], want[i], 1e-5 * std::max(std::fabs(double{want[i]}), 1e-2 * smax))
            << scorer_kind_name(kind) << " token " << i;
        worst = std::max(worst, std::fabs(got[i] - want[i]) / std::max(std::fabs(got[i]), 1e-30));
      }
      for (double v : grad) EXPECT_EQ(v, 0.0);  // zero upstream: zero gradient
      std::printf("%s n %d: max relative |scorer_backward - score_tokens| %.2e\n", scorer_kind_name(kind), n, worst);
    }
  }
}

TEST(ScorerGrad, BamMatchesFiniteDifferencesSmall) {
  const Case c = make_case(ScorerShape{ScorerKind::Bam, 5, 3}, 7, 0.4, 1);
  ASSERT_EQ(c.grad.size(), 5u * 9 + 9 + 3 * 10 + 10 + 5 + 1);
  const double worst = max_fd_error(c, all_indices(static_cast<int>(c.grad.size())));
  std::printf("BAM F 5, H 3, n 7: %zu parameters, max relative error %.2e\n", c.grad.size(), worst);
}

TEST(ScorerGrad, BamMatchesFiniteDifferencesReferenceShape) {
  // n = 80 spans two attention row blocks (64 + 16), so the blocked recomputation is exercised.
  for (int n : {40, 80}) {
    const Case c = make_case(ScorerShape{ScorerKind::Bam, 25, 32}, n, 0.2, 2 + n);
    std::mt19937 rng(3);
    std::vector<int> which = all_indices(static_cast<int>(c.grad.size()));
    std::shuffle(which.begin(), which.end(), rng);
    which.resize(200);
    which.push_back(static_cast<int>(c.grad.size()) - 1);  // the read-out bias
    const double worst = max_fd_error(c, which);
    std::printf("BAM F 25, H 32, n %d: 201 of %zu parameters, max relative error %.2e\n", n, c.grad.size(), worst);
  }
}

TEST(ScorerGrad, MlpMatchesFiniteDifferences) {
  const Case c = make_case(ScorerShape{ScorerKind::Mlp, 25, 32}, 30, 0.4, 4);
  const double worst = max_fd_error(c, all_indices(26));
  std::printf("MLP F 25, n 30: max relative error %.2e\n", worst);
}

TEST(ScorerGrad, SingleToken) {
  // One token attends only to itself (P = 1): q and k get no gradient, the rest does.
  const Case c = make_case(ScorerShape{ScorerKind::Bam, 5, 3}, 1, 0.4, 5);
  for (int k = 0; k < 5 * 9 + 9; ++k) {
    if (k % 9 < 6) {
      EXPECT_EQ(c.grad[k], 0.0) << "W_qkv/b_qkv column " << k % 9 << " (q or k)";
    }
  }
  max_fd_error(c, all_indices(static_cast<int>(c.grad.size())));
}

TEST(ScorerGrad, NoTokensChangesNothing) {
  for (ScorerKind kind : {ScorerKind::Bam, ScorerKind::Mlp}) {
    const ScorerShape shape{kind, 25, 32};
    std::vector<float> p(shape.n_params(), 0.5f);
    std::vector<double> grad(shape.n_params(), 7.0), scores(1, 3.0);
    scorer_backward(shape, p, nullptr, 0, nullptr, grad.data(), scores.data());
    scorer_backward(shape, p, nullptr, -1, nullptr, grad.data(), scores.data());
    for (double v : grad) EXPECT_EQ(v, 7.0);
    EXPECT_EQ(scores[0], 3.0);
  }
}

TEST(ScorerGrad, AccumulatesIntoGradient) {
  Case c = make_case(ScorerShape{ScorerKind::Bam, 25, 32}, 20, 0.2, 6);
  const std::vector<double> once = c.grad;
  scorer_backward(c.shape, c.p, c.x.data(), c.n, c.u.data(), c.grad.data());
  for (size_t k = 0; k < once.size(); ++k) EXPECT_EQ(c.grad[k], 2 * once[k]) << k;
}

TEST(ScorerGrad, WrongParameterCountIsAnError) {
  std::vector<float> p(17), x(25);
  std::vector<double> u(1, 1.0), grad(4172);
  try {
    scorer_backward(ScorerShape{}, p, x.data(), 1, u.data(), grad.data());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scorer_backward: params: expected 4172 values, got 17"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(scorer_backward(ScorerShape{ScorerKind::Mlp, 25, 32}, p, x.data(), 0, u.data(), grad.data()), Error);
}

// PyTorch float64 autograd of an independent implementation (tools/reference/scorer_grad_fixture.py).
// Inputs are float32 values; both sides compute in double, so they agree to rounding (~1e-14).
TEST(ScorerGrad, MatchesPyTorchFixture) {
  for (const char* name : {"bam", "mlp"}) {
    const std::string path = std::string(NAMMKIT_SOURCE_DIR) + "/tests/fixtures/scorer_grad_" + name + ".json";
    std::ifstream in(path);
    ASSERT_TRUE(in) << path << ": missing (make it with tools/reference/scorer_grad_fixture.py)";
    const nlohmann::json j = nlohmann::json::parse(in);
    ASSERT_EQ(j.at("kind"), name);
    const ScorerShape shape{std::string(name) == "bam" ? ScorerKind::Bam : ScorerKind::Mlp, j.at("n_features"),
                            j.at("hidden")};
    const int n = j.at("n");
    const auto p = j.at("params").get<std::vector<float>>(), x = j.at("features").get<std::vector<float>>();
    const auto u32 = j.at("upstream").get<std::vector<float>>();
    const std::vector<double> u(u32.begin(), u32.end());
    const auto want_scores = j.at("scores").get<std::vector<double>>(),
               want_grad = j.at("grad").get<std::vector<double>>();
    ASSERT_EQ(p.size(), static_cast<size_t>(shape.n_params()));
    ASSERT_EQ(want_grad.size(), p.size());
    ASSERT_EQ(x.size(), static_cast<size_t>(n) * shape.n_features);
    std::vector<double> grad(p.size(), 0.0), scores(n);
    scorer_backward(shape, p, x.data(), n, u.data(), grad.data(), scores.data());
    // Relative to each value, with a floor of 1e-6 of the largest (cancellation in near-zero terms).
    auto check = [&](const std::vector<double>& got, const std::vector<double>& want, const char* what) {
      double vmax = 0, worst = 0;
      for (double v : want) vmax = std::max(vmax, std::fabs(v));
      for (size_t k = 0; k < want.size(); ++k) {
        const double err = std::fabs(got[k] - want[k]) / (std::fabs(want[k]) + 1e-6 * vmax);
        EXPECT_LT(err, 1e-9) << name << " " << what << "[" << k << "]: " << got[k] << " vs " << want[k];
        worst = std::max(worst, err);
      }
      std::printf("%s %s vs PyTorch: max relative error %.2e\n", name, what, worst);
    };
    check(scores, want_scores, "scores");
    check(grad, want_grad, "grad");
  }
}

}  // namespace
}  // namespace nammkit
