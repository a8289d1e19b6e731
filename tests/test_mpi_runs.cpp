// Real MPI runs (issue #15): `mpirun -np N nammkit evolve` gives exactly the single-process fitness
// values, CMA-ES state and policy for N = 1, 2, 3; `nammkit eval` likewise; a rank that fails to load,
// hangs or is killed ends the run with a clear error and leaves a checkpoint that resumes, with another N,
// bit for bit. Skipped when the build has no MPI or no mpirun.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/file_io.h"
#include "distributed/mpi_cluster.h"
#include "evolution/checkpoint.h"
#include "namm/policy_file.h"
#include "rl/rl_checkpoint.h"

using namespace nammkit;
namespace fs = std::filesystem;

namespace {

const std::string kNammkit = std::string(NAMMKIT_BINARY_DIR) + "/bin/nammkit";
const std::string kMpiexec = NAMMKIT_MPIEXEC;

class MpiRuns : public testing::Test {
 protected:
  void SetUp() override {
    if (!dist::mpi_built()) GTEST_SKIP() << "built without MPI (-DNAMMKIT_MPI=OFF or no libopenmpi-dev)";
    if (kMpiexec.empty() || !fs::exists(kMpiexec)) GTEST_SKIP() << "no mpirun found at configure time";
    dir_ = fs::temp_directory_path() / ("nammkit_mpi_" + std::to_string(::getpid()) + "_" +
                                        testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // A copy of tests/configs/mpi_evolve.json writing to dir_/NAME, with `threads` and stage generations set.
  std::string config(const std::string& name, int threads, int first_stage_generations = 3) {
    nlohmann::json j =
        nlohmann::json::parse(read_file(std::string(NAMMKIT_SOURCE_DIR) + "/tests/configs/mpi_evolve.json"));
    j["output_dir"] = (dir_ / name).string();
    j["threads"] = threads;
    j["stages"][0]["generations"] = first_stage_generations;
    const std::string path = (dir_ / (name + ".json")).string();
    write_file_atomic(path, j.dump(2));
    return path;
  }
  std::string mpirun(int ranks) const {
    return kMpiexec + " --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " ";
  }
  // Runs a shell command under a time limit; returns its exit code, its stderr in *err.
  int sh(const std::string& command, std::string* err = nullptr, int limit_seconds = 180) const {
    const std::string err_file = (dir_ / "stderr.txt").string();
    const int status =
        std::system(("timeout " + std::to_string(limit_seconds) + " " + command + " >/dev/null 2>" + err_file).c_str());
    if (err) *err = read_file(err_file);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  std::string run_dir(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// The parts of a checkpoint that a run's results consist of: everything but the wall-clock times,
// the config text (its output_dir and threads differ) and the log line (it holds the times).
std::string results_of(const std::string& checkpoint_path) {
  evo::Checkpoint c = evo::load_checkpoint(checkpoint_path);
  c.progress.elapsed_seconds = 0;
  c.config.clear();
  c.last_log_line.clear();
  return evo::serialize_checkpoint(c);
}

// The log without its times (CMA-ES or RL).
std::vector<nlohmann::json> log_of(const std::string& run) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run + "/log.jsonl");
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    j.erase("elapsed_seconds");
    j.erase("evals_per_second");
    j.erase("runs_per_second");  // RL logs
    out.push_back(j);
  }
  return out;
}

void expect_same_results(const std::string& a, const std::string& b) {
  EXPECT_EQ(results_of(a + "/latest.ckpt"), results_of(b + "/latest.ckpt")) << a << " vs " << b;
  EXPECT_EQ(log_of(a), log_of(b)) << a << " vs " << b;
  for (const char* file : {"/policy.nammp", "/best_policy.nammp"}) {
    PolicyFile pa = load_policy(a + file), pb = load_policy(b + file);
    pa.clear_provenance();  // holds the creation time
    pb.clear_provenance();
    EXPECT_EQ(serialize_policy(pa), serialize_policy(pb)) << file;
  }
}

TEST_F(MpiRuns, EvolveGivesTheSingleProcessResultsForOneTwoAndThreeRanks) {
  ASSERT_EQ(sh(kNammkit + " evolve " + config("single", 2)), 0);
  EXPECT_EQ(log_of(run_dir("single")).size(), 5u);
  for (int ranks : {1, 2, 3}) {
    const std::string name = "np" + std::to_string(ranks);
    std::string err;
    ASSERT_EQ(sh(mpirun(ranks) + kNammkit + " evolve " + config(name, 1), &err), 0) << err;
    EXPECT_NE(err.find("distributed run: " + std::to_string(ranks) + " ranks"), std::string::npos) << err;
    expect_same_results(run_dir("single"), run_dir(name));
  }
}

// The RL trainers spread their rollouts (and the gradient sums of the traces each rank keeps) over the
// ranks: PPO on 2 and 3 ranks, and 2 ranks stopped and resumed on 3, give the one-process run.
TEST_F(MpiRuns, PpoGivesTheSingleProcessResultsOnTwoAndThreeRanksAndAcrossAResume) {
  auto rl_config = [&](const std::string& name, int threads) {
    nlohmann::json j =
        nlohmann::json::parse(read_file(std::string(NAMMKIT_SOURCE_DIR) + "/tests/configs/tiny_rl.json"));
    j["model"] = std::string(NAMMKIT_SHARED_DIR) + "/models/stories260K/stories260K.bin";
    j["output_dir"] = run_dir(name);
    j["threads"] = threads;
    j["trainer"] = "ppo";
    j["stages"][0]["generations"] = 3;
    const std::string path = (dir_ / (name + ".json")).string();
    write_file_atomic(path, j.dump(2));
    return path;
  };
  auto results = [](const std::string& run) {
    rl::RlCheckpoint c = rl::load_rl_checkpoint(run + "/latest.ckpt");
    c.progress.elapsed_seconds = 0;
    c.config.clear();
    c.last_log_line.clear();
    return rl::serialize_rl_checkpoint(c);
  };
  ASSERT_EQ(sh(kNammkit + " evolve " + rl_config("single", 2)), 0);
  EXPECT_EQ(log_of(run_dir("single")).size(), 3u);
  for (int ranks : {2, 3}) {
    const std::string name = "np" + std::to_string(ranks);
    std::string err;
    ASSERT_EQ(sh(mpirun(ranks) + kNammkit + " evolve " + rl_config(name, 1), &err), 0) << err;
    EXPECT_EQ(results(run_dir("single")), results(run_dir(name))) << name;
    EXPECT_EQ(log_of(run_dir("single")), log_of(run_dir(name))) << name;
    EXPECT_EQ(read_file(run_dir("single") + "/heldout.jsonl"), read_file(run_dir(name) + "/heldout.jsonl"));
  }
  const std::string resumed = rl_config("resumed", 1);
  ASSERT_EQ(sh(mpirun(2) + kNammkit + " evolve " + resumed + " --stop-after 1"), 130);
  std::string err;
  ASSERT_EQ(sh(mpirun(3) + kNammkit + " evolve " + resumed + " --resume", &err), 0) << err;
  EXPECT_EQ(results(run_dir("single")), results(run_dir("resumed")));
  EXPECT_EQ(log_of(run_dir("single")), log_of(run_dir("resumed")));
}

TEST_F(MpiRuns, ARankThatCannotLoadEndsTheRunAndTheCheckpointResumesWithAnotherRankCount) {
  ASSERT_EQ(sh(kNammkit + " evolve " + config("single", 2)), 0);
  const std::string cfg = config("faulty", 1);
  // Two generations on 2 ranks, then a stop (as Ctrl-C): the checkpoint of generation 2.
  ASSERT_EQ(sh(mpirun(2) + kNammkit + " evolve " + cfg + " --stop-after 2"), 130);
  const std::string before = read_file(run_dir("faulty") + "/latest.ckpt");
  // Rank 1's node lacks the model: one line naming the rank, its host and the file; non-zero exit.
  std::string err;
  const int rc =
      sh(kMpiexec + " --allow-run-as-root --oversubscribe -np 1 " + kNammkit + " evolve " + cfg +
             " --resume : -np 1 env NAMMKIT_SHARED_DIR=/nonexistent " + kNammkit + " evolve " + cfg + " --resume",
         &err);
  EXPECT_NE(rc, 0);
  EXPECT_NE(err.find("error: rank 1 of 2 (host "), std::string::npos) << err;
  EXPECT_NE(err.find("loading: /nonexistent/models/stories260K/stories260K.bin"), std::string::npos) << err;
  EXPECT_EQ(read_file(run_dir("faulty") + "/latest.ckpt"), before);  // untouched
  // Resumed on 3 ranks: the same end as the single process's uninterrupted run.
  ASSERT_EQ(sh(mpirun(3) + kNammkit + " evolve " + cfg + " --resume", &err), 0) << err;
  expect_same_results(run_dir("single"), run_dir("faulty"));
}

TEST_F(MpiRuns, AHungRankTimesOutWithAClearMessageAndTheRunResumes) {
  for (int signal_number : {SIGSTOP, SIGKILL}) {
    const std::string name = signal_number == SIGSTOP ? "hung" : "killed";
    const std::string cfg = config(name, 1, 400);  // long enough to be stopped in the middle
    const std::string pid_file = (dir_ / (name + ".pid")).string();
    const std::string command = kMpiexec + " --allow-run-as-root --oversubscribe -np 1 " + kNammkit + " evolve " + cfg +
                                " --rank-timeout 2 : -np 1 bash -c 'echo $$ > " + pid_file + "; exec " + kNammkit +
                                " evolve " + cfg + " --rank-timeout 2'";
    // Rank 1 is a shell that writes its pid, then becomes nammkit (exec keeps the pid).
    int exit_code = 0;
    std::string err;
    std::thread launcher([&] { exit_code = sh(command, &err, 120); });
    const auto t0 = std::chrono::steady_clock::now();
    auto lines = [&] { return log_of(run_dir(name)).size(); };
    while (lines() < 2 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60))
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_GE(lines(), 2u);
    const pid_t pid = std::stoi(read_file(pid_file));
    ::kill(pid, signal_number);
    const auto signalled = std::chrono::steady_clock::now();
    launcher.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled).count();
    EXPECT_NE(exit_code, 0) << name;
    EXPECT_LT(seconds, 30) << name;
    if (signal_number == SIGSTOP) {  // the coordinator's timeout (a SIGKILL is seen by mpirun first)
      EXPECT_NE(err.find("error: rank 1 of 2 (host "), std::string::npos) << err;
      EXPECT_NE(err.find(") sent nothing for 2 s during generation "), std::string::npos) << err;
    }
    ::kill(pid, SIGKILL);
    // The checkpoint is whole: a resume runs on (one more generation, then a stop).
    std::string resumed;
    EXPECT_EQ(sh(mpirun(2) + kNammkit + " evolve " + cfg + " --resume --stop-after 1", &resumed), 130) << resumed;
    std::printf("%s: exit %d, %.1f s after the signal; stderr:\n%s\n", name.c_str(), exit_code, seconds, err.c_str());
  }
}

TEST_F(MpiRuns, EvalGivesTheSingleProcessTable) {
  ASSERT_EQ(sh(kNammkit + " evolve " + config("policy", 2)), 0);
  const std::string args = " eval --model " + std::string(NAMMKIT_SHARED_DIR) +
                           "/models/stories260K/stories260K.bin --tasks " + std::string(NAMMKIT_SOURCE_DIR) +
                           "/configs/default_eval_tasks.json --policy " + run_dir("policy") +
                           "/policy.nammp --baseline h2o --baseline streaming:64 --threads 1 --json ";
  ASSERT_EQ(sh(kNammkit + args + run_dir("eval1.json")), 0);
  std::string err;
  ASSERT_EQ(sh(mpirun(3) + kNammkit + args + run_dir("eval3.json"), &err), 0) << err;
  auto strip = [](nlohmann::json j) {
    j.erase("device");
    for (auto& row : j["rows"]) {
      row.erase("tokens_per_second");
      for (auto& t : row["tasks"]) t.erase("tokens_per_second");
    }
    return j;
  };
  const auto one = strip(nlohmann::json::parse(read_file(run_dir("eval1.json"))));
  const auto three = strip(nlohmann::json::parse(read_file(run_dir("eval3.json"))));
  EXPECT_EQ(one, three);
  EXPECT_EQ(one["rows"].size(), 4u);
}

}  // namespace
