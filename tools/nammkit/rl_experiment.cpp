// `nammkit evolve` with "trainer": "reinforce" | "ppo": after the set-up every trainer shares
// (run_evolution: model, pools, full-cache references, normalisation statistics, on every rank when
// distributed), rl::RlTrainer trains instead of CMA-ES, with its rollouts from NammRolloutSource
// (rl_rollouts.h). Files: as for CMA-ES (latest.ckpt / best.ckpt are RL checkpoints), plus heldout.jsonl.
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "evolution/interrupt.h"
#include "rl/rl_trainer.h"
#include "tools/nammkit/experiment.h"
#include "tools/nammkit/experiment_setup.h"
#include "tools/nammkit/rl_rollouts.h"

namespace nammkit::cli {

int train_rl(const ExperimentConfig& config, const EvolveOptions& options, const EvolutionSetup& setup,
             const ExtraState& extra, const FeatureNormalizer& normalizer, dist::Coordinator* coordinator,
             const std::string& latest) {
  NammRolloutSource source(config, setup, normalizer, coordinator);
  rl::RlTrainerOptions trainer_options;
  trainer_options.run_dir = config.output_dir;
  trainer_options.config = config.canonical;
  for (const auto& stage : config.stages) trainer_options.stages.push_back({stage.generations, stage.name});
  rl::RlTrainer trainer(config.rl, setup.namm.scorer, initial_params(config), source, trainer_options);
  trainer.set_extra_state(extra_to_json(extra));
  const HeldoutEvaluation heldout(config, setup, normalizer, coordinator);
  // The greedy policy's held-out score drives best.ckpt (NaN when not due: no evaluation).
  trainer.set_evaluator([&](std::span<const double> params, int64_t iteration, const std::string&) {
    if (!heldout.due(iteration)) return std::nan("");
    return heldout.evaluate(params, iteration, trainer.progress().model_runs);
  });
  int64_t iterations_this_session = 0;
  double last_eval = std::nan("");
  trainer.set_hook([&](const rl::RlRecord& record) {
    if (std::isfinite(record.eval)) last_eval = record.eval;
    if (options.stop_after > 0 && ++iterations_this_session >= options.stop_after) evo::request_interrupt();
  });
  if (options.resume) trainer.resume(latest);
  heldout.start(options.resume, trainer.progress().iteration);
  const rl::RlStatus status = trainer.run();
  finish_distributed(coordinator, trainer.progress().iteration);

  const rl::RlProgress& progress = trainer.progress();
  const std::string label = std::string(trainer_name(config.trainer));
  write_policy(config.output_dir + "/policy.nammp", config, setup.model, trainer.params(), extra.stats,
               progress.iteration, std::isfinite(last_eval) ? last_eval : 0.0, "final " + label + " parameters");
  if (progress.has_best)
    write_policy(config.output_dir + "/best_policy.nammp", config, setup.model, progress.best_params, extra.stats,
                 progress.best_iteration, progress.best_eval, "best held-out " + label + " parameters");
  const bool interrupted = status == rl::RlStatus::interrupted;
  std::fprintf(stderr, "%s after %lld iteration(s); policy written to %s/policy.nammp\n",
               interrupted ? "interrupted" : "completed", static_cast<long long>(progress.iteration),
               config.output_dir.c_str());
  if (interrupted) {
    std::fprintf(stderr, "interrupted: resume with  nammkit evolve %s --resume\n", config.file.c_str());
    return 130;
  }
  return 0;
}

}  // namespace nammkit::cli
