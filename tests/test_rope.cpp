// RoPE frequencies with the scalings checkpoints declare, and the rotation itself.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>

#include "transformer/rope.h"

namespace nammkit {
namespace {

ModelConfig head128(float theta) {
  ModelConfig c;
  c.head_dim = 128;
  c.rope_theta = theta;
  return c;
}

TEST(Rope, PlainFrequencies) {
  const auto f = rope_inverse_frequencies(head128(10000.0f));
  ASSERT_EQ(f.size(), 64u);
  EXPECT_DOUBLE_EQ(f[0], 1.0);
  EXPECT_NEAR(f[1], std::pow(10000.0, -2.0 / 128), 1e-15);
  EXPECT_NEAR(f[63], std::pow(10000.0, -126.0 / 128), 1e-18);
}

// spec namm.md §2.2: Llama-3-8B with static NTK (factor 4, alpha 2) uses base' ~= 3,609,793.
TEST(Rope, StaticNtkMatchesTheNammReferenceBase) {
  ModelConfig c = head128(500000.0f);
  c.rope_scaling = RopeScaling::NtkStatic;
  c.rope_factor = 4;
  c.rope_ntk_alpha = 2;
  const auto f = rope_inverse_frequencies(c);
  const double base = std::pow(f[1], -128.0 / 2);  // f[1] = base^(-2/128)
  EXPECT_NEAR(base, 3609793, 1.0);
}

TEST(Rope, LinearScalingDividesEveryFrequency) {
  ModelConfig c = head128(10000.0f);
  const auto plain = rope_inverse_frequencies(c);
  c.rope_scaling = RopeScaling::Linear;
  c.rope_factor = 2;
  const auto scaled = rope_inverse_frequencies(c);
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_DOUBLE_EQ(scaled[i], plain[i] / 2);
}

// Llama-3.1 (factor 8, low 1, high 4, original 8192): short wavelengths unchanged, long ones divided
// by the factor, the band between blended monotonically.
TEST(Rope, Llama3ScalingBands) {
  ModelConfig c = head128(500000.0f);
  const auto plain = rope_inverse_frequencies(c);
  c.rope_scaling = RopeScaling::Llama3;
  c.rope_factor = 8;
  c.rope_low_freq_factor = 1;
  c.rope_high_freq_factor = 4;
  c.rope_original_context = 8192;
  const auto scaled = rope_inverse_frequencies(c);
  int unchanged = 0, divided = 0, blended = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    const double wavelen = 2 * std::numbers::pi / plain[i];
    if (wavelen < 8192.0 / 4) {
      EXPECT_DOUBLE_EQ(scaled[i], plain[i]);
      ++unchanged;
    } else if (wavelen > 8192.0) {
      EXPECT_DOUBLE_EQ(scaled[i], plain[i] / 8);
      ++divided;
    } else {
      EXPECT_LT(scaled[i], plain[i]);
      EXPECT_GT(scaled[i], plain[i] / 8);
      ++blended;
    }
  }
  EXPECT_GT(unchanged, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
}

// q(p) . k(p') depends only on p - p', in both pair layouts, and rotations keep norms.
TEST(Rope, DotProductDependsOnlyOnRelativePosition) {
  ModelConfig c;
  c.head_dim = 16;
  c.rope_theta = 10000;
  const auto f = rope_inverse_frequencies(c);
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> q(16), k(16);
  for (auto& v : q) v = n(rng);
  for (auto& v : k) v = n(rng);
  for (RopeStyle style : {RopeStyle::Interleaved, RopeStyle::HalfSplit}) {
    auto dot_at = [&](int pq, int pk) {
      std::vector<float> a = q, b = k;
      apply_rope(a.data(), 1, 16, pq, f, style);
      apply_rope(b.data(), 1, 16, pk, f, style);
      double s = 0, na = 0, nq = 0;
      for (int i = 0; i < 16; ++i) s += a[i] * b[i], na += a[i] * a[i], nq += q[i] * q[i];
      EXPECT_NEAR(na, nq, 1e-4);
      return s;
    };
    EXPECT_NEAR(dot_at(10, 3), dot_at(1007, 1000), 1e-3);
    EXPECT_NEAR(dot_at(5, 5), dot_at(0, 0), 1e-4);
  }
}

}  // namespace
}  // namespace nammkit
