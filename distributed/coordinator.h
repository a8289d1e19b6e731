// The protocol of a distributed run: rank 0 (the root) owns the state and hands out jobs; every rank,
// the root included, runs its share of a job and the root gathers the replies.
//
//   root:    c.on("evaluate", handler); ... replies = c.run("evaluate", payload, "generation 3"); ... c.stop();
//   workers: c.on("evaluate", handler); c.serve();   // returns when the root calls stop()
//
// Liveness: while a rank waits or works (busy()), it sends a heartbeat to its peers every
// timeout / 10 s (workers to the root, the root to every worker). A rank that is awaited and sends
// nothing for `timeout_seconds` (killed, hung, its node gone) ends the run on every rank: the one that
// noticed prints one line naming the silent rank, its host and the job, then aborts the MPI job. A
// handler that throws on a worker is reported the same way by the root, with the worker's message, which
// names its rank, host and work item.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "distributed/cluster.h"

namespace nammkit::dist {

struct CoordinatorOptions {
  double timeout_seconds = 300;  // silence after which an awaited rank counts as lost
};

class Coordinator {
 public:
  // Runs on a rank's share of a job: the payload the root sent; returns this rank's reply.
  using Handler = std::function<std::string(const std::string& payload)>;

  explicit Coordinator(Cluster& cluster, CoordinatorOptions options = {});

  int rank() const { return cluster_.rank(); }
  int size() const { return cluster_.size(); }
  bool is_root() const { return rank() == 0; }
  int local_rank() const { return cluster_.local_rank(); }
  std::string describe(int rank) const;  // "rank 1 of 3 (host node7)"

  // Registers the handler of a job (on every rank, before run/serve).
  void on(const std::string& job, Handler handler);

  // Root: runs `job` on every rank (its own share on this one) and returns the replies in rank order.
  // `what` names the work in messages ("generation 12"). A rank's failure or silence ends the run.
  std::vector<std::string> run(const std::string& job, const std::string& payload, const std::string& what);

  // Workers: answers jobs until the root calls stop().
  void serve();
  // Root: releases the workers from serve().
  void stop();

  // Workers: a failure before serve() (loading the model, the tasks). The first job is answered with it,
  // so the root reports it and ends the run.
  void set_setup_error(std::string message) { setup_error_ = std::move(message); }

  // Runs fn() on a helper thread while this thread keeps heartbeats and messages flowing; returns
  // fn's result or rethrows its exception. Long work outside run()/serve() (loading a model) goes here.
  template <class F>
  auto busy(F&& fn) {
    using R = std::invoke_result_t<F&>;
    if constexpr (std::is_void_v<R>) {
      run_busy([&] { fn(); });
    } else {
      std::optional<R> result;
      run_busy([&] { result.emplace(fn()); });
      return std::move(*result);
    }
  }

  // Bytes this rank has sent and received (payloads, heartbeats included): what a run exchanges.
  struct Traffic {
    uint64_t sent_bytes = 0, received_bytes = 0;
    uint64_t sent_messages = 0, received_messages = 0;
  };
  const Traffic& traffic() const { return traffic_; }

  // Prints "error: <message>" and ends every rank (exit code 1).
  [[noreturn]] void fail_all(const std::string& message);

 private:
  enum Tag : int { kJob = 1, kReply = 2, kError = 3, kStop = 4, kHeartbeat = 5 };
  using Clock = std::chrono::steady_clock;

  void run_busy(const std::function<void()>& fn);
  // Receives what has arrived (heartbeats are noted, the rest queued in inbox_), sends heartbeats
  // when due, and ends the run when an awaited rank has been silent too long.
  void pump();
  std::string run_handler(const std::string& job, const std::string& payload);
  void send(int destination, Tag tag, std::string bytes);

  Cluster& cluster_;
  CoordinatorOptions options_;
  std::map<std::string, Handler> handlers_;
  std::deque<ClusterMessage> inbox_;
  std::vector<Clock::time_point> last_heard_;
  std::vector<bool> awaited_;  // ranks whose silence is fatal now
  Clock::time_point next_heartbeat_;
  std::string current_;  // what the awaited ranks are doing, for messages
  std::string setup_error_;
  Traffic traffic_;
};

}  // namespace nammkit::dist
