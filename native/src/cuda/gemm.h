// The one interface to matrix products on the GPU. Two implementations sit behind it:
// gemm_cublaslt.cu (cuBLASLt, the real one; built when cuBLASLt's headers and library are found)
// and gemm_reference.cu (a plain tiled kernel, built otherwise, so everything else still compiles
// and links without cuBLAS, and so tests have an independent product to compare with).
#pragma once

#include <cuda_runtime_api.h>

namespace et::cuda {

enum class DType { F32, BF16 };

// Row-major, as blas.h's gemm on the CPU:
//   C[M, N] (ldc) = alpha · op(A) · op(B) + beta · C,   op(X) = X or Xᵀ,
// op(A) is M×K, op(B) is K×N. A and B share one type; C is F32 or BF16; accumulation is fp32.
void gemm(cudaStream_t stream, bool trans_a, bool trans_b, long M, long N, long K, float alpha, const void* A,
          long lda, const void* B, long ldb, DType ab_type, float beta, void* C, long ldc, DType c_type);

// "cublaslt" or "reference".
const char* gemm_backend();

}  // namespace et::cuda
