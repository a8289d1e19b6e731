// The trainer and the population evaluator: failing members, common random numbers, stages, the mean
// evaluation and best.ckpt, the JSONL log, interrupt + resume (bit-for-bit) and the SVG plot.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file_io.h"
#include "evolution/checkpoint.h"
#include "evolution/fitness_plot.h"
#include "evolution/interrupt.h"
#include "evolution/metrics_log.h"
#include "evolution/population_eval.h"
#include "evolution/trainer.h"

using namespace nammkit::evo;
namespace fs = std::filesystem;

namespace {

std::string temp_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("nammkit_test_evolution_trainer_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

CmaesSettings small_settings() {
  CmaesSettings s;
  s.n = 6;
  s.lambda = 8;
  s.sigma0 = 0.3;
  s.seed = 17;
  s.mean0.assign(6, 1.0);
  return s;
}

// A prompt-dependent sphere: prompt p shifts the optimum slightly, so prompt sampling matters.
PromptScore shifted_sphere(std::span<const double> x, const PromptContext& c) {
  double f = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = x[i] - 0.01 * c.prompt;
    f += d * d;
  }
  return {-f, 100.0 + c.prompt + 10.0 * x[0]};
}

TrainerOptions options(const std::string& dir, std::vector<Stage> stages) {
  TrainerOptions o;
  o.run_dir = dir;
  o.stages = std::move(stages);
  o.config = "n: 6\nlambda: 8\n";
  o.progress_line = false;
  o.handle_sigint = false;
  return o;
}

Checkpoint without_time(Checkpoint c) {
  c.progress.elapsed_seconds = 0;
  c.last_log_line.clear();  // holds elapsed_seconds and evals_per_second (the fitness values are compared via the log)
  return c;
}

}  // namespace

TEST(EvolutionPopulationEval, FailureFitnessRanksLast) {
  const std::vector<double> values = {3.0, -1.0, 2.0};
  const double penalty = failure_fitness(values);
  EXPECT_LT(penalty, -1.0);
  EXPECT_TRUE(std::isfinite(penalty));
  const std::vector<double> one = {5.0};
  EXPECT_LT(failure_fitness(one), 5.0);
}

TEST(EvolutionPopulationEval, SamePromptsForEveryMemberSeededByGeneration) {
  std::mutex mu;
  std::map<int, std::set<int>> seen;  // member -> prompts
  TbbEvalSettings settings{.pool_size = 50, .prompts_per_generation = 7, .seed = 3};
  TbbPopulationEvaluator eval(settings, [&](std::span<const double> x, const PromptContext& c) {
    std::lock_guard lock(mu);
    seen[c.member].insert(c.prompt);
    return PromptScore{x[0]};
  });
  Eigen::MatrixXd population = Eigen::MatrixXd::Random(4, 10);
  GenerationEval out = eval.evaluate(population, 5, "qa");
  ASSERT_EQ(seen.size(), 10u);
  const std::vector<int> prompts = eval.prompts_for(5);
  ASSERT_EQ(prompts.size(), 7u);
  for (auto& [member, set] : seen) EXPECT_EQ(set, std::set<int>(prompts.begin(), prompts.end())) << member;
  EXPECT_EQ(out.evaluations, 70);
  EXPECT_EQ(out.failures.size(), 0u);
  for (int m = 0; m < 10; ++m) EXPECT_DOUBLE_EQ(out.fitness[m], population(0, m));
  // Deterministic per (seed, generation), independent of history; different across generations.
  TbbPopulationEvaluator again(settings, [](std::span<const double>, const PromptContext&) { return PromptScore{}; });
  EXPECT_EQ(again.prompts_for(5), prompts);
  EXPECT_NE(eval.prompts_for(6), prompts);
  EXPECT_EQ(std::set<int>(prompts.begin(), prompts.end()).size(), 7u);  // without replacement
}

TEST(EvolutionPopulationEval, ThrowingAndNanMembersArePenalisedAndReported) {
  TbbEvalSettings settings{.pool_size = 4};
  TbbPopulationEvaluator eval(settings, [](std::span<const double> x, const PromptContext& c) {
    if (c.member == 1 && c.prompt == 2) throw std::runtime_error("model ran out of memory");
    if (c.member == 3) return PromptScore{std::nan("")};
    return PromptScore{x[0]};
  });
  Eigen::MatrixXd population = Eigen::MatrixXd::Zero(2, 5);
  for (int m = 0; m < 5; ++m) population(0, m) = m;
  GenerationEval out = eval.evaluate(population, 0, "qa");
  ASSERT_EQ(out.failures.size(), 2u);
  EXPECT_EQ(out.failures[0].member, 1);
  EXPECT_NE(out.failures[0].reason.find("model ran out of memory"), std::string::npos);
  EXPECT_EQ(out.failures[1].member, 3);
  EXPECT_NE(out.failures[1].reason.find("nan"), std::string::npos) << out.failures[1].reason;
  for (int m : {0, 2, 4}) EXPECT_LT(out.fitness[1], out.fitness[m]);
  EXPECT_TRUE(std::isfinite(out.fitness[1]) && std::isfinite(out.fitness[3]));

  TbbPopulationEvaluator all_fail(settings, [](std::span<const double>, const PromptContext&) -> PromptScore {
    throw std::runtime_error("broken");
  });
  EXPECT_THROW(all_fail.evaluate(population, 0, "qa"), nammkit::Error);
}

