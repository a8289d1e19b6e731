// Lockstep batching on the CPU: many sequences (a population's members x prompts) advance together,
// one forward pass over the frozen weights per step for all of them.
//
// Every session of a LockstepGroup keeps its own per-(layer, KV head) cache, position and memory
// policy; only the dense layers are shared: each step stacks the chunk every live session asked for
// (prefill chunks and single decode tokens side by side) and runs Session::forward_jobs over them, so
// every block of weights is read once per step instead of once per sequence. Each session's results
// (logits, attention, eviction decisions) are bit-identical to those of the same session run alone:
// the per-sequence arithmetic is the same code (matmul_segments). What it buys is memory traffic: a
// decode step of B sequences reads the weights once instead of B times, which pays for models whose
// weights do not fit in the caches; prefill chunks are compute-bound and gain little.
//
// The caller's code is unchanged (run_sample, generate_greedy): a session's feed() blocks until the
// step that holds its chunk has run. A step starts when every live session of the group has asked
// for its next chunk, and the last one to ask runs it. So every thread holding a session must keep
// feeding it or destroy it: run each sequence on a thread of its own (evo::run_items with
// dedicated threads), and never hold one group session while waiting for another.
#pragma once
#include <memory>
#include <span>
#include <vector>

#include "transformer/backend.h"
#include "transformer/lockstep_scheduler.h"
#include "transformer/session.h"

namespace nammkit {

class LockstepGroup {
 public:
  explicit LockstepGroup(const Model& model);
  ~LockstepGroup();
  LockstepGroup(const LockstepGroup&) = delete;
  LockstepGroup& operator=(const LockstepGroup&) = delete;

  using Stats = LockstepStats;
  Stats stats() const { return scheduler_.stats(); }

 private:
  friend class Session;
  void join() { scheduler_.join(); }
  void leave() { scheduler_.leave(); }
  // Blocks until the step that runs `job` has run; rethrows what the step threw.
  void forward(const Session::ChunkJob& job);
  void run_step(std::span<const Session::ChunkJob> batch);

  const Model& model_;
  std::shared_ptr<Session::Scratch> scratch_;
  std::vector<Session::ChunkJob> step_jobs_;  // one float_activations setting of a step
  LockstepScheduler<Session::ChunkJob> scheduler_;
};

// A CPU backend whose sessions all belong to one LockstepGroup (see above for the threading rule).
// group() exposes the step statistics.
class LockstepCpuBackend final : public Backend {
 public:
  explicit LockstepCpuBackend(const Model& model) : model_(model), group_(model) {}
  Device device() const override { return Device::Cpu; }
  std::string name() const override { return "cpu (lockstep batches)"; }
  const Model& model() const override { return model_; }
  std::unique_ptr<InferenceSession> new_session(MemoryPolicy* policy, const SessionOptions& options) const override;
  const LockstepGroup& group() const { return group_; }

 private:
  const Model& model_;
  mutable LockstepGroup group_;
};

}  // namespace nammkit
