// The RL trainers (rl/): Adam, baselines, the stochastic policy's draws, the policy-gradient estimates
// against finite differences of their own objectives, REINFORCE and PPO on a toy task with a known
// optimum, bit-for-bit checkpoint/resume, checkpoint errors, and the RL experiment end to end on
// stories260K (config, stop + resume equal to an uninterrupted run).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <sstream>

#include "core/error.h"
#include "core/file_io.h"
#include "evolution/interrupt.h"
#include "namm/namm_policy.h"
#include "namm/policy_file.h"
#include "rl/adam.h"
#include "rl/advantage.h"
#include "rl/policy_gradient.h"
#include "rl/rl_checkpoint.h"
#include "rl/rl_trainer.h"
#include "tasks/runner.h"
#include "tests/shared_model.h"
#include "tools/nammkit/experiment.h"
#include "transformer/backend.h"

namespace nammkit::rl {
namespace {

std::string fresh_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("nammkit_rl_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// ---- Adam ----------------------------------------------------------------------------------------

TEST(Adam, FirstStepIsTheLearningRateTimesTheSignAndClippingIsReported) {
  AdamSettings s;
  s.learning_rate = 0.1;
  s.max_grad_norm = 0;
  AdamState state;
  std::vector<double> p = {1.0, 2.0, 3.0};
  const std::vector<double> g = {0.5, -2.0, 1e-3};
  const AdamStep step = adam_ascent_step(s, state, p, g);
  // m_hat = g, v_hat = g^2 after one step: the update is alpha g / (|g| + eps).
  EXPECT_NEAR(p[0], 1.1, 1e-7);
  EXPECT_NEAR(p[1], 1.9, 1e-7);
  EXPECT_NEAR(p[2], 3.1, 1e-5);
  EXPECT_NEAR(step.grad_norm, std::sqrt(0.25 + 4.0 + 1e-6), 1e-12);
  EXPECT_FALSE(step.clipped);
  EXPECT_EQ(state.t, 1);

  s.max_grad_norm = 1.0;
  const AdamStep clipped = adam_ascent_step(s, state, p, g);
  EXPECT_TRUE(clipped.clipped);
  EXPECT_THROW(adam_ascent_step(s, state, p, std::vector<double>{1.0}), Error);
  EXPECT_THROW(adam_ascent_step(s, state, p, std::vector<double>{NAN, 0, 0}), Error);
  s.learning_rate = -1;
  EXPECT_THROW(validate(s, "cfg"), Error);
}

TEST(Adam, SecondStepMatchesTheAlgorithm) {
  AdamSettings s;
  s.learning_rate = 0.01;
  s.max_grad_norm = 0;
  AdamState state;
  std::vector<double> p = {0.0};
  adam_ascent_step(s, state, p, std::vector<double>{1.0});
  adam_ascent_step(s, state, p, std::vector<double>{3.0});
  // By hand: m2 = 0.9*0.1 + 0.1*3 = 0.39, v2 = 0.999*0.001 + 0.001*9 = 0.009999
  const double m_hat = 0.39 / (1 - 0.81), v_hat = 0.009999 / (1 - 0.998001);
  EXPECT_NEAR(p[0], 0.01 / (1 + 1e-8) + 0.01 * m_hat / (std::sqrt(v_hat) + 1e-8), 1e-15);
}

// ---- baselines -----------------------------------------------------------------------------------

TEST(Advantage, LeaveOneOutUsesTheOtherSamplesOfThePrompt) {
  BaselineSettings s;
  s.kind = BaselineKind::LeaveOneOut;
  MovingBaselines b;
  const std::vector<RewardSample> r = {{0, "t", 1.0}, {0, "t", 2.0}, {0, "t", 6.0}, {1, "t", 5.0}, {1, "t", 3.0}};
  const auto a = advantages(r, s, b);
  EXPECT_DOUBLE_EQ(a[0], 1.0 - 4.0);
  EXPECT_DOUBLE_EQ(a[1], 2.0 - 3.5);
  EXPECT_DOUBLE_EQ(a[2], 6.0 - 1.5);
  EXPECT_DOUBLE_EQ(a[3], 2.0);
  EXPECT_DOUBLE_EQ(a[4], -2.0);
  EXPECT_TRUE(b.empty());
  // A prompt whose other samples failed has nothing to be compared with.
  EXPECT_EQ(advantages(std::vector<RewardSample>{{0, "t", 1.0}, {1, "t", 4.0}, {1, "t", 2.0}}, s, b)[0], 0.0);
}

TEST(Advantage, MovingAverageNeverIncludesTheRolloutsOwnReward) {
  BaselineSettings s;
  s.kind = BaselineKind::MovingAverage;
  s.decay = 0.5;
  MovingBaselines b;
  auto a = advantages(std::vector<RewardSample>{{0, "x", 1.0}, {1, "x", 3.0}, {2, "y", 10.0}}, s, b);
  EXPECT_DOUBLE_EQ(a[0], -2.0);  // first batch: against the task's other rewards
  EXPECT_DOUBLE_EQ(a[1], 2.0);
  EXPECT_DOUBLE_EQ(a[2], 0.0);  // alone in its task
  EXPECT_DOUBLE_EQ(b.at("x"), 2.0);
  a = advantages(std::vector<RewardSample>{{0, "x", 6.0}}, s, b);
  EXPECT_DOUBLE_EQ(a[0], 4.0);        // against the old baseline 2
  EXPECT_DOUBLE_EQ(b.at("x"), 4.0);   // 0.5 * 2 + 0.5 * 6
  EXPECT_DOUBLE_EQ(b.at("y"), 10.0);  // untouched
  s.normalize = true;
  a = advantages(std::vector<RewardSample>{{0, "x", 2.0}, {1, "x", 6.0}}, s, b);
  EXPECT_DOUBLE_EQ(a[0], -1.0);  // (-2, 2) / sd 2
  EXPECT_DOUBLE_EQ(a[1], 1.0);
}

// ---- the stochastic policy -----------------------------------------------------------------------

TEST(StochasticKeep, ProbabilitiesAndDrawsAreDeterministicAndCalibrated) {
  EXPECT_DOUBLE_EQ(keep_probability(0.0f, 0.5), 0.5);
  EXPECT_NEAR(keep_probability(1.0f, 0.5) + keep_probability(-1.0f, 0.5), 1.0, 1e-15);
  EXPECT_EQ(keep_probability(1e30f, 1e-3), 1.0);
  EXPECT_EQ(keep_probability(-1e30f, 1e-3), 0.0);
  std::vector<float> scores(20001, 0.4f);  // p = sigma(0.8) = 0.68997
  StochasticKeep o{0.5, 42};
  DecisionBlock b1, b2, b3;
  const auto k1 = sample_keep(scores, o, 2, 7, 1, b1);
  const auto k2 = sample_keep(scores, o, 2, 7, 1, b2);
  EXPECT_EQ(k1, k2);
  EXPECT_EQ(b1.keep_N, b2.keep_N);
  o.seed = 43;
  sample_keep(scores, o, 2, 7, 1, b3);
  EXPECT_NE(b1.keep_N, b3.keep_N);
  EXPECT_EQ(b1.keep_N.back(), 1);  // the newest token is always kept
  EXPECT_EQ(k1.back(), 20000);
  const double rate = double(k1.size() - 1) / 20000.0;
  EXPECT_NEAR(rate, 1.0 / (1.0 + std::exp(-0.8)), 0.01);  // 3 sd of a binomial at n = 20000 is 0.0098
  DecisionTrace t;
  t.blocks.push_back(b1);
  EXPECT_EQ(t.decisions(), 20000);
  EXPECT_TRUE(std::isfinite(t.log_prob()));
}

// A random decision block for shape F with the given actions drawn at params.
DecisionBlock random_block(const ScorerShape& shape, const std::vector<float>& params, int n, double tau,
                           std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  DecisionBlock b;
  b.features_NxF.resize(size_t(n) * shape.n_features);
  for (float& x : b.features_NxF) x = normal(rng);
  std::vector<float> s(n);
  score_tokens(shape, params, b.features_NxF.data(), n, s.data());
  sample_keep(s, StochasticKeep{tau, rng()}, 0, 0, 0, b);
  const std::vector<float> keep = std::move(b.features_NxF);  // sample_keep does not touch features
  b.features_NxF = keep;
  return b;
}

std::vector<float> random_params(const ScorerShape& shape, double scale, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> p(size_t(shape.n_params()));
  for (float& v : p) v = float(scale) * normal(rng);
  return p;
}

// Finite differences of the objective against the analytic gradient on a few parameters.
void check_gradient(const ScorerShape& shape, const std::vector<float>& at, const std::vector<RolloutTerm>& terms,
                    const SurrogateOptions& o, double tolerance) {
  const SurrogateResult g = surrogate_gradient(shape, at, terms, o);
  std::mt19937 pick(3);
  const int n = shape.n_params();
  for (int trial = 0; trial < 12; ++trial) {
    const int k = trial == 0 ? n - 1 : int(pick() % uint32_t(n));  // always the bias
    const float h = 1.0f / 64;
    std::vector<float> plus = at, minus = at;
    plus[size_t(k)] += h;
    minus[size_t(k)] -= h;
    const double fd =
        (surrogate_gradient(shape, plus, terms, o).objective - surrogate_gradient(shape, minus, terms, o).objective) /
        (double(plus[size_t(k)]) - double(minus[size_t(k)]));
    EXPECT_NEAR(g.gradient[size_t(k)], fd, tolerance * (1e-3 + std::abs(fd))) << "parameter " << k;
  }
}

TEST(PolicyGradient, ReinforceGradientMatchesFiniteDifferencesOfItsObjective) {
  for (const ScorerKind kind : {ScorerKind::Mlp, ScorerKind::Bam}) {
    ScorerShape shape;
    shape.kind = kind;
    shape.n_features = 5;
    shape.hidden = 3;
    std::mt19937 rng(7);
    const std::vector<float> params = random_params(shape, 0.3, rng);
    std::vector<DecisionTrace> traces(4);
    std::vector<RolloutTerm> terms;
    for (size_t r = 0; r < traces.size(); ++r) {
      for (int b = 0; b < 3; ++b) traces[r].blocks.push_back(random_block(shape, params, 6 + b, 0.7, rng));
      terms.push_back({&traces[r], double(r) - 1.3});
    }
    SurrogateOptions o;
    o.temperature = 0.7;
    check_gradient(shape, params, terms, o, 2e-3);
  }
}

TEST(PolicyGradient, PpoFirstEpochEqualsReinforceAndItsGradientMatchesFiniteDifferences) {
  ScorerShape shape;
  shape.kind = ScorerKind::Bam;
  shape.n_features = 5;
  shape.hidden = 3;
  std::mt19937 rng(11);
  const std::vector<float> params = random_params(shape, 0.3, rng);
  std::vector<DecisionTrace> traces(3);
  std::vector<RolloutTerm> terms;
  for (size_t r = 0; r < traces.size(); ++r) {
    traces[r].blocks.push_back(random_block(shape, params, 9, 0.5, rng));
    terms.push_back({&traces[r], r == 1 ? -0.8 : 0.6});
  }
  SurrogateOptions reinforce, ppo;
  reinforce.temperature = ppo.temperature = 0.5;
  ppo.clip = 0.2;
  const SurrogateResult a = surrogate_gradient(shape, params, terms, reinforce);
  const SurrogateResult b = surrogate_gradient(shape, params, terms, ppo);
  for (size_t k = 0; k < a.gradient.size(); ++k)
    EXPECT_NEAR(a.gradient[k], b.gradient[k], 1e-12 + 1e-9 * std::abs(a.gradient[k]));
  EXPECT_EQ(b.clip_fraction, 0.0);
  EXPECT_NEAR(b.approx_kl, 0.0, 1e-12);
  EXPECT_EQ(a.decisions, 3 * 8);

  // Slightly away from theta_old (no ratio near the clip) the surrogate is smooth: finite differences.
  std::vector<float> moved = params;
  for (float& v : moved) v += 0.01f * float(rng() % 3) - 0.01f;
  EXPECT_EQ(surrogate_gradient(shape, moved, terms, ppo).clip_fraction, 0.0);
  check_gradient(shape, moved, terms, ppo, 2e-3);

  // Far away, terms are clipped and their gradient vanishes.
  std::vector<float> far = params;
  far.back() += 3.0f;
  const SurrogateResult c = surrogate_gradient(shape, far, terms, ppo);
  EXPECT_GT(c.clip_fraction, 0.0);
  EXPECT_GT(c.approx_kl, 0.0);
}

// ---- the trainers on a toy task with a known optimum ---------------------------------------------
//
// Every prompt is a fixed set of tokens with 3 random features; a token is "good" when its first
// feature is positive. Reward = (good tokens kept) / (good) - (bad tokens kept) / (bad), in [-1, 1];
// the optimum 1 keeps exactly the good ones, which a linear scorer (MLP) can do. The initial policy
// (bias 1) keeps everything: reward 0.
struct ToyTask : RolloutSource {
  ScorerShape shape;
  RlSettings settings;
  std::vector<std::vector<float>> prompts;  // features, 40 tokens x 3
  static constexpr int kTokens = 40;

  ToyTask() {
    shape.kind = ScorerKind::Mlp;
    shape.n_features = 3;
    std::mt19937 rng(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    prompts.resize(8);
    for (auto& p : prompts) {
      p.resize(kTokens * 3);
      for (float& x : p) x = normal(rng);
    }
  }

  static double reward_of(const std::vector<float>& features, const std::vector<uint8_t>& keep) {
    int good = 0, bad = 0, good_kept = 0, bad_kept = 0;
    for (int j = 0; j + 1 < kTokens; ++j) {  // the newest token is not a decision
      const bool g = features[size_t(j) * 3] > 0;
      (g ? good : bad)++;
      if (keep[size_t(j)]) (g ? good_kept : bad_kept)++;
    }
    return double(good_kept) / std::max(good, 1) - double(bad_kept) / std::max(bad, 1);
  }

  std::vector<Rollout> rollouts(std::span<const double> params, int64_t iteration, const std::string&,
                                bool* interrupted) override {
    *interrupted = false;
    const std::vector<float> p(params.begin(), params.end());
    std::vector<Rollout> out;
    for (int q = 0; q < int(prompts.size()); ++q)
      for (int k = 0; k < settings.samples_per_prompt; ++k) {
        Rollout r;
        r.prompt = q;
        r.task = "toy";
        std::vector<float> scores(kTokens);
        score_tokens(shape, p, prompts[size_t(q)].data(), kTokens, scores.data());
        DecisionBlock b;
        sample_keep(scores, StochasticKeep{settings.temperature, uint64_t(iteration * 1000 + q * 10 + k)}, 0, 0, 0, b);
        b.features_NxF = prompts[size_t(q)];
        r.reward = reward_of(b.features_NxF, b.keep_N);
        r.trace.blocks.push_back(std::move(b));
        out.push_back(std::move(r));
      }
    return out;
  }

  double greedy_reward(std::span<const double> params) const {
    const std::vector<float> p(params.begin(), params.end());
    double sum = 0;
    for (const auto& f : prompts) {
      std::vector<float> scores(kTokens);
      score_tokens(shape, p, f.data(), kTokens, scores.data());
      std::vector<uint8_t> keep(kTokens);
      for (int j = 0; j < kTokens; ++j) keep[size_t(j)] = scores[size_t(j)] >= 0;
      sum += reward_of(f, keep);
    }
    return sum / double(prompts.size());
  }
};

double train_toy(Algorithm algorithm, int iterations, const std::string& dir) {
  ToyTask toy;
  toy.settings.algorithm = algorithm;
  toy.settings.temperature = 0.5;
  toy.settings.samples_per_prompt = 4;
  toy.settings.adam.learning_rate = 0.05;
  RlTrainerOptions o;
  o.run_dir = dir;
  o.stages = {{iterations, "toy"}};
  o.progress_line = false;
  o.handle_sigint = false;
  std::vector<double> init = {0.0, 0.0, 0.0, 1.0};
  EXPECT_EQ(toy.greedy_reward(init), 0.0);
  RlTrainer trainer(toy.settings, toy.shape, init, toy, o);
  EXPECT_EQ(trainer.run(), RlStatus::completed);
  return toy.greedy_reward(trainer.params());
}

TEST(RlTrainer, ReinforceAndPpoSolveTheToyTask) {
  const double reinforce = train_toy(Algorithm::Reinforce, 60, fresh_dir("toy_reinforce"));
  const double ppo = train_toy(Algorithm::Ppo, 30, fresh_dir("toy_ppo"));
  EXPECT_GT(reinforce, 0.9);
  EXPECT_GT(ppo, 0.9);
}

TEST(RlTrainer, StopAndResumeIsBitForBit) {
  auto run = [](const std::string& dir, int stop_after, bool resume) {
    ToyTask toy;
    toy.settings.algorithm = Algorithm::Ppo;
    toy.settings.samples_per_prompt = 3;
    toy.settings.baseline.kind = BaselineKind::MovingAverage;
    RlTrainerOptions o;
    o.run_dir = dir;
    o.stages = {{3, "a"}, {4, "b"}};
    o.progress_line = false;
    o.handle_sigint = false;
    RlTrainer trainer(toy.settings, toy.shape, {0.0, 0.0, 0.0, 1.0}, toy, o);
    int done = 0;
    trainer.set_hook([&](const RlRecord&) {
      if (stop_after > 0 && ++done == stop_after) evo::request_interrupt();
    });
    trainer.set_evaluator([&](std::span<const double> p, int64_t, const std::string&) { return toy.greedy_reward(p); });
    if (resume) trainer.resume(trainer.latest_path());
    const RlStatus s = trainer.run();
    evo::clear_interrupt();
    return s;
  };
  const std::string a = fresh_dir("resume_a"), b = fresh_dir("resume_b");
  EXPECT_EQ(run(a, 0, false), RlStatus::completed);
  EXPECT_EQ(run(b, 4, false), RlStatus::interrupted);
  EXPECT_EQ(load_rl_checkpoint(b + "/latest.ckpt").progress.iteration, 4);
  EXPECT_EQ(run(b, 0, true), RlStatus::completed);
  RlCheckpoint ca = load_rl_checkpoint(a + "/latest.ckpt"), cb = load_rl_checkpoint(b + "/latest.ckpt");
  ca.progress.elapsed_seconds = cb.progress.elapsed_seconds = 0;
  ca.last_log_line.clear();
  cb.last_log_line.clear();
  EXPECT_TRUE(serialize_rl_checkpoint(ca) == serialize_rl_checkpoint(cb));
  EXPECT_EQ(ca.params, cb.params);
  EXPECT_EQ(ca.adam.m, cb.adam.m);
  EXPECT_EQ(ca.adam.v, cb.adam.v);
  EXPECT_EQ(ca.adam.t, cb.adam.t);
  EXPECT_EQ(ca.baselines, cb.baselines);
  EXPECT_EQ(ca.progress.best_eval, cb.progress.best_eval);
  EXPECT_EQ(ca.progress.best_params, cb.progress.best_params);
  for (size_t i = 0; i < ca.params.size(); ++i) EXPECT_EQ(ca.params[i], cb.params[i]) << i;
  EXPECT_EQ(ca.progress.iteration, 7);
  // The logs agree line for line except for the clocks.
  auto strip = [](const std::string& path) {
    std::vector<nlohmann::json> lines;
    std::istringstream in(read_file(path));
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      j.erase("elapsed_seconds");
      j.erase("runs_per_second");
      lines.push_back(j);
    }
    return lines;
  };
  EXPECT_EQ(strip(a + "/log.jsonl"), strip(b + "/log.jsonl"));
  EXPECT_EQ(strip(a + "/log.jsonl").size(), 7u);
}

TEST(RlCheckpoint, DamagedFilesAreOneLineErrors) {
  RlCheckpoint c;
  c.algorithm = "ppo";
  c.params = {1.0, 2.0};
  c.baselines["t"] = 0.5;
  const std::string bytes = serialize_rl_checkpoint(c);
  EXPECT_EQ(parse_rl_checkpoint(bytes, "x").baselines.at("t"), 0.5);
  auto expect = [](const std::string& b, const std::string& needle) {
    try {
      parse_rl_checkpoint(b, "f.ckpt");
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("f.ckpt"), std::string::npos) << e.what();
    }
  };
  expect(bytes.substr(0, bytes.size() - 3), "payload: truncated");
  expect(bytes.substr(0, 10), "header: truncated");
  std::string magic = bytes;
  magic[0] = 'X';
  expect(magic, "bad magic");
  std::string flipped = bytes;
  flipped.back() ^= 1;
  expect(flipped, "checksum");
  c.params[1] = NAN;
  expect(serialize_rl_checkpoint(c), "params[1]: not finite");
  c.params[1] = 2;
  c.adam.m = {1.0};
  c.adam.t = 1;
  expect(serialize_rl_checkpoint(c), "adam_m");
}

// ---- the stochastic NAMM policy on a real model --------------------------------------------------

TEST(NammSampling, ARunRecordsItsDecisionsAndIsAFunctionOfTheSeed) {
  if (!file_exists(testing::kStories)) GTEST_SKIP() << "shared model missing";
  const auto& model = testing::stories();
  const auto backend = make_backend(model, DeviceChoice{}, true);
  NammConfig namm = NammConfig::reference(ScorerKind::Bam);
  namm.selection.mode = SelectionMode::PerHead;
  Sample sample;
  sample.kind = SampleKind::Generate;
  sample.prompt = std::string(600, 'a');
  for (size_t i = 0; i < sample.prompt.size(); i += 7) sample.prompt[i] = ' ';
  sample.answers = {"x"};
  sample.max_new_tokens = 4;
  RunOptions run;
  run.session.update_interval = 32;
  std::vector<float> params(size_t(namm.scorer.n_params()), 0.0f);
  params.back() = 0.3f;
  auto rollout = [&](uint64_t seed, DecisionTrace& trace) {
    NammPolicy policy(namm, params, FeatureNormalizer::identity(namm.spectrogram.n_bins()));
    policy.set_sampling(StochasticKeep{0.5, seed}, &trace);
    return run_sample(*backend, &policy, sample, run);
  };
  DecisionTrace t1, t2, t3;
  const RunResult r1 = rollout(9, t1), r2 = rollout(9, t2);
  rollout(10, t3);
  ASSERT_GT(t1.decisions(), 0);
  EXPECT_EQ(t1.blocks.size(), t2.blocks.size());
  for (size_t i = 0; i < t1.blocks.size(); ++i) {
    EXPECT_EQ(t1.blocks[i].keep_N, t2.blocks[i].keep_N);
    EXPECT_EQ(t1.blocks[i].features_NxF, t2.blocks[i].features_NxF);
    EXPECT_EQ(t1.blocks[i].features_NxF.size(), size_t(t1.blocks[i].n) * size_t(namm.n_features()));
  }
  EXPECT_EQ(r1.output, r2.output);
  EXPECT_EQ(r1.cache.mean, r2.cache.mean);
  bool differs = false;
  for (size_t i = 0; i < std::min(t1.blocks.size(), t3.blocks.size()); ++i)
    differs = differs || t1.blocks[i].keep_N != t3.blocks[i].keep_N;
  EXPECT_TRUE(differs);
  // Every score is 0.3 (zero weights): p = sigma(0.6) everywhere.
  EXPECT_NEAR(t1.blocks[0].keep_prob_N[0], 1.0 / (1.0 + std::exp(-double(0.3f) / 0.5)), 1e-15);
  // Fewer tokens than the full cache stay (a 600-token prompt keeps ~ a few hundred at p = 0.65).
  EXPECT_LT(r1.cache.mean, double(r1.prompt_tokens));
  NammPolicy plain(namm, params, FeatureNormalizer::identity(namm.spectrogram.n_bins()));
  EXPECT_THROW(plain.set_mode(NammMode::Sample), Error);
}

}  // namespace
}  // namespace nammkit::rl

