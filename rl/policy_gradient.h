// The policy-gradient estimates of the RL trainers, computed from recorded rollouts (a DecisionTrace
// each, namm/stochastic_keep.h) and an advantage per rollout.
//
// A rollout r took actions a_d with probabilities pi(a_d) = a p + (1 - a)(1 - p), p = sigma(s / tau), at
// D_r decisions. With D = the mean of D_r over the batch of R rollouts and A_r the advantage:
//
//   REINFORCE (Williams 1992) maximises  J = 1/(R D) sum_r A_r sum_d log pi_theta(a_d)
//     dJ/ds_d = A_r (a_d - p_d) / tau / (R D)
//   PPO (Schulman et al. 2017, the clipped surrogate), with rho_d = pi_theta(a_d) / pi_old(a_d):
//     L = 1/(R D) sum_r sum_d min(rho_d A_r, clip(rho_d, 1 - eps, 1 + eps) A_r)
//     dL/ds_d = A_r rho_d (a_d - p_d) / tau / (R D)  where the min picks the unclipped term, else 0
//
// At theta = theta_old every rho is 1 and the two gradients are equal: PPO's first epoch is a REINFORCE
// step. Each decision is its own ratio (the per-token form); the advantage is the rollout's. Dividing by
// the batch's mean decision count rather than each rollout's own keeps the estimate unbiased up to one
// constant per batch. dL/ds is carried to the parameters by the scorer's backward pass (namm/scorer_grad.h).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "namm/bam_scorer.h"
#include "namm/stochastic_keep.h"

namespace nammkit::rl {

struct RolloutTerm {
  const DecisionTrace* trace = nullptr;
  double advantage = 0;
};

struct SurrogateOptions {
  double temperature = 1.0;
  double clip = 0;  // PPO's epsilon; 0 = REINFORCE (log-probability objective, no ratio)
};

struct SurrogateResult {
  std::vector<double> gradient;  // dJ/dtheta, one per scorer parameter
  double objective = 0;          // J (REINFORCE) or L (PPO) at theta
  int64_t decisions = 0;         // sum of D_r
  double clip_fraction = 0;      // PPO: share of decisions whose term was clipped (zero gradient)
  double approx_kl = 0;          // mean over decisions of log pi_old - log pi_theta (0 at theta_old)
};

// One rollout's unscaled sums: its decisions' terms of the objective and of the gradient (before the
// 1 / (R D) scale), the clipped decisions and the sum of log pi_old - log pi_theta. What a rank of a
// distributed run computes for the rollouts whose traces it holds.
struct RolloutGradient {
  std::vector<double> gradient;
  double objective = 0;
  int64_t clipped = 0;
  double kl = 0;
};
RolloutGradient rollout_gradient(const ScorerShape& shape, std::span<const float> params, const RolloutTerm& rollout,
                                 const SurrogateOptions& options);

// rollout_gradient of every term, in parallel, in the order of `rollouts`.
std::vector<RolloutGradient> rollout_gradients(const ScorerShape& shape, std::span<const float> params,
                                               std::span<const RolloutTerm> rollouts, const SurrogateOptions& options);

// The batch's estimate from its rollouts' sums (in rollout order, so the result does not depend on where
// they were computed): `decisions` = sum of D_r over the batch.
SurrogateResult combine_rollout_gradients(std::span<const RolloutGradient> rollouts, int64_t decisions);

// The objective and its gradient at `params` over the rollouts. Rollouts are processed in parallel and
// summed in order, so the result does not depend on the thread schedule.
SurrogateResult surrogate_gradient(const ScorerShape& shape, std::span<const float> params,
                                   std::span<const RolloutTerm> rollouts, const SurrogateOptions& options);

}  // namespace nammkit::rl
