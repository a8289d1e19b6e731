// The layout of a batched NAMM update on the GPU (GpuSpectrogram::update_batched, kernels/spectrogram.h):
// many (sequence, layer, KV head) updates -- "segments" -- in one set of launches, e.g. one layer of every
// sequence of a lockstep step (λ members x P prompts x KV heads).
//
// Plain host code plus index functions that the kernels call on the device, so the index arithmetic is
// tested on any machine (tests/test_kernels_namm_layout.cpp walks it against AttentionSpectrogram).
//
// Keys. Segment s has n_keys[s] cached tokens, the first n_old[s] of which carry spectral state from the
// previous update; the outputs (EMA, tail, features, scores) are packed key after key, segment after
// segment: global key row r = key_offset[s] + j.
//
// Frames. Every key gets n_frames frames (spectrogram §2.3: the same for every segment, since all
// segments have the same n_queries). Frame m of key j of segment s has the global index
//     g = frame_offset[s] + m * n_keys[s] + j,
// so consecutive frames of a batch read one attention row after another (coalesced), exactly as the
// single-update layout. Frames are transformed in cuFFT batches of `frames_per_batch`; a batch
// [g0, g0 + batch) touches the key rows of the segments it overlaps, rows_of_batch() gives that range,
// and each row of it adds its frames in the batch in ascending m (the CPU's order).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "namm/spectrogram.h"

#if defined(__CUDACC__)
#define NAMMKIT_HD __host__ __device__
#else
#define NAMMKIT_HD
#endif

namespace nammkit::kernels {

struct NammSegmentShape {
  int n_keys = 0;        // cached tokens after the update's append (n_old + n_queries)
  int n_old = 0;         // tokens with state from the previous update
  int params_index = 0;  // which parameter vector scores this segment (its population member)
};

struct NammBatchLayout {
  int n_fft = 0, hop = 0;             // the spectrogram configuration it was planned for
  int n_queries = 0;                  // queries since the previous update, common to all segments
  int n_frames = 0;                   // frames per key: (overlap + n_queries - n_fft) / hop + 1
  std::vector<int32_t> key_offset;    // [S + 1] first packed key row of each segment
  std::vector<int32_t> old_offset;    // [S + 1] first packed old-state row (EMA and tail inputs)
  std::vector<int64_t> frame_offset;  // [S + 1] first global frame
  std::vector<int32_t> n_old;         // [S]
  std::vector<int32_t> params_index;  // [S]

  int n_segments() const { return static_cast<int>(n_old.size()); }
  int total_keys() const { return key_offset.back(); }
  int total_old() const { return old_offset.back(); }
  int64_t total_frames() const { return frame_offset.back(); }
  int max_keys() const;
};

// Throws Error("NAMM batch layout: ...") when n_queries is not a positive multiple of hop, a segment's
// n_keys - n_old differs from n_queries, a params_index is outside [0, n_param_sets), or the packed
// key rows pass 2^31 - 1.
NammBatchLayout plan_namm_batch(std::span<const NammSegmentShape> segments, int n_queries,
                                const SpectrogramConfig& spectrogram, int n_param_sets);

// Key rows [first, last) that frames [g0, g0 + batch) can add to: those of every segment the batch
// overlaps. At most batch + 2 * max_keys() rows, so a pass over them costs about what the batch does.
struct RowRange {
  int32_t first = 0, last = 0;
};
RowRange rows_of_batch(const NammBatchLayout& layout, int64_t g0, int batch);

// What one batched NAMM pass may hold (kernels/namm_device.h); a (session, layer) larger than this still
// runs, alone.
struct NammPassBudget {
  int64_t key_rows = int64_t{1} << 22;          // 4 Mi rows: ~1 GiB of features and state, 3 GiB of BAM scratch
  int64_t attention_floats = int64_t{1} << 29;  // 2 GiB of attention windows
  int segments = 65535;                         // (layer, KV head)s: the BAM launch's grid limit
};

// Cuts jobs (one per (session, layer), in order; job i has job_rows[i] key rows over its
// segments_per_job KV heads, and n_queries attention rows per key) into consecutive passes within
// `budget`. Returns the first job of every pass, then job_rows.size(). Throws Error for a budget
// below 1 or segments_per_job above budget.segments.
std::vector<int> cut_namm_passes(std::span<const int64_t> job_rows, int segments_per_job, int n_queries,
                                 const NammPassBudget& budget);

// Largest s in [0, n) with offsets[s] <= x, for ascending offsets with offsets[0] <= x (binary search).
template <typename T>
NAMMKIT_HD inline int segment_containing(const T* offsets, int n, T x) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (offsets[mid] <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// The first frame key j receives: a key with state receives every frame; new key j (appended by query
// j - n_old) is masked from the frames that end before it existed, i.e. it receives frames
// m >= (j - n_old) / hop (spec §2.3, the causal frame mask).
NAMMKIT_HD inline int first_frame_of_key(int j, int n_old, int hop) { return j < n_old ? 0 : (j - n_old) / hop; }

// Frames m in [*m_lo, *m_hi] of key j (segment with n_keys keys starting at frame seg_frame0) whose
// global index lies in [g0, g0 + batch); empty when *m_lo > *m_hi. Not yet clipped by the frame mask.
NAMMKIT_HD inline void frames_of_key_in_batch(int64_t seg_frame0, int n_keys, int j, int n_frames, int64_t g0,
                                              int batch, int* m_lo, int* m_hi) {
  // g = seg_frame0 + m * n_keys + j >= g0  <=>  m >= ceil((g0 - seg_frame0 - j) / n_keys)
  const int64_t lo_num = g0 - seg_frame0 - j;
  const int64_t lo = lo_num <= 0 ? 0 : (lo_num + n_keys - 1) / n_keys;
  // g <= g0 + batch - 1  <=>  m <= floor((g0 + batch - 1 - seg_frame0 - j) / n_keys)
  const int64_t hi_num = g0 + batch - 1 - seg_frame0 - j;
  const int64_t hi = hi_num < 0 ? -1 : hi_num / n_keys;
  *m_lo = static_cast<int>(lo < n_frames ? lo : n_frames);  // past the last frame: an empty range
  *m_hi = static_cast<int>(hi < n_frames - 1 ? hi : n_frames - 1);
}

}  // namespace nammkit::kernels
