#include "transformer/rope.h"

#include <cmath>
#include <numbers>

namespace nammkit {

std::vector<double> rope_inverse_frequencies(const ModelConfig& c) {
  const int d = c.head_dim;
  double theta = c.rope_theta;
  if (c.rope_scaling == RopeScaling::NtkStatic)
    theta *= std::pow(c.rope_ntk_alpha * c.rope_factor - (c.rope_ntk_alpha - 1.0), double(d) / (d - 2));
  std::vector<double> inv_freq(d / 2);
  for (int i = 0; i < d / 2; ++i) inv_freq[i] = std::pow(theta, -2.0 * i / d);

  if (c.rope_scaling == RopeScaling::Linear) {
    for (double& f : inv_freq) f /= c.rope_factor;
  } else if (c.rope_scaling == RopeScaling::Llama3) {
    const double low_wavelen = c.rope_original_context / c.rope_low_freq_factor;
    const double high_wavelen = c.rope_original_context / c.rope_high_freq_factor;
    for (double& f : inv_freq) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f /= c.rope_factor;  // long wavelengths: fully interpolated
      } else if (wavelen >= high_wavelen) {
        const double smooth = (c.rope_original_context / wavelen - c.rope_low_freq_factor) /
                              (c.rope_high_freq_factor - c.rope_low_freq_factor);
        f = (1.0 - smooth) * f / c.rope_factor + smooth * f;
      }  // short wavelengths: unchanged
    }
  }
  return inv_freq;
}

void apply_rope(float* heads, int n_heads, int head_dim, int64_t position, const std::vector<double>& inv_freq,
                RopeStyle style) {
  const int half = head_dim / 2;
  // Angles in double: position * freq loses digits in f32 at long contexts.
  thread_local std::vector<float> cos_t, sin_t;
  cos_t.resize(half);
  sin_t.resize(half);
  for (int i = 0; i < half; ++i) {
    const double angle = double(position) * inv_freq[i];
    cos_t[i] = static_cast<float>(std::cos(angle));
    sin_t[i] = static_cast<float>(std::sin(angle));
  }
  for (int h = 0; h < n_heads; ++h) {
    float* v = heads + size_t(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      const int a = style == RopeStyle::Interleaved ? 2 * i : i;
      const int b = style == RopeStyle::Interleaved ? 2 * i + 1 : i + half;
      const float x0 = v[a], x1 = v[b];
      v[a] = x0 * cos_t[i] - x1 * sin_t[i];
      v[b] = x0 * sin_t[i] + x1 * cos_t[i];
    }
  }
}

}  // namespace nammkit
