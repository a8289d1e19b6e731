#include "kernels/spectrogram.h"

#include <cufft.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda_util.h"
#include "kernels/namm_batch_layout.h"

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

// The segments of a batch on the device (kernels/namm_batch_layout.h); n_old = n_keys - n_queries.
struct SegmentTable {
  int n_segments = 0;
  int n_queries = 0;
  const int64_t* frame_offset = nullptr;  // [S + 1]
  const int32_t* key_offset = nullptr;    // [S + 1]
  const float* const* attention = nullptr;
  const float* const* tail_old = nullptr;
  const float* const* ema_old = nullptr;
  const int32_t* const* positions = nullptr;
};

// in[i][b] = window[i] * sample of frame g = g0 + b (frame m of key j of the segment holding g).
__global__ void frames_kernel(SegmentTable t, const float* window, int n_fft, int hop, int overlap,
                              long long total_frames, long long g0, int batch, float* in) {
  const size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (idx >= static_cast<size_t>(n_fft) * batch) return;
  const int i = static_cast<int>(idx / batch), b = static_cast<int>(idx % batch);
  const long long g = g0 + b;
  float v = 0.0f;  // slots past the last frame are transformed but never read
  if (g < total_frames) {
    const int s = segment_containing<int64_t>(t.frame_offset, t.n_segments, g);
    const int n_keys = t.key_offset[s + 1] - t.key_offset[s];
    const long long local = g - t.frame_offset[s];
    const int m = static_cast<int>(local / n_keys), j = static_cast<int>(local % n_keys);
    v = window[i] * padded_sample(t.attention[s], t.tail_old[s], n_keys, n_keys - t.n_queries, overlap, j, m * hop + i);
  }
  in[idx] = v;
}

// ema[r][k] += weight[m] * |X| over the frames m of key row r in this batch that the causal frame mask
// lets it receive. One thread per (r, k) of the batch's rows, so no two threads add to the same value.
__global__ void ema_accumulate_kernel(SegmentTable t, const cufftComplex* out, const float* weights, int n_bins,
                                      int hop, int n_frames, long long g0, int batch, int row_first, int n_rows,
                                      float* ema) {
  const size_t idx = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (idx >= static_cast<size_t>(n_rows) * n_bins) return;
  const int k = static_cast<int>(idx / n_rows), r = row_first + static_cast<int>(idx % n_rows);
  const int s = segment_containing<int32_t>(t.key_offset, t.n_segments, r);
  const int n_keys = t.key_offset[s + 1] - t.key_offset[s], j = r - t.key_offset[s];
  int m_lo = 0, m_hi = -1;
  frames_of_key_in_batch(t.frame_offset[s], n_keys, j, n_frames, g0, batch, &m_lo, &m_hi);
  m_lo = max(m_lo, first_frame_of_key(j, n_keys - t.n_queries, hop));
  if (m_lo > m_hi) return;
  float e = ema[static_cast<size_t>(r) * n_bins + k];
  for (int m = m_lo; m <= m_hi; ++m) {  // ascending m, as the CPU adds them
    const long long g = t.frame_offset[s] + static_cast<long long>(m) * n_keys + j;
    const cufftComplex X = out[static_cast<size_t>(k) * batch + (g - g0)];
    e += weights[m] * sqrtf(X.x * X.x + X.y * X.y);
  }
  ema[static_cast<size_t>(r) * n_bins + k] = e;
}

