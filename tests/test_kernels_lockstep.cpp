// Lockstep batches on the GPU (kernels/cuda_lockstep.h) against the same sequences run one by one
// through plain CudaSessions: logits, eviction decisions per (layer, KV head), and per-member fitness.
// Every test skips without a GPU.
//
// Tolerances. A lockstep step runs the same kernels on the same numbers; what differs is the order of
// f32 summations: cuBLAS may pick another GEMM algorithm (split-K, tile order) for another row count,
// and attention_decode cuts the cache into a split count that depends on how many KV heads one launch
// holds. Those differences (~1e-6 relative per product) are then amplified only where an activation is
// rounded to the weights' type before the next product and lands on the other side of a rounding
// boundary: one ulp of that element, 2^-11 relative for f16, 2^-8 for bf16. Through a few layers that
// bounds the logits' relative difference by a few such ulps: 5e-3 (f16) and 3e-2 (bf16). Cache decisions:
// StreamingLLM keeps by position (exact); H2O and the NAMM rank by attention, where two tokens' scores
// may tie to that precision, so ≥ 90 % of the kept positions must agree and lengths are equal for
// budgeted H2O, within 1 + 5 % for the NAMM's threshold rule.
#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cuda_backend.h"
#include "kernels/cuda_lockstep.h"
#include "kernels/cuda_model.h"
#include "kernels/cuda_session.h"
#include "kernels/cuda_util.h"
#include "namm/policy_file.h"
#include "tests/runtime_compare.h"
#include "tests/shared_model.h"
#include "transformer/loader.h"

namespace nammkit::kernels {
namespace {

#define REQUIRE_CUDA_DEVICE()   \
  if (!cuda_device_available()) \
  GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount failed or found 0): GPU test not run"

std::string testbed_path() {
  const char* env = std::getenv("NAMMKIT_TESTBED_MODEL");
  return env && *env ? std::string(env) : std::string(NAMMKIT_SOURCE_DIR) + "/models/testbed/testbed.gguf";
}

using testing::random_tokens;

double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  return testing::relative_error(a.data(), b.data(), static_cast<int>(b.size()));
}

// `namm_bias` (when not 0) replaces the random NAMM's read-out bias: negative values make it evict.
std::unique_ptr<MemoryPolicy> make_case_policy(int kind, uint32_t seed, float namm_bias = 0.0f) {
  switch (kind) {
    case 0: return nullptr;
    case 1: return make_baseline_policy("streaming:24");
    case 2: return make_baseline_policy("h2o:24");
    default: {
      PolicyFile f = make_namm_policy_file(ScorerKind::Bam);
      f.set_update_interval(16);
      std::mt19937 rng(seed);
      std::normal_distribution<float> n(0.0f, 0.5f);
      for (int i = 0; i < f.params_size(); ++i) f.set_params(i, n(rng));
      if (namm_bias != 0.0f) f.set_params(f.params_size() - 1, namm_bias);
      return make_policy(f);
    }
  }
}

// What one sequence did: logits after every feed, and at the end each head's kept positions.
struct Trace {
  std::vector<std::vector<float>> logits;
  std::vector<std::vector<int32_t>> positions;  // [layer * n_kv + head]
  int64_t updates = 0;
  int64_t tokens_evicted = 0;
};

// Sequence s: policy kind s % 4 (full, StreamingLLM, H2O, a random NAMM of its own), a prompt of
// 30 + 45 * (s / 4) tokens fed in one call (so full caches grow past their first 64 and 128 rows while
// they hold tokens), then 20 single tokens (fixed, not generated: the test compares the runtimes, not
// the texts).
Trace run_sequence(CudaSession& session, const Model& model, int s) {
  Trace trace;
  const std::vector<int32_t> tokens = random_tokens(model, 30 + 45 * (s / 4) + 20, 100 + s);
  const size_t prompt = tokens.size() - 20;
  trace.logits.push_back(session.feed(std::span<const int32_t>(tokens.data(), prompt)));
  for (size_t i = prompt; i < tokens.size(); ++i) trace.logits.push_back(session.feed({tokens.data() + i, 1}));
  const ModelConfig& c = model.config;
  for (int l = 0; l < c.n_layers; ++l)
    for (int g = 0; g < c.n_kv_heads; ++g) trace.positions.push_back(session.head_positions(l, g));
  trace.updates = session.stats().policy_updates;
  trace.tokens_evicted = session.stats().tokens_evicted;
  return trace;
}

