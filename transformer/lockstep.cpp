#include "transformer/lockstep.h"

#include <algorithm>
#include <exception>

#include "core/error.h"

namespace nammkit {

struct LockstepGroup::Request {
  const Session::ChunkJob* job = nullptr;
  bool done = false;
  std::exception_ptr error;
};

LockstepGroup::LockstepGroup(const Model& model) : model_(model), scratch_(Session::make_scratch(model.config)) {}

LockstepGroup::~LockstepGroup() = default;

LockstepGroup::Stats LockstepGroup::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void LockstepGroup::join() {
  std::lock_guard lock(mutex_);
  ++live_;
}

void LockstepGroup::leave() {
  std::lock_guard lock(mutex_);
  --live_;
  // The sessions still waiting may now be all there are: one of them runs the step.
  changed_.notify_all();
}

void LockstepGroup::forward(const Session::ChunkJob& job) {
  if (&job.session->model() != &model_) fail("lockstep", "a session of another model joined the group");
  std::unique_lock lock(mutex_);
  Request request{&job, false, nullptr};
  pending_.push_back(&request);
  while (!request.done) {
    if (!running_ && int(pending_.size()) == live_) run_step(lock);
    else changed_.wait(lock);
  }
  if (request.error) std::rethrow_exception(request.error);
}

// Runs every pending chunk as one forward pass (the lock is released meanwhile: sessions may join,
// leave or queue chunks for the next step), then wakes their threads.
void LockstepGroup::run_step(std::unique_lock<std::mutex>& lock) {
  running_ = true;
  std::vector<Request*> batch;
  batch.swap(pending_);
  lock.unlock();
  std::exception_ptr error;
  try {
    // One pass per float_activations setting (the only option the stacked matmuls must share).
    for (const bool f32 : {false, true}) {
      std::vector<Session::ChunkJob> jobs;
      for (const Request* r : batch)
        if (r->job->session->options().float_activations == f32) jobs.push_back(*r->job);
      if (!jobs.empty()) Session::forward_jobs(jobs, *scratch_);
    }
  } catch (...) {
    error = std::current_exception();
  }
  lock.lock();
  for (Request* r : batch) {
    r->done = true;
    r->error = error;
  }
  ++stats_.steps;
  stats_.chunks += int64_t(batch.size());
  stats_.max_batch = std::max(stats_.max_batch, int(batch.size()));
  running_ = false;
  changed_.notify_all();
}

std::unique_ptr<InferenceSession> LockstepCpuBackend::new_session(MemoryPolicy* policy,
                                                                  const SessionOptions& options) const {
  return std::make_unique<Session>(model_, policy, options, &group_);
}

}  // namespace nammkit
