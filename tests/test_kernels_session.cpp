// CudaSession (kernels/cuda_session.h) against the CPU Session on real checkpoints: stories260K (shared
// folder), tests/fixtures/tiny_llama_q8_0.gguf and tiny_qwen2_f16.gguf. Weights are f16 on the GPU, so
// logits agree to ~1e-2 relative; greedy text must be the same up to near-ties; under evicting policies
// the cache lengths per (layer, KV head) must match after every update. Every test skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kernels/cuda_backend.h"
#include "kernels/cuda_model.h"
#include "kernels/cuda_session.h"
#include "kernels/cuda_util.h"
#include "namm/namm_policy.h"
#include "namm/policy_file.h"
#include "tests/runtime_compare.h"
#include "tests/shared_model.h"
#include "transformer/loader.h"
#include "transformer/session.h"

namespace nammkit::kernels {
namespace {

#define REQUIRE_CUDA_DEVICE()   \
  if (!cuda_device_available()) \
  GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount failed or found 0): GPU test not run"

constexpr double kLogitTolerance = 2e-2;  // f16 weights and KV, f32 accumulation

const std::string kFixtures = std::string(NAMMKIT_SOURCE_DIR) + "/tests/fixtures/";

using testing::random_tokens;
using testing::relative_error;

const Model& load_cached(const std::string& path) {
  static std::vector<std::pair<std::string, std::unique_ptr<Model>>> cache;
  for (auto& [p, m] : cache)
    if (p == path) return *m;
  cache.emplace_back(path, std::make_unique<Model>(load_model(path)));
  return *cache.back().second;
}

void check_logits(const std::string& path) {
  {
    const Model& model = load_cached(path);
    const int vocab = model.config.vocab_size;
    SessionOptions so;
    so.prefill_chunk = 16;  // 40 tokens: chunks 16 + 16 + 8
    Session cpu(model, nullptr, so);
    CudaModel gpu_model(model);
    CudaSessionOptions go;
    go.session = so;
    CudaSession gpu(gpu_model, nullptr, go);

    const std::vector<int32_t> prompt = random_tokens(model, 40, 7);
    std::vector<float> cpu_all, gpu_all;
    cpu.feed(prompt, &cpu_all);
    gpu.feed(prompt, &gpu_all);
    ASSERT_EQ(cpu_all.size(), gpu_all.size());
    for (size_t t = 0; t < prompt.size(); ++t)
      EXPECT_LT(relative_error(gpu_all.data() + t * vocab, cpu_all.data() + t * vocab, vocab), kLogitTolerance)
          << "prefill row " << t;
    // Decode path (attention_decode): three single tokens.
    for (int i = 0; i < 3; ++i) {
      const int32_t one[1] = {prompt[size_t(i)]};
      const std::vector<float>& a = cpu.feed(one);
      const std::vector<float>& b = gpu.feed(one);
      EXPECT_LT(relative_error(b.data(), a.data(), vocab), kLogitTolerance) << "decode step " << i;
    }
    EXPECT_EQ(gpu.position(), cpu.position());
    EXPECT_EQ(gpu.total_tokens(), cpu.cache().total_tokens());
  }
}

void check_greedy(const std::string& path) {
  {
    const Model& model = load_cached(path);
    Session cpu(model);
    CudaModel gpu_model(model);
    CudaSession gpu(gpu_model);
    const std::vector<int32_t> prompt = random_tokens(model, 8, 11);
    // CPU greedy, remembering how clear each choice was (top-1 minus top-2, relative to max |logit|).
    std::vector<int32_t> cpu_tokens;
    std::vector<double> margins;
    const std::vector<float>* logits = &cpu.feed(prompt);
    for (int i = 0; i < 32; ++i) {
      std::vector<float> sorted(logits->begin(), logits->end());
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
      double maxabs = 0;
      for (float x : *logits) maxabs = std::max(maxabs, double(std::fabs(x)));
      margins.push_back((sorted[0] - sorted[1]) / std::max(maxabs, 1e-12));
      cpu_tokens.push_back(argmax(*logits));
      const int32_t one[1] = {cpu_tokens.back()};
      logits = &cpu.feed(one);
    }
    GenerateOptions opt;
    opt.max_new_tokens = 32;
    opt.stop_at_eos = false;
    const std::vector<int32_t> gpu_tokens = generate_greedy(gpu, prompt, opt).tokens;
    ASSERT_EQ(gpu_tokens.size(), cpu_tokens.size());
    for (size_t i = 0; i < cpu_tokens.size(); ++i) {
      if (gpu_tokens[i] == cpu_tokens[i]) continue;
      // Only a near-tie may make the two pick differently; after that the texts legitimately differ.
      EXPECT_LT(margins[i], 2 * kLogitTolerance) << "token " << i << ": cpu " << cpu_tokens[i] << ", gpu "
                                                 << gpu_tokens[i] << " with a clear margin " << margins[i];
      break;
    }
  }
}

struct PolicyCase {
  std::string name;
  // Builds a fresh policy (one for the CPU, one for the GPU).
  std::function<std::unique_ptr<MemoryPolicy>()> make;
  // Fraction of kept positions both caches hold. Baselines with a token budget have exact lengths; which
  // tokens they keep may differ where scores tie (f16 weights and KV move attention by ~1e-3), and the
  // difference then carries over to later updates.
  double min_position_agreement;
  int length_slack;  // allowed |len_cpu - len_gpu| per head: length_slack + length_slack_rel * len_cpu
  double length_slack_rel;
  bool must_evict;  // the CPU run must evict something (else the case checks nothing)
};

std::vector<PolicyCase> policy_cases() {
  std::vector<PolicyCase> cases;
  cases.push_back({"streaming:24", [] { return make_baseline_policy("streaming:24"); }, 1.0, 0, 0.0, true});
  cases.push_back({"h2o:24", [] { return make_baseline_policy("h2o:24"); }, 0.5, 0, 0.0, true});
  cases.push_back({"namm(random)",
                   [] {
                     PolicyFile f = make_namm_policy_file(ScorerKind::Bam);
                     f.set_update_interval(16);
                     std::mt19937 rng(3);
                     std::normal_distribution<float> n(0.0f, 0.5f);
                     for (int i = 0; i < f.params_size(); ++i) f.set_params(i, n(rng));
                     return make_policy(f);
                   },
                   // Scores near 0 may fall on either side of the eviction threshold.
                   0.5, 3, 0.15, false});
  return cases;
}

void check_eviction(const std::string& path) {
  {
    const Model& model = load_cached(path);
    const ModelConfig& c = model.config;
    CudaModel gpu_model(model);
    for (const PolicyCase& pc : policy_cases()) {
      SCOPED_TRACE(path + " / " + pc.name);
      SessionOptions so;
      so.prefill_chunk = 8;
      so.update_interval = 16;
      std::unique_ptr<MemoryPolicy> cpu_policy = pc.make(), gpu_policy = pc.make();
      Session cpu(model, cpu_policy.get(), so);
      CudaSessionOptions go;
      go.session = so;
      CudaSession gpu(gpu_model, gpu_policy.get(), go);
      const std::vector<int32_t> tokens = random_tokens(model, 96, 5);
      // A 50-token prompt, then single tokens: updates after prefill chunks and after decode steps.
      for (size_t done = 0; done < tokens.size();) {
        const size_t n = done == 0 ? 50 : 1;
        std::span<const int32_t> piece(tokens.data() + done, n);
        cpu.feed(piece);
        gpu.feed(piece);
        done += n;
        ASSERT_EQ(gpu.stats().policy_updates, cpu.stats().policy_updates);
        for (int l = 0; l < c.n_layers; ++l)
          for (int g = 0; g < c.n_kv_heads; ++g) {
            const HeadCache& h = cpu.cache().head(l, g);
            const int gpu_len = gpu.head_len(l, g);
            ASSERT_LE(std::abs(gpu_len - h.len), pc.length_slack + int(pc.length_slack_rel * h.len))
                << "after " << done << " tokens, layer " << l << " head " << g << ": cpu " << h.len << ", gpu "
                << gpu_len;
            const std::vector<int32_t>& gp = gpu.head_positions(l, g);
            ASSERT_EQ(int(gp.size()), gpu_len);
            ASSERT_TRUE(std::is_sorted(gp.begin(), gp.end()));
            int common = 0;
            for (int j = 0; j < h.len; ++j)
              common += std::binary_search(gp.begin(), gp.end(), h.positions[size_t(j)]) ? 1 : 0;
            EXPECT_GE(common, int(std::floor(pc.min_position_agreement * std::min(h.len, gpu_len))))
                << "after " << done << " tokens, layer " << l << " head " << g;
          }
      }
      if (pc.must_evict) {
        EXPECT_GT(cpu.stats().tokens_evicted, 0) << "the policy never evicted: the test checks nothing";
      }
    }
  }
}

// One test per (model, check): stories260K needs the shared folder, the fixtures are in the tree.
#define MODEL_TESTS(Name, path_expr, require) \
  TEST(KernelSession, Logits##Name) {         \
    require;                                  \
    REQUIRE_CUDA_DEVICE();                    \
    check_logits(path_expr);                  \
  }                                           \
  TEST(KernelSession, GreedyText##Name) {     \
    require;                                  \
    REQUIRE_CUDA_DEVICE();                    \
    check_greedy(path_expr);                  \
  }                                           \
  TEST(KernelSession, Eviction##Name) {       \
    require;                                  \
    REQUIRE_CUDA_DEVICE();                    \
    check_eviction(path_expr);                \
  }

// The testbed model (tools/train_testbed): $NAMMKIT_TESTBED_MODEL, else models/testbed/testbed.gguf in the tree.
std::string testbed_path() {
  const char* env = std::getenv("NAMMKIT_TESTBED_MODEL");
  return env && *env ? std::string(env) : std::string(NAMMKIT_SOURCE_DIR) + "/models/testbed/testbed.gguf";
}
#define REQUIRE_TESTBED()                                  \
  if (!std::filesystem::exists(testbed_path()))            \
  GTEST_SKIP() << "no testbed model at " << testbed_path() \
               << " (train it with tools/train_testbed or set NAMMKIT_TESTBED_MODEL)"

MODEL_TESTS(Stories260K, testing::kStories, REQUIRE_STORIES())
MODEL_TESTS(Testbed, testbed_path(), REQUIRE_TESTBED())
MODEL_TESTS(TinyLlamaQ8_0, kFixtures + "tiny_llama_q8_0.gguf", (void)0)
MODEL_TESTS(TinyQwen2F16, kFixtures + "tiny_qwen2_f16.gguf", (void)0)

// The CUDA backend as the CLI and tasks/ use it (transformer/backend.h): sessions from the backend give
// the CPU backend's logits and cache decisions.
TEST(KernelSession, CudaBackendMatchesTheCpuBackend) {
  REQUIRE_STORIES();
  REQUIRE_CUDA_DEVICE();
  const Model& model = load_cached(testing::kStories);
  const std::unique_ptr<Backend> cpu = make_cpu_backend(model);
  const std::unique_ptr<Backend> gpu = make_cuda_backend(model);
  EXPECT_EQ(gpu->device(), Device::Cuda);
  EXPECT_EQ(gpu->name().rfind("cuda:", 0), 0u) << gpu->name();
  SessionOptions o;
  o.update_interval = 16;
  auto cpu_policy = make_baseline_policy("streaming:24");
  auto gpu_policy = make_baseline_policy("streaming:24");
  const std::unique_ptr<InferenceSession> a = cpu->new_session(cpu_policy.get(), o);
  const std::unique_ptr<InferenceSession> b = gpu->new_session(gpu_policy.get(), o);
  const std::vector<int32_t> tokens = random_tokens(model, 40, 3);
  const std::vector<float> la = a->feed(tokens);
  const std::vector<float> lb = b->feed(tokens);
  EXPECT_LT(relative_error(lb.data(), la.data(), model.config.vocab_size), kLogitTolerance);
  EXPECT_EQ(b->total_tokens(), a->total_tokens());
  EXPECT_EQ(b->stats().tokens_evicted, a->stats().tokens_evicted);
  GenerateOptions g;
  g.max_new_tokens = 8;
  a->reset();
  b->reset();
  const int32_t bos[1] = {1};
  EXPECT_EQ(generate_greedy(*b, bos, g).tokens, generate_greedy(*a, bos, g).tokens);
}

// The device NAMM (CudaSessionOptions::namm_on_device: spectrogram, features and BAM scores on the
// GPU, kernels/namm_device.h) against the same NAMM on the host, both on the GPU runtime, so both read
// the same attention rows: features differ only by cuFFT vs FFTW rounding, scores are double on both
// sides, so the caches must agree exactly but for a score within rounding of the threshold. A prompt
// in chunks, then decode steps (updates after both); evictions must happen; a mode change mid-sequence
// is an Error.
void check_device_namm(const std::string& path) {
  const Model& model = load_cached(path);
  const ModelConfig& c = model.config;
  CudaModel gpu_model(model);
  auto make = [] {
    PolicyFile f = make_namm_policy_file(ScorerKind::Bam);
    f.set_update_interval(16);
    std::mt19937 rng(11);
    std::normal_distribution<float> n(0.0f, 0.5f);
    for (int i = 0; i < f.params_size(); ++i) f.set_params(i, n(rng));
    f.set_params(f.params_size() - 1, -0.5f);  // the read-out bias: some tokens of every head fail
    return make_policy(f);
  };
  std::unique_ptr<MemoryPolicy> host_policy = make(), device_policy = make();
  CudaSessionOptions go;
  go.session.prefill_chunk = 8;
  go.session.update_interval = 16;
  CudaSession host(gpu_model, host_policy.get(), go);
  go.namm_on_device = true;
  CudaSession device(gpu_model, device_policy.get(), go);
  const std::vector<int32_t> tokens = random_tokens(model, 130, 9);
  int differing = 0, total = 0;
  for (size_t done = 0; done < tokens.size();) {
    const size_t n = done == 0 ? 70 : 1;
    std::span<const int32_t> piece(tokens.data() + done, n);
    const std::vector<float> a = host.feed(piece), b = device.feed(piece);
    done += n;
    EXPECT_LE(relative_error(b.data(), a.data(), c.vocab_size), 1e-3) << "after " << done << " tokens";
    ASSERT_EQ(device.stats().policy_updates, host.stats().policy_updates);
    for (int l = 0; l < c.n_layers; ++l)
      for (int g = 0; g < c.n_kv_heads; ++g) {
        ++total;
        differing += device.head_positions(l, g) != host.head_positions(l, g) ? 1 : 0;
        ASSERT_LE(std::abs(device.head_len(l, g) - host.head_len(l, g)), 1 + host.head_len(l, g) / 50)
            << "after " << done << " tokens, layer " << l << " head " << g;
      }
  }
  EXPECT_EQ(device.device_namm_updates(), device.stats().policy_updates) << "every update ran on the device";
  EXPECT_EQ(host.device_namm_updates(), 0);
  EXPECT_GT(host.stats().tokens_evicted, 0) << "the policy never evicted: the test checks nothing";
  EXPECT_LE(differing, total / 20) << "caches that differ at all (near-ties only)";

  // The same policy switched to collecting statistics mid-sequence cannot continue on the host.
  static_cast<NammPolicy*>(device_policy.get())->set_mode(NammMode::CollectStats);
  try {
    device.feed(std::span<const int32_t>(tokens.data(), 16));
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ran on the device earlier in this sequence"), std::string::npos) << e.what();
  }
}

TEST(KernelSession, DeviceNammMatchesHostNammStories260K) {
  REQUIRE_STORIES();
  REQUIRE_CUDA_DEVICE();
  check_device_namm(testing::kStories);
}

TEST(KernelSession, DeviceNammMatchesHostNammTestbed) {
  REQUIRE_TESTBED();
  REQUIRE_CUDA_DEVICE();
  check_device_namm(testbed_path());
}

TEST(KernelSession, RejectsUnsupportedOptions) {
  REQUIRE_CUDA_DEVICE();
  const Model& model = load_cached(kFixtures + "tiny_qwen2_f16.gguf");
  CudaModel gpu_model(model);
  CudaSessionOptions go;
  go.session.sliding_window = 8;
  EXPECT_THROW(CudaSession(gpu_model, nullptr, go), Error);
  CudaSession ok(gpu_model);
  const int32_t bad[1] = {model.config.vocab_size};
  EXPECT_THROW(ok.feed(bad), Error);
}

}  // namespace
}  // namespace nammkit::kernels
