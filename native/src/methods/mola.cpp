// MoLA (Gao et al., arXiv 2402.08562): per-layer expert counts, top-k of the router's softmax,
// renormalised. The expert allocation per layer comes in through et_adapter_config.num_experts.
#include "methods.h"

namespace et {

void top_k_mask(const float* score, long E, long k, uint8_t* sel) {
  for (long e = 0; e < E; ++e) sel[e] = 0;
  for (long pick = 0; pick < k && pick < E; ++pick) {
    long best = -1;
    for (long e = 0; e < E; ++e)
      if (!sel[e] && (best < 0 || score[e] > score[best])) best = e;  // strict: ties keep the lower index
    sel[best] = 1;
  }
}

void mola_gates(const float* p, long E, long k, float* gate, uint8_t* sel) {
  top_k_mask(p, E, k, sel);
  float kept = 0.0f;
  for (long e = 0; e < E; ++e)
    if (sel[e]) kept += p[e];
  for (long e = 0; e < E; ++e) gate[e] = sel[e] ? p[e] / kept : 0.0f;
}

// g_e = p_e / S on the kept set S: dp_e = (dg_e − Σ_{j∈S} g_j dg_j) / S.
void mola_gates_backward(const float* p, const float* gate, const uint8_t* sel, const float* dgate, long E,
                         float* dp) {
  float kept = 0.0f, weighted = 0.0f;
  for (long e = 0; e < E; ++e)
    if (sel[e]) {
      kept += p[e];
      weighted += gate[e] * dgate[e];
    }
  for (long e = 0; e < E; ++e)
    if (sel[e]) dp[e] += (dgate[e] - weighted) / kept;
}

}  // namespace et
