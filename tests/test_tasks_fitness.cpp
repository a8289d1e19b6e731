// Fitness normalisation (zero denominators, cache term), the on-disk full-cache reference store,
// the runner, and the LM task on stories260K with the full cache vs a last-32-tokens policy.
#include <gtest/gtest.h>

#include <filesystem>

#include "core/error.h"
#include "core/file_io.h"
#include "tasks/fitness.h"
#include "tasks/lm_task.h"
#include "tasks/reference_cache.h"
#include "tasks/runner.h"
#include "tests/shared_model.h"
#include "transformer/loader.h"

namespace nammkit {
namespace {

using testing::stories;
using testing::stories_cpu;

const std::string kShared = NAMMKIT_SHARED_DIR;

// StreamingLLM-like test policy: at each update keep the last `keep` tokens of every head.
class KeepLast final : public MemoryPolicy {
 public:
  explicit KeepLast(int keep) : keep_(keep) {}
  std::string name() const override { return "keep-last"; }
  KeepLists update(const LayerWindow& w) override {
    KeepLists out;
    for (const HeadWindow& h : w.heads) {
      std::vector<int32_t> idx;
      for (int i = std::max(0, h.n_keys - keep_); i < h.n_keys; ++i) idx.push_back(i);
      out.push_back(std::move(idx));
    }
    return out;
  }

