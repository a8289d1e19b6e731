// bench_kernels: the CUDA kernels on a Llama-3-8B layer shape (32 query heads, 8 KV heads, head_dim 128,
// f16 KV). One JSON object per line:
//   the device's copy bandwidth (a 2 GiB device-to-device copy, bytes read + written), the ceiling
//     the decode figures are compared with, beside the datasheet bandwidth of an H100 / H200;
//   decode attention bandwidth (K and V bytes read / time) at 4K, 16K and 32K context, rotating over
//     enough caches that they do not stay in L2, and its share of the measured copy bandwidth;
//   prefill attention of a 4K chunk (causal, no cache before it), TFLOP/s counting only the visible
//     (causal) products, against an unfused cuBLAS f16 GEMM + softmax kernel + GEMM doing the same;
//   one NAMM update of one layer (8 KV heads, 4K keys, 512 new queries): STFT features and BAM scores.
// Without a CUDA device it prints {"bench":"kernels","skipped":"no CUDA device"} and exits 0.
#include <cublas_v2.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/attention_decode.h"
#include "kernels/attention_prefill.h"
#include "kernels/bam_batched.h"
#include "kernels/cuda_util.h"
#include "kernels/spectrogram.h"

using namespace nammkit;
using namespace nammkit::kernels;

namespace {
constexpr int kQHeads = 32, kKvHeads = 8, kHeadDim = 128;

void emit(nlohmann::json line) {
  line["bench"] = "kernels";
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

void cublas_check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS) fail(call, "cuBLAS status " + std::to_string(static_cast<int>(status)));
}

// Deterministic pseudo-random values in [-scale, scale] (an integer hash, so no host upload).
template <typename T>
__global__ void fill_kernel(T* data, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    const float u = (h & 0xffffff) / 16777215.0f * 2.0f - 1.0f;
    data[i] = static_cast<T>(u * scale);
  }
}

template <typename T>
void fill(DeviceBuffer<T>& buf, uint32_t seed, float scale) {
  fill_kernel<T><<<1024, 256>>>(buf.get(), buf.size(), seed, scale);
  cuda_check_launch("fill_kernel");
}

// The unfused baseline's softmax: row i of S (f32 [T][T], one block per row and head) -> P (f16),
// causal (keys j <= i), scaled.
__global__ void causal_softmax_kernel(const float* S, __half* P, int T, float scale) {
  const size_t row = blockIdx.x;
  const int i = static_cast<int>(row % T);
  const float* s = S + row * T;
  __half* p = P + row * T;
  __shared__ float red[32];
  float m = -INFINITY;
  for (int j = threadIdx.x; j <= i; j += blockDim.x) m = fmaxf(m, s[j] * scale);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = m;
  __syncthreads();
  m = -INFINITY;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) m = fmaxf(m, red[w]);
  __syncthreads();
  float l = 0.0f;
  for (int j = threadIdx.x; j <= i; j += blockDim.x) l += expf(s[j] * scale - m);
  for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = l;
  __syncthreads();
  l = 0.0f;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) l += red[w];
  for (int j = threadIdx.x; j < T; j += blockDim.x) p[j] = __float2half(j <= i ? expf(s[j] * scale - m) / l : 0.0f);
}

