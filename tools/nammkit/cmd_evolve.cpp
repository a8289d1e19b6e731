// nammkit evolve CONFIG.json [--resume]: run a NAMM training experiment, CMA-ES or RL (tools/nammkit/experiment.h).
#include <cstdio>

#include "distributed/mpi_cluster.h"
#include "tools/nammkit/args.h"
#include "tools/nammkit/commands.h"
#include "tools/nammkit/distributed_run.h"
#include "tools/nammkit/experiment.h"
#include "tools/nammkit/thread_limit.h"

namespace nammkit::cli {
namespace {

int evolve_command(const std::vector<std::string>& raw) {
  Args args("evolve", raw, {"--stop-after", "--device", "--rank-timeout"}, {"--help", "--resume"});
  if (args.has("--help") || args.positional().size() != 1) {
    std::fputs(
        "usage: nammkit evolve CONFIG.json [--resume]\n"
        "  Runs the experiment the config describes (see README, \"Config reference\"): CMA-ES, or REINFORCE /\n"
        "  PPO with \"trainer\": \"reinforce\" | \"ppo\".\n"
        "  Writes OUTPUT_DIR/{config.json,log.jsonl,latest.ckpt,best.ckpt,policy.nammp,best_policy.nammp}, and\n"
        "  heldout.jsonl with a \"heldout\" section.\n"
        "  --resume          continue from OUTPUT_DIR/latest.ckpt (bit-for-bit the same as an uninterrupted run)\n"
        "  --stop-after N    stop after N generations (RL: iterations) of this session, as Ctrl-C does (exit 130)\n"
        "  --device D        cpu | cuda | auto (default auto: CUDA when a GPU is present)\n"
        "  --rank-timeout S  under MPI: a rank silent for S seconds ends the run (default 300)\n"
        "Under MPI (mpirun -np N nammkit evolve CONFIG.json) rank 0 owns the files and every rank evaluates a\n"
        "share of each generation; the results equal a single process's.\n",
        args.has("--help") ? stdout : stderr);
    return args.has("--help") ? 0 : 2;
  }
  EvolveOptions options;
  options.resume = args.has("--resume");
  options.stop_after = args.get_int("--stop-after", 0);
  options.device = device_choice(args, "evolve");
  const std::unique_ptr<dist::Cluster> cluster = dist::open_mpi_cluster();
  if (!cluster) return run_evolution(load_experiment_config(args.positional()[0]), options);
  return run_distributed(*cluster, rank_timeout(args, "evolve"), [&](dist::Coordinator& coordinator) {
    if (!coordinator.is_root()) return serve_evolution(args.positional()[0], options, coordinator);
    return run_evolution(load_experiment_config(args.positional()[0]), options, &coordinator);
  });
}

}  // namespace

NAMMKIT_COMMAND("evolve", "train a NAMM with CMA-ES, REINFORCE or PPO from a JSON config (nammkit evolve CONFIG.json)",
                evolve_command);

}  // namespace nammkit::cli
