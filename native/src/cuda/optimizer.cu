// The optimizer over lists of trainable segments in one launch each: the global gradient norm
// (per-block partial sums in double, then summed in block order by one block: the same bits
// every run), and fused AdamW with the clipping factor and gradient zeroing folded in.
#include "check.h"
#include "kernels.h"
#include "reduce.cuh"

namespace et::cuda {

namespace {

constexpr int kThreads = 256;

// The segment holding block b: the last s with block_start[s] <= b.
__device__ long segment_of(const long* block_start, long segment_count, long b) {
  long lo = 0, hi = segment_count - 1;
  while (lo < hi) {
    const long mid = (lo + hi + 1) / 2;
    if (block_start[mid] <= b) lo = mid; else hi = mid - 1;
  }
  return lo;
}

__global__ void sum_squares_kernel(const TrainableSegment* segments, const long* block_start, long segment_count,
                                   double* partials) {
  __shared__ float scratch[32];
  const long b = blockIdx.x, s = segment_of(block_start, segment_count, b);
  const TrainableSegment seg = segments[s];
  const long i0 = (b - block_start[s]) * kOptimizerBlock, i1 = min(i0 + kOptimizerBlock, seg.count);
  float sum = 0.0f;
  for (long i = i0 + threadIdx.x; i < i1; i += blockDim.x) sum += seg.grad[i] * seg.grad[i];
  sum = block_sum(sum, scratch);
  if (threadIdx.x == 0) partials[b] = sum;
}

__global__ void sum_partials_kernel(double* partials, long blocks) {
  if (threadIdx.x != 0) return;
  double total = 0.0;
  for (long b = 0; b < blocks; ++b) total += partials[b];
  partials[blocks] = total;
}

__global__ void adamw_kernel(const TrainableSegment* segments, const long* block_start, long segment_count,
                             AdamWStep st) {
  const long b = blockIdx.x, s = segment_of(block_start, segment_count, b);
  const TrainableSegment seg = segments[s];
  const long i0 = (b - block_start[s]) * kOptimizerBlock, i1 = min(i0 + kOptimizerBlock, seg.count);
  const float decay = 1.0f - st.lr * seg.weight_decay, step = st.lr / st.bias_correction1;
  for (long i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    const float g = seg.grad[i] * st.grad_scale;
    const float m = st.beta1 * seg.adam_m[i] + (1.0f - st.beta1) * g;
    const float v = st.beta2 * seg.adam_v[i] + (1.0f - st.beta2) * g * g;
    seg.adam_m[i] = m;
    seg.adam_v[i] = v;
    seg.value[i] = seg.value[i] * decay - step * m / (sqrtf(v) / st.bias_correction2_sqrt + st.eps);
    seg.grad[i] = 0.0f;
  }
}

}  // namespace

long grad_norm_partials(long blocks) { return blocks + 1; }

double grad_sum_squares(cudaStream_t s, const TrainableSegment* segments, const long* block_start, long segment_count,
                        long blocks, double* partials) {
  if (blocks == 0) return 0.0;
  sum_squares_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(segments, block_start, segment_count, partials);
  ET_CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, 32, 0, s>>>(partials, blocks);
  ET_CUDA_CHECK_LAUNCH();
  double total = 0.0;
  ET_CUDA_CHECK(cudaMemcpyAsync(&total, partials + blocks, sizeof(double), cudaMemcpyDeviceToHost, s));
  ET_CUDA_CHECK(cudaStreamSynchronize(s));
  return total;
}

void adamw(cudaStream_t s, const TrainableSegment* segments, const long* block_start, long segment_count, long blocks,
           const AdamWStep& step) {
  if (blocks == 0) return;
  adamw_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(segments, block_start, segment_count, step);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace et::cuda
