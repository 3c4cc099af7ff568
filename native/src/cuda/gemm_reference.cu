// gemm.h without cuBLAS: a shared-memory tiled product, fp32 accumulation. Slow (CUDA cores, no
// tensor cores) but independent of cuBLASLt, so a build without cuBLAS still links and runs.
#include <cuda_bf16.h>

#include "check.h"
#include "gemm.h"
#include "reduce.cuh"

namespace et::cuda {

namespace {

constexpr int kTile = 16;

template <typename T>
__device__ float element(const T* m, long ld, bool trans, long row, long col) {
  // Element (row, col) of op(m): m is stored row-major with stride ld.
  return to_float(trans ? m[col * ld + row] : m[row * ld + col]);
}

template <typename AB, typename C>
__global__ void gemm_tiled(bool ta, bool tb, long M, long N, long K, float alpha, const AB* A, long lda, const AB* B,
                           long ldb, float beta, C* out, long ldc) {
  __shared__ float a_tile[kTile][kTile + 1], b_tile[kTile][kTile + 1];
  const long row = blockIdx.y * kTile + threadIdx.y, col = blockIdx.x * kTile + threadIdx.x;
  float acc = 0.0f;
  for (long k0 = 0; k0 < K; k0 += kTile) {
    const long ka = k0 + threadIdx.x, kb = k0 + threadIdx.y;
    a_tile[threadIdx.y][threadIdx.x] = row < M && ka < K ? element(A, lda, ta, row, ka) : 0.0f;
    b_tile[threadIdx.y][threadIdx.x] = kb < K && col < N ? element(B, ldb, tb, kb, col) : 0.0f;
    __syncthreads();
    for (int k = 0; k < kTile; ++k) acc += a_tile[threadIdx.y][k] * b_tile[k][threadIdx.x];
    __syncthreads();
  }
  if (row >= M || col >= N) return;
  C* c = out + row * ldc + col;
  const float prior = beta == 0.0f ? 0.0f : beta * to_float(*c);  // beta = 0 ignores NaN in C, as BLAS
  *c = from_float<C>(alpha * acc + prior);
}

template <typename AB>
void launch(cudaStream_t stream, bool ta, bool tb, long M, long N, long K, float alpha, const void* A, long lda,
            const void* B, long ldb, float beta, void* C, long ldc, DType c_type) {
  const dim3 block(kTile, kTile), grid(blocks_for(N, kTile), blocks_for(M, kTile));
  const AB* a = static_cast<const AB*>(A);
  const AB* b = static_cast<const AB*>(B);
  if (c_type == DType::F32)
    gemm_tiled<<<grid, block, 0, stream>>>(ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, static_cast<float*>(C), ldc);
  else
    gemm_tiled<<<grid, block, 0, stream>>>(ta, tb, M, N, K, alpha, a, lda, b, ldb, beta,
                                           static_cast<__nv_bfloat16*>(C), ldc);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace

void gemm(cudaStream_t stream, bool trans_a, bool trans_b, long M, long N, long K, float alpha, const void* A,
          long lda, const void* B, long ldb, DType ab_type, float beta, void* C, long ldc, DType c_type) {
  if (M == 0 || N == 0) return;
  if (ab_type == DType::BF16)
    launch<__nv_bfloat16>(stream, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, c_type);
  else
    launch<float>(stream, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, c_type);
}

const char* gemm_backend() { return "reference"; }

}  // namespace et::cuda
