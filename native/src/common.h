// Shared plumbing of the native core: errors, aligned float buffers, small helpers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

namespace et {

// Every failure inside the core is an Error; the C API turns it into -1 + et_last_error().
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  std::ostringstream message;
  (message << ... << parts);
  throw Error(message.str());
}

// A 64-byte aligned float array (one cache line, one AVX-512 register), zero-initialised.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t count) { resize(count); }
  void resize(size_t count) {
    if (count == count_) return;
    data_.reset();
    count_ = 0;
    if (count == 0) return;
    size_t bytes = ((count * sizeof(float) + 63) / 64) * 64;
    void* memory = std::aligned_alloc(64, bytes);
    if (!memory) fail("out of memory allocating ", bytes, " bytes");
    std::memset(memory, 0, bytes);
    data_.reset(static_cast<float*>(memory));
    count_ = count;
  }
  // Grows (never shrinks) to at least count floats; contents are not preserved.
  void reserve(size_t count) {
    if (count > count_) resize(count);
  }
  void zero() {
    if (count_) std::memset(data_.get(), 0, count_ * sizeof(float));
  }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  float& operator[](size_t i) { return data_.get()[i]; }
  const float& operator[](size_t i) const { return data_.get()[i]; }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data_;
  size_t count_ = 0;
};

// Flush denormals to zero on this thread while in scope. Late in training, gradients and Adam's
// second moments drift into the denormal range, where every operation on them costs ~100 cycles:
// without this a converging run slows down several times over. Values below 1e-38 do not matter.
class FlushDenormals {
 public:
#if defined(__x86_64__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040u); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#endif
};

// A parameter: its values and, while it is trainable, its accumulated gradient.
struct Tensor {
  Buffer value, grad;
};

}  // namespace et
