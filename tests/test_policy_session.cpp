// Issue #17, fixes 1 and 2: a policy carries the session settings it was evolved with (its update
// interval and the bf16 rounding of the attention it sees) and every run honours them; evaluations use
// held-out samples and warn on the train split.
#include <gtest/gtest.h>

#include <set>

#include "experiments/export_eval.h"
#include "namm/policy_file.h"
#include "tasks/registry.h"
#include "tasks/runner.h"
#include "tests/shared_model.h"
#include "tools/nammkit/sample_runner.h"

namespace nammkit {
namespace {

using testing::stories;
using testing::stories_cpu;

// Random parameters (a seed for which bf16 rounding of the attention flips some decisions on these
// samples: checked below, so the test cannot pass vacuously).
PolicyFile random_namm(bool bf16) {
  PolicyFile f = make_namm_policy_file();
  f.set_update_interval(32);
  randomize_params(f, 2.0, 1);
  f.set_attention_bf16(bf16);
  return f;
}

TEST(PolicySession, TheFileCarriesAttentionBf16) {
  PolicyFile f = random_namm(true);
  const PolicyFile back = parse_policy(serialize_policy(f), "bf16.nammp");
  EXPECT_TRUE(back.attention_bf16());
  EXPECT_TRUE(policy_from_json(policy_to_json(f), "bf16.json").attention_bf16());
  EXPECT_NE(describe_policy(back).find("attention:       rounded to bf16"), std::string::npos);
  EXPECT_NE(describe_policy(random_namm(false)).find("attention:       f32"), std::string::npos);

  SessionOptions session;
  session.attention_bf16 = false;
  apply_policy_session(back, session);
  EXPECT_TRUE(session.attention_bf16);
  EXPECT_EQ(session.update_interval, 32);
}

// An eval row of a bf16 policy runs exactly as a session with bf16 attention, and not as one without.
TEST(PolicySession, EvalRunsAPolicyOnTheAttentionItWasEvolvedOn) {
  REQUIRE_STORIES();
  TaskContext context;
  context.tokenizer = &stories().tokenizer;
  const std::vector<Task> tasks = build_task_set(
      nlohmann::json::parse(
          R"([{"name": "lm", "split": "heldout", "samples": 4, "context_tokens": 384, "score_tokens": 64, "text": "books"}])"),
      context, "test");
  const std::vector<Sample>& samples = tasks[0].samples;
  cli::SampleRunner runner(
      stories_cpu(), [&](int i) -> const Sample& { return samples.at(size_t(i)); }, RunOptions{}, nullptr, "eval_row");
  const std::vector<int> all = {0, 1, 2, 3};
  for (bool bf16 : {true, false}) {
    SCOPED_TRACE(bf16);
    const PolicyFile file = random_namm(bf16);
    const std::vector<RunResult> got = runner.run(all, &file, "test");
    for (int i : all) {
      RunOptions direct;
      direct.session.update_interval = 32;
      for (bool rounded : {true, false}) {
        direct.session.attention_bf16 = rounded;
        const auto policy = make_policy(file);
        const RunResult r = run_sample(stories_cpu(), policy.get(), samples[size_t(i)], direct);
        if (rounded == bf16) {
          EXPECT_EQ(r.cache.mean_per_layer, got[size_t(i)].cache.mean_per_layer);
          EXPECT_EQ(r.log_likelihood, got[size_t(i)].log_likelihood);
        }
      }
    }
  }
  // The rounding matters for this policy: the two settings keep different tokens.
  const PolicyFile rounded = random_namm(true), plain = random_namm(false);
  const std::vector<RunResult> with = runner.run(all, &rounded, "test");
  const std::vector<RunResult> without = runner.run(all, &plain, "test");
  bool differ = false;
  for (int i : all)
    differ = differ || with[size_t(i)].cache.mean_per_layer != without[size_t(i)].cache.mean_per_layer ||
             with[size_t(i)].log_likelihood != without[size_t(i)].log_likelihood;
  EXPECT_TRUE(differ);
}

TEST(PolicySession, EvaluationsWarnOnTheTrainSplit) {
  REQUIRE_STORIES();
  TaskContext context;
  context.tokenizer = &stories().tokenizer;
  const std::vector<Task> tasks = build_task_set(nlohmann::json::parse(R"([
      {"name": "passkey", "samples": 1, "context_tokens": 256},
      {"name": "passkey", "label": "held", "split": "heldout", "samples": 1, "context_tokens": 256}])"),
                                                 context, "test");
  EXPECT_EQ(tasks[0].split, "train");  // generated tasks default to the train split
  EXPECT_EQ(tasks[1].split, "heldout");
  ::testing::internal::CaptureStderr();
  warn_training_split(tasks, "tasks.json");
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("warning: tasks.json: task \"passkey\" uses the train split"), std::string::npos) << err;
  EXPECT_EQ(err.find("\"held\""), std::string::npos) << err;
}

TEST(PolicySession, EvalExportBmojoUsesHeldOutSamplesDrawnByTheSeed) {
  REQUIRE_STORIES();
  BmojoEvalOptions options;
  options.samples = 2;
  const std::vector<Task> tasks = bmojo_eval_tasks(stories(), options);
  ASSERT_EQ(tasks.size(), 3u);
  std::set<std::string> ids;
  for (const Task& t : tasks) {
    EXPECT_EQ(t.split, "heldout") << t.name;
    for (const Sample& s : t.samples) ids.insert(s.id);
  }
  options.base.seed = 7;
  for (const Task& t : bmojo_eval_tasks(stories(), options))
    for (const Sample& s : t.samples) EXPECT_EQ(ids.count(s.id), 0u) << s.id << ": not drawn by the seed";
}

}  // namespace
}  // namespace nammkit
