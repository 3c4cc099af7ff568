// Row kernels of the CPU engine (everything that is not a matrix product), compiled once per
// instruction set (AVX-512, AVX2+FMA, generic) and picked at run time for the CPU at hand.
// Each works on the rows it is given; the caller splits rows across the thread pool.
#pragma once

#include <cstdint>

namespace et {

struct AdamWScalars {
  float lr, beta1, beta2, eps, weight_decay;
  float bias_correction1;       // 1 − β₁ᵗ
  float bias_correction2_sqrt;  // sqrt(1 − β₂ᵗ)
  float grad_scale;             // clipping factor (1 when not clipped)
};

struct Kernels {
  const char* name;
  // y = w ⊙ x · rstd per row of d values; rstd[r] = 1 / sqrt(mean(x²) + eps).
  void (*rmsnorm_forward)(const float* x, const float* w, float* y, float* rstd, long rows, long d, float eps);
  // dx = (or +=) d(rmsnorm)/dx · dy; dw_partial[d] += Σ_rows dy ⊙ x · rstd when not null.
  void (*rmsnorm_backward)(const float* dy, const float* x, const float* w, const float* rstd, float* dx,
                           float* dw_partial, long rows, long d, bool accumulate_dx);
  // Rotates `heads` consecutive head vectors of head_dim values in place by angle·sign
  // (HF "rotate half" pairs (i, i + head_dim/2)); cos/sin hold head_dim/2 values.
  void (*rope)(float* x, long heads, long head_dim, const float* cos, const float* sin, float sign);
  // out = silu(gate) ⊙ up
  void (*swiglu_forward)(const float* gate, const float* up, float* out, long n);
  void (*swiglu_backward)(const float* gate, const float* up, const float* dout, float* dgate, float* dup, long n);
  // In-place softmax of s[0, n); returns logsumexp.
  float (*softmax)(float* s, long n);
  // s = exp(s − shift)
  void (*exp_shifted)(float* s, long n, float shift);
  // dp = p ⊙ (dp − delta): the softmax backward given delta = Σ p ⊙ dp.
  void (*softmax_backward)(const float* p, float* dp, float delta, long n);
  float (*dot)(const float* a, const float* b, long n);
  // Cross-entropy of one row of logits against target. Returns the loss, writes the argmax, and
  // turns the row into scale · (softmax − onehot(target)), its gradient.
  float (*cross_entropy)(float* logits, long n, long target, float scale, long* argmax);
  void (*add)(const float* a, const float* b, float* out, long n);
  void (*axpy)(float alpha, const float* x, float* y, long n);
  double (*sum_squares)(const float* x, long n);
  void (*scale)(float* x, float alpha, long n);
  void (*adamw)(float* param, const float* grad, float* m, float* v, long n, const AdamWScalars& s);
  // out = (or +=) keep ⊙ x · keep_scale for a [rows, cols] block whose first row is row0 of the
  // site's flat [N, cols] input; keep per docs/engine.md (hash3(seed, site, row·cols + col) ≥ threshold).
  void (*dropout)(const float* x, long ld_x, float* out, long ld_out, long rows, long cols, long row0,
                  uint32_t seed, uint32_t site, uint32_t threshold, float keep_scale, bool accumulate);
};

// The best kernels for this CPU (EXPERTUNE_KERNELS=avx512|avx2|generic overrides, for tests).
const Kernels& kernels();
// A specific set, or nullptr when this CPU cannot run it.
const Kernels* kernels_by_name(const char* name);

}  // namespace et
