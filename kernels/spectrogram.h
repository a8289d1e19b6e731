// NAMM's feature extraction on the GPU (spec §2.3): for one (layer, KV head) update, the STFT magnitudes
// of every cached token's attention series (cuFFT), the EMA over frames with the causal frame mask and
// the carry-over of the previous EMA, then the features [recency embedding | z-normalised EMA] (25 per
// token with the paper's configuration). Matches AttentionSpectrogram::update followed by
// recency_embedding and FeatureNormalizer::apply, as NammPolicy::update does on the CPU.
//
// Frames are transformed in batches of `frames_per_batch` by one cuFFT R2C plan made once. A batch holds
// frames g = m * n_keys + j (frame m of key j) in an interleaved layout (sample i of batch slot b at
// [i][b]), so building the frames reads the attention matrix row by row, coalesced.
//
// update_batched() does many updates (segments: sequences x layers x KV heads) in the same launches,
// with the layout of kernels/namm_batch_layout.h (segment s's frames start at frame_offset[s]);
// update() is its one-segment case. An instance holds scratch (cuFFT buffers, the segment table) for
// one stream at a time.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <span>

#include "kernels/namm_batch_layout.h"
#include "namm/normalization.h"
#include "namm/recency.h"
#include "namm/spectrogram.h"

namespace nammkit::kernels {

// One segment's inputs, device memory (shapes from its NammSegmentShape: N = n_keys, O = n_old).
struct SpectrogramSegment {
  const float* attention_QxN = nullptr;  // [n_queries][N]
  const float* ema_old_OxB = nullptr;    // [O][n_bins]; null when O is 0
  const float* tail_old_OxV = nullptr;   // [O][overlap]; null when O is 0
  const int32_t* positions_N = nullptr;  // [N]; may be null when no features are asked for
};

class GpuSpectrogram {
 public:
  // Throws Error for an invalid configuration or a normalizer whose dim is not n_bins.
  GpuSpectrogram(const SpectrogramConfig& spectrogram, const RecencyConfig& recency,
                 const FeatureNormalizer& normalizer, int frames_per_batch = 1 << 16);
  ~GpuSpectrogram();
  GpuSpectrogram(const GpuSpectrogram&) = delete;
  GpuSpectrogram& operator=(const GpuSpectrogram&) = delete;

  int n_bins() const { return spectrogram_.n_bins(); }
  int overlap() const { return spectrogram_.overlap(); }
  int n_features() const { return recency_.dim + n_bins(); }

  // One update of one (layer, KV head), all pointers device memory:
  //   attention_QxN [n_queries][n_keys]: attention of each new query to each key (0 for newer keys)
  //   ema_old_OxB   [n_old][n_bins], tail_old_OxV [n_old][overlap]: the state before (null when n_old is 0)
  //   positions_N   [n_keys] absolute positions, the newest last
  //   ema_new_NxB   [n_keys][n_bins], tail_new_NxV [n_keys][overlap]: the state after
  //   features_NxF  [n_keys][n_features()], or null to update the state only
  // n_queries must be a positive multiple of hop and n_keys - n_old == n_queries. Outputs must not alias
  // inputs. Work is enqueued on `stream`; the object must not be used from two streams at once.
  void update(const float* attention_QxN, int n_queries, int n_keys, int n_old, const float* ema_old_OxB,
              const float* tail_old_OxV, const int32_t* positions_N, float* ema_new_NxB, float* tail_new_NxV,
              float* features_NxF, cudaStream_t stream);

  // Every segment of `layout` (plan_namm_batch with this spectrogram configuration) in one pass: frames
  // of all segments share the cuFFT batches. Outputs are packed by layout.key_offset (R = total_keys):
  //   ema_new_RxB [R][n_bins], tail_new_RxV [R][overlap], features_RxF [R][n_features()] or null.
  // Same numbers as update() on each segment alone. Throws Error for a segment count that differs from
  // the layout's or a missing pointer.
  void update_batched(const NammBatchLayout& layout, std::span<const SpectrogramSegment> segments, float* ema_new_RxB,
                      float* tail_new_RxV, float* features_RxF, cudaStream_t stream);

 private:
  struct Impl;
  SpectrogramConfig spectrogram_;
  RecencyConfig recency_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nammkit::kernels
