// Running a list of whole samples (prompts) under one policy: the full-cache references of `evolve`
// and every row of `nammkit eval`. Here on TBB threads, or spread over the ranks of a distributed run
// (distributed/), each rank taking a share balanced by expected tokens; the results are the same.
#pragma once
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "distributed/coordinator.h"
#include "namm/policy_file.h"
#include "tasks/runner.h"
#include "tasks/sample.h"
#include "transformer/backend.h"

namespace nammkit::cli {

// The samples of a run, by index: the same list on every rank.
using SampleAt = std::function<const Sample&(int index)>;

// Expected tokens of one run of a sample (prompt, truncated to the context, plus the generation).
double expected_tokens(const Sample& sample, int max_context);

class SampleRunner {
 public:
  // `base`: the run options; a policy file's session settings replace base's (apply_policy_session).
  // `coordinator`: null for a single process. On a distributed run every rank must call serve() with
  // the same job name, samples and options before the root runs anything.
  SampleRunner(const Backend& backend, SampleAt samples, RunOptions base, dist::Coordinator* coordinator,
               std::string job);

  // Root (or single process): runs samples[indices] under `policy` (null: the full cache) and returns
  // the results in the order of `indices`. `what` names the work in messages.
  std::vector<RunResult> run(std::span<const int> indices, const PolicyFile* policy, const std::string& what);

  // Every rank of a distributed run: registers the job's handler.
  void serve();

 private:
  std::vector<RunResult> run_here(std::span<const int> indices, const PolicyFile* policy) const;

  const Backend& backend_;
  SampleAt samples_;
  RunOptions base_;
  dist::Coordinator* coordinator_;
  std::string job_;
};

}  // namespace nammkit::cli
