// nammkit analyze: what a memory policy forgets (tools/nammkit/analyze.h).
#include <cstdio>

#include "tools/nammkit/analyze.h"
#include "tools/nammkit/args.h"
#include "tools/nammkit/commands.h"
#include "tools/nammkit/forgetting_report.h"
#include "tools/nammkit/thread_limit.h"

namespace nammkit::cli {
namespace {

const char* kAnalyzeHelp =
    "usage: nammkit analyze (--policy P.nammp | --baseline SPEC) --model M --task TASKS.json --out DIR [options]\n"
    "  Runs the first samples of each task under the policy and records, per layer and KV head, which\n"
    "  token positions it keeps at every update. Writes into DIR:\n"
    "    forgetting.jsonl      every update's kept positions, every token's kind and eviction times\n"
    "    cache_per_layer.svg   cache size per layer along the sequence\n"
    "    kept_by_position.svg  kept fraction at the end by relative token position\n"
    "    kept_by_kind.svg      kept fraction at the end by token kind (punctuation, numbers, words, ...)\n"
    "  --policy FILE        a policy file\n"
    "  --baseline SPEC      a baseline with a budget: streaming:64,sinks=4 | h2o:0.25 | l2:128 | random:0.5 | full\n"
    "  --task FILE          a task-set JSON, as eval --tasks (--tasks is accepted too)\n"
    "  --samples N          the first N samples of each task (default 1)\n"
    "  --interval N         the update interval (default: the policy file's own; baselines 512)\n"
    "  --bins N             relative-position bins (default 20)\n"
    "  --chunk N            prefill chunk (default 128)\n"
    "  --float-activations  quantised weights times f32 activations (see eval --help)\n"
    "  --max-context N      tokens a prompt may span (default: the model's context)\n"
    "  --threads N          worker threads (default: all cores)\n";

int analyze_command(const std::vector<std::string>& raw) {
  Args args("analyze", raw,
            {"--model", "--task", "--tasks", "--policy", "--baseline", "--samples", "--out", "--interval", "--bins",
             "--chunk", "--max-context", "--threads", "--device"},
            {"--help", "--float-activations"});
  if (args.has("--help")) {
    std::fputs(kAnalyzeHelp, stdout);
    std::fputs(kDeviceHelp, stdout);
    return 0;
  }
  const auto threads = thread_limit(args);
  AnalyzeOptions options;
  options.policy_file = args.get("--policy");
  options.baseline = args.get("--baseline");
  options.model = args.require("--model");
  options.tasks_file = args.has("--tasks") ? args.get("--tasks") : args.require("--task");
  options.out_dir = args.require("--out");
  options.samples = args.get_int("--samples", 1, 1);
  options.update_interval = args.get_int("--interval", 0, 1);
  options.bins = args.get_int("--bins", 20, 1, 1000);
  options.prefill_chunk = args.get_int("--chunk", 128, 1);
  options.max_context = args.get_int("--max-context", 0, 0);
  options.float_activations = args.has("--float-activations");
  options.device = device_choice(args, "analyze");
  const AnalyzeResult result = run_analyze(options);
  std::printf("policy %s: %zu sample(s); written to %s/\n", result.policy.c_str(), result.traces.size(),
              options.out_dir.c_str());
  std::fputs(forgetting_table(result.summary).c_str(), stdout);
  return 0;
}

}  // namespace

NAMMKIT_COMMAND(
    "analyze", "what a policy forgets: kept tokens per layer and head over time, plots (--policy P --model M --task T)",
    analyze_command);

}  // namespace nammkit::cli
