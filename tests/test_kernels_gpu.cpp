// GPU kernels against their CPU references (kernels/reference.h). Host code only (the kernels are reached
// through their headers' functions); every test skips when no CUDA device is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/attention_decode.h"
#include "kernels/attention_prefill.h"
#include "kernels/bam_batched.h"
#include "kernels/cuda_util.h"
#include "kernels/kv_compact.h"
#include "kernels/reference.h"
#include "kernels/spectrogram.h"

namespace nammkit::kernels {
namespace {

#define REQUIRE_CUDA_DEVICE()   \
  if (!cuda_device_available()) \
  GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount failed or found 0): GPU test not run"

std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Host bytes of `x` stored as `dtype`.
std::vector<uint8_t> encode(DType dtype, const std::vector<float>& x) {
  std::vector<uint8_t> out(x.size() * kv_element_bytes(dtype, "encode"));
  for (size_t i = 0; i < x.size(); ++i) {
    if (dtype == DType::F32) {
      std::memcpy(out.data() + 4 * i, &x[i], 4);
    } else {
      const uint16_t h = dtype == DType::F16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

template <typename T>
DeviceBuffer<T> to_device(const std::vector<T>& host) {
  DeviceBuffer<T> d(std::max<size_t>(host.size(), 1));
  if (!host.empty())
    cuda_check(cudaMemcpy(d.get(), host.data(), sizeof(T) * host.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
  return d;
}

template <typename T>
std::vector<T> to_host(const DeviceBuffer<T>& d, size_t n) {
  cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  std::vector<T> host(n);
  if (n) cuda_check(cudaMemcpy(host.data(), d.get(), sizeof(T) * n, cudaMemcpyDeviceToHost), "cudaMemcpy");
  return host;
}

// Inputs are the same bits on both sides, so differences are f32 accumulation against the double
// reference; 16-bit KV gets a little more room for its larger rounding of values near 1.
float tolerance(DType dtype) { return dtype == DType::F32 ? 2e-5f : 5e-5f; }

void expect_close(const std::vector<float>& got, const std::vector<float>& want, float atol, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= atol + atol * std::fabs(want[i])) && bad++ < 10)
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
  EXPECT_EQ(bad, 0u) << what << ": elements out of tolerance " << atol;
}

// A KV cache of one layer: host copies (for the reference) and device buffers with pointer arrays.
struct TestCache {
  std::vector<std::vector<uint8_t>> keys, values;
  std::vector<DeviceBuffer<uint8_t>> d_keys, d_values;
  DeviceBuffer<const void*> d_key_ptrs, d_value_ptrs;
  DeviceBuffer<int> d_lens;
  std::vector<ref::KvHead> heads;

  TestCache(DType dtype, int D, const std::vector<int>& lens, uint32_t seed) {
    std::vector<const void*> kp, vp;
    for (size_t h = 0; h < lens.size(); ++h) {
      const size_t n = static_cast<size_t>(lens[h]) * D;
      keys.push_back(encode(dtype, random_vector(n, seed + 2 * h, -2.0f, 2.0f)));
      values.push_back(encode(dtype, random_vector(n, seed + 2 * h + 1)));
      d_keys.push_back(to_device(keys.back()));
      d_values.push_back(to_device(values.back()));
      kp.push_back(d_keys.back().get());
      vp.push_back(d_values.back().get());
    }
    for (size_t h = 0; h < lens.size(); ++h) heads.push_back({keys[h].data(), values[h].data(), lens[h]});
    d_key_ptrs = to_device(kp);
    d_value_ptrs = to_device(vp);
    d_lens = to_device(lens);
  }
};

struct AttentionCase {
  DType dtype;
  int n_q_heads, n_kv_heads, head_dim;
  std::vector<int> lens;  // per KV head (decode: cache length; prefill: n_old, the chunk is added)
};

std::vector<AttentionCase> attention_cases() {
  std::vector<AttentionCase> cases;
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    cases.push_back({t, 32, 8, 128, {4096, 0, 1, 257, 1000, 64, 3000, 2}});  // Llama-3-8B layer
    cases.push_back({t, 6, 2, 40, {3, 70}});                                 // group 3, odd head_dim
    cases.push_back({t, 16, 1, 64, {777}});                                  // multi-query
    cases.push_back({t, 4, 2, 20, {5, 130}});  // 16-bit rows of 40 bytes: the scalar (not 16-byte) loads
  }
  return cases;
}

TEST(KernelsGpu, DecodeAttentionMatchesReference) {
  REQUIRE_CUDA_DEVICE();
  for (const AttentionCase& c : attention_cases()) {
    SCOPED_TRACE(std::string(dtype_name(c.dtype)) + " heads " + std::to_string(c.n_q_heads) + "/" +
                 std::to_string(c.n_kv_heads) + " d " + std::to_string(c.head_dim));
    TestCache cache(c.dtype, c.head_dim, c.lens, 42);
    const int max_len = *std::max_element(c.lens.begin(), c.lens.end()) + 5;  // slack: grid sized past every head
    const auto q = random_vector(static_cast<size_t>(c.n_q_heads) * c.head_dim, 7);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    const int stride = max_len + 3;
    std::vector<float> want_out(q.size()), want_probs(static_cast<size_t>(c.n_kv_heads) * stride);
    ref::attention_decode(c.dtype, c.n_q_heads, c.head_dim, cache.heads, q.data(), scale, want_out.data(),
                          want_probs.data(), stride);

    for (bool with_probs : {false, true}) {
      DecodeShape shape{c.dtype, c.n_q_heads, c.n_kv_heads, c.head_dim, max_len, with_probs};
      DeviceBuffer<uint8_t> ws(decode_workspace_bytes(shape));
      auto d_q = to_device(q);
      DeviceBuffer<float> d_out(q.size()), d_probs(want_probs.size());
      DecodeArgs args{d_q.get(),
                      cache.d_key_ptrs.get(),
                      cache.d_value_ptrs.get(),
                      cache.d_lens.get(),
                      scale,
                      d_out.get(),
                      with_probs ? d_probs.get() : nullptr,
                      stride};
      attention_decode(shape, args, ws.get(), ws.bytes(), nullptr);
      expect_close(to_host(d_out, q.size()), want_out, tolerance(c.dtype), "decode out");
      if (with_probs) expect_close(to_host(d_probs, want_probs.size()), want_probs, tolerance(c.dtype), "decode probs");
    }
  }
}

// Which prefill kernel runs (kernels/attention_prefill.cu): the tensor-core one (mma.sync, sm_80+) for
// f16 / bf16 KV with head_dim a multiple of 16, the f32 CUDA-core one otherwise.
bool prefill_uses_tensor_cores(DType dtype, int head_dim) {
  int device = 0, major = 0;
  cuda_check(cudaGetDevice(&device), "cudaGetDevice");
  cuda_check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), "cudaDeviceGetAttribute");
  return dtype != DType::F32 && head_dim % 16 == 0 && major >= 8;
}

// Tolerance of the tensor-core path. It rounds Q (pre-scaled) and P to the KV type, unit roundoff
// u = 2^-11 (f16) or 2^-8 (bf16), and accumulates in f32; K and V are the reference's own values. A
// logit then moves by about u * sum_d |q_d k_d| (O(u) for these inputs, whose logits are O(1)), so each
// probability moves by O(u) relative and each output by O(u) * max|v|. A CPU emulation of the kernel's
// rounding points on these cases gave at most 0.65u * max|ref| for out, and 0.4u * max|ref| absolute or
// 1.5u relative for a probability. The bound eps * (|ref| + max|ref|) with eps = 4u keeps a margin of
// more than 2.5x, while a wrong key, row or mask costs O(p) or O(|v|) (and masked keys are checked to
// be exactly 0 separately).
float tensor_core_eps(DType dtype) { return 4.0f * std::ldexp(1.0f, dtype == DType::F16 ? -11 : -8); }

void expect_close_scaled(const std::vector<float>& got, const std::vector<float>& want, float eps, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  float max_ref = 0.0f;
  for (float w : want) max_ref = std::max(max_ref, std::fabs(w));
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= eps * (std::fabs(want[i]) + max_ref)) && bad++ < 10)
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i] << " (max |ref| " << max_ref
                    << ")";
  EXPECT_EQ(bad, 0u) << what << ": elements out of tolerance " << eps << " * (|ref| + max |ref|)";
}

