// `nammkit eval`: zero-shot evaluation of memory policies (policy files or baselines) on any model
// and task set, side by side, normalised by the full cache on the same prompts.
//
// Every row runs every sample of every task (samples in parallel on TBB, each with its own policy
// instance and session, on the chosen device; under MPI spread over the ranks too). The full cache always runs first:
// it is the normalisation of each task (score / max(full score, epsilon)). Baselines given without a budget ("h2o",
// "l2", "streaming", "random") get the mean cache fraction that the first NAMM policy actually used, so they are
// compared at the same mean cache size.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "distributed/coordinator.h"
#include "tasks/fitness.h"
#include "transformer/backend.h"

namespace nammkit::cli {

struct EvalOptions {
  std::string model;
  std::string tasks_file;  // a task-set JSON (tasks/registry.h); use split "heldout"
  std::vector<std::string> policy_files;
  std::vector<std::string> baselines;  // "h2o:0.25", "streaming:256,sinks=4", or a bare kind to match NAMM's cache
  int update_interval = 0;             // --interval (0: not given), by run_update_interval's rule
  int prefill_chunk = 128;
  bool float_activations = false;  // SessionOptions::float_activations (exact f32 products, slower)
  int max_context = 0;             // 0 = the model's context
  double epsilon = 0.01;
  DeviceChoice device;  // where the samples run (auto: CUDA when a GPU is present)
};

struct TaskRow {
  std::string task;
  int samples = 0;
  double score = 0;       // mean metric over the samples
  double normalised = 0;  // score / max(full-cache score, epsilon)
  double mean_cache = 0;  // tokens per KV head after each run, mean over heads and samples
  int max_cache = 0;
  std::vector<double> mean_cache_per_layer;
  std::vector<int> max_cache_per_layer;
  double tokens_per_second = 0;
  std::vector<Outcome> outcomes;  // per sample, for the normalisation (tasks/fitness)
};

struct PolicyRow {
  std::string label;  // "full", "namm(policy.nammp)", "h2o:0.31" ...
  std::vector<TaskRow> tasks;
  double mean_normalised = 0;
  double mean_cache = 0;      // mean over all samples of all tasks
  double cache_fraction = 0;  // mean cache / full cache's mean cache
  double tokens_per_second = 0;
};

struct EvalReport {
  std::string model;
  std::string device;           // the backend's name: "cpu", "cuda:0 NVIDIA H200"
  std::vector<PolicyRow> rows;  // rows[0] is the full cache
  nlohmann::json to_json() const;
  std::string table() const;  // the side-by-side text table
};

// `coordinator`: the distributed run this process is rank 0 of (every row's samples are spread over the
// ranks, balanced by expected tokens), or null for a single process. The report is the same either way,
// except for the timings.
EvalReport run_eval(const EvalOptions& options, dist::Coordinator* coordinator = nullptr);

// The other ranks of a distributed eval: load the model and tasks, then run their share of every row.
int serve_eval(const EvalOptions& options, dist::Coordinator& coordinator);

}  // namespace nammkit::cli
