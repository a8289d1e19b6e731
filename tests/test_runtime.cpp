// The CPU runtime against independent references: the README facts of stories260K, a naive
// scalar forward (tests/reference_forward.h), and the PyTorch fixtures in tests/fixtures/.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/file_io.h"
#include "namm/policy_file.h"
#include "tests/reference_forward.h"
#include "tests/shared_model.h"
#include "transformer/loader.h"
#include "transformer/quant.h"
#include "transformer/session.h"

namespace nammkit {
namespace {

using testing::kStories;
using testing::stories;

// max |a-b| / max |b| over a row: the "relative" error the fixtures are checked at.
double rel_error(const float* a, const std::vector<double>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / std::max(scale, 1e-30);
}

TEST(Runtime, Stories260kTop5AfterBosMatchesReadme) {
  REQUIRE_STORIES();
  Session s(stories());
  const int32_t bos[1] = {1};
  const std::vector<float>& logits = s.feed(bos);
  const std::vector<std::pair<int, double>> expected = {
      {403, 17.0235}, {385, 15.4062}, {410, 13.1083}, {317, 12.7692}, {407, 12.4181}};
  std::vector<int> order(logits.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = int(i);
  std::partial_sort(order.begin(), order.begin() + 5, order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(order[i], expected[i].first) << "rank " << i;
    EXPECT_NEAR(logits[expected[i].first], expected[i].second, 1e-3 * std::abs(expected[i].second));
  }
}

TEST(Runtime, Stories260kGreedyTextRegression) {
  REQUIRE_STORIES();
  const std::vector<int32_t> expected = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421,
                                         395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292};
  Session s(stories());
  const int32_t bos[1] = {1};
  GenerateOptions opt;
  opt.max_new_tokens = int(expected.size());
  EXPECT_EQ(generate_greedy(s, bos, opt).tokens, expected);
  EXPECT_EQ(stories().tokenizer.decode(expected),
            "Once upon a time, there was a little girl named Lily. She loved to play outsid");
}

std::vector<int32_t> sample_tokens(int n, int vocab, uint32_t seed) {
  std::vector<int32_t> t = {1};
  uint32_t x = seed;
  while (int(t.size()) < n) {
    x = x * 1664525u + 1013904223u;
    t.push_back(3 + int32_t((x >> 8) % uint32_t(vocab - 3)));
  }
  return t;
}

TEST(Runtime, MatchesNaiveReferenceForEveryPosition) {
  REQUIRE_STORIES();
  const std::vector<int32_t> tokens = sample_tokens(40, stories().config.vocab_size, 7);
  const auto ref = testing::reference_logits(stories(), tokens);
  SessionOptions opt;
  opt.prefill_chunk = 16;
  Session s(stories(), nullptr, opt);
  std::vector<float> all;
  s.feed(tokens, &all);
  const int V = stories().config.vocab_size;
  for (size_t p = 0; p < tokens.size(); ++p) EXPECT_LT(rel_error(all.data() + p * V, ref[p]), 1e-4) << "position " << p;
}

TEST(Runtime, ChunkSizeDoesNotChangeLogits) {
  REQUIRE_STORIES();
  const std::vector<int32_t> tokens = sample_tokens(70, stories().config.vocab_size, 3);
  std::vector<float> a, b;
  SessionOptions one;
  one.prefill_chunk = 1;
  Session sa(stories(), nullptr, one);
  sa.feed(tokens, &a);
  Session sb(stories());
  sb.feed(tokens, &b);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-4 * (1 + std::abs(b[i]))) << i;
}

// Keeps every token but asks for attention, so logging and the update path run.
class KeepAllExplicitly : public MemoryPolicy {
 public:
  std::string name() const override { return "keep-all-explicit"; }
  bool needs_attention() const override { return true; }
  KeepLists update(const LayerWindow& w) override {
    ++calls;
    KeepLists keep(w.heads.size());
    for (size_t g = 0; g < w.heads.size(); ++g) {
      const HeadWindow& h = w.heads[g];
      // Attention rows are probability distributions over the keys a query could see.
      for (int t = 0; t < w.n_queries; ++t) {
        double sum = 0;
        for (int j = 0; j < h.n_keys; ++j) sum += h.attention[size_t(t) * h.n_keys + j];
        EXPECT_NEAR(sum, 1.0, 1e-4);
        // A key newer than the query was invisible to it: exactly zero.
        for (int j = 0; j < h.n_keys; ++j)
          if (h.positions[j] > w.query_positions[t]) {
            EXPECT_EQ(h.attention[size_t(t) * h.n_keys + j], 0.0f);
          }
      }
      for (int j = 0; j < h.n_keys; ++j) keep[g].push_back(j);
    }
    return keep;
  }
  int calls = 0;
};

TEST(Runtime, KeepingEverythingIsBitIdenticalToNoPolicy) {
  REQUIRE_STORIES();
  const std::vector<int32_t> tokens = sample_tokens(100, stories().config.vocab_size, 11);
  SessionOptions opt;
  opt.prefill_chunk = 8;
  opt.update_interval = 32;
  std::vector<float> a, b;
  Session plain(stories(), nullptr, opt);
  plain.feed(tokens, &a);
  KeepAllExplicitly policy;
  Session with(stories(), &policy, opt);
  with.feed(tokens, &b);
  EXPECT_EQ(policy.calls, 3 * stories().config.n_layers);
  ASSERT_EQ(a, b);
  FullCachePolicy full;
  Session with_full(stories(), &full, opt);
  std::vector<float> c;
  with_full.feed(tokens, &c);
  ASSERT_EQ(a, c);
}

// Evicts, at the first update, a different set of positions in every (layer, KV head).
class EvictFixedPositions : public MemoryPolicy {
 public:
  static bool evicted(int layer, int head, int pos) {
    return pos == (layer + head) % 5 || pos == 7 + head || (pos >= 9 && pos < 12 && layer % 2 == 0);
  }
  std::string name() const override { return "evict-fixed"; }
  KeepLists update(const LayerWindow& w) override {
    KeepLists keep(w.heads.size());
    for (size_t g = 0; g < w.heads.size(); ++g)
      for (int j = 0; j < w.heads[g].n_keys; ++j) {
        const int pos = w.heads[g].positions[j];
        if (updates_seen_ > 0 || !evicted(w.layer, int(g), pos)) keep[g].push_back(j);
      }
    if (w.layer + 1 == n_layers) ++updates_seen_;
    return keep;
  }
  void begin_sequence(const ModelConfig& c) override {
    n_layers = c.n_layers;
    updates_seen_ = 0;
  }
  int n_layers = 0;