// Probabilities the reference leaves at 0 (keys a query cannot see, columns past a head's length) must
// be exactly 0: a leak through the causal mask shows up here whatever its size.
void expect_zeros_where_zero(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (want[i] == 0.0f && got[i] != 0.0f && bad++ < 10)
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want 0";
  EXPECT_EQ(bad, 0u) << what << ": nonzero probabilities where the reference has 0";
}

struct PrefillCase {
  DType dtype;
  int n_q_heads, n_kv_heads, head_dim;
  std::vector<int> n_old;  // cached keys per KV head before the chunk (capped at 300), the chunk's T added
};

// Tensor-core path: head_dim 32, 64, 80, 128, 256 with f16 / bf16, GQA groups 1, 2, 3, 4, 8, 16, ragged
// heads with n_old 0 and > 0. General path: every f32 case, and head_dim 40 for all types.
std::vector<PrefillCase> prefill_cases() {
  std::vector<PrefillCase> cases;
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    cases.push_back({t, 32, 8, 128, {4096, 0, 1, 257, 1000, 64, 3000, 2}});  // Llama-3-8B layer, group 4
    cases.push_back({t, 6, 2, 40, {3, 70}});                                 // group 3, head_dim 40
    cases.push_back({t, 16, 1, 64, {777}});                                  // multi-query, group 16
    cases.push_back({t, 4, 4, 64, {0, 5, 100, 300}});                        // group 1
    cases.push_back({t, 16, 2, 128, {10, 250}});                             // group 8
    cases.push_back({t, 8, 1, 256, {90}});                                   // head_dim 256, group 8
    cases.push_back({t, 6, 3, 80, {33, 0, 1}});                              // head_dim 80, group 2
    cases.push_back({t, 3, 1, 32, {17}});                                    // head_dim 32, group 3
  }
  return cases;
}

