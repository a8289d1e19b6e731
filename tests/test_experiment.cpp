// `nammkit evolve` end to end on the shipped model: config validation, a tiny run that logs,
// checkpoints and writes a loadable policy, and a stop + resume that equals an uninterrupted run.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "core/file_io.h"
#include "evolution/checkpoint.h"
#include "evolution/metrics_log.h"
#include "namm/policy_file.h"
#include "tests/shared_model.h"
#include "tools/nammkit/evaluation.h"
#include "tools/nammkit/experiment.h"
#include "tools/nammkit/experiment_setup.h"

namespace nammkit::cli {
namespace {

using testing::kStories;
using testing::stories;

nlohmann::json tiny_config(const std::string& out, int generations) {
  nlohmann::json j = nlohmann::json::parse(R"({
    "name": "tiny", "seed": 5,
    "session": {"prefill_chunk": 32, "update_interval": 64, "max_context": 512},
    "cmaes": {"population": 4, "sigma0": 0.065, "separable": true},
    "fitness": {"cache_weight": 0.5},
    "normalization": {"samples": 2},
    "stages": [{"name": "lm", "prompts_per_generation": 2,
       "tasks": [{"name": "lm", "split": "train", "samples": 4, "context_tokens": 384, "score_tokens": 128,
                  "text": "books"}]}]
  })");
  j["model"] = kStories;
  j["output_dir"] = out;
  j["stages"][0]["generations"] = generations;
  return j;
}

std::string fresh_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("nammkit_exp_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(dir);
  return dir.string();
}

void expect_error(const nlohmann::json& j, const std::string& needle) {
  try {
    parse_experiment_config(j, "cfg.json");
    FAIL() << "expected an error mentioning " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cfg.json"), std::string::npos) << e.what();
  }
}

TEST(ExperimentConfig, ErrorsNameTheField) {
  nlohmann::json ok = tiny_config("/tmp/x", 2);
  EXPECT_NO_THROW(parse_experiment_config(ok, "cfg.json"));
  nlohmann::json j = ok;
  j["cmaes"]["sigma"] = 0.1;
  expect_error(j, "cmaes.sigma: unknown field");
  j = ok;
  j["cmaes"]["population"] = "many";
  expect_error(j, "cmaes.population: expected an integer");
  j = ok;
  j.erase("model");
  expect_error(j, "model: missing");
  j = ok;
  j["session"]["update_interval"] = 40;
  expect_error(j, "session.update_interval: must be a multiple of 16");
  j = ok;
  j["stages"][0].erase("generations");
  expect_error(j, "stages[0].generations: missing");
  j = ok;
  j["policy"] = {{"scorer", "transformer"}};
  expect_error(j, "policy.scorer");
  j = ok;
  j["batching"] = {{"mode", "gpu"}};
  expect_error(j, "batching.mode: expected \"auto\", \"lockstep\" or \"members\"");
  j = ok;
  j["batching"] = {{"sequences", 0}};
  expect_error(j, "batching.sequences");
}

TEST(ExperimentConfig, BatchingIsNotPartOfTheIdentityAndAutoFollowsTheModelSize) {
  nlohmann::json j = tiny_config("/tmp/x", 2);
  const ExperimentConfig plain = parse_experiment_config(j, "cfg.json");
  j["batching"] = {{"mode", "lockstep"}, {"sequences", 8}};
  const ExperimentConfig lockstep = parse_experiment_config(j, "cfg.json");
  EXPECT_EQ(lockstep.batching.mode, BatchingMode::Lockstep);
  EXPECT_EQ(lockstep.batching.sequences, 8);
  EXPECT_EQ(plain.hash(), lockstep.hash()) << "the same results either way, so a run may resume with the other";
  if (!file_exists(kStories)) GTEST_SKIP() << "shared model missing: " << kStories;
  const Backend& cpu = testing::stories_cpu();
  EXPECT_FALSE(use_lockstep({BatchingMode::Auto, 64}, cpu)) << "1 MiB per token: member-parallel pays";
  EXPECT_TRUE(use_lockstep({BatchingMode::Lockstep, 64}, cpu));
  EXPECT_FALSE(use_lockstep({BatchingMode::Members, 64}, cpu));
  const std::unique_ptr<Backend> batched = cpu.new_lockstep_backend({});
  ASSERT_NE(batched, nullptr) << "the CPU backend has a lockstep form";
  EXPECT_EQ(batched->device(), Device::Cpu);
  EXPECT_EQ(batched->name(), "cpu (lockstep batches)");
  EXPECT_EQ(&batched->model(), &cpu.model());
}

TEST(ExperimentConfig, ShippedConfigsParse) {
  for (const char* name :
       {"default.json", "paper_llama3_8b.json", "testbed.json", "compare_stories260k_cmaes.json",
        "compare_stories260k_reinforce.json", "compare_stories260k_ppo.json", "compare_testbed_cmaes.json",
        "compare_testbed_reinforce.json", "compare_testbed_ppo.json", "testbed_retrieval_2k.json",
        "testbed_retrieval_2k_w1.json", "testbed_retrieval_2k_w1p5.json", "testbed_likelihood_2k.json",
        "testbed_probability_2k.json", "testbed_probability_multikey_2k.json"}) {
    SCOPED_TRACE(name);
    const ExperimentConfig c = load_experiment_config(std::string(NAMMKIT_SOURCE_DIR) + "/configs/" + name);
    EXPECT_FALSE(c.stages.empty());
  }
}

TEST(Experiment, TinyRunLogsCheckpointsAndWritesALoadablePolicy) {
  if (!file_exists(kStories)) GTEST_SKIP() << "shared model missing: " << kStories;
  const std::string out = fresh_dir("tiny");
  const ExperimentConfig config = parse_experiment_config(tiny_config(out, 2), "tiny.json");
  ASSERT_EQ(run_evolution(config, {}), 0);
  const auto log = evo::read_log(out + "/log.jsonl");
  ASSERT_EQ(log.size(), 2u);
  for (const auto& r : log) {
    EXPECT_TRUE(std::isfinite(r.best_fitness));
    EXPECT_TRUE(std::isfinite(r.mean_cache_size));
    EXPECT_EQ(r.failures, 0);
  }
  EXPECT_TRUE(file_exists(out + "/latest.ckpt"));
  EXPECT_TRUE(file_exists(out + "/best.ckpt"));
  const PolicyFile policy = load_policy(out + "/policy.nammp");
  EXPECT_EQ(policy.params_size(), 4172);
  EXPECT_EQ(policy.update_interval(), 64);
  EXPECT_FALSE(policy.attention_bf16());  // the config's session.attention_bf16 (default false)
  EXPECT_GT(policy.norm().count(), 0);
  EXPECT_NE(make_policy(policy), nullptr);
  // A second run into the same directory without --resume is refused.
  EXPECT_THROW(run_evolution(config, {}), Error);

  // nammkit eval of the result on held-out text, next to baselines at the same mean cache size.
  const std::string tasks = out + "/eval_tasks.json";
  write_file_atomic(tasks, R"([{"name": "lm", "split": "heldout", "samples": 3, "context_tokens": 256,
                                "score_tokens": 64, "text": "tinystories"}])");
  EvalOptions eval;
  eval.model = kStories;
  eval.tasks_file = tasks;
  // The policy as evolved, and at a fixed budget of half the tokens seen (ranked by its scores).
  eval.policy_files = {out + "/policy.nammp", out + "/policy.nammp:0.5"};
  eval.baselines = {"streaming", "h2o:0.5"};
  eval.max_context = 512;
  const EvalReport report = run_eval(eval);
  ASSERT_EQ(report.rows.size(), 5u);
  EXPECT_EQ(report.rows[0].label, "full");
  EXPECT_DOUBLE_EQ(report.rows[0].mean_normalised, 1.0);
  EXPECT_DOUBLE_EQ(report.rows[0].cache_fraction, 1.0);
  EXPECT_EQ(report.rows[2].label, "namm(policy.nammp):0.5");
  EXPECT_NEAR(report.rows[3].cache_fraction, report.rows[1].cache_fraction, 0.02) << "matched budget";
  EXPECT_EQ(report.rows[4].label, "h2o:0.5");
  // The same budget rule as H2O's at the same updates: the same cache sizes, token for token.
  EXPECT_DOUBLE_EQ(report.rows[2].mean_cache, report.rows[4].mean_cache);
  for (const std::string bad : {"/policy.nammp:1.5", "/policy.nammp:64"}) {
    EvalOptions wrong = eval;
    wrong.policy_files = {out + bad};
    EXPECT_THROW(run_eval(wrong), Error) << bad;
  }
  for (const auto& row : report.rows) {
    EXPECT_GT(row.mean_normalised, 0.0);
    EXPECT_EQ(row.tasks[0].mean_cache_per_layer.size(), 5u);
  }
  EXPECT_NE(report.table().find("namm(policy.nammp)"), std::string::npos);

  // Zero-shot transfer: the same policy on a model with other layer/head counts, head size,
  // tokenizer and weight format (the tiny Q8_0 Llama: 2 layers, 2 KV heads, head_dim 16).
  eval.model = std::string(NAMMKIT_SOURCE_DIR) + "/tests/fixtures/tiny_llama_q8_0.gguf";
  eval.baselines = {"l2"};
  eval.max_context = 0;
  write_file_atomic(tasks, R"([{"name": "lm", "split": "heldout", "samples": 2, "context_tokens": 200,
                                "score_tokens": 64, "text": "tinystories"}])");
  eval.policy_files = {out + "/policy.nammp"};
  const EvalReport transfer = run_eval(eval);
  ASSERT_EQ(transfer.rows.size(), 3u);
  EXPECT_EQ(transfer.rows[1].tasks[0].mean_cache_per_layer.size(), 2u);
  EXPECT_GT(transfer.rows[1].mean_normalised, 0.0);
  std::filesystem::remove_all(out);
}

