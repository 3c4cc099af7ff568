// Causal grouped-query attention, fused flash-style: scores never leave the chip. Each block
// takes 32 queries of one head (4 warps × 8 queries); keys stream through shared memory 32 at a
// time, one key per lane, with an online softmax (running max and sum) per query. The backward
// recomputes probabilities from the forward's logsumexp: one kernel for dQ (queries own the
// block) and one for dK/dV (keys own the block and loop over every query head of their KV
// group, so GQA needs no atomics and the result does not depend on scheduling).
// Visibility is the CPU's: key j is seen by query position i iff j ≤ i and (no window or i − j < W).
// These kernels use CUDA cores (fp32 FMA, exact fp32 inputs); attention_mma.cu has the tensor-core
// version, chosen with EXPERTUNE_CUDA_ATTENTION=mma.
#include <cmath>

#include "check.h"
#include "kernels.h"
#include "reduce.cuh"

namespace et::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kPerWarp = 8;                    // queries (forward, dQ) or keys (dK/dV) per warp
constexpr int kTile = kWarps * kPerWarp;       // 32 rows per block
constexpr int kDims = kMaxHeadDim / 32;        // head dimensions per lane
constexpr float kNegInf = -INFINITY;

__device__ __forceinline__ bool visible(long query_pos, long key_pos, long window) {
  return key_pos <= query_pos && (window <= 0 || query_pos - key_pos < window);
}

// rows [row0, row0 + 32) of a head's vectors into a [32][pitch] tile; rows past `limit` are zero.
__device__ void load_tile(float* tile, long pitch, const float* src, long ld, long row0, long limit, long hd) {
  for (long idx = threadIdx.x; idx < kTile * hd; idx += blockDim.x) {
    const long r = idx / hd, c = idx % hd;
    tile[r * pitch + c] = row0 + r < limit ? src[(row0 + r) * ld + c] : 0.0f;
  }
}

__device__ __forceinline__ float dot_rows(const float* a, const float* b, long hd) {
  float s = 0.0f;
  for (long c = 0; c < hd; ++c) s += a[c] * b[c];
  return s;
}

template <typename Out>
__global__ void __launch_bounds__(kWarps * 32) forward_kernel(AttentionDims d, const float* q, long ldq, const float* k,
                                                              const float* v, long ldkv, Out* out, long ldo, float* lse) {
  extern __shared__ float smem[];
  const long hd = d.head_dim, pitch = hd + 1;
  float* q_tile = smem;
  float* k_tile = q_tile + kTile * pitch;
  float* v_tile = k_tile + kTile * pitch;
  const long b = blockIdx.z, h = blockIdx.y, g = h / (d.heads / d.kv_heads), i0 = blockIdx.x * kTile;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* q_head = q + b * d.nq * ldq + h * hd;
  const float* k_head = k + b * d.kv_rows * ldkv + g * hd;
  const float* v_head = v + b * d.kv_rows * ldkv + g * hd;
  load_tile(q_tile, pitch, q_head, ldq, i0, d.nq, hd);

  const long first_pos = d.q_pos0 + i0, last_pos = d.q_pos0 + min(i0 + kTile, d.nq) - 1;
  const long key_lo = d.window > 0 ? max(0L, first_pos - d.window + 1) : 0L, key_hi = last_pos + 1;

  float m[kPerWarp], l[kPerWarp], acc[kPerWarp][kDims];
#pragma unroll
  for (int qq = 0; qq < kPerWarp; ++qq) {
    m[qq] = kNegInf;
    l[qq] = 0.0f;
#pragma unroll
    for (int t = 0; t < kDims; ++t) acc[qq][t] = 0.0f;
  }
  for (long k0 = key_lo; k0 < key_hi; k0 += kTile) {
    __syncthreads();
    load_tile(k_tile, pitch, k_head, ldkv, k0, key_hi, hd);
    load_tile(v_tile, pitch, v_head, ldkv, k0, key_hi, hd);
    __syncthreads();
#pragma unroll
    for (int qq = 0; qq < kPerWarp; ++qq) {
      const long r = warp * kPerWarp + qq, qi = i0 + r;
      if (qi >= d.nq) continue;  // warp-uniform
      const long qpos = d.q_pos0 + qi, key = k0 + lane;
      const bool seen = key < key_hi && visible(qpos, key, d.window);
      const float s = seen ? d.scale * dot_rows(q_tile + r * pitch, k_tile + lane * pitch, hd) : kNegInf;
      const float tile_max = warp_max(s);
      if (tile_max == kNegInf) continue;
      const float m_new = fmaxf(m[qq], tile_max), correction = __expf(m[qq] - m_new);
      const float p = seen ? __expf(s - m_new) : 0.0f;
      l[qq] = l[qq] * correction + warp_sum(p);
      m[qq] = m_new;
#pragma unroll
      for (int t = 0; t < kDims; ++t) acc[qq][t] *= correction;
      for (int j = 0; j < 32; ++j) {
        const float pj = __shfl_sync(kFullMask, p, j);
#pragma unroll
        for (int t = 0; t < kDims; ++t)
          if (lane + 32 * t < hd) acc[qq][t] += pj * v_tile[j * pitch + lane + 32 * t];
      }
    }
  }
#pragma unroll
  for (int qq = 0; qq < kPerWarp; ++qq) {
    const long qi = i0 + warp * kPerWarp + qq;
    if (qi >= d.nq) continue;
    const float inv = l[qq] > 0.0f ? 1.0f / l[qq] : 0.0f;
    Out* o = out + (b * d.nq + qi) * ldo + h * hd;
#pragma unroll
    for (int t = 0; t < kDims; ++t)
      if (lane + 32 * t < hd) o[lane + 32 * t] = from_float<Out>(acc[qq][t] * inv);
    if (lse && lane == 0) lse[(b * d.heads + h) * d.nq + qi] = l[qq] > 0.0f ? m[qq] + logf(l[qq]) : kNegInf;
  }
}

