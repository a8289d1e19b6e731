// nammkit evolve CONFIG.json [--resume]: run a NAMM evolution experiment (tools/nammkit/experiment.h).
#include <cstdio>

#include "tools/nammkit/args.h"
#include "tools/nammkit/commands.h"
#include "tools/nammkit/experiment.h"
#include "tools/nammkit/thread_limit.h"

namespace nammkit::cli {
namespace {

int evolve_command(const std::vector<std::string>& raw) {
  Args args("evolve", raw, {"--stop-after", "--device"}, {"--help", "--resume"});
  if (args.has("--help") || args.positional().size() != 1) {
    std::fputs(
        "usage: nammkit evolve CONFIG.json [--resume]\n"
        "  Runs the experiment the config describes (see README, \"Config reference\").\n"
        "  Writes OUTPUT_DIR/{config.json,log.jsonl,latest.ckpt,best.ckpt,policy.nammp,best_policy.nammp}.\n"
        "  --resume          continue from OUTPUT_DIR/latest.ckpt (bit-for-bit the same as an uninterrupted run)\n"
        "  --stop-after N    stop after N generations of this session, as Ctrl-C does (exit 130)\n"
        "  --device D        cpu | cuda | auto (default auto: CUDA when a GPU is present)\n",
        args.has("--help") ? stdout : stderr);
    return args.has("--help") ? 0 : 2;
  }
  const ExperimentConfig config = load_experiment_config(args.positional()[0]);
  EvolveOptions options;
  options.resume = args.has("--resume");
  options.stop_after = args.get_int("--stop-after", 0);
  options.device = device_choice(args, "evolve");
  return run_evolution(config, options);
}

}  // namespace

NAMMKIT_COMMAND("evolve", "evolve a NAMM with CMA-ES from a JSON config (nammkit evolve CONFIG.json)", evolve_command);

}  // namespace nammkit::cli