TEST(EvolutionTrainer, FailingMembersKeepTheRunGoingAndAreLogged) {
  const std::string dir = temp_dir("failing");
  TbbPopulationEvaluator eval({.pool_size = 3}, [](std::span<const double> x, const PromptContext& c) {
    if (c.member == 2) throw std::runtime_error("evaluator crashed");
    if (c.member == 5 && c.generation % 2 == 0) return PromptScore{INFINITY};
    return shifted_sphere(x, c);
  });
  Trainer trainer(small_settings(), eval, options(dir, {{4, "qa"}}));
  TrainResult result = trainer.run();
  EXPECT_EQ(result.status, TrainStatus::completed);
  EXPECT_EQ(result.generations_run, 4);
  EXPECT_EQ(trainer.progress().failures, 4 + 2);
  const auto log = read_log(dir + "/log.jsonl");
  ASSERT_EQ(log.size(), 4u);
  EXPECT_EQ(log[0].failures, 2);
  EXPECT_EQ(log[1].failures, 1);
  EXPECT_EQ(log[0].failure_details[0].member, 2);
  EXPECT_NE(log[0].failure_details[0].reason.find("evaluator crashed"), std::string::npos);
  EXPECT_TRUE(std::isfinite(log[3].best_fitness));
  EXPECT_TRUE(std::isfinite(log[3].mean_cache_size));
}

TEST(EvolutionTrainer, StagesMeanEvaluationBestCheckpointAndLog) {
  const std::string dir = temp_dir("stages");
  std::mutex mu;
  std::map<int64_t, std::set<std::string>> task_sets;
  TbbPopulationEvaluator eval({.pool_size = 10, .prompts_per_generation = 4, .seed = 9},
                              [&](std::span<const double> x, const PromptContext& c) {
                                {
                                  std::lock_guard lock(mu);
                                  task_sets[c.generation].insert(*c.task_set);
                                }
                                return shifted_sphere(x, c);
                              });
  Trainer trainer(small_settings(), eval, options(dir, {{3, "stage-a"}, {0, "empty"}, {2, "stage-b"}}));
  trainer.set_extra_state("normalisation stats v1");
  trainer.set_mean_evaluator([&](const Eigen::VectorXd& mean, int64_t g, const std::string& task_set) {
    return g == 1 ? NAN : eval.evaluate_vector(std::span<const double>(mean.data(), mean.size()), g, task_set);
  });
  TrainResult result = trainer.run();
  EXPECT_EQ(result.status, TrainStatus::completed);
  ASSERT_EQ(task_sets.size(), 5u);
  for (int64_t g = 0; g < 5; ++g) EXPECT_EQ(task_sets[g], std::set<std::string>{g < 3 ? "stage-a" : "stage-b"}) << g;

  const auto log = read_log(dir + "/log.jsonl");
  ASSERT_EQ(log.size(), 5u);
  for (int g = 0; g < 5; ++g) {
    EXPECT_EQ(log[g].generation, g);
    EXPECT_EQ(log[g].stage, g < 3 ? 0 : 2);
    EXPECT_EQ(log[g].lambda, 8);
    EXPECT_EQ(log[g].evaluations, 8 * 4);
    EXPECT_GE(log[g].best_fitness, log[g].median_fitness);
    EXPECT_GT(log[g].sigma, 0);
    EXPECT_TRUE(std::isfinite(log[g].mean_cache_size));
    EXPECT_EQ(std::isfinite(log[g].mean_eval_fitness), g != 1);
  }
  const Checkpoint latest = load_checkpoint(dir + "/latest.ckpt");
  EXPECT_EQ(latest.cmaes.total_generations, 5);
  EXPECT_EQ(latest.progress.stage_index, 2);
  EXPECT_EQ(latest.progress.stage_generation, 2);
  EXPECT_EQ(latest.extra, "normalisation stats v1");
  EXPECT_EQ(latest.config, "n: 6\nlambda: 8\n");
  ASSERT_TRUE(latest.progress.has_best_mean);
  const Checkpoint best = load_checkpoint(dir + "/best.ckpt");
  EXPECT_EQ(best.cmaes.total_generations, latest.progress.best_mean_generation + 1);
  EXPECT_EQ(best.progress.best_mean_fitness, latest.progress.best_mean_fitness);
  double best_logged = -INFINITY;
  for (const auto& r : log)
    if (std::isfinite(r.mean_eval_fitness)) best_logged = std::max(best_logged, r.mean_eval_fitness);
  EXPECT_EQ(best_logged, latest.progress.best_mean_fitness);
}

