// Rotary embedding in place ("rotate half" pairs (i, i + hd/2)), from the same float32 cos/sin
// tables the CPU computes in float64 and rounds once, so both engines rotate by identical numbers.
#include "check.h"
#include "kernels.h"
#include "reduce.cuh"

namespace et::cuda {

namespace {

__global__ void rope_kernel(float* x, long ldx, long col0, long seq, long position0, long heads, long head_dim,
                            const float* cos, const float* sin, float sign) {
  const long t = blockIdx.x, half = head_dim / 2;
  const long pos = position0 + t % seq;
  const float* c = cos + pos * half;
  const float* sn = sin + pos * half;
  float* row = x + t * ldx + col0;
  for (long k = threadIdx.x; k < heads * half; k += blockDim.x) {
    const long h = k / half, i = k % half;
    float* lo = row + h * head_dim + i;
    float* hi = lo + half;
    const float a = *lo, b = *hi, cs = c[i], sv = sign * sn[i];
    *lo = a * cs - b * sv;
    *hi = b * cs + a * sv;
  }
}

}  // namespace

void rope(cudaStream_t s, float* x, long ldx, long col0, long rows, long seq, long position0, long heads,
          long head_dim, const float* cos, const float* sin, float sign) {
  if (rows == 0 || heads == 0) return;
  rope_kernel<<<static_cast<unsigned>(rows), 128, 0, s>>>(x, ldx, col0, seq, position0, heads, head_dim, cos, sin, sign);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace et::cuda
