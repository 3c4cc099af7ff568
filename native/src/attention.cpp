#include "attention.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "blas.h"
#include "common.h"
#include "kernels/kernels.h"
#include "threadpool.h"

namespace et {

namespace {

constexpr long kQueryBlock = 64;

// Per-thread scratch for score blocks; each pool thread keeps its own.
float* thread_scratch(long floats) {
  thread_local Buffer scratch;
  scratch.reserve(floats);
  return scratch.data();
}

// The keys a block of queries can see (absolute positions [begin, end)).
struct KeySpan {
  long begin, end;
  // Zeroes the part of a score row that query `position` cannot see and returns the visible
  // columns [lo, hi) of the row.
  std::pair<long, long> mask_row(float* row, long position, long window) const {
    const long lo = (window > 0 ? std::max(begin, position - window + 1) : begin) - begin;
    const long hi = position + 1 - begin;
    std::fill(row, row + lo, 0.0f);
    std::fill(row + hi, row + (end - begin), 0.0f);
    return {lo, hi};
  }
};

KeySpan key_span(long first_position, long last_position, long window) {
  long begin = window > 0 ? std::max(0L, first_position - window + 1) : 0;
  return {begin, last_position + 1};
}

// S = scale · Q_blk K_spanᵀ for one head; rows outside their visible span are left as computed.
void block_scores(const AttentionShape& s, const float* q, long ldq, const float* k, long ldkv, long rows,
                  const KeySpan& span, float* scores) {
  gemm_serial(false, true, rows, span.end - span.begin, s.head_dim, s.scale, q, ldq, k + span.begin * ldkv, ldkv,
              0.0f, scores, span.end - span.begin);
}

}  // namespace

void attention_forward(const AttentionShape& s, const AttentionBatch& in, float* out, long ldo, float* lse) {
  const Kernels& K = kernels();
  const long group = s.heads / s.kv_heads;
  const long total_positions = in.q_pos0 + in.nq;
  ThreadPool::global().parallel_for(in.batch * s.heads, 1, [&](long begin, long end, int) {
    float* scores = thread_scratch(kQueryBlock * total_positions);
    for (long task = begin; task < end; ++task) {
      const long b = task / s.heads, h = task % s.heads, g = h / group;
      const float* q = in.q + b * in.nq * in.ldq + h * s.head_dim;
      const float* k = in.k + b * in.kv_rows * in.ldkv + g * s.head_dim;
      const float* v = in.v + b * in.kv_rows * in.ldkv + g * s.head_dim;
      float* o = out + b * in.nq * ldo + h * s.head_dim;
      for (long i0 = 0; i0 < in.nq; i0 += kQueryBlock) {
        const long rows = std::min(kQueryBlock, in.nq - i0);
        const KeySpan span = key_span(in.q_pos0 + i0, in.q_pos0 + i0 + rows - 1, s.window);
        const long width = span.end - span.begin;
        block_scores(s, q + i0 * in.ldq, in.ldq, k, in.ldkv, rows, span, scores);
        for (long r = 0; r < rows; ++r) {
          float* row = scores + r * width;
          const auto [lo, hi] = span.mask_row(row, in.q_pos0 + i0 + r, s.window);
          const float row_lse = K.softmax(row + lo, hi - lo);
          if (lse) lse[(b * s.heads + h) * in.nq + i0 + r] = row_lse;
        }
        gemm_serial(false, false, rows, s.head_dim, width, 1.0f, scores, width, v + span.begin * in.ldkv, in.ldkv,
                    0.0f, o + i0 * ldo, ldo);
      }
    }
  });
}

void attention_backward(const AttentionShape& s, const AttentionBatch& in, const float* out, long ldo,
                        const float* dout, long lddo, const float* lse, float* dq, long lddq, float* dk, float* dv,
                        long lddkv) {
  const Kernels& K = kernels();
  const long group = s.heads / s.kv_heads;
  const long total_positions = in.q_pos0 + in.nq;
  // One task per (sequence, kv head): the query heads sharing a kv head add into the same dk, dv.
  ThreadPool::global().parallel_for(in.batch * s.kv_heads, 1, [&](long begin, long end, int) {
    float* probs = thread_scratch(2 * kQueryBlock * total_positions);
    float* dprobs = probs + kQueryBlock * total_positions;
    for (long task = begin; task < end; ++task) {
      const long b = task / s.kv_heads, g = task % s.kv_heads;
      const float* k = in.k + b * in.kv_rows * in.ldkv + g * s.head_dim;
      const float* v = in.v + b * in.kv_rows * in.ldkv + g * s.head_dim;
      float* dk_g = dk + b * in.kv_rows * lddkv + g * s.head_dim;
      float* dv_g = dv + b * in.kv_rows * lddkv + g * s.head_dim;
      for (long j = 0; j < total_positions; ++j) {
        std::memset(dk_g + j * lddkv, 0, s.head_dim * sizeof(float));
        std::memset(dv_g + j * lddkv, 0, s.head_dim * sizeof(float));
      }
      for (long h = g * group; h < (g + 1) * group; ++h) {
        const float* q = in.q + b * in.nq * in.ldq + h * s.head_dim;
        const float* o = out + b * in.nq * ldo + h * s.head_dim;
        const float* d_o = dout + b * in.nq * lddo + h * s.head_dim;
        float* d_q = dq + b * in.nq * lddq + h * s.head_dim;
        const float* lse_h = lse + (b * s.heads + h) * in.nq;
        for (long i0 = 0; i0 < in.nq; i0 += kQueryBlock) {
          const long rows = std::min(kQueryBlock, in.nq - i0);
          const KeySpan span = key_span(in.q_pos0 + i0, in.q_pos0 + i0 + rows - 1, s.window);
          const long width = span.end - span.begin;
          block_scores(s, q + i0 * in.ldq, in.ldq, k, in.ldkv, rows, span, probs);
          // dP = dO Vᵀ
          gemm_serial(false, true, rows, width, s.head_dim, 1.0f, d_o + i0 * lddo, lddo, v + span.begin * in.ldkv,
                      in.ldkv, 0.0f, dprobs, width);
          for (long r = 0; r < rows; ++r) {
            float* p = probs + r * width;
            const auto [lo, hi] = span.mask_row(p, in.q_pos0 + i0 + r, s.window);
            K.exp_shifted(p + lo, hi - lo, lse_h[i0 + r]);
            const float delta = K.dot(d_o + (i0 + r) * lddo, o + (i0 + r) * ldo, s.head_dim);
            K.softmax_backward(p, dprobs + r * width, delta, width);  // dprobs becomes dS
          }
          // dQ = scale · dS K,  dK += scale · dSᵀ Q,  dV += Pᵀ dO
          gemm_serial(false, false, rows, s.head_dim, width, s.scale, dprobs, width, k + span.begin * in.ldkv,
                      in.ldkv, 0.0f, d_q + i0 * lddq, lddq);
          gemm_serial(true, false, width, s.head_dim, rows, s.scale, dprobs, width, q + i0 * in.ldq, in.ldq, 1.0f,
                      dk_g + span.begin * lddkv, lddkv);
          gemm_serial(true, false, width, s.head_dim, rows, 1.0f, probs, width, d_o + i0 * lddo, lddo, 1.0f,
                      dv_g + span.begin * lddkv, lddkv);
        }
      }
    }
  });
}

}  // namespace et
