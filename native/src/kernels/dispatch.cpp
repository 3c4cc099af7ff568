#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace et {

const Kernels& kernels_avx512();
const Kernels& kernels_avx2();
const Kernels& kernels_generic();

namespace {
bool cpu_has_avx512() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}
bool cpu_has_avx2() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

const Kernels& select() {
  if (const char* wanted = std::getenv("EXPERTUNE_KERNELS"); wanted && *wanted) {
    if (const Kernels* chosen = kernels_by_name(wanted)) return *chosen;
  }
  if (cpu_has_avx512()) return kernels_avx512();
  if (cpu_has_avx2()) return kernels_avx2();
  return kernels_generic();
}
}  // namespace

const Kernels* kernels_by_name(const char* name) {
  if (std::strcmp(name, "avx512") == 0) return cpu_has_avx512() ? &kernels_avx512() : nullptr;
  if (std::strcmp(name, "avx2") == 0) return cpu_has_avx2() ? &kernels_avx2() : nullptr;
  if (std::strcmp(name, "generic") == 0) return &kernels_generic();
  return nullptr;
}

const Kernels& kernels() {
  static const Kernels& chosen = select();
  return chosen;
}

}  // namespace et