 private:
  int keep_;
};

std::filesystem::path temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("nammkit_test_tasks_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(TasksFitness, RatioOfMeansMeanOverTasksAndEpsilonFloor) {
  const TaskFitness a = normalise_task("a", {{0.5, 10}, {0.3, 10}}, {{1.0, 20}, {0.6, 20}}, 0.01);
  EXPECT_DOUBLE_EQ(a.score, 0.4);
  EXPECT_DOUBLE_EQ(a.full_score, 0.8);
  EXPECT_DOUBLE_EQ(a.ratio, 0.5);
  EXPECT_FALSE(a.floored);
  // Full cache scores 0: the denominator is epsilon, the ratio bounded, and the task flagged.
  const TaskFitness z = normalise_task("z", {{0.02, 10}}, {{0.0, 20}}, 0.01);
  EXPECT_TRUE(z.floored);
  EXPECT_DOUBLE_EQ(z.ratio, 2.0);
  const TaskFitness zz = normalise_task("zz", {{0.0, 10}}, {{0.0, 20}}, 0.01);
  EXPECT_DOUBLE_EQ(zz.ratio, 0.0);
  EXPECT_TRUE(std::isfinite(zz.ratio));

  const FitnessReport r = combine_tasks({a, z}, 0.0, 0.01);
  EXPECT_DOUBLE_EQ(r.fitness, 1.25);
  EXPECT_EQ(r.floored_tasks, 1);
  EXPECT_DOUBLE_EQ(r.cache_term, 0.0);
  // Cache term: weight * (1 - 30/60) over all samples (3 policy samples at 10, full at 20).
  const FitnessReport c = combine_tasks({a, z}, 0.2, 0.01);
  EXPECT_DOUBLE_EQ(c.cache_term, 0.2 * 0.5);
  EXPECT_DOUBLE_EQ(c.fitness, 1.25 + 0.1);
  EXPECT_THROW(normalise_task("x", {{1, 1}}, {}, 0.01), Error);

  // Floored: generated text and answer probabilities (both can be ~0 with the full cache), not
  // per-token likelihoods, whose ratio exp(ll - ll_full) stays meaningful however small both are.
  Sample s;
  EXPECT_TRUE(floors_at_epsilon(s));
  s.kind = SampleKind::LogLikelihood;
  EXPECT_FALSE(floors_at_epsilon(s));
  s.sequence_probability = true;
  EXPECT_TRUE(floors_at_epsilon(s));
  const TaskFitness per_token = normalise_task("ll", {{1e-4, 10}}, {{1e-5, 20}}, 0.01, false);
  EXPECT_FALSE(per_token.floored);
  EXPECT_DOUBLE_EQ(per_token.ratio, 10.0);
  const TaskFitness probability = normalise_task("p", {{1e-4, 10}}, {{1e-5, 20}}, 0.01, true);
  EXPECT_TRUE(probability.floored);
  EXPECT_DOUBLE_EQ(probability.ratio, 0.01);
}

// Evolution scores prompts one by one: the mean of the per-prompt values must be the fitness the
// task-level aggregation gives on the same prompts (two tasks of unequal size, one floored).
TEST(TasksFitness, PromptWeightsAverageToCombineTasks) {
  const std::vector<int> task = {0, 1, 0, 1, 1, 0, 1};
  const std::vector<Outcome> full = {{0.5, 100}, {0.002, 90}, {0.7, 120}, {0.004, 95},
                                     {0.0, 80},  {0.6, 110},  {0.01, 70}};
  const std::vector<Outcome> mine = {{0.4, 30}, {0.1, 20}, {0.7, 50}, {0.0, 25}, {0.3, 40}, {0.2, 35}, {0.05, 10}};
  const std::vector<bool> floored(task.size(), true);
  const double eps = 0.01, w = 0.5;
  std::vector<Outcome> f0, f1, m0, m1;
  for (size_t p = 0; p < task.size(); ++p) {
    (task[p] ? f1 : f0).push_back(full[p]);
    (task[p] ? m1 : m0).push_back(mine[p]);
  }
  const FitnessReport r = combine_tasks({normalise_task("a", m0, f0, eps), normalise_task("b", m1, f1, eps)}, w, eps);
  const PromptWeights pw = prompt_weights(task, full, floored, eps, w);
  double mean = 0;
  for (size_t p = 0; p < task.size(); ++p) mean += pw.value(p, mine[p]) / double(task.size());
  EXPECT_NEAR(mean, r.fitness, 1e-12);
  EXPECT_EQ(r.floored_tasks, 1);
  EXPECT_THROW(prompt_weights({0}, {}, {}, eps, w), Error);
}

TEST(TasksFitness, ReferenceCacheIsReusedAndWrittenAtomically) {
  const auto dir = temp_dir("refcache");
  const std::string path = (dir / "full.json").string();
  Sample s;
  s.id = "p0";
  s.prompt = "Once upon a time";
  s.answers = {"Lily"};
  s.metric = Metric::StringMatchAll;
  s.max_new_tokens = 4;
  Task task{"t", {s}};
  RunOptions run;
  const std::string model_id = model_identity(stories());
  const uint64_t fp = sample_fingerprint(s, run);

  {
    ReferenceCache cache(path);
    EXPECT_EQ(cache.size(), 0u);
    const auto first = full_cache_outcomes(stories_cpu(), task, cache, run);  // runs and saves
    ASSERT_EQ(first.size(), 1u);
    EXPECT_GT(first[0].mean_cache, 0);
    EXPECT_TRUE(file_exists(path));
  }
  // Only the target file is in the folder: the temporary file was renamed over it.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator()), 1);
  {
    ReferenceCache cache(path);
    ASSERT_TRUE(cache.find(model_id, "t", "p0", fp).has_value());
    // A planted value proves the second call reads the store instead of running the model.
    cache.put(model_id, "t", "p0", {fp, 0.123, 0, 7.0});
    const auto again = full_cache_outcomes(stories_cpu(), task, cache, run);
    EXPECT_DOUBLE_EQ(again[0].score, 0.123);
    // Another prompt (different fingerprint) is a miss.
    EXPECT_FALSE(cache.find(model_id, "t", "p0", fp + 1).has_value());
    cache.save();
  }
  {
    ReferenceCache other(path);  // merge-on-save keeps entries written by another process
    other.put("other-model", "t", "p0", {1, 0.5, 0, 1});
    other.save();
    ReferenceCache merged(path);
    EXPECT_EQ(merged.size(), 2u);
    EXPECT_DOUBLE_EQ(merged.find(model_id, "t", "p0", fp)->score, 0.123);
  }
  write_file_atomic(path, "{\"format\": \"something else\"}");
  try {
    ReferenceCache bad(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": format: expected"), std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

TEST(TasksRunner, GeneratesScoresAndReportsCacheStatistics) {
  Sample s;
  s.id = "story";
  s.prompt = "";  // BOS only: the README's greedy continuation
  s.answers = {"Lily"};
  s.metric = Metric::StringMatchAll;
  s.max_new_tokens = 24;
  const RunResult r = run_sample(stories_cpu(), nullptr, s);
  EXPECT_EQ(r.output, "Once upon a time, there was a little girl named Lily. She loved to play outsid");
  EXPECT_EQ(r.score, 1.0);
  EXPECT_EQ(r.prompt_tokens, 1);
  EXPECT_EQ(r.generated_tokens, 24);
  ASSERT_EQ(r.cache.mean_per_layer.size(), 5u);
  EXPECT_DOUBLE_EQ(r.cache.mean, 24.0);  // BOS + 23 fed tokens (the last one is never fed)
  EXPECT_EQ(r.cache.max, 24);
  EXPECT_GT(r.tokens_per_second, 0);
  // Stop at newline and first-line post-processing.
  s.stop_at_newline = true;
  s.max_new_tokens = 200;
  const RunResult nl = run_sample(stories_cpu(), nullptr, s);
  EXPECT_LT(nl.generated_tokens, 200);
  EXPECT_EQ(first_line("\n\nab\ncd"), "ab");
}

// session.max_context applies to lm windows too (it was ignored: same fitness and cache as no limit).
TEST(TasksLm, MaxContextCutsTheWindowAndKeepsTheScoredTail) {
  LmTaskOptions o;
  o.shared_dir = kShared;
  o.context_tokens = 256;
  o.score_tokens = 8;
  const Task task = make_lm_task(o, stories().tokenizer, 1);
  RunOptions unlimited, limited;
  limited.max_context = 16;
  const RunResult a = run_sample(stories_cpu(), nullptr, task.samples[0], unlimited);
  const RunResult b = run_sample(stories_cpu(), nullptr, task.samples[0], limited);
  EXPECT_FALSE(a.truncated);
  EXPECT_TRUE(b.truncated);
  EXPECT_EQ(a.prompt_tokens, 256);
  EXPECT_EQ(b.prompt_tokens, 16);
  EXPECT_LE(b.cache.max, 16);
  EXPECT_NE(a.log_likelihood, b.log_likelihood);
  limited.max_context = 8;  // no room for the 8 scored tokens: an error naming the sample
  EXPECT_THROW(run_sample(stories_cpu(), nullptr, task.samples[0], limited), Error);
}

TEST(TasksLm, FullCacheNormalisesToOneAndKeepingLast32IsWorse) {
  LmTaskOptions o;
  o.shared_dir = kShared;
  o.context_tokens = 1024;
  o.score_tokens = 1023;  // the whole window, as the README's measurement
  const Task task = make_lm_task(o, stories().tokenizer, 2);
  FitnessOptions fo;
  // Evict after every token, so the policy really keeps 32 (33 while feeding). With a 64-token
  // interval the cache holds 32..96 tokens and, past stories260K's trained 512 positions, the full
  // cache is no better than that window: the gap vanishes (measured: 1.442 vs 1.436 NLL).
  fo.run.session.update_interval = 1;
  ReferenceCache cache;  // in memory
  FullCachePolicy full;
  const FitnessReport same = evaluate_fitness(stories_cpu(), &full, {task}, cache, fo);
  // The reference runs without a policy (whole prefill chunks), the policy run one token at a time
  // (the decode attention path): the same function, summed in another order.
  EXPECT_NEAR(same.fitness, 1.0, 1e-6);

  KeepLast last32(32);
  const FitnessReport worse = evaluate_fitness(stories_cpu(), &last32, {task}, cache, fo);
  const RunResult rf = run_sample(stories_cpu(), nullptr, task.samples[0], fo.run);
  const RunResult rl = run_sample(stories_cpu(), &last32, task.samples[0], fo.run);
  std::printf(
      "stories260K, 1024-token TinyStories window, all scored: NLL full %.3f, keep-last-32 %.3f, "
      "normalised %.3f; mean cache %.1f vs %.1f tokens\n",
      -rf.log_likelihood, -rl.log_likelihood, worse.fitness, rf.cache.mean, rl.cache.mean);
  EXPECT_LT(worse.fitness, 0.99);
  EXPECT_GT(worse.fitness, 0.5);
  EXPECT_NEAR(-rf.log_likelihood, 1.25, 0.3);  // README: 1.249 over a whole 1,024-token window
  EXPECT_LE(rl.cache.mean, 33);
  EXPECT_DOUBLE_EQ(rf.cache.mean, 1023.0);  // the last token is predicted, not fed
}

}  // namespace
}  // namespace nammkit