// Per key row: carry-over of the old EMA, the new tail, and the features.
__global__ void finish_kernel(SegmentTable t, const double* recency_freq, const float* norm_mean,
                              const float* norm_denom, int total_keys, int n_bins, int overlap, int recency_dim,
                              float carry, float* ema_new, float* tail_new, float* features) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= total_keys) return;
  const int s = segment_containing<int32_t>(t.key_offset, t.n_segments, r);
  const int n_keys = t.key_offset[s + 1] - t.key_offset[s], j = r - t.key_offset[s];
  const int n_old = n_keys - t.n_queries;
  float* e = ema_new + static_cast<size_t>(r) * n_bins;
  if (j < n_old)
    for (int k = 0; k < n_bins; ++k) e[k] += carry * t.ema_old[s][static_cast<size_t>(j) * n_bins + k];
  for (int o = 0; o < overlap; ++o)
    tail_new[static_cast<size_t>(r) * overlap + o] =
        padded_sample(t.attention[s], t.tail_old[s], n_keys, n_old, overlap, j, t.n_queries + o);
  if (!features) return;
  const int F = recency_dim + n_bins, half = recency_dim / 2;
  float* x = features + static_cast<size_t>(r) * F;
  // Double precision as recency_embedding: ages reach tens of thousands.
  const int32_t* positions = t.positions[s];
  const double age = static_cast<double>(positions[n_keys - 1]) - positions[j];
  for (int k = 0; k < half; ++k) {
    const double angle = age * recency_freq[k];
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
  // The segment table: frame offsets and input pointers (8-byte words), then key offsets (int32).
  std::vector<uint64_t> table_host;
  DeviceBuffer<uint8_t> table;
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
  const NammSegmentShape shape{n_keys, n_old, 0};
  const SpectrogramSegment segment{attention_QxN, ema_old_OxB, tail_old_OxV, positions_N};
  update_batched(plan_namm_batch({&shape, 1}, n_queries, spectrogram_, 1), {&segment, 1}, ema_new_NxB, tail_new_NxV,
                 features_NxF, stream);
}

