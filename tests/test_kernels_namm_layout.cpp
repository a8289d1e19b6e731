// The layout of a batched NAMM update (kernels/namm_batch_layout.h), checked on the CPU: the index
// functions the GPU kernels call, walked batch by batch exactly as GpuSpectrogram::update_batched walks
// them, must give every key the frames the causal mask lets it receive, once each, and the same EMA and
// tail as AttentionSpectrogram::update on each segment alone. Runs without a GPU (built where nvcc
// exists, like the other kernel tests).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/namm_batch_layout.h"
#include "namm/spectrogram.h"

namespace nammkit::kernels {
namespace {

constexpr int kQueries = 64;

// Segments with and without state, of different lengths (state survives eviction, so n_old is arbitrary).
std::vector<NammSegmentShape> mixed_segments() {
  std::vector<NammSegmentShape> segs;
  int member = 0;
  for (int n_old : {0, 64, 5, 130, 0, 37, 1}) segs.push_back({n_old + kQueries, n_old, member++ % 3});
  return segs;
}

// Attention rows of one segment, non-zero everywhere, also where a key is newer than the query: the
// causal frame mask must keep those entries out (with causal rows the masked frames are all zero, and
// a wrong mask would go unseen).
std::vector<float> dense_attention(int n_keys, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f / static_cast<float>(n_keys));
  std::vector<float> a(static_cast<size_t>(kQueries) * n_keys);
  for (float& v : a) v = u(rng);
  return a;
}

TEST(NammBatchLayout, OffsetsFollowTheSegments) {
  const SpectrogramConfig config;
  const auto segs = mixed_segments();
  const NammBatchLayout layout = plan_namm_batch(segs, kQueries, config, 3);
  ASSERT_EQ(layout.n_segments(), int(segs.size()));
  EXPECT_EQ(layout.n_frames, kQueries / config.hop);
  int keys = 0, old = 0;
  for (size_t s = 0; s < segs.size(); ++s) {
    EXPECT_EQ(layout.key_offset[s], keys);
    EXPECT_EQ(layout.old_offset[s], old);
    EXPECT_EQ(layout.frame_offset[s], int64_t{keys} * layout.n_frames);
    EXPECT_EQ(layout.params_index[s], segs[s].params_index);
    keys += segs[s].n_keys;
    old += segs[s].n_old;
  }
  EXPECT_EQ(layout.total_keys(), keys);
  EXPECT_EQ(layout.total_old(), old);
  EXPECT_EQ(layout.max_keys(), 130 + kQueries);
}

TEST(NammBatchLayout, EveryMaskedFrameReachesItsKeyOnce) {
  const SpectrogramConfig config;
  const NammBatchLayout layout = plan_namm_batch(mixed_segments(), kQueries, config, 3);
  const int S = layout.n_segments(), R = layout.total_keys(), M = layout.n_frames;
  for (int batch : {1, 7, 64, 100, 1000, 1 << 16}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    std::vector<int> added(size_t(R) * M, 0);
    for (int64_t g0 = 0; g0 < layout.total_frames(); g0 += batch) {
      const RowRange rows = rows_of_batch(layout, g0, batch);
      ASSERT_LE(rows.last - rows.first, batch + 2 * layout.max_keys());
      // Every frame of the batch belongs to a row the accumulation visits (what frames_kernel reads).
      for (int64_t g = g0; g < std::min(g0 + batch, layout.total_frames()); ++g) {
        const int s = segment_containing<int64_t>(layout.frame_offset.data(), S, g);
        const int n_keys = layout.key_offset[s + 1] - layout.key_offset[s];
        const int64_t local = g - layout.frame_offset[s];
        ASSERT_LT(local / n_keys, M);
        const int r = layout.key_offset[s] + int(local % n_keys);
        ASSERT_GE(r, rows.first);
        ASSERT_LT(r, rows.last);
      }
      // What ema_accumulate_kernel adds: each row of the range, its frames in the batch past its mask.
      for (int r = rows.first; r < rows.last; ++r) {
        const int s = segment_containing<int32_t>(layout.key_offset.data(), S, r);
        const int n_keys = layout.key_offset[s + 1] - layout.key_offset[s], j = r - layout.key_offset[s];
        int lo = 0, hi = -1;
        frames_of_key_in_batch(layout.frame_offset[s], n_keys, j, M, g0, batch, &lo, &hi);
        lo = std::max(lo, first_frame_of_key(j, layout.n_old[s], config.hop));
        for (int m = lo; m <= hi; ++m) {
          const int64_t g = layout.frame_offset[s] + int64_t{m} * n_keys + j;
          ASSERT_GE(g, g0);
          ASSERT_LT(g, g0 + batch);
          ++added[size_t(r) * M + m];
        }
      }
    }
    for (int s = 0; s < S; ++s)
      for (int j = 0; j < layout.key_offset[s + 1] - layout.key_offset[s]; ++j)
        for (int m = 0; m < M; ++m) {
          const int want = m >= first_frame_of_key(j, layout.n_old[s], config.hop) ? 1 : 0;
          ASSERT_EQ(added[size_t(layout.key_offset[s] + j) * M + m], want)
              << "segment " << s << " key " << j << " frame " << m;
        }
  }
}

// The batched update done on the CPU the way the kernels do it (frames by global index in batches,
// accumulation over rows_of_batch, carry-over and tail per row), against AttentionSpectrogram::update.
TEST(NammBatchLayout, BatchedWalkEqualsEachSegmentAlone) {
  const SpectrogramConfig config;
  const AttentionSpectrogram spectrogram(config);
  const int bins = config.n_bins(), O = config.overlap(), hop = config.hop, n_fft = config.n_fft;
  const auto segs = mixed_segments();
  const NammBatchLayout layout = plan_namm_batch(segs, kQueries, config, 3);
  const int S = layout.n_segments(), M = layout.n_frames;

  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.0f, 0.1f);
  std::vector<std::vector<float>> attention(S);
  std::vector<SpectralState> alone(S);
  for (int s = 0; s < S; ++s) {
    attention[s] = dense_attention(segs[s].n_keys, rng);
    SpectralState& st = alone[s];
    st.n_tokens = segs[s].n_old;
    st.ema_NxB.resize(size_t(st.n_tokens) * bins);
    st.tail_NxO.resize(size_t(st.n_tokens) * O);
    for (float& v : st.ema_NxB) v = u(rng);
    for (float& v : st.tail_NxO) v = u(rng);
  }
  const std::vector<SpectralState> before = alone;
  for (int s = 0; s < S; ++s) spectrogram.update(attention[s].data(), kQueries, segs[s].n_keys, alone[s]);

