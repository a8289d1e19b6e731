// NAMM features: the spec §2.6 vectors, the spectrogram update against a direct evaluation of the
// spec formulas, recency, normalisation statistics.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>

#include "namm/normalization.h"
#include "namm/recency.h"
#include "namm/spectrogram.h"

using namespace nammkit;

TEST(NammSpectrogram, HannWindowMatchesSpec) {
  const std::vector<float> w = periodic_hann(32);
  const double expected[17] = {0,      0.0096, 0.0381, 0.0843, 0.1464, 0.2222, 0.3087, 0.4025, 0.5,
                               0.5975, 0.6913, 0.7778, 0.8536, 0.9157, 0.9619, 0.9904, 1.0};
  for (int n = 0; n <= 16; ++n) EXPECT_NEAR(w[n], expected[n], 5e-5) << n;
  for (int n = 1; n < 16; ++n) EXPECT_FLOAT_EQ(w[n], w[32 - n]) << "symmetric about 16";
}

TEST(NammSpectrogram, FrameMagnitudesMatchSpec) {
  AttentionSpectrogram spec;
  std::vector<float> x(32, 1.0f), mag(17);
  spec.frame_magnitudes(x.data(), mag.data());
  EXPECT_NEAR(mag[0], 16.0f, 1e-5);
  EXPECT_NEAR(mag[1], 8.0f, 1e-5);
  for (int k = 2; k < 17; ++k) EXPECT_NEAR(mag[k], 0.0f, 1e-5) << k;

  std::fill(x.begin(), x.end(), 0.0f);
  x[16] = 1.0f;
  spec.frame_magnitudes(x.data(), mag.data());
  for (int k = 0; k < 17; ++k) EXPECT_NEAR(mag[k], 1.0f, 1e-6) << k;

  std::fill(x.begin(), x.end(), 0.0f);
  x[31] = 1.0f;
  spec.frame_magnitudes(x.data(), mag.data());
  for (int k = 0; k < 17; ++k) EXPECT_NEAR(mag[k], 0.0096f, 5e-5) << k;
}

TEST(NammSpectrogram, EmaConstantsMatchSpec) {
  AttentionSpectrogram spec;
  EXPECT_NEAR(spec.frame_decay(), 0.8514577711, 1e-9);
  const std::vector<double> w = spec.frame_weights(32);
  EXPECT_NEAR(w[31], 0.1485422289, 1e-9);
  double sum = 0;
  for (double v : w) sum += v;
  EXPECT_NEAR(sum, 0.994176, 1e-6);
  EXPECT_NEAR(spec.carry_over(32), 0.0058239768, 1e-9);
  EXPECT_NEAR(spec.carry_over(32), std::pow(0.99, 512), 1e-12);
}

// Direct evaluation of spec §2.3 in double precision: padded series, per-frame DFT, causal frame
// mask, weights (1-a) a^(F-1-m), carry-over a^F.
struct ReferenceSpectrogram {
  int n_fft = 32, hop = 16;
  double coeff = 0.99;
  std::vector<std::vector<double>> ema;   // per token [17]
  std::vector<std::vector<double>> tail;  // per token [16]

  void update(const std::vector<float>& A, int nq, int n) {
    const int overlap = n_fft - hop, bins = n_fft / 2 + 1, frames = nq / hop;
    const double a = std::pow(coeff, hop);
    const int n_old = static_cast<int>(ema.size());
    ema.resize(n, std::vector<double>(bins, 0.0));
    tail.resize(n, std::vector<double>(overlap, 0.0));
    for (int j = 0; j < n; ++j) {
      std::vector<double> s(overlap + nq);
      for (int i = 0; i < overlap; ++i) s[i] = j < n_old ? tail[j][i] : 0.0;
      for (int t = 0; t < nq; ++t) s[overlap + t] = A[static_cast<size_t>(t) * n + j];
      std::vector<double> e(bins, 0.0);
      for (int m = 0; m < frames; ++m) {
        if (j >= n_old && m < (j - n_old) / hop) continue;
        const double w = (1 - a) * std::pow(a, frames - 1 - m);
        for (int k = 0; k < bins; ++k) {
          double re = 0, im = 0;
          for (int i = 0; i < n_fft; ++i) {
            const double x = (0.5 - 0.5 * std::cos(2 * std::numbers::pi * i / n_fft)) * s[m * hop + i];
            re += x * std::cos(2 * std::numbers::pi * k * i / n_fft);
            im -= x * std::sin(2 * std::numbers::pi * k * i / n_fft);
          }
          e[k] += w * std::hypot(re, im);
        }
      }
      for (int k = 0; k < bins; ++k) ema[j][k] = (j < n_old ? std::pow(a, frames) * ema[j][k] : 0.0) + e[k];
      for (int i = 0; i < overlap; ++i) tail[j][i] = s[nq + i];
    }
  }
};

