// nammkit eval: policies side by side on a model and a task set (tools/nammkit/evaluation.h).
#include <cstdio>
#include <memory>

#include "core/file_io.h"
#include "distributed/mpi_cluster.h"
#include "tools/nammkit/args.h"
#include "tools/nammkit/commands.h"
#include "tools/nammkit/distributed_run.h"
#include "tools/nammkit/evaluation.h"
#include "tools/nammkit/thread_limit.h"

namespace nammkit::cli {
namespace {

const char* kEvalHelp =
    "usage: nammkit eval --model M --tasks TASKS.json [--policy P.nammp]... [--baseline SPEC]... [options]\n"
    "  --policy FILE[:F]    a policy file (repeatable); each runs at its own update interval unless --interval.\n"
    "                       With :F (a NAMM, F in (0, 1]) every head keeps its top F x tokens seen by score\n"
    "                       instead of the threshold rule: the NAMM at a fixed budget, like the baselines\n"
    "  --baseline SPEC      full | streaming[:B[,sinks=4]] | h2o[:B[,heavy=0.5]] | l2[:B] | random[:B[,seed=1]]\n"
    "                       B = tokens (512) or a fraction of the tokens seen (0.25); without B the budget is\n"
    "                       the mean cache fraction the first --policy used (equal mean cache size)\n"
    "  --interval N         every policy's update interval (default: each file's own; baselines the first\n"
    "                       policy's, else 512)\n"
    "  --chunk N            prefill chunk (default 128)\n"
    "  --float-activations  quantised weights times f32 activations (exact to f32; default: 8-bit activations\n"
    "                       as llama.cpp, several times faster, logits off by ~0.25 rms on SmolLM2)\n"
    "  --max-context N      tokens a prompt may span (default: the model's context)\n"
    "  --json FILE          also write the results as JSON\n"
    "  --threads N          worker threads (default: all cores)\n"
    "  --rank-timeout S     under MPI: a rank silent for S seconds ends the run (default 300)\n"
    "Under MPI (mpirun -np N nammkit eval ...) every row's samples are spread over the ranks; rank 0 prints.\n";

int eval_command(const std::vector<std::string>& raw) {
  Args args("eval", raw,
            {"--model", "--tasks", "--policy", "--baseline", "--interval", "--chunk", "--max-context", "--json",
             "--threads", "--device", "--rank-timeout"},
            {"--help", "--float-activations"});
  if (args.has("--help")) {
    std::fputs(kEvalHelp, stdout);
    std::fputs(kDeviceHelp, stdout);
    return 0;
  }
  const auto threads = thread_limit(args);
  EvalOptions options;
  options.model = args.require("--model");
  options.tasks_file = args.require("--tasks");
  options.policy_files = args.get_all("--policy");
  options.baselines = args.get_all("--baseline");
  options.update_interval = args.get_int("--interval", 0);
  options.prefill_chunk = args.get_int("--chunk", 128);
  options.float_activations = args.has("--float-activations");
  options.max_context = args.get_int("--max-context", 0);
  options.device = device_choice(args, "eval");
  auto report = [&](dist::Coordinator* coordinator) {
    const EvalReport result = run_eval(options, coordinator);
    std::fputs(result.table().c_str(), stdout);
    if (args.has("--json")) write_file_atomic(args.get("--json"), result.to_json().dump(2) + "\n");
    return 0;
  };
  const std::unique_ptr<dist::Cluster> cluster = dist::open_mpi_cluster();
  if (!cluster) return report(nullptr);
  return run_distributed(*cluster, rank_timeout(args, "eval"), [&](dist::Coordinator& coordinator) {
    return coordinator.is_root() ? report(&coordinator) : serve_eval(options, coordinator);
  });
}

}  // namespace

NAMMKIT_COMMAND("eval", "evaluate policies side by side on held-out tasks (--model M --tasks T.json --policy P)",
                eval_command);

}  // namespace nammkit::cli
