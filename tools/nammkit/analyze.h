// `nammkit analyze`: what a memory policy forgets, as the NAMM paper analyses it. Runs the first
// samples of each task of a task set under one policy (a policy file or a baseline spec), records
// which token positions every (layer, KV head) keeps at each update (forgetting.h), summarises them
// (forgetting_summary.h) and writes forgetting.jsonl, cache_per_layer.svg, kept_by_position.svg and
// kept_by_kind.svg into the output folder (forgetting_report.h describes them).
#pragma once
#include <string>
#include <vector>

#include "tools/nammkit/forgetting.h"
#include "tools/nammkit/forgetting_summary.h"
#include "transformer/backend.h"

namespace nammkit::cli {

struct AnalyzeOptions {
  std::string model;
  std::string tasks_file;   // a task-set JSON (tasks/registry.h), as `nammkit eval --tasks`
  std::string policy_file;  // either this ...
  std::string baseline;     // ... or a baseline spec with a budget ("h2o:0.25", "streaming:64,sinks=4", "full")
  int samples = 1;          // the first this many samples of each task
  std::string out_dir;
  int update_interval = 0;  // --interval (0: the policy file's own; baselines kDefaultUpdateInterval)
  int prefill_chunk = 128;
  bool float_activations = false;
  int max_context = 0;  // 0 = the model's context
  int bins = 20;        // relative-position bins of kept_by_position
  DeviceChoice device;
};

struct AnalyzeResult {
  std::string policy;  // the label: "namm(policy.nammp)", "h2o:0.25"
  std::vector<SampleTrace> traces;
  ForgettingSummary summary;
};

// Checks the options that need no file (Error "nammkit analyze: --flag: problem"), runs, writes the
// files into out_dir (created when missing) and reports progress on stderr.
AnalyzeResult run_analyze(const AnalyzeOptions& options);

}  // namespace nammkit::cli