 private:
  int updates_seen_ = 0;
};

TEST(Runtime, EvictingPerHeadEqualsMaskingThoseKeys) {
  REQUIRE_STORIES();
  const int first_update = 16;
  const std::vector<int32_t> tokens = sample_tokens(48, stories().config.vocab_size, 5);
  SessionOptions opt;
  opt.prefill_chunk = 8;
  opt.update_interval = first_update;
  EvictFixedPositions policy;
  Session s(stories(), &policy, opt);
  std::vector<float> all;
  s.feed(tokens, &all);

  // Cache lengths now differ per head; positions keep counting absolutely.
  std::set<int> lengths;
  for (int l = 0; l < stories().config.n_layers; ++l)
    for (int g = 0; g < stories().config.n_kv_heads; ++g) {
      const HeadCache& h = s.cache().head(l, g);
      lengths.insert(h.len);
      EXPECT_EQ(h.positions.back(), 47);
      int evicted = 0;
      for (int p = 0; p < first_update; ++p) evicted += EvictFixedPositions::evicted(l, g, p);
      EXPECT_EQ(h.len, 48 - evicted);
    }
  EXPECT_GT(lengths.size(), 1u);

  const auto ref = testing::reference_logits(stories(), tokens, [&](int l, int g, int key, int query) {
    return query >= first_update && EvictFixedPositions::evicted(l, g, key);
  });
  const int V = stories().config.vocab_size;
  for (size_t p = 0; p < tokens.size(); ++p) EXPECT_LT(rel_error(all.data() + p * V, ref[p]), 1e-4) << "position " << p;
}

TEST(Runtime, SlidingWindowEqualsMaskingOldKeys) {
  REQUIRE_STORIES();
  const int window = 8;
  const std::vector<int32_t> tokens = sample_tokens(30, stories().config.vocab_size, 9);
  SessionOptions opt;
  opt.prefill_chunk = 5;
  opt.sliding_window = window;
  Session s(stories(), nullptr, opt);
  std::vector<float> all;
  s.feed(tokens, &all);
  const auto ref =
      testing::reference_logits(stories(), tokens, [&](int, int, int key, int query) { return key <= query - window; });
  const int V = stories().config.vocab_size;
  for (size_t p = 0; p < tokens.size(); ++p) EXPECT_LT(rel_error(all.data() + p * V, ref[p]), 1e-4) << "position " << p;
}

// Injected entries behave exactly like the same tokens fed as context (Memory3 with nothing dropped).
TEST(Runtime, InjectedKeysAndValuesEqualFeedingTheTokens) {
  REQUIRE_STORIES();
  const std::vector<int32_t> tokens = sample_tokens(24, stories().config.vocab_size, 4);
  const std::span<const int32_t> prefix(tokens.data(), 10), rest(tokens.data() + 10, 14);
  Session source(stories());
  source.feed(prefix);
  Session plain(stories());
  plain.feed(prefix);
  std::vector<float> expected, got;
  plain.feed(rest, &expected);

  Session injected(stories());
  const ModelConfig& c = stories().config;
  for (int l = 0; l < c.n_layers; ++l)
    for (int g = 0; g < c.n_kv_heads; ++g) {
      const HeadCache& h = source.cache().head(l, g);
      for (int j = 0; j < h.len; ++j)
        injected.inject(l, g, h.keys.data() + j * c.head_dim, h.values.data() + j * c.head_dim, h.positions[j]);
    }
  injected.set_position(10);
  injected.feed(rest, &got);
  ASSERT_EQ(expected.size(), got.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], expected[i], 1e-4 * (1 + std::abs(expected[i])));
}