void GpuSpectrogram::update_batched(const NammBatchLayout& layout, std::span<const SpectrogramSegment> segments,
                                    float* ema_new_RxB, float* tail_new_RxV, float* features_RxF, cudaStream_t stream) {
  const char* where = "GpuSpectrogram::update_batched";
  const int n_fft = spectrogram_.n_fft, hop = spectrogram_.hop, bins = n_bins(), O = overlap();
  const int S = layout.n_segments(), n_queries = layout.n_queries;
  if (static_cast<int>(segments.size()) != S)
    fail(where, "expected " + std::to_string(S) + " segments (the layout's), got " + std::to_string(segments.size()));
  if (S == 0) return;
  if (layout.n_fft != n_fft || layout.hop != hop || n_queries <= 0 || n_queries % hop != 0 ||
      layout.n_frames != (O + n_queries - n_fft) / hop + 1 || layout.key_offset.size() != size_t(S) + 1 ||
      layout.frame_offset.size() != size_t(S) + 1)
    fail(where, "the layout was not planned by plan_namm_batch for this spectrogram configuration");
  if (!ema_new_RxB || !tail_new_RxV) fail(where, "a required device pointer is null");
  for (int s = 0; s < S; ++s) {
    const SpectrogramSegment& seg = segments[s];
    if (!seg.attention_QxN || (layout.n_old[s] > 0 && (!seg.ema_old_OxB || !seg.tail_old_OxV)) ||
        (features_RxF && !seg.positions_N))
      fail(where, "segment " + std::to_string(s) + ": a required device pointer is null");
  }
  Impl& st = *impl_;

  // Frame weights and carry-over exactly as AttentionSpectrogram computes them (double, then float).
  const int n_frames = layout.n_frames;
  const double a = std::pow(spectrogram_.ema_coeff, hop);
  const float carry = static_cast<float>(std::pow(a, n_frames));
  if (st.weights_frames != n_frames) {
    std::vector<float> w(n_frames);
    for (int m = 0; m < n_frames; ++m) w[m] = static_cast<float>((1.0 - a) * std::pow(a, n_frames - 1 - m));
    st.weights.resize(w.size());
    cuda_check(cudaMemcpyAsync(st.weights.get(), w.data(), sizeof(float) * w.size(), cudaMemcpyHostToDevice, stream),
               "cudaMemcpyAsync(weights)");
    st.weights_frames = n_frames;
  }

  // The segment table, one upload (pageable memory: the host copy is staged before the call returns).
  const size_t n8 = static_cast<size_t>(S) + 1 + 4 * static_cast<size_t>(S);
  const size_t key_words = (sizeof(int32_t) * (static_cast<size_t>(S) + 1) + 7) / 8;
  std::vector<uint64_t>& words = st.table_host;
  words.assign(n8 + key_words, 0);
  for (int s = 0; s <= S; ++s) words[s] = static_cast<uint64_t>(layout.frame_offset[s]);
  for (int s = 0; s < S; ++s) {
    const SpectrogramSegment& seg = segments[s];
    words[S + 1 + s] = reinterpret_cast<uintptr_t>(seg.attention_QxN);
    words[2 * S + 1 + s] = reinterpret_cast<uintptr_t>(seg.tail_old_OxV);
    words[3 * S + 1 + s] = reinterpret_cast<uintptr_t>(seg.ema_old_OxB);
    words[4 * S + 1 + s] = reinterpret_cast<uintptr_t>(seg.positions_N);
  }
  std::memcpy(words.data() + n8, layout.key_offset.data(), sizeof(int32_t) * layout.key_offset.size());
  grow(st.table, words.size() * sizeof(uint64_t), stream);
  cuda_check(
      cudaMemcpyAsync(st.table.get(), words.data(), words.size() * sizeof(uint64_t), cudaMemcpyHostToDevice, stream),
      "cudaMemcpyAsync(segment table)");
  const auto* d_words = reinterpret_cast<const uint64_t*>(st.table.get());
  SegmentTable t;
  t.n_segments = S;
  t.n_queries = n_queries;
  t.frame_offset = reinterpret_cast<const int64_t*>(d_words);
  t.attention = reinterpret_cast<const float* const*>(d_words + S + 1);
  t.tail_old = reinterpret_cast<const float* const*>(d_words + 2 * S + 1);
  t.ema_old = reinterpret_cast<const float* const*>(d_words + 3 * S + 1);
  t.positions = reinterpret_cast<const int32_t* const*>(d_words + 4 * S + 1);
  t.key_offset = reinterpret_cast<const int32_t*>(d_words + n8);

  const int total_keys = layout.total_keys();
  cuda_check(cudaMemsetAsync(ema_new_RxB, 0, sizeof(float) * static_cast<size_t>(total_keys) * bins, stream),
             "cudaMemsetAsync(ema)");
  cufft_check(cufftSetStream(st.plan, stream), "cufftSetStream");
  const long long total = layout.total_frames();
  for (long long g0 = 0; g0 < total; g0 += st.batch) {
    frames_kernel<<<blocks_for(static_cast<size_t>(n_fft) * st.batch), kThreads, 0, stream>>>(
        t, st.window.get(), n_fft, hop, O, total, g0, st.batch, st.fft_in.get());
    cuda_check_launch("frames_kernel");
    cufft_check(cufftExecR2C(st.plan, st.fft_in.get(), st.fft_out.get()), "cufftExecR2C");
    const RowRange rows = rows_of_batch(layout, g0, st.batch);
    const int n_rows = rows.last - rows.first;
    ema_accumulate_kernel<<<blocks_for(static_cast<size_t>(n_rows) * bins), kThreads, 0, stream>>>(
        t, st.fft_out.get(), st.weights.get(), bins, hop, n_frames, g0, st.batch, rows.first, n_rows, ema_new_RxB);
    cuda_check_launch("ema_accumulate_kernel");
  }
  finish_kernel<<<blocks_for(total_keys), kThreads, 0, stream>>>(t, st.recency_freq.get(), st.norm_mean.get(),
                                                                 st.norm_denom.get(), total_keys, bins, O, recency_.dim,
                                                                 carry, ema_new_RxB, tail_new_RxV, features_RxF);
  cuda_check_launch("finish_kernel");
}

}  // namespace nammkit::kernels
