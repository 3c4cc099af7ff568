// Host-side launchers of the CUDA kernels, one .cu file per family. Plain pointers to device
// memory, row-major with explicit strides (ld), everything on the given stream. Storage types:
// bf16 for what feeds a matrix product (frozen base weights, normalised activations, adapter
// shadows), fp32 for the residual stream, gradients, master weights and optimizer state; every
// reduction accumulates in fp32. Each launcher has a CPU twin that test_cuda.cpp compares with.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace et::cuda {

using bf16 = __nv_bfloat16;

// ---- convert.cu: copies, embedding, biases ----------------------------------------------------
// dst[rows, cols] (ld_dst) = scale · src (ld_src): the bf16 shadows of fp32 masters, and casts.
void cast_rows(cudaStream_t s, const float* src, long ld_src, bf16* dst, long ld_dst, long rows, long cols, float scale);
void cast_rows(cudaStream_t s, const bf16* src, long ld_src, float* dst, long ld_dst, long rows, long cols, float scale);
void cast_rows(cudaStream_t s, const float* src, long ld_src, float* dst, long ld_dst, long rows, long cols, float scale);
// x[t, :] = table[ids[t], :] (bf16 table, fp32 residual stream).
void embed_rows(cudaStream_t s, const bf16* table, const int32_t* ids, float* x, long rows, long d);
// y[t, :n] += bias (fp32).
void add_bias_rows(cudaStream_t s, const float* bias, float* y, long ldy, long rows, long n);
void fill(cudaStream_t s, float* x, long n, float value);

// ---- rmsnorm.cu --------------------------------------------------------------------------------
// y = w ⊙ x · rstd, rstd = 1/sqrt(mean(x²) + eps), per row of d values.
void rmsnorm_forward(cudaStream_t s, const float* x, long ldx, const float* w, bf16* y, long ldy, float* rstd,
                     long rows, long d, float eps);
void rmsnorm_forward(cudaStream_t s, const float* x, long ldx, const float* w, float* y, long ldy, float* rstd,
                     long rows, long d, float eps);
// dx = (or += when accumulate) rstd·(w⊙dy − x̂·mean(w⊙dy⊙x̂)); dw += Σ_rows dy⊙x̂ when dw is not null.
void rmsnorm_backward(cudaStream_t s, const float* dy, long lddy, const float* x, long ldx, const float* w,
                      const float* rstd, float* dx, long lddx, float* dw, long rows, long d, bool accumulate);

// ---- rope.cu -----------------------------------------------------------------------------------
// In place on `heads` head vectors starting at column col0 of each row; row t is at position
// position0 + t % seq; cos/sin tables [positions, head_dim/2] (the CPU's RopeTables, uploaded).
// sign = −1 applies the inverse rotation (the backward).
void rope(cudaStream_t s, float* x, long ldx, long col0, long rows, long seq, long position0, long heads,
          long head_dim, const float* cos, const float* sin, float sign);

// ---- attention.cu ------------------------------------------------------------------------------
struct AttentionDims {
  long batch, heads, kv_heads, head_dim;
  long nq;       // queries per sequence, at positions q_pos0 … q_pos0 + nq − 1
  long q_pos0;   // 0 in training
  long kv_rows;  // rows of k/v per sequence (keys at positions 0 …)
  long window;   // sliding window, 0 for none
  float scale;
};
constexpr long kMaxHeadDim = 256;
// Fused flash-style forward: out[b·nq + i, h·hd …] and lse[(b·heads + h)·nq + i] (when not null).
void attention_forward(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                       const float* v, long ldkv, bf16* out, long ldo, float* lse);
void attention_forward(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                       const float* v, long ldkv, float* out, long ldo, float* lse);
// Backward from out, dout and lse, recomputing probabilities tile by tile; dq, dk, dv are written
// (not accumulated). `delta` is scratch of batch·heads·nq floats. GQA's dk/dv sum over the query
// heads of a group inside one block: no atomics, deterministic.
void attention_backward(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                        const float* v, long ldkv, const bf16* out, long ldo, const float* dout, long lddo,
                        const float* lse, float* delta, float* dq, long lddq, float* dk, float* dv, long lddkv);
