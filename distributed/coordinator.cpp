#include "distributed/coordinator.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <thread>

#include "core/error.h"

namespace nammkit::dist {

namespace {

// Polling backs off from 50 us to 2 ms: replies are picked up quickly, and an idle rank uses no CPU
// (a blocking MPI receive would spin a core that the working ranks need on an oversubscribed node).
class Backoff {
 public:
  void reset() { wait_ = std::chrono::microseconds(50); }
  void sleep() {
    std::this_thread::sleep_for(wait_);
    wait_ = std::min(wait_ * 2, std::chrono::microseconds(2000));
  }

 private:
  std::chrono::microseconds wait_{50};
};

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

}  // namespace

Coordinator::Coordinator(Cluster& cluster, CoordinatorOptions options)
    : cluster_(cluster),
      options_(options),
      last_heard_(size_t(cluster.size()), Clock::now()),
      awaited_(size_t(cluster.size()), false),
      next_heartbeat_(Clock::now()) {
  if (!(options_.timeout_seconds > 0) || !std::isfinite(options_.timeout_seconds))
    fail("coordinator", "timeout_seconds: " + seconds_text(options_.timeout_seconds) + " (need > 0)");
}

std::string Coordinator::describe(int r) const {
  return "rank " + std::to_string(r) + " of " + std::to_string(size()) + " (host " + cluster_.host(r) + ")";
}

void Coordinator::on(const std::string& job, Handler handler) {
  if (job.empty() || job.find('\n') != std::string::npos) fail("coordinator", "job name '" + job + "' is not valid");
  handlers_[job] = std::move(handler);
}

void Coordinator::fail_all(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  cluster_.abort(1);
  std::abort();  // not reached: abort() ends the process or unwinds (tests)
}

void Coordinator::send(int destination, Tag tag, std::string bytes) {
  traffic_.sent_bytes += bytes.size();
  ++traffic_.sent_messages;
  cluster_.send(destination, tag, std::move(bytes));
}

void Coordinator::pump() {
  const auto now = Clock::now();
  while (std::optional<ClusterMessage> m = cluster_.poll()) {
    if (m->source >= 0 && m->source < size()) last_heard_[size_t(m->source)] = Clock::now();
    traffic_.received_bytes += m->bytes.size();
    ++traffic_.received_messages;
    if (m->tag != kHeartbeat) inbox_.push_back(std::move(*m));
  }
  if (now >= next_heartbeat_) {
    if (is_root()) {
      for (int r = 1; r < size(); ++r) send(r, kHeartbeat, {});
    } else {
      send(0, kHeartbeat, {});
    }
    const double interval = std::clamp(options_.timeout_seconds / 10, 0.05, 10.0);
    next_heartbeat_ = now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(interval));
  }
  for (int r = 0; r < size(); ++r) {
    if (!awaited_[size_t(r)]) continue;
    const double silent = std::chrono::duration<double>(Clock::now() - last_heard_[size_t(r)]).count();
    if (silent <= options_.timeout_seconds) continue;
    if (is_root())
      fail_all(describe(r) + " sent nothing for " + seconds_text(options_.timeout_seconds) + " s during " + current_ +
               " (the process died or hangs); ending the run on every rank");
    fail_all(describe(rank()) + ": no word from " + describe(0) + " for " + seconds_text(options_.timeout_seconds) +
             " s (the process died or hangs); ending the run on every rank");
  }
}

void Coordinator::run_busy(const std::function<void()>& fn) {
  if (size() == 1) {
    fn();
    return;
  }
  std::atomic<bool> done{false};
  std::exception_ptr error;
  std::thread worker([&] {
    try {
      fn();
    } catch (...) {
      error = std::current_exception();
    }
    done = true;
  });
  Backoff backoff;
  try {
    while (!done) {
      pump();
      backoff.sleep();
    }
  } catch (...) {
    worker.join();  // pump() only throws where the cluster's abort() returns by throwing (tests)
    throw;
  }
  worker.join();
  if (error) std::rethrow_exception(error);
}

std::string Coordinator::run_handler(const std::string& job, const std::string& payload) {
  const auto it = handlers_.find(job);
  if (it == handlers_.end()) fail(describe(rank()), "no handler for job '" + job + "'");
  return busy([&] { return it->second(payload); });
}

std::vector<std::string> Coordinator::run(const std::string& job, const std::string& payload, const std::string& what) {
  if (!is_root()) fail(describe(rank()), "run(): only rank 0 hands out jobs");
  current_ = what + " (job " + job + ")";
  for (int r = 1; r < size(); ++r) send(r, kJob, job + "\n" + payload);
  std::vector<std::string> replies(static_cast<size_t>(size()));
  std::vector<bool> have(static_cast<size_t>(size()), false);
  // Workers are awaited from now on: each must reply or keep sending heartbeats.
  const auto start = Clock::now();
  for (int r = 1; r < size(); ++r) {
    awaited_[size_t(r)] = true;
    last_heard_[size_t(r)] = std::max(last_heard_[size_t(r)], start);
  }
  try {
    replies[0] = run_handler(job, payload);
  } catch (const std::exception& e) {
    fail_all(describe(0) + ", " + what + ": " + e.what());
  }
  have[0] = true;
  Backoff backoff;
  while (!std::all_of(have.begin(), have.end(), [](bool b) { return b; })) {
    pump();
    bool got = false;
    while (!inbox_.empty()) {
      ClusterMessage m = std::move(inbox_.front());
      inbox_.pop_front();
      if (m.tag == kError) fail_all(m.bytes);
      if (m.tag == kReply && m.source > 0 && m.source < size() && !have[size_t(m.source)]) {
        replies[size_t(m.source)] = std::move(m.bytes);
        have[size_t(m.source)] = true;
        awaited_[size_t(m.source)] = false;
        got = true;
      }
    }
    if (got) backoff.reset();
    else backoff.sleep();
  }
  std::fill(awaited_.begin(), awaited_.end(), false);
  return replies;
}

void Coordinator::serve() {
  if (is_root()) fail(describe(0), "serve(): rank 0 hands out jobs, it does not serve them");
  awaited_[0] = true;
  last_heard_[0] = Clock::now();
  Backoff backoff;
  for (;;) {
    pump();
    if (inbox_.empty()) {
      backoff.sleep();
      continue;
    }
    backoff.reset();
    ClusterMessage m = std::move(inbox_.front());
    inbox_.pop_front();
    if (m.tag == kStop) return;
    if (m.tag != kJob) continue;
    const size_t newline = m.bytes.find('\n');
    const std::string job = m.bytes.substr(0, newline);
    const std::string payload = newline == std::string::npos ? std::string() : m.bytes.substr(newline + 1);
    if (!setup_error_.empty()) {
      send(0, kError, setup_error_);
      continue;
    }
    try {
      send(0, kReply, run_handler(job, payload));
    } catch (const std::exception& e) {
      send(0, kError, describe(rank()) + ", job " + job + ": " + e.what());
    }
  }
}

void Coordinator::stop() {
  if (!is_root()) fail(describe(rank()), "stop(): only rank 0 stops the workers");
  for (int r = 1; r < size(); ++r) send(r, kStop, {});
}

}  // namespace nammkit::dist
