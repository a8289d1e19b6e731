// The distributed machinery without MPI: the coordinator's job protocol, liveness and error reports
// over an in-process cluster (one thread per rank), the static work split, and a population evaluation
// spread over ranks against the single-process one. tests/test_mpi_runs.cpp runs the real thing.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "distributed/coordinator.h"
#include "distributed/population_runner.h"
#include "distributed/work_split.h"
#include "namm/normalization.h"

using namespace nammkit;
using namespace nammkit::dist;

namespace {

// Thrown by InProcessCluster::abort: ends the rank's thread the way MPI_Abort ends its process.
struct Aborted {
  int rank;
  int code;
};

// N ranks in one process: a mailbox per rank. Messages between two ranks stay in order, as in MPI.
class Network {
 public:
  explicit Network(int size) : boxes_(size_t(size)) {}
  void send(int from, int to, int tag, std::string bytes) {
    std::lock_guard lock(mutex_);
    boxes_[size_t(to)].push_back({from, tag, std::move(bytes)});
  }
  std::optional<ClusterMessage> poll(int rank) {
    std::lock_guard lock(mutex_);
    auto& box = boxes_[size_t(rank)];
    if (box.empty()) return std::nullopt;
    ClusterMessage m = std::move(box.front());
    box.pop_front();
    return m;
  }
  int size() const { return int(boxes_.size()); }

 private:
  std::mutex mutex_;
  std::vector<std::deque<ClusterMessage>> boxes_;
};

class InProcessCluster : public Cluster {
 public:
  InProcessCluster(Network& net, int rank) : net_(net), rank_(rank) {
    for (int r = 0; r < net.size(); ++r) hosts_.push_back("node" + std::to_string(r));
  }
  int rank() const override { return rank_; }
  int size() const override { return net_.size(); }
  int local_rank() const override { return 0; }
  const std::string& host(int r) const override { return hosts_.at(size_t(r)); }
  void send(int destination, int tag, std::string bytes) override {
    net_.send(rank_, destination, tag, std::move(bytes));
  }
  std::optional<ClusterMessage> poll() override { return net_.poll(rank_); }
  [[noreturn]] void abort(int exit_code) override { throw Aborted{rank_, exit_code}; }

 private:
  Network& net_;
  int rank_;
  std::vector<std::string> hosts_;
};

// Runs `root` on rank 0 and `worker` on the others, each on its own thread with its own coordinator.
// Returns, per rank, the exit code of abort() or -1 when the rank returned normally.
std::vector<int> run_ranks(int size, double timeout, const std::function<void(Coordinator&)>& root,
                           const std::function<void(Coordinator&)>& worker) {
  Network net(size);
  std::vector<int> aborted(size_t(size), -1);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r)
    threads.emplace_back([&, r] {
      InProcessCluster cluster(net, r);
      Coordinator c(cluster, {timeout});
      try {
        (r == 0 ? root : worker)(c);
      } catch (const Aborted& a) {
        aborted[size_t(r)] = a.code;
      }
    });
  for (auto& t : threads) t.join();
  return aborted;
}

TEST(Coordinator, RunsAJobOnEveryRankAndGathersRepliesInRankOrder) {
  std::vector<std::string> replies;
  auto handler = [](Coordinator& c) {
    c.on("square", [&c](const std::string& payload) {
      const int x = std::stoi(payload);
      return std::to_string(x * x + c.rank());
    });
  };
  const auto aborted = run_ranks(
      3, 5.0,
      [&](Coordinator& c) {
        handler(c);
        replies = c.run("square", "7", "test");
        const auto again = c.run("square", "2", "test");
        EXPECT_EQ(again, (std::vector<std::string>{"4", "5", "6"}));
        c.stop();
      },
      [&](Coordinator& c) {
        handler(c);
        c.serve();
      });
  EXPECT_EQ(aborted, (std::vector<int>{-1, -1, -1}));
  EXPECT_EQ(replies, (std::vector<std::string>{"49", "50", "51"}));
}

