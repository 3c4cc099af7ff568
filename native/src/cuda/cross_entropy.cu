// Cross-entropy over the vocabulary, one block per row: a single pass keeps an online (max, sum
// of exp) per thread over its strided slice of the vocabulary, merged across the block; a second
// pass writes dlogits = scale·(softmax − onehot) in the type the head's backward product wants.
// The [rows, V] logits are produced a chunk of rows at a time by the caller.
#include <cmath>

#include "check.h"
#include "kernels.h"
#include "reduce.cuh"

namespace et::cuda {

namespace {

constexpr int kThreads = 512;

// (max, sum) of exp merged: the sums rescaled to the larger max.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2;
    s = s2;
    return;
  }
  const float mx = fmaxf(m, m2);
  s = s * __expf(m - mx) + s2 * __expf(m2 - mx);
  m = mx;
}

template <typename D>
__global__ void __launch_bounds__(kThreads) cross_entropy_kernel(const float* logits, long ldl, const int32_t* targets,
                                                                 long V, float scale, D* dlogits, long ldd,
                                                                 float* loss, int32_t* argmax) {
  __shared__ float sh_m[kThreads / 32], sh_s[kThreads / 32];
  __shared__ long sh_arg[kThreads / 32];
  __shared__ float sh_argval[kThreads / 32];
  const long t = blockIdx.x;
  const float* row = logits + t * ldl;
  D* drow = dlogits + t * ldd;
  const long target = targets[t];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (target < 0) {
    for (long j = threadIdx.x; j < V; j += blockDim.x) drow[j] = from_float<D>(0.0f);
    if (threadIdx.x == 0) {
      loss[t] = 0.0f;
      if (argmax) argmax[t] = -1;
    }
    return;
  }
  float m = -INFINITY, s = 0.0f, best = -INFINITY;
  long best_index = V;
  for (long j = threadIdx.x; j < V; j += blockDim.x) {
    const float x = row[j];
    if (x > best) {  // strict: the first maximum within the thread's slice
      best = x;
      best_index = j;
    }
    if (x > m) {
      s = s * __expf(m - x) + 1.0f;
      m = x;
    } else {
      s += __expf(x - m);
    }
  }
  // Warp then block merge; argmax ties go to the lower index, as torch.argmax.
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float m2 = __shfl_xor_sync(kFullMask, m, offset), s2 = __shfl_xor_sync(kFullMask, s, offset);
    const float b2 = __shfl_xor_sync(kFullMask, best, offset);
    const long i2 = __shfl_xor_sync(kFullMask, best_index, offset);
    merge(m, s, m2, s2);
    if (b2 > best || (b2 == best && i2 < best_index)) {
      best = b2;
      best_index = i2;
    }
  }
  if (lane == 0) {
    sh_m[warp] = m;
    sh_s[warp] = s;
    sh_argval[warp] = best;
    sh_arg[warp] = best_index;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) {
      merge(sh_m[0], sh_s[0], sh_m[w], sh_s[w]);
      if (sh_argval[w] > sh_argval[0] || (sh_argval[w] == sh_argval[0] && sh_arg[w] < sh_arg[0])) {
        sh_argval[0] = sh_argval[w];
        sh_arg[0] = sh_arg[w];
      }
    }
    const float lse = sh_m[0] + logf(sh_s[0]);
    loss[t] = lse - row[target];
    if (argmax) argmax[t] = static_cast<int32_t>(sh_arg[0]);
  }
  __syncthreads();
  const float mx = sh_m[0], factor = scale / sh_s[0];
  for (long j = threadIdx.x; j < V; j += blockDim.x) {
    const float g = factor * __expf(row[j] - mx) - (j == target ? scale : 0.0f);
    drow[j] = from_float<D>(g);
  }
}

template <typename D>
void run(cudaStream_t s, const float* logits, long ldl, const int32_t* targets, long rows, long V, float scale,
         D* dlogits, long ldd, float* loss, int32_t* argmax) {
  if (rows == 0) return;
  cross_entropy_kernel<D><<<static_cast<unsigned>(rows), kThreads, 0, s>>>(logits, ldl, targets, V, scale, dlogits,
                                                                           ldd, loss, argmax);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace

void cross_entropy(cudaStream_t s, const float* logits, long ldl, const int32_t* targets, long rows, long V,
                   float scale, bf16* dlogits, long ldd, float* loss, int32_t* argmax) {
  run(s, logits, ldl, targets, rows, V, scale, dlogits, ldd, loss, argmax);
}
void cross_entropy(cudaStream_t s, const float* logits, long ldl, const int32_t* targets, long rows, long V,
                   float scale, float* dlogits, long ldd, float* loss, int32_t* argmax) {
  run(s, logits, ldl, targets, rows, V, scale, dlogits, ldd, loss, argmax);
}

}  // namespace et::cuda
