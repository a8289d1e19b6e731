// NammPolicy on simulated caches, and policy files: round trips, JSON, factories and every kind of
// damaged file.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "core/error.h"
#include "core/file_io.h"
#include "namm/baselines.h"
#include "namm/namm_policy.h"
#include "namm/policy_file.h"

using namespace nammkit;

namespace {
// A cache simulator: per head, the positions of the cached tokens. Each step appends nq tokens,
// builds causal random attention and asks the policy; evictions are applied like the Session does.
struct SimulatedCache {
  int n_layers, n_heads, nq;
  bool with_kv = true;  // false: keys and values are nullptr, as the GPU session gives policies that do not ask
  int64_t seen = 0;
  std::vector<std::vector<std::vector<int32_t>>> pos;  // [layer][head][token]
  std::mt19937 rng{42};

  SimulatedCache(int layers, int heads, int queries)
      : n_layers(layers), n_heads(heads), nq(queries), pos(layers, std::vector<std::vector<int32_t>>(heads)) {}

  // Runs one update round over all layers; returns the keep lists per layer.
  std::vector<KeepLists> step(MemoryPolicy& policy) {
    std::vector<int32_t> qpos(nq);
    std::iota(qpos.begin(), qpos.end(), static_cast<int32_t>(seen));
    seen += nq;
    std::vector<KeepLists> out;
    std::uniform_real_distribution<float> u(0, 1);
    for (int l = 0; l < n_layers; ++l) {
      LayerWindow w{l, 4, nq, qpos.data(), {}};
      std::vector<std::vector<float>> att(n_heads), keys(n_heads);
      for (int h = 0; h < n_heads; ++h) {
        auto& p = pos[l][h];
        const int n_old = static_cast<int>(p.size());
        p.insert(p.end(), qpos.begin(), qpos.end());
        const int n = static_cast<int>(p.size());
        att[h].assign(static_cast<size_t>(nq) * n, 0.0f);
        for (int t = 0; t < nq; ++t) {
          float s = 0;
          // Spiky attention: a few tokens get most of it, like real heads.
          for (int j = 0; j <= n_old + t; ++j) s += (att[h][static_cast<size_t>(t) * n + j] = std::pow(u(rng), 8.0f));
          for (int j = 0; j <= n_old + t; ++j) att[h][static_cast<size_t>(t) * n + j] /= s;
        }
        keys[h].assign(static_cast<size_t>(n) * 4, 1.0f);
        const float* kv = with_kv ? keys[h].data() : nullptr;
        w.heads.push_back(HeadWindow{n, kv, kv, p.data(), att[h].data()});
      }
      KeepLists keep = policy.update(w);
      if (!keep.empty())
        for (int h = 0; h < n_heads; ++h) {
          std::vector<int32_t> kept;
          for (int32_t j : keep[h]) kept.push_back(pos[l][h][j]);
          pos[l][h] = kept;
        }
      out.push_back(keep);
    }
    return out;
  }
};

std::vector<float> random_params(int n, float sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, sigma);
  std::vector<float> p(n);
  for (float& x : p) x = g(rng);
  return p;
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::path(testing::TempDir()) / ("namm_" + name)).string();
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The Error message of f(), or "" when it does not throw.
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

ModelConfig tiny_config(int layers, int heads) {
  ModelConfig c;
  c.n_layers = layers;
  c.n_kv_heads = heads;
  return c;
}
}  // namespace

TEST(NammPolicy, ZeroParametersEvictNothing) {
  NammPolicy policy(NammConfig::reference(), std::vector<float>(4172, 0.0f), FeatureNormalizer::identity(17));
  policy.begin_sequence(tiny_config(2, 3));
  SimulatedCache sim(2, 3, 64);
  for (int round = 0; round < 3; ++round)
    for (const KeepLists& k : sim.step(policy))
      for (const auto& h : k) EXPECT_EQ(h.size(), static_cast<size_t>(64 * (round + 1)));
  EXPECT_EQ(policy.stats().tokens_evicted(), 0);
  EXPECT_EQ(policy.stats().updates.size(), 6u);
}

