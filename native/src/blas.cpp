#include "blas.h"

#include <cblas.h>

#include <algorithm>
#include <mutex>
#include <string>

#include "threadpool.h"

namespace et {

void blas_init() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

const char* blas_info() {
  static std::string info;
  static std::once_flag once;
  std::call_once(once, [] {
    info = std::string(openblas_get_config()) + " core=" + openblas_get_corename();
  });
  return info.c_str();
}

void gemm_serial(bool trans_a, bool trans_b, long M, long N, long K, float alpha, const float* A, long lda,
                 const float* B, long ldb, float beta, float* C, long ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (long i = 0; i < M; ++i)
      for (long j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A,
              static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
}

void gemm(bool trans_a, bool trans_b, long M, long N, long K, float alpha, const float* A, long lda,
          const float* B, long ldb, float beta, float* C, long ldc) {
  blas_init();
  ThreadPool& pool = ThreadPool::global();
  int threads = pool.size();
  // Below ~1 MFLOP a split costs more than it saves.
  if (threads == 1 || ThreadPool::in_parallel_region() || 2.0 * M * N * K < 2e6) {
    gemm_serial(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // One contiguous block per thread, a multiple of 16 rows/columns (the kernels' tile).
  const bool split_rows = M >= N;
  const long extent = split_rows ? M : N;
  long block = (extent + threads - 1) / threads;
  block = std::max(16L, (block + 15) / 16 * 16);
  pool.parallel_for(extent, block, [&](long begin, long end, int) {
    long span = end - begin;
    if (split_rows) {
      const float* a_part = trans_a ? A + begin : A + begin * lda;
      gemm_serial(trans_a, trans_b, span, N, K, alpha, a_part, lda, B, ldb, beta, C + begin * ldc, ldc);
    } else {
      const float* b_part = trans_b ? B + begin * ldb : B + begin;
      gemm_serial(trans_a, trans_b, M, span, K, alpha, A, lda, b_part, ldb, beta, C + begin, ldc);
    }
  });
}

}  // namespace et
