// The rendezvous behind lockstep batches (transformer/lockstep_scheduler.h), on plain jobs: a step runs
// when every live participant has submitted, a participant that leaves no longer holds the others up,
// and errors reach the jobs they belong to.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "transformer/lockstep_scheduler.h"

namespace nammkit {
namespace {

struct Job {
  int participant = 0;
  int round = 0;
};

TEST(LockstepScheduler, EveryStepHoldsOneJobOfEachLiveParticipant) {
  std::mutex steps_mutex;
  std::vector<std::vector<Job>> steps;
  LockstepScheduler<Job> scheduler([&](std::span<const Job> jobs, std::span<std::exception_ptr>) {
    std::lock_guard lock(steps_mutex);
    steps.emplace_back(jobs.begin(), jobs.end());
  });
  // Participant p submits 2 + p rounds, then leaves: 4 participants, so steps hold 4, 3, 2, 1 jobs.
  constexpr int kParticipants = 4;
  for (int p = 0; p < kParticipants; ++p) scheduler.join();
  std::vector<std::thread> threads;
  for (int p = 0; p < kParticipants; ++p)
    threads.emplace_back([&, p] {
      for (int r = 0; r < 2 + p; ++r) scheduler.submit(Job{p, r});
      scheduler.leave();
    });
  for (std::thread& t : threads) t.join();

  ASSERT_EQ(steps.size(), 5u);
  const std::vector<size_t> sizes = {4, 4, 3, 2, 1};
  for (size_t s = 0; s < steps.size(); ++s) {
    EXPECT_EQ(steps[s].size(), sizes[s]) << "step " << s;
    for (const Job& job : steps[s]) EXPECT_EQ(job.round, int(s)) << "step " << s << " ran every job of one round";
  }
  const LockstepStats stats = scheduler.stats();
  EXPECT_EQ(stats.steps, 5);
  EXPECT_EQ(stats.chunks, 14);
  EXPECT_EQ(stats.max_batch, 4);
}

TEST(LockstepScheduler, ErrorsReachTheirOwnJobsAndAThrownOneReachesAll) {
  // Round 0: the step fails participant 1's job only; round 1: the step throws.
  LockstepScheduler<Job> scheduler([](std::span<const Job> jobs, std::span<std::exception_ptr> errors) {
    if (jobs[0].round == 1) throw std::runtime_error("whole step");
    for (size_t i = 0; i < jobs.size(); ++i)
      if (jobs[i].participant == 1) errors[i] = std::make_exception_ptr(std::runtime_error("job of participant 1"));
  });
  constexpr int kParticipants = 3;
  for (int p = 0; p < kParticipants; ++p) scheduler.join();
  std::vector<std::vector<std::string>> seen(kParticipants);
  std::vector<std::thread> threads;
  for (int p = 0; p < kParticipants; ++p)
    threads.emplace_back([&, p] {
      for (int r = 0; r < 2; ++r) {
        try {
          scheduler.submit(Job{p, r});
          seen[size_t(p)].push_back("ok");
        } catch (const std::exception& e) {
          seen[size_t(p)].push_back(e.what());
        }
      }
      scheduler.leave();
    });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(seen[0], (std::vector<std::string>{"ok", "whole step"}));
  EXPECT_EQ(seen[1], (std::vector<std::string>{"job of participant 1", "whole step"}));
  EXPECT_EQ(seen[2], (std::vector<std::string>{"ok", "whole step"}));
}

TEST(LockstepScheduler, AParticipantAloneRunsItsOwnSteps) {
  std::atomic<int> steps{0};
  LockstepScheduler<Job> scheduler([&](std::span<const Job> jobs, std::span<std::exception_ptr>) {
    EXPECT_EQ(jobs.size(), 1u);
    ++steps;
  });
  scheduler.join();
  for (int r = 0; r < 3; ++r) scheduler.submit(Job{0, r});
  scheduler.leave();
  EXPECT_EQ(steps.load(), 3);
}

}  // namespace
}  // namespace nammkit
