#include "kernels/spectrogram.h"

#include <cufft.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cuda_util.h"

namespace nammkit::kernels {

namespace {
void cufft_check(cufftResult status, const char* call) {
  if (status != CUFFT_SUCCESS) fail(call, "cuFFT error " + std::to_string(static_cast<int>(status)));
}

constexpr int kThreads = 256;

int blocks_for(size_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

// Sample p of key j's padded series: `overlap` carried samples, then the n_queries new ones.
__device__ __forceinline__ float padded_sample(const float* attention, const float* tail_old, int n_keys, int n_old,
                                               int overlap, int j, int p) {
  if (p < overlap) return j < n_old ? tail_old[static_cast<size_t>(j) * overlap + p] : 0.0f;
  return attention[static_cast<size_t>(p - overlap) * n_keys + j];
}

// in[i][b] = window[i] * sample of frame g = g0 + b (frame m = g / n_keys of key j = g % n_keys).
__global__ void frames_kernel(const float* attention, const float* tail_old, const float* window, int n_keys, int n_old,
                              int n_fft, int hop, int overlap, long long total_frames, long long g0, int batch,
                              float* in) {
  const size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (idx >= static_cast<size_t>(n_fft) * batch) return;
  const int i = static_cast<int>(idx / batch), b = static_cast<int>(idx % batch);
  const long long g = g0 + b;
  float v = 0.0f;  // slots past the last frame are transformed but never read
  if (g < total_frames) {
    const int m = static_cast<int>(g / n_keys), j = static_cast<int>(g % n_keys);
    v = window[i] * padded_sample(attention, tail_old, n_keys, n_old, overlap, j, m * hop + i);
  }
  in[idx] = v;
}

// ema[j][k] += weight[m] * |X| over the frames m of key j in this batch, skipping the frames a new key
// is masked from (key created in block (j - n_old) / hop receives frames m >= that block). One thread
// per (j, k), so no two threads add to the same value.
__global__ void ema_accumulate_kernel(const cufftComplex* out, const float* weights, int n_keys, int n_old, int n_bins,
                                      int hop, int n_frames, long long g0, int batch, float* ema) {
  const size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (idx >= static_cast<size_t>(n_keys) * n_bins) return;
  const int k = static_cast<int>(idx / n_keys), j = static_cast<int>(idx % n_keys);
  const int m_lo = static_cast<int>(g0 / n_keys);
  const int m_hi = static_cast<int>(min(static_cast<long long>(n_frames - 1), (g0 + batch - 1) / n_keys));
  const int first_frame = j < n_old ? 0 : (j - n_old) / hop;
  float e = ema[static_cast<size_t>(j) * n_bins + k];
  for (int m = max(m_lo, first_frame); m <= m_hi; ++m) {  // ascending m, as the CPU adds them
    const long long g = static_cast<long long>(m) * n_keys + j;
    if (g < g0 || g >= g0 + batch) continue;
    const cufftComplex X = out[static_cast<size_t>(k) * batch + (g - g0)];
    e += weights[m] * sqrtf(X.x * X.x + X.y * X.y);
  }
  ema[static_cast<size_t>(j) * n_bins + k] = e;
}

// Per key: carry-over of the old EMA, the new tail, and the features.
__global__ void finish_kernel(const float* attention, const float* tail_old, const float* ema_old,
                              const int32_t* positions, const double* recency_freq, const float* norm_mean,
                              const float* norm_denom, int n_queries, int n_keys, int n_old, int n_bins, int overlap,
                              int recency_dim, float carry, float* ema_new, float* tail_new, float* features) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= n_keys) return;
  float* e = ema_new + static_cast<size_t>(j) * n_bins;
  if (j < n_old)
    for (int k = 0; k < n_bins; ++k) e[k] += carry * ema_old[static_cast<size_t>(j) * n_bins + k];
  for (int o = 0; o < overlap; ++o)
    tail_new[static_cast<size_t>(j) * overlap + o] =
        padded_sample(attention, tail_old, n_keys, n_old, overlap, j, n_queries + o);
  if (!features) return;
  const int F = recency_dim + n_bins, half = recency_dim / 2;
  float* x = features + static_cast<size_t>(j) * F;
  // Double precision as recency_embedding: ages reach tens of thousands.
  const double r = static_cast<double>(positions[n_keys - 1]) - positions[j];
  for (int k = 0; k < half; ++k) {
    const double angle = r * recency_freq[k];
    x[k] = static_cast<float>(sin(angle));
    x[half + k] = static_cast<float>(cos(angle));
  }
  for (int k = 0; k < n_bins; ++k) x[recency_dim + k] = (e[k] - norm_mean[k]) / norm_denom[k];
}

template <typename T>
void upload(DeviceBuffer<T>& dst, const std::vector<T>& src) {
  dst.resize(src.size());
  cuda_check(cudaMemcpy(dst.get(), src.data(), sizeof(T) * src.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
}
}  // namespace

struct GpuSpectrogram::Impl {
  int batch = 0;
  cufftHandle plan = 0;
  bool has_plan = false;
  DeviceBuffer<float> window, norm_mean, norm_denom, weights, fft_in;
  DeviceBuffer<double> recency_freq;
  DeviceBuffer<cufftComplex> fft_out;
  int weights_frames = -1;  // n_frames the uploaded weights are for
};

GpuSpectrogram::GpuSpectrogram(const SpectrogramConfig& spectrogram, const RecencyConfig& recency,
                               const FeatureNormalizer& normalizer, int frames_per_batch)
    : spectrogram_(spectrogram), recency_(recency), impl_(std::make_unique<Impl>()) {
  const char* where = "GpuSpectrogram";
  spectrogram_.validate(where);
  recency_.validate(where);
  if (normalizer.dim() != spectrogram_.n_bins())
    fail(where, "normalizer: expected " + std::to_string(spectrogram_.n_bins()) + " bins, got " +
                    std::to_string(normalizer.dim()));
  if (frames_per_batch < 1) fail(where, "frames_per_batch: expected >= 1, got " + std::to_string(frames_per_batch));
  Impl& s = *impl_;
  s.batch = frames_per_batch;

  upload(s.window, periodic_hann(spectrogram_.n_fft));
  upload(s.norm_mean, normalizer.mean());
  // The denominator exactly as FeatureNormalizer computes it.
  std::vector<float> denom(normalizer.dim());
  for (int k = 0; k < normalizer.dim(); ++k) denom[k] = std::max(std::sqrt(std::max(normalizer.var()[k], 0.0f)), 1e-7f);
  upload(s.norm_denom, denom);
  const int half = recency_.dim / 2;
  std::vector<double> freq(half);
  for (int k = 0; k < half; ++k) freq[k] = std::pow(recency_.max_freq, -static_cast<double>(k) / half);
  upload(s.recency_freq, freq);

  const int n = spectrogram_.n_fft, bins = spectrogram_.n_bins();
  s.fft_in.resize(static_cast<size_t>(n) * s.batch);
  s.fft_out.resize(static_cast<size_t>(bins) * s.batch);
  // Interleaved layout: sample i of slot b at [i * batch + b], bin k of slot b at [k * batch + b].
  int dims[1] = {n}, inembed[1] = {n}, onembed[1] = {bins};
  cufft_check(cufftPlanMany(&s.plan, 1, dims, inembed, s.batch, 1, onembed, s.batch, 1, CUFFT_R2C, s.batch),
              "cufftPlanMany");
  s.has_plan = true;
}

GpuSpectrogram::~GpuSpectrogram() {
  // A destructor cannot report; a failure here would leave the context in error for the next checked call.
  if (impl_ && impl_->has_plan) cufftDestroy(impl_->plan);
}

void GpuSpectrogram::update(const float* attention_QxN, int n_queries, int n_keys, int n_old, const float* ema_old_OxB,
                            const float* tail_old_OxV, const int32_t* positions_N, float* ema_new_NxB,
                            float* tail_new_NxV, float* features_NxF, cudaStream_t stream) {
  const char* where = "GpuSpectrogram::update";
  const int n_fft = spectrogram_.n_fft, hop = spectrogram_.hop, bins = n_bins(), O = overlap();
  if (n_queries <= 0 || n_queries % hop != 0)
    fail(where, "n_queries: expected a positive multiple of hop " + std::to_string(hop) + ", got " +
                    std::to_string(n_queries));
  if (n_old < 0 || n_keys - n_old != n_queries)
    fail(where, "expected " + std::to_string(n_queries) + " new keys (one per query), got " +
                    std::to_string(n_keys - n_old) + " (" + std::to_string(n_keys) + " keys, " + std::to_string(n_old) +
                    " with state)");
  if (!attention_QxN || !ema_new_NxB || !tail_new_NxV || (n_old > 0 && (!ema_old_OxB || !tail_old_OxV)))
    fail(where, "a required device pointer is null");
  if (features_NxF && !positions_N) fail(where, "positions_N: required for the features");
  Impl& s = *impl_;

  const int padded_len = O + n_queries;
  const int n_frames = (padded_len - n_fft) / hop + 1;
  // Frame weights and carry-over exactly as AttentionSpectrogram computes them (double, then float).
  const double a = std::pow(spectrogram_.ema_coeff, hop);
  const float carry = static_cast<float>(std::pow(a, n_frames));
  if (s.weights_frames != n_frames) {
    std::vector<float> w(n_frames);
    for (int m = 0; m < n_frames; ++m) w[m] = static_cast<float>((1.0 - a) * std::pow(a, n_frames - 1 - m));
    s.weights.resize(w.size());
    cuda_check(cudaMemcpyAsync(s.weights.get(), w.data(), sizeof(float) * w.size(), cudaMemcpyHostToDevice, stream),
               "cudaMemcpyAsync(weights)");
    s.weights_frames = n_frames;
  }

  cuda_check(cudaMemsetAsync(ema_new_NxB, 0, sizeof(float) * static_cast<size_t>(n_keys) * bins, stream),
             "cudaMemsetAsync(ema)");
  cufft_check(cufftSetStream(s.plan, stream), "cufftSetStream");
  const long long total = static_cast<long long>(n_frames) * n_keys;
  for (long long g0 = 0; g0 < total; g0 += s.batch) {
    frames_kernel<<<blocks_for(static_cast<size_t>(n_fft) * s.batch), kThreads, 0, stream>>>(
        attention_QxN, tail_old_OxV, s.window.get(), n_keys, n_old, n_fft, hop, O, total, g0, s.batch, s.fft_in.get());
    cuda_check_launch("frames_kernel");
    cufft_check(cufftExecR2C(s.plan, s.fft_in.get(), s.fft_out.get()), "cufftExecR2C");
    ema_accumulate_kernel<<<blocks_for(static_cast<size_t>(n_keys) * bins), kThreads, 0, stream>>>(
        s.fft_out.get(), s.weights.get(), n_keys, n_old, bins, hop, n_frames, g0, s.batch, ema_new_NxB);
    cuda_check_launch("ema_accumulate_kernel");
  }
  finish_kernel<<<blocks_for(n_keys), kThreads, 0, stream>>>(
      attention_QxN, tail_old_OxV, ema_old_OxB, positions_N, s.recency_freq.get(), s.norm_mean.get(),
      s.norm_denom.get(), n_queries, n_keys, n_old, bins, O, recency_.dim, carry, ema_new_NxB, tail_new_NxV,
      features_NxF);
  cuda_check_launch("finish_kernel");
}

}  // namespace nammkit::kernels
