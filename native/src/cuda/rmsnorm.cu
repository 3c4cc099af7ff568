// RMSNorm forward and backward, one block per row (d up to a few thousand: one pass to reduce,
// one to write). The weight gradient is summed across rows with atomics (norm weights are frozen
// in adapter training, so this path only runs in tests and full fine-tuning).
#include "check.h"
#include "kernels.h"
#include "reduce.cuh"

namespace et::cuda {

namespace {

constexpr int kThreads = 256;

template <typename Out>
__global__ void rmsnorm_forward_kernel(const float* x, long ldx, const float* w, Out* y, long ldy, float* rstd, long d,
                                       float eps) {
  __shared__ float scratch[32];
  const long t = blockIdx.x;
  const float* xr = x + t * ldx;
  float sq = 0.0f;
  for (long j = threadIdx.x; j < d; j += blockDim.x) sq += xr[j] * xr[j];
  const float inv = rsqrtf(block_sum(sq, scratch) / static_cast<float>(d) + eps);
  if (threadIdx.x == 0) rstd[t] = inv;
  for (long j = threadIdx.x; j < d; j += blockDim.x) y[t * ldy + j] = from_float<Out>(w[j] * xr[j] * inv);
}

__global__ void rmsnorm_backward_kernel(const float* dy, long lddy, const float* x, long ldx, const float* w,
                                        const float* rstd, float* dx, long lddx, float* dw, long d, bool accumulate) {
  __shared__ float scratch[32];
  const long t = blockIdx.x;
  const float* dyr = dy + t * lddy;
  const float* xr = x + t * ldx;
  const float inv = rstd[t];
  float gx = 0.0f;
  for (long j = threadIdx.x; j < d; j += blockDim.x) gx += w[j] * dyr[j] * xr[j] * inv;
  const float mean_gx = block_sum(gx, scratch) / static_cast<float>(d);
  for (long j = threadIdx.x; j < d; j += blockDim.x) {
    const float xhat = xr[j] * inv;
    const float out = inv * (w[j] * dyr[j] - xhat * mean_gx);
    dx[t * lddx + j] = accumulate ? dx[t * lddx + j] + out : out;
    if (dw) atomicAdd(dw + j, dyr[j] * xhat);
  }
}

template <typename Out>
void forward(cudaStream_t s, const float* x, long ldx, const float* w, Out* y, long ldy, float* rstd, long rows, long d,
             float eps) {
  if (rows == 0) return;
  rmsnorm_forward_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(x, ldx, w, y, ldy, rstd, d, eps);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace

void rmsnorm_forward(cudaStream_t s, const float* x, long ldx, const float* w, bf16* y, long ldy, float* rstd,
                     long rows, long d, float eps) {
  forward(s, x, ldx, w, y, ldy, rstd, rows, d, eps);
}
void rmsnorm_forward(cudaStream_t s, const float* x, long ldx, const float* w, float* y, long ldy, float* rstd,
                     long rows, long d, float eps) {
  forward(s, x, ldx, w, y, ldy, rstd, rows, d, eps);
}

void rmsnorm_backward(cudaStream_t s, const float* dy, long lddy, const float* x, long ldx, const float* w,
                      const float* rstd, float* dx, long lddx, float* dw, long rows, long d, bool accumulate) {
  if (rows == 0) return;
  rmsnorm_backward_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(dy, lddy, x, ldx, w, rstd, dx, lddx, dw, d,
                                                                           accumulate);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace et::cuda
