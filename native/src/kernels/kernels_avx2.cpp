// The row kernels built for avx2 (flags set per file in CMakeLists.txt).
#define ET_KERNEL_NAMESPACE et_kernels_avx2
#define ET_KERNEL_NAME "avx2"
#include "kernels_impl.inc"

namespace et {
const Kernels& kernels_avx2() { return et_kernels_avx2::table; }
}  // namespace et
