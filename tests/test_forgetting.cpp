// What a policy forgets (tools/nammkit/forgetting*.h, token_kind.h): recorded kept sets on stories260K
// under baselines whose choices are known exactly, the summaries drawn from them, and the token kinds.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "namm/policy_file.h"
#include "tasks/lm_task.h"
#include "tests/shared_model.h"
#include "tools/nammkit/forgetting.h"
#include "tools/nammkit/forgetting_report.h"
#include "tools/nammkit/forgetting_summary.h"
#include "tools/nammkit/token_kind.h"

using namespace nammkit;
using namespace nammkit::cli;
using nammkit::testing::stories;
using nammkit::testing::stories_cpu;

namespace {

constexpr int kInterval = 32;
constexpr int kWindow = 256;       // tokens of the LM window, BOS included
constexpr int kFed = kWindow - 1;  // the last token is only predicted, never fed
constexpr int kJudged = 224;       // tokens seen at the last update (7 x 32); 31 wait for the next one

// One held-out TinyStories window of 256 tokens (BOS first), as configs/default_eval_tasks.json.
const Sample& lm_sample() {
  static const Task task = [] {
    LmTaskOptions o;
    o.split = Split::HeldOut;
    o.context_tokens = kWindow;
    o.score_tokens = 128;
    o.seed = 7;
    return make_lm_task(o, stories().tokenizer, 1);
  }();
  return task.samples.at(0);
}

SampleTrace trace(const std::string& spec, const Sample& sample = lm_sample()) {
  PolicyFile file = make_baseline_policy_file(spec);
  file.set_update_interval(kInterval);
  return trace_sample(stories_cpu(), file, sample, RunOptions{});
}

std::vector<int32_t> range(int32_t from, int32_t to) {
  std::vector<int32_t> r;
  for (int32_t p = from; p < to; ++p) r.push_back(p);
  return r;
}

// The recorded end state agrees with the session's own cache sizes.
void expect_final_matches_session(const SampleTrace& t) {
  for (int l = 0; l < t.n_layers; ++l)
    for (int h = 0; h < t.n_kv_heads; ++h)
      EXPECT_EQ(t.final_positions(l, h).size(), size_t(t.final_cache.at(size_t(l * t.n_kv_heads + h))))
          << "layer " << l << " head " << h;
}

}  // namespace

TEST(TokenKind, ClassifiesDecodedText) {
  EXPECT_EQ(classify_token_text(" the", "Once"), TokenKind::WordStart);
  EXPECT_EQ(classify_token_text("Once", ""), TokenKind::WordStart);
  EXPECT_EQ(classify_token_text("ing", " runn"), TokenKind::WordContinuation);
  EXPECT_EQ(classify_token_text("Hello", "\""), TokenKind::WordStart);  // after punctuation
  EXPECT_EQ(classify_token_text("Hello", "\n"), TokenKind::WordStart);  // after a newline
  EXPECT_EQ(classify_token_text("'s", "it"), TokenKind::WordContinuation);
  EXPECT_EQ(classify_token_text(".", "end"), TokenKind::Punctuation);
  EXPECT_EQ(classify_token_text(" \"", "said"), TokenKind::Punctuation);
  EXPECT_EQ(classify_token_text("\xE2\x80\x99", "don"), TokenKind::Punctuation);  // ’
  EXPECT_EQ(classify_token_text("\xE2\x80\x94", "a"), TokenKind::Punctuation);    // —
  EXPECT_EQ(classify_token_text(" 42", "is"), TokenKind::Number);
  EXPECT_EQ(classify_token_text("1,000", " "), TokenKind::Number);
  EXPECT_EQ(classify_token_text("3.5", " "), TokenKind::Number);
  EXPECT_EQ(classify_token_text("\n", "."), TokenKind::Whitespace);
  EXPECT_EQ(classify_token_text("  ", "a"), TokenKind::Whitespace);
  EXPECT_EQ(classify_token_text("", ""), TokenKind::Whitespace);
  EXPECT_EQ(classify_token_text("3)", " "), TokenKind::Other);
  EXPECT_EQ(classify_token_text("\xE2", "a"), TokenKind::Other);                   // one byte of a UTF-8 character
  EXPECT_EQ(classify_token_text("\xC3\xA9t\xC3\xA9", " "), TokenKind::WordStart);  // "été"
  EXPECT_STREQ(token_kind_name(TokenKind::WordContinuation), "word_continuation");
}

