// Causal GQA attention on tensor cores (bf16 WMMA 16×16×16, fp32 accumulation): the same
// algorithm as attention.cu (online softmax forward; backward recomputing P from the logsumexp,
// one kernel for dQ and one for dK/dV looping over the query heads of a KV group), with the
// three products of each tile on mma instead of CUDA-core FMAs. Head dims 64 and 128.
//
// Layout per block: 64 rows (queries, or keys for dK/dV), 4 warps × 16 rows. Operands are staged
// in shared memory as bf16 (inputs arrive in fp32 and are rounded once); scores, probabilities'
// gradients and the forward's running output stay fp32. Each warp touches only its own 16 rows
// of the score/output tiles, so between the products a warp synchronises only with itself.
#include <mma.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "check.h"
#include "kernels.h"
#include "reduce.cuh"

namespace et::cuda {

namespace {

using namespace nvcuda;

constexpr int kRows = 64;      // queries (or keys) per block
constexpr int kCols = 64;      // keys (or queries) per tile
constexpr int kWarps = 4;      // 16 rows each
constexpr int kPadH = 8;       // bf16 padding of operand rows (ldm stays a multiple of 8)
constexpr int kPadS = 4;       // fp32 padding of score rows (ldm stays a multiple of 4)
constexpr int kLdS = kCols + kPadS;
constexpr int kLdP = kCols + kPadH;
constexpr float kNegInf = -INFINITY;

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

__device__ __forceinline__ bool visible(long query_pos, long key_pos, long window) {
  return key_pos <= query_pos && (window <= 0 || query_pos - key_pos < window);
}

// Rows [row0, row0 + 64) of a head (fp32, stride ld) into a bf16 tile [64][HD + pad]; zero past limit.
template <int HD>
__device__ void stage(bf16* tile, const float* src, long ld, long row0, long limit) {
  constexpr int ld_tile = HD + kPadH;
  for (int idx = threadIdx.x; idx < kRows * HD; idx += blockDim.x) {
    const int r = idx / HD, c = idx % HD;
    tile[r * ld_tile + c] = __float2bfloat16(row0 + r < limit ? src[(row0 + r) * ld + c] : 0.0f);
  }
}

// out[16 × 64] (fp32, row stride kLdS) = A[16 rows of `a`] · B[64 rows of `b`]ᵀ over HD.
template <int HD>
__device__ void rows_times_rows_t(const bf16* a, const bf16* b, float* out) {
  constexpr int ld = HD + kPadH;
#pragma unroll
  for (int j = 0; j < kCols / 16; ++j) {
    FragC acc;
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int k = 0; k < HD / 16; ++k) {
      FragA fa;
      FragBCol fb;
      wmma::load_matrix_sync(fa, a + k * 16, ld);
      wmma::load_matrix_sync(fb, b + j * 16 * ld + k * 16, ld);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(out + j * 16, acc, kLdS, wmma::mem_row_major);
  }
}

// acc[n] (+)= P[16 × 64] (bf16, stride kLdP) · V[64 × HD] (bf16 rows), n over HD/16 column blocks.
template <int HD>
__device__ void probs_times_rows(const bf16* p, const bf16* v, FragC* acc) {
  constexpr int ld = HD + kPadH;
#pragma unroll
  for (int k = 0; k < kCols / 16; ++k) {
    FragA fa;
    wmma::load_matrix_sync(fa, p + k * 16, kLdP);
#pragma unroll
    for (int n = 0; n < HD / 16; ++n) {
      FragBRow fb;
      wmma::load_matrix_sync(fb, v + k * 16 * ld + n * 16, ld);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

template <int HD>
constexpr size_t forward_smem() {
  return 3 * kRows * (HD + kPadH) * sizeof(bf16) + kRows * kLdS * sizeof(float) + kRows * kLdP * sizeof(bf16) +
         kRows * (HD + kPadS) * sizeof(float);
}

template <int HD, typename Out>
__global__ void __launch_bounds__(kWarps * 32) forward_mma(AttentionDims d, const float* q, long ldq, const float* k,
                                                           const float* v, long ldkv, Out* out, long ldo, float* lse) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int ld = HD + kPadH, ld_o = HD + kPadS;
  bf16* q_tile = reinterpret_cast<bf16*>(smem);
  bf16* k_tile = q_tile + kRows * ld;
  bf16* v_tile = k_tile + kRows * ld;
  float* scores = reinterpret_cast<float*>(v_tile + kRows * ld);
  bf16* probs = reinterpret_cast<bf16*>(scores + kRows * kLdS);
  float* o_tile = reinterpret_cast<float*>(probs + kRows * kLdP);
  const long b = blockIdx.z, h = blockIdx.y, g = h / (d.heads / d.kv_heads), i0 = blockIdx.x * kRows;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, row0 = warp * 16;
  const float* k_head = k + b * d.kv_rows * ldkv + g * HD;
  const float* v_head = v + b * d.kv_rows * ldkv + g * HD;
  stage<HD>(q_tile, q + b * d.nq * ldq + h * HD, ldq, i0, d.nq);
  for (int idx = threadIdx.x; idx < kRows * ld_o; idx += blockDim.x) o_tile[idx] = 0.0f;

  const long first_pos = d.q_pos0 + i0, last_pos = d.q_pos0 + min(i0 + kRows, d.nq) - 1;
  const long key_lo = d.window > 0 ? max(0L, first_pos - d.window + 1) : 0L, key_hi = last_pos + 1;
  // Running max and sum of each of the warp's 16 rows: lane r < 16 holds row r's.
  float m_row = kNegInf, l_row = 0.0f;
  for (long k0 = key_lo; k0 < key_hi; k0 += kCols) {
    __syncthreads();
    stage<HD>(k_tile, k_head, ldkv, k0, key_hi);
    stage<HD>(v_tile, v_head, ldkv, k0, key_hi);
    __syncthreads();
    rows_times_rows_t<HD>(q_tile + row0 * ld, k_tile, scores + row0 * kLdS);
    __syncwarp();
    for (int r = 0; r < 16; ++r) {
      const long qi = i0 + row0 + r, qpos = d.q_pos0 + qi;
      float s[2];
      float tile_max = kNegInf;
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        const long key = k0 + lane + 32 * t;
        const bool seen = qi < d.nq && key < key_hi && visible(qpos, key, d.window);
        s[t] = seen ? d.scale * scores[(row0 + r) * kLdS + lane + 32 * t] : kNegInf;
        tile_max = fmaxf(tile_max, s[t]);
      }
      tile_max = warp_max(tile_max);
      const float m_old = __shfl_sync(kFullMask, m_row, r);
      const float m_new = fmaxf(m_old, tile_max);
      // A row with nothing visible yet keeps everything at zero.
      const float correction = m_new == kNegInf ? 1.0f : __expf(m_old - m_new);
      float sum = 0.0f;
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        const float p = s[t] == kNegInf ? 0.0f : __expf(s[t] - m_new);
        sum += p;
        probs[(row0 + r) * kLdP + lane + 32 * t] = __float2bfloat16(p);
      }
      sum = warp_sum(sum);
      for (int c = lane; c < HD; c += 32) o_tile[(row0 + r) * ld_o + c] *= correction;
      if (lane == r) {
        l_row = l_row * correction + sum;
        m_row = m_new;
      }
    }
    __syncwarp();
    FragC acc[HD / 16];
#pragma unroll
    for (int n = 0; n < HD / 16; ++n)
      wmma::load_matrix_sync(acc[n], o_tile + row0 * ld_o + n * 16, ld_o, wmma::mem_row_major);
    probs_times_rows<HD>(probs + row0 * kLdP, v_tile, acc);
#pragma unroll
    for (int n = 0; n < HD / 16; ++n)
      wmma::store_matrix_sync(o_tile + row0 * ld_o + n * 16, acc[n], ld_o, wmma::mem_row_major);
    __syncwarp();
  }
  for (int r = 0; r < 16; ++r) {
    const long qi = i0 + row0 + r;
    const float l = __shfl_sync(kFullMask, l_row, r), m = __shfl_sync(kFullMask, m_row, r);
    if (qi >= d.nq) continue;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    Out* o = out + (b * d.nq + qi) * ldo + h * HD;
    for (int c = lane; c < HD; c += 32) o[c] = from_float<Out>(o_tile[(row0 + r) * ld_o + c] * inv);
    if (lse && lane == 0) lse[(b * d.heads + h) * d.nq + qi] = l > 0.0f ? m + logf(l) : kNegInf;
  }
}

template <typename Out>
__global__ void delta_mma(AttentionDims d, const Out* out, long ldo, const float* dout, long lddo, float* delta) {
  const long item = blockIdx.x * static_cast<long>(blockDim.x / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (item >= d.batch * d.nq * d.heads) return;
  const long row = item / d.heads, h = item % d.heads, b = row / d.nq, i = row % d.nq;
  float s = 0.0f;
  for (long c = lane; c < d.head_dim; c += 32)
    s += to_float(out[row * ldo + h * d.head_dim + c]) * dout[row * lddo + h * d.head_dim + c];
  s = warp_sum(s);
  if (lane == 0) delta[(b * d.heads + h) * d.nq + i] = s;
}

template <int HD>
constexpr size_t dq_smem() {
  return 4 * kRows * (HD + kPadH) * sizeof(bf16) + 2 * kRows * kLdS * sizeof(float) + kRows * kLdP * sizeof(bf16);
}

// dQ for 64 queries of one head: per key tile S = QKᵀ, dP = dO·Vᵀ, dS = P ⊙ (dP − Δ), dQ += dS·K.
template <int HD>
__global__ void __launch_bounds__(kWarps * 32) dq_mma(AttentionDims d, const float* q, long ldq, const float* k,
                                                      const float* v, long ldkv, const float* dout, long lddo,
                                                      const float* lse, const float* delta, float* dq, long lddq) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int ld = HD + kPadH;
  bf16* q_tile = reinterpret_cast<bf16*>(smem);
  bf16* do_tile = q_tile + kRows * ld;
  bf16* k_tile = do_tile + kRows * ld;
  bf16* v_tile = k_tile + kRows * ld;
  float* scores = reinterpret_cast<float*>(v_tile + kRows * ld);
  float* dprobs = scores + kRows * kLdS;
  bf16* dscores = reinterpret_cast<bf16*>(dprobs + kRows * kLdS);
  const long b = blockIdx.z, h = blockIdx.y, g = h / (d.heads / d.kv_heads), i0 = blockIdx.x * kRows;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, row0 = warp * 16;
  const float* k_head = k + b * d.kv_rows * ldkv + g * HD;
  const float* v_head = v + b * d.kv_rows * ldkv + g * HD;
  const float* lse_head = lse + (b * d.heads + h) * d.nq;
  const float* delta_head = delta + (b * d.heads + h) * d.nq;
  stage<HD>(q_tile, q + b * d.nq * ldq + h * HD, ldq, i0, d.nq);
  stage<HD>(do_tile, dout + b * d.nq * lddo + h * HD, lddo, i0, d.nq);

  const long last = min(i0 + kRows, d.nq) - 1;
  const long key_lo = d.window > 0 ? max(0L, i0 - d.window + 1) : 0L, key_hi = last + 1;
  FragC acc[HD / 16];
#pragma unroll
  for (int n = 0; n < HD / 16; ++n) wmma::fill_fragment(acc[n], 0.0f);
  for (long k0 = key_lo; k0 < key_hi; k0 += kCols) {
    __syncthreads();
    stage<HD>(k_tile, k_head, ldkv, k0, key_hi);
    stage<HD>(v_tile, v_head, ldkv, k0, key_hi);
    __syncthreads();
    rows_times_rows_t<HD>(q_tile + row0 * ld, k_tile, scores + row0 * kLdS);
    rows_times_rows_t<HD>(do_tile + row0 * ld, v_tile, dprobs + row0 * kLdS);
    __syncwarp();
    for (int r = 0; r < 16; ++r) {
      const long qi = i0 + row0 + r;
      const float row_lse = qi < d.nq ? lse_head[qi] : 0.0f, row_delta = qi < d.nq ? delta_head[qi] : 0.0f;
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        const int c = lane + 32 * t;
        const long key = k0 + c;
        float ds = 0.0f;
        if (qi < d.nq && key < key_hi && visible(qi, key, d.window)) {
          const float p = __expf(d.scale * scores[(row0 + r) * kLdS + c] - row_lse);
          ds = p * (dprobs[(row0 + r) * kLdS + c] - row_delta);
        }
        dscores[(row0 + r) * kLdP + c] = __float2bfloat16(ds);
      }
    }
    __syncwarp();
    probs_times_rows<HD>(dscores + row0 * kLdP, k_tile, acc);
  }
  // Through shared memory (the score tile is free now) to scale and write only valid rows.
  __syncwarp();
  float* staging = scores + row0 * kLdS;  // 16 × 64 floats: one 64-column half of HD at a time
  for (int half = 0; half < HD / kCols; ++half) {
#pragma unroll
    for (int n = 0; n < kCols / 16; ++n)
      wmma::store_matrix_sync(staging + n * 16, acc[half * (kCols / 16) + n], kLdS, wmma::mem_row_major);
    __syncwarp();
    for (int r = 0; r < 16; ++r) {
      const long qi = i0 + row0 + r;
      if (qi >= d.nq) continue;
      float* o = dq + (b * d.nq + qi) * lddq + h * HD + half * kCols;
      for (int c = lane; c < kCols; c += 32) o[c] = d.scale * staging[r * kLdS + c];
    }
    __syncwarp();
  }
}

template <int HD>
constexpr size_t dkdv_smem() {
  return 4 * kRows * (HD + kPadH) * sizeof(bf16) + 2 * kRows * kLdS * sizeof(float) +
         2 * kRows * kLdP * sizeof(bf16) + 2 * kCols * sizeof(float);
}

// dK, dV for 64 keys of one KV head, over every query head of the group and every query tile that
// sees them: Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, dV += Pᵀ·dO, dK += dSᵀ·Q.
template <int HD>
__global__ void __launch_bounds__(kWarps * 32) dkdv_mma(AttentionDims d, const float* q, long ldq, const float* k,
                                                        const float* v, long ldkv, const float* dout, long lddo,
                                                        const float* lse, const float* delta, float* dk, float* dv,
                                                        long lddkv) {
  extern __shared__ __align__(128) unsigned char smem[];
  constexpr int ld = HD + kPadH;
  bf16* k_tile = reinterpret_cast<bf16*>(smem);
  bf16* v_tile = k_tile + kRows * ld;
  bf16* q_tile = v_tile + kRows * ld;
  bf16* do_tile = q_tile + kRows * ld;
  float* scores_t = reinterpret_cast<float*>(do_tile + kRows * ld);
  float* dprobs_t = scores_t + kRows * kLdS;
  bf16* probs_t = reinterpret_cast<bf16*>(dprobs_t + kRows * kLdS);
  bf16* dscores_t = probs_t + kRows * kLdP;
  float* lse_tile = reinterpret_cast<float*>(dscores_t + kRows * kLdP);
  float* delta_tile = lse_tile + kCols;
  const long b = blockIdx.z, g = blockIdx.y, j0 = blockIdx.x * kRows, group = d.heads / d.kv_heads;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, row0 = warp * 16;
  const long nk = d.nq;
  stage<HD>(k_tile, k + b * d.kv_rows * ldkv + g * HD, ldkv, j0, nk);
  stage<HD>(v_tile, v + b * d.kv_rows * ldkv + g * HD, ldkv, j0, nk);
  const long j_last = min(j0 + kRows, nk) - 1;
  const long q_lo = j0, q_hi = d.window > 0 ? min(d.nq, j_last + d.window) : d.nq;

  FragC dk_acc[HD / 16], dv_acc[HD / 16];
#pragma unroll
  for (int n = 0; n < HD / 16; ++n) {
    wmma::fill_fragment(dk_acc[n], 0.0f);
    wmma::fill_fragment(dv_acc[n], 0.0f);
  }
  for (long h = g * group; h < (g + 1) * group; ++h) {
    const float* lse_head = lse + (b * d.heads + h) * d.nq;
    const float* delta_head = delta + (b * d.heads + h) * d.nq;
    for (long i0 = q_lo; i0 < q_hi; i0 += kCols) {
      __syncthreads();
      stage<HD>(q_tile, q + b * d.nq * ldq + h * HD, ldq, i0, q_hi);
      stage<HD>(do_tile, dout + b * d.nq * lddo + h * HD, lddo, i0, q_hi);
      if (threadIdx.x < kCols) {
        const long i = i0 + threadIdx.x;
        lse_tile[threadIdx.x] = i < q_hi ? lse_head[i] : 0.0f;
        delta_tile[threadIdx.x] = i < q_hi ? delta_head[i] : 0.0f;
      }
      __syncthreads();
      rows_times_rows_t<HD>(k_tile + row0 * ld, q_tile, scores_t + row0 * kLdS);
      rows_times_rows_t<HD>(v_tile + row0 * ld, do_tile, dprobs_t + row0 * kLdS);
      __syncwarp();
      for (int r = 0; r < 16; ++r) {
        const long key = j0 + row0 + r;
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          const int c = lane + 32 * t;
          const long qi = i0 + c;
          float p = 0.0f, ds = 0.0f;
          if (key < nk && qi < q_hi && visible(qi, key, d.window)) {
            p = __expf(d.scale * scores_t[(row0 + r) * kLdS + c] - lse_tile[c]);
            ds = p * (dprobs_t[(row0 + r) * kLdS + c] - delta_tile[c]);
          }
          probs_t[(row0 + r) * kLdP + c] = __float2bfloat16(p);
          dscores_t[(row0 + r) * kLdP + c] = __float2bfloat16(ds);
        }
      }
      __syncwarp();
      probs_times_rows<HD>(probs_t + row0 * kLdP, do_tile, dv_acc);
      probs_times_rows<HD>(dscores_t + row0 * kLdP, q_tile, dk_acc);
    }
  }
  __syncwarp();
  float* staging = scores_t + row0 * kLdS;
  for (int which = 0; which < 2; ++which) {
    FragC* acc = which == 0 ? dk_acc : dv_acc;
    float* target = which == 0 ? dk : dv;
    const float factor = which == 0 ? d.scale : 1.0f;
    for (int half = 0; half < HD / kCols; ++half) {
#pragma unroll
      for (int n = 0; n < kCols / 16; ++n)
        wmma::store_matrix_sync(staging + n * 16, acc[half * (kCols / 16) + n], kLdS, wmma::mem_row_major);
      __syncwarp();
      for (int r = 0; r < 16; ++r) {
        const long key = j0 + row0 + r;
        if (key >= nk) continue;
        float* o = target + (b * d.kv_rows + key) * lddkv + g * HD + half * kCols;
        for (int c = lane; c < kCols; c += 32) o[c] = factor * staging[r * kLdS + c];
      }
      __syncwarp();
    }
  }
}