void attention_backward(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                        const float* v, long ldkv, const float* out, long ldo, const float* dout, long lddo,
                        const float* lse, float* delta, float* dq, long lddq, float* dk, float* dv, long lddkv);

// ---- attention_mma.cu: the same on tensor cores (bf16 WMMA), head_dim 64 or 128 -----------------
// EXPERTUNE_CUDA_ATTENTION=mma makes attention_forward/backward above use these where the head
// dim allows (the CUDA-core kernels stay the default until the tensor-core ones are checked on a
// GPU: docs/cuda.md).
enum class AttentionImpl { Simt, TensorCore };
void set_attention_impl(AttentionImpl impl);
AttentionImpl attention_impl();
bool tensor_core_attention_supports(const AttentionDims& d);
void attention_forward_mma(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                           const float* v, long ldkv, bf16* out, long ldo, float* lse);
void attention_forward_mma(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                           const float* v, long ldkv, float* out, long ldo, float* lse);
void attention_backward_mma(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                            const float* v, long ldkv, const bf16* out, long ldo, const float* dout, long lddo,
                            const float* lse, float* delta, float* dq, long lddq, float* dk, float* dv, long lddkv);
void attention_backward_mma(cudaStream_t s, const AttentionDims& d, const float* q, long ldq, const float* k,
                            const float* v, long ldkv, const float* out, long ldo, const float* dout, long lddo,
                            const float* lse, float* delta, float* dq, long lddq, float* dk, float* dv, long lddkv);

// ---- swiglu.cu ---------------------------------------------------------------------------------
// act[t, :F] = silu(gate) ⊙ up, from stacked gate_up[t] = [gate (F) | up (F)].
void swiglu_forward(cudaStream_t s, const float* gate_up, long ldgu, bf16* act, long ldact, long rows, long F);
void swiglu_forward(cudaStream_t s, const float* gate_up, long ldgu, float* act, long ldact, long rows, long F);
void swiglu_backward(cudaStream_t s, const float* gate_up, long ldgu, const float* dact, long lddact, float* dgate_up,
                     long lddgu, long rows, long F);

// ---- cross_entropy.cu --------------------------------------------------------------------------
// Per row of logits [rows, V]: loss = logsumexp − logit[target] (online over vocabulary chunks),
// first argmax, and dlogits = scale·(softmax − onehot). Rows with target < 0: loss 0, dlogits 0.
void cross_entropy(cudaStream_t s, const float* logits, long ldl, const int32_t* targets, long rows, long V,
                   float scale, bf16* dlogits, long ldd, float* loss, int32_t* argmax);
void cross_entropy(cudaStream_t s, const float* logits, long ldl, const int32_t* targets, long rows, long V,
                   float scale, float* dlogits, long ldd, float* loss, int32_t* argmax);

// ---- adapter.cu: the gated stacked low-rank update ----------------------------------------------
// M[t, e·r + j] = H[t, e·r + j] · gate[t, e] (gate null: LoRA, G = 1), into the bf16 tail of the
// fused operand [X | M] (docs/cuda.md); the scaling s lives in the weight tail [W | s·B].
void gate_forward(cudaStream_t s, const float* h, long ldh, const float* gate, long E, long r, bf16* m, long ldm,
                  long rows);
void gate_forward(cudaStream_t s, const float* h, long ldh, const float* gate, long E, long r, float* m, long ldm,
                  long rows);
// From dM (= s·dY·B, the fused backward's tail): dH = dM ⊙ Ĝ (into dh) and, when dgate is not
// null, dgate[t, e] = Σ_{j∈e} dM ⊙ H (the gate's gradient, to the router).
void gate_backward(cudaStream_t s, const float* dm, long lddm, const float* h, long ldh, const float* gate, long E,
                   long r, float* dh, long lddh, float* dgate, long rows);
// Dropout of an input group (docs/engine.md): out = (or +=) keep ⊙ x / (1 − p), the mask a hash of
// (seed, stream, t·cols + j), exactly as the CPU kernels.
void dropout(cudaStream_t s, const bf16* x, long ldx, bf16* out, long ldo, long rows, long cols, uint32_t seed,
             uint32_t stream_key, uint32_t threshold, float keep_scale);