struct LockstepCase {
  MatrixPrecision precision = MatrixPrecision::F16;
  DType kv_dtype = DType::F16;
  bool mixed_kv = false;  // odd sequences keep f32 KV: the group runs one pass per KV type
  CudaLockstepOptions group;
  double logit_tolerance = 5e-3;
  bool namm_on_device = false;  // the batched sessions' NAMMs run on the device, batched in the steps
  float namm_bias = 0.0f;       // the NAMMs' read-out bias (0: random like the other weights)
};

void check_lockstep(const std::string& path, const LockstepCase& lc) {
  const Model model = load_model(path);
  CudaModel gpu(model, lc.precision);
  constexpr int kSequences = 12;  // 4 policies x 3 prompt lengths
  auto options = [&](int s) {
    CudaSessionOptions o;
    o.session.prefill_chunk = 8;
    o.session.update_interval = 16;
    o.kv_dtype = lc.mixed_kv && s % 2 == 1 ? DType::F32 : lc.kv_dtype;
    return o;
  };

  std::vector<Trace> alone(kSequences), batched(kSequences);
  for (int s = 0; s < kSequences; ++s) {
    std::unique_ptr<MemoryPolicy> policy = make_case_policy(s % 4, 7 + s, lc.namm_bias);
    CudaSession session(gpu, policy.get(), options(s));
    alone[size_t(s)] = run_sequence(session, model, s);
  }

  CudaLockstepGroup group(gpu, lc.group);
  std::vector<std::string> errors(kSequences);
  std::vector<int64_t> device_updates(kSequences, 0), batched_updates(kSequences, 0);
  {
    std::vector<std::unique_ptr<MemoryPolicy>> policies;
    std::vector<std::unique_ptr<CudaSession>> sessions;
    for (int s = 0; s < kSequences; ++s) {
      policies.push_back(make_case_policy(s % 4, 7 + s, lc.namm_bias));
      CudaSessionOptions o = options(s);
      o.namm_on_device = lc.namm_on_device;
      sessions.push_back(std::make_unique<CudaSession>(gpu, policies.back().get(), o, &group));
    }
    std::vector<std::thread> threads;
    for (int s = 0; s < kSequences; ++s)
      threads.emplace_back([&, s] {
        try {
          batched[size_t(s)] = run_sequence(*sessions[size_t(s)], model, s);
          device_updates[size_t(s)] = sessions[size_t(s)]->device_namm_updates();
          batched_updates[size_t(s)] = sessions[size_t(s)]->batched_namm_updates();
        } catch (const std::exception& e) {
          errors[size_t(s)] = e.what();
        }
        sessions[size_t(s)].reset();  // leaves the group: the others no longer wait for it
      });
    for (std::thread& t : threads) t.join();
  }
  for (int s = 0; s < kSequences; ++s) ASSERT_EQ(errors[size_t(s)], "") << "sequence " << s;
  const LockstepStats stats = group.stats();
  if (!lc.mixed_kv) {
    EXPECT_EQ(stats.max_batch, kSequences) << "the first prefill chunks of all sequences ran as one step";
  }
  EXPECT_LT(stats.steps, stats.chunks) << "steps batched several chunks";

  for (int s = 0; s < kSequences; ++s) {
    SCOPED_TRACE(path + ", sequence " + std::to_string(s) + " (policy kind " + std::to_string(s % 4) + ")");
    const Trace &a = alone[size_t(s)], &b = batched[size_t(s)];
    ASSERT_EQ(a.logits.size(), b.logits.size());
    for (size_t i = 0; i < a.logits.size(); ++i)
      EXPECT_LE(relative_error(b.logits[i], a.logits[i]), lc.logit_tolerance) << "feed " << i;
    EXPECT_EQ(a.updates, b.updates);
    const bool device_namm = lc.namm_on_device && s % 4 == 3;
    EXPECT_EQ(device_updates[size_t(s)], device_namm ? b.updates : 0)
        << "the NAMM's updates ran on the device exactly when asked";
    if (device_namm) {
      // The three NAMM sequences share their first updates' steps (their prompts' chunks line up).
      EXPECT_GE(batched_updates[size_t(s)], 1) << "no update was batched in a step";
      EXPECT_GT(a.tokens_evicted, 0) << "the NAMM never evicted: the comparison checks nothing";
    }
    for (size_t h = 0; h < a.positions.size(); ++h) {
      const std::vector<int32_t>&pa = a.positions[h], &pb = b.positions[h];
      const int kind = s % 4;
      if (kind <= 1) {
        EXPECT_EQ(pb, pa) << "head " << h << ": full cache and StreamingLLM keep the same positions";
        continue;
      }
      const int la = static_cast<int>(pa.size()), lb = static_cast<int>(pb.size());
      if (kind == 2) EXPECT_EQ(lb, la) << "head " << h << ": H2O's budget";
      else EXPECT_LE(std::abs(lb - la), 1 + la / 20) << "head " << h;
      int common = 0;
      for (int32_t p : pa) common += std::binary_search(pb.begin(), pb.end(), p) ? 1 : 0;
      EXPECT_GE(common, int(std::floor(0.9 * std::min(la, lb)))) << "head " << h;
    }
  }
}