template <typename Kernel>
void allow_shared(Kernel kernel, size_t bytes) {
  ET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <int HD, typename Out>
void forward_hd(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k, const float* v,
                long ldkv, Out* out, long ldo, float* lse) {
  constexpr size_t bytes = forward_smem<HD>();
  allow_shared(forward_mma<HD, Out>, bytes);
  const dim3 grid(blocks_for(d.nq, kRows), static_cast<unsigned>(d.heads), static_cast<unsigned>(d.batch));
  forward_mma<HD, Out><<<grid, kWarps * 32, bytes, s>>>(d, q, ldq, k, v, ldkv, out, ldo, lse);
  ET_CUDA_CHECK_LAUNCH();
}

template <int HD, typename Out>
void backward_hd(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k, const float* v,
                 long ldkv, const Out* out, long ldo, const float* dout, long lddo, const float* lse, float* delta,
                 float* dq, long lddq, float* dk, float* dv, long lddkv) {
  const long items = d.batch * d.nq * d.heads;
  delta_mma<Out><<<blocks_for(items, 8), 256, 0, s>>>(d, out, ldo, dout, lddo, delta);
  ET_CUDA_CHECK_LAUNCH();
  constexpr size_t dq_bytes = dq_smem<HD>();
  allow_shared(dq_mma<HD>, dq_bytes);
  const dim3 dq_grid(blocks_for(d.nq, kRows), static_cast<unsigned>(d.heads), static_cast<unsigned>(d.batch));
  dq_mma<HD><<<dq_grid, kWarps * 32, dq_bytes, s>>>(d, q, ldq, k, v, ldkv, dout, lddo, lse, delta, dq, lddq);
  ET_CUDA_CHECK_LAUNCH();
  constexpr size_t kv_bytes = dkdv_smem<HD>();
  allow_shared(dkdv_mma<HD>, kv_bytes);
  const dim3 kv_grid(blocks_for(d.nq, kRows), static_cast<unsigned>(d.kv_heads), static_cast<unsigned>(d.batch));
  dkdv_mma<HD><<<kv_grid, kWarps * 32, kv_bytes, s>>>(d, q, ldq, k, v, ldkv, dout, lddo, lse, delta, dk, dv, lddkv);
  ET_CUDA_CHECK_LAUNCH();
}

template <typename Out>
void forward(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k, const float* v,
             long ldkv, Out* out, long ldo, float* lse) {
  if (d.batch == 0 || d.nq == 0) return;
  if (d.head_dim == 64) return forward_hd<64>(s, d, q, ldq, k, v, ldkv, out, ldo, lse);
  if (d.head_dim == 128) return forward_hd<128>(s, d, q, ldq, k, v, ldkv, out, ldo, lse);
  fail("tensor-core attention: head_dim must be 64 or 128, got ", d.head_dim);
}

template <typename Out>
void backward(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k, const float* v,
              long ldkv, const Out* out, long ldo, const float* dout, long lddo, const float* lse, float* delta,
              float* dq, long lddq, float* dk, float* dv, long lddkv) {
  if (d.q_pos0 != 0 || d.kv_rows != d.nq) fail("attention backward: training layout only (q_pos0 = 0, kv_rows = nq)");
  if (d.batch == 0 || d.nq == 0) return;
  if (d.head_dim == 64)
    return backward_hd<64>(s, d, q, ldq, k, v, ldkv, out, ldo, dout, lddo, lse, delta, dq, lddq, dk, dv, lddkv);
  if (d.head_dim == 128)
    return backward_hd<128>(s, d, q, ldq, k, v, ldkv, out, ldo, dout, lddo, lse, delta, dq, lddq, dk, dv, lddkv);
  fail("tensor-core attention: head_dim must be 64 or 128, got ", d.head_dim);
}

AttentionImpl& selected() {
  static AttentionImpl impl = [] {
    const char* env = std::getenv("EXPERTUNE_CUDA_ATTENTION");
    return env && std::strcmp(env, "mma") == 0 ? AttentionImpl::TensorCore : AttentionImpl::Simt;
  }();
  return impl;
}

}  // namespace

