// Selection rule (spec §2.5) and the baselines' budgets on synthetic windows.
#include <gtest/gtest.h>

#include <numeric>
#include <random>

#include "namm/baselines.h"
#include "namm/policy_file.h"
#include "namm/selection.h"

using namespace nammkit;

namespace {
KeepLists select(const std::vector<std::vector<float>>& s, SelectionOptions o = {}) {
  std::vector<std::span<const float>> v(s.begin(), s.end());
  return select_tokens(v, o);
}
using Idx = std::vector<int32_t>;
}  // namespace

TEST(NammSelection, ThresholdAndNewestAlwaysKept) {
  KeepLists k = select({{-1, 0, 2, -3, -5}});
  EXPECT_EQ(k[0], (Idx{1, 2, 4}));  // 0 passes (>= 0); the newest is kept although negative
  k = select({{-1, -1, -1}});
  EXPECT_EQ(k[0], (Idx{2}));
  k = select({{NAN, 1, NAN}});
  EXPECT_EQ(k[0], (Idx{1, 2}));  // NaN never passes
}

TEST(NammSelection, KeepFractionRanksInsteadOfThresholding) {
  SelectionOptions o;
  o.keep_fraction = 0.5;
  // After 8 tokens seen, each head keeps floor(0.5 * 8) = 4: its top 4 by score (the newest always
  // among them), passing the threshold or not.
  KeepLists k = select({{5, -1, 3, -2, 1, -9}, {-4, -1, -3, -0.5f, -2, -9}}, with_budget(o, 8));
  EXPECT_EQ(k[0], (Idx{0, 2, 4, 5}));
  EXPECT_EQ(k[1], (Idx{1, 3, 4, 5}));
  k = select({{5, -1, 3}}, with_budget(o, 8));  // within budget: keeps everything
  EXPECT_EQ(k[0], (Idx{0, 1, 2}));
  o.max_tokens_per_head = 2;  // an existing cap below the budget still applies
  EXPECT_EQ(with_budget(o, 8).max_tokens_per_head, 2);
  EXPECT_EQ(with_budget(SelectionOptions{}, 8).threshold, 0.0f);  // no fraction: unchanged
}

TEST(NammSelection, SharedMaxKKeepsTopKPerHeadChronologically) {
  // Head 0 passes 4 (incl. newest), head 1 passes 1 (newest): both keep K = 4.
  KeepLists k = select({{5, -1, 3, -2, 1, -9}, {-4, -1, -3, -0.5f, -2, -9}});
  EXPECT_EQ(k[0], (Idx{0, 2, 4, 5}));
  EXPECT_EQ(k[1], (Idx{1, 3, 4, 5}));  // newest + the three highest failing scores
  SelectionOptions per_head{SelectionMode::PerHead};
  k = select({{5, -1, 3, -2, 1, -9}, {-4, -1, -3, -0.5f, -2, -9}}, per_head);
  EXPECT_EQ(k[0], (Idx{0, 2, 4, 5}));
  EXPECT_EQ(k[1], (Idx{5}));
}

TEST(NammSelection, CapAndDeterministicTies) {
  SelectionOptions cap{SelectionMode::SharedMaxK, 0.0f, 3};
  KeepLists k = select({{1, 1, 1, 1, 1, 1}}, cap);
  EXPECT_EQ(k[0], (Idx{3, 4, 5}));  // equal scores: newer first
  k = select({{9, 1, 8, 1, 1, -1}}, cap);
  EXPECT_EQ(k[0], (Idx{0, 2, 5}));
  SelectionOptions thr{SelectionMode::PerHead, 2.0f, 0};
  k = select({{1, 2, 3, 0}}, thr);
  EXPECT_EQ(k[0], (Idx{1, 2, 3}));
}

// A synthetic layer window: n_heads heads of n keys at positions [seen - n, seen) after some
// eviction, with random keys and causal random attention.
struct FakeWindow {
  LayerWindow window;
  std::vector<std::vector<float>> keys, attention;
  std::vector<std::vector<int32_t>> positions;
  std::vector<int32_t> qpos;
  FakeWindow(int layer, int n_heads, std::vector<int> n_keys, int nq, int64_t seen, int head_dim, std::mt19937& rng) {
    std::normal_distribution<float> g;
    std::uniform_real_distribution<float> u(0, 1);
    window.layer = layer;
    window.head_dim = head_dim;
    window.n_queries = nq;
    for (int t = 0; t < nq; ++t) qpos.push_back(static_cast<int32_t>(seen - nq + t));
    window.query_positions = qpos.data();
    keys.resize(n_heads), attention.resize(n_heads), positions.resize(n_heads);
    for (int h = 0; h < n_heads; ++h) {
      const int n = n_keys[h];
      keys[h].resize(static_cast<size_t>(n) * head_dim);
      for (float& x : keys[h]) x = g(rng);
      positions[h].resize(n);
      const int n_old = n - nq;
      for (int j = 0; j < n_old; ++j) positions[h][j] = j * 2;  // old tokens: sparse positions
      for (int t = 0; t < nq; ++t) positions[h][n_old + t] = qpos[t];
      attention[h].assign(static_cast<size_t>(nq) * n, 0.0f);
      for (int t = 0; t < nq; ++t) {
        float s = 0;
        for (int j = 0; j <= n_old + t; ++j) s += (attention[h][static_cast<size_t>(t) * n + j] = u(rng));
        for (int j = 0; j <= n_old + t; ++j) attention[h][static_cast<size_t>(t) * n + j] /= s;
      }
      window.heads.push_back(HeadWindow{n, keys[h].data(), keys[h].data(), positions[h].data(), attention[h].data()});
    }
  }
};

