// SwiGLU: act = silu(gate) ⊙ up from the stacked gate/up product, and its backward. The
// activation is written straight into the down projection's fused operand (bf16).
#include "check.h"
#include "kernels.h"
#include "reduce.cuh"

namespace et::cuda {

namespace {

__device__ __forceinline__ float sigmoid(float z) { return 1.0f / (1.0f + __expf(-z)); }

template <typename Out>
__global__ void swiglu_forward_kernel(const float* gate_up, long ldgu, Out* act, long ldact, long F) {
  const long t = blockIdx.x;
  const float* g = gate_up + t * ldgu;
  for (long j = threadIdx.x; j < F; j += blockDim.x) act[t * ldact + j] = from_float<Out>(g[j] * sigmoid(g[j]) * g[F + j]);
}

__global__ void swiglu_backward_kernel(const float* gate_up, long ldgu, const float* dact, long lddact, float* dgu,
                                       long lddgu, long F) {
  const long t = blockIdx.x;
  const float* g = gate_up + t * ldgu;
  for (long j = threadIdx.x; j < F; j += blockDim.x) {
    const float z = g[j], up = g[F + j], da = dact[t * lddact + j], sg = sigmoid(z);
    dgu[t * lddgu + j] = da * up * sg * (1.0f + z * (1.0f - sg));  // d silu(z)/dz
    dgu[t * lddgu + F + j] = da * z * sg;
  }
}

template <typename Out>
void forward(cudaStream_t s, const float* gate_up, long ldgu, Out* act, long ldact, long rows, long F) {
  if (rows == 0) return;
  swiglu_forward_kernel<<<static_cast<unsigned>(rows), 256, 0, s>>>(gate_up, ldgu, act, ldact, F);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace

void swiglu_forward(cudaStream_t s, const float* gate_up, long ldgu, bf16* act, long ldact, long rows, long F) {
  forward(s, gate_up, ldgu, act, ldact, rows, F);
}
void swiglu_forward(cudaStream_t s, const float* gate_up, long ldgu, float* act, long ldact, long rows, long F) {
  forward(s, gate_up, ldgu, act, ldact, rows, F);
}

void swiglu_backward(cudaStream_t s, const float* gate_up, long ldgu, const float* dact, long lddact, float* dgate_up,
                     long lddgu, long rows, long F) {
  if (rows == 0) return;
  swiglu_backward_kernel<<<static_cast<unsigned>(rows), 256, 0, s>>>(gate_up, ldgu, dact, lddact, dgate_up, lddgu, F);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace et::cuda
