// The gated stacked low-rank update (docs/architecture.md, "one fused kernel for every method").
// The products run through gemm.h; these kernels are what sits between them: gates applied to H
// (written into the bf16 tail of the fused operand [X | M]), the gate's backward, and dropout
// with the CPU's counter-hash mask (recomputed, never stored).
#include "../rng.h"
#include "check.h"
#include "kernels.h"
#include "reduce.cuh"

namespace et::cuda {

namespace {

template <typename M>
__global__ void gate_forward_kernel(const float* h, long ldh, const float* gate, long E, long r, M* m, long ldm) {
  const long t = blockIdx.x, width = E * r;
  for (long c = threadIdx.x; c < width; c += blockDim.x) {
    const float g = gate ? gate[t * E + c / r] : 1.0f;
    m[t * ldm + c] = from_float<M>(g * h[t * ldh + c]);
  }
}

// One warp per (row, expert): dH = dM·g over the expert's r columns and dg = Σ dM ⊙ H.
__global__ void gate_backward_kernel(const float* dm, long lddm, const float* h, long ldh, const float* gate, long E,
                                     long r, float* dh, long lddh, float* dgate, long rows) {
  const long item = blockIdx.x * static_cast<long>(blockDim.x / 32) + (threadIdx.x >> 5);
  if (item >= rows * E) return;
  const int lane = threadIdx.x & 31;
  const long t = item / E, e = item % E;
  const float g = gate ? gate[t * E + e] : 1.0f;
  float sum = 0.0f;
  for (long j = lane; j < r; j += 32) {
    const long c = e * r + j;
    const float d = dm[t * lddm + c];
    sum += d * h[t * ldh + c];
    dh[t * lddh + c] = d * g;
  }
  sum = warp_sum(sum);
  if (dgate && lane == 0) dgate[t * E + e] = sum;
}

__device__ __forceinline__ uint32_t mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

template <typename T>
__global__ void dropout_kernel(const T* x, long ldx, T* out, long ldo, long cols, uint32_t site_key, uint32_t threshold,
                               float keep_scale, bool accumulate) {
  const long t = blockIdx.x;
  const uint32_t base = static_cast<uint32_t>(t * cols);  // wraps as the CPU's uint32 arithmetic
  for (long j = threadIdx.x; j < cols; j += blockDim.x) {
    const bool keep = mix((base + static_cast<uint32_t>(j)) ^ site_key) >= threshold;
    const float kept = keep ? to_float(x[t * ldx + j]) * keep_scale : 0.0f;
    out[t * ldo + j] = from_float<T>(accumulate ? to_float(out[t * ldo + j]) + kept : kept);
  }
}

template <typename M>
void forward(cudaStream_t s, const float* h, long ldh, const float* gate, long E, long r, M* m, long ldm, long rows) {
  if (rows == 0) return;
  gate_forward_kernel<<<static_cast<unsigned>(rows), 128, 0, s>>>(h, ldh, gate, E, r, m, ldm);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace

void gate_forward(cudaStream_t s, const float* h, long ldh, const float* gate, long E, long r, bf16* m, long ldm,
                  long rows) {
  forward(s, h, ldh, gate, E, r, m, ldm, rows);
}
void gate_forward(cudaStream_t s, const float* h, long ldh, const float* gate, long E, long r, float* m, long ldm,
                  long rows) {
  forward(s, h, ldh, gate, E, r, m, ldm, rows);
}

void gate_backward(cudaStream_t s, const float* dm, long lddm, const float* h, long ldh, const float* gate, long E,
                   long r, float* dh, long lddh, float* dgate, long rows) {
  if (rows == 0) return;
  gate_backward_kernel<<<blocks_for(rows * E, 8), 256, 0, s>>>(dm, lddm, h, ldh, gate, E, r, dh, lddh, dgate, rows);
  ET_CUDA_CHECK_LAUNCH();
}

void dropout(cudaStream_t s, const bf16* x, long ldx, bf16* out, long ldo, long rows, long cols, uint32_t seed,
             uint32_t stream_key, uint32_t threshold, float keep_scale) {
  if (rows == 0) return;
  dropout_kernel<<<static_cast<unsigned>(rows), 256, 0, s>>>(x, ldx, out, ldo, cols, mix32(stream_key ^ mix32(seed)),
                                                             threshold, keep_scale, false);
  ET_CUDA_CHECK_LAUNCH();
}
void dropout(cudaStream_t s, const float* x, long ldx, float* out, long ldo, long rows, long cols, uint32_t seed,
             uint32_t stream_key, uint32_t threshold, float keep_scale, bool accumulate) {
  if (rows == 0) return;
  dropout_kernel<<<static_cast<unsigned>(rows), 256, 0, s>>>(x, ldx, out, ldo, cols, mix32(stream_key ^ mix32(seed)),
                                                             threshold, keep_scale, accumulate);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace et::cuda
