#include "tools/nammkit/analyze.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "core/file_io.h"
#include "core/text.h"
#include "namm/policy_file.h"
#include "tasks/registry.h"
#include "tools/nammkit/forgetting_report.h"
#include "transformer/loader.h"

namespace nammkit::cli {
namespace {

constexpr const char* kWhere = "nammkit analyze";

void check_options(const AnalyzeOptions& o) {
  if (o.policy_file.empty() == o.baseline.empty()) fail(kWhere, "give exactly one of --policy and --baseline");
  // A bare kind ("h2o") would need a NAMM's cache size to match, as in eval; here there is none.
  if (!o.baseline.empty() && o.baseline != "full" && o.baseline.find(':') == std::string::npos)
    fail(kWhere,
         "--baseline " + o.baseline + ": give a budget, e.g. " + o.baseline + ":0.25 or " + o.baseline + ":128");
  if (o.samples < 1) fail(kWhere, "--samples: expected >= 1, got " + std::to_string(o.samples));
  if (o.out_dir.empty()) fail(kWhere, "--out: missing");
}

// The policy to analyse and its label, at the run's update interval (run_update_interval's rule).
PolicyFile analysed_policy(const AnalyzeOptions& o, std::string& label) {
  PolicyFile file = o.policy_file.empty() ? make_baseline_policy_file(o.baseline) : load_policy(o.policy_file);
  label = o.policy_file.empty() ? o.baseline : "namm(" + base_name(o.policy_file) + ")";
  file.set_update_interval(run_update_interval(o.update_interval, o.policy_file.empty() ? nullptr : &file, nullptr));
  return file;
}

void write_outputs(const AnalyzeOptions& o, const ForgettingRunInfo& info, const AnalyzeResult& r) {
  const std::string title = info.policy + " on " + info.model + " (" + std::to_string(r.traces.size()) + " samples)";
  write_file_atomic(o.out_dir + "/forgetting.jsonl", forgetting_jsonl(info, r.traces, r.summary));
  write_file_atomic(o.out_dir + "/cache_per_layer.svg",
                    cache_per_layer_svg(r.summary, "Cache size per layer: " + title));
  write_file_atomic(o.out_dir + "/kept_by_position.svg",
                    kept_by_position_svg(r.summary, "Kept fraction by token position: " + title));
  write_file_atomic(o.out_dir + "/kept_by_kind.svg",
                    kept_by_kind_svg(r.summary, "Kept fraction by token kind: " + title));
}

}  // namespace

AnalyzeResult run_analyze(const AnalyzeOptions& o) {
  check_options(o);
  AnalyzeResult result;
  const PolicyFile policy = analysed_policy(o, result.policy);
  make_writable_directory(o.out_dir);  // before the runs: a bad --out fails at once
  const Model model = load_model(o.model);
  const std::unique_ptr<Backend> backend = make_backend(model, o.device);
  TaskContext context;
  context.tokenizer = &model.tokenizer;
  const std::vector<Task> tasks = load_task_set(o.tasks_file, context);
  if (tasks.empty()) fail(o.tasks_file, "no tasks");
  RunOptions run;
  run.max_context = o.max_context;
  run.session.prefill_chunk = o.prefill_chunk;
  run.session.float_activations = o.float_activations;

  for (const Task& task : tasks)
    for (size_t i = 0; i < task.samples.size() && i < size_t(o.samples); ++i) {
      SampleTrace trace = trace_sample(*backend, policy, task.samples[i], run);
      trace.task = task.name;
      std::fprintf(stderr, "analyze: %s sample %zu (%s): %zu tokens, %d update rounds, score %.4f\n", task.name.c_str(),
                   i + 1, trace.sample_id.c_str(), trace.tokens.size(),
                   trace.updates.empty() ? 0 : trace.updates.back().step + 1, trace.score);
      result.traces.push_back(std::move(trace));
    }
  const bool judged =
      std::any_of(result.traces.begin(), result.traces.end(), [](const SampleTrace& t) { return t.judged() > 0; });
  if (!judged)
    fail(o.tasks_file, "no policy update ran: every sample is shorter than the update interval (" +
                           std::to_string(policy.update_interval()) + " tokens); give a smaller --interval");
  result.summary = summarise_forgetting(result.traces, o.bins);
  write_outputs(o, {model.config.name, result.policy, o.tasks_file, policy.update_interval()}, result);
  return result;
}

}  // namespace nammkit::cli
