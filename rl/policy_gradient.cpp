#include "rl/policy_gradient.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "namm/scorer_grad.h"

namespace nammkit::rl {

// One rollout's terms, summed in block order.
RolloutGradient rollout_gradient(const ScorerShape& shape, std::span<const float> params, const RolloutTerm& r,
                                 const SurrogateOptions& o) {
  if (!r.trace) fail("rollout_gradient", "a rollout without a trace");
  RolloutGradient out;
  out.gradient.assign(static_cast<size_t>(shape.n_params()), 0.0);
  std::vector<float> scores;
  std::vector<double> upstream;
  const double A = r.advantage, tau = o.temperature;
  for (const DecisionBlock& b : r.trace->blocks) {
    if (b.n <= 1) continue;  // only the newest token: no decision
    scores.resize(static_cast<size_t>(b.n));
    score_tokens(shape, params, b.features_NxF.data(), b.n, scores.data());
    upstream.assign(static_cast<size_t>(b.n), 0.0);
    for (int j = 0; j + 1 < b.n; ++j) {
      const double p = keep_probability(scores[j], tau);
      const double a = b.keep_N[j];
      const double pi = a ? p : 1.0 - p, pi_old = a ? b.keep_prob_N[j] : 1.0 - b.keep_prob_N[j];
      const double dlogpi_ds = (a - p) / tau;  // d log pi(a) / ds for pi = sigma(s / tau)^a (1 - sigma)^(1-a)
      out.kl += std::log(pi_old) - std::log(pi);
      if (o.clip <= 0) {
        out.objective += A * std::log(pi);
        upstream[j] = A * dlogpi_ds;
        continue;
      }
      const double rho = pi / pi_old;
      const double clipped = std::clamp(rho, 1.0 - o.clip, 1.0 + o.clip);
      out.objective += std::min(rho * A, clipped * A);
      // The min takes the clipped (constant) term when the ratio has moved past the clip in the
      // direction the advantage favours; its gradient is then 0.
      if ((A >= 0 && rho > 1.0 + o.clip) || (A < 0 && rho < 1.0 - o.clip)) {
        ++out.clipped;
        continue;
      }
      upstream[j] = A * rho * dlogpi_ds;  // d(rho A)/ds = A rho d log pi / ds
    }
    scorer_backward(shape, params, b.features_NxF.data(), b.n, upstream.data(), out.gradient.data());
  }
  return out;
}

std::vector<RolloutGradient> rollout_gradients(const ScorerShape& shape, std::span<const float> params,
                                               std::span<const RolloutTerm> rollouts, const SurrogateOptions& options) {
  std::vector<RolloutGradient> out(rollouts.size());
  tbb::parallel_for(size_t{0}, rollouts.size(),
                    [&](size_t i) { out[i] = rollout_gradient(shape, params, rollouts[i], options); });
  return out;
}

SurrogateResult combine_rollout_gradients(std::span<const RolloutGradient> rollouts, int64_t decisions) {
  SurrogateResult result;
  result.decisions = decisions;
  if (rollouts.empty() || decisions == 0) return result;
  result.gradient.assign(rollouts.front().gradient.size(), 0.0);
  const double scale = 1.0 / static_cast<double>(decisions);  // 1 / (R D) with D the mean of D_r
  int64_t clipped = 0;
  double kl = 0;
  for (const RolloutGradient& s : rollouts) {  // in rollout order: deterministic
    if (s.gradient.size() != result.gradient.size()) fail("combine_rollout_gradients", "gradients of different sizes");
    for (size_t k = 0; k < s.gradient.size(); ++k) result.gradient[k] += s.gradient[k];
    result.objective += s.objective;
    clipped += s.clipped;
    kl += s.kl;
  }
  for (double& g : result.gradient) g *= scale;
  result.objective *= scale;
  result.clip_fraction = static_cast<double>(clipped) / static_cast<double>(decisions);
  result.approx_kl = kl / static_cast<double>(decisions);
  return result;
}

SurrogateResult surrogate_gradient(const ScorerShape& shape, std::span<const float> params,
                                   std::span<const RolloutTerm> rollouts, const SurrogateOptions& options) {
  if (!(options.temperature > 0)) fail("surrogate_gradient", "temperature: expected > 0");
  int64_t decisions = 0;
  for (const RolloutTerm& r : rollouts) {
    if (!r.trace) fail("surrogate_gradient", "a rollout without a trace");
    decisions += r.trace->decisions();
  }
  SurrogateResult result = combine_rollout_gradients(rollout_gradients(shape, params, rollouts, options), decisions);
  if (result.gradient.empty()) result.gradient.assign(static_cast<size_t>(shape.n_params()), 0.0);
  return result;
}

}  // namespace nammkit::rl
