#include "transformer/lockstep.h"

#include "core/error.h"

namespace nammkit {

LockstepGroup::LockstepGroup(const Model& model)
    : model_(model),
      scratch_(Session::make_scratch(model.config)),
      scheduler_([this](std::span<const Session::ChunkJob> jobs, std::span<std::exception_ptr>) { run_step(jobs); }) {}

LockstepGroup::~LockstepGroup() = default;

void LockstepGroup::forward(const Session::ChunkJob& job) {
  if (&job.session->model() != &model_) fail("lockstep", "a session of another model joined the group");
  scheduler_.submit(job);
}

void LockstepGroup::run_step(std::span<const Session::ChunkJob> batch) {
  // One pass per float_activations setting (the only option the stacked matmuls must share).
  for (const bool f32 : {false, true}) {
    step_jobs_.clear();
    for (const Session::ChunkJob& job : batch)
      if (job.session->options().float_activations == f32) step_jobs_.push_back(job);
    if (!step_jobs_.empty()) Session::forward_jobs(step_jobs_, *scratch_);
  }
}

std::unique_ptr<InferenceSession> LockstepCpuBackend::new_session(MemoryPolicy* policy,
                                                                  const SessionOptions& options) const {
  return std::make_unique<Session>(model_, policy, options, &group_);
}

}  // namespace nammkit
