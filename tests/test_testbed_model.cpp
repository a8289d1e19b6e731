// The shipped long-context testbed model (models/testbed/testbed.gguf, trained by
// tools/train_testbed): it must really retrieve from far back in a 2,048-token prompt, and the task
// must really need the far context. Held-out passkey episodes (held-out haystack text, held-out key
// range 5-9xxxx), greedy decoding through the C++ runtime:
//   - full cache: >= 95 % correct;
//   - StreamingLLM with 256 recent tokens + 4 sinks: <= 30 % (the key is usually outside the window).
// Its logits against the float64 reference are checked by Runtime.MatchesPyTorchFixtures
// (tests/fixtures/logits_testbed.json). Runs in seconds: the model has 0.86M parameters.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/error.h"
#include "namm/baselines.h"
#include "tasks/answer_likelihood.h"
#include "tasks/runner.h"
#include "tasks/synthetic.h"
#include "tests/sanitizers.h"
#include "transformer/backend.h"
#include "transformer/loader.h"

namespace nammkit {
namespace {

const std::string kTestbed = std::string(NAMMKIT_SOURCE_DIR) + "/models/testbed/testbed.gguf";

struct PasskeyRun {
  double score = 0;       // mean over samples
  double cache_mean = 0;  // mean tokens per (layer, KV head) at the end, over samples
};

PasskeyRun passkey_2k(const Backend& backend, MemoryPolicy* policy, int samples) {
  SyntheticOptions o;
  o.kind = SyntheticKind::Passkey;
  o.split = Split::HeldOut;
  o.context_tokens = 2048;
  o.shared_dir = NAMMKIT_SHARED_DIR;
  o.seed = 21;  // tools/train_testbed/tasks_targets_2k.json's passkey_2k
  const Task task = SyntheticGenerator(o, backend.model().tokenizer).task(samples);
  RunOptions run;
  run.session.update_interval = 128;  // as tools/train_testbed/evaluate.py: the baselines evict every 128 tokens
  PasskeyRun r;
  for (const Sample& s : task.samples) {
    const RunResult res = run_sample(backend, policy, s, run);
    r.score += res.score / samples;
    r.cache_mean += res.cache.mean / samples;
  }
  return r;
}

TEST(TestbedModel, RetrievesAPasskeyFrom2KTokensAndNeedsTheFarContext) {
  const Model model = load_model(kTestbed);
  ASSERT_GE(model.config.max_seq_len, 2048 + 8) << kTestbed;
  const auto backend = make_cpu_backend(model);
  // Under the sanitizers (build-asan, -O1) 20 episodes take over 4 minutes; there 5 check the code paths
  // and the Release build checks the scores on 20.
#if NAMMKIT_UNDER_ASAN
  constexpr int kSamples = 5;
#else
  constexpr int kSamples = 20;
#endif

  const PasskeyRun full = passkey_2k(*backend, nullptr, kSamples);
  EXPECT_GE(full.score, 0.95) << "full cache";
  EXPECT_GT(full.cache_mean, 2000);

  StreamingLlmPolicy streaming(Budget::tokens(256), 4);
  const PasskeyRun window = passkey_2k(*backend, &streaming, kSamples);
  EXPECT_LE(window.score, 0.30) << "StreamingLLM 256 + 4 sinks";
  EXPECT_LT(window.cache_mean, 400);
}

// The answer-likelihood score (tasks/answer_likelihood.h, a fitness signal) must see what exact match
// sees: near 1 when the model can read the needle, far lower when the needle was evicted, for every
// held-out needle (2K, seed 21 as tools/train_testbed/tasks_targets_2k.json); the whole answer's
// probability is the product of its tokens'.
TEST(TestbedModel, AnswerLikelihoodFallsWhenTheNeedleIsEvicted) {
  const Model model = load_model(kTestbed);
  const auto backend = make_cpu_backend(model);
  SyntheticOptions o;
  o.kind = SyntheticKind::Needle;
  o.split = Split::HeldOut;
  o.context_tokens = 2048;
  o.shared_dir = NAMMKIT_SHARED_DIR;
  o.seed = 21;
  o.depth_percent = 25;  // StreamingLLM's window never reaches it
  const SyntheticGenerator generator(o, model.tokenizer);
  RunOptions run;
  run.session.update_interval = 128;
  StreamingLlmPolicy streaming(Budget::tokens(256), 4);
  double full_mean = 0, window_mean = 0;
  constexpr int kSamples = 4;
  for (int i = 0; i < kSamples; ++i) {
    const Sample s = answer_likelihood_sample(generator.sample(static_cast<uint64_t>(i)), model.tokenizer);
    const double full = run_sample(*backend, nullptr, s, run).score;
    const double window = run_sample(*backend, &streaming, s, run).score;
    EXPECT_LT(window, full - 0.3) << s.id;
    // The whole answer's probability is the product of the per-token ones.
    const Sample whole =
        answer_likelihood_sample(generator.sample(static_cast<uint64_t>(i)), model.tokenizer, AnswerScore::Answer);
    EXPECT_EQ(whole.tokens, s.tokens);
    EXPECT_NEAR(run_sample(*backend, nullptr, whole, run).score, std::pow(full, s.score_tokens), 1e-9) << s.id;
    full_mean += full / kSamples;
    window_mean += window / kSamples;
  }
  EXPECT_GE(full_mean, 0.9);
  EXPECT_LE(window_mean, 0.5);

  // A prompt and its answer are never cut to fit a shorter context (that would drop the needle).
  RunOptions short_context = run;
  short_context.max_context = 1024;
  const Sample first = answer_likelihood_sample(generator.sample(0), model.tokenizer);
  try {
    run_sample(*backend, nullptr, first, short_context);
    ADD_FAILURE() << "a 2K prompt ran in a 1K context";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(first.id + ": max_context: the prompt and its answer take", 0), 0u)
        << e.what();
  }
}

}  // namespace
}  // namespace nammkit
