#include "rl/adam.h"

#include <cmath>

#include "core/error.h"

namespace nammkit::rl {

void validate(const AdamSettings& s, const std::string& where) {
  auto check = [&](bool ok, const char* field, double value, const char* expected) {
    if (!ok) fail(where, std::string(field) + ": expected " + expected + ", got " + std::to_string(value));
  };
  check(s.learning_rate > 0 && std::isfinite(s.learning_rate), "learning_rate", s.learning_rate, "a finite value > 0");
  check(s.beta1 >= 0 && s.beta1 < 1, "beta1", s.beta1, "a value in [0, 1)");
  check(s.beta2 >= 0 && s.beta2 < 1, "beta2", s.beta2, "a value in [0, 1)");
  check(s.epsilon > 0 && std::isfinite(s.epsilon), "epsilon", s.epsilon, "a finite value > 0");
  check(s.max_grad_norm >= 0 && std::isfinite(s.max_grad_norm), "max_grad_norm", s.max_grad_norm,
        "a finite value >= 0");
}

AdamStep adam_ascent_step(const AdamSettings& s, AdamState& state, std::span<double> params,
                          std::span<const double> grad) {
  const size_t n = params.size();
  if (grad.size() != n)
    fail("adam", "gradient: " + std::to_string(grad.size()) + " values for " + std::to_string(n) + " parameters");
  if (state.t == 0 && state.m.empty()) {
    state.m.assign(n, 0.0);
    state.v.assign(n, 0.0);
  }
  if (state.m.size() != n || state.v.size() != n)
    fail("adam", "state: sized for " + std::to_string(state.m.size()) + " parameters, not " + std::to_string(n));

  AdamStep step;
  double sq = 0;
  for (double g : grad) sq += g * g;
  step.grad_norm = std::sqrt(sq);
  if (!std::isfinite(step.grad_norm)) fail("adam", "gradient: not finite");
  double scale = 1.0;
  if (s.max_grad_norm > 0 && step.grad_norm > s.max_grad_norm) {
    scale = s.max_grad_norm / step.grad_norm;
    step.clipped = true;
  }
  ++state.t;
  // Bias corrections 1 - beta^t (Algorithm 1: m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)).
  const double c1 = 1.0 - std::pow(s.beta1, static_cast<double>(state.t));
  const double c2 = 1.0 - std::pow(s.beta2, static_cast<double>(state.t));
  for (size_t i = 0; i < n; ++i) {
    const double g = grad[i] * scale;
    state.m[i] = s.beta1 * state.m[i] + (1 - s.beta1) * g;      // m_t = beta1 m_{t-1} + (1 - beta1) g
    state.v[i] = s.beta2 * state.v[i] + (1 - s.beta2) * g * g;  // v_t = beta2 v_{t-1} + (1 - beta2) g^2
    params[i] += s.learning_rate * (state.m[i] / c1) / (std::sqrt(state.v[i] / c2) + s.epsilon);
  }
  return step;
}

}  // namespace nammkit::rl
