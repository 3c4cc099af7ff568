#include "rope.h"

#include <cmath>

namespace et {

std::vector<double> rope_frequencies(const et_model_config& c) {
  const long half = c.head_dim / 2;
  std::vector<double> f(half);
  for (long i = 0; i < half; ++i) f[i] = 1.0 / std::pow(c.rope_theta, (2.0 * i) / c.head_dim);
  if (c.rope_scaling_type == ET_ROPE_LINEAR) {
    for (double& x : f) x /= c.rope_factor;
  } else if (c.rope_scaling_type == ET_ROPE_LLAMA3) {
    // Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a linear blend between.
    const double L = c.rope_original_max_position;
    const double low_wavelength = L / c.rope_high_freq_factor, high_wavelength = L / c.rope_low_freq_factor;
    for (double& x : f) {
      const double wavelength = 2.0 * M_PI / x;
      if (wavelength < low_wavelength) continue;
      if (wavelength > high_wavelength) {
        x /= c.rope_factor;
      } else {
        const double s = (L / wavelength - c.rope_low_freq_factor) / (c.rope_high_freq_factor - c.rope_low_freq_factor);
        x = (1.0 - s) * x / c.rope_factor + s * x;
      }
    }
  }
  return f;
}

void RopeTables::ensure(long positions) {
  if (positions <= positions_) return;
  const long h = half();
  cos_.resize(positions * h);
  sin_.resize(positions * h);
  for (long p = positions_; p < positions; ++p) {
    for (long i = 0; i < h; ++i) {
      const double angle = static_cast<double>(p) * frequencies_[i];
      cos_[p * h + i] = static_cast<float>(std::cos(angle));
      sin_[p * h + i] = static_cast<float>(std::sin(angle));
    }
  }
  positions_ = positions;
}

}  // namespace et
