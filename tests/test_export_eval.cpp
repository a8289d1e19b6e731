// The export evaluations (experiments/export_eval.h): the metric and scoring helpers on their own,
// and both experiments on stories260K in limits whose answer is known (nothing dropped: every
// selector equals the whole chunk; a window as long as the context: B'MOJO equals the full cache).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/error.h"
#include "core/file_io.h"
#include "experiments/export_eval.h"
#include "namm/policy_file.h"
#include "tests/shared_model.h"
#include "transformer/backend.h"

namespace nammkit {
namespace {

using testing::stories;

const std::string kBabi = std::string(NAMMKIT_SHARED_DIR) + "/data/babi/qa1_single-supporting-fact_test.txt";

TEST(ExportEval, AttentionOutputErrorIsZeroWhenNothingIsDropped) {
  ModelConfig c;
  c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 1, c.head_dim = 2;
  const std::vector<float> q = {1, 0, 0, 1, 0.5f, 0.5f, -1, 2};  // 2 queries x 2 heads x 2
  const std::vector<float> k = {1, 0, 0, 1, 1, 1};               // 3 keys
  const std::vector<float> v = {1, 2, 3, 4, 5, 6};
  EXPECT_NEAR(attention_output_error(c, q.data(), 2, k.data(), v.data(), 3, {{0, 1, 2}}), 0.0, 1e-12);
  EXPECT_GT(attention_output_error(c, q.data(), 2, k.data(), v.data(), 3, {{0}}), 0.1);
}

TEST(ExportEval, RandomizedParamsAreSeededAndNamed) {
  PolicyFile a = make_namm_policy_file(), b = make_namm_policy_file(), c = make_namm_policy_file();
  randomize_params(a, 0.5, 1);
  randomize_params(b, 0.5, 1);
  randomize_params(c, 0.5, 2);
  ASSERT_GT(a.params_size(), 0);
  EXPECT_EQ(std::vector<float>(a.params().begin(), a.params().end()),
            std::vector<float>(b.params().begin(), b.params().end()));
  EXPECT_NE(a.params(0), c.params(0));
  EXPECT_NE(a.params(0), 0.0f);
  EXPECT_NE(a.provenance().note().find("seed 1"), std::string::npos);
  EXPECT_NO_THROW(validate_policy_file(a, "t"));
  PolicyFile z = make_namm_policy_file();
  randomize_params(z, 0.0, 7);
  for (float p : z.params()) EXPECT_EQ(p, 0.0f);
  EXPECT_THROW(randomize_params(z, -1.0, 0), Error);
}

// score_answer equals feeding the tokens one at a time and reading each next-token distribution.
TEST(ExportEval, ScoreAnswerIsTeacherForcedNll) {
  REQUIRE_STORIES();
  const Tokenizer& tok = stories().tokenizer;
  const std::vector<int32_t> prompt = tok.encode("Once upon a time, there was a little", true);
  const std::vector<int32_t> answer = tok.encode(" girl named Lily", false);
  ASSERT_GE(answer.size(), 2u);
  Session s(stories());
  const QaOutcome o = score_answer(s, prompt, answer);

  Session step(stories());
  std::vector<float> logits = step.feed(prompt);
  double nll = 0;
  bool top1 = false;
  for (size_t i = 0; i < answer.size(); ++i) {
    nll -= log_prob(logits, answer[i]);
    if (i == 0) top1 = argmax(logits) == answer[0];
    logits = step.feed(std::vector<int32_t>{answer[i]});
  }
  EXPECT_NEAR(o.nll, nll / answer.size(), 1e-4);
  EXPECT_EQ(o.top1, top1);
  EXPECT_THROW(score_answer(s, prompt, {}), Error);
}

TEST(ExportEval, Memory3SelectorsEqualTheWholeChunkWhenNothingIsDropped) {
  REQUIRE_STORIES();
  if (!file_exists(kBabi)) GTEST_SKIP() << "shared data missing: " << kBabi;
  Memory3EvalOptions opt;
  opt.babi_path = kBabi;
  opt.questions = 2;
  opt.base.k = opt.base.max_chunk_tokens;
  const Memory3EvalResult r = eval_memory3(stories(), make_namm_policy_file(), opt);
  EXPECT_EQ(r.n_questions, 2);
  EXPECT_GT(r.mean_chunk_tokens, 0);
  EXPECT_EQ(r.no_memory.name, "no memory");
  EXPECT_EQ(r.all_tokens.name, "all (k=128)");
  ASSERT_EQ(r.selectors.size(), 6u);
  const char* names[] = {"namm", "exp-sum", "softmax-sum", "random", "first", "last"};
  for (size_t i = 0; i < r.selectors.size(); ++i) {
    const Memory3EvalRow& row = r.selectors[i];
    EXPECT_EQ(row.name, names[i]);
    EXPECT_NEAR(row.nll, r.all_tokens.nll, 1e-9) << row.name;
    EXPECT_NEAR(row.attention_error, 0.0, 1e-9) << row.name;
    EXPECT_GE(row.answer_kept, 0.0);
    EXPECT_LE(row.answer_kept, 1.0);
  }
}

// An all-zero NAMM scores every token 0, so ties to the lower index make it the "first" selector.
TEST(ExportEval, Memory3ZeroNammEqualsFirst) {
  REQUIRE_STORIES();
  if (!file_exists(kBabi)) GTEST_SKIP() << "shared data missing: " << kBabi;
  Memory3EvalOptions opt;
  opt.babi_path = kBabi;
  opt.questions = 2;
  opt.base.k = 4;
  const Memory3EvalResult r = eval_memory3(stories(), make_namm_policy_file(), opt);
  ASSERT_EQ(r.selectors.size(), 6u);
  const Memory3EvalRow &namm = r.selectors[0], &first = r.selectors[4];
  EXPECT_EQ(namm.nll, first.nll);
  EXPECT_EQ(namm.attention_error, first.attention_error);
  EXPECT_GT(namm.attention_error, 0.0);  // 4 of the chunk's tokens are not all of them
  EXPECT_THROW(eval_memory3(stories(), make_baseline_policy_file("h2o:0.5"), opt), Error);  // not a NAMM
}

TEST(ExportEval, BmojoWithAWindowAsLongAsTheContextIsTheFullCache) {
  REQUIRE_STORIES();
  BmojoEvalOptions opt;
  opt.samples = 1;
  opt.base.window = stories().config.max_seq_len;
  const BmojoEvalResult r = eval_bmojo(stories(), make_namm_policy_file(), opt);
  EXPECT_EQ(r.context_tokens, stories().config.max_seq_len);
  ASSERT_EQ(r.columns, (std::vector<std::string>{"swa (M=0)", "namm", "innovation", "recency", "h2o", "random"}));
  ASSERT_EQ(r.tasks.size(), 3u);
  for (const BmojoEvalTask& t : r.tasks) {
    ASSERT_EQ(t.ratio.size(), r.columns.size());
    for (const auto& ratio : t.ratio) {
      EXPECT_EQ(ratio.has_value(), t.full_mean > 0) << t.name;
      if (ratio) {
        EXPECT_NEAR(*ratio, 1.0, 1e-6) << t.name;
      }
    }
  }
  ASSERT_EQ(r.mean_ratio.size(), r.columns.size());
  ASSERT_EQ(r.mean_cache.size(), r.columns.size());
  for (double m : r.mean_ratio) EXPECT_NEAR(m, 1.0, 1e-6);
}

}  // namespace
}  // namespace nammkit
