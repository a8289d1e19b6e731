// Lockstep batching on the GPU: many CudaSessions (a CMA-ES population's members x prompts) advance
// together, one forward pass over the frozen weights per step for all of them. The GPU counterpart of
// transformer/lockstep.h, with the same threading rule: a session's feed() blocks until the step that
// holds its chunk has run; a step starts when every live session of the group has asked for its next
// chunk. So every thread holding a group session must keep feeding it or destroy it (one thread per
// sequence: evo::run_items with dedicated threads).
//
// A step (kernels/batch_plan.h has the layout):
//   - the chunks are stacked: one embedding gather, and per layer one RMSNorm and one cuBLAS GEMM per
//     projection over all rows (Q, K, V, O, gate, up, down), so each weight matrix is read once per step;
//   - RoPE at every row's own position; the keys and values appended to each sequence's own
//     per-(layer, KV head) cache in one launch;
//   - attention: one kernel launch per distinct chunk length (decode steps: one attention_decode over
//     every sequence's KV heads; equal prefill chunks: one attention_prefill), the queries gathered
//     into the kernels' layout and the outputs scattered back;
//   - the output layer only for the rows someone reads, in one GEMM.
// Each session keeps its own cache, position, attention log and memory policy; policies run on the
// session's own thread after the step (CudaSession::run_policy: on the host, then compaction on the
// device), so sequences evict independently. Except NAMMs on the device (CudaSessionOptions::
// namm_on_device, on for LockstepCudaBackend's sessions): the updates of every session whose chunk
// ended at an update run in the step, batched (kernels/namm_device.h: one spectrogram pass and one BAM
// launch for all their (layer, KV head)s, each with its own parameters).
//
// Results equal the session run alone up to the GEMMs' summation order (cuBLAS may pick another
// algorithm for another row count): logits agree to f32 rounding of f16/bf16 products, eviction
// decisions are the same unless two tokens' scores tie to that precision (tests/test_kernels_lockstep.cpp).
//
// Memory: CudaLockstepOptions (max_rows, max_sequences, max_len) size the step's buffers at construction, and
// CudaSessionOptions::reserve_tokens each session's cache; a run within them allocates nothing per step
// (beyond them, buffers grow by doubling).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "kernels/batch_plan.h"
#include "kernels/cuda_model.h"
#include "kernels/cuda_session.h"
#include "kernels/namm_device.h"
#include "transformer/backend.h"
#include "transformer/lockstep_scheduler.h"

namespace nammkit::kernels {

struct CudaLockstepOptions {
  int max_rows = 0;       // stacked rows (sum of the chunks) one step is planned for; 0: grow as needed
  int max_sequences = 0;  // sessions in the group, and max_len the longest per-head cache: they size the
  int max_len = 0;        // decode workspace (a decode step of every sequence); 0: grow as needed
  // Attention probabilities one launch may write (for policies that read attention); a larger set of
  // sequences is cut into several launches. 256 Mi floats = 1 GiB.
  size_t max_probs_floats = size_t{1} << 28;
  DeviceNammBudget namm_budget;  // one batched NAMM pass (kernels/namm_device.h); more run in several
};

class CudaLockstepGroup {
 public:
  // `model` must outlive the group. Uses the current device.
  explicit CudaLockstepGroup(const CudaModel& model, CudaLockstepOptions options = {});
  ~CudaLockstepGroup();
  CudaLockstepGroup(const CudaLockstepGroup&) = delete;
  CudaLockstepGroup& operator=(const CudaLockstepGroup&) = delete;

  const CudaModel& model() const { return model_; }
  LockstepStats stats() const { return scheduler_.stats(); }

 private:
  friend class CudaSession;
  struct Buffers;
  void join() { scheduler_.join(); }
  void leave() { scheduler_.leave(); }
  // Blocks until the step that runs `job` has run; rethrows what the step threw.
  void forward(const CudaSession::ChunkJob& job) { scheduler_.submit(job); }
  // One step: the jobs of every KV dtype, one stacked pass per dtype (attention launches share it); a
  // failed pass sets its jobs' errors.
  void run_step(std::span<const CudaSession::ChunkJob> jobs, std::span<std::exception_ptr> errors);
  // One pass: makes room in the sessions' caches, plans the step and allocates every buffer it needs,
  // then run_planned changes the sessions' state and runs it (on a failure there, the sessions are
  // marked broken).
  void forward_jobs(std::span<const CudaSession::ChunkJob> jobs);
  void run_planned(std::span<const CudaSession::ChunkJob> jobs, const BatchPlan& plan);
  // After the forward passes: the device NAMM updates the step's chunks ended at, batched; a failure
  // fails (and breaks) those sessions only.
  void run_device_namm(std::span<const CudaSession::ChunkJob> jobs, std::span<std::exception_ptr> errors);

  const CudaModel& model_;
  CudaLockstepOptions options_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  std::unique_ptr<Buffers> buf_;
  std::vector<CudaSession::ChunkJob> dtype_jobs_;  // one KV dtype's jobs of a step
  std::vector<size_t> dtype_index_;                // and their indices in the step (also: the NAMM's sessions)
  std::unique_ptr<DeviceNamm> namm_engine_;        // batched device NAMM updates
  std::vector<CudaSession*> namm_sessions_;        // a step's sessions it updates
  LockstepScheduler<CudaSession::ChunkJob> scheduler_;
};

// The CUDA backend's lockstep form (Backend::new_lockstep_backend on a CUDA backend): every session it
// makes belongs to one CudaLockstepGroup over `gpu_model` (the parent backend's upload).
class LockstepCudaBackend final : public Backend {
 public:
  LockstepCudaBackend(const Model& model, const CudaModel& gpu_model, std::string parent_name,
                      CudaLockstepOptions options = {});
  Device device() const override { return Device::Cuda; }
  std::string name() const override { return name_; }
  const Model& model() const override { return model_; }
  std::unique_ptr<InferenceSession> new_session(MemoryPolicy* policy, const SessionOptions& options) const override;
  const CudaLockstepGroup& group() const { return *group_; }

 private:
  const Model& model_;
  const CudaModel& gpu_model_;
  std::string name_;
  std::unique_ptr<CudaLockstepGroup> group_;
};

}  // namespace nammkit::kernels