TEST(KernelLockstep, MatchesSessionsAloneStories260K) {
  REQUIRE_STORIES();
  REQUIRE_CUDA_DEVICE();
  check_lockstep(testing::kStories, LockstepCase{});
}

// The NAMM sequences' updates batched on the device (kernels/namm_device.h) against the host NAMM of
// each sequence alone.
TEST(KernelLockstep, DeviceNammMatchesSessionsAloneStories260K) {
  REQUIRE_STORIES();
  REQUIRE_CUDA_DEVICE();
  LockstepCase lc;
  lc.namm_on_device = true;
  lc.namm_bias = -0.5f;
  check_lockstep(testing::kStories, lc);
  // The same with a budget so small that every (sequence, layer) is a pass of its own.
  lc.group.namm_budget.key_rows = 1;
  check_lockstep(testing::kStories, lc);
}

TEST(KernelLockstep, DeviceNammMatchesSessionsAloneTestbed) {
  REQUIRE_CUDA_DEVICE();
  if (!std::filesystem::exists(testbed_path())) GTEST_SKIP() << "no testbed model at " << testbed_path();
  LockstepCase lc;
  lc.namm_on_device = true;
  lc.namm_bias = -0.5f;
  check_lockstep(testbed_path(), lc);
}

TEST(KernelLockstep, MatchesSessionsAloneStories260KBf16) {
  REQUIRE_STORIES();
  REQUIRE_CUDA_DEVICE();
  LockstepCase lc;
  lc.precision = MatrixPrecision::BF16;
  lc.kv_dtype = DType::BF16;
  lc.logit_tolerance = 3e-2;
  check_lockstep(testing::kStories, lc);
}

TEST(KernelLockstep, MatchesSessionsAloneStories260KF32Cache) {
  REQUIRE_STORIES();
  REQUIRE_CUDA_DEVICE();
  LockstepCase lc;
  lc.kv_dtype = DType::F32;
  check_lockstep(testing::kStories, lc);
}

// Half the sequences with f32 KV (a pass per KV type), and a probability budget of 4,096 floats, so
// every launch with a NAMM or H2O sequence is cut down to one sequence; with the step's buffers planned
// up front.
TEST(KernelLockstep, MixedKvTypesSmallProbabilityBudgetPlannedMemory) {
  REQUIRE_STORIES();
  REQUIRE_CUDA_DEVICE();
  LockstepCase lc;
  lc.mixed_kv = true;
  lc.group.max_probs_floats = 4096;
  lc.group.max_rows = 12 * 8;
  lc.group.max_sequences = 12;
  lc.group.max_len = 200;
  check_lockstep(testing::kStories, lc);
}

TEST(KernelLockstep, MatchesSessionsAloneTestbed) {
  if (!std::filesystem::exists(testbed_path())) GTEST_SKIP() << "no testbed model at " << testbed_path();
  REQUIRE_CUDA_DEVICE();
  check_lockstep(testbed_path(), LockstepCase{});
}

