// The row kernels built for generic (flags set per file in CMakeLists.txt).
#define ET_KERNEL_NAMESPACE et_kernels_generic
#define ET_KERNEL_NAME "generic"
#include "kernels_impl.inc"

namespace et {
const Kernels& kernels_generic() { return et_kernels_generic::table; }
}  // namespace et