TEST(TokenKind, ClassifiesATokenisedSentence) {
  REQUIRE_STORIES();
  const Tokenizer& tok = stories().tokenizer;
  const std::vector<int32_t> ids = tok.encode("Once upon a time, Lily saw 3 cats.", true);
  std::vector<std::string> texts;
  std::vector<TokenKind> kinds;
  classify_tokens(tok, ids, texts, kinds);
  ASSERT_EQ(kinds.size(), ids.size());
  EXPECT_EQ(kinds[0], TokenKind::Special);  // BOS
  EXPECT_EQ(texts[1], "Once");
  EXPECT_EQ(kinds[1], TokenKind::WordStart);
  std::string joined;
  for (size_t i = 0; i < ids.size(); ++i) {
    joined += texts[i];
    if (texts[i] == ",") {
      EXPECT_EQ(kinds[i], TokenKind::Punctuation);
    }
    if (texts[i] == " 3" || texts[i] == "3") {
      EXPECT_EQ(kinds[i], TokenKind::Number);
    }
  }
  EXPECT_EQ(joined, "Once upon a time, Lily saw 3 cats.");
}

TEST(Forgetting, PositionRuns) {
  using Runs = std::vector<std::pair<int32_t, int32_t>>;
  EXPECT_EQ(position_runs({0, 1, 2, 5, 6, 9}), (Runs{{0, 3}, {5, 7}, {9, 10}}));
  EXPECT_EQ(position_runs({}), Runs{});
}

// StreamingLLM keeps the 4 sinks and the newest budget - 4 tokens at every update, in every head.
TEST(Forgetting, StreamingKeepsSinksAndTail) {
  REQUIRE_STORIES();
  const SampleTrace t = trace("streaming:64,sinks=4");
  ASSERT_EQ(t.tokens.size(), size_t(kFed));
  EXPECT_TRUE(std::equal(t.tokens.begin(), t.tokens.end(), lm_sample().tokens.begin()));
  ASSERT_EQ(t.updates.size(), size_t(kJudged / kInterval * t.n_layers));
  EXPECT_EQ(t.judged(), kJudged);
  for (const LayerUpdate& u : t.updates) {
    EXPECT_EQ(u.tokens_seen, (u.step + 1) * kInterval);
    std::vector<int32_t> want = range(0, int32_t(u.tokens_seen));
    if (u.tokens_seen > 64) {
      want = range(0, 4);
      for (int32_t p : range(int32_t(u.tokens_seen) - 60, int32_t(u.tokens_seen))) want.push_back(p);
    }
    for (size_t h = 0; h < u.kept.size(); ++h) {
      EXPECT_EQ(u.kept[h], want) << "step " << u.step << " layer " << u.layer << " head " << h;
      EXPECT_EQ(u.before[h], std::min<int64_t>(u.tokens_seen, 64 + kInterval));
    }
  }
  expect_final_matches_session(t);

  // Kept by position (over the judged tokens): 1 for the sinks and the last 60, 0 in between, in every layer.
  for (const std::vector<double>& layer : kept_share_by_layer(t)) {
    ASSERT_EQ(layer.size(), size_t(kJudged));
    for (int p = 0; p < kJudged; ++p) EXPECT_EQ(layer[size_t(p)], (p < 4 || p >= kJudged - 60) ? 1.0 : 0.0) << p;
  }
  const ForgettingSummary s = summarise_forgetting({t}, kJudged / 4);  // bins of 4 tokens
  EXPECT_EQ(s.judged_tokens, kJudged);
  EXPECT_DOUBLE_EQ(s.by_position.front().kept, 1.0);
  EXPECT_DOUBLE_EQ(s.by_position[1].kept, 0.0);
  EXPECT_DOUBLE_EQ(s.by_position[size_t(kJudged - 60) / 4].kept, 1.0);
  EXPECT_DOUBLE_EQ(s.by_position[size_t(kJudged - 60) / 4 - 1].kept, 0.0);
  EXPECT_DOUBLE_EQ(s.by_kind[size_t(TokenKind::Special)].kept, 1.0);  // BOS is a sink
  EXPECT_EQ(s.by_kind[size_t(TokenKind::Special)].tokens, 1);
  EXPECT_NEAR(s.by_layer[0].kept, 64.0 / kJudged, 1e-12);
  // BOS sits in bin 0, whose 4 tokens are all sinks: its position alone predicts it is kept.
  EXPECT_DOUBLE_EQ(s.by_kind_from_position[size_t(TokenKind::Special)], 1.0);
  EXPECT_DOUBLE_EQ(s.final_cache[0], 64.0 + (kFed - kJudged));  // the kept 64 and the unjudged tail
  // Eviction times: position 4 leaves at the first update past 64 tokens (96), position 100 at 192,
  // position 200 (judged at 224, among the newest 60) stays.
  const std::vector<std::vector<int64_t>> evicted = t.evicted_at();
  EXPECT_EQ(evicted[0][4], 96);
  EXPECT_EQ(evicted[0][100], 192);
  EXPECT_EQ(evicted[0][0], -1);
  EXPECT_EQ(evicted[0][200], -1);
}