TEST(NammPolicy, RandomParametersEvictAndStateFollowsTheCache) {
  for (ScorerKind kind : {ScorerKind::Bam, ScorerKind::Mlp}) {
    NammConfig cfg = NammConfig::reference(kind);
    std::vector<float> p = random_params(cfg.scorer.n_params(), 0.5f, 3);
    p.back() = -2.0f;  // a negative read-out bias, so that some token of every head fails
    NammPolicy policy(cfg, p, FeatureNormalizer::identity(17));
    policy.begin_sequence(tiny_config(2, 3));
    SimulatedCache sim(2, 3, 64);
    for (int round = 0; round < 4; ++round) sim.step(policy);  // would throw if the state lost sync
    const PolicyStats& st = policy.stats();
    EXPECT_GT(st.tokens_evicted(), 0) << scorer_kind_name(kind);
    for (const auto& u : st.updates) {
      // Reference rule: every head of a layer keeps the same K.
      EXPECT_EQ(*std::min_element(u.kept.begin(), u.kept.end()), u.max_kept());
      for (size_t h = 0; h < u.kept.size(); ++h) EXPECT_LE(u.kept[h], u.before[h]);
    }
    for (int l = 0; l < 2; ++l)
      for (int h = 0; h < 3; ++h) EXPECT_EQ(static_cast<int>(sim.pos[l][h].size()), st.last_update(l)->kept[h]);
  }
}

// The GPU session copies the cache to the host only for policies that say they read it; the others must
// decide the same without it.
TEST(NammPolicy, PoliciesThatDeclineKeysAndValuesDecideTheSameWithout) {
  for (const std::string spec : {"full", "streaming:40", "h2o:40", "random:40", "namm"}) {
    SCOPED_TRACE(spec);
    auto make = [&]() -> std::unique_ptr<MemoryPolicy> {
      if (spec != "namm") return make_baseline_policy(spec);
      NammConfig cfg = NammConfig::reference();
      std::vector<float> p = random_params(cfg.scorer.n_params(), 0.5f, 3);
      p.back() = -2.0f;
      return std::make_unique<NammPolicy>(cfg, p, FeatureNormalizer::identity(17));
    };
    std::unique_ptr<MemoryPolicy> with = make(), without = make();
    ASSERT_FALSE(without->needs_keys_values());
    with->begin_sequence(tiny_config(2, 3));
    without->begin_sequence(tiny_config(2, 3));
    SimulatedCache a(2, 3, 32), b(2, 3, 32);
    b.with_kv = false;
    for (int round = 0; round < 4; ++round) EXPECT_EQ(a.step(*with), b.step(*without)) << "round " << round;
  }
  EXPECT_TRUE(make_baseline_policy("l2:40")->needs_keys_values());
}

TEST(NammPolicy, PerHeadModeAndCap) {
  NammConfig cfg = NammConfig::reference();
  cfg.selection = {SelectionMode::PerHead, 0.0f, 50};
  NammPolicy policy(cfg, random_params(4172, 0.5f, 5), FeatureNormalizer::identity(17));
  policy.begin_sequence(tiny_config(1, 4));
  SimulatedCache sim(1, 4, 64);
  for (int round = 0; round < 3; ++round) sim.step(policy);
  for (const auto& u : policy.stats().updates)
    for (int32_t k : u.kept) EXPECT_LE(k, 50);
}

// keep_fraction: the NAMM at a fixed budget. Every head keeps exactly floor(f * tokens seen) tokens once
// it holds more, whatever the scores (zero parameters: all scores 0, nothing would be evicted by the
// threshold), and those are its highest-scoring ones (the baselines' rule with the NAMM's ranking).
TEST(NammPolicy, KeepFractionKeepsTheBudgetByScore) {
  NammConfig cfg = NammConfig::reference();
  cfg.selection.keep_fraction = 0.25;
  for (const bool random : {false, true}) {
    SCOPED_TRACE(random ? "random parameters" : "zero parameters");
    NammPolicy policy(cfg, random ? random_params(4172, 0.5f, 5) : std::vector<float>(4172, 0.0f),
                      FeatureNormalizer::identity(17));
    policy.begin_sequence(tiny_config(2, 3));
    SimulatedCache sim(2, 3, 64);
    for (int round = 0; round < 4; ++round) sim.step(policy);
    for (const auto& u : policy.stats().updates)
      for (size_t h = 0; h < u.kept.size(); ++h) EXPECT_EQ(u.kept[h], std::min<int64_t>(u.before[h], u.position / 4));
  }
  cfg.selection.keep_fraction = 1.5;
  EXPECT_NE(error_of([&] { cfg.validate("x"); }).find("keep_fraction"), std::string::npos);
  cfg.selection.keep_fraction = NAN;
  EXPECT_NE(error_of([&] { cfg.validate("x"); }).find("keep_fraction"), std::string::npos);
}

