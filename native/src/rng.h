// Counter-based random numbers (docs/engine.md, "Hash and uniform numbers"): every value is a
// pure function of (seed, stream, index), so dropout masks are recomputed instead of stored,
// activation recomputation sees the same masks, and the tfjs engine reproduces them exactly.
#pragma once

// static: each instruction-set build of the kernels keeps its own copy (see kernels_impl.inc).

#include <cstdint>

namespace et {

static inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

static inline uint32_t hash3(uint32_t a, uint32_t b, uint32_t c) { return mix32(c ^ mix32(b ^ mix32(a))); }

// Uniform in [0, 1) with 24 random bits.
static inline float uniform01(uint32_t h) { return static_cast<float>(h >> 8) * (1.0f / 16777216.0f); }

// Keep threshold of a dropout probability p: keep iff hash ≥ floor(p · 2³²).
static inline uint32_t dropout_threshold(float p) {
  double t = static_cast<double>(p) * 4294967296.0;
  return t >= 4294967295.0 ? 0xffffffffu : static_cast<uint32_t>(t);
}

}  // namespace et