TEST(Runtime, BadKeepListIsAnError) {
  KVCache cache(1, 1, 2);
  const float k[2] = {1, 2}, v[2] = {3, 4};
  for (int i = 0; i < 3; ++i) cache.append(0, 0, k, v, i);
  const std::vector<int32_t> unsorted = {2, 1};
  EXPECT_THROW(cache.keep(0, 0, unsorted), Error);
  const std::vector<int32_t> out_of_range = {0, 3};
  EXPECT_THROW(cache.keep(0, 0, out_of_range), Error);
  const std::vector<int32_t> ok = {0, 2};
  cache.keep(0, 0, ok);
  EXPECT_EQ(cache.head(0, 0).len, 2);
  EXPECT_EQ(cache.head(0, 0).positions, (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(cache.head(0, 0).keys, (std::vector<float>{1, 2, 1, 2}));
}

TEST(Runtime, TokenOutsideVocabularyIsAnError) {
  REQUIRE_STORIES();
  Session s(stories());
  const int32_t bad[2] = {1, 100000};
  EXPECT_THROW(s.feed(bad), Error);
}

// Every tests/fixtures/logits_*.json written by tools/reference/make_fixtures.py (PyTorch, f64).
TEST(Runtime, MatchesPyTorchFixtures) {
  const std::filesystem::path dir = std::filesystem::path(NAMMKIT_SOURCE_DIR) / "tests/fixtures";
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("logits_", 0) != 0 || entry.path().extension() != ".json") continue;
    const nlohmann::json fx = nlohmann::json::parse(read_file(entry.path().string()));
    if (fx.contains("evicted")) continue;  // the eviction fixture has its own test
    std::string path = fx.at("model_path").get<std::string>();
    if (path.rfind("SHARED:", 0) == 0) {
      path = std::string(NAMMKIT_SHARED_DIR) + "/" + path.substr(7);
      if (!file_exists(path)) continue;
    } else {
      path = std::string(NAMMKIT_SOURCE_DIR) + "/" + path;
    }
    SCOPED_TRACE(name);
    const Model m = load_model(path);
    const std::vector<int32_t> tokens = fx.at("tokens").get<std::vector<int32_t>>();
    const auto rows = fx.at("logits").get<std::vector<std::vector<double>>>();
    // The reference multiplies f32 activations; with block-quantised weights nammkit (as llama.cpp)
    // rounds the activations to 8 bits per block of 32 inside each product: ~0.3% relative error per
    // product, ~1-2% of max|logit| after this model's 14 products. Float weights: f32 rounding only.
    const double tolerance = is_quantized(m.layers[0].wq.dtype) ? 3e-2 : 1e-3;
    // Chunked prefill (GEMM path) and one token at a time (the fused decode dot kernels).
    for (int chunk : {128, 1}) {
      SessionOptions opt;
      opt.prefill_chunk = chunk;
      Session s(m, nullptr, opt);
      std::vector<float> all;
      s.feed(tokens, &all);
      const size_t V = m.config.vocab_size;
      for (size_t r = 0; r < rows.size(); ++r) {
        const size_t pos = tokens.size() - rows.size() + r;
        ASSERT_EQ(rows[r].size(), V);
        EXPECT_LT(rel_error(all.data() + pos * V, rows[r]), tolerance) << "position " << pos << " chunk " << chunk;
      }
    }
    ++checked;
  }
  EXPECT_GE(checked, 5) << "expected the PyTorch logit fixtures in " << dir;
}

