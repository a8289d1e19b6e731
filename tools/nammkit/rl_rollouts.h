// The rollouts of the RL trainers on a real model: an rl::RolloutSource over an experiment's prompt pools.
//
// Rollouts run on the population-evaluation machinery (evolution/population_eval.h): an iteration is an
// EvalRequest whose columns are samples_per_prompt copies of the current parameters, so item (k, prompt)
// is the k-th stochastic run of that prompt, run on TBB threads with run_here. Its reward is the prompt's
// share of the CMA-ES fitness (normalised score plus the cache term, tasks/fitness.h); its decisions are
// recorded in a DecisionTrace, whose seed is a function of (seed, iteration, prompt, k) only.
//
// Distributed (a Coordinator): the root hands each rank a share of the items, balanced by expected tokens
// (job "rl_rollouts"); each rank keeps the traces of its items and returns their rewards. For every
// Adam step the root then asks each rank for the gradient sums of its items (job "rl_gradients") and
// combines them in item order, so the update is bit-for-bit the one-process update.
#pragma once
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "distributed/coordinator.h"
#include "evolution/population_eval.h"
#include "rl/rl_trainer.h"
#include "tools/nammkit/experiment_setup.h"

namespace nammkit::cli {

class NammRolloutSource : public rl::RolloutSource {
 public:
  // `coordinator`: the distributed run this rank belongs to (every rank builds one), or null. On the root
  // the constructor registers the two jobs; workers register serve_rollouts / serve_gradients themselves
  // (before serve(), while the source can only be built once the root has sent the statistics).
  NammRolloutSource(const ExperimentConfig& config, const EvolutionSetup& setup, const FeatureNormalizer& normalizer,
                    dist::Coordinator* coordinator);

  std::vector<rl::Rollout> rollouts(std::span<const double> params, int64_t iteration, const std::string& task_set,
                                    bool* interrupted) override;
  std::vector<rl::RolloutGradient> gradients(const ScorerShape& shape, std::span<const float> params,
                                             std::span<const rl::Rollout> batch, std::span<const size_t> used,
                                             std::span<const double> advantages,
                                             const rl::SurrogateOptions& options) override;

  // A rank's share of the jobs "rl_rollouts" and "rl_gradients" (payload in, reply out).
  std::string serve_rollouts(const std::string& payload);
  std::string serve_gradients(const std::string& payload);

 private:
  // Runs `items` of a request here, keeping their traces in held_; outcomes in the order of `items`.
  std::vector<evo::ItemOutcome> run_here(const evo::EvalRequest& request, std::span<const size_t> items,
                                         bool* interrupted);
  evo::EvalRequest request_for(std::span<const double> params, int64_t iteration, const std::string& task_set,
                               Eigen::MatrixXd& columns);
  uint64_t rollout_seed(int64_t iteration, const evo::PromptContext& ctx) const;
  evo::PromptScore rollout(const StagePool& pool, std::span<const double> params, const evo::PromptContext& ctx);

  const ExperimentConfig& config_;
  const EvolutionSetup& setup_;
  const FeatureNormalizer& normalizer_;
  dist::Coordinator* coordinator_;
  std::map<std::string, std::unique_ptr<evo::TbbPopulationEvaluator>> samplers_;
  // The current request's state, read by the concurrent rollouts.
  PromptWeights weights_;
  int64_t iteration_ = 0;
  size_t pool_size_ = 1;                  // of the current request's pool
  std::vector<DecisionTrace> slots_;      // [sample][pool entry] of the current request
  std::map<size_t, DecisionTrace> held_;  // the traces of the items run here this iteration, by item
};

}  // namespace nammkit::cli