// ---- the RL experiment (nammkit evolve with "trainer") -------------------------------------------
namespace nammkit::cli {
namespace {

nlohmann::json tiny_rl_config(const std::string& out, const std::string& trainer, int iterations) {
  nlohmann::json j = nlohmann::json::parse(R"({
    "name": "tiny-rl", "seed": 4,
    "session": {"prefill_chunk": 32, "update_interval": 32, "max_context": 512},
    "policy": {"scorer": "bam", "selection": "per_head", "initial_bias": 0.5},
    "rl": {"temperature": 0.25, "samples_per_prompt": 2, "learning_rate": 0.02, "ppo_epochs": 2},
    "fitness": {"cache_weight": 0.5},
    "normalization": {"samples": 2},
    "heldout": {"every": 2, "tasks": [{"name": "lm", "split": "heldout", "samples": 2, "context_tokens": 128,
                                       "score_tokens": 64, "text": "tinystories", "seed": 3}]},
    "stages": [{"name": "lm", "prompts_per_generation": 2,
       "tasks": [{"name": "lm", "split": "train", "samples": 4, "context_tokens": 256, "score_tokens": 64,
                  "text": "tinystories"}]}]
  })");
  j["model"] = testing::kStories;
  j["output_dir"] = out;
  j["trainer"] = trainer;
  j["stages"][0]["generations"] = iterations;
  return j;
}

void expect_config_error(const nlohmann::json& j, const std::string& needle) {
  try {
    parse_experiment_config(j, "cfg.json");
    FAIL() << "expected an error mentioning " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(RlExperimentConfig, TrainerFieldsAreCheckedAndNamed) {
  const nlohmann::json ok = tiny_rl_config("/tmp/x", "ppo", 2);
  const ExperimentConfig c = parse_experiment_config(ok, "cfg.json");
  EXPECT_EQ(c.trainer, TrainerKind::Ppo);
  EXPECT_EQ(c.rl.algorithm, rl::Algorithm::Ppo);
  EXPECT_EQ(c.rl.samples_per_prompt, 2);
  EXPECT_EQ(c.heldout_every, 2);
  ASSERT_EQ(c.cmaes.mean0.size(), size_t(c.cmaes.n > 0 ? c.cmaes.n : 4172));
  EXPECT_EQ(c.cmaes.mean0.back(), 0.5);  // CMA-ES would start from the same policy
  // The initial policy: seeded N(0, scale^2) weights and the given read-out bias, CMA-ES's mean0 too.
  nlohmann::json scaled = ok;
  scaled["policy"]["initial_scale"] = 0.05;
  scaled["policy"]["initial_seed"] = 3;
  const ExperimentConfig cs = parse_experiment_config(scaled, "cfg.json");
  const std::vector<double> p0 = initial_params(cs);
  EXPECT_EQ(p0, cs.cmaes.mean0);
  EXPECT_EQ(p0.back(), 0.5);
  double sq = 0;
  for (size_t i = 0; i + 1 < p0.size(); ++i) sq += p0[i] * p0[i];
  EXPECT_NEAR(std::sqrt(sq / double(p0.size() - 1)), 0.05, 0.003);
  EXPECT_EQ(initial_params(parse_experiment_config(scaled, "again.json")), p0);
  scaled["policy"]["initial_seed"] = 4;
  EXPECT_NE(initial_params(parse_experiment_config(scaled, "cfg.json")), p0);
  nlohmann::json j = ok;
  j["trainer"] = "sgd";
  expect_config_error(j, "trainer: expected \"cmaes\", \"reinforce\" or \"ppo\"");
  j = ok;
  j["policy"]["selection"] = "shared_max_k";
  expect_config_error(j, "policy.selection: the \"ppo\" trainer samples");
  j = ok;
  j["rl"]["temprature"] = 1;
  expect_config_error(j, "rl.temprature: unknown field");
  j = ok;
  j["rl"]["samples_per_prompt"] = 1;
  expect_config_error(j, "rl.samples_per_prompt");
  j = ok;
  j["rl"]["baseline"] = "none";
  expect_config_error(j, "rl.baseline");
  j = ok;
  j["heldout"].erase("tasks");
  expect_config_error(j, "heldout.tasks: missing");
}

TEST(RlExperiment, PpoStopAndResumeEqualsAnUninterruptedRunAndWritesAPerHeadPolicy) {
  if (!file_exists(testing::kStories)) GTEST_SKIP() << "shared model missing";
  const auto base = std::filesystem::temp_directory_path() / ("nammkit_rlexp_" + std::to_string(::getpid()));
  std::filesystem::remove_all(base);
  const std::string a = (base / "a").string(), b = (base / "b").string();
  ASSERT_EQ(run_evolution(parse_experiment_config(tiny_rl_config(a, "ppo", 4), "a.json"), {}), 0);
  const ExperimentConfig cb = parse_experiment_config(tiny_rl_config(b, "ppo", 4), "b.json");
  EvolveOptions stop;
  stop.stop_after = 3;
  ASSERT_EQ(run_evolution(cb, stop), 130);
  EvolveOptions resume;
  resume.resume = true;
  ASSERT_EQ(run_evolution(cb, resume), 0);
  rl::RlCheckpoint ca = rl::load_rl_checkpoint(a + "/latest.ckpt"), ck = rl::load_rl_checkpoint(b + "/latest.ckpt");
  ca.progress.elapsed_seconds = ck.progress.elapsed_seconds = 0;
  ca.last_log_line.clear();
  ck.last_log_line.clear();
  EXPECT_TRUE(rl::serialize_rl_checkpoint(ca) == rl::serialize_rl_checkpoint(ck));
  EXPECT_EQ(ca.params, ck.params);
  EXPECT_EQ(ca.progress.iteration, ck.progress.iteration);
  EXPECT_EQ(ca.extra, ck.extra);
  EXPECT_EQ(ca.progress.model_runs, 4 * 2 * 2);
  // Held-out evaluations of the initial policy and after iterations 1 and 3, the same in both runs.
  EXPECT_EQ(read_file(a + "/heldout.jsonl"), read_file(b + "/heldout.jsonl"));
  const std::string heldout = read_file(a + "/heldout.jsonl");
  EXPECT_EQ(std::count(heldout.begin(), heldout.end(), '\n'), 3);
  EXPECT_NE(heldout.find("\"iteration\":-1,\"mean_cache_size\""), std::string::npos);
  const PolicyFile policy = load_policy(a + "/policy.nammp");
  EXPECT_EQ(policy.namm().selection(), SELECTION_PER_HEAD);
  EXPECT_EQ(policy.params_size(), 4172);
  std::filesystem::remove_all(base);
}

}  // namespace
}  // namespace nammkit::cli