TEST(Coordinator, AWorkerThatThrowsEndsTheRunWithItsMessage) {
  testing::internal::CaptureStderr();
  const auto aborted = run_ranks(
      3, 1.0,
      [](Coordinator& c) {
        c.on("job", [](const std::string&) { return std::string("ok"); });
        c.run("job", "", "generation 4");
        ADD_FAILURE() << "run() returned";
      },
      [](Coordinator& c) {
        c.on("job", [&c](const std::string&) -> std::string {
          if (c.rank() == 2) throw Error("member 5, prompt 1: out of memory");
          return "ok";
        });
        c.serve();  // the others time out once the root has gone
      });
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(aborted[0], 1);
  EXPECT_NE(err.find("error: rank 2 of 3 (host node2), job job: member 5, prompt 1: out of memory"), std::string::npos)
      << err;
}

TEST(Coordinator, ASilentWorkerTimesOutWithAClearMessage) {
  testing::internal::CaptureStderr();
  const auto t0 = std::chrono::steady_clock::now();
  const auto aborted = run_ranks(
      2, 0.5,
      [](Coordinator& c) {
        c.on("job", [](const std::string&) { return std::string(); });
        c.run("job", "", "generation 2");
      },
      [](Coordinator&) {});  // a rank that died: never answers, never sends a heartbeat
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(aborted[0], 1);
  EXPECT_LT(seconds, 5.0);
  EXPECT_NE(err.find("rank 1 of 2 (host node1) sent nothing for 0.5 s during generation 2 (job job)"),
            std::string::npos)
      << err;
}

TEST(Coordinator, ASlowButLiveWorkerIsNotTimedOut) {
  // The worker computes 3x the timeout; its heartbeats keep it alive.
  std::string reply;
  const auto aborted = run_ranks(
      2, 0.3,
      [&](Coordinator& c) {
        c.on("job", [](const std::string&) { return std::string("root"); });
        reply = c.run("job", "", "a long job")[1];
        c.stop();
      },
      [](Coordinator& c) {
        c.on("job", [](const std::string&) {
          std::this_thread::sleep_for(std::chrono::milliseconds(900));
          return std::string("done");
        });
        c.serve();
      });
  EXPECT_EQ(aborted, (std::vector<int>{-1, -1}));
  EXPECT_EQ(reply, "done");
}

TEST(Coordinator, AWorkerEndsTheRunWhenTheRootFallsSilent) {
  testing::internal::CaptureStderr();
  const auto aborted = run_ranks(
      2, 0.4, [](Coordinator&) {},  // the root died before handing out anything
      [](Coordinator& c) { c.serve(); });
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(aborted[1], 1);
  EXPECT_NE(err.find("rank 1 of 2 (host node1): no word from rank 0 of 2 (host node0) for 0.4 s"), std::string::npos)
      << err;
}

TEST(Coordinator, ASetupFailureIsReportedAtTheFirstJob) {
  testing::internal::CaptureStderr();
  const auto aborted = run_ranks(
      2, 1.0,
      [](Coordinator& c) {
        c.on("hello", [](const std::string&) { return std::string(); });
        c.run("hello", "", "loading");
      },
      [](Coordinator& c) {
        c.set_setup_error(c.describe(c.rank()) + ", loading: /data/model.gguf: no such file");
        c.serve();
      });
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(aborted[0], 1);
  EXPECT_NE(err.find("error: rank 1 of 2 (host node1), loading: /data/model.gguf: no such file"), std::string::npos)
      << err;
}

TEST(WorkSplit, BalancesByCostDeterministically) {
  const std::vector<double> costs = {5, 1, 4, 1, 3, 2, 2, 6};
  const std::vector<int> a = assign_by_cost(costs, 3);
  EXPECT_EQ(a, assign_by_cost(costs, 3));
  std::vector<double> load(3, 0.0);
  for (size_t i = 0; i < costs.size(); ++i) load[size_t(a[i])] += costs[i];
  EXPECT_EQ(load, (std::vector<double>{8, 8, 8}));  // 24 split evenly
  EXPECT_EQ(items_of(a, 0).size() + items_of(a, 1).size() + items_of(a, 2).size(), costs.size());
  EXPECT_EQ(assign_by_cost(costs, 1), std::vector<int>(costs.size(), 0));
  EXPECT_THROW(assign_by_cost(costs, 0), Error);
  const std::vector<double> bad = {1, std::nan("")};
  EXPECT_THROW(assign_by_cost(bad, 2), Error);
}

