// B'MOJO mode: sliding window + eidetic memory managed by BmojoPolicy, and its export block.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/error.h"
#include "core/file_io.h"
#include "namm/export_bmojo.h"
#include "namm/policy_file.h"
#include "tests/shared_model.h"
#include "transformer/loader.h"
#include "transformer/session.h"

namespace nammkit {
namespace {

using testing::kStories;
using testing::stories;

std::vector<int32_t> text_tokens(int n) {
  const Tokenizer& tok = stories().tokenizer;
  std::string text;
  std::vector<int32_t> ids;
  while (static_cast<int>(ids.size()) < n) {
    text += "Once upon a time there was a little girl named Lily. She liked to play with her red ball in the park. ";
    ids = tok.encode(text, true);
  }
  ids.resize(n);
  return ids;
}

PolicyFile random_namm(float sigma, uint32_t seed) {
  PolicyFile f = make_namm_policy_file();
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sigma);
  for (int i = 0; i < f.params_size(); ++i) f.set_params(i, nd(rng));
  return f;
}

std::vector<float> run_logits(MemoryPolicy* policy, SessionOptions opt, const std::vector<int32_t>& tokens) {
  Session s(stories(), policy, opt);
  std::vector<float> logits;
  s.feed(tokens, &logits);
  return logits;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) e = std::max<double>(e, std::abs(a[i] - b[i]));
  return e;
}

TEST(ExportBmojo, ParseMemoryMode) {
  const MemoryMode m = parse_memory_mode("bmojo:128,32,interval=64,scorer=h2o,seed=3,granularity=layer", "t");
  EXPECT_TRUE(m.bmojo);
  EXPECT_EQ(m.options.window, 128);
  EXPECT_EQ(m.options.memory, 32);
  EXPECT_EQ(m.options.interval, 64);
  EXPECT_EQ(m.options.scorer, BmojoScorer::H2o);
  EXPECT_EQ(m.options.seed, 3u);
  EXPECT_EQ(m.options.granularity, BMOJO_TOKEN_PER_LAYER);
  EXPECT_FALSE(parse_memory_mode("full", "t").bmojo);
  EXPECT_THROW(parse_memory_mode("bmojo:128", "t"), Error);
  EXPECT_THROW(parse_memory_mode("bmojo:128,x", "t"), Error);
  EXPECT_THROW(parse_memory_mode("bmojo:128,4,bogus=1", "t"), Error);
  EXPECT_THROW(parse_memory_mode("swa:1", "t"), Error);
  EXPECT_THROW(make_memory_mode(parse_memory_mode("bmojo:64,8", "t"), nullptr), Error);  // namm needs a policy
}

// M = 0: every token that leaves the window is evicted, which is what the window hides anyway.
TEST(ExportBmojo, ZeroMemoryEqualsSlidingWindowAttention) {
  REQUIRE_STORIES();
  const std::vector<int32_t> tokens = text_tokens(400);
  // Same prefill chunking as the B'MOJO runs (chunks end at update boundaries), so only the policy differs.
  SessionOptions swa;
  swa.sliding_window = 96;
  swa.update_interval = 32;
  const std::vector<float> ref = run_logits(nullptr, swa, tokens);
  const PolicyFile namm = random_namm(0.5f, 7);
  for (BmojoScorer sc : {BmojoScorer::Namm, BmojoScorer::Recency, BmojoScorer::H2o, BmojoScorer::Random}) {
    BmojoOptions o;
    o.window = 96, o.memory = 0, o.interval = 32, o.scorer = sc;
    BmojoPolicy p(o, NammScoring::from(namm));
    const std::vector<float> got = run_logits(&p, bmojo_session_options(o), tokens);
    EXPECT_EQ(max_abs_diff(got, ref), 0.0) << bmojo_scorer_name(sc);  // masked vs evicted: bit-identical
    EXPECT_FALSE(p.stats().updates.empty());
  }
}

TEST(ExportBmojo, WindowCoveringTheSequenceEqualsFullCache) {
  REQUIRE_STORIES();
  const std::vector<int32_t> tokens = text_tokens(300);
  SessionOptions full;
  full.update_interval = 64;  // the same prefill chunking as the B'MOJO runs
  const std::vector<float> ref = run_logits(nullptr, full, tokens);
  for (BmojoScorer sc : {BmojoScorer::Namm, BmojoScorer::Recency, BmojoScorer::H2o}) {
    BmojoOptions o;
    o.window = 512, o.memory = 4, o.interval = 64, o.scorer = sc;
    BmojoPolicy p(o, NammScoring::from(random_namm(0.5f, 1)));
    EXPECT_EQ(max_abs_diff(run_logits(&p, bmojo_session_options(o), tokens), ref), 0.0) << bmojo_scorer_name(sc);
  }
}