TEST(NammPolicy, CollectStatsKeepsEverythingAndPoolsEveryToken) {
  NammPolicy policy(NammConfig::reference(), random_params(4172, 0.5f, 4), FeatureNormalizer::identity(17));
  policy.set_mode(NammMode::CollectStats);
  policy.begin_sequence(tiny_config(2, 2));
  SimulatedCache sim(2, 2, 32);
  for (int round = 0; round < 3; ++round)
    for (const KeepLists& k : sim.step(policy)) EXPECT_TRUE(k.empty());
  // Rows pooled: every cached token of every head and layer at every update: 32 + 64 + 96 per head.
  EXPECT_EQ(policy.collected_stats().count(), int64_t{(32 + 64 + 96) * 4});
  for (double m : policy.collected_stats().mean()) EXPECT_GE(m, 0.0);  // magnitudes
  EXPECT_GT(policy.collected_stats().mean()[0], 0.0);
}

TEST(NammPolicy, FeatureObserverSeesWhatIsScored) {
  NammPolicy policy(NammConfig::reference(), random_params(4172, 0.3f, 6), FeatureNormalizer::identity(17));
  policy.begin_sequence(tiny_config(1, 2));
  int calls = 0;
  policy.set_feature_observer([&](const LayerWindow& w, int h, const float* x, int n) {
    ++calls;
    EXPECT_EQ(n, w.heads[h].n_keys);
    // Newest token: recency 0 -> sin 0, cos 1.
    EXPECT_EQ(x[static_cast<size_t>(n - 1) * 25 + 0], 0.0f);
    EXPECT_EQ(x[static_cast<size_t>(n - 1) * 25 + 4], 1.0f);
  });
  SimulatedCache sim(1, 2, 32);
  sim.step(policy);
  sim.step(policy);
  EXPECT_EQ(calls, 4);
}

// Steps 1-3 of NammPolicy::update done outside the policy, as the GPU runtime does them on the device
// (kernels/namm_device.h), and the selection by select_from_scores: must decide exactly as update().
class ScoredElsewhere final : public MemoryPolicy {
 public:
  explicit ScoredElsewhere(NammPolicy& policy) : policy_(policy), spectrogram_(policy.config().spectrogram) {}
  std::string name() const override { return "scored elsewhere"; }
  bool needs_attention() const override { return true; }
  KeepLists update(const LayerWindow& w) override {
    const NammConfig& c = policy_.config();
    const int bins = c.spectrogram.n_bins(), F = c.n_features(), n_heads = static_cast<int>(w.heads.size());
    if (static_cast<int>(state_.size()) <= w.layer) state_.resize(w.layer + 1, std::vector<SpectralState>(n_heads));
    std::vector<std::vector<float>> scores(n_heads);
    for (int h = 0; h < n_heads; ++h) {
      const HeadWindow& hw = w.heads[h];
      SpectralState& st = state_[w.layer][h];
      spectrogram_.update(hw.attention, w.n_queries, hw.n_keys, st);
      std::vector<float> x(static_cast<size_t>(hw.n_keys) * F);
      for (int j = 0; j < hw.n_keys; ++j) {
        recency_embedding(c.recency, int64_t{hw.positions[hw.n_keys - 1]} - hw.positions[j], x.data() + size_t(j) * F);
        policy_.normalizer().apply(st.ema_NxB.data() + size_t(j) * bins, x.data() + size_t(j) * F + c.recency.dim);
      }
      scores[h].resize(hw.n_keys);
      score_tokens(c.scorer, policy_.params(), x.data(), hw.n_keys, scores[h].data());
    }
    KeepLists keep = policy_.select_from_scores(w, scores);
    for (int h = 0; h < n_heads; ++h) state_[w.layer][h].gather(keep[h], bins, c.spectrogram.overlap());
    return keep;
  }

 private:
  NammPolicy& policy_;
  AttentionSpectrogram spectrogram_;
  std::vector<std::vector<SpectralState>> state_;
};