TEST(FeatureStats, FromMomentsRestoresTheExactState) {
  FeatureStats s(3);
  const float rows[] = {0.1f, 2.0f, -3.0f, 0.7f, 1.1f, 5.5f, -0.2f, 0.3f, 0.9f};
  s.add(rows, 3);
  const FeatureStats t = FeatureStats::from_moments(s.mean(), s.m2(), s.count());
  EXPECT_EQ(t.mean(), s.mean());
  EXPECT_EQ(t.m2(), s.m2());
  EXPECT_EQ(t.count(), s.count());
  EXPECT_THROW(FeatureStats::from_moments({1.0}, {1.0, 2.0}, 2), Error);
}

// A deterministic per-item score with failures: the distributed evaluation must reproduce the local one.
evo::PromptScore toy_score(std::span<const double> x, const evo::PromptContext& c) {
  if (c.member == 3 && c.prompt == 2) throw Error("prompt too long");
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s -= (x[i] - 0.1 * c.prompt) * (x[i] - 0.1 * c.prompt);
  return {s, double(c.prompt + 10)};
}

TEST(DistributedItemRunner, GivesTheSingleProcessGenerationBitForBit) {
  const evo::TbbEvalSettings settings{.pool_size = 9, .prompts_per_generation = 5, .seed = 11};
  Eigen::MatrixXd population(4, 6);
  for (int i = 0; i < population.size(); ++i) population.data()[i] = std::sin(1.7 * i);
  evo::TbbPopulationEvaluator local(settings, toy_score);
  const evo::GenerationEval expected = local.evaluate(population, 7, "stage");
  const double expected_mean = local.evaluate_vector(std::span<const double>(population.col(0).data(), 4), 7, "stage");

  for (int ranks : {1, 2, 3}) {
    evo::GenerationEval got;
    double got_mean = 0;
    std::atomic<int> items_run{0};
    auto register_share = [&](Coordinator& c, evo::TbbPopulationEvaluator& e) {
      serve_items(c, "evaluate", [&](const evo::EvalRequest& r, std::span<const size_t> items, bool* stop) {
        items_run += int(items.size());
        return e.run_here(r, items, stop);
      });
    };
    const auto aborted = run_ranks(
        ranks, 5.0,
        [&](Coordinator& c) {
          evo::TbbPopulationEvaluator e(settings, toy_score);
          register_share(c, e);
          DistributedItemRunner runner(c, "evaluate", [](const std::string&, int prompt) { return 1.0 + prompt; });
          e.set_runner(&runner);
          got = e.evaluate(population, 7, "stage");
          got_mean = e.evaluate_vector(std::span<const double>(population.col(0).data(), 4), 7, "stage");
          c.stop();
        },
        [&](Coordinator& c) {
          evo::TbbPopulationEvaluator e(settings, toy_score);
          register_share(c, e);
          c.serve();
        });
    EXPECT_EQ(aborted, std::vector<int>(size_t(ranks), -1));
    EXPECT_EQ(got.fitness, expected.fitness) << ranks << " ranks";
    ASSERT_EQ(got.failures.size(), 1u);
    EXPECT_EQ(got.failures[0].member, 3);
    EXPECT_EQ(got.failures[0].reason, expected.failures[0].reason);
    EXPECT_EQ(got.mean_cache_size, expected.mean_cache_size);
    EXPECT_EQ(got.evaluations, expected.evaluations);
    EXPECT_EQ(got_mean, expected_mean);
    EXPECT_EQ(items_run.load(), 6 * 5 + 5);  // every item once, on some rank
  }
}

}  // namespace
