// B'MOJO's innovation scorer: the Session's per-position surprisal (MemoryPolicy::needs_surprisal)
// and the eidetic memory it selects (the M most surprising tokens that left the window).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "core/error.h"
#include "namm/export_bmojo.h"
#include "tests/sanitizers.h"
#include "tests/shared_model.h"
#include "transformer/session.h"

namespace nammkit {
namespace {

using testing::smollm2;
using testing::stories;

std::vector<int32_t> text_tokens(const Model& model, int n) {
  std::string text;
  std::vector<int32_t> ids;
  while (static_cast<int>(ids.size()) < n) {
    text += "Once upon a time there was a little girl named Lily. She liked to play with her red ball in the park. ";
    text += "One day a big dog came and took the ball, and Lily was sad. ";
    ids = model.tokenizer.encode(text, true);
  }
  ids.resize(n);
  return ids;
}

// Records the surprisal the Session reports, by absolute position, and keeps every token. With
// `inner` it forwards everything to that policy (to see what a BmojoPolicy was told).
class SurprisalRecorder final : public MemoryPolicy {
 public:
  explicit SurprisalRecorder(MemoryPolicy* inner = nullptr) : inner_(inner) {}
  std::string name() const override { return "surprisal_recorder"; }
  bool needs_attention() const override { return inner_ && inner_->needs_attention(); }
  bool needs_surprisal() const override { return true; }
  void observe_surprisal(int64_t first, std::span<const float> s) override {
    if (by_position.size() < size_t(first) + s.size()) by_position.resize(size_t(first) + s.size(), NAN);
    std::copy(s.begin(), s.end(), by_position.begin() + first);
    if (inner_) inner_->observe_surprisal(first, s);
  }
  void begin_sequence(const ModelConfig& c) override {
    by_position.clear();
    if (inner_) inner_->begin_sequence(c);
  }
  KeepLists update(const LayerWindow& w) override { return inner_ ? inner_->update(w) : KeepLists{}; }

  std::vector<float> by_position;