TEST(KernelsGpu, PrefillAttentionMatchesReference) {
  REQUIRE_CUDA_DEVICE();
  for (const int T : {37, 200}) {  // neither a multiple of the tiles (64 rows, 32 / 64 keys)
    for (PrefillCase c : prefill_cases()) {
      std::vector<int> lens = c.n_old;
      for (int& n : lens) n = std::min(n, 300) + T;  // n_old cached keys, then the chunk's own
      const bool tc = prefill_uses_tensor_cores(c.dtype, c.head_dim);
      SCOPED_TRACE(std::string(dtype_name(c.dtype)) + " T " + std::to_string(T) + " heads " +
                   std::to_string(c.n_q_heads) + "/" + std::to_string(c.n_kv_heads) + " d " +
                   std::to_string(c.head_dim) + (tc ? " (tensor cores)" : " (general kernel)"));
      TestCache cache(c.dtype, c.head_dim, lens, 99);
      const int max_len = *std::max_element(lens.begin(), lens.end());
      const auto q = random_vector(static_cast<size_t>(T) * c.n_q_heads * c.head_dim, 8);
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      const int stride = max_len + 1;
      std::vector<float> want_out(q.size()), want_probs(static_cast<size_t>(c.n_kv_heads) * T * stride);
      ref::attention_prefill(c.dtype, c.n_q_heads, c.head_dim, T, cache.heads, q.data(), scale, want_out.data(),
                             want_probs.data(), stride);
      auto check = [&](const std::vector<float>& got, const std::vector<float>& want, const char* what) {
        if (tc) {
          expect_close_scaled(got, want, tensor_core_eps(c.dtype), what);
        } else {
          expect_close(got, want, tolerance(c.dtype), what);
        }
      };

      for (bool with_probs : {false, true}) {
        PrefillShape shape{c.dtype, c.n_q_heads, c.n_kv_heads, c.head_dim, T, max_len};
        auto d_q = to_device(q);
        DeviceBuffer<float> d_out(q.size()), d_probs(want_probs.size());
        PrefillArgs args{d_q.get(),
                         cache.d_key_ptrs.get(),
                         cache.d_value_ptrs.get(),
                         cache.d_lens.get(),
                         scale,
                         d_out.get(),
                         with_probs ? d_probs.get() : nullptr,
                         stride};
        attention_prefill(shape, args, nullptr);
        check(to_host(d_out, q.size()), want_out, "prefill out");
        if (with_probs) {
          const auto got_probs = to_host(d_probs, want_probs.size());
          check(got_probs, want_probs, "prefill probs");
          expect_zeros_where_zero(got_probs, want_probs, "prefill probs");
        }
      }
    }
  }
}

