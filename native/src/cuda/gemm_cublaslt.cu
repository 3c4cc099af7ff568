// gemm.h through cuBLASLt: row-major products mapped onto cuBLASLt's column-major ones by
// computing Cᵀ = op(B)ᵀ·op(A)ᵀ, which reads the same memory with the operands swapped.
#include <cublasLt.h>

#include <mutex>

#include "check.h"
#include "gemm.h"

namespace et::cuda {

namespace {

void check_cublas(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) fail(file, ":", line, ": ", call, " failed: cuBLAS status ", static_cast<int>(status));
}
#define ET_CUBLAS_CHECK(call) check_cublas((call), #call, __FILE__, __LINE__)

// One handle and one workspace per thread (a model is driven from one thread at a time).
constexpr size_t kWorkspaceBytes = 32u << 20;  // what cuBLASLt's Hopper kernels like to have

struct Context {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  Context() {
    ET_CUBLAS_CHECK(cublasLtCreate(&handle));
    ET_CUDA_CHECK(cudaMalloc(&workspace, kWorkspaceBytes));
  }
  ~Context() {
    if (workspace) cudaFree(workspace);
    if (handle) cublasLtDestroy(handle);
  }
};

Context& context() {
  thread_local Context ctx;
  return ctx;
}

cudaDataType_t cuda_type(DType t) { return t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// RAII for the per-call descriptors.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  ~Descriptors() {
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

}  // namespace

void gemm(cudaStream_t stream, bool trans_a, bool trans_b, long M, long N, long K, float alpha, const void* A,
          long lda, const void* B, long ldb, DType ab_type, float beta, void* C, long ldc, DType c_type) {
  if (M == 0 || N == 0) return;
  Context& ctx = context();
  Descriptors d;
  // Column-major D[N×M] = op(A')[N×K] · op(B')[K×M] with A' = B's memory and B' = A's memory.
  const cublasOperation_t op_a = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  ET_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  ET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  ET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  const cudaDataType_t t = cuda_type(ab_type);
  ET_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.a, t, trans_b ? K : N, trans_b ? N : K, ldb));
  ET_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.b, t, trans_a ? M : K, trans_a ? K : M, lda));
  ET_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.c, cuda_type(c_type), N, M, ldc));
  ET_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.preference));
  size_t workspace = kWorkspaceBytes;
  ET_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(d.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                       &workspace, sizeof(workspace)));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  ET_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.handle, d.op, d.a, d.b, d.c, d.c, d.preference, 1, &heuristic,
                                                 &found));
  if (found == 0) fail("cuBLASLt has no algorithm for a ", M, "x", N, "x", K, " product");
  ET_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, d.op, &alpha, B, d.a, A, d.b, &beta, C, d.c, C, d.c, &heuristic.algo,
                                 ctx.workspace, kWorkspaceBytes, stream));
}

const char* gemm_backend() { return "cublaslt"; }

}  // namespace et::cuda
