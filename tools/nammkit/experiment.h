// `nammkit evolve`: a whole NAMM evolution experiment from an ExperimentConfig.
//
//  1. load the model and build every stage's task set (tasks/registry.h);
//  2. full-cache reference outcomes of every prompt, computed once and cached on disk
//     (OUTPUT_DIR/full_cache_scores.json);
//  3. normalisation statistics from a full-cache pass over stage 1's prompts (as the reference's
//     iteration-0 pass), frozen and stored in every checkpoint;
//  4. CMA-ES generations (evolution/trainer.h): members x prompts evaluated in parallel on TBB, the
//     same prompts for every member of a generation; fitness = mean over tasks of score / full-cache
//     score (+ the optional cache-size term); the mean is evaluated on the same prompts every
//     generation and drives best.ckpt;
//  5. OUTPUT_DIR/policy.nammp (the final mean) and best_policy.nammp (the best evaluated mean).
// Files: config.json, log.jsonl, latest.ckpt, best.ckpt, full_cache_scores.json, *.nammp.
//
// Under MPI (`mpirun -np N nammkit evolve CONFIG`) rank 0 does all of the above and owns every file;
// steps 2-4 hand their runs to all ranks (distributed/coordinator.h), which load the same model and
// tasks (serve_evolution) and evaluate a share balanced by expected tokens. The fitness values, the
// CMA-ES state and the policy are bit-for-bit those of a single process.
#pragma once
#include <string>

#include "distributed/coordinator.h"
#include "tools/nammkit/experiment_config.h"
#include "transformer/backend.h"

namespace nammkit::cli {

struct EvolveOptions {
  bool resume = false;  // continue from OUTPUT_DIR/latest.ckpt, bit-for-bit
  int stop_after = 0;   // > 0: stop (as on Ctrl-C, checkpoint written) after this many generations
  DeviceChoice device;  // where the population's runs go (auto: CUDA when a GPU is present)
};

// Returns the process exit code: 0 completed (or CMA-ES stopped), 130 interrupted (checkpoint written).
// `coordinator`: the distributed run this process is rank 0 of, or null for a single process.
int run_evolution(const ExperimentConfig& config, const EvolveOptions& options,
                  dist::Coordinator* coordinator = nullptr);

// The other ranks of a distributed run: load the config, model and tasks, then answer rank 0's jobs
// until it stops. A failure while loading is reported by rank 0 (naming this rank and its host).
int serve_evolution(const std::string& config_path, const EvolveOptions& options, dist::Coordinator& coordinator);

}  // namespace nammkit::cli