bool tensor_core_attention_supports(const AttentionDims& d) { return d.head_dim == 64 || d.head_dim == 128; }
void set_attention_impl(AttentionImpl impl) { selected() = impl; }
AttentionImpl attention_impl() { return selected(); }

void attention_forward_mma(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                           const float* v, long ldkv, bf16* out, long ldo, float* lse) {
  forward(s, d, q, ldq, k, v, ldkv, out, ldo, lse);
}
void attention_forward_mma(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                           const float* v, long ldkv, float* out, long ldo, float* lse) {
  forward(s, d, q, ldq, k, v, ldkv, out, ldo, lse);
}
void attention_backward_mma(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                            const float* v, long ldkv, const bf16* out, long ldo, const float* dout, long lddo,
                            const float* lse, float* delta, float* dq, long lddq, float* dk, float* dv, long lddkv) {
  backward(s, d, q, ldq, k, v, ldkv, out, ldo, dout, lddo, lse, delta, dq, lddq, dk, dv, lddkv);
}
void attention_backward_mma(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                            const float* v, long ldkv, const float* out, long ldo, const float* dout, long lddo,
                            const float* lse, float* delta, float* dq, long lddq, float* dk, float* dv, long lddkv) {
  backward(s, d, q, ldq, k, v, ldkv, out, ldo, dout, lddo, lse, delta, dq, lddq, dk, dv, lddkv);
}

}  // namespace et::cuda
