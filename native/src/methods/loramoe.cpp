// LoRAMoE (Dou et al., arXiv 2312.09979): dense softmax gates over every expert, and the
// localized balancing constraint that pushes one half of the experts towards samples of
// task_type 1 (world knowledge) and the other half towards the rest.
#include <vector>

#include "methods.h"

namespace et {

void loramoe_gates(const float* p, long E, float* gate, uint8_t* sel) {
  for (long e = 0; e < E; ++e) {
    gate[e] = p[e];
    sel[e] = 1;
  }
}

// Q[b, e] = Σ_{t ∈ row b} m_t p_{t,e};  Z = I ⊙ Q with I = 1 ± δ by group and task type;
// L = var(Z) / (mean(Z)² + 1e-10), the variance unbiased over the B·E values.
double loramoe_balance_constraint(const float* p, long E, long batch, long seq, const uint8_t* mask,
                                  const int32_t* task_types, float delta, double scale, float* dp) {
  const long K = batch * E;
  if (K < 2) return 0.0;
  std::vector<double> z(K, 0.0), factor(K, 0.0);
  for (long b = 0; b < batch; ++b) {
    for (long e = 0; e < E; ++e) {
      const int group = e < E / 2 ? 1 : 0;  // the first half serves task_type 1
      factor[b * E + e] = group == task_types[b] ? 1.0 + delta : 1.0 - delta;
    }
    for (long t = b * seq; t < (b + 1) * seq; ++t) {
      if (mask && !mask[t]) continue;
      for (long e = 0; e < E; ++e) z[b * E + e] += p[t * E + e];
    }
  }
  double mean = 0.0;
  for (long i = 0; i < K; ++i) {
    z[i] *= factor[i];
    mean += z[i];
  }
  mean /= K;
  double var = 0.0;
  for (long i = 0; i < K; ++i) var += (z[i] - mean) * (z[i] - mean);
  var /= (K - 1);
  const double denom = mean * mean + 1e-10;
  const double loss = var / denom;
  if (dp) {
    for (long b = 0; b < batch; ++b)
      for (long e = 0; e < E; ++e) {
        const long i = b * E + e;
        const double dz = 2.0 * (z[i] - mean) / ((K - 1) * denom) - var * 2.0 * mean / (K * denom * denom);
        const float g = static_cast<float>(scale * dz * factor[i]);
        for (long t = b * seq; t < (b + 1) * seq; ++t)
          if (!mask || mask[t]) dp[t * E + e] += g;
      }
  }
  return loss;
}

}  // namespace et