// Milliseconds per call of `fn`: the mean over `reps` back-to-back calls after `warmup` calls.
double time_ms(const std::function<void()>& fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  cuda_check(cudaEventCreate(&start), "cudaEventCreate");
  cuda_check(cudaEventCreate(&stop), "cudaEventCreate");
  cuda_check(cudaEventRecord(start), "cudaEventRecord");
  for (int i = 0; i < reps; ++i) fn();
  cuda_check(cudaEventRecord(stop), "cudaEventRecord");
  cuda_check(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0;
  cuda_check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  cuda_check(cudaEventDestroy(start), "cudaEventDestroy");
  cuda_check(cudaEventDestroy(stop), "cudaEventDestroy");
  return ms / reps;
}

// A layer's KV cache with every head at `len` tokens, f16.
struct Cache {
  std::vector<DeviceBuffer<__half>> keys, values;
  DeviceBuffer<const void*> key_ptrs, value_ptrs;
  DeviceBuffer<int> lens;
  explicit Cache(int len) {
    std::vector<const void*> kp, vp;
    for (int h = 0; h < kKvHeads; ++h) {
      keys.emplace_back(static_cast<size_t>(len) * kHeadDim);
      values.emplace_back(static_cast<size_t>(len) * kHeadDim);
      fill(keys.back(), 1 + h, 1.0f);
      fill(values.back(), 100 + h, 1.0f);
      kp.push_back(keys.back().get());
      vp.push_back(values.back().get());
    }
    key_ptrs.resize(kKvHeads);
    value_ptrs.resize(kKvHeads);
    lens.resize(kKvHeads);
    const std::vector<int> l(kKvHeads, len);
    cuda_check(cudaMemcpy(key_ptrs.get(), kp.data(), sizeof(void*) * kKvHeads, cudaMemcpyHostToDevice), "cudaMemcpy");
    cuda_check(cudaMemcpy(value_ptrs.get(), vp.data(), sizeof(void*) * kKvHeads, cudaMemcpyHostToDevice), "cudaMemcpy");
    cuda_check(cudaMemcpy(lens.get(), l.data(), sizeof(int) * kKvHeads, cudaMemcpyHostToDevice), "cudaMemcpy");
  }
};

// Datasheet HBM bandwidth of the chips nammkit is tuned for (bytes/s), 0 when unknown.
double datasheet_bandwidth(const std::string& name) {
  if (name.find("H200") != std::string::npos) return 4.8e12;
  if (name.find("H100") != std::string::npos) return 3.35e12;  // SXM (HBM3)
  return 0.0;
}

// Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written.
double copy_bandwidth() {
  const size_t bytes = size_t(1) << 31;
  DeviceBuffer<uint8_t> a(bytes), b(bytes);
  cuda_check(cudaMemset(a.get(), 1, bytes), "cudaMemset");
  const double ms = time_ms(
      [&] { cuda_check(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice), "cudaMemcpyAsync"); }, 3,
      20);
  return 2.0 * bytes / (ms * 1e-3);
}

void bench_decode(double copy_bw, double datasheet_bw, size_t l2_bytes) {
  for (int ctx : {4096, 16384, 32768}) {
    const double bytes = 2.0 * kKvHeads * ctx * kHeadDim * sizeof(__half);  // K and V, each read once
    // Enough caches that one pass over them is 4x the L2: every call reads its K and V from HBM.
    const int copies = std::max(1, static_cast<int>(std::ceil(4.0 * double(l2_bytes) / bytes)));
    std::vector<std::unique_ptr<Cache>> caches;
    for (int i = 0; i < copies; ++i) caches.push_back(std::make_unique<Cache>(ctx));
    for (bool with_probs : {false, true}) {
      DecodeShape shape{DType::F16, kQHeads, kKvHeads, kHeadDim, ctx, with_probs};
      DeviceBuffer<uint8_t> ws(decode_workspace_bytes(shape));
      DeviceBuffer<float> q(kQHeads * kHeadDim), out(kQHeads * kHeadDim), probs(static_cast<size_t>(kKvHeads) * ctx);
      fill(q, 7, 1.0f);
      int next = 0;
      const double ms = time_ms(
          [&] {
            const Cache& cache = *caches[size_t(next)];
            next = (next + 1) % copies;
            DecodeArgs args{q.get(),
                            cache.key_ptrs.get(),
                            cache.value_ptrs.get(),
                            cache.lens.get(),
                            1.0f / std::sqrt(float(kHeadDim)),
                            out.get(),
                            with_probs ? probs.get() : nullptr,
                            ctx};
            attention_decode(shape, args, ws.get(), ws.bytes(), nullptr);
          },
          2 * copies, std::max(50, 4 * copies));
      const double bw = bytes / (ms * 1e-3);
      emit({{"kernel", "attention_decode"},
            {"context", ctx},
            {"with_probs", with_probs},
            {"ms", ms},
            {"gb_per_s", bw / 1e9},
            {"pct_of_copy_bandwidth", 100.0 * bw / copy_bw},
            {"pct_of_datasheet", datasheet_bw > 0 ? nlohmann::json(100.0 * bw / datasheet_bw) : nlohmann::json()},
            {"caches_rotated", copies},
            {"splits", shape.n_splits()}});
    }
  }
}

