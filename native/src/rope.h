// Rotary position embedding tables (docs/engine.md, "RoPE"): angles, cosines and sines in
// float64, rounded once to float32, with linear and Llama-3 frequency scaling.
#pragma once

#include <vector>

#include "../include/expertune.h"
#include "common.h"

namespace et {

std::vector<double> rope_frequencies(const et_model_config& config);

class RopeTables {
 public:
  explicit RopeTables(const et_model_config& config) : frequencies_(rope_frequencies(config)) {}
  // Makes positions [0, positions) available.
  void ensure(long positions);
  const float* cos(long position) const { return cos_.data() + position * half(); }
  const float* sin(long position) const { return sin_.data() + position * half(); }
  long half() const { return static_cast<long>(frequencies_.size()); }

 private:
  std::vector<double> frequencies_;
  std::vector<float> cos_, sin_;
  long positions_ = 0;
};

}  // namespace et