void dropout(cudaStream_t s, const float* x, long ldx, float* out, long ldo, long rows, long cols, uint32_t seed,
             uint32_t stream_key, uint32_t threshold, float keep_scale, bool accumulate);

// ---- routers.cu ---------------------------------------------------------------------------------
enum RouterKind { ROUTER_MOLA = 1, ROUTER_LORAMOE = 2, ROUTER_DYNMOLE = 3 };
struct RouterSettings {
  int kind;           // RouterKind
  long experts, top_k;  // top_k: MoLA
  float top_p, entropy_index, entropy_eps, entropy_threshold;
  long keep_top_k;
};
// Per row: p = softmax(z), lse, gates and selections of the method; broadcast[t] (DynMoLE).
void router_forward(cudaStream_t s, const RouterSettings& r, const float* z, long ldz, float* prob, float* gate,
                    uint8_t* selected, float* lse, uint8_t* broadcast, long rows);
// dz = softmax'ᵀ(aux_dprob + dgate through the gates) + zfactor·p, into dz (stride lddz).
// aux_dprob / zfactor may be null (no auxiliary losses).
void router_backward(cudaStream_t s, const RouterSettings& r, const float* prob, const float* gate,
                     const uint8_t* selected, const float* dgate, const float* aux_dprob, const float* zfactor,
                     float* dz, long lddz, long rows);
// Normalised Tsallis entropy of each row of p (DynMoLE), in double as the CPU.
void tsallis_rows(cudaStream_t s, const float* prob, long E, float q, float eps, double* out, long rows);

// ---- flylora.cu ---------------------------------------------------------------------------------
// FlyLoRA's frozen sparse A: `r` rows with per_row non-zeros each (column indices ascending).
// H[t, i] = Σ_q value[i, q]·x[t, column[i, q]] into h (stride ldh).
void sparse_a_forward(cudaStream_t s, const bf16* x, long ldx, const int32_t* column, const float* value, long r,
                      long per_row, float* h, long ldh, long rows);
void sparse_a_forward(cudaStream_t s, const float* x, long ldx, const int32_t* column, const float* value, long r,
                      long per_row, float* h, long ldh, long rows);
// dx[t, column[i, q]] += value[i, q]·dH[t, i].
void sparse_a_backward(cudaStream_t s, const float* dh, long lddh, const int32_t* column, const float* value, long r,
                       long per_row, float* dx, long lddx, long rows);
// Gates of the top-k ranks of h + bias (|h + bias| when by_magnitude), ties to the lower index.
void flylora_gates(cudaStream_t s, const float* h, long ldh, const float* bias, long r, long k, bool by_magnitude,
                   float* gate, uint8_t* selected, long rows);

// ---- optimizer.cu -------------------------------------------------------------------------------
// A contiguous run of one trainable tensor; the optimizer works on lists of them in one launch.
struct TrainableSegment {
  float* value;
  float* grad;
  float* adam_m;
  float* adam_v;
  long count;
  float weight_decay;  // 0 for norms and biases
};
struct AdamWStep {
  float lr, beta1, beta2, eps;
  float bias_correction1;       // 1 − β₁ᵗ
  float bias_correction2_sqrt;  // sqrt(1 − β₂ᵗ)
  float grad_scale;             // the clipping factor
};
// Σ g² over every segment's gradient, reduced in a fixed order (deterministic), in double.
// `segments` lives in device memory; `partials` is scratch of grad_norm_partials(total) doubles.
// Scratch doubles grad_sum_squares needs for `blocks` optimizer blocks.
long grad_norm_partials(long blocks);
double grad_sum_squares(cudaStream_t s, const TrainableSegment* segments, const long* block_start, long segment_count,
                        long blocks, double* partials);
// AdamW (PyTorch semantics, decoupled decay) on every segment, then zeroes the gradients.
void adamw(cudaStream_t s, const TrainableSegment* segments, const long* block_start, long segment_count, long blocks,
           const AdamWStep& step);
// Blocks of kOptimizerBlock elements per segment, and each segment's first block (host side).
constexpr long kOptimizerBlock = 4096;

}  // namespace et::cuda