// A wrong causal mask, caught sharply: logits grow with the key index (keys (j + 1) / len + noise,
// queries positive), so a leaked future key would carry more weight than any visible one. Every
// probability of a key the query can see must be > 0, every other one exactly 0 (also the columns past
// each head's length, up to the stride), and out / probs must match the reference. T = 70 crosses a
// key tile and spans several row blocks.
TEST(KernelsGpu, PrefillCausalMaskIsExact) {
  REQUIRE_CUDA_DEVICE();
  const int T = 70;
  const std::vector<PrefillCase> shapes = {{DType::F16, 4, 2, 64, {0, 45}}, {DType::F16, 8, 1, 128, {3}}};
  for (DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    for (PrefillCase c : shapes) {
      c.dtype = dtype;
      std::vector<int> lens = c.n_old;
      for (int& n : lens) n += T;
      const bool tc = prefill_uses_tensor_cores(c.dtype, c.head_dim);
      SCOPED_TRACE(std::string(dtype_name(c.dtype)) + " heads " + std::to_string(c.n_q_heads) + "/" +
                   std::to_string(c.n_kv_heads) + " d " + std::to_string(c.head_dim) +
                   (tc ? " (tensor cores)" : " (general kernel)"));
      const int D = c.head_dim;
      TestCache cache(c.dtype, D, lens, 5);
      for (size_t h = 0; h < lens.size(); ++h) {  // overwrite the random keys in place (heads point at them)
        auto k = random_vector(static_cast<size_t>(lens[h]) * D, 300 + static_cast<uint32_t>(h), -0.5f, 0.5f);
        for (int j = 0; j < lens[h]; ++j)
          for (int d = 0; d < D; ++d) k[static_cast<size_t>(j) * D + d] += (j + 1.0f) / lens[h];
        const auto bytes = encode(c.dtype, k);
        std::copy(bytes.begin(), bytes.end(), cache.keys[h].begin());
        cuda_check(cudaMemcpy(cache.d_keys[h].get(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
      }
      const int max_len = *std::max_element(lens.begin(), lens.end());
      const auto q = random_vector(static_cast<size_t>(T) * c.n_q_heads * D, 6, 0.0f, 1.0f);
      const float scale = 1.0f / std::sqrt(static_cast<float>(D));
      const int stride = max_len + 3;
      std::vector<float> want_out(q.size()), want_probs(static_cast<size_t>(c.n_kv_heads) * T * stride);
      ref::attention_prefill(c.dtype, c.n_q_heads, D, T, cache.heads, q.data(), scale, want_out.data(),
                             want_probs.data(), stride);

      PrefillShape shape{c.dtype, c.n_q_heads, c.n_kv_heads, D, T, max_len};
      auto d_q = to_device(q);
      DeviceBuffer<float> d_out(q.size()), d_probs(want_probs.size());
      cuda_check(cudaMemset(d_probs.get(), 0x7f, d_probs.bytes()), "cudaMemset");  // garbage the kernel must clear
      PrefillArgs args{d_q.get(),
                       cache.d_key_ptrs.get(),
                       cache.d_value_ptrs.get(),
                       cache.d_lens.get(),
                       scale,
                       d_out.get(),
                       d_probs.get(),
                       stride};
      attention_prefill(shape, args, nullptr);
      const auto got_out = to_host(d_out, q.size());
      const auto got_probs = to_host(d_probs, want_probs.size());

      size_t bad = 0;
      for (int h = 0; h < c.n_kv_heads; ++h) {
        const int n_old = lens[h] - T;
        for (int t = 0; t < T; ++t)
          for (int j = 0; j < stride; ++j) {
            const float p = got_probs[(static_cast<size_t>(h) * T + t) * stride + j];
            const bool visible = j <= n_old + t;  // < len, as n_old + t < len
            if ((visible ? !(p > 0.0f) : p != 0.0f) && bad++ < 10)
              ADD_FAILURE() << "probs[head " << h << "][t " << t << "][key " << j << "] = " << p << ": key "
                            << (visible ? "visible, expected > 0" : "masked, expected exactly 0");
          }
      }
      EXPECT_EQ(bad, 0u) << "causal mask violations";
      if (tc) {
        expect_close_scaled(got_out, want_out, tensor_core_eps(c.dtype), "causal out");
        expect_close_scaled(got_probs, want_probs, tensor_core_eps(c.dtype), "causal probs");
      } else {
        expect_close(got_out, want_out, tolerance(c.dtype), "causal out");
        expect_close(got_probs, want_probs, tolerance(c.dtype), "causal probs");
      }
    }
  }
}

TEST(KernelsGpu, KvCompactionMatchesReference) {
  REQUIRE_CUDA_DEVICE();
  const int D = 128, len = 300;
  for (DType t : {DType::F32, DType::F16}) {
    const auto keys = encode(t, random_vector(static_cast<size_t>(len) * D, 1));
    const auto values = encode(t, random_vector(static_cast<size_t>(len) * D, 2));
    std::vector<int32_t> positions(len);
    std::iota(positions.begin(), positions.end(), 1000);
    std::vector<int32_t> keep;
    std::mt19937 rng(3);
    for (int j = 0; j < len; ++j)
      if (rng() % 3 != 0 || j == len - 1) keep.push_back(j);

    auto d_keys = to_device(keys), d_values = to_device(values);
    auto d_pos = to_device(positions);
    DeviceBuffer<uint8_t> ws(kv_compact_workspace_bytes(t, D, static_cast<int>(keep.size())));
    kv_compact_head(t, D, len, d_keys.get(), d_values.get(), d_pos.get(), keep, ws.get(), ws.bytes(), nullptr);

    auto want_k = keys, want_v = values;
    auto want_p = positions;
    const size_t row = D * kv_element_bytes(t, "test");
    ref::compact_rows(want_k.data(), row, len, keep);
    ref::compact_rows(want_v.data(), row, len, keep);
    ref::compact_rows(want_p.data(), sizeof(int32_t), len, keep);
    EXPECT_EQ(to_host(d_keys, keys.size()), want_k);  // untouched tail rows included
    EXPECT_EQ(to_host(d_values, values.size()), want_v);
    EXPECT_EQ(to_host(d_pos, positions.size()), want_p);

    const std::vector<int32_t> bad = {5, 5};
    EXPECT_THROW(
        kv_compact_head(t, D, len, d_keys.get(), d_values.get(), d_pos.get(), bad, ws.get(), ws.bytes(), nullptr),
        Error);
  }
}

// Causal attention rows: query t of the window spreads its mass over keys 0 .. n_old + t.
std::vector<float> causal_attention(int Q, int N, uint32_t seed) {
  auto a = random_vector(static_cast<size_t>(Q) * N, seed, 0.0f, 1.0f);
  const int n_old = N - Q;
  for (int t = 0; t < Q; ++t) {
    float* row = a.data() + static_cast<size_t>(t) * N;
    float sum = 0;
    for (int j = 0; j < N; ++j) sum += (j <= n_old + t ? row[j] : (row[j] = 0.0f));
    for (int j = 0; j < N; ++j) row[j] /= sum;
  }
  return a;
}

// The CPU side of a spectrogram test: the paper's configuration, and normalisation statistics that
// differ per bin (a wrong bin shows): mean[k] = m k, var[k] = v0 + v k.
struct SpectrogramCase {
  SpectrogramConfig config;
  RecencyConfig recency;
  FeatureNormalizer normalizer;
  AttentionSpectrogram cpu{config};
  SpectrogramCase(float m, float v0, float v) : normalizer(ramp(config.n_bins(), m, v0, v)) {}
  static FeatureNormalizer ramp(int bins, float m, float v0, float v) {
    std::vector<float> mean(bins), var(bins);
    for (int k = 0; k < bins; ++k) {
      mean[k] = m * k;
      var[k] = v0 + v * k;
    }
    return FeatureNormalizer(mean, var);
  }
};

TEST(KernelsGpu, SpectrogramFeaturesMatchReference) {
  REQUIRE_CUDA_DEVICE();
  const SpectrogramCase sc(0.01f, 0.5f, 0.1f);
  const auto& [config, recency, normalizer, cpu] = sc;
  SpectralState state;
  // A small batch so frames span several cuFFT executions, the last one partly filled.
  GpuSpectrogram gpu(config, recency, normalizer, 100);
  const int F = gpu.n_features(), B = config.n_bins(), O = config.overlap();

  DeviceBuffer<float> ema_old, tail_old;
  int n_old = 0;
  for (int Q : {64, 48}) {  // the second update carries the first one's EMA and tail
    const int N = n_old + Q;
    const auto attention = causal_attention(Q, N, 11 + Q);
    std::vector<int32_t> positions(N);
    for (int j = 0; j < N; ++j) positions[j] = 3 * j + 1;
    std::vector<float> want(static_cast<size_t>(N) * F);
    ref::spectrogram_features(cpu, recency, normalizer, attention.data(), Q, N, positions.data(), state, want.data());

    auto d_att = to_device(attention);
    auto d_pos = to_device(positions);
    DeviceBuffer<float> ema_new(static_cast<size_t>(N) * B), tail_new(static_cast<size_t>(N) * O),
        features(static_cast<size_t>(N) * F);
    gpu.update(d_att.get(), Q, N, n_old, n_old ? ema_old.get() : nullptr, n_old ? tail_old.get() : nullptr, d_pos.get(),
               ema_new.get(), tail_new.get(), features.get(), nullptr);
    expect_close(to_host(ema_new, state.ema_NxB.size()), state.ema_NxB, 1e-5f, "ema");
    expect_close(to_host(tail_new, state.tail_NxO.size()), state.tail_NxO, 0.0f, "tail");
    expect_close(to_host(features, want.size()), want, 2e-5f, "features");
    ema_old = std::move(ema_new);
    tail_old = std::move(tail_new);
    n_old = N;
  }
}

// Many segments in one batched update (a lockstep step's layer: sequences x KV heads), with and without
// state and with attention that is non-zero where the causal frame mask must hide it, against each
// segment's CPU update. A small cuFFT batch (batches straddle segments, one segment spans several) and
// the default one (a batch holds many whole segments); without features; a second, larger call on the
// same object (the segment table grows). Positions have a spacing of their own per segment, so a
// segment reading another's positions shows in its recency features.
TEST(KernelsGpu, SpectrogramBatchedMatchesEachSegment) {
  REQUIRE_CUDA_DEVICE();
  const SpectrogramCase sc(0.02f, 0.3f, 0.05f);
  const auto& [config, recency, normalizer, cpu] = sc;
  const int B = config.n_bins(), O = config.overlap(), Q = 48;

  auto check = [&](GpuSpectrogram& gpu, const std::vector<int>& n_olds, bool with_features, uint32_t seed) {
    const int F = gpu.n_features();
    std::vector<NammSegmentShape> shapes;
    for (int n_old : n_olds) shapes.push_back({n_old + Q, n_old, 0});
    const NammBatchLayout layout = plan_namm_batch(shapes, Q, config, 1);
    const int S = layout.n_segments(), R = layout.total_keys();
    std::vector<DeviceBuffer<float>> d_att, d_ema, d_tail;
    std::vector<DeviceBuffer<int32_t>> d_pos;
    std::vector<SpectrogramSegment> segments;
    std::vector<float> want_features(size_t(R) * F), want_ema, want_tail;
    for (int s = 0; s < S; ++s) {
      const int N = shapes[s].n_keys, n_old = shapes[s].n_old;
      const auto attention = random_vector(size_t(Q) * N, seed + s, 0.0f, 1.0f / N);
      std::vector<int32_t> positions(N);
      for (int j = 0; j < N; ++j) positions[j] = (s + 2) * j + 3 * s;
      SpectralState state;
      state.n_tokens = n_old;
      state.ema_NxB = random_vector(size_t(n_old) * B, seed + 100 + s, 0.0f, 0.05f);
      state.tail_NxO = random_vector(size_t(n_old) * O, seed + 200 + s, 0.0f, 0.01f);
      d_att.push_back(to_device(attention));
      d_pos.push_back(to_device(positions));
      d_ema.push_back(n_old ? to_device(state.ema_NxB) : DeviceBuffer<float>());
      d_tail.push_back(n_old ? to_device(state.tail_NxO) : DeviceBuffer<float>());
      segments.push_back(
          {d_att.back().get(), d_ema.back().get(), d_tail.back().get(), with_features ? d_pos.back().get() : nullptr});
      ref::spectrogram_features(cpu, recency, normalizer, attention.data(), Q, N, positions.data(), state,
                                want_features.data() + size_t(layout.key_offset[s]) * F);
      want_ema.insert(want_ema.end(), state.ema_NxB.begin(), state.ema_NxB.end());
      want_tail.insert(want_tail.end(), state.tail_NxO.begin(), state.tail_NxO.end());
    }
    DeviceBuffer<float> ema(size_t(R) * B), tail(size_t(R) * O), features(size_t(R) * F);
    gpu.update_batched(layout, segments, ema.get(), tail.get(), with_features ? features.get() : nullptr, nullptr);
    expect_close(to_host(ema, want_ema.size()), want_ema, 1e-5f, "ema");
    expect_close(to_host(tail, want_tail.size()), want_tail, 0.0f, "tail");
    if (with_features) expect_close(to_host(features, want_features.size()), want_features, 2e-5f, "features");
  };
  GpuSpectrogram small_batches(config, recency, normalizer, 77), default_batches(config, recency, normalizer);
  const std::vector<int> few = {0, 100, 7, 0, 260, 1};
  std::vector<int> many;
  for (int i = 0; i < 40; ++i) many.push_back((i * 37) % 300);
  check(small_batches, few, true, 40);
  check(small_batches, many, true, 400);
  check(default_batches, few, true, 900);
  check(default_batches, many, false, 1300);
}

// Each sequence scored by its own member (a lockstep batch), including an empty and a 1-token sequence.
TEST(KernelsGpu, BamPerSequenceMembersMatchReference) {
  REQUIRE_CUDA_DEVICE();
  const ScorerShape shape;
  const int P = 3;
  const std::vector<int32_t> offsets = {0, 70, 70, 170, 171, 600}, members = {2, 0, 1, 2, 0};
  const int total = offsets.back();
  const auto params = random_vector(static_cast<size_t>(P) * shape.n_params(), 15, -0.3f, 0.3f);
  const auto features = random_vector(static_cast<size_t>(total) * shape.n_features, 16, -2.0f, 2.0f);
  std::vector<float> want(total);
  ref::bam_scores_per_sequence(shape, params.data(), offsets, members, features.data(), want.data());

  auto d_params = to_device(params), d_features = to_device(features);
  DeviceBuffer<float> d_scores(want.size());
  BamBatch batch{P, offsets, members, d_features.get(), d_params.get(), d_scores.get()};
  DeviceBuffer<uint8_t> ws(bam_workspace_bytes(shape, batch));
  bam_score_batched(shape, batch, ws.get(), ws.bytes(), nullptr);
  expect_close(to_host(d_scores, want.size()), want, 1e-5f, "scores");
}

TEST(KernelsGpu, BamBatchedMatchesReference) {
  REQUIRE_CUDA_DEVICE();
  const ScorerShape shape;
  const int P = 3;
  const std::vector<int32_t> offsets = {0, 70, 70, 170, 171, 1200};  // includes an empty and a 1-token sequence
  const int total = offsets.back();
  const auto params = random_vector(static_cast<size_t>(P) * shape.n_params(), 5, -0.3f, 0.3f);
  const auto features = random_vector(static_cast<size_t>(total) * shape.n_features, 6, -2.0f, 2.0f);
  std::vector<float> want(static_cast<size_t>(P) * total);
  ref::bam_scores_batched(shape, params.data(), P, offsets, features.data(), want.data());

  auto d_params = to_device(params), d_features = to_device(features);
  DeviceBuffer<float> d_scores(want.size());
  BamBatch batch{P, offsets, {}, d_features.get(), d_params.get(), d_scores.get()};
  DeviceBuffer<uint8_t> ws(bam_workspace_bytes(shape, batch));
  bam_score_batched(shape, batch, ws.get(), ws.bytes(), nullptr);
  expect_close(to_host(d_scores, want.size()), want, 1e-5f, "scores");
}

TEST(KernelsGpu, ErrorsNameTheCall) {
  // Host-side validation needs no device: a bad shape is reported before any CUDA call.
  DecodeShape shape{DType::Q8_0, 32, 8, 128, 16, false};
  try {
    decode_workspace_bytes(shape);
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("decode_workspace_bytes"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cuda_check(cudaErrorInvalidValue, "cudaMemcpy"), Error);
}

}  // namespace
}  // namespace nammkit::kernels
