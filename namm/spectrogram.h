// The attention spectrogram of NAMM (spec §2.3): for every cached token, the attention it received
// along the query axis is cut into Hann-windowed frames, Fourier-transformed, and reduced with an
// exponential moving average over frames, carried across updates.
//
// Per (layer, KV head) the only state is a SpectralState: the un-normalised EMA [n_tokens][n_bins]
// and the attention each token received from the last `overlap` queries of the previous update
// [n_tokens][overlap]. Both are O(1) per token in the update interval, and are gathered together
// with the KV cache on eviction (the reference stores the whole previous attention window instead).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace nammkit {

struct SpectrogramConfig {
  int n_fft = 32;           // window length = FFT size
  int hop = 16;             // stride between frames, in queries
  double ema_coeff = 0.99;  // EMA decay per query (token); per frame it is ema_coeff^hop

  int n_bins() const { return n_fft / 2 + 1; }  // one-sided magnitude bins (17)
  int overlap() const { return n_fft - hop; }   // samples carried from the previous update (16)
  // Throws Error naming the field when a value is out of range.
  void validate(const std::string& where) const;
};

// torch.hann_window(n, periodic=True): w[i] = 0.5 - 0.5 cos(2 pi i / n).
std::vector<float> periodic_hann(int n);

// The per-token state of one (layer, KV head). Rows follow the KV cache order.
struct SpectralState {
  int n_tokens = 0;
  std::vector<float> ema_NxB;   // un-normalised EMA of the frame magnitudes
  std::vector<float> tail_NxO;  // attention from the previous update's last `overlap` queries

  void clear();
  // Keeps rows `keep` (ascending, unique, < n_tokens) in place, as the KV cache does.
  void gather(std::span<const int32_t> keep, int n_bins, int overlap);
};

class AttentionSpectrogram {
 public:
  explicit AttentionSpectrogram(SpectrogramConfig config = {});
  ~AttentionSpectrogram();
  AttentionSpectrogram(const AttentionSpectrogram&) = delete;
  AttentionSpectrogram& operator=(const AttentionSpectrogram&) = delete;

  const SpectrogramConfig& config() const { return config_; }

  // EMA decay per frame, a = ema_coeff^hop (0.99^16 = 0.851458).
  double frame_decay() const;
  // Weight of frame m of an update with n_frames frames: (1 - a) a^(n_frames - 1 - m).
  std::vector<double> frame_weights(int n_frames) const;
  // Factor applied to the EMA of a token that was already cached: a^n_frames (0.99^512).
  double carry_over(int n_frames) const;

  // |rFFT(window * samples)| of one frame: `samples` has n_fft values, `magnitudes_B` gets n_bins.
  void frame_magnitudes(const float* samples, float* magnitudes_B) const;

  // One update of one (layer, KV head).
  //  attention_QxN: [n_queries][n_keys] row-major, the attention each new query gave each key
  //                 (0 where the key is newer than the query).
  //  state: holds the n_old = state.n_tokens oldest keys; keys n_old.. are new in this window and
  //         must number exactly n_queries (each query added one key). Their rows are appended.
  // n_queries must be a positive multiple of hop. Thread-safe for distinct states.
  void update(const float* attention_QxN, int n_queries, int n_keys, SpectralState& state) const;

 private:
  struct Plan;
  SpectrogramConfig config_;
  std::vector<float> window_;
  std::unique_ptr<Plan> plan_;
};

}  // namespace nammkit
