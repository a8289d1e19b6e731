// The CPU references of the CUDA kernels (kernels/reference.h). They are the ground truth of the GPU
// tests (tests/test_kernels_gpu.cpp), so they are checked here; no GPU is needed.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/reference.h"
#include "transformer/kv_cache.h"

namespace nammkit {
namespace {

std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

TEST(KernelReference, DecodeMatchesHandComputedSoftmax) {
  // One KV head, two query heads, two keys of dimension 2.
  const std::vector<float> K = {1, 0, 0, 1}, V = {10, 20, 30, 40};
  const std::vector<float> q = {2, 0, 0, 0};  // head 0 prefers key 0; head 1 is uniform
  const kernels::ref::KvHead head{K.data(), V.data(), 2};
  std::vector<float> out(4), probs(3, -1.0f);
  kernels::ref::attention_decode(DType::F32, 2, 2, std::span(&head, 1), q.data(), 1.0f, out.data(), probs.data(), 3);
  const double p0 = 1.0 / (1.0 + std::exp(-2.0));
  EXPECT_NEAR(out[0], p0 * 10 + (1 - p0) * 30, 1e-5);
  EXPECT_NEAR(out[1], p0 * 20 + (1 - p0) * 40, 1e-5);
  EXPECT_NEAR(out[2], 20.0, 1e-5);
  EXPECT_NEAR(out[3], 30.0, 1e-5);
  EXPECT_NEAR(probs[0], (p0 + 0.5) / 2, 1e-6);  // GQA average over the two query heads
  EXPECT_NEAR(probs[1], (1 - p0 + 0.5) / 2, 1e-6);
  EXPECT_EQ(probs[2], 0.0f);  // past the head's length
}

TEST(KernelReference, DecodeOfEmptyHeadIsZero) {
  const kernels::ref::KvHead head{nullptr, nullptr, 0};
  std::vector<float> q = {1, 2}, out(2, 5.0f);
  kernels::ref::attention_decode(DType::F16, 1, 2, std::span(&head, 1), q.data(), 1.0f, out.data(), nullptr, 0);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
}

TEST(KernelReference, PrefillRowIsDecodeOverTheVisiblePrefix) {
  const int n_q = 4, n_kv = 2, D = 8, T = 5;
  const std::vector<int> lens = {T + 3, T};  // head 0 has 3 cached keys before the chunk, head 1 none
  std::vector<std::vector<uint16_t>> K(n_kv), V(n_kv);
  std::vector<kernels::ref::KvHead> heads(n_kv);
  for (int h = 0; h < n_kv; ++h) {
    const auto k = random_vector(static_cast<size_t>(lens[h]) * D, 10 + h), v = random_vector(k.size(), 20 + h);
    for (float x : k) K[h].push_back(f32_to_f16(x));
    for (float x : v) V[h].push_back(f32_to_f16(x));
    heads[h] = {K[h].data(), V[h].data(), lens[h]};
  }
  const auto q = random_vector(static_cast<size_t>(T) * n_q * D, 3);
  const int stride = 9;
  std::vector<float> out(q.size()), probs(static_cast<size_t>(n_kv) * T * stride);
  const float scale = 1.0f / std::sqrt(float(D));
  kernels::ref::attention_prefill(DType::F16, n_q, D, T, heads, q.data(), scale, out.data(), probs.data(), stride);

  for (int t = 0; t < T; ++t) {
    std::vector<kernels::ref::KvHead> prefix = heads;
    for (int h = 0; h < n_kv; ++h) prefix[h].len = lens[h] - T + t + 1;
    std::vector<float> dec(static_cast<size_t>(n_q) * D), dec_probs(static_cast<size_t>(n_kv) * stride);
    kernels::ref::attention_decode(DType::F16, n_q, D, prefix, q.data() + static_cast<size_t>(t) * n_q * D, scale,
                                   dec.data(), dec_probs.data(), stride);
    for (int i = 0; i < n_q * D; ++i) EXPECT_FLOAT_EQ(out[static_cast<size_t>(t) * n_q * D + i], dec[i]) << "t=" << t;
    for (int h = 0; h < n_kv; ++h) {
      float sum = 0;
      for (int j = 0; j < stride; ++j) {
        const float p = probs[(static_cast<size_t>(h) * T + t) * stride + j];
        EXPECT_FLOAT_EQ(p, dec_probs[static_cast<size_t>(h) * stride + j]);
        sum += p;
      }
      EXPECT_NEAR(sum, 1.0f, 1e-5f);
    }
  }
}

TEST(KernelReference, CompactRowsMatchesKVCacheKeep) {
  const int D = 3, len = 7;
  KVCache cache(1, 1, D);
  const auto k = random_vector(static_cast<size_t>(len) * D, 5), v = random_vector(k.size(), 6);
  for (int j = 0; j < len; ++j) cache.append(0, 0, &k[j * D], &v[j * D], 100 + j);
  const std::vector<int32_t> keep = {0, 2, 3, 6};
  std::vector<float> keys = k, values = v;
  std::vector<int32_t> positions(len);
  std::iota(positions.begin(), positions.end(), 100);
  kernels::ref::compact_rows(keys.data(), D * sizeof(float), len, keep);
  kernels::ref::compact_rows(values.data(), D * sizeof(float), len, keep);
  kernels::ref::compact_rows(positions.data(), sizeof(int32_t), len, keep);
  cache.keep(0, 0, keep);
  const HeadCache& h = cache.head(0, 0);
  ASSERT_EQ(h.len, 4);
  for (int i = 0; i < 4 * D; ++i) {
    EXPECT_EQ(keys[i], h.keys[i]);
    EXPECT_EQ(values[i], h.values[i]);
  }
  for (int r = 0; r < 4; ++r) EXPECT_EQ(positions[r], h.positions[r]);
  const std::vector<int32_t> bad = {2, 1};
  EXPECT_THROW(kernels::ref::compact_rows(keys.data(), D * sizeof(float), len, bad), Error);
}

TEST(KernelReference, SpectrogramFeaturesAreRecencyThenNormalisedEma) {
  const SpectrogramConfig config;
  const RecencyConfig recency;
  const AttentionSpectrogram spectrogram(config);
  const int Q = 32, N = 32;
  std::vector<float> attention(static_cast<size_t>(Q) * N, 0.0f);
  for (int t = 0; t < Q; ++t)
    for (int j = 0; j <= t; ++j) attention[static_cast<size_t>(t) * N + j] = 1.0f / (t + 1);
  std::vector<int32_t> positions(N);
  std::iota(positions.begin(), positions.end(), 0);
  std::vector<float> mean(config.n_bins(), 0.5f), var(config.n_bins(), 4.0f);
  const FeatureNormalizer normalizer(mean, var);
  SpectralState state;
  const int F = recency.dim + config.n_bins();
  std::vector<float> features(static_cast<size_t>(N) * F);
  kernels::ref::spectrogram_features(spectrogram, recency, normalizer, attention.data(), Q, N, positions.data(), state,
                                     features.data());
  ASSERT_EQ(state.n_tokens, N);
  // The newest token has age 0: sines 0, cosines 1.
  const float* newest = features.data() + static_cast<size_t>(N - 1) * F;
  for (int k = 0; k < 4; ++k) {
    EXPECT_FLOAT_EQ(newest[k], 0.0f);
    EXPECT_FLOAT_EQ(newest[4 + k], 1.0f);
  }
  for (int j = 0; j < N; ++j)
    for (int k = 0; k < config.n_bins(); ++k)
      EXPECT_FLOAT_EQ(features[static_cast<size_t>(j) * F + recency.dim + k],
                      (state.ema_NxB[static_cast<size_t>(j) * config.n_bins() + k] - 0.5f) / 2.0f);
}

TEST(KernelReference, BamBatchedMatchesPerSequenceScores) {
  const ScorerShape shape;
  const int P = 2;
  const std::vector<int32_t> offsets = {0, 5, 5, 12};  // an empty sequence in the middle
  const auto params = random_vector(static_cast<size_t>(P) * shape.n_params(), 7, -0.3f, 0.3f);
  const auto features = random_vector(static_cast<size_t>(offsets.back()) * shape.n_features, 8);
  std::vector<float> scores(static_cast<size_t>(P) * offsets.back(), -1.0f);
  kernels::ref::bam_scores_batched(shape, params.data(), P, offsets, features.data(), scores.data());
  for (int p = 0; p < P; ++p) {
    std::vector<float> expect(7);
    score_tokens(shape, std::span(params.data() + static_cast<size_t>(p) * shape.n_params(), shape.n_params()),
                 features.data() + 5 * shape.n_features, 7, expect.data());
    for (int i = 0; i < 7; ++i) EXPECT_EQ(scores[static_cast<size_t>(p) * 12 + 5 + i], expect[i]);
  }
  const std::vector<float> zero(shape.n_params(), 0.0f);
  std::vector<float> zs(12, 1.0f);
  kernels::ref::bam_scores_batched(shape, zero.data(), 1, offsets, features.data(), zs.data());
  for (float s : zs) EXPECT_EQ(s, 0.0f);
}

}  // namespace
}  // namespace nammkit
