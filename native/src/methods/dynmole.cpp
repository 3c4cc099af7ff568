// DynMoLE (arXiv 2504.00661): tokens whose router distribution is uncertain (normalised Tsallis
// entropy above a threshold) go to every expert; the others to a top-p set that excludes the
// expert crossing top_p and keeps at least keep_top_k. Gates are the kept probabilities, not
// renormalised.
#include <cmath>

#include "methods.h"

namespace et {

namespace {
bool is_shannon(float q) { return std::fabs(q - 1.0f) < 1e-6f; }
double max_entropy(long E, float q) {
  return is_shannon(q) ? std::log(static_cast<double>(E)) : (1.0 - std::pow(static_cast<double>(E), 1.0 - q)) / (q - 1.0);
}
}  // namespace

double tsallis_normalized(const float* p, long E, float q, float eps) {
  if (E < 2) return 0.0;
  double s = 0.0;
  if (is_shannon(q)) {
    for (long e = 0; e < E; ++e) {
      const double x = static_cast<double>(p[e]) + eps;
      s -= x * std::log(x);
    }
  } else {
    double sum = 0.0;
    for (long e = 0; e < E; ++e) sum += std::pow(static_cast<double>(p[e]) + eps, static_cast<double>(q));
    s = (1.0 - sum) / (q - 1.0);
  }
  return s / max_entropy(E, q);
}

void tsallis_normalized_backward(const float* p, long E, float q, float eps, double scale, float* dp) {
  if (E < 2) return;
  const double norm = scale / max_entropy(E, q);
  for (long e = 0; e < E; ++e) {
    const double x = static_cast<double>(p[e]) + eps;
    const double d = is_shannon(q) ? -(std::log(x) + 1.0) : -q * std::pow(x, q - 1.0) / (q - 1.0);
    dp[e] += static_cast<float>(norm * d);
  }
}

bool dynmole_gates(const float* p, long E, float q, float eps, float threshold, float top_p, long keep_top_k,
                   float* gate, uint8_t* sel) {
  const bool broadcast = tsallis_normalized(p, E, q, eps) > threshold;
  if (broadcast) {
    for (long e = 0; e < E; ++e) sel[e] = 1;
  } else {
    // Experts by descending probability, ties toward the lower index (insertion sort: E is small).
    long order[256];
    for (long e = 0; e < E; ++e) {
      long j = e;
      while (j > 0 && p[order[j - 1]] < p[e]) {
        order[j] = order[j - 1];
        --j;
      }
      order[j] = e;
    }
    double cumulative = 0.0;
    for (long j = 0; j < E; ++j) {
      cumulative += p[order[j]];
      sel[order[j]] = (cumulative <= top_p || j < keep_top_k) ? 1 : 0;
    }
  }
  for (long e = 0; e < E; ++e) gate[e] = sel[e] ? p[e] : 0.0f;
  return broadcast;
}

}  // namespace et