// delta[b, h, i] = Σ dout ⊙ out over the head's dimensions: one warp per (row, head).
template <typename Out>
__global__ void delta_kernel(AttentionDims d, const Out* out, long ldo, const float* dout, long lddo, float* delta) {
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

__global__ void __launch_bounds__(kWarps * 32) dq_kernel(AttentionDims d, const float* q, long ldq, const float* k,
                                                         const float* v, long ldkv, const float* dout, long lddo,
                                                         const float* lse, const float* delta, float* dq, long lddq) {
  extern __shared__ float smem[];
  const long hd = d.head_dim, pitch = hd + 1;
  float* q_tile = smem;
  float* do_tile = q_tile + kTile * pitch;
  float* k_tile = do_tile + kTile * pitch;
  float* v_tile = k_tile + kTile * pitch;
  const long b = blockIdx.z, h = blockIdx.y, g = h / (d.heads / d.kv_heads), i0 = blockIdx.x * kTile;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* k_head = k + b * d.kv_rows * ldkv + g * hd;
  const float* v_head = v + b * d.kv_rows * ldkv + g * hd;
  load_tile(q_tile, pitch, q + b * d.nq * ldq + h * hd, ldq, i0, d.nq, hd);
  load_tile(do_tile, pitch, dout + b * d.nq * lddo + h * hd, lddo, i0, d.nq, hd);
  const float* lse_head = lse + (b * d.heads + h) * d.nq;
  const float* delta_head = delta + (b * d.heads + h) * d.nq;

  const long last = min(i0 + kTile, d.nq) - 1;
  const long key_lo = d.window > 0 ? max(0L, i0 - d.window + 1) : 0L, key_hi = last + 1;
  float acc[kPerWarp][kDims];
#pragma unroll
  for (int qq = 0; qq < kPerWarp; ++qq)
#pragma unroll
    for (int t = 0; t < kDims; ++t) acc[qq][t] = 0.0f;
  for (long k0 = key_lo; k0 < key_hi; k0 += kTile) {
    __syncthreads();
    load_tile(k_tile, pitch, k_head, ldkv, k0, key_hi, hd);
    load_tile(v_tile, pitch, v_head, ldkv, k0, key_hi, hd);
    __syncthreads();
#pragma unroll
    for (int qq = 0; qq < kPerWarp; ++qq) {
      const long r = warp * kPerWarp + qq, qi = i0 + r;
      if (qi >= d.nq) continue;
      const long key = k0 + lane;
      const bool seen = key < key_hi && visible(qi, key, d.window);
      float ds = 0.0f;
      if (seen) {
        const float p = __expf(d.scale * dot_rows(q_tile + r * pitch, k_tile + lane * pitch, hd) - lse_head[qi]);
        const float dp = dot_rows(do_tile + r * pitch, v_tile + lane * pitch, hd);
        ds = p * (dp - delta_head[qi]);
      }
      for (int j = 0; j < 32; ++j) {
        const float dsj = __shfl_sync(kFullMask, ds, j);
#pragma unroll
        for (int t = 0; t < kDims; ++t)
          if (lane + 32 * t < hd) acc[qq][t] += dsj * k_tile[j * pitch + lane + 32 * t];
      }
    }
  }
#pragma unroll
  for (int qq = 0; qq < kPerWarp; ++qq) {
    const long qi = i0 + warp * kPerWarp + qq;
    if (qi >= d.nq) continue;
    float* out = dq + (b * d.nq + qi) * lddq + h * hd;
#pragma unroll
    for (int t = 0; t < kDims; ++t)
      if (lane + 32 * t < hd) out[lane + 32 * t] = d.scale * acc[qq][t];
  }
}

__global__ void __launch_bounds__(kWarps * 32) dkdv_kernel(AttentionDims d, const float* q, long ldq, const float* k,
                                                           const float* v, long ldkv, const float* dout, long lddo,
                                                           const float* lse, const float* delta, float* dk, float* dv,
                                                           long lddkv) {
  extern __shared__ float smem[];
  const long hd = d.head_dim, pitch = hd + 1;
  float* k_tile = smem;
  float* v_tile = k_tile + kTile * pitch;
  float* q_tile = v_tile + kTile * pitch;
  float* do_tile = q_tile + kTile * pitch;
  float* lse_tile = do_tile + kTile * pitch;
  float* delta_tile = lse_tile + kTile;
  const long b = blockIdx.z, g = blockIdx.y, j0 = blockIdx.x * kTile, group = d.heads / d.kv_heads;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const long nk = d.nq;  // training: keys and queries are the same positions
  load_tile(k_tile, pitch, k + b * d.kv_rows * ldkv + g * hd, ldkv, j0, nk, hd);
  load_tile(v_tile, pitch, v + b * d.kv_rows * ldkv + g * hd, ldkv, j0, nk, hd);
  const long j_last = min(j0 + kTile, nk) - 1;
  const long q_lo = j0, q_hi = d.window > 0 ? min(d.nq, j_last + d.window) : d.nq;

  float dk_acc[kPerWarp][kDims], dv_acc[kPerWarp][kDims];
#pragma unroll
  for (int kk = 0; kk < kPerWarp; ++kk)
#pragma unroll
    for (int t = 0; t < kDims; ++t) dk_acc[kk][t] = dv_acc[kk][t] = 0.0f;
  for (long h = g * group; h < (g + 1) * group; ++h) {
    const float* lse_head = lse + (b * d.heads + h) * d.nq;
    const float* delta_head = delta + (b * d.heads + h) * d.nq;
    for (long i0 = q_lo; i0 < q_hi; i0 += kTile) {
      __syncthreads();
      load_tile(q_tile, pitch, q + b * d.nq * ldq + h * hd, ldq, i0, q_hi, hd);
      load_tile(do_tile, pitch, dout + b * d.nq * lddo + h * hd, lddo, i0, q_hi, hd);
      if (threadIdx.x < kTile) {
        const long i = i0 + threadIdx.x;
        lse_tile[threadIdx.x] = i < q_hi ? lse_head[i] : 0.0f;
        delta_tile[threadIdx.x] = i < q_hi ? delta_head[i] : 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kPerWarp; ++kk) {
        const long r = warp * kPerWarp + kk, key = j0 + r;
        if (key >= nk) continue;
        const long qi = i0 + lane;
        const bool seen = qi < q_hi && visible(qi, key, d.window);
        float p = 0.0f, ds = 0.0f;
        if (seen) {
          p = __expf(d.scale * dot_rows(q_tile + lane * pitch, k_tile + r * pitch, hd) - lse_tile[lane]);
          const float dp = dot_rows(do_tile + lane * pitch, v_tile + r * pitch, hd);
          ds = p * (dp - delta_tile[lane]);
        }
        if (__ballot_sync(kFullMask, seen) == 0) continue;
        for (int i = 0; i < 32; ++i) {
          const float pi = __shfl_sync(kFullMask, p, i), dsi = __shfl_sync(kFullMask, ds, i);
#pragma unroll
          for (int t = 0; t < kDims; ++t)
            if (lane + 32 * t < hd) {
              dv_acc[kk][t] += pi * do_tile[i * pitch + lane + 32 * t];
              dk_acc[kk][t] += dsi * q_tile[i * pitch + lane + 32 * t];
            }
        }
      }
    }
  }
#pragma unroll
  for (int kk = 0; kk < kPerWarp; ++kk) {
    const long key = j0 + warp * kPerWarp + kk;
    if (key >= nk) continue;
    float* dk_row = dk + (b * d.kv_rows + key) * lddkv + g * hd;
    float* dv_row = dv + (b * d.kv_rows + key) * lddkv + g * hd;
#pragma unroll
    for (int t = 0; t < kDims; ++t)
      if (lane + 32 * t < hd) {
        dk_row[lane + 32 * t] = d.scale * dk_acc[kk][t];
        dv_row[lane + 32 * t] = dv_acc[kk][t];
      }
  }
}

void check_dims(const AttentionDims& d) {
  if (d.head_dim > kMaxHeadDim || d.head_dim <= 0)
    fail("attention: head_dim must be in [1, ", kMaxHeadDim, "], got ", d.head_dim);
  if (d.kv_heads <= 0 || d.heads % d.kv_heads != 0)
    fail("attention: heads (", d.heads, ") must be a multiple of kv_heads (", d.kv_heads, ")");
}

// Dynamic shared memory above 48 KB must be opted into per kernel.
template <typename Kernel>
void allow_shared(Kernel kernel, size_t bytes) {
  ET_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <typename Out>
void forward(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k, const float* v,
             long ldkv, Out* out, long ldo, float* lse) {
  check_dims(d);
  if (attention_impl() == AttentionImpl::TensorCore && tensor_core_attention_supports(d))
    return attention_forward_mma(s, d, q, ldq, k, v, ldkv, out, ldo, lse);
  if (d.batch == 0 || d.nq == 0) return;
  const long pitch = d.head_dim + 1;
  const size_t bytes = 3 * kTile * pitch * sizeof(float);
  allow_shared(forward_kernel<Out>, bytes);
  const dim3 grid(blocks_for(d.nq, kTile), static_cast<unsigned>(d.heads), static_cast<unsigned>(d.batch));
  forward_kernel<Out><<<grid, kWarps * 32, bytes, s>>>(d, q, ldq, k, v, ldkv, out, ldo, lse);
  ET_CUDA_CHECK_LAUNCH();
}

template <typename Out>
void backward(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k, const float* v,
              long ldkv, const Out* out, long ldo, const float* dout, long lddo, const float* lse, float* delta,
              float* dq, long lddq, float* dk, float* dv, long lddkv) {
  check_dims(d);
  if (attention_impl() == AttentionImpl::TensorCore && tensor_core_attention_supports(d))
    return attention_backward_mma(s, d, q, ldq, k, v, ldkv, out, ldo, dout, lddo, lse, delta, dq, lddq, dk, dv, lddkv);
  if (d.q_pos0 != 0 || d.kv_rows != d.nq) fail("attention backward: training layout only (q_pos0 = 0, kv_rows = nq)");
  if (d.batch == 0 || d.nq == 0) return;
  const long items = d.batch * d.nq * d.heads;
  delta_kernel<Out><<<blocks_for(items, 8), 256, 0, s>>>(d, out, ldo, dout, lddo, delta);
  ET_CUDA_CHECK_LAUNCH();
  const long pitch = d.head_dim + 1;
  const size_t dq_bytes = 4 * kTile * pitch * sizeof(float);
  allow_shared(dq_kernel, dq_bytes);
  const dim3 dq_grid(blocks_for(d.nq, kTile), static_cast<unsigned>(d.heads), static_cast<unsigned>(d.batch));
  dq_kernel<<<dq_grid, kWarps * 32, dq_bytes, s>>>(d, q, ldq, k, v, ldkv, dout, lddo, lse, delta, dq, lddq);
  ET_CUDA_CHECK_LAUNCH();
  const size_t kv_bytes = (4 * kTile * pitch + 2 * kTile) * sizeof(float);
  allow_shared(dkdv_kernel, kv_bytes);
  const dim3 kv_grid(blocks_for(d.nq, kTile), static_cast<unsigned>(d.kv_heads), static_cast<unsigned>(d.batch));
  dkdv_kernel<<<kv_grid, kWarps * 32, kv_bytes, s>>>(d, q, ldq, k, v, ldkv, dout, lddo, lse, delta, dk, dv, lddkv);
  ET_CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention_forward(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                       const float* v, long ldkv, bf16* out, long ldo, float* lse) {
  forward(s, d, q, ldq, k, v, ldkv, out, ldo, lse);
}
void attention_forward(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                       const float* v, long ldkv, float* out, long ldo, float* lse) {
  forward(s, d, q, ldq, k, v, ldkv, out, ldo, lse);
}

void attention_backward(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                        const float* v, long ldkv, const bf16* out, long ldo, const float* dout, long lddo,
                        const float* lse, float* delta, float* dq, long lddq, float* dk, float* dv, long lddkv) {
  backward(s, d, q, ldq, k, v, ldkv, out, ldo, dout, lddo, lse, delta, dq, lddq, dk, dv, lddkv);
}
void attention_backward(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                        const float* v, long ldkv, const float* out, long ldo, const float* dout, long lddo,
                        const float* lse, float* delta, float* dq, long lddq, float* dk, float* dv, long lddkv) {
  backward(s, d, q, ldq, k, v, ldkv, out, ldo, dout, lddo, lse, delta, dq, lddq, dk, dv, lddkv);
}

}  // namespace et::cuda