 private:
  MemoryPolicy* inner_;
};

// −log softmax(logits)[token], in double.
double surprisal_of(const float* logits, int vocab, int32_t token) {
  const float max = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - max);
  return -(double(logits[token]) - max - std::log(sum));
}

// Every position's reported surprisal equals −log p from the same session's full logits (same
// chunking: the same numbers), and, within float noise, from feeding one token at a time.
void check_surprisal_matches_logits(const Model& model, int n_tokens) {
  const std::vector<int32_t> tokens = text_tokens(model, n_tokens);
  const int vocab = model.config.vocab_size;
  SessionOptions opt;
  opt.update_interval = 32;
  // f32 activations: int8 activation rounding would amplify the decode and prefill kernels' float
  // differences to ~0.1 nats on SmolLM2 in the token-by-token comparison below.
  opt.float_activations = true;
  SurprisalRecorder rec;
  Session s(model, &rec, opt);
  std::vector<float> all;
  s.feed(tokens, &all);
  ASSERT_EQ(rec.by_position.size(), tokens.size());
  EXPECT_TRUE(std::isinf(rec.by_position[0]) && rec.by_position[0] > 0);  // nothing predicted BOS
  for (size_t p = 1; p < tokens.size(); ++p)
    EXPECT_NEAR(rec.by_position[p], surprisal_of(all.data() + (p - 1) * vocab, vocab, tokens[p]), 1e-4) << p;

  Session step(model, nullptr, opt);
  for (size_t p = 0; p + 1 < tokens.size(); ++p) {
    const std::vector<float>& logits = step.feed(std::span<const int32_t>(tokens).subspan(p, 1));
    const double direct = surprisal_of(logits.data(), vocab, tokens[p + 1]);
    EXPECT_NEAR(rec.by_position[p + 1], direct, 1e-3 + 1e-3 * direct) << p + 1;
  }
}

TEST(BmojoInnovation, SurprisalMatchesFullLogitsStories) {
  REQUIRE_STORIES();
  check_surprisal_matches_logits(stories(), 150);
}

TEST(BmojoInnovation, SurprisalMatchesFullLogitsSmolLM2) {
  REQUIRE_SMOLLM2();
#if NAMMKIT_UNDER_ASAN
  const int tokens = 40;  // past one update interval; 70 take 172 s under the sanitizers (-O1)
#else
  const int tokens = 70;
#endif
  check_surprisal_matches_logits(smollm2(), tokens);
}

// However the input is split (prefill chunks, single decode tokens), each position gets the same
// surprisal: a chunk's first token uses the previous chunk's last logits.
TEST(BmojoInnovation, SurprisalIndependentOfHowTheInputIsSplit) {
  REQUIRE_STORIES();
  const std::vector<int32_t> tokens = text_tokens(stories(), 120);
  SessionOptions opt;
  opt.update_interval = 32;
  SurprisalRecorder whole, pieces;
  Session a(stories(), &whole, opt), b(stories(), &pieces, opt);
  a.feed(tokens);
  size_t at = 0;
  for (size_t n : {1, 5, 26, 1, 1, 40, 46}) {
    b.feed(std::span<const int32_t>(tokens).subspan(at, n));
    at += n;
  }
  ASSERT_EQ(at, tokens.size());
  ASSERT_EQ(pieces.by_position.size(), tokens.size());
  for (size_t p = 1; p < tokens.size(); ++p) EXPECT_NEAR(pieces.by_position[p], whole.by_position[p], 2e-2) << p;
  a.reset();
  EXPECT_TRUE(whole.by_position.empty());  // reset() begins a new sequence: nothing predicted yet
}

// The memory after the last update is the top M by surprisal (ties: newer) of all tokens that left
// the window: top-M of (top-M so far ∪ new evictees) is the top-M of everything, as scores never change.
TEST(BmojoInnovation, KeepsTheTopMSurprisalTokensThatLeftTheWindow) {
  REQUIRE_STORIES();
  const std::vector<int32_t> tokens = text_tokens(stories(), 256);
  for (BmojoGranularity gran : {BMOJO_PER_KV_HEAD, BMOJO_TOKEN_PER_LAYER}) {
    BmojoOptions o;
    o.window = 64, o.memory = 16, o.interval = 32, o.scorer = BmojoScorer::Innovation, o.granularity = gran;
    BmojoPolicy policy(o, std::nullopt);
    EXPECT_TRUE(policy.needs_surprisal());
    EXPECT_EQ(policy.name(), "bmojo_innovation");
    SurprisalRecorder rec(&policy);
    Session s(stories(), &rec, bmojo_session_options(o));
    s.feed(tokens);
    const int cutoff = 256 - o.window;
    std::vector<int32_t> left(cutoff);
    for (int p = 0; p < cutoff; ++p) left[p] = p;
    std::sort(left.begin(), left.end(), [&](int32_t a, int32_t b) {
      const float sa = rec.by_position[a], sb = rec.by_position[b];
      return sa != sb ? sa > sb : a > b;
    });
    const std::set<int32_t> expected(left.begin(), left.begin() + o.memory);
    EXPECT_TRUE(expected.count(0)) << "BOS scores +inf";
    const ModelConfig& c = stories().config;
    for (int l = 0; l < c.n_layers; ++l)
      for (int g = 0; g < c.n_kv_heads; ++g) {
        const HeadCache& h = s.cache().head(l, g);
        std::set<int32_t> memory;
        for (int j = 0; j < h.len; ++j) {
          if (h.memory[j]) memory.insert(h.positions[j]);
          else EXPECT_GE(h.positions[j], cutoff);  // the rest is the window
        }
        EXPECT_EQ(memory, expected) << "layer " << l << " head " << g;
      }
  }
}

TEST(BmojoInnovation, Deterministic) {
  REQUIRE_STORIES();
  const std::vector<int32_t> tokens = text_tokens(stories(), 300);
  const MemoryMode mode = parse_memory_mode("bmojo:64,16,interval=32,scorer=innovation", "t");
  auto run = [&] {
    MemoryModeRuntime rt = make_memory_mode(mode, nullptr);  // innovation needs no NAMM policy
    Session s(stories(), rt.policy.get(), rt.session);
    std::vector<float> logits;
    s.feed(tokens, &logits);
    std::vector<int32_t> kept(s.cache().head(3, 0).positions.begin(),
                              s.cache().head(3, 0).positions.begin() + s.cache().head(3, 0).len);
    return std::make_pair(logits, kept);
  };
  const auto a = run(), b = run();
  EXPECT_EQ(a.first, b.first);
  EXPECT_EQ(a.second, b.second);
}

TEST(BmojoInnovation, ParsesAndNeedsTheSessionsSurprisal) {
  const MemoryMode m = parse_memory_mode("bmojo:64,16,scorer=innovation", "t");
  EXPECT_EQ(m.options.scorer, BmojoScorer::Innovation);
  EXPECT_STREQ(bmojo_scorer_name(BmojoScorer::Innovation), "innovation");
  // An update for tokens no Session reported (e.g. an injected entry) is an error, not a guess.
  BmojoOptions o;
  o.window = 2, o.memory = 1, o.interval = 4, o.scorer = BmojoScorer::Innovation;
  BmojoPolicy p(o, std::nullopt);
  ModelConfig c;
  c.n_layers = 1, c.n_kv_heads = 1;
  p.begin_sequence(c);
  const std::vector<int32_t> pos = {0, 1, 2, 3};
  LayerWindow w;
  w.n_queries = 4;
  w.query_positions = pos.data();
  w.heads.push_back(HeadWindow{.n_keys = 4, .positions = pos.data()});
  try {
    p.update(w);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no surprisal for position 0"), std::string::npos) << e.what();
  }
  const std::vector<float> s = {std::numeric_limits<float>::infinity(), 3.0f, 1.0f, 2.0f};
  p.observe_surprisal(0, s);
  const KeepLists keep = p.update(w);  // cutoff 2: candidates 0 and 1, M = 1 keeps BOS
  ASSERT_EQ(keep.size(), 1u);
  EXPECT_EQ(keep[0], (std::vector<int32_t>{0, 2, 3}));
}

}  // namespace
}  // namespace nammkit