// Evicts, at the first update, the positions a fixture lists per (layer, KV head).
class EvictListedPositions : public MemoryPolicy {
 public:
  explicit EvictListedPositions(std::map<int, std::map<int, std::set<int>>> evicted) : evicted_(std::move(evicted)) {}
  std::string name() const override { return "evict-listed"; }
  KeepLists update(const LayerWindow& w) override {
    KeepLists keep(w.heads.size());
    for (size_t g = 0; g < w.heads.size(); ++g) {
      const std::set<int>& drop = evicted_[w.layer][int(g)];
      for (int j = 0; j < w.heads[g].n_keys; ++j)
        if (!drop.count(w.heads[g].positions[j])) keep[g].push_back(j);
    }
    return keep;
  }

 private:
  std::map<int, std::map<int, std::set<int>>> evicted_;
};

// PyTorch masks the listed keys from queries >= mask_from; nammkit evicts them at that update.
TEST(Runtime, EvictionMatchesPyTorchMaskedFixture) {
  REQUIRE_STORIES();
  const nlohmann::json fx = nlohmann::json::parse(
      read_file(std::string(NAMMKIT_SOURCE_DIR) + "/tests/fixtures/logits_stories260K_masked.json"));
  std::map<int, std::map<int, std::set<int>>> evicted;
  for (const auto& [layer, heads] : fx.at("evicted").items())
    for (const auto& [head, positions] : heads.items())
      for (int p : positions.get<std::vector<int>>()) evicted[std::stoi(layer)][std::stoi(head)].insert(p);
  const int mask_from = fx.at("mask_from").get<int>();
  const std::vector<int32_t> tokens = fx.at("tokens").get<std::vector<int32_t>>();
  const std::vector<int> positions = fx.at("positions").get<std::vector<int>>();
  const auto rows = fx.at("logits").get<std::vector<std::vector<double>>>();

  EvictListedPositions policy(evicted);
  SessionOptions opt;
  opt.update_interval = mask_from;
  Session s(stories(), &policy, opt);
  std::vector<float> all;
  s.feed(tokens, &all);
  EXPECT_EQ(s.stats().policy_updates, 1);
  const size_t V = stories().config.vocab_size;
  for (size_t r = 0; r < rows.size(); ++r)
    EXPECT_LT(rel_error(all.data() + positions[r] * V, rows[r]), 1e-3) << "position " << positions[r];
}