TEST(Experiment, StopAndResumeEqualsAnUninterruptedRun) {
  if (!file_exists(kStories)) GTEST_SKIP() << "shared model missing: " << kStories;
  const std::string a = fresh_dir("a"), b = fresh_dir("b");
  ASSERT_EQ(run_evolution(parse_experiment_config(tiny_config(a, 4), "a.json"), {}), 0);
  const ExperimentConfig cb = parse_experiment_config(tiny_config(b, 4), "b.json");
  EvolveOptions stop;
  stop.stop_after = 2;
  ASSERT_EQ(run_evolution(cb, stop), 130);
  EXPECT_EQ(evo::read_log(b + "/log.jsonl").size(), 2u);
  EvolveOptions resume;
  resume.resume = true;
  ASSERT_EQ(run_evolution(cb, resume), 0);

  evo::Checkpoint ca = evo::load_checkpoint(a + "/latest.ckpt"), cbk = evo::load_checkpoint(b + "/latest.ckpt");
  ca.progress.elapsed_seconds = cbk.progress.elapsed_seconds = 0;  // wall clock differs, nothing else may
  ca.last_log_line.clear(), cbk.last_log_line.clear();  // it holds timings too; its fitness values are compared below
  EXPECT_EQ(evo::serialize_checkpoint(ca), evo::serialize_checkpoint(cbk));
  const auto la = evo::read_log(a + "/log.jsonl"), lb = evo::read_log(b + "/log.jsonl");
  ASSERT_EQ(la.size(), 4u);
  ASSERT_EQ(lb.size(), 4u);
  for (size_t i = 0; i < la.size(); ++i) {
    EXPECT_EQ(la[i].best_fitness, lb[i].best_fitness);
    EXPECT_EQ(la[i].mean_eval_fitness, lb[i].mean_eval_fitness);
    EXPECT_EQ(la[i].sigma, lb[i].sigma);
  }
  std::filesystem::remove_all(a);
  std::filesystem::remove_all(b);
}

