#include "lora.h"

#include <cmath>

#include "../blas.h"
#include "../kernels/kernels.h"
#include "../rng.h"
#include "../threadpool.h"

namespace et {

namespace {
const char* const kProjectionPaths[ET_NUM_PROJ] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                   "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                   "mlp.down_proj"};
}

LoraAdapter::LoraAdapter(const et_lora_config& config, long layers,
                         const std::array<std::array<long, 2>, ET_NUM_PROJ>& in_out)
    : config_(config) {
  if (config.rank <= 0) fail("LoRA rank must be a positive integer, got ", config.rank);
  if (!(config.dropout >= 0.0f && config.dropout < 1.0f)) fail("LoRA dropout must be in [0, 1), got ", config.dropout);
  if ((config.target_mask & ((1u << ET_NUM_PROJ) - 1)) == 0) fail("LoRA targets no projection");
  scaling_ = config.use_rslora ? config.alpha / std::sqrt(static_cast<float>(config.rank))
                               : config.alpha / static_cast<float>(config.rank);
  sites_.resize(layers * ET_NUM_PROJ);
  const long r = config.rank;
  for (long l = 0; l < layers; ++l) {
    for (long p = 0; p < ET_NUM_PROJ; ++p) {
      if (!(config.target_mask & (1u << p))) continue;
      auto site = std::make_unique<LoraSite>();
      site->layer = l;
      site->projection = p;
      site->in = in_out[p][0];
      site->out = in_out[p][1];
      site->A.value.resize(r * site->in);
      site->A.grad.resize(r * site->in);
      site->B.value.resize(site->out * r);
      site->B.grad.resize(site->out * r);
      // PEFT's kaiming_uniform(a=√5) bound 1/sqrt(in), drawn from the counter hash so that
      // the tfjs engine starts from the same numbers; B = 0 makes the initial update zero.
      // In double, rounded once, exactly as the tfjs engine computes it.
      const double bound = 1.0 / std::sqrt(static_cast<double>(site->in));
      const uint32_t stream = 2u * static_cast<uint32_t>(l * ET_NUM_PROJ + p);
      for (long i = 0; i < r * site->in; ++i) {
        const double u = uniform01(hash3(config.seed, stream, static_cast<uint32_t>(i)));
        site->A.value[i] = static_cast<float>((2.0 * u - 1.0) * bound);
      }
      sites_[l * ET_NUM_PROJ + p] = std::move(site);
    }
  }
}

std::vector<LoraSite*> LoraAdapter::sites() {
  std::vector<LoraSite*> all;
  for (auto& s : sites_)
    if (s) all.push_back(s.get());
  return all;
}

std::string LoraAdapter::tensor_name(long layer, long projection, bool is_a) {
  return "model.layers." + std::to_string(layer) + "." + kProjectionPaths[projection] +
         (is_a ? ".lora_A.weight" : ".lora_B.weight");
}

const float* LoraAdapter::dropped_input(const LoraSite& site, const float* x, long ldx, long rows,
                                        uint32_t dropout_seed, long* ld_out) {
  if (config_.dropout <= 0.0f) {
    *ld_out = ldx;
    return x;
  }
  dropped_.reserve(rows * site.in);
  float* out = dropped_.data();
  const Kernels& K = kernels();
  const uint32_t threshold = dropout_threshold(config_.dropout);
  const float keep_scale = 1.0f / (1.0f - config_.dropout);
  ThreadPool::global().parallel_for(rows, 64, [&](long r0, long r1, int) {
    K.dropout(x + r0 * ldx, ldx, out + r0 * site.in, site.in, r1 - r0, site.in, r0, dropout_seed, site_index(site),
              threshold, keep_scale, false);
  });
  *ld_out = site.in;
  return out;
}

void LoraAdapter::forward(LoraSite& site, const float* x, long ldx, long rows, float* y, long ldy, float* h,
                          bool training, uint32_t dropout_seed) {
  const long r = config_.rank;
  long ld_in = ldx;
  const float* input = training ? dropped_input(site, x, ldx, rows, dropout_seed, &ld_in) : x;
  gemm(false, true, rows, r, site.in, 1.0f, input, ld_in, site.A.value.data(), site.in, 0.0f, h, r);
  gemm(false, true, rows, site.out, r, scaling_, h, r, site.B.value.data(), r, 1.0f, y, ldy);
}

// With H = drop(x) Aᵀ and U = s · dY B:  dB += s · dYᵀ H,  dA += Uᵀ drop(x),  dx += drop'(U A).
void LoraAdapter::backward(LoraSite& site, const float* x, long ldx, long rows, const float* h, const float* dy,
                           long lddy, float* dx, long lddx, uint32_t dropout_seed) {
  const long r = config_.rank;
  gemm(true, false, site.out, r, rows, scaling_, dy, lddy, h, r, 1.0f, site.B.grad.data(), r);
  grad_h_.reserve(rows * r);
  float* u = grad_h_.data();
  gemm(false, false, rows, r, site.out, scaling_, dy, lddy, site.B.value.data(), r, 0.0f, u, r);
  long ld_in = ldx;
  const float* input = dropped_input(site, x, ldx, rows, dropout_seed, &ld_in);
  gemm(true, false, r, site.in, rows, 1.0f, u, r, input, ld_in, 1.0f, site.A.grad.data(), site.in);
  if (!dx) return;
  if (config_.dropout <= 0.0f) {
    gemm(false, false, rows, site.in, r, 1.0f, u, r, site.A.value.data(), site.in, 1.0f, dx, lddx);
    return;
  }
  grad_x_.reserve(rows * site.in);
  float* gx = grad_x_.data();
  gemm(false, false, rows, site.in, r, 1.0f, u, r, site.A.value.data(), site.in, 0.0f, gx, site.in);
  const Kernels& K = kernels();
  const uint32_t threshold = dropout_threshold(config_.dropout);
  const float keep_scale = 1.0f / (1.0f - config_.dropout);
  ThreadPool::global().parallel_for(rows, 64, [&](long r0, long r1, int) {
    K.dropout(gx + r0 * site.in, site.in, dx + r0 * lddx, lddx, r1 - r0, site.in, r0, dropout_seed, site_index(site),
              threshold, keep_scale, true);
  });
}

}  // namespace et