TEST(NammPolicy, ScoresFromElsewhereSelectAsUpdateDoes) {
  for (double keep_fraction : {0.0, 0.5}) {
    NammConfig cfg = NammConfig::reference();
    cfg.selection.keep_fraction = keep_fraction;
    std::vector<float> p = random_params(cfg.scorer.n_params(), 0.5f, 8);
    p.back() = -2.0f;  // so that the threshold rule evicts
    std::vector<float> mean(17, 0.01f), var(17, 0.5f);
    NammPolicy alone(cfg, p, FeatureNormalizer(mean, var)), selecting(cfg, p, FeatureNormalizer(mean, var));
    ScoredElsewhere elsewhere(selecting);
    EXPECT_TRUE(selecting.takes_external_scores());
    alone.begin_sequence(tiny_config(2, 3));
    selecting.begin_sequence(tiny_config(2, 3));
    SimulatedCache a(2, 3, 64), b(2, 3, 64);
    for (int round = 0; round < 4; ++round) EXPECT_EQ(a.step(alone), b.step(elsewhere)) << "round " << round;
    EXPECT_GT(alone.stats().tokens_evicted(), 0);
    EXPECT_EQ(selecting.stats().tokens_evicted(), alone.stats().tokens_evicted());
    EXPECT_EQ(selecting.stats().updates.size(), alone.stats().updates.size());
  }
  // Modes whose scores it cannot take from outside.
  NammPolicy policy(NammConfig::reference(), std::vector<float>(4172, 0.0f), FeatureNormalizer::identity(17));
  policy.set_mode(NammMode::CollectStats);
  EXPECT_FALSE(policy.takes_external_scores());
  NammPolicy mlp(NammConfig::reference(ScorerKind::Mlp),
                 std::vector<float>(NammConfig::reference(ScorerKind::Mlp).scorer.n_params(), 0.0f),
                 FeatureNormalizer::identity(17));
  EXPECT_FALSE(mlp.takes_external_scores());
  std::vector<int32_t> qpos(32, 0), pos(32, 0);
  LayerWindow w{0, 4, 32, qpos.data(), {HeadWindow{32, nullptr, nullptr, pos.data(), nullptr}}};
  EXPECT_NE(error_of([&] {
              mlp.select_from_scores(w, std::vector<std::vector<float>>(1, std::vector<float>(32)));
            }).find("only in Evict mode with the BAM scorer"),
            std::string::npos);
}

TEST(NammPolicyFile, BinaryAndJsonRoundTrip) {
  PolicyFile f = make_namm_policy_file();
  const std::vector<float> p = random_params(4172, 0.5f, 1);
  f.mutable_params()->Assign(p.begin(), p.end());
  f.mutable_provenance()->set_generation(17);
  f.mutable_provenance()->set_fitness(0.875);
  f.mutable_base_model()->set_name("stories260K");
  const std::string path = temp_path("roundtrip.nammpolicy");
  save_policy(f, path);
  const PolicyFile g = load_policy(path);
  EXPECT_EQ(g.SerializeAsString(), f.SerializeAsString());
  const PolicyFile h = policy_from_json(policy_to_json(f), "json");
  EXPECT_EQ(h.SerializeAsString(), f.SerializeAsString()) << "floats survive JSON exactly";
  EXPECT_NE(describe_policy(f).find("4172 values"), std::string::npos);
  auto policy = make_policy(g);
  EXPECT_EQ(policy->name(), "namm_bam");
  EXPECT_EQ(static_cast<NammPolicy&>(*policy).params(), p);
}

TEST(NammPolicyFile, DamagedFilesGiveFieldNamedErrors) {
  const PolicyFile f = make_namm_policy_file();
  const std::string good = serialize_policy(f), path = temp_path("damaged.nammpolicy");

  // Cut inside the 20-byte header after the magic (8 to 19 bytes): "truncated", not "not a policy file".
  for (size_t cut = 1; cut < 20; ++cut) {
    write_raw(path, good.substr(0, cut));
    EXPECT_NE(error_of([&] { load_policy(path); }).find(path + ": truncated"), std::string::npos) << cut;
  }
  for (size_t cut : {size_t{0}, size_t{5}, size_t{19}, good.size() / 2, good.size() - 1}) {
    write_raw(path, good.substr(0, cut));
    const std::string e = error_of([&] { load_policy(path); });
    EXPECT_NE(e.find(path + ": "), std::string::npos) << e;
    EXPECT_TRUE(e.find("truncated") != std::string::npos || e.find("not a nammkit policy") != std::string::npos)
        << cut << ": " << e;
  }
  std::string flipped = good;
  flipped[good.size() - 100] ^= 0x40;
  write_raw(path, flipped);
  EXPECT_NE(error_of([&] { load_policy(path); }).find("checksum mismatch"), std::string::npos);
  write_raw(path, "garbage that is long enough to hold a header");
  EXPECT_NE(error_of([&] { load_policy(path); }).find("not a nammkit policy file"), std::string::npos);
  EXPECT_NE(error_of([&] { load_policy(temp_path("missing")); }), "");

  PolicyFile v2 = f;
  v2.set_format_version(2);
  write_raw(path, serialize_policy(v2));
  EXPECT_NE(error_of([&] { load_policy(path); }).find(path + ": format_version: expected 1, got 2"), std::string::npos);

  PolicyFile short_params = f;
  short_params.mutable_params()->Truncate(17);
  write_raw(path, serialize_policy(short_params));
  EXPECT_EQ(error_of([&] { load_policy(path); }), path + ": params: expected 4172 values, got 17");

  PolicyFile nan = f;
  nan.set_params(17, std::nanf(""));
  write_raw(path, serialize_policy(nan));
  EXPECT_NE(error_of([&] { load_policy(path); }).find("params[17]: not finite"), std::string::npos);
  EXPECT_NE(error_of([&] { save_policy(nan, path); }).find("params[17]: not finite"), std::string::npos);

  PolicyFile bad_norm = f;
  bad_norm.mutable_norm()->set_var(3, -1.0f);
  EXPECT_NE(error_of([&] { validate_policy_file(bad_norm, "x"); }).find("norm.var[3]: negative"), std::string::npos);
  PolicyFile bad_interval = f;
  bad_interval.set_update_interval(100);
  EXPECT_NE(error_of([&] { validate_policy_file(bad_interval, "x"); }).find("multiple of hop 16"), std::string::npos);
  PolicyFile no_kind = f;
  no_kind.set_kind(POLICY_KIND_UNSPECIFIED);
  EXPECT_NE(error_of([&] { validate_policy_file(no_kind, "x"); }).find("kind"), std::string::npos);

  EXPECT_NE(error_of([&] {
              policy_from_json("{\"format_version\": 1, \"paramz\": []}", "p.json");
            }).find("p.json: invalid policy JSON"),
            std::string::npos);
  EXPECT_NE(error_of([&] { policy_from_json("{\"format_version\": 1,", "p.json"); }), "");
}

