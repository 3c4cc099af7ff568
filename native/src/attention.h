// Causal grouped-query attention on the CPU, in query blocks: each block multiplies only
// against the keys it can see (so causal masking skips about half the work), keeps one
// logsumexp per query row, and the backward recomputes the probabilities from it instead of
// storing a [T, T] matrix per head (flash-attention's bookkeeping, done with sgemm blocks).
#pragma once

namespace et {

struct AttentionShape {
  long heads, kv_heads, head_dim;
  long window;  // sliding window in tokens, 0 for none
  float scale;  // 1 / sqrt(head_dim)
};

// A batch of sequences laid out as rows. Sequence b's queries are rows [b·nq, (b+1)·nq) of q/out
// at positions q_pos0 … q_pos0+nq−1; its keys and values are rows [b·kv_rows, …) of k/v at
// positions 0 … q_pos0+nq−1. Head h lives at column h·head_dim of its row.
struct AttentionBatch {
  long batch, nq, q_pos0, kv_rows;
  const float* q;
  long ldq;
  const float* k;
  const float* v;
  long ldkv;
};

// out[rows, heads·head_dim] (stride ldo); lse[b][h][i] when lse is not null.
void attention_forward(const AttentionShape& shape, const AttentionBatch& in, float* out, long ldo, float* lse);

// Given out, its gradient dout and lse from the forward (q_pos0 = 0): writes dq (stride ldq of
// the gradient buffer, same layout as q) and dk, dv (stride lddkv, same layout as k, v).
void attention_backward(const AttentionShape& shape, const AttentionBatch& in, const float* out, long ldo,
                        const float* dout, long lddo, const float* lse, float* dq, long lddq, float* dk, float* dv,
                        long lddkv);

}  // namespace et