TEST(ExportBmojo, BudgetHeldAfterEveryUpdate) {
  REQUIRE_STORIES();
  const std::vector<int32_t> tokens = text_tokens(480);
  for (BmojoGranularity gran : {BMOJO_PER_KV_HEAD, BMOJO_TOKEN_PER_LAYER})
    for (BmojoScorer sc : {BmojoScorer::Namm, BmojoScorer::Recency, BmojoScorer::H2o, BmojoScorer::Random}) {
      BmojoOptions o;
      o.window = 64, o.memory = 24, o.interval = 32, o.scorer = sc, o.granularity = gran;
      BmojoPolicy p(o, NammScoring::from(random_namm(0.5f, 3)));
      Session s(stories(), &p, bmojo_session_options(o));
      const ModelConfig& c = stories().config;
      int max_memory = 0;
      for (size_t at = 0; at < tokens.size(); at += o.interval) {
        s.feed(std::span<const int32_t>(tokens).subspan(at, o.interval));  // ends right after an update
        for (int l = 0; l < c.n_layers; ++l)
          for (int g = 0; g < c.n_kv_heads; ++g) {
            const HeadCache& h = s.cache().head(l, g);
            int mem = 0;
            for (int j = 0; j < h.len; ++j) {
              mem += h.memory[j];
              // Everything still in the window is kept.
              if (h.positions[j] >= s.position() - o.window) {
                EXPECT_EQ(h.memory[j], 0);
              }
            }
            EXPECT_LE(mem, o.memory) << bmojo_scorer_name(sc) << " layer " << l << " head " << g;
            max_memory = std::max(max_memory, mem);
            EXPECT_GE(h.len, std::min<int64_t>(s.position(), o.window));
          }
      }
      // Baseline scores are all >= 0, so they fill the budget; NAMM admits only scores >= 0.
      if (sc != BmojoScorer::Namm) {
        EXPECT_EQ(max_memory, o.memory) << bmojo_scorer_name(sc);
      }
    }
}

TEST(ExportBmojo, RecencyKeepsTheNewestCandidates) {
  REQUIRE_STORIES();
  BmojoOptions o;
  o.window = 64, o.memory = 16, o.interval = 32, o.scorer = BmojoScorer::Recency;
  BmojoPolicy p(o, std::nullopt);
  Session s(stories(), &p, bmojo_session_options(o));
  s.feed(text_tokens(256));
  const HeadCache& h = s.cache().head(2, 1);
  std::vector<int32_t> mem;
  for (int j = 0; j < h.len; ++j)
    if (h.memory[j]) mem.push_back(h.positions[j]);
  ASSERT_EQ(mem.size(), 16u);
  EXPECT_EQ(mem.front(), 256 - 64 - 16);
  EXPECT_EQ(mem.back(), 256 - 64 - 1);
}

TEST(ExportBmojo, ExportBlockRoundTrip) {
  BmojoOptions o;
  o.window = 256, o.memory = 64, o.interval = 128;
  const PolicyFile f = make_bmojo_export(random_namm(0.5f, 2), o, INNOVATION_LM_SURPRISAL);
  const PolicyFile back = parse_policy(serialize_policy(f), "mem");
  ASSERT_TRUE(back.has_bmojo());
  EXPECT_EQ(back.bmojo().window(), 256);
  EXPECT_EQ(back.bmojo().memory_budget(), 64);
  EXPECT_EQ(back.update_interval(), 128);
  EXPECT_EQ(back.bmojo().replaced_rule(), "INNOVATION_TOPM");
  const BmojoOptions again = bmojo_options_from(back);
  EXPECT_EQ(again.window, 256);
  EXPECT_EQ(again.interval, 128);
  EXPECT_NE(describe_policy(back).find("bmojo target"), std::string::npos);
  PolicyFile bad = f;
  bad.mutable_bmojo()->set_update_every(64);
  EXPECT_THROW(validate_policy_file(bad, "bad"), Error);
  bad = f;
  bad.mutable_bmojo()->set_memory_budget(-1);
  EXPECT_THROW(validate_policy_file(bad, "bad"), Error);
  EXPECT_THROW(make_bmojo_export(make_baseline_policy_file("h2o:0.5"), o, INNOVATION_NONE), Error);
}

}  // namespace
}  // namespace nammkit