// Interrupt during generation 3's evaluation, then resume: the result equals an uninterrupted run
// (every byte of the checkpoint except the wall-clock time, and every logged fitness value).
TEST(EvolutionTrainer, InterruptThenResumeIsBitForBit) {
  const std::vector<Stage> stages = {{3, "a"}, {3, "b"}};
  const TbbEvalSettings eval_settings{.pool_size = 6, .prompts_per_generation = 3, .seed = 5};

  const std::string straight_dir = temp_dir("straight");
  TbbPopulationEvaluator straight_eval(eval_settings, shifted_sphere);
  Trainer straight(small_settings(), straight_eval, options(straight_dir, stages));
  ASSERT_EQ(straight.run().status, TrainStatus::completed);

  const std::string dir = temp_dir("interrupted");
  clear_interrupt();
  TbbPopulationEvaluator eval(eval_settings, [](std::span<const double> x, const PromptContext& c) {
    if (c.generation == 3 && c.member == 4) request_interrupt();  // Ctrl-C in the middle of generation 3
    return shifted_sphere(x, c);
  });
  {
    Trainer first(small_settings(), eval, options(dir, stages));
    TrainResult r = first.run();
    EXPECT_EQ(r.status, TrainStatus::interrupted);
    EXPECT_EQ(r.generations_run, 3);
    EXPECT_STREQ(to_string(r.status), "interrupted");
  }
  EXPECT_EQ(load_checkpoint(dir + "/latest.ckpt").cmaes.total_generations, 3);
  EXPECT_EQ(read_log(dir + "/log.jsonl").size(), 3u);
  clear_interrupt();

  TbbPopulationEvaluator resumed_eval(eval_settings, shifted_sphere);
  Trainer resumed(small_settings(), resumed_eval, options(dir, stages));
  resumed.resume(dir + "/latest.ckpt");
  TrainResult r = resumed.run();
  EXPECT_EQ(r.status, TrainStatus::completed);
  EXPECT_EQ(r.generations_run, 3);

  const Checkpoint a = without_time(load_checkpoint(straight_dir + "/latest.ckpt"));
  const Checkpoint b = without_time(load_checkpoint(dir + "/latest.ckpt"));
  EXPECT_TRUE(serialize_checkpoint(a) == serialize_checkpoint(b));
  const auto log_a = read_log(straight_dir + "/log.jsonl"), log_b = read_log(dir + "/log.jsonl");
  ASSERT_EQ(log_a.size(), 6u);
  ASSERT_EQ(log_b.size(), 6u);
  for (size_t g = 0; g < 6; ++g) {
    EXPECT_EQ(log_a[g].best_fitness, log_b[g].best_fitness) << g;
    EXPECT_EQ(log_a[g].sigma, log_b[g].sigma) << g;
  }

  // A checkpoint of another experiment is refused unless explicitly allowed.
  TrainerOptions other = options(dir, stages);
  other.config = "something else";
  Trainer mismatched(small_settings(), resumed_eval, other);
  try {
    mismatched.resume(dir + "/latest.ckpt");
    ADD_FAILURE() << "a checkpoint of another config was accepted";
  } catch (const nammkit::Error& e) {
    // The message suggests what the CLI can do (it has no allow_config_change option).
    EXPECT_EQ(std::string(e.what()).find("allow_config_change"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("latest.ckpt: config: differs"), std::string::npos) << e.what();
  }
}

TEST(EvolutionTrainer, ResumeDropsLogLinesBeyondTheCheckpoint) {
  const std::string dir = temp_dir("truncate_log");
  TbbPopulationEvaluator eval({.pool_size = 2}, shifted_sphere);
  Trainer trainer(small_settings(), eval, options(dir, {{2, "a"}}));
  trainer.run();
  const std::string checkpoint = nammkit::read_file(dir + "/latest.ckpt");
  Trainer more(small_settings(), eval, options(dir, {{4, "a"}}));
  more.resume(dir + "/latest.ckpt");
  more.run();
  ASSERT_EQ(read_log(dir + "/log.jsonl").size(), 4u);
  // Back to the generation-2 checkpoint: the lines of generations 2 and 3 must go.
  nammkit::write_file_atomic(dir + "/old.ckpt", checkpoint);
  TrainerOptions o = options(dir, {{4, "a"}});
  Trainer again(small_settings(), eval, o);
  again.resume(dir + "/old.ckpt");
  EXPECT_EQ(read_log(dir + "/log.jsonl").size(), 2u);
}

// A kill between latest.ckpt's rename and the log append lost that generation's line: resume puts
// the checkpoint's copy back, so log.jsonl and the checkpoint agree.
TEST(EvolutionTrainer, ResumeRestoresTheLogLineAKillLost) {
  const std::string dir = temp_dir("lost_line");
  TbbPopulationEvaluator eval({.pool_size = 2}, shifted_sphere);
  Trainer trainer(small_settings(), eval, options(dir, {{3, "a"}}));
  trainer.run();
  const std::string full = nammkit::read_file(dir + "/log.jsonl");
  const size_t last = full.rfind('\n', full.size() - 2);
  nammkit::write_file_atomic(dir + "/log.jsonl", full.substr(0, last + 1));  // generation 2's line is gone
  ASSERT_EQ(read_log(dir + "/log.jsonl").size(), 2u);
  Trainer more(small_settings(), eval, options(dir, {{4, "a"}}));
  more.resume(dir + "/latest.ckpt");
  EXPECT_EQ(nammkit::read_file(dir + "/log.jsonl"), full);
  more.run();
  const std::vector<GenerationRecord> log = read_log(dir + "/log.jsonl");
  ASSERT_EQ(log.size(), 4u);
  for (size_t g = 0; g < log.size(); ++g) EXPECT_EQ(log[g].generation, static_cast<int64_t>(g));
  // A torn last line (a kill mid-append) is replaced by the checkpoint's copy too.
  nammkit::write_file_atomic(dir + "/log.jsonl", full.substr(0, full.size() - 10));
  Trainer torn(small_settings(), eval, options(dir, {{4, "a"}}));
  torn.resume(dir + "/latest.ckpt");
  EXPECT_EQ(read_log(dir + "/log.jsonl").size(), 3u);
}

TEST(EvolutionPlot, SvgHasCurvesAxesAndCachePanel) {
  std::vector<GenerationRecord> records;
  for (int g = 0; g < 30; ++g) {
    GenerationRecord r;
    r.generation = g;
    r.stage = g < 15 ? 0 : 1;
    r.best_fitness = 0.1 * g;
    r.mean_fitness = 0.05 * g;
    r.mean_eval_fitness = g % 5 == 0 ? 0.08 * g : GenerationRecord::kMissing;
    r.mean_cache_size = 1000 - 10 * g;
    records.push_back(r);
  }
  const std::string svg = render_fitness_svg(records, "runs/<demo>");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find(">generation</text>"), std::string::npos);
  EXPECT_NE(svg.find(">fitness</text>"), std::string::npos);
  EXPECT_NE(svg.find("mean cache size"), std::string::npos);
  EXPECT_NE(svg.find("stroke-dasharray=\"6,4\""), std::string::npos);  // the stage boundary
  EXPECT_NE(svg.find("runs/&lt;demo&gt;"), std::string::npos);
  size_t polylines = 0;
  for (size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1)) ++polylines;
  EXPECT_EQ(polylines, 2u + 6u + 1u);  // best, mean, 6 isolated mean-eval points, cache size
  for (const char* tick : {">0</text>", ">1</text>", ">2</text>", ">800</text>", ">1000</text>"})
    EXPECT_NE(svg.find(tick), std::string::npos) << tick;

  std::vector<GenerationRecord> no_cache(records.begin(), records.begin() + 3);
  for (auto& r : no_cache) r.mean_cache_size = GenerationRecord::kMissing;
  EXPECT_EQ(render_fitness_svg(no_cache, "x").find("cache"), std::string::npos);
  EXPECT_THROW(render_fitness_svg({}, "x"), nammkit::Error);
  EXPECT_EQ(nice_ticks(0, 1, 5), (std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1}));
}

TEST(EvolutionPlot, LogRoundTripsThroughJson) {
  const std::string dir = temp_dir("log");
  GenerationRecord r;
  r.generation = 7;
  r.stage = 1;
  r.task_set = "qa";
  r.best_fitness = 0.25;
  r.failures = 1;
  r.failure_details = {{3, "prompt 2: nan"}};
  append_log_line(dir + "/log.jsonl", r);
  const auto back = read_log(dir + "/log.jsonl");
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].generation, 7);
  EXPECT_EQ(back[0].best_fitness, 0.25);
  EXPECT_TRUE(std::isnan(back[0].mean_cache_size));
  EXPECT_EQ(back[0].failure_details[0].reason, "prompt 2: nan");
  nammkit::write_file_atomic(dir + "/bad.jsonl", "{\"generation\": 1, \"stage\": 0}\n{oops\n");
  try {
    read_log(dir + "/bad.jsonl");
    FAIL();
  } catch (const nammkit::Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl: line 2"), std::string::npos) << e.what();
  }
}
