// The JSON experiment config of `nammkit evolve` (configs/*.json), parsed and validated.
//
// Every field is checked; errors name the file and the field path, unknown fields are errors.
// Relative paths are taken from the working directory; a leading "$SHARED/" stands for the shared
// data folder ($NAMMKIT_SHARED_DIR, else ../shared). The README's "Config reference" lists every field.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "evolution/cmaes_settings.h"
#include "namm/bam_scorer.h"
#include "namm/selection.h"
#include "rl/rl_trainer.h"
#include "transformer/session.h"

namespace nammkit::cli {

struct StageConfig {
  std::string name;
  int generations = 0;
  int prompts_per_generation = 0;  // sampled per generation from the stage's prompts; 0 = all
  nlohmann::json tasks;            // a task set for tasks/registry.h
};

enum class TrainerKind : uint8_t { Cmaes, Reinforce, Ppo };

// How a generation's (member, prompt) sequences run (config "batching"). On the CPU both give the same
// results bit for bit (on CUDA, up to the GEMMs' summation order: kernels/cuda_lockstep.h), so the
// choice is not part of the experiment's identity (a run may resume with another).
enum class BatchingMode : uint8_t {
  Auto,      // Lockstep on the CPU when the model reads at least kLockstepAutoBytes per token, else Members
  Lockstep,  // lockstep batches: one forward pass per step for all sequences (transformer/lockstep.h on the
             // CPU, kernels/cuda_lockstep.h on CUDA)
  Members,   // every sequence its own session, TBB across sequences
};
struct BatchingConfig {
  BatchingMode mode = BatchingMode::Auto;
  int sequences = 64;  // Lockstep: sequences in flight (one thread each)
};
const char* trainer_name(TrainerKind kind);  // "cmaes", "reinforce", "ppo"

struct ExperimentConfig {
  std::string file;  // where it was read from (for error messages)
  std::string name;
  uint64_t seed = 0;
  std::string model;  // resolved path
  std::string output_dir;
  int threads = 0;  // 0 = all cores
  BatchingConfig batching;
  SessionOptions session;
  int max_context = 0;  // tokens a prompt may span; 0 = the model's context
  ScorerKind scorer = ScorerKind::Bam;
  SelectionOptions selection;
  // The initial parameters every trainer starts from (initial_params()): N(0, initial_scale^2) draws
  // seeded by initial_seed, with the read-out bias (the last parameter) set to initial_bias.
  double initial_bias = 0;
  double initial_scale = 0;
  uint64_t initial_seed = 0;
  TrainerKind trainer = TrainerKind::Cmaes;
  evo::CmaesSettings cmaes;         // n is filled from the scorer's parameter count
  rl::RlSettings rl;                // trainer reinforce / ppo
  double cache_weight = 0;          // fitness += cache_weight * (1 - cache / full cache)
  double epsilon = 0.01;            // floor of a task's full-cache score
  int norm_samples = 0;             // prompts of stage 1 for the normalisation pass; 0 = all
  std::vector<StageConfig> stages;  // RL trainers: "generations" counts iterations
  int heldout_every = 0;            // evaluate the current policy on the held-out tasks every N; 0 = never
  nlohmann::json heldout_tasks;     // a task set for tasks/registry.h
  std::string canonical;            // the config without output_dir, as canonical JSON (hashed, checked on resume)
  std::string source;               // the whole config, pretty-printed (copied to OUTPUT_DIR/config.json)

  std::string hash() const;  // hex FNV-1a of `canonical`
};

// "$SHARED/x" -> <shared>/x; anything else unchanged.
std::string expand_shared(const std::string& path);

// The initial parameters of config (every trainer's starting point; CMA-ES's mean0).
std::vector<double> initial_params(const ExperimentConfig& config);

ExperimentConfig parse_experiment_config(const nlohmann::json& json, const std::string& file);
ExperimentConfig load_experiment_config(const std::string& path);

}  // namespace nammkit::cli