  const std::vector<double> weights = spectrogram.frame_weights(M);
  const float carry = static_cast<float>(spectrogram.carry_over(M));
  const int R = layout.total_keys(), batch = 23;
  std::vector<float> ema(size_t(R) * bins, 0.0f), tail(size_t(R) * O);
  std::vector<float> samples(n_fft), mags(size_t(batch) * bins);
  auto sample = [&](int s, int j, int p) {  // padded_sample
    const int n_keys = segs[s].n_keys, n_old = segs[s].n_old;
    if (p < O) return j < n_old ? before[s].tail_NxO[size_t(j) * O + p] : 0.0f;
    return attention[s][size_t(p - O) * n_keys + j];
  };
  for (int64_t g0 = 0; g0 < layout.total_frames(); g0 += batch) {
    for (int b = 0; b < batch && g0 + b < layout.total_frames(); ++b) {  // frames_kernel + cuFFT
      const int64_t g = g0 + b;
      const int s = segment_containing<int64_t>(layout.frame_offset.data(), S, g);
      const int n_keys = segs[s].n_keys;
      const int64_t local = g - layout.frame_offset[s];
      const int m = int(local / n_keys), j = int(local % n_keys);
      for (int i = 0; i < n_fft; ++i) samples[i] = sample(s, j, m * hop + i);
      spectrogram.frame_magnitudes(samples.data(), mags.data() + size_t(b) * bins);
    }
    const RowRange rows = rows_of_batch(layout, g0, batch);
    for (int r = rows.first; r < rows.last; ++r) {  // ema_accumulate_kernel
      const int s = segment_containing<int32_t>(layout.key_offset.data(), S, r);
      const int n_keys = segs[s].n_keys, j = r - layout.key_offset[s];
      int lo = 0, hi = -1;
      frames_of_key_in_batch(layout.frame_offset[s], n_keys, j, M, g0, batch, &lo, &hi);
      lo = std::max(lo, first_frame_of_key(j, segs[s].n_old, hop));
      for (int m = lo; m <= hi; ++m) {
        const int64_t b = layout.frame_offset[s] + int64_t{m} * n_keys + j - g0;
        for (int k = 0; k < bins; ++k)
          ema[size_t(r) * bins + k] += static_cast<float>(weights[m]) * mags[size_t(b) * bins + k];
      }
    }
  }
  for (int r = 0; r < R; ++r) {  // finish_kernel
    const int s = segment_containing<int32_t>(layout.key_offset.data(), S, r);
    const int j = r - layout.key_offset[s];
    if (j < segs[s].n_old)
      for (int k = 0; k < bins; ++k) ema[size_t(r) * bins + k] += carry * before[s].ema_NxB[size_t(j) * bins + k];
    for (int o = 0; o < O; ++o) tail[size_t(r) * O + o] = sample(s, j, kQueries + o);
  }