// Causal softmax-like attention of nq new queries over n keys (the last nq are the new ones).
static std::vector<float> random_attention(int nq, int n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> A(static_cast<size_t>(nq) * n, 0.0f);
  const int n_old = n - nq;
  for (int t = 0; t < nq; ++t) {
    float sum = 0;
    for (int j = 0; j <= n_old + t; ++j) sum += (A[static_cast<size_t>(t) * n + j] = u(rng));
    for (int j = 0; j <= n_old + t; ++j) A[static_cast<size_t>(t) * n + j] /= sum;
  }
  return A;
}

TEST(NammSpectrogram, UpdateMatchesDirectEvaluationAcrossUpdatesAndEviction) {
  std::mt19937 rng(7);
  AttentionSpectrogram spec;
  SpectralState state;
  ReferenceSpectrogram ref;
  const int nq = 64;
  int n = 0;
  for (int round = 0; round < 3; ++round) {
    n += nq;
    const std::vector<float> A = random_attention(nq, n, rng);
    spec.update(A.data(), nq, n, state);
    ref.update(A, nq, n);
    ASSERT_EQ(state.n_tokens, n);
    for (int j = 0; j < n; ++j)
      for (int k = 0; k < 17; ++k)
        ASSERT_NEAR(state.ema_NxB[static_cast<size_t>(j) * 17 + k], ref.ema[j][k], 1e-6 + 1e-5 * ref.ema[j][k])
            << "round " << round << " token " << j << " bin " << k;
    // Evict every third token from both; state must follow the kept rows.
    std::vector<int32_t> keep;
    for (int j = 0; j < n; ++j)
      if (j % 3 != 1 || j == n - 1) keep.push_back(j);
    state.gather(keep, 17, 16);
    std::vector<std::vector<double>> e, t;
    for (int32_t j : keep) e.push_back(ref.ema[j]), t.push_back(ref.tail[j]);
    ref.ema = e;
    ref.tail = t;
    n = static_cast<int>(keep.size());
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < 16; ++i) ASSERT_FLOAT_EQ(state.tail_NxO[static_cast<size_t>(j) * 16 + i], ref.tail[j][i]);
  }
}

TEST(NammSpectrogram, ConstantAttentionOfOldTokenGivesExpectedEma) {
  // One key attended with constant c by every query of two windows (n_q 512): after the first the
  // first frame sees the zero overlap; after the second every frame sees c.
  AttentionSpectrogram spec;
  SpectralState state;
  const int nq = 512;
  const float c = 0.25f;
  // First window: the key is token 0, seen by all 512 queries.
  std::vector<float> A(static_cast<size_t>(nq) * nq, 0.0f);
  for (int t = 0; t < nq; ++t) A[static_cast<size_t>(t) * nq] = c;
  spec.update(A.data(), nq, nq, state);
  const double a = spec.frame_decay();
  const std::vector<double> w = spec.frame_weights(32);
  std::vector<float> frame(32, 0.0f), mag_half(17), mag_full(17);
  for (int i = 16; i < 32; ++i) frame[i] = c;
  spec.frame_magnitudes(frame.data(), mag_half.data());
  double first = w[0] * mag_half[0];
  for (int m = 1; m < 32; ++m) first += w[m] * 16 * c;  // |X_0| of a constant frame = 16 c
  EXPECT_NEAR(state.ema_NxB[0], first, 1e-5);
  // Second window: keep only token 0, add 512 new keys.
  std::vector<int32_t> keep = {0};
  state.gather(keep, 17, 16);
  const int n = 1 + nq;
  std::vector<float> B(static_cast<size_t>(nq) * n, 0.0f);
  for (int t = 0; t < nq; ++t) B[static_cast<size_t>(t) * n] = c;
  spec.update(B.data(), nq, n, state);
  EXPECT_NEAR(state.ema_NxB[0], std::pow(a, 32) * first + (1 - std::pow(a, 32)) * 16 * c, 1e-5);
  // Bin 1: |X_1| of a Hann-windowed constant frame is 8c.
  double first1 = w[0] * mag_half[1];
  for (int m = 1; m < 32; ++m) first1 += w[m] * 8 * c;
  EXPECT_NEAR(state.ema_NxB[1], std::pow(a, 32) * first1 + (1 - std::pow(a, 32)) * 8 * c, 1e-5);
}