// Found by tests/fuzz/fuzz_policy: an empty view (null data()) reached memcmp, which UBSan reports.
TEST(NammPolicyFile, EmptyViewIsNotAPolicyFile) {
  EXPECT_NE(error_of([] { parse_policy(std::string_view(), "empty"); }).find("empty: truncated: 0 bytes"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_policy(std::string_view("NAMM"), "short"); }).find("short: truncated"),
            std::string::npos);
}

TEST(NammPolicyFile, JsonErrorsAreOneLineAndNestedParamsAreRefused) {
  PolicyFile f = make_namm_policy_file();
  nlohmann::json j = nlohmann::json::parse(policy_to_json(f));
  nlohmann::json params = j["params"];
  j["params"] = nlohmann::json::array({nlohmann::json::array({1.0, 2.0}), params});  // was flattened silently
  EXPECT_EQ(error_of([&] { policy_from_json(j.dump(), "p.json"); }),
            "p.json: params[0]: expected a number or string, found a nested array");
  for (const char* bad : {"{\"kind\": ", "{\"format_version\": 1,", "[1, 2", "{\"kind\": \"NO_SUCH_KIND\"}"}) {
    const std::string e = error_of([&] { policy_from_json(bad, "p.json"); });
    EXPECT_EQ(e.rfind("p.json: invalid policy JSON: ", 0), 0u) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

TEST(NammPolicyFile, BaselineSpecs) {
  EXPECT_EQ(make_baseline_policy("full")->name(), "full");
  EXPECT_EQ(make_baseline_policy("h2o:0.25")->name(), "h2o");
  EXPECT_EQ(make_baseline_policy("streaming:256,sinks=4")->name(), "streaming");
  EXPECT_EQ(make_baseline_policy("l2:512")->name(), "l2");
  EXPECT_EQ(make_baseline_policy("random:0.5,seed=9")->name(), "random");
  const PolicyFile s = make_baseline_policy_file("streaming:256,sinks=2,interval=64");
  EXPECT_EQ(s.baseline().sinks(), 2);
  EXPECT_EQ(s.update_interval(), 64);
  EXPECT_FALSE(s.baseline().budget_is_fraction());
  EXPECT_TRUE(make_baseline_policy_file("h2o:0.25").baseline().budget_is_fraction());
  // Baseline files round-trip too.
  const std::string path = temp_path("h2o.nammpolicy");
  save_policy(make_baseline_policy_file("h2o:0.25,heavy=0.3"), path);
  EXPECT_DOUBLE_EQ(load_policy(path).baseline().heavy_ratio(), 0.3);
  for (const char* bad :
       {"", "foo:1", "h2o", "h2o:0", "h2o:1.5", "streaming:10,bogus=1", "full:5", "l2:abc", "random:0.5,seed=-1"})
    EXPECT_NE(error_of([&] { make_baseline_policy(bad); }), "") << bad;
}