// ---------------------------------------------------------------------------------------------
// The backend interface (transformer/backend.h) on the CPU.

TEST(Backend, CpuSessionsAreTheCpuRuntime) {
  REQUIRE_STORIES();
  const std::unique_ptr<Backend> backend = make_cpu_backend(stories());
  EXPECT_EQ(backend->device(), Device::Cpu);
  EXPECT_EQ(&backend->model(), &stories());
  auto policy = make_baseline_policy("h2o:24");
  SessionOptions o;
  o.update_interval = 16;
  const std::unique_ptr<InferenceSession> via_backend = backend->new_session(policy.get(), o);
  auto policy2 = make_baseline_policy("h2o:24");
  Session direct(stories(), policy2.get(), o);
  const std::vector<int32_t> tokens = {1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426,
                                       338, 401, 396, 267, 337, 410, 408, 419, 292, 300, 301, 302, 303, 304, 305, 306};
  EXPECT_EQ(via_backend->feed(tokens), direct.feed(tokens));  // 32 tokens: updates at 16 and 32
  EXPECT_EQ(via_backend->total_tokens(), direct.total_tokens());
  EXPECT_GT(via_backend->stats().tokens_evicted, 0);
  for (int l = 0; l < stories().config.n_layers; ++l)
    for (int h = 0; h < stories().config.n_kv_heads; ++h) EXPECT_EQ(via_backend->head_len(l, h), 24);
}

TEST(Backend, GenerationStopsWhereAsked) {
  REQUIRE_STORIES();
  Session s(stories());
  const int32_t bos[1] = {1};
  GenerateOptions opt;
  opt.max_new_tokens = 10;
  const Generation all = generate_greedy(s, bos, opt);
  ASSERT_EQ(all.tokens.size(), 10u);
  // A stop predicate keeps the token it stops at.
  int seen = 0;
  s.reset();
  const Generation three = generate_greedy(s, bos, opt, [&](int32_t) { return ++seen == 3; });
  EXPECT_EQ(three.tokens, std::vector<int32_t>(all.tokens.begin(), all.tokens.begin() + 3));
  // EOS is not kept; the last token is never fed back (position = prompt + generated - 1).
  s.reset();
  opt.eos_id = all.tokens[4];
  const Generation to_eos = generate_greedy(s, bos, opt);
  EXPECT_EQ(to_eos.tokens, std::vector<int32_t>(all.tokens.begin(), all.tokens.begin() + 4));
  EXPECT_EQ(s.position(), 1 + 4);
  opt.stop_at_eos = false;
  s.reset();
  EXPECT_EQ(generate_greedy(s, bos, opt).tokens, all.tokens);
  EXPECT_EQ(s.position(), 1 + 10 - 1);
}

TEST(Backend, DeviceChoiceNamesTheFlag) {
  EXPECT_EQ(DeviceChoice::parse("cpu", "x").kind, DeviceChoice::Cpu);
  EXPECT_EQ(DeviceChoice::parse("auto", "x").kind, DeviceChoice::Auto);
  try {
    DeviceChoice::parse("gpu", "nammkit eval: --device");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nammkit eval: --device"), std::string::npos) << e.what();
  }
}

TEST(Backend, CudaWithoutItsModuleIsAnErrorNotACpuRun) {
  REQUIRE_STORIES();
  // The module is looked up once per process; ctest runs each test in a process of its own.
  setenv("NAMMKIT_CUDA_MODULE", "/no/such/libnammkit_cuda.so", 1);
  try {
    make_backend(stories(), DeviceChoice::parse("cuda", "x"), true);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/no/such/libnammkit_cuda.so"), std::string::npos) << e.what();
  }
  // auto falls back to the CPU instead.
  EXPECT_EQ(make_backend(stories(), DeviceChoice::parse("auto", "x"), true)->device(), Device::Cpu);
}

}  // namespace
}  // namespace nammkit
