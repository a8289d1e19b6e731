// Adam (Kingma & Ba 2015, arXiv 1412.6980, Algorithm 1) as gradient *ascent* on a maximised objective,
// with optional global-norm clipping of the gradient before the step. Plain state, so a checkpoint holds
// it exactly (double throughout).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace nammkit::rl {

struct AdamSettings {
  double learning_rate = 0.01;  // alpha
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  double max_grad_norm = 1.0;  // clip the gradient to this L2 norm; 0 = no clipping
};
// Throws nammkit::Error("<where>: <field>: ...") on a value out of range.
void validate(const AdamSettings& settings, const std::string& where);

struct AdamState {
  std::vector<double> m;  // first moment
  std::vector<double> v;  // second raw moment
  int64_t t = 0;          // steps taken
};

struct AdamStep {
  double grad_norm = 0;  // before clipping
  bool clipped = false;
};

// One step: params += alpha * m_hat / (sqrt(v_hat) + eps) for the (clipped) gradient `grad` of the
// objective. Sizes the state on the first call; a size mismatch later is an Error.
AdamStep adam_ascent_step(const AdamSettings& settings, AdamState& state, std::span<double> params,
                          std::span<const double> grad);

}  // namespace nammkit::rl
