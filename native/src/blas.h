// Matrix products: OpenBLAS sgemm, run single-threaded per call and split across our own
// thread pool. One pool for everything avoids two sets of threads spinning against each other
// on a small machine, and lets small per-head products run side by side.
#pragma once

namespace et {

void blas_init();
const char* blas_info();

// Row-major C[M,N] = alpha · op(A) · op(B) + beta · C, op(X) = Xᵀ when trans_x.
// Splits over rows of C (or columns when N > M) across the thread pool.
void gemm(bool trans_a, bool trans_b, long M, long N, long K, float alpha, const float* A, long lda,
          const float* B, long ldb, float beta, float* C, long ldc);

// The same product on the calling thread only (for use inside parallel regions).
void gemm_serial(bool trans_a, bool trans_b, long M, long N, long K, float alpha, const float* A, long lda,
                 const float* B, long ldb, float beta, float* C, long ldc);

}  // namespace et