TEST(NammSpectrogram, NewTokensGetZeroBeforeTheirBlockAndRejectBadShapes) {
  AttentionSpectrogram spec;
  SpectralState state;
  const int nq = 64;
  std::vector<float> A(static_cast<size_t>(nq) * nq, 0.0f);  // no attention at all
  spec.update(A.data(), nq, nq, state);
  for (float v : state.ema_NxB) EXPECT_EQ(v, 0.0f);
  EXPECT_THROW(spec.update(A.data(), 40, 40, state), std::exception);  // not a multiple of hop
  EXPECT_THROW(spec.update(A.data(), nq, nq, state), std::exception);  // 64 keys with state for 64: no new ones
}

TEST(NammRecency, EmbeddingMatchesSpec) {
  RecencyConfig cfg;
  float e[8];
  recency_embedding(cfg, 0, e);
  const float r0[8] = {0, 0, 0, 0, 1, 1, 1, 1};
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(e[i], r0[i]);
  recency_embedding(cfg, 1, e);
  const float r1[8] = {0.841471f, 0.066824f, 0.004472f, 0.000299f, 0.540302f, 0.997765f, 0.99999f, 1.0f};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(e[i], r1[i], 2e-6) << i;
  recency_embedding(cfg, 100, e);
  const float r100[8] = {-0.506366f, 0.3933f, 0.432455f, 0.029903f, 0.862319f, 0.91941f, 0.901656f, 0.999553f};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(e[i], r100[i], 5e-6) << i;
}

TEST(NammNormalization, MergeEqualsPooledStatistics) {
  std::mt19937 rng(3);
  std::normal_distribution<float> g(5.0f, 2.0f);
  const int d = 17;
  std::vector<float> rows(300 * d);
  for (float& v : rows) v = g(rng);
  FeatureStats pooled(d), a(d), b(d), c(d);
  pooled.add(rows.data(), 300);
  a.add(rows.data(), 100);
  b.add(rows.data() + 100 * d, 150);
  c.add(rows.data() + 250 * d, 50);
  a.merge(b);
  a.merge(c);
  a.merge(FeatureStats(d));  // an empty worker changes nothing
  ASSERT_EQ(a.count(), 300);
  const std::vector<double> va = a.variance(), vp = pooled.variance();
  for (int i = 0; i < d; ++i) {
    // Direct two-pass population statistics.
    double m = 0, v = 0;
    for (int r = 0; r < 300; ++r) m += rows[r * d + i];
    m /= 300;
    for (int r = 0; r < 300; ++r) v += (rows[r * d + i] - m) * (rows[r * d + i] - m);
    v /= 300;
    EXPECT_NEAR(a.mean()[i], m, 1e-9);
    EXPECT_NEAR(va[i], v, 1e-9);
    EXPECT_NEAR(vp[i], v, 1e-9);
  }
  // Stored and restored statistics keep merging correctly.
  FeatureStats restored(a.mean(), a.variance(), a.count());
  EXPECT_NEAR(restored.variance()[3], va[3], 1e-12);

  FeatureNormalizer norm = FeatureNormalizer::from_stats(a);
  std::vector<float> z(d);
  norm.apply(rows.data(), z.data());
  for (int i = 0; i < d; ++i) EXPECT_NEAR(z[i], (rows[i] - a.mean()[i]) / std::sqrt(va[i]), 1e-4);
  // A constant bin (var 0) divides by 1e-7, not by zero.
  FeatureNormalizer flat({1.0f}, {0.0f});
  float x = 1.0f + 1e-7f * 0.5f, y;
  flat.apply(&x, &y);
  EXPECT_TRUE(std::isfinite(y));
}
