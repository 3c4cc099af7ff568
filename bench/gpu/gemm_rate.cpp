// The rate of the engine's own GEMM path (native/src/cuda/gemm.h, cuBLASLt) at the shapes of one
// training step of the benchmark model, next to a square 8192³ product: run.sh sets these against
// PyTorch's measured bf16 matrix rate (matmul_probe.py) for the issue's "base GEMMs ≥ 60 % of the
// measured bf16 rate". Prints one JSON line per shape.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cuda/check.h"
#include "cuda/gemm.h"

namespace {

using et::cuda::DType;

struct Shape {
  const char* name;
  bool ta, tb;
  long M, N, K;
};

double time_gemm(const Shape& s, int repeats) {
  const long a_count = s.M * s.K, b_count = s.K * s.N, c_count = s.M * s.N;
  void *A, *B, *C;
  ET_CUDA_CHECK(cudaMalloc(&A, a_count * 2));
  ET_CUDA_CHECK(cudaMalloc(&B, b_count * 2));
  ET_CUDA_CHECK(cudaMalloc(&C, c_count * 4));
  ET_CUDA_CHECK(cudaMemset(A, 0, a_count * 2));  // zeros: the rate does not depend on values
  ET_CUDA_CHECK(cudaMemset(B, 0, b_count * 2));
  const long lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
  auto run = [&] {
    et::cuda::gemm(nullptr, s.ta, s.tb, s.M, s.N, s.K, 1.0f, A, lda, B, ldb, DType::BF16, 0.0f, C, s.N, DType::F32);
  };
  for (int i = 0; i < 3; ++i) run();
  cudaEvent_t start, stop;
  ET_CUDA_CHECK(cudaEventCreate(&start));
  ET_CUDA_CHECK(cudaEventCreate(&stop));
  ET_CUDA_CHECK(cudaEventRecord(start));
  for (int i = 0; i < repeats; ++i) run();
  ET_CUDA_CHECK(cudaEventRecord(stop));
  ET_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0.0f;
  ET_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(A);
  cudaFree(B);
  cudaFree(C);
  return 2.0 * s.M * s.N * s.K * repeats / (ms * 1e-3) / 1e12;
}

}  // namespace

int main(int argc, char** argv) {
  // The benchmark model (bench/gpu/README.md): d 2048, 16/8 heads of 128, F 5632, V 32000,
  // batch 8 × 1024 tokens; LoRA r = 16 on all 7 projections adds 3·16 / 16 / 2·16 / 16 columns.
  const long N = argc > 1 ? std::stol(argv[1]) : 8192, d = 2048, qkv = 4096, F = 5632, V = 32000;
  const std::vector<Shape> shapes = {
      {"square_8192", false, true, 8192, 8192, 8192},
      {"qkv_forward", false, true, N, qkv, d + 48},
      {"o_forward", false, true, N, d, d + 16},
      {"gate_up_forward", false, true, N, 2 * F, d + 32},
      {"down_forward", false, true, N, d, F + 16},
      {"qkv_input_grad", false, false, N, d + 48, qkv},
      {"gate_up_input_grad", false, false, N, d + 32, 2 * F},
      {"down_input_grad", false, false, N, F + 16, d},
      {"lm_head_forward", false, true, N, V, d},
  };
  try {
    for (const Shape& s : shapes)
      std::printf("{\"impl\":\"expertune_gemm\",\"shape\":\"%s\",\"M\":%ld,\"N\":%ld,\"K\":%ld,\"tflops\":%.1f,\"backend\":\"%s\"}\n",
                  s.name, s.M, s.N, s.K, time_gemm(s, 20), et::cuda::gemm_backend());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gemm_rate: %s\n", e.what());
    return 1;
  }
  return 0;
}
