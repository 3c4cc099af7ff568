// FlyLoRA (arXiv 2510.08396): r rank-1 experts whose frozen sparse random down-projection A is
// also the router: the top-k ranks of a + d are active per token; only B trains, and the bias d
// balances rank usage without a loss (updated after each training micro-batch, never in
// inference).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "../adapter.h"
#include "../rng.h"
#include "methods.h"

namespace et {

void flylora_gates(const float* a, const float* bias, long r, long k, bool by_magnitude, float* gate, uint8_t* sel) {
  auto score = [&](long i) { return by_magnitude ? std::fabs(a[i] + bias[i]) : a[i] + bias[i]; };
  for (long i = 0; i < r; ++i) sel[i] = 0;
  for (long pick = 0; pick < k && pick < r; ++pick) {
    long best = -1;
    float best_score = 0.0f;
    for (long i = 0; i < r; ++i) {
      if (sel[i]) continue;
      const float v = score(i);
      if (best < 0 || v > best_score) {  // strict: ties keep the lower index
        best = i;
        best_score = v;
      }
    }
    sel[best] = 1;
  }
  for (long i = 0; i < r; ++i) gate[i] = sel[i] ? 1.0f : 0.0f;
}

void flylora_init_a(SparseRows& a, uint32_t seed, uint32_t site, long r, long k, long in) {
  const long per_row = in / (r / k);
  a.rows = r;
  a.cols = in;
  a.per_row = per_row;
  a.column.assign(r * per_row, 0);
  a.value.resize(r * per_row);
  std::vector<int32_t> perm(in);
  const double kTwoPi = 6.283185307179586;
  for (long i = 0; i < r; ++i) {
    std::iota(perm.begin(), perm.end(), 0);
    for (long j = 0; j < per_row; ++j) {
      const uint32_t h = hash3(seed, 2u * site, static_cast<uint32_t>(i * in + j));
      const long pick = j + static_cast<long>(std::floor(static_cast<double>(uniform01(h)) * (in - j)));
      std::swap(perm[j], perm[pick]);
    }
    std::sort(perm.begin(), perm.begin() + per_row);
    for (long q = 0; q < per_row; ++q) {
      const uint32_t m = static_cast<uint32_t>(i * per_row + q);
      const double u1 = uniform01(hash3(seed, 2u * site + 1u, 2u * m));
      const double u2 = uniform01(hash3(seed, 2u * site + 1u, 2u * m + 1u));
      a.column[i * per_row + q] = perm[q];
      a.value[i * per_row + q] =
          static_cast<float>((1.0 / r) * std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(kTwoPi * u2));
    }
  }
}

}  // namespace et