TEST(NammBaselines, BudgetParsing) {
  EXPECT_EQ(Budget::parse("512", "t").tokens_for(10000), 512);
  EXPECT_TRUE(Budget::parse("0.25", "t").is_fraction);
  EXPECT_EQ(Budget::parse("0.25", "t").tokens_for(2048), 512);
  EXPECT_EQ(Budget::parse("0.1", "t").tokens_for(30), 3);
  EXPECT_EQ(Budget::parse("1.0", "t").tokens_for(100), 100);
  EXPECT_THROW(Budget::parse("0", "t"), std::exception);
  EXPECT_THROW(Budget::parse("1.5", "t"), std::exception);
  EXPECT_THROW(Budget::parse("abc", "t"), std::exception);
}

TEST(NammBaselines, EachHoldsItsBudgetExactly) {
  std::mt19937 rng(2);
  for (const char* spec : {"streaming:40,sinks=4", "h2o:40", "l2:40", "random:40,seed=3", "h2o:0.1", "streaming:0.1"}) {
    auto policy = make_baseline_policy(spec);
    ModelConfig cfg;
    cfg.n_layers = 2;
    cfg.n_kv_heads = 3;
    policy->begin_sequence(cfg);
    // Heads of different lengths, all above budget.
    FakeWindow fw(1, 3, {100, 64, 80}, 32, 400, 8, rng);
    const KeepLists keep = policy->update(fw.window);
    const int budget = 40;  // 40 tokens, or 0.1 of the 400 seen
    ASSERT_EQ(keep.size(), 3u) << spec;
    for (int h = 0; h < 3; ++h) {
      EXPECT_EQ(static_cast<int>(keep[h].size()), budget) << spec << " head " << h;
      EXPECT_EQ(keep[h].back(), fw.window.heads[h].n_keys - 1) << spec << ": newest kept";
      EXPECT_TRUE(std::is_sorted(keep[h].begin(), keep[h].end()));
      EXPECT_EQ(std::adjacent_find(keep[h].begin(), keep[h].end()), keep[h].end());
    }
    // Under budget: keep everything (32 tokens; 40 or 0.1 of 1000 seen allowed).
    FakeWindow small(0, 3, {32, 32, 32}, 32, 1000, 8, rng);
    EXPECT_TRUE(policy->update(small.window).empty()) << spec;
    const PolicyStats* st = policy_stats(*policy);
    ASSERT_NE(st, nullptr);
    EXPECT_EQ(st->updates.size(), 2u);
  }
}

TEST(NammBaselines, StreamingKeepsSinksAndRecent) {
  std::mt19937 rng(4);
  StreamingLlmPolicy p(Budget::tokens(10), 4);
  FakeWindow fw(0, 1, {50}, 16, 50, 4, rng);
  EXPECT_EQ(p.update(fw.window)[0], (Idx{0, 1, 2, 3, 44, 45, 46, 47, 48, 49}));
}

TEST(NammBaselines, L2KeepsLowestNormKeys) {
  std::mt19937 rng(6);
  L2NormPolicy p(Budget::tokens(5));
  FakeWindow fw(0, 1, {20}, 16, 20, 4, rng);
  std::vector<float> norm(19);
  for (int j = 0; j < 19; ++j)
    for (int i = 0; i < 4; ++i) norm[j] += fw.keys[0][j * 4 + i] * fw.keys[0][j * 4 + i];
  std::vector<int32_t> order(19);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return norm[a] < norm[b]; });
  Idx want(order.begin(), order.begin() + 4);
  std::sort(want.begin(), want.end());
  want.push_back(19);
  EXPECT_EQ(p.update(fw.window)[0], want);
}

TEST(NammBaselines, H2oAccumulatesAttentionAcrossUpdates) {
  // Window 1: 16 tokens, token 3 receives all the attention; budget 8 = 4 heavy + 4 recent.
  H2oPolicy p(Budget::tokens(8), 0.5);
  std::vector<float> att(16 * 16, 0.0f), keys(16 * 2, 0.0f);
  for (int t = 0; t < 16; ++t) att[t * 16 + std::min(t, 3)] = 1.0f;  // causal: queries 0..2 look at themselves
  std::vector<int32_t> pos(16), qpos(16);
  std::iota(pos.begin(), pos.end(), 0);
  qpos = pos;
  LayerWindow w{0, 2, 16, qpos.data(), {HeadWindow{16, keys.data(), keys.data(), pos.data(), att.data()}}};
  const KeepLists k = p.update(w);
  EXPECT_EQ(k[0], (Idx{0, 1, 2, 3, 12, 13, 14, 15}));  // 3 (13.0), then 0, 1, 2 (1.0 each) heavy
}

TEST(NammBaselines, RandomIsReproducible) {
  std::mt19937 rng(8);
  FakeWindow fw(1, 2, {60, 60}, 16, 600, 4, rng);
  RandomPolicy a(Budget::tokens(20), 5), b(Budget::tokens(20), 5), c(Budget::tokens(20), 6);
  const KeepLists ka = a.update(fw.window), kb = b.update(fw.window), kc = c.update(fw.window);
  EXPECT_EQ(ka, kb);
  EXPECT_NE(ka, kc);
  EXPECT_NE(ka[0], ka[1]);  // heads draw independently
}
