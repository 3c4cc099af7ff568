// The row kernels built for avx512 (flags set per file in CMakeLists.txt).
#define ET_KERNEL_NAMESPACE et_kernels_avx512
#define ET_KERNEL_NAME "avx512"
#include "kernels_impl.inc"

namespace et {
const Kernels& kernels_avx512() { return et_kernels_avx512::table; }
}  // namespace et