  for (int s = 0; s < S; ++s) {
    SCOPED_TRACE("segment " + std::to_string(s));
    ASSERT_EQ(alone[s].n_tokens, segs[s].n_keys);
    for (size_t i = 0; i < alone[s].ema_NxB.size(); ++i) {
      const float want = alone[s].ema_NxB[i], got = ema[size_t(layout.key_offset[s]) * bins + i];
      ASSERT_NEAR(got, want, 1e-6f + 1e-5f * std::fabs(want)) << "ema entry " << i;
    }
    for (size_t i = 0; i < alone[s].tail_NxO.size(); ++i)
      ASSERT_EQ(tail[size_t(layout.key_offset[s]) * O + i], alone[s].tail_NxO[i]) << "tail entry " << i;
  }
}

TEST(NammBatchLayout, BadShapesAreErrors) {
  const SpectrogramConfig config;
  auto message = [&](std::vector<NammSegmentShape> segs, int n_queries, int n_params) {
    try {
      plan_namm_batch(segs, n_queries, config, n_params);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({{70, 0, 0}}, 64, 1).find("segment 0: expected 64 new keys"), std::string::npos);
  EXPECT_NE(message({{64, 0, 0}, {64, 0, 2}}, 64, 2).find("segment 1: params_index"), std::string::npos);
  EXPECT_NE(message({{40, 0, 0}}, 40, 1).find("multiple of hop"), std::string::npos);
  EXPECT_EQ(message({{64, 0, 0}, {70, 6, 1}}, 64, 2), "no error");
}

// How DeviceNamm cuts (session, layer) jobs into passes: consecutive, covering every job once, each
// pass within every budget unless it is a single job that alone exceeds it.
TEST(NammBatchLayout, PassesStayWithinTheBudget) {
  using Passes = std::vector<int>;
  const std::vector<int64_t> even = {3, 3, 3, 3};
  NammPassBudget budget;
  EXPECT_EQ(cut_namm_passes(even, 2, 64, budget), (Passes{0, 4}));
  budget.key_rows = 6;
  EXPECT_EQ(cut_namm_passes(even, 2, 64, budget), (Passes{0, 2, 4}));
  budget = {};
  budget.attention_floats = 3 * 64 * 3;  // three jobs' attention
  EXPECT_EQ(cut_namm_passes(even, 2, 64, budget), (Passes{0, 3, 4}));
  budget = {};
  budget.segments = 20;  // two jobs of 8 KV heads
  EXPECT_EQ(cut_namm_passes(even, 8, 64, budget), (Passes{0, 2, 4}));
  budget = {};
  budget.key_rows = 5;  // the first job alone exceeds it
  EXPECT_EQ(cut_namm_passes(std::vector<int64_t>{10, 1, 1, 4}, 2, 64, budget), (Passes{0, 1, 3, 4}));
  budget.key_rows = 1;  // every job a pass of its own
  EXPECT_EQ(cut_namm_passes(even, 2, 64, budget), (Passes{0, 1, 2, 3, 4}));
  EXPECT_EQ(cut_namm_passes(std::vector<int64_t>{}, 2, 64, budget), (Passes{0}));

  // Random jobs against the invariants.
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> rows(0, 500);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int64_t> jobs(1 + trial % 37);
    for (int64_t& r : jobs) r = rows(rng);
    NammPassBudget b;
    b.key_rows = 1 + rows(rng) * 2;
    b.attention_floats = 1 + int64_t(rows(rng)) * 100;
    b.segments = 4 * (1 + trial % 9);
    const Passes first = cut_namm_passes(jobs, 4, 16, b);
    ASSERT_EQ(first.front(), 0);
    ASSERT_EQ(first.back(), int(jobs.size()));
    for (size_t p = 0; p + 1 < first.size(); ++p) {
      ASSERT_LT(first[p], first[p + 1]) << "empty pass";
      int64_t r = 0;
      for (int j = first[p]; j < first[p + 1]; ++j) r += jobs[size_t(j)];
      const int n = first[p + 1] - first[p];
      if (n > 1) {
        EXPECT_LE(r, b.key_rows);
        EXPECT_LE(r * 16, b.attention_floats);
        EXPECT_LE(4 * n, b.segments);
      }
    }
  }
  NammPassBudget small;
  small.segments = 4;
  EXPECT_THROW(cut_namm_passes(even, 8, 64, small), Error);
  small.segments = 8;
  small.key_rows = 0;
  EXPECT_THROW(cut_namm_passes(even, 8, 64, small), Error);
}

}  // namespace
}  // namespace nammkit::kernels
