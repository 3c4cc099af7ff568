// Copies and casts between fp32 masters and bf16 shadows, the embedding gather, bias rows.
#include "check.h"
#include "kernels.h"
#include "reduce.cuh"

namespace et::cuda {

namespace {

template <typename Src, typename Dst>
__global__ void cast_rows_kernel(const Src* src, long ld_src, Dst* dst, long ld_dst, long rows, long cols, float scale) {
  const long n = rows * cols;
  for (long i = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x; i < n; i += static_cast<long>(gridDim.x) * blockDim.x) {
    const long r = i / cols, c = i % cols;
    dst[r * ld_dst + c] = from_float<Dst>(scale * to_float(src[r * ld_src + c]));
  }
}

template <typename Src, typename Dst>
void cast(cudaStream_t s, const Src* src, long ld_src, Dst* dst, long ld_dst, long rows, long cols, float scale) {
  if (rows * cols == 0) return;
  const unsigned blocks = blocks_for(rows * cols, 256) < 65535u ? blocks_for(rows * cols, 256) : 65535u;
  cast_rows_kernel<<<blocks, 256, 0, s>>>(src, ld_src, dst, ld_dst, rows, cols, scale);
  ET_CUDA_CHECK_LAUNCH();
}

__global__ void embed_kernel(const bf16* table, const int32_t* ids, float* x, long d) {
  const long t = blockIdx.x;
  const bf16* row = table + static_cast<long>(ids[t]) * d;
  for (long j = threadIdx.x; j < d; j += blockDim.x) x[t * d + j] = __bfloat162float(row[j]);
}

__global__ void add_bias_kernel(const float* bias, float* y, long ldy, long n) {
  const long t = blockIdx.x;
  for (long j = threadIdx.x; j < n; j += blockDim.x) y[t * ldy + j] += bias[j];
}

__global__ void fill_kernel(float* x, long n, float value) {
  const long i = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] = value;
}

}  // namespace

void cast_rows(cudaStream_t s, const float* src, long ld_src, bf16* dst, long ld_dst, long rows, long cols, float scale) {
  cast(s, src, ld_src, dst, ld_dst, rows, cols, scale);
}
void cast_rows(cudaStream_t s, const bf16* src, long ld_src, float* dst, long ld_dst, long rows, long cols, float scale) {
  cast(s, src, ld_src, dst, ld_dst, rows, cols, scale);
}
void cast_rows(cudaStream_t s, const float* src, long ld_src, float* dst, long ld_dst, long rows, long cols, float scale) {
  cast(s, src, ld_src, dst, ld_dst, rows, cols, scale);
}

void embed_rows(cudaStream_t s, const bf16* table, const int32_t* ids, float* x, long rows, long d) {
  if (rows == 0) return;
  embed_kernel<<<static_cast<unsigned>(rows), 256, 0, s>>>(table, ids, x, d);
  ET_CUDA_CHECK_LAUNCH();
}

void add_bias_rows(cudaStream_t s, const float* bias, float* y, long ldy, long rows, long n) {
  if (rows == 0) return;
  add_bias_kernel<<<static_cast<unsigned>(rows), 256, 0, s>>>(bias, y, ldy, n);
  ET_CUDA_CHECK_LAUNCH();
}

void fill(cudaStream_t s, float* x, long n, float value) {
  if (n == 0) return;
  fill_kernel<<<blocks_for(n, 256), 256, 0, s>>>(x, n, value);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace et::cuda
