// BAM and MLP scorers against a loop-based evaluation of the spec §2.4 formulas, written here
// independently of namm/bam_scorer.cpp; zero parameters; population scoring.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "namm/bam_scorer.h"

using namespace nammkit;

namespace {
// Spec §2.4 / §3.1 in double precision, one token at a time.
std::vector<double> reference_bam(const std::vector<float>& p, const std::vector<float>& x, int n, int F, int H) {
  auto W_qkv = [&](int i, int o) { return double{p[i * 3 * H + o]}; };
  auto b_qkv = [&](int o) { return double{p[F * 3 * H + o]}; };
  const int off_o = F * 3 * H + 3 * H;
  auto W_o = [&](int i, int o) { return double{p[off_o + i * 2 * F + o]}; };
  auto b_o = [&](int o) { return double{p[off_o + H * 2 * F + o]}; };
  const int off_w = off_o + H * 2 * F + 2 * F;
  std::vector<std::vector<double>> q(n, std::vector<double>(H)), k = q, v = q;
  for (int t = 0; t < n; ++t)
    for (int o = 0; o < 3 * H; ++o) {
      double s = b_qkv(o);
      for (int i = 0; i < F; ++i) s += x[t * F + i] * W_qkv(i, o);
      (o < H ? q[t][o] : o < 2 * H ? k[t][o - H] : v[t][o - 2 * H]) = s;
    }
  std::vector<double> scores(n);
  for (int i = 0; i < n; ++i) {
    std::vector<double> logit(n, -INFINITY);
    double mx = -INFINITY;
    for (int j = i; j < n; ++j) {  // backward mask: j >= i
      double s = 0;
      for (int d = 0; d < H; ++d) s += q[i][d] * k[j][d];
      logit[j] = s / std::sqrt(double(H));
      mx = std::max(mx, logit[j]);
    }
    double z = 0;
    for (int j = i; j < n; ++j) z += std::exp(logit[j] - mx);
    std::vector<double> h(H, 0.0);
    for (int j = i; j < n; ++j)
      for (int d = 0; d < H; ++d) h[d] += std::exp(logit[j] - mx) / z * v[j][d];
    double score = p[off_w + F];
    for (int f = 0; f < F; ++f) {
      double r = b_o(f), m = b_o(F + f);
      for (int d = 0; d < H; ++d) r += h[d] * W_o(d, f), m += h[d] * W_o(d, F + f);
      const double y = x[i * F + f] * (1 + m) + r;
      score += y * p[off_w + f];
    }
    scores[i] = score;
  }
  return scores;
}

std::vector<float> random_vector(size_t n, float sigma, std::mt19937& rng) {
  std::normal_distribution<float> g(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = g(rng);
  return v;
}
}  // namespace

TEST(NammScorer, ParameterCountsMatchSpec) {
  EXPECT_EQ((ScorerShape{ScorerKind::Bam, 25, 32}.n_params()), 4172);
  EXPECT_EQ((ScorerShape{ScorerKind::Mlp, 25, 32}.n_params()), 26);
}

TEST(NammScorer, BamMatchesLoopReference) {
  std::mt19937 rng(11);
  const ScorerShape shape{ScorerKind::Bam, 25, 32};
  for (int n : {1, 7, 64, 150}) {  // 150 > one attention row block
    const std::vector<float> p = random_vector(4172, 0.5f, rng);
    const std::vector<float> x = random_vector(static_cast<size_t>(n) * 25, 1.0f, rng);
    std::vector<float> got(n);
    score_tokens(shape, p, x.data(), n, got.data());
    const std::vector<double> want = reference_bam(p, x, n, 25, 32);
    for (int i = 0; i < n; ++i)
      EXPECT_NEAR(got[i], want[i], 1e-5 * std::max(1.0, std::fabs(want[i]))) << "n " << n << " token " << i;
  }
}

TEST(NammScorer, ZeroParametersScoreZero) {
  std::mt19937 rng(1);
  const std::vector<float> x = random_vector(40 * 25, 3.0f, rng);
  for (ScorerKind kind : {ScorerKind::Bam, ScorerKind::Mlp}) {
    const ScorerShape shape{kind, 25, 32};
    std::vector<float> p(shape.n_params(), 0.0f), s(40, 1.0f);
    score_tokens(shape, p, x.data(), 40, s.data());
    for (float v : s) EXPECT_EQ(v, 0.0f);
  }
}

TEST(NammScorer, MlpIsLinearReadOut) {
  std::mt19937 rng(5);
  const ScorerShape shape{ScorerKind::Mlp, 25, 32};
  const std::vector<float> p = random_vector(26, 0.5f, rng), x = random_vector(10 * 25, 1.0f, rng);
  std::vector<float> s(10);
  score_tokens(shape, p, x.data(), 10, s.data());
  for (int i = 0; i < 10; ++i) {
    double want = p[25];
    for (int f = 0; f < 25; ++f) want += double{x[i * 25 + f]} * p[f];
    EXPECT_NEAR(s[i], want, 1e-5);
  }
}

TEST(NammScorer, PopulationEqualsOneAtATime) {
  std::mt19937 rng(9);
  const ScorerShape shape{ScorerKind::Bam, 25, 32};
  const int n = 90, pop = 6;
  const std::vector<float> x = random_vector(static_cast<size_t>(n) * 25, 1.0f, rng);
  std::vector<std::vector<float>> members;
  for (int m = 0; m < pop; ++m) members.push_back(random_vector(4172, 0.065f * (m + 1), rng));
  std::vector<std::span<const float>> views(members.begin(), members.end());
  std::vector<std::vector<float>> batched;
  score_population(shape, views, x.data(), n, batched);
  ASSERT_EQ(batched.size(), static_cast<size_t>(pop));
  for (int m = 0; m < pop; ++m) {
    std::vector<float> one(n);
    score_tokens(shape, members[m], x.data(), n, one.data());
    for (int i = 0; i < n; ++i) EXPECT_EQ(batched[m][i], one[i]) << "member " << m << " token " << i;
  }
}

TEST(NammScorer, WrongParameterCountIsAnError) {
  std::vector<float> p(17), x(25), s(1);
  try {
    score_tokens(ScorerShape{}, p, x.data(), 1, s.data());
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("expected 4172 values, got 17"), std::string::npos) << e.what();
  }
}
