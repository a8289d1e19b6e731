// Synthetic generators: deterministic, answers inside the prompt, prompt length at the target in
// stories260K tokens, and train/held-out samples disjoint in text, values and seeds.
#include <gtest/gtest.h>

#include <set>

#include "core/error.h"
#include "tasks/answer_likelihood.h"
#include "tasks/corpus.h"
#include "tasks/lm_task.h"
#include "tasks/synthetic.h"
#include "transformer/loader.h"

namespace nammkit {
namespace {

const std::string kShared = NAMMKIT_SHARED_DIR;

const Tokenizer& tok() {
  static Model m = load_model(kShared + "/models/stories260K/stories260K.bin");
  return m.tokenizer;
}

SyntheticOptions options(SyntheticKind kind, Split split, int context = 512) {
  SyntheticOptions o;
  o.kind = kind;
  o.split = split;
  o.context_tokens = context;
  o.shared_dir = kShared;
  o.seed = 7;
  return o;
}

const SyntheticKind kKinds[] = {SyntheticKind::Passkey, SyntheticKind::Needle, SyntheticKind::MultiKey,
                                SyntheticKind::MultiQuery, SyntheticKind::VariableTracking};

TEST(TasksSynthetic, DeterministicWithAnswersInThePromptAtTheTargetLength) {
  for (SyntheticKind kind : kKinds) {
    for (int context : {500, 1024}) {
      SCOPED_TRACE(synthetic_kind_name(kind) + " @" + std::to_string(context));
      const SyntheticGenerator gen(options(kind, Split::Train, context), tok());
      for (uint64_t i = 0; i < 3; ++i) {
        const Sample a = gen.sample(i), b = gen.sample(i);
        EXPECT_EQ(a.prompt, b.prompt);
        EXPECT_EQ(a.answers, b.answers);
        ASSERT_FALSE(a.answers.empty());
        for (const auto& ans : a.answers) EXPECT_NE(a.prompt.find(ans), std::string::npos) << ans;
        const int n = static_cast<int>(tok().encode(a.prompt, true).size());
        // Within one word of the target: with stories260K's 512 pieces a word (a URL, a number) can
        // be a dozen tokens.
        EXPECT_LE(n, context);
        EXPECT_GE(n, context - 16);
      }
      EXPECT_NE(gen.sample(0).prompt, gen.sample(1).prompt);
    }
  }
}

// The likelihood form scores exactly the answer's continuation after the prompt the runner would
// feed, and refuses samples with more than one answer.
TEST(TasksSynthetic, AnswerLikelihoodScoresTheAnswerAfterThePrompt) {
  for (SyntheticKind kind : {SyntheticKind::Passkey, SyntheticKind::Needle, SyntheticKind::MultiKey}) {
    SCOPED_TRACE(synthetic_kind_name(kind));
    const SyntheticGenerator gen(options(kind, Split::HeldOut, 512), tok());
    const Sample g = gen.sample(2);
    const Sample s = answer_likelihood_sample(g, tok());
    EXPECT_EQ(s.kind, SampleKind::LogLikelihood);
    EXPECT_EQ(s.id, g.id + "/likelihood");
    const std::vector<int32_t> prompt = tok().encode(g.prompt, true);
    ASSERT_EQ(s.tokens, tok().encode(g.prompt + " " + g.answers[0] + ".", true));
    ASSERT_EQ(s.tokens.size(), prompt.size() + static_cast<size_t>(s.score_tokens));
    EXPECT_TRUE(std::equal(prompt.begin(), prompt.end(), s.tokens.begin()));
    const std::vector<int32_t> scored(s.tokens.end() - s.score_tokens, s.tokens.end());
    EXPECT_NE(tok().decode(scored).find(g.answers[0] + "."), std::string::npos) << tok().decode(scored);
  }
  const Sample two = SyntheticGenerator(options(SyntheticKind::MultiQuery, Split::Train), tok()).sample(0);
  ASSERT_EQ(two.answers.size(), 2u);
  try {
    answer_likelihood_sample(two, tok());
    ADD_FAILURE() << "a two-answer sample was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), two.id + ": score: likelihood needs exactly one answer, this sample has 2");
  }
  try {
    answer_likelihood_sample(two, tok(), AnswerScore::Answer);
    ADD_FAILURE() << "a two-answer sample was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), two.id + ": score: probability needs exactly one answer, this sample has 2");
  }
}

TEST(TasksSynthetic, NeedleDepthIsControlled) {
  for (double depth : {0.0, 25.0, 50.0, 100.0}) {
    SyntheticOptions o = options(SyntheticKind::Needle, Split::Train, 1024);
    o.depth_percent = depth;
    const Sample s = SyntheticGenerator(o, tok()).sample(0);
    const size_t body_begin = s.prompt.find('\n') + 1, body_end = s.prompt.rfind("\nWhat is the special");
    const double at =
        double(s.prompt.find("One of the special magic numbers") - body_begin) / double(body_end - body_begin);
    // At the sentence boundary at or before the requested depth.
    EXPECT_LE(at, depth / 100 + 0.01) << depth;
    EXPECT_GE(at, depth / 100 - 0.15) << depth;
  }
  EXPECT_EQ(insert_needles("One. Two. Three.", {{"N1", 0.0}, {"N2", 0.5}, {"N3", 1.0}}), "N1 One. N2 Two. Three. N3");
  // Same boundary: the order of depths is kept (variable-tracking chains rely on it).
  EXPECT_EQ(insert_needles("One. Two.", {{"B", 0.3}, {"A", 0.2}}), "A B One. Two.");
}

TEST(TasksSynthetic, TrainAndHeldOutAreDisjoint) {
  // Text: the two parts of a corpus do not overlap and together are the whole corpus.
  const std::string essays = load_corpus("pg_essays", kShared);
  const std::string_view train = split_text(essays, Split::Train), held = split_text(essays, Split::HeldOut);
  EXPECT_EQ(train.size() + held.size(), essays.size());
  EXPECT_EQ(train.data() + train.size(), held.data());
  EXPECT_EQ(train.back(), '\n');

  for (SyntheticKind kind : kKinds) {
    SCOPED_TRACE(synthetic_kind_name(kind));
    const SyntheticGenerator gtrain(options(kind, Split::Train, 1024), tok()),
        gheld(options(kind, Split::HeldOut, 1024), tok());
    std::set<std::string> train_answers;
    for (uint64_t i = 0; i < 6; ++i) {
      const Sample s = gtrain.sample(i);
      for (const auto& a : s.answers) train_answers.insert(a);
      // Values owned by the split: numbers start with 1-4, variables with A-M.
      for (const auto& a : s.answers) EXPECT_TRUE((a[0] >= '1' && a[0] <= '4') || (a[0] >= 'A' && a[0] <= 'M')) << a;
    }
    for (uint64_t i = 0; i < 6; ++i) {
      const Sample s = gheld.sample(i);
      for (const auto& a : s.answers) {
        EXPECT_EQ(train_answers.count(a), 0u) << a;
        EXPECT_TRUE((a[0] >= '5' && a[0] <= '9') || (a[0] >= 'N' && a[0] <= 'Z')) << a;
      }
      // Haystack: 40-byte pieces of a held-out prompt are absent from the train text, and (those
      // without a needle) present in the held-out text.
      const size_t begin = s.prompt.find('\n') + 1;
      int in_held = 0;
      for (double at : {0.2, 0.4, 0.6, 0.8}) {
        const std::string piece =
            s.prompt.substr(begin + static_cast<size_t>(at * double(s.prompt.size() - begin - 200)), 40);
        EXPECT_EQ(train.find(piece), std::string_view::npos) << piece;
        in_held += held.find(piece) != std::string_view::npos;
      }
      EXPECT_GE(in_held, 1);
    }
  }
  // Keys: train keys use adjectives of the first half of the list, held-out ones the second.
  std::mt19937_64 a(1), b(1);
  std::set<std::string> train_keys;
  for (int i = 0; i < 200; ++i) train_keys.insert(ValueRanges::key(a, Split::Train).substr(0, 6));
  for (int i = 0; i < 200; ++i) {
    const std::string k = ValueRanges::key(b, Split::HeldOut);
    EXPECT_EQ(train_keys.count(k.substr(0, 6)), 0u) << k;
  }
  // Seeds: the same (seed, index) gives different streams per split.
  EXPECT_NE(sample_seed(7, Split::Train, 0), sample_seed(7, Split::HeldOut, 0));
}

TEST(TasksSynthetic, TooLittleTextIsAnError) {
  SyntheticOptions o = options(SyntheticKind::Passkey, Split::HeldOut, 4096);
  o.haystack = "tinystories";  // ~750 bytes of held-out text
  try {
    SyntheticGenerator(o, tok()).sample(0);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("passkey: tinystories (heldout): context_tokens: the split's text"),
              std::string::npos)
        << e.what();
  }
}

TEST(TasksLm, WindowsAreDeterministicAndInsideTheirSplit) {
  LmTaskOptions o;
  o.shared_dir = kShared;
  o.context_tokens = 256;
  o.score_tokens = 64;
  o.seed = 3;
  const Task a = make_lm_task(o, tok(), 4), b = make_lm_task(o, tok(), 4);
  ASSERT_EQ(a.samples.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(a.samples[i].tokens, b.samples[i].tokens);
    EXPECT_EQ(a.samples[i].tokens.size(), 256u);
    EXPECT_EQ(a.samples[i].tokens[0], tok().bos_id());
  }
  // Train windows are sub-sequences of the train tokens, never of the held-out ones.
  const std::string text = load_corpus("tinystories", kShared);
  const auto train = tok().encode(split_text(text, Split::Train), false);
  for (const auto& s : a.samples) {
    auto it = std::search(train.begin(), train.end(), s.tokens.begin() + 1, s.tokens.end());
    EXPECT_NE(it, train.end());
  }
  o.context_tokens = 1024;
  o.split = Split::HeldOut;
  EXPECT_THROW(make_lm_task(o, tok(), 1), Error);  // ~370 held-out tokens
}

}  // namespace
}  // namespace nammkit