// H2O with a fixed budget keeps exactly B tokens per head once the cache exceeds B.
TEST(Forgetting, H2oKeepsExactlyTheBudget) {
  REQUIRE_STORIES();
  const SampleTrace t = trace("h2o:48");
  for (const LayerUpdate& u : t.updates)
    for (size_t h = 0; h < u.kept.size(); ++h) {
      const size_t want = size_t(std::min<int64_t>(u.before[h], 48));
      ASSERT_EQ(u.kept[h].size(), want) << "step " << u.step << " layer " << u.layer << " head " << h;
      EXPECT_EQ(u.kept[h].back(), u.tokens_seen - 1);  // the newest token is always kept
      EXPECT_TRUE(std::is_sorted(u.kept[h].begin(), u.kept[h].end()));
    }
  expect_final_matches_session(t);
  const ForgettingSummary s = summarise_forgetting({t}, 8);
  double kept_tokens = 0;  // kept fraction × tokens, summed over bins = the budget
  for (const KeptFraction& f : s.by_position) kept_tokens += f.kept * double(f.tokens);
  EXPECT_NEAR(kept_tokens, 48.0, 1e-9);
  for (const CacheAtUpdate& c : s.cache)
    for (size_t l = 0; l < c.after.size(); ++l) EXPECT_DOUBLE_EQ(c.after[l], std::min(48.0, c.before[l]));
}

// A generated answer is recorded too: the prompt, then every generated token fed back.
TEST(Forgetting, RecordsGeneratedTokens) {
  REQUIRE_STORIES();
  Sample sample;
  sample.id = "generate";
  sample.prompt = "Once upon a time, there was a little girl named Lily. She liked to play outside.";
  sample.answers = {"park"};
  sample.max_new_tokens = 70;
  const SampleTrace t = trace("full", sample);
  const std::vector<int32_t> prompt = stories().tokenizer.encode(sample.prompt, true);
  ASSERT_GT(t.tokens.size(), prompt.size());
  EXPECT_TRUE(std::equal(prompt.begin(), prompt.end(), t.tokens.begin()));
  expect_final_matches_session(t);
  for (int32_t held : t.final_cache) EXPECT_EQ(size_t(held), t.tokens.size());  // the full cache forgets nothing
  const ForgettingSummary s = summarise_forgetting({t}, 4);
  EXPECT_EQ(s.judged_tokens, t.judged());
  for (const KeptFraction& f : s.by_position) EXPECT_DOUBLE_EQ(f.kept, 1.0);
}

// forgetting.jsonl: one object per line, the documented records and counts; the plots are SVG.
TEST(Forgetting, WritesTheDocumentedFiles) {
  REQUIRE_STORIES();
  const std::vector<SampleTrace> traces = {trace("streaming:64,sinks=4")};
  const ForgettingSummary s = summarise_forgetting(traces, 16);
  const std::string jsonl =
      forgetting_jsonl({"stories260K", "streaming:64,sinks=4", "tasks.json", kInterval}, traces, s);
  std::istringstream lines(jsonl);
  std::map<std::string, int> records;
  std::string text;
  while (std::getline(lines, text)) {
    const nlohmann::json j = nlohmann::json::parse(text);
    ++records[j.at("record").get<std::string>()];
    if (j["record"] == "token" && j["position"] == 10) {
      EXPECT_EQ(j["kept"], 0.0);
      EXPECT_EQ(j["evicted_at"][0][0], 96);
    }
    if (j["record"] == "final") {
      EXPECT_EQ(j["kept_runs"], nlohmann::json::parse("[[0,4],[164,255]]"));
    }
  }
  const int pairs = traces[0].n_layers * traces[0].n_kv_heads;
  EXPECT_EQ(records["run"], 1);
  EXPECT_EQ(records["sample"], 1);
  EXPECT_EQ(records["update"], kJudged / kInterval * pairs);
  EXPECT_EQ(records["final"], pairs);
  EXPECT_EQ(records["token"], kFed);
  EXPECT_EQ(records["summary"], 1);
  for (const std::string& svg :
       {cache_per_layer_svg(s, "cache"), kept_by_position_svg(s, "position"), kept_by_kind_svg(s, "kind")}) {
    EXPECT_EQ(svg.rfind("<svg", 0), 0u);
    EXPECT_NE(svg.find("</svg>"), std::string::npos);
  }
}
