// The sgemm rate of this machine, the "floor" the engine benchmark divides by: OpenBLAS with
// its own threads, and OpenBLAS single-threaded under our pool (what the engine does).
// Prints one JSON line. Usage: bench_sgemm [threads] [M N K]...
#include <cblas.h>

#include <algorithm>
#include <array>
#include <functional>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "blas.h"
#include "threadpool.h"

namespace {
double best_seconds(int repeats, const std::function<void()>& f) {
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}
}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  std::vector<std::array<long, 3>> shapes;
  for (int i = 2; i + 2 < argc; i += 3) shapes.push_back({std::atol(argv[i]), std::atol(argv[i + 1]), std::atol(argv[i + 2])});
  if (shapes.empty()) shapes = {{1024, 1024, 1024}, {2048, 1408, 512}, {2048, 8192, 512}};
  et::blas_init();
  et::ThreadPool::global().resize(threads);
  std::printf("{\"blas\":\"%s\",\"threads\":%d,\"shapes\":[", et::blas_info(), threads);
  for (size_t s = 0; s < shapes.size(); ++s) {
    const long M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
    std::vector<float> A(M * K, 0.5f), B(K * N, 0.25f), C(M * N);
    const double flops = 2.0 * M * N * K;
    openblas_set_num_threads(threads);
    double own = best_seconds(7, [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C.data(), N);
    });
    openblas_set_num_threads(1);
    double pooled = best_seconds(7, [&] {
      et::gemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C.data(), N);
    });
    std::printf("%s{\"M\":%ld,\"N\":%ld,\"K\":%ld,\"openblas_threads_gflops\":%.1f,\"pool_gflops\":%.1f}",
                s ? "," : "", M, N, K, flops / own / 1e9, flops / pooled / 1e9);
  }
  std::printf("]}\n");
  return 0;
}
