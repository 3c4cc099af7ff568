// Status checks for every CUDA runtime call: a failure becomes an et::Error naming the call, the
// file and line, and CUDA's own error string, so the C API reports it through et_last_error().
#pragma once

#include <cuda_runtime_api.h>

#include "../common.h"

namespace et::cuda {

inline void check_status(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess) fail(file, ":", line, ": ", call, " failed: ", cudaGetErrorString(status));
}

}  // namespace et::cuda

#define ET_CUDA_CHECK(call) ::et::cuda::check_status((call), #call, __FILE__, __LINE__)
// After a kernel launch: a bad configuration shows up here; faults inside the kernel show up at
// the next synchronising call (tests synchronise after every kernel).
#define ET_CUDA_CHECK_LAUNCH() ::et::cuda::check_status(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
