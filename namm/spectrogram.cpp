#include "namm/spectrogram.h"

#include <fftw3.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numbers>

#include "core/error.h"

namespace nammkit {

namespace {
// FFTW's planner is not thread-safe; plan creation and destruction go through this mutex.
// Execution with the new-array functions (fftwf_execute_dft_r2c) is thread-safe.
std::mutex& fftw_planner_mutex() {
  static std::mutex m;
  return m;
}

// Frames transformed per FFTW call. Buffers handed to the plan must have the planned size and
// fftwf_malloc alignment, so every caller allocates exactly this many frames.
constexpr int kFramesPerBatch = 256;

template <typename T>
struct FftwFree {
  void operator()(T* p) const { fftwf_free(p); }
};
template <typename T>
using FftwBuffer = std::unique_ptr<T, FftwFree<T>>;

template <typename T>
FftwBuffer<T> fftw_alloc(size_t n) {
  T* p = static_cast<T*>(fftwf_malloc(sizeof(T) * n));
  if (!p) throw std::bad_alloc();
  return FftwBuffer<T>(p);
}
}  // namespace

void SpectrogramConfig::validate(const std::string& where) const {
  if (n_fft < 2 || n_fft % 2 != 0) fail(where, "n_fft: expected an even value >= 2, got " + std::to_string(n_fft));
  if (hop < 1 || hop > n_fft) fail(where, "hop: expected 1..n_fft, got " + std::to_string(hop));
  if (!(ema_coeff > 0.0 && ema_coeff < 1.0))
    fail(where, "ema_coeff: expected a value in (0, 1), got " + std::to_string(ema_coeff));
}

std::vector<float> periodic_hann(int n) {
  std::vector<float> w(n);
  for (int i = 0; i < n; ++i) w[i] = static_cast<float>(0.5 - 0.5 * std::cos(2.0 * std::numbers::pi * i / n));
  return w;
}

void SpectralState::clear() {
  n_tokens = 0;
  ema_NxB.clear();
  tail_NxO.clear();
}

void SpectralState::gather(std::span<const int32_t> keep, int n_bins, int overlap) {
  int32_t prev = -1;
  for (size_t r = 0; r < keep.size(); ++r) {
    const int32_t src = keep[r];
    if (src <= prev || src >= n_tokens) fail("SpectralState::gather", "keep list not ascending or out of range");
    prev = src;
    // Forward gather: row r <= src, so copying in increasing r never overwrites a row still needed.
    std::copy_n(ema_NxB.begin() + static_cast<size_t>(src) * n_bins, n_bins, ema_NxB.begin() + r * n_bins);
    std::copy_n(tail_NxO.begin() + static_cast<size_t>(src) * overlap, overlap, tail_NxO.begin() + r * overlap);
  }
  n_tokens = static_cast<int>(keep.size());
  ema_NxB.resize(static_cast<size_t>(n_tokens) * n_bins);
  tail_NxO.resize(static_cast<size_t>(n_tokens) * overlap);
}

struct AttentionSpectrogram::Plan {
  fftwf_plan batch = nullptr;   // kFramesPerBatch real frames of n_fft -> n_bins complex each
  fftwf_plan single = nullptr;  // one frame (frame_magnitudes)
};

AttentionSpectrogram::AttentionSpectrogram(SpectrogramConfig config)
    : config_(config), window_(periodic_hann(config.n_fft)), plan_(std::make_unique<Plan>()) {
  config_.validate("AttentionSpectrogram");
  const int n = config_.n_fft, bins = config_.n_bins();
  auto in = fftw_alloc<float>(static_cast<size_t>(n) * kFramesPerBatch);
  auto out = fftw_alloc<fftwf_complex>(static_cast<size_t>(bins) * kFramesPerBatch);
  std::lock_guard<std::mutex> lock(fftw_planner_mutex());
  // FFTW_ESTIMATE: no timing-based choice of algorithm, so results are reproducible run to run.
  int dims[1] = {n};
  plan_->batch = fftwf_plan_many_dft_r2c(1, dims, kFramesPerBatch, in.get(), nullptr, 1, n, out.get(), nullptr, 1, bins,
                                         FFTW_ESTIMATE);
  plan_->single = fftwf_plan_dft_r2c_1d(n, in.get(), out.get(), FFTW_ESTIMATE);
  if (!plan_->batch || !plan_->single)
    fail("AttentionSpectrogram", "FFTW could not plan a " + std::to_string(n) + "-point transform");
}

AttentionSpectrogram::~AttentionSpectrogram() {
  if (!plan_) return;
  std::lock_guard<std::mutex> lock(fftw_planner_mutex());
  if (plan_->batch) fftwf_destroy_plan(plan_->batch);
  if (plan_->single) fftwf_destroy_plan(plan_->single);
}

double AttentionSpectrogram::frame_decay() const { return std::pow(config_.ema_coeff, config_.hop); }

std::vector<double> AttentionSpectrogram::frame_weights(int n_frames) const {
  const double a = frame_decay();
  std::vector<double> w(n_frames);
  for (int m = 0; m < n_frames; ++m) w[m] = (1.0 - a) * std::pow(a, n_frames - 1 - m);
  return w;
}

double AttentionSpectrogram::carry_over(int n_frames) const { return std::pow(frame_decay(), n_frames); }

void AttentionSpectrogram::frame_magnitudes(const float* samples, float* magnitudes_B) const {
  const int n = config_.n_fft, bins = config_.n_bins();
  auto in = fftw_alloc<float>(static_cast<size_t>(n) * kFramesPerBatch);
  auto out = fftw_alloc<fftwf_complex>(static_cast<size_t>(bins) * kFramesPerBatch);
  for (int i = 0; i < n; ++i) in.get()[i] = window_[i] * samples[i];
  fftwf_execute_dft_r2c(plan_->single, in.get(), out.get());
  for (int k = 0; k < bins; ++k) magnitudes_B[k] = std::hypot(out.get()[k][0], out.get()[k][1]);
}

void AttentionSpectrogram::update(const float* attention_QxN, int n_queries, int n_keys, SpectralState& state) const {
  const int n_fft = config_.n_fft, hop = config_.hop, bins = config_.n_bins(), overlap = config_.overlap();
  const char* where = "AttentionSpectrogram::update";
  if (n_queries <= 0 || n_queries % hop != 0)
    fail(where, "n_queries: expected a positive multiple of hop " + std::to_string(hop) + ", got " +
                    std::to_string(n_queries));
  const int n_old = state.n_tokens;
  if (n_keys - n_old != n_queries)
    fail(where, "expected " + std::to_string(n_queries) + " new keys (one per query), got " +
                    std::to_string(n_keys - n_old) + " (" + std::to_string(n_keys) + " keys, " + std::to_string(n_old) +
                    " with state)");

  // Padded series per key: `overlap` carried samples, then n_queries new ones. Frame m reads
  // padded[m*hop, m*hop + n_fft), i.e. queries [m*hop - overlap, m*hop - overlap + n_fft).
  const int padded_len = overlap + n_queries;
  const int n_frames = (padded_len - n_fft) / hop + 1;
  const std::vector<double> weights = frame_weights(n_frames);
  const float carry = static_cast<float>(carry_over(n_frames));

  std::vector<float> ema_new(static_cast<size_t>(n_keys) * bins, 0.0f);
  std::vector<float> tail_new(static_cast<size_t>(n_keys) * overlap, 0.0f);

  auto in = fftw_alloc<float>(static_cast<size_t>(n_fft) * kFramesPerBatch);
  auto out = fftw_alloc<fftwf_complex>(static_cast<size_t>(bins) * kFramesPerBatch);
  std::vector<int> slot_key(kFramesPerBatch);
  std::vector<float> slot_weight(kFramesPerBatch);
  int filled = 0;
  auto flush = [&] {
    if (filled == 0) return;
    // Unused slots keep stale inputs; their outputs are ignored.
    fftwf_execute_dft_r2c(plan_->batch, in.get(), out.get());
    for (int s = 0; s < filled; ++s) {
      float* e = ema_new.data() + static_cast<size_t>(slot_key[s]) * bins;
      const fftwf_complex* X = out.get() + static_cast<size_t>(s) * bins;
      for (int k = 0; k < bins; ++k) e[k] += slot_weight[s] * std::sqrt(X[k][0] * X[k][0] + X[k][1] * X[k][1]);
    }
    filled = 0;
  };

  // Keys are transposed in blocks so the attention matrix is read row-contiguously.
  constexpr int kKeyBlock = 16;
  std::vector<float> series(static_cast<size_t>(kKeyBlock) * padded_len);
  for (int j0 = 0; j0 < n_keys; j0 += kKeyBlock) {
    const int jn = std::min(kKeyBlock, n_keys - j0);
    for (int jj = 0; jj < jn; ++jj) {
      const int j = j0 + jj;
      float* s = series.data() + static_cast<size_t>(jj) * padded_len;
      if (j < n_old) std::copy_n(state.tail_NxO.data() + static_cast<size_t>(j) * overlap, overlap, s);
      else std::fill_n(s, overlap, 0.0f);  // a new key received no attention before this window
    }
    for (int t = 0; t < n_queries; ++t) {
      const float* row = attention_QxN + static_cast<size_t>(t) * n_keys + j0;
      for (int jj = 0; jj < jn; ++jj) series[static_cast<size_t>(jj) * padded_len + overlap + t] = row[jj];
    }
    for (int jj = 0; jj < jn; ++jj) {
      const int j = j0 + jj;
      const float* s = series.data() + static_cast<size_t>(jj) * padded_len;
      std::copy_n(s + padded_len - overlap, overlap, tail_new.data() + static_cast<size_t>(j) * overlap);
      // Causal frame mask: a key created in block b of this window only receives frames m >= b.
      const int first_frame = j < n_old ? 0 : (j - n_old) / hop;
      for (int m = first_frame; m < n_frames; ++m) {
        float* dst = in.get() + static_cast<size_t>(filled) * n_fft;
        const float* src = s + static_cast<size_t>(m) * hop;
        for (int i = 0; i < n_fft; ++i) dst[i] = window_[i] * src[i];
        slot_key[filled] = j;
        slot_weight[filled] = static_cast<float>(weights[m]);
        if (++filled == kFramesPerBatch) flush();
      }
    }
  }
  flush();

  for (int j = 0; j < n_old; ++j) {
    float* e = ema_new.data() + static_cast<size_t>(j) * bins;
    const float* prev = state.ema_NxB.data() + static_cast<size_t>(j) * bins;
    for (int k = 0; k < bins; ++k) e[k] += carry * prev[k];
  }
  state.ema_NxB = std::move(ema_new);
  state.tail_NxO = std::move(tail_new);
  state.n_tokens = n_keys;
}

}  // namespace nammkit
