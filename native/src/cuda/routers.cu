// Routers of the mixture methods, one thread per token row (E is small: 2 to a few dozen): the
// softmax, each method's gates exactly as methods/*.cpp computes them (same tie rules, the same
// float/double choices), and the backward through gates and softmax into the router logits.
#include <cmath>

#include "check.h"
#include "kernels.h"

namespace et::cuda {

namespace {

constexpr int kMaxExperts = 256;  // as the CPU adapter

__device__ bool is_shannon(float q) { return fabsf(q - 1.0f) < 1e-6f; }

__device__ double tsallis(const float* p, long E, float q, float eps) {
  if (E < 2) return 0.0;
  double s = 0.0;
  if (is_shannon(q)) {
    for (long e = 0; e < E; ++e) {
      const double x = static_cast<double>(p[e]) + eps;
      s -= x * log(x);
    }
  } else {
    double sum = 0.0;
    for (long e = 0; e < E; ++e) sum += pow(static_cast<double>(p[e]) + eps, static_cast<double>(q));
    s = (1.0 - sum) / (q - 1.0);
  }
  const double max_entropy =
      is_shannon(q) ? log(static_cast<double>(E)) : (1.0 - pow(static_cast<double>(E), 1.0 - q)) / (q - 1.0);
  return s / max_entropy;
}

__global__ void router_forward_kernel(RouterSettings rs, const float* z, long ldz, float* prob, float* gate,
                                      uint8_t* selected, float* lse, uint8_t* broadcast, long rows) {
  const long t = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x;
  if (t >= rows) return;
  const long E = rs.experts;
  float* p = prob + t * E;
  float* g = gate + t * E;
  uint8_t* sel = selected + t * E;
  const float* zt = z + t * ldz;
  float mx = zt[0];
  for (long e = 1; e < E; ++e) mx = fmaxf(mx, zt[e]);
  float sum = 0.0f;
  for (long e = 0; e < E; ++e) {
    p[e] = expf(zt[e] - mx);
    sum += p[e];
  }
  for (long e = 0; e < E; ++e) p[e] /= sum;
  lse[t] = mx + logf(sum);
  broadcast[t] = 0;
  if (rs.kind == ROUTER_LORAMOE) {
    for (long e = 0; e < E; ++e) {
      g[e] = p[e];
      sel[e] = 1;
    }
    return;
  }
  if (rs.kind == ROUTER_MOLA) {
    for (long e = 0; e < E; ++e) sel[e] = 0;
    for (long pick = 0; pick < rs.top_k && pick < E; ++pick) {
      long best = -1;
      for (long e = 0; e < E; ++e)
        if (!sel[e] && (best < 0 || p[e] > p[best])) best = e;  // ties keep the lower index
      sel[best] = 1;
    }
    float kept = 0.0f;
    for (long e = 0; e < E; ++e)
      if (sel[e]) kept += p[e];
    for (long e = 0; e < E; ++e) g[e] = sel[e] ? p[e] / kept : 0.0f;
    return;
  }
  // DynMoLE: broadcast uncertain tokens, else top-p (at least keep_top_k), gates not renormalised.
  const bool wide = tsallis(p, E, rs.entropy_index, rs.entropy_eps) > rs.entropy_threshold;
  broadcast[t] = wide ? 1 : 0;
  if (wide) {
    for (long e = 0; e < E; ++e) sel[e] = 1;
  } else {
    short order[kMaxExperts];
    for (long e = 0; e < E; ++e) {
      long j = e;
      while (j > 0 && p[order[j - 1]] < p[e]) {
        order[j] = order[j - 1];
        --j;
      }
      order[j] = static_cast<short>(e);
    }
    double cumulative = 0.0;
    for (long j = 0; j < E; ++j) {
      cumulative += p[order[j]];
      sel[order[j]] = (cumulative <= rs.top_p || j < rs.keep_top_k) ? 1 : 0;
    }
  }
  for (long e = 0; e < E; ++e) g[e] = sel[e] ? p[e] : 0.0f;
}

__global__ void router_backward_kernel(RouterSettings rs, const float* prob, const float* gate, const uint8_t* selected,
                                       const float* dgate, const float* aux_dprob, const float* zfactor, float* dz,
                                       long lddz, long rows) {
  const long t = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x;
  if (t >= rows) return;
  const long E = rs.experts;
  const float* p = prob + t * E;
  const float* g = gate + t * E;
  const float* dg = dgate + t * E;
  const uint8_t* sel = selected + t * E;
  float dprob[kMaxExperts];
  for (long e = 0; e < E; ++e) dprob[e] = aux_dprob ? aux_dprob[t * E + e] : 0.0f;
  if (rs.kind == ROUTER_MOLA) {
    // g_e = p_e / S on the kept set: dp_e = (dg_e − Σ_{j∈S} g_j dg_j) / S.
    float kept = 0.0f, weighted = 0.0f;
    for (long e = 0; e < E; ++e)
      if (sel[e]) {
        kept += p[e];
        weighted += g[e] * dg[e];
      }
    for (long e = 0; e < E; ++e)
      if (sel[e]) dprob[e] += (dg[e] - weighted) / kept;
  } else {
    for (long e = 0; e < E; ++e) dprob[e] += sel[e] ? dg[e] : 0.0f;
  }
  float delta = 0.0f;
  for (long e = 0; e < E; ++e) delta += p[e] * dprob[e];
  const float zf = zfactor ? zfactor[t] : 0.0f;
  for (long e = 0; e < E; ++e) dz[t * lddz + e] = p[e] * (dprob[e] - delta) + zf * p[e];
}

__global__ void tsallis_kernel(const float* prob, long E, float q, float eps, double* out, long rows) {
  const long t = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x;
  if (t < rows) out[t] = tsallis(prob + t * E, E, q, eps);
}

void check(const RouterSettings& r) {
  if (r.experts < 1 || r.experts > kMaxExperts) fail("router: experts must be in [1, ", kMaxExperts, "], got ", r.experts);
}

}  // namespace

void router_forward(cudaStream_t s, const RouterSettings& r, const float* z, long ldz, float* prob, float* gate,
                    uint8_t* selected, float* lse, uint8_t* broadcast, long rows) {
  check(r);
  if (rows == 0) return;
  router_forward_kernel<<<static_cast<unsigned>((rows + 127) / 128), 128, 0, s>>>(r, z, ldz, prob, gate, selected, lse, broadcast, rows);
  ET_CUDA_CHECK_LAUNCH();
}

void router_backward(cudaStream_t s, const RouterSettings& r, const float* prob, const float* gate,
                     const uint8_t* selected, const float* dgate, const float* aux_dprob, const float* zfactor,
                     float* dz, long lddz, long rows) {
  check(r);
  if (rows == 0) return;
  router_backward_kernel<<<static_cast<unsigned>((rows + 127) / 128), 128, 0, s>>>(r, prob, gate, selected, dgate, aux_dprob, zfactor, dz,
                                                               lddz, rows);
  ET_CUDA_CHECK_LAUNCH();
}

void tsallis_rows(cudaStream_t s, const float* prob, long E, float q, float eps, double* out, long rows) {
  if (rows == 0) return;
  tsallis_kernel<<<static_cast<unsigned>((rows + 127) / 128), 128, 0, s>>>(prob, E, q, eps, out, rows);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace et::cuda
