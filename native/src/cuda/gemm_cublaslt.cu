// gemm.h through cuBLASLt: row-major products mapped onto cuBLASLt's column-major ones by
// computing Cᵀ = op(B)ᵀ·op(A)ᵀ, which reads the same memory with the operands swapped.
#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <utility>

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

struct Plan;
// Shape, strides, types, and the pointers' alignments (A, B, C): cuBLASLt's heuristic assumes
// 256-byte aligned operands unless told otherwise, and the adapter's operands are column offsets
// inside wider buffers.
using PlanKey = std::tuple<bool, bool, long, long, long, long, long, long, int, int, uint32_t, uint32_t, uint32_t>;

// The largest power of two (up to 256) dividing the address.
uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && address % a != 0) a /= 2;
  return a;
}

struct Context {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<PlanKey, std::unique_ptr<Plan>> plans;
  Context() {
    ET_CUBLAS_CHECK(cublasLtCreate(&handle));
    ET_CUDA_CHECK(cudaMalloc(&workspace, kWorkspaceBytes));
  }
  ~Context();
};

Context& context() {
  thread_local Context ctx;
  return ctx;
}

cudaDataType_t cuda_type(DType t) { return t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// A product's descriptors and the algorithm the heuristic chose, kept per shape: a training step
// repeats the same few dozen shapes, and the heuristic query costs more than a small product.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  Plan() = default;
  Plan(const Plan&) = delete;
  ~Plan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// Plans go before the handle they were made with.
Context::~Context() {
  plans.clear();
  if (workspace) cudaFree(workspace);
  if (handle) cublasLtDestroy(handle);
}

std::unique_ptr<Plan> make_plan(Context& ctx, bool trans_a, bool trans_b, long M, long N, long K, long lda, long ldb,
                                long ldc, DType ab_type, DType c_type, uint32_t align_a, uint32_t align_b,
                                uint32_t align_c) {
  auto plan = std::make_unique<Plan>();
  // Column-major D[N×M] = op(A')[N×K] · op(B')[K×M] with A' = B's memory and B' = A's memory.
  const cublasOperation_t op_a = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  ET_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  ET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  ET_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  const cudaDataType_t t = cuda_type(ab_type);
  ET_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, t, trans_b ? K : N, trans_b ? N : K, ldb));
  ET_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, t, trans_a ? M : K, trans_a ? K : M, lda));
  ET_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->c, cuda_type(c_type), N, M, ldc));
  cublasLtMatmulPreference_t preference = nullptr;
  ET_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  size_t workspace = kWorkspaceBytes;
  cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                               &workspace, sizeof(workspace));
  // cuBLASLt's A is our B and its B our A (the operands are swapped above); C and D are our C.
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> alignments[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_c}};
  for (const auto& [attribute, bytes] : alignments)
    if (status == CUBLAS_STATUS_SUCCESS)
      status = cublasLtMatmulPreferenceSetAttribute(preference, attribute, &bytes, sizeof(bytes));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  if (status == CUBLAS_STATUS_SUCCESS)
    status = cublasLtMatmulAlgoGetHeuristic(ctx.handle, plan->op, plan->a, plan->b, plan->c, plan->c, preference, 1,
                                            &heuristic, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  check_cublas(status, "cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__);
  if (found == 0) fail("cuBLASLt has no algorithm for a ", M, "x", N, "x", K, " product");
  plan->algo = heuristic.algo;
  return plan;
}

}  // namespace

void gemm(cudaStream_t stream, bool trans_a, bool trans_b, long M, long N, long K, float alpha, const void* A,
          long lda, const void* B, long ldb, DType ab_type, float beta, void* C, long ldc, DType c_type) {
  if (M == 0 || N == 0) return;
  Context& ctx = context();
  const uint32_t align_a = alignment_of(A), align_b = alignment_of(B), align_c = alignment_of(C);
  const PlanKey key{trans_a, trans_b, M, N, K, lda, ldb, ldc, static_cast<int>(ab_type), static_cast<int>(c_type),
                    align_a, align_b, align_c};
  auto it = ctx.plans.find(key);
  if (it == ctx.plans.end())
    it = ctx.plans
             .emplace(key, make_plan(ctx, trans_a, trans_b, M, N, K, lda, ldb, ldc, ab_type, c_type, align_a, align_b,
                                     align_c))
             .first;
  const Plan& plan = *it->second;
  ET_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, plan.op, &alpha, B, plan.a, A, plan.b, &beta, C, plan.c, C, plan.c,
                                 &plan.algo, ctx.workspace, kWorkspaceBytes, stream));
}

const char* gemm_backend() { return "cublaslt"; }

}  // namespace et::cuda
