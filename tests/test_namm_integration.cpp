// NAMM and the baselines inside the real runtime (Session) on stories260K.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "core/file_io.h"
#include "namm/baselines.h"
#include "namm/namm_policy.h"
#include "namm/policy_file.h"
#include "transformer/loader.h"
#include "transformer/session.h"

using namespace nammkit;

namespace {
const std::string kModelPath = std::string(NAMMKIT_SHARED_DIR) + "/models/stories260K/stories260K.bin";
// Small chunks and intervals so a 448-token run sees 7 policy updates (NAMM needs interval % 16 == 0).
const SessionOptions kOptions{.prefill_chunk = 32, .update_interval = 64};

const Model& model() {
  static const Model m = load_model(kModelPath);
  return m;
}

// 448 tokens of TinyStories text (BOS first), cut at a multiple of the update interval so the
// last policy update happens at the very end.
const std::vector<int32_t>& tokens() {
  static const std::vector<int32_t> t = [] {
    const std::string text = read_file(std::string(NAMMKIT_SHARED_DIR) + "/data/tinystories/tinystories_sample.txt");
    std::vector<int32_t> ids = model().tokenizer.encode(text, true);
    while (ids.size() < 448) ids.insert(ids.end(), ids.begin() + 1, ids.end());
    ids.resize(448);
    return ids;
  }();
  return t;
}

// Runs the 448 tokens; `keep_session` receives the Session, valid until the next run().
std::vector<float> run(MemoryPolicy* policy, Session** keep_session = nullptr) {
  static std::unique_ptr<Session> last;
  last = std::make_unique<Session>(model(), policy, kOptions);
  std::vector<float> logits;
  last->feed(tokens(), &logits);
  if (keep_session) *keep_session = last.get();
  return logits;
}

std::vector<float> random_params(int n, float sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, sigma);
  std::vector<float> p(n);
  for (float& x : p) x = g(rng);
  return p;
}

class NammIntegration : public testing::Test {
 protected:
  void SetUp() override {
    if (!file_exists(kModelPath)) GTEST_SKIP() << "missing " << kModelPath;
  }
};
}  // namespace

TEST_F(NammIntegration, FullCachePoliciesAreBitIdenticalToNoPolicy) {
  const std::vector<float> reference = run(nullptr);
  KeepAllPolicy keep_all;
  EXPECT_EQ(run(&keep_all), reference);
  // All-zero NAMM parameters: every score 0 >= 0, so nothing is evicted, although NAMM runs fully.
  NammPolicy zero(NammConfig::reference(), std::vector<float>(4172, 0.0f), FeatureNormalizer::identity(17));
  Session* s = nullptr;
  EXPECT_EQ(run(&zero, &s), reference);
  EXPECT_EQ(s->stats().policy_updates, 7);
  EXPECT_EQ(s->stats().tokens_evicted, 0);
  EXPECT_EQ(zero.stats().updates.size(), 7u * 5u);
}

TEST_F(NammIntegration, RandomNammEvictsAndStatisticsAddUp) {
  const std::vector<float> full = run(nullptr);
  for (ScorerKind kind : {ScorerKind::Bam, ScorerKind::Mlp}) {
    NammConfig cfg = NammConfig::reference(kind);
    NammPolicy policy(cfg, random_params(cfg.scorer.n_params(), 0.5f, 12), FeatureNormalizer::identity(17));
    Session* s = nullptr;
    const std::vector<float> logits = run(&policy, &s);
    const PolicyStats& st = policy.stats();
    EXPECT_GT(st.tokens_evicted(), 0) << scorer_kind_name(kind);
    EXPECT_EQ(st.tokens_evicted(), s->stats().tokens_evicted);
    EXPECT_NE(logits, full) << "evictions change the logits";
    const ModelConfig& c = model().config;
    for (int l = 0; l < c.n_layers; ++l) {
      const LayerUpdateStats* u = st.last_update(l);
      ASSERT_NE(u, nullptr);
      EXPECT_EQ(u->position, 448);
      for (int h = 0; h < c.n_kv_heads; ++h) {
        EXPECT_EQ(s->cache().head(l, h).len, u->kept[h]) << "layer " << l << " head " << h;
        EXPECT_EQ(u->kept[h], u->max_kept()) << "shared K per layer";
        EXPECT_EQ(s->cache().head(l, h).positions.back(), 447) << "newest kept";
      }
    }
    // Totals over the run: before = kept of the previous update + 64 new tokens, per head.
    for (size_t i = c.n_layers; i < st.updates.size(); ++i) {
      const auto& prev = st.updates[i - c.n_layers];
      for (int h = 0; h < c.n_kv_heads; ++h) EXPECT_EQ(st.updates[i].before[h], prev.kept[h] + 64);
    }
  }
}

TEST_F(NammIntegration, BaselinesHoldTheirBudgetExactly) {
  for (const char* spec :
       {"streaming:48,sinks=4", "h2o:48", "l2:48", "random:48,seed=1", "h2o:0.25", "streaming:0.1", "l2:0.2"}) {
    auto policy = make_baseline_policy(spec);
    const PolicyFile file = make_baseline_policy_file(spec);
    const Budget budget{file.baseline().budget_is_fraction(), file.baseline().budget()};
    Session* s = nullptr;
    run(policy.get(), &s);
    const PolicyStats* st = policy_stats(*policy);
    ASSERT_NE(st, nullptr);
    for (const auto& u : st->updates)
      for (size_t h = 0; h < u.kept.size(); ++h)
        EXPECT_EQ(u.kept[h], std::min(u.before[h], budget.tokens_for(u.position))) << spec << " at " << u.position;
    for (int l = 0; l < model().config.n_layers; ++l)
      for (int h = 0; h < model().config.n_kv_heads; ++h)
        EXPECT_EQ(s->cache().head(l, h).len, budget.tokens_for(448)) << spec << " layer " << l << " head " << h;
    EXPECT_GT(s->stats().tokens_evicted, 0) << spec;
  }
}

TEST_F(NammIntegration, CollectedStatisticsTravelThroughAPolicyFile) {
  NammPolicy collector(NammConfig::reference(), std::vector<float>(4172, 0.0f), FeatureNormalizer::identity(17));
  collector.set_mode(NammMode::CollectStats);
  const std::vector<float> reference = run(nullptr);
  EXPECT_EQ(run(&collector), reference) << "collecting statistics keeps the full cache";
  // 7 updates, each pools every cached token of 5 layers x 4 heads: 64 + 128 + ... + 448 per head.
  EXPECT_EQ(collector.collected_stats().count(), int64_t{(64 + 448) * 7 / 2 * 20});

  PolicyFile file = make_namm_policy_file();
  file.set_update_interval(64);
  const std::vector<float> p = random_params(4172, 0.5f, 2);
  file.mutable_params()->Assign(p.begin(), p.end());
  set_norm_stats(file, collector.collected_stats());
  set_base_model(file, model());
  const std::string path = (std::filesystem::path(testing::TempDir()) / "namm_stats.nammpolicy").string();
  save_policy(file, path);
  const PolicyFile loaded = load_policy(path);
  EXPECT_EQ(loaded.norm().count(), collector.collected_stats().count());
  EXPECT_EQ(loaded.base_model().n_kv_heads(), 4);
  auto policy = make_policy(loaded);
  Session* s = nullptr;
  run(policy.get(), &s);
  EXPECT_EQ(s->stats().policy_updates, 7);
}