// Per-member fitness through the backends, as the population evaluation runs it: members (random NAMMs)
// x prompts, fitness = mean log-likelihood per token of the prompts under the member's policy, on the
// CPU backend, the CUDA backend one sequence at a time, and the CUDA backend's lockstep form with one
// thread per sequence. CUDA vs CPU within 2e-2 relative (f16 weights: test_kernels_session.cpp), the two
// CUDA paths within 1e-3 (summation order only).
TEST(KernelLockstep, MemberFitnessMatchesThroughTheBackends) {
  REQUIRE_STORIES();
  REQUIRE_CUDA_DEVICE();
  const Model& model = testing::stories();
  const std::unique_ptr<Backend> cpu = make_cpu_backend(model);
  const std::unique_ptr<Backend> cuda = make_cuda_backend(model);
  const std::unique_ptr<Backend> batched = cuda->new_lockstep_backend({});
  ASSERT_NE(batched, nullptr);
  EXPECT_EQ(batched->device(), Device::Cuda);
  constexpr int kMembers = 4, kPrompts = 3;
  SessionOptions o;
  o.prefill_chunk = 32;
  o.update_interval = 32;
  // `ready` (when given): every thread's session exists before any feeds, so that the lockstep steps
  // hold them all.
  auto score = [&](const Backend& backend, int item, MemoryPolicy* policy, std::barrier<>* ready) {
    const std::vector<int32_t> tokens = random_tokens(model, 90 + 13 * (item % kPrompts), 50 + item % kPrompts);
    std::unique_ptr<InferenceSession> session;
    try {
      session = backend.new_session(policy, o);
    } catch (...) {
      if (ready) ready->arrive_and_drop();  // the others must not wait for this one
      throw;
    }
    if (ready) ready->arrive_and_wait();
    std::vector<float> logits;
    session->feed(tokens, &logits);
    const int vocab = model.config.vocab_size;
    double sum = 0;
    for (size_t t = 0; t + 1 < tokens.size(); ++t)
      sum += log_prob(std::span<const float>(logits.data() + t * vocab, size_t(vocab)), tokens[t + 1]);
    return sum / double(tokens.size() - 1);
  };
  auto fitness = [&](const Backend& backend, bool one_thread_each) {
    std::vector<double> item_scores(kMembers * kPrompts);
    std::vector<std::unique_ptr<MemoryPolicy>> policies;
    for (int i = 0; i < kMembers * kPrompts; ++i) policies.push_back(make_case_policy(3, 1000 + i / kPrompts));
    if (one_thread_each) {
      std::barrier<> ready(kMembers * kPrompts);
      std::vector<std::string> errors(kMembers * kPrompts);
      std::vector<std::thread> threads;
      for (int i = 0; i < kMembers * kPrompts; ++i)
        threads.emplace_back([&, i] {
          try {
            item_scores[size_t(i)] = score(backend, i, policies[size_t(i)].get(), &ready);
          } catch (const std::exception& e) {
            errors[size_t(i)] = e.what();
          }
        });
      for (std::thread& t : threads) t.join();
      for (int i = 0; i < kMembers * kPrompts; ++i) EXPECT_EQ(errors[size_t(i)], "") << "item " << i;
    } else {
      for (int i = 0; i < kMembers * kPrompts; ++i)
        item_scores[size_t(i)] = score(backend, i, policies[size_t(i)].get(), nullptr);
    }
    std::vector<double> f(kMembers, 0.0);
    for (int i = 0; i < kMembers * kPrompts; ++i) f[size_t(i / kPrompts)] += item_scores[size_t(i)] / kPrompts;
    return f;
  };
  const std::vector<double> f_cpu = fitness(*cpu, false), f_cuda = fitness(*cuda, false),
                            f_batched = fitness(*batched, true);
  const auto* lockstep = dynamic_cast<const LockstepCudaBackend*>(batched.get());
  ASSERT_NE(lockstep, nullptr);
  EXPECT_EQ(lockstep->group().stats().max_batch, kMembers * kPrompts) << "every sequence's first chunk in one step";
  for (int m = 0; m < kMembers; ++m) {
    EXPECT_NEAR(f_cuda[size_t(m)], f_cpu[size_t(m)], 2e-2 * std::fabs(f_cpu[size_t(m)])) << "member " << m;
    EXPECT_NEAR(f_batched[size_t(m)], f_cuda[size_t(m)], 1e-3 * std::fabs(f_cuda[size_t(m)])) << "member " << m;
  }
}

TEST(KernelLockstep, RejectsASessionOfAnotherModel) {
  REQUIRE_STORIES();
  REQUIRE_CUDA_DEVICE();
  const Model& model = testing::stories();
  CudaModel a(model), b(model);
  CudaLockstepGroup group(a);
  EXPECT_THROW(CudaSession(b, nullptr, {}, &group), Error);
}

}  // namespace
}  // namespace nammkit::kernels
