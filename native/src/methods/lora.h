// Plain LoRA (docs/engine.md, "LoRA"): y = x Wᵀ + s · (drop(x) Aᵀ) Bᵀ on each targeted projection.
// The frozen product x Wᵀ is the model's; this adds the low-rank branch and its gradients.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "../../include/expertune.h"
#include "../common.h"

namespace et {

struct LoraSite {
  long layer, projection, in, out;
  Tensor A;  // [rank, in]
  Tensor B;  // [out, rank]
};

class LoraAdapter {
 public:
  // in_out[p] = {in, out} of projection p.
  LoraAdapter(const et_lora_config& config, long layers, const std::array<std::array<long, 2>, ET_NUM_PROJ>& in_out);

  const et_lora_config& config() const { return config_; }
  long rank() const { return config_.rank; }
  float scaling() const { return scaling_; }
  // The site of (layer, projection), or nullptr when that projection is not targeted.
  LoraSite* site(long layer, long projection) { return sites_[layer * ET_NUM_PROJ + projection].get(); }
  std::vector<LoraSite*> sites();
  static std::string tensor_name(long layer, long projection, bool is_a);

  // y[rows, out] (stride ldy) += s · (drop(x) Aᵀ) Bᵀ; keeps h = drop(x) Aᵀ [rows, rank] for backward.
  void forward(LoraSite& site, const float* x, long ldx, long rows, float* y, long ldy, float* h, bool training,
               uint32_t dropout_seed);
  // Accumulates dA, dB; adds the input gradient into dx (stride lddx) unless dx is null.
  void backward(LoraSite& site, const float* x, long ldx, long rows, const float* h, const float* dy, long lddy,
                float* dx, long lddx, uint32_t dropout_seed);

 private:
  // drop(x) into scratch (or x itself when there is no dropout).
  const float* dropped_input(const LoraSite& site, const float* x, long ldx, long rows, uint32_t dropout_seed,
                             long* ld_out);
  uint32_t site_index(const LoraSite& site) const {
    return static_cast<uint32_t>(site.layer * ET_NUM_PROJ + site.projection);
  }

  et_lora_config config_;
  float scaling_;
  std::vector<std::unique_ptr<LoraSite>> sites_;
  Buffer dropped_, grad_h_, grad_x_;
};

}  // namespace et