void bench_prefill() {
  const int T = 4096;
  const double flops = 4.0 * kHeadDim * kQHeads * (static_cast<double>(T) * (T + 1) / 2);  // QK^T and PV, causal
  const float scale = 1.0f / std::sqrt(float(kHeadDim));
  {
    Cache cache(T);
    DeviceBuffer<float> q(static_cast<size_t>(T) * kQHeads * kHeadDim), out(q.size());
    fill(q, 9, 1.0f);
    PrefillShape shape{DType::F16, kQHeads, kKvHeads, kHeadDim, T, T};
    // with_probs: also the GQA-averaged probabilities [8][T][T] f32 (512 MiB; a memset, a second QK^T
    // sweep and the writes), as every NAMM update chunk asks for; tflop_per_s still counts QK^T + PV once.
    for (bool with_probs : {false, true}) {
      DeviceBuffer<float> probs(with_probs ? static_cast<size_t>(kKvHeads) * T * T : 0);
      PrefillArgs args{q.get(),
                       cache.key_ptrs.get(),
                       cache.value_ptrs.get(),
                       cache.lens.get(),
                       scale,
                       out.get(),
                       with_probs ? probs.get() : nullptr,
                       with_probs ? T : 0};
      const double ms = time_ms([&] { attention_prefill(shape, args, nullptr); }, 2, 5);
      emit({{"kernel", "attention_prefill"},
            {"tokens", T},
            {"with_probs", with_probs},
            {"ms", ms},
            {"tflop_per_s", flops / (ms * 1e-3) / 1e12}});
    }
  }
  // Unfused baseline: per query head (K and V repeated over the group), S = Q K^T in f32 from f16
  // tensor-core GEMMs, causal softmax to f16 P, O = P V. It computes the full T x T product.
  DeviceBuffer<__half> Q(static_cast<size_t>(kQHeads) * T * kHeadDim), K(Q.size()), V(Q.size());
  fill(Q, 11, 1.0f);
  fill(K, 12, 1.0f);
  fill(V, 13, 1.0f);
  DeviceBuffer<float> S(static_cast<size_t>(kQHeads) * T * T), O(Q.size());
  DeviceBuffer<__half> P(S.size());
  cublasHandle_t handle;
  cublas_check(cublasCreate(&handle), "cublasCreate");
  const float one = 1.0f, zero = 0.0f;
  const long long sQ = static_cast<long long>(T) * kHeadDim, sS = static_cast<long long>(T) * T;
  auto run = [&] {
    // Column-major view: S^T (T x T) = K (T x D, transposed from its row-major storage) * Q^T.
    cublas_check(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, T, T, kHeadDim, &one, K.get(), CUDA_R_16F,
                                            kHeadDim, sQ, Q.get(), CUDA_R_16F, kHeadDim, sQ, &zero, S.get(), CUDA_R_32F,
                                            T, sS, kQHeads, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmStridedBatchedEx(QK)");
    causal_softmax_kernel<<<kQHeads * T, 256>>>(S.get(), P.get(), T, scale);
    cuda_check_launch("causal_softmax_kernel");
    // O^T (D x T) = V^T (D x T) * P^T (T x T).
    cublas_check(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, kHeadDim, T, T, &one, V.get(), CUDA_R_16F,
                                            kHeadDim, sQ, P.get(), CUDA_R_16F, T, sS, &zero, O.get(), CUDA_R_32F,
                                            kHeadDim, sQ, kQHeads, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmStridedBatchedEx(PV)");
  };
  const double ms = time_ms(run, 2, 5);
  cublas_check(cublasDestroy(handle), "cublasDestroy");
  emit({{"kernel", "prefill_unfused_cublas"},
        {"tokens", T},
        {"ms", ms},
        {"tflop_per_s", flops / (ms * 1e-3) / 1e12},
        {"note", "same causal FLOP count; computes the full T x T"}});
}

// A GpuSpectrogram (the paper's configuration, identity normalisation) and the inputs of one update of a
// head with N keys, n_old = N - Q of them with state (random values: the time does not depend on them).
struct StftSetup {
  SpectrogramConfig spec;
  RecencyConfig recency;
  GpuSpectrogram stft{spec, recency, FeatureNormalizer::identity(spec.n_bins())};
  int F = stft.n_features(), B = spec.n_bins(), O = spec.overlap();
  DeviceBuffer<float> attention, ema_old, tail_old;
  DeviceBuffer<int32_t> positions;
  StftSetup(int Q, int N, uint32_t seed)
      : attention(static_cast<size_t>(Q) * N),
        ema_old(static_cast<size_t>(N - Q) * B),
        tail_old(static_cast<size_t>(N - Q) * O),
        positions(N) {
    fill(attention, seed, 1e-3f);
    fill(ema_old, seed + 1, 1e-2f);
    fill(tail_old, seed + 2, 1e-3f);
    std::vector<int32_t> pos(N);
    for (int j = 0; j < N; ++j) pos[j] = j;
    cuda_check(cudaMemcpy(positions.get(), pos.data(), sizeof(int32_t) * N, cudaMemcpyHostToDevice), "cudaMemcpy");
  }
};

void bench_namm_update() {
  const int Q = 512, N = 4096, n_old = N - Q;
  StftSetup in(Q, N, 21);
  GpuSpectrogram& stft = in.stft;
  const int F = in.F, B = in.B, O = in.O;
  const float *attention = in.attention.get(), *ema_old = in.ema_old.get(), *tail_old = in.tail_old.get();
  const int32_t* positions = in.positions.get();
  DeviceBuffer<float> ema_new(static_cast<size_t>(N) * B), tail_new(static_cast<size_t>(N) * O),
      features(static_cast<size_t>(kKvHeads) * N * F);
  // The same attention for each head: the time does not depend on the values.
  const double stft_ms = time_ms(
      [&] {
        for (int h = 0; h < kKvHeads; ++h)
          stft.update(attention, Q, N, n_old, ema_old, tail_old, positions, ema_new.get(), tail_new.get(),
                      features.get() + static_cast<size_t>(h) * N * F, nullptr);
      },
      2, 10);
  emit({{"kernel", "namm_stft_features"}, {"kv_heads", kKvHeads}, {"keys", N}, {"queries", Q}, {"ms", stft_ms}});

  const ScorerShape shape;
  std::vector<int32_t> offsets;
  for (int h = 0; h <= kKvHeads; ++h) offsets.push_back(h * N);
  for (int members : {1, 16}) {
    DeviceBuffer<float> params(static_cast<size_t>(members) * shape.n_params()),
        scores(static_cast<size_t>(members) * kKvHeads * N);
    fill(params, 31, 0.1f);
    BamBatch batch{members, offsets, {}, features.get(), params.get(), scores.get()};
    DeviceBuffer<uint8_t> ws(bam_workspace_bytes(shape, batch));
    const double ms = time_ms([&] { bam_score_batched(shape, batch, ws.get(), ws.bytes(), nullptr); }, 2, 10);
    emit({{"kernel", "namm_bam_scores"}, {"kv_heads", kKvHeads}, {"keys", N}, {"members", members}, {"ms", ms}});
  }
}

// One layer's NAMM update for a whole lockstep generation (λ = 32 members x 8 prompts, 8 KV heads, 4K
// keys, 512 new queries): the spectrogram of all 2,048 (sequence, KV head) segments in one batched pass
// against one update per segment, then BAM scores with each sequence under its own member. The same
// attention and state buffers back every segment: the time does not depend on the values.
void bench_namm_batched() {
  const int members = 32, prompts = 8, Q = 512, N = 4096, n_old = N - Q;
  const int S = members * prompts * kKvHeads;
  StftSetup in(Q, N, 41);
  GpuSpectrogram& stft = in.stft;
  const SpectrogramConfig& spec = in.spec;
  const int F = in.F, B = in.B, O = in.O;
  const float *attention = in.attention.get(), *ema_old = in.ema_old.get(), *tail_old = in.tail_old.get();
  const int32_t* positions = in.positions.get();
  std::vector<NammSegmentShape> shapes;
  for (int s = 0; s < S; ++s) shapes.push_back({N, n_old, s / (prompts * kKvHeads)});
  const NammBatchLayout layout = plan_namm_batch(shapes, Q, spec, members);
  const std::vector<SpectrogramSegment> segments(S, SpectrogramSegment{attention, ema_old, tail_old, positions});
  const size_t R = static_cast<size_t>(layout.total_keys());
  DeviceBuffer<float> ema_new(R * B), tail_new(R * O), features(R * F);

  const double batched_ms = time_ms(
      [&] { stft.update_batched(layout, segments, ema_new.get(), tail_new.get(), features.get(), nullptr); }, 1, 5);
  const double alone_ms = time_ms(
      [&] {
        for (int s = 0; s < S; ++s) {
          const size_t r = static_cast<size_t>(layout.key_offset[s]);
          stft.update(attention, Q, N, n_old, ema_old, tail_old, positions, ema_new.get() + r * B,
                      tail_new.get() + r * O, features.get() + r * F, nullptr);
        }
      },
      1, 3);
  emit({{"kernel", "namm_stft_features_batched"},
        {"segments", S},
        {"keys", N},
        {"queries", Q},
        {"batched_ms", batched_ms},
        {"one_update_per_segment_ms", alone_ms},
        {"speedup", alone_ms / batched_ms}});

  const ScorerShape shape;
  std::vector<int32_t> offsets(layout.key_offset.begin(), layout.key_offset.end());
  DeviceBuffer<float> params(static_cast<size_t>(members) * shape.n_params()), scores(R);
  fill(params, 44, 0.1f);
  const BamBatch batch{members, offsets, layout.params_index, features.get(), params.get(), scores.get()};
  DeviceBuffer<uint8_t> ws(bam_workspace_bytes(shape, batch));
  const double bam_ms = time_ms([&] { bam_score_batched(shape, batch, ws.get(), ws.bytes(), nullptr); }, 1, 5);
  emit(
      {{"kernel", "namm_bam_scores_per_sequence"}, {"segments", S}, {"keys", N}, {"members", members}, {"ms", bam_ms}});
}
}  // namespace

int main() {
  if (!cuda_device_available()) {
    emit({{"skipped", "no CUDA device"}});
    return 0;
  }
  try {
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    const double copy_bw = copy_bandwidth(), datasheet_bw = datasheet_bandwidth(prop.name);
    emit({{"device", prop.name},
          {"sms", prop.multiProcessorCount},
          {"l2_bytes", prop.l2CacheSize},
          {"copy_gb_per_s", copy_bw / 1e9},
          {"datasheet_gb_per_s", datasheet_bw > 0 ? nlohmann::json(datasheet_bw / 1e9) : nlohmann::json()}});
    bench_decode(copy_bw, datasheet_bw, static_cast<size_t>(prop.l2CacheSize));
    bench_prefill();
    bench_namm_update();
    bench_namm_batched();
    cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  } catch (const std::exception& e) {
    emit({{"error", e.what()}});
    return 1;
  }
  return 0;
}