// Lockstep batches give every member the same fitness bit for bit, so a run that switches between the
// two paths (here: lockstep for the first generation, member-parallel after the resume) is the run that
// used one path throughout.
TEST(Experiment, LockstepBatchingEvolvesExactlyAsMemberByMember) {
  if (!file_exists(kStories)) GTEST_SKIP() << "shared model missing: " << kStories;
  const std::string a = fresh_dir("members"), b = fresh_dir("lockstep");
  nlohmann::json ja = tiny_config(a, 3), jb = tiny_config(b, 3);
  ja["batching"] = {{"mode", "members"}};
  jb["batching"] = {{"mode", "lockstep"}, {"sequences", 8}};
  ASSERT_EQ(run_evolution(parse_experiment_config(ja, "a.json"), {}), 0);
  EvolveOptions stop;
  stop.stop_after = 1;
  ASSERT_EQ(run_evolution(parse_experiment_config(jb, "b.json"), stop), 130);
  jb["batching"] = {{"mode", "members"}};
  EvolveOptions resume;
  resume.resume = true;
  ASSERT_EQ(run_evolution(parse_experiment_config(jb, "b.json"), resume), 0);

  evo::Checkpoint ca = evo::load_checkpoint(a + "/latest.ckpt"), cb = evo::load_checkpoint(b + "/latest.ckpt");
  ca.progress.elapsed_seconds = cb.progress.elapsed_seconds = 0;
  ca.last_log_line.clear(), cb.last_log_line.clear();
  EXPECT_EQ(evo::serialize_checkpoint(ca), evo::serialize_checkpoint(cb));
  const auto la = evo::read_log(a + "/log.jsonl"), lb = evo::read_log(b + "/log.jsonl");
  ASSERT_EQ(la.size(), 3u);
  ASSERT_EQ(lb.size(), 3u);
  for (size_t i = 0; i < la.size(); ++i) {
    EXPECT_EQ(la[i].best_fitness, lb[i].best_fitness) << "generation " << i;
    EXPECT_EQ(la[i].mean_fitness, lb[i].mean_fitness) << "generation " << i;
    EXPECT_EQ(la[i].mean_cache_size, lb[i].mean_cache_size) << "generation " << i;
  }
  std::filesystem::remove_all(a);
  std::filesystem::remove_all(b);
}

}  // namespace
}  // namespace nammkit::cli
