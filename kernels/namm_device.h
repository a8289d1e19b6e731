// NAMM updates on the device, batched over sessions: for every (session, layer, KV head) due for an
// update, the spectrogram, the features (GpuSpectrogram::update_batched) and the BAM scores under the
// session's own parameters (bam_score_batched with seq_params) in one pass; then, per session and layer,
// the selection on the host (NammPolicy::select_from_scores: the policy's own selection options, budget
// and statistics), and the eviction on the device: the KV cache compacted (kv_compact_head) and the
// spectral state gathered with the same keep lists.
//
// Used by CudaSession::run_policy for one session (CudaSessionOptions::namm_on_device) and by
// CudaLockstepGroup for all sessions of a step whose chunks end at an update.
//
// State. The per-token spectral state (EMA [len][n_bins], tail [len][overlap] per (layer, KV head))
// lives on the device next to the cache (CudaSession::Head::ema / tail); the NammPolicy object's own
// state is not used. A sequence must therefore run every update on the device or none: switching the
// policy's mode mid-sequence is an Error ("spectral state out of step").
//
// Attention. The rows still come from the session's host log (as for a host policy), densified and
// uploaded once per update for all segments. Keeping them on the device from the attention kernels
// on is the next step (it saves the two PCIe crossings).
//
// Numbers. Features equal the CPU's up to f32 rounding of the FFT (cuFFT vs FFTW), scores are computed
// in double as on the CPU, so eviction decisions equal the host NAMM's except at near-ties of a score
// with the threshold (tests/test_kernels_session.cpp, DeviceNamm*; tests/test_kernels_lockstep.cpp).
//
// Memory. One pass holds at most DeviceNammBudget's key rows (features, state, scores, BAM scratch),
// attention floats and segments; more run in several passes (cut_namm_passes), each (session, layer)
// whole. The scratch
// is kept (grown, never shrunk) for the next update.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/cuda_util.h"
#include "kernels/spectrogram.h"
#include "namm/namm_policy.h"

namespace nammkit::kernels {

class CudaModel;
class CudaSession;

using DeviceNammBudget = NammPassBudget;  // kernels/namm_batch_layout.h

class DeviceNamm {
 public:
  // Throws Error for a configuration the device does not run (a scorer other than BAM).
  DeviceNamm(const NammConfig& config, const FeatureNormalizer& normalizer, DeviceNammBudget budget = {});
  DeviceNamm(const DeviceNamm&) = delete;
  DeviceNamm& operator=(const DeviceNamm&) = delete;

  // Whether `policy` can run here: it takes external scores, with this configuration and normalizer.
  bool serves(const NammPolicy& policy) const;

  // Throws Error when `session` cannot be updated with others of `model` whose windows hold `n_queries`
  // queries: its policy is not served here, another model or query count, or its spectral state is out
  // of step with its cache (the policy's mode changed mid-sequence). Changes nothing.
  void check(const CudaSession& session, const CudaModel& model, size_t n_queries) const;

  // One update of every layer of every session: each must be at an update point (its chunk just ended
  // at a multiple of update_interval) and pass check() with the first one's model and query count,
  // which update() verifies for all of them before it changes anything. Waits for each session's
  // stream first, runs on `stream`, and waits for it before returning. Each session's policy_seconds
  // gets its share of the wall time. An Error after the checks may leave sessions partly updated:
  // the caller must treat them all as broken.
  void update(std::span<CudaSession* const> sessions, cudaStream_t stream);

 private:
  // One (session, layer) of a pass, and its KV heads' first segment.
  struct LayerJob {
    int session = 0;  // index into the pass's sessions
    int layer = 0;
    int first_segment = 0;
  };
  void run_pass(std::span<CudaSession* const> sessions, std::span<const LayerJob> jobs, cudaStream_t stream);

  NammConfig config_;
  FeatureNormalizer normalizer_;
  DeviceNammBudget budget_;
  GpuSpectrogram spectrogram_;
  // Device scratch of a pass (grown, never shrunk) and its host staging.
  DeviceBuffer<float> attention_, ema_new_, tail_new_, features_, scores_, params_;
  DeviceBuffer<int32_t> keep_index_;
  DeviceBuffer<uint8_t> bam_ws_;
  std::vector<float> attention_host_, scores_host_, params_host_;
  std::vector<int32_t> keep_host_;
};

}  // namespace nammkit::kernels
