// The rendezvous behind lockstep batching (transformer/lockstep.h on the CPU, kernels/cuda_lockstep.h on
// the GPU): every participant thread submits one job and blocks; when every live participant has
// submitted, the last one to arrive runs all pending jobs as one step, then everyone returns.
//
// A participant is a session: it joins when made, leaves when destroyed, and between the two must keep
// submitting (or leave), or the others wait for it forever. What a step does with its jobs is the
// owner's run_step callable; the scheduler only gathers them. run_step may fail single jobs (by setting
// their entry of `errors`, which it receives all null); an exception it throws reaches every participant
// of that step.
#pragma once
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

namespace nammkit {

struct LockstepStats {
  int64_t steps = 0;   // steps run
  int64_t chunks = 0;  // jobs in them (chunks / steps = mean batch size)
  int max_batch = 0;   // most jobs in one step
};

template <typename Job>
class LockstepScheduler {
 public:
  using RunStep = std::function<void(std::span<const Job> jobs, std::span<std::exception_ptr> errors)>;
  explicit LockstepScheduler(RunStep run_step) : run_step_(std::move(run_step)) {}
  LockstepScheduler(const LockstepScheduler&) = delete;
  LockstepScheduler& operator=(const LockstepScheduler&) = delete;

  void join() {
    std::lock_guard lock(mutex_);
    ++live_;
  }
  void leave() {
    std::lock_guard lock(mutex_);
    --live_;
    // The participants still waiting may now be all there are: one of them runs the step.
    changed_.notify_all();
  }

  // Blocks until the step that runs `job` has run; rethrows what the step threw.
  void submit(const Job& job) {
    std::unique_lock lock(mutex_);
    Request request{&job, false, nullptr};
    pending_.push_back(&request);
    while (!request.done) {
      if (!running_ && int(pending_.size()) == live_) run_pending(lock);
      else changed_.wait(lock);
    }
    if (request.error) std::rethrow_exception(request.error);
  }

  LockstepStats stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }

 private:
  struct Request {
    const Job* job = nullptr;
    bool done = false;
    std::exception_ptr error;
  };

  // Runs every pending job as one step (the lock is released meanwhile: participants may join, leave
  // or queue jobs for the next step), then wakes their threads.
  void run_pending(std::unique_lock<std::mutex>& lock) {
    running_ = true;
    std::vector<Request*>& batch = running_batch_;
    batch.swap(pending_);  // pending_ gets the last step's (cleared) storage: no allocation once warm
    lock.unlock();
    jobs_.clear();
    for (const Request* r : batch) jobs_.push_back(*r->job);
    errors_.assign(batch.size(), nullptr);
    try {
      run_step_(jobs_, errors_);
    } catch (...) {
      errors_.assign(batch.size(), std::current_exception());
    }
    lock.lock();
    for (size_t i = 0; i < batch.size(); ++i) {
      batch[i]->done = true;
      batch[i]->error = errors_[i];
    }
    ++stats_.steps;
    stats_.chunks += int64_t(batch.size());
    stats_.max_batch = std::max(stats_.max_batch, int(batch.size()));
    batch.clear();
    running_ = false;
    changed_.notify_all();
  }

  RunStep run_step_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  int live_ = 0;                         // participants that exist
  std::vector<Request*> pending_;        // jobs waiting for the next step
  bool running_ = false;                 // a step is running (its requests are out of pending_)
  std::vector<Request*> running_batch_;  // the running step's requests (only the runner touches it)
  std::vector<Job> jobs_;                // and their jobs
  std::vector<std::exception_ptr> errors_;
  LockstepStats stats_;
};

}  // namespace nammkit
