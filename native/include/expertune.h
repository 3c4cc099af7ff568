/*
 * Expertune native core: the C API.
 *
 * The core owns a model's weights, adapters, optimizer state and activations. Callers hand it
 * token batches and read back losses and statistics; nothing crosses the API per operation.
 * The math is specified in docs/engine.md. All tensors are float32, row-major, with Hugging Face
 * names (e.g. "model.layers.0.self_attn.q_proj.weight", "...q_proj.lora_A.weight").
 *
 * Every function returning int returns 0 on success and -1 on failure; et_last_error() then
 * describes the failure (per thread). A model is not thread-safe: one call at a time.
 */
#ifndef EXPERTUNE_H
#define EXPERTUNE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ET_ROPE_NONE 0
#define ET_ROPE_LINEAR 1
#define ET_ROPE_LLAMA3 2

typedef struct et_model_config {
  int32_t vocab_size;
  int32_t hidden_size;
  int32_t intermediate_size;
  int32_t num_layers;
  int32_t num_heads;
  int32_t num_kv_heads;
  int32_t head_dim;
  float rms_norm_eps;
  double rope_theta;
  int32_t rope_scaling_type; /* ET_ROPE_* */
  double rope_factor;
  double rope_low_freq_factor;
  double rope_high_freq_factor;
  int32_t rope_original_max_position;
  int32_t max_position_embeddings;
  int32_t tie_word_embeddings;
  int32_t qkv_bias;
  int32_t o_bias;
  int32_t mlp_bias;
  int32_t sliding_window; /* 0: full causal attention */
} et_model_config;

/* Projection indices (bit i of et_lora_config.target_mask). */
#define ET_PROJ_Q 0
#define ET_PROJ_K 1
#define ET_PROJ_V 2
#define ET_PROJ_O 3
#define ET_PROJ_GATE 4
#define ET_PROJ_UP 5
#define ET_PROJ_DOWN 6
#define ET_NUM_PROJ 7

typedef struct et_lora_config {
  int32_t rank;
  float alpha;
  int32_t use_rslora;
  float dropout;
  uint32_t target_mask;
  uint32_t seed;
} et_lora_config;

/* Adapter methods (docs/methods.md). */
#define ET_METHOD_LORA 0
#define ET_METHOD_MOLA 1
#define ET_METHOD_LORAMOE 2
#define ET_METHOD_DYNMOLE 3
#define ET_METHOD_FLYLORA 4

/* Every method's settings; fields a method does not use are ignored. */
typedef struct et_adapter_config {
  int32_t method; /* ET_METHOD_* */
  int32_t rank;   /* per expert (the whole adapter for lora and flylora) */
  float alpha;
  int32_t use_rslora;
  float dropout;
  uint32_t target_mask;
  uint32_t seed;
  const int32_t* num_experts; /* [num_layers]: mola, loramoe, dynmole */
  const int32_t* top_k;       /* [num_layers]: mola */
  float balance_coef;         /* load-balancing loss weight (0: off) */
  int32_t balance_pooled;     /* 0: one loss per layer, summed; 1: one over every site */
  int32_t balance_global;     /* 0: counts of the micro-batch; 1: of the optimizer step so far */
  float z_loss_coef;
  float blc_alpha, blc_weight; /* loramoe: delta and beta of the localized balancing constraint */
  float top_p;                 /* dynmole */
  int32_t keep_top_k;
  float entropy_index, entropy_threshold, entropy_eps, entropy_coef;
  int32_t fly_top_k; /* flylora */
  int32_t fly_select_abs;
  float fly_bias_rate;
} et_adapter_config;

#define ET_TRAIN_LORA 0
#define ET_TRAIN_FULL 1

#define ET_TENSORS_BASE 0
#define ET_TENSORS_ADAPTER 1
#define ET_TENSORS_TRAINABLE 2

typedef struct et_step_options {
  float loss_scale;
  uint32_t dropout_seed;
  int32_t need_input_grad;
  int32_t recompute;
  float aux_scale;              /* weight of the auxiliary losses (the micro-batch's share of the step) */
  const uint8_t* token_mask;    /* [batch*seq_len], 1 = real token; NULL: all real */
  const int32_t* task_types;    /* [batch], 0 or 1 (LoRAMoE); NULL: no constraint */
} et_step_options;

typedef struct et_step_stats {
  double loss_sum;
  int64_t tokens;
  int64_t correct;
  /* auxiliary losses of this micro-batch, unweighted; aux_total = sum of coefficient * loss */
  double aux_balance, aux_z, aux_entropy, aux_lbc, aux_total;
  /* the step's load balance so far from the step's counts and mean probabilities */
  double balance_step;
} et_step_stats;

typedef struct et_adamw {
  float lr;
  float beta1;
  float beta2;
  float eps;
  float weight_decay;
  float max_grad_norm; /* 0: no clipping */
} et_adamw;

typedef struct et_model et_model;
typedef struct et_session et_session;

const char* et_last_error(void);

/* Threads used by the core (the caller's thread counts as one). 0 = all cores. */
int et_set_num_threads(int32_t n);
int32_t et_get_num_threads(void);
/* The SIMD kernels selected for this CPU ("avx512", "avx2" or "generic") and the BLAS config. */
const char* et_cpu_kernels(void);
const char* et_blas_info(void);

et_model* et_model_create(const et_model_config* config);
void et_model_free(et_model* model);

/*
 * Devices (docs/cuda.md). ET_DEVICE_CPU is the CPU engine; 0, 1, … are CUDA devices, where the
 * frozen base is stored in bf16, trainable tensors keep fp32 masters and AdamW state, and every
 * product accumulates in fp32. A CUDA model has the same API; KV-cache sessions run on its CPU
 * twin, and full fine-tuning (ET_TRAIN_FULL) is refused on CUDA.
 */
#define ET_DEVICE_CPU (-1)
/* Like et_model_create, on `device`. NULL with et_last_error() "CUDA backend not built" when a
 * CUDA device is asked of a build without the CUDA backend. */
et_model* et_model_create_on(const et_model_config* config, int32_t device);
/* The device a model runs on: ET_DEVICE_CPU or a CUDA ordinal. */
int32_t et_model_device(et_model* model);
/* Visible CUDA devices; -1 with et_last_error() "CUDA backend not built" in a CPU-only build. */
int32_t et_cuda_device_count(void);

/* Tensors by Hugging Face name. count is the number of floats of the caller's buffer. */
int et_set_tensor(et_model* model, const char* name, const float* values, size_t count);
int et_get_tensor(et_model* model, const char* name, float* out, size_t count);
int et_get_grad(et_model* model, const char* name, float* out, size_t count);
/* Writes up to 4 dims into shape, their number into ndim. */
int et_tensor_shape(et_model* model, const char* name, int64_t* shape, int32_t* ndim);
/* Names of one kind, '\n'-separated, into buf; returns the needed length (with the NUL) or -1. */
int64_t et_tensor_names(et_model* model, int32_t kind, char* buf, size_t buf_len);

/* Attach a LoRA adapter (A initialised from the seed, B = 0). Replaces any previous one. */
int et_attach_lora(et_model* model, const et_lora_config* config);
/* Attach an adapter of any method (docs/methods.md). Replaces any previous one. */
int et_attach_adapter(et_model* model, const et_adapter_config* config);
/*
 * Routing statistics accumulated since the last read, per routed site in site order, each as
 * [layer, projection, experts E, tokens, entropy_sum, broadcast_count, load_count[E], gate_sum[E]].
 * Returns the number of doubles needed; when count is enough, fills out and resets the statistics.
 */
int64_t et_routing_stats(et_model* model, double* out, size_t count);
int et_set_train_mode(et_model* model, int32_t mode);

/* Logits [batch, seq_len, vocab] into logits_out (batch*seq_len*vocab floats). */
int et_forward(et_model* model, const int32_t* ids, int32_t batch, int32_t seq_len, float* logits_out);
/* The same, accumulating routing statistics over the tokens where token_mask is 1 (NULL: all). */
int et_forward_collect(et_model* model, const int32_t* ids, int32_t batch, int32_t seq_len,
                       const uint8_t* token_mask, float* logits_out);
/* Forward and backward; gradients accumulate until et_optimizer_step or et_zero_grad. */
int et_forward_backward(et_model* model, const int32_t* ids, const int32_t* targets, int32_t batch,
                        int32_t seq_len, const et_step_options* options, et_step_stats* stats);
/* dL/d(input embeddings) [batch, seq_len, hidden] of the last et_forward_backward with need_input_grad. */
int et_input_grad(et_model* model, float* out, size_t count);
int et_zero_grad(et_model* model);
int et_optimizer_step(et_model* model, const et_adamw* hyper, float* grad_norm_out);
/* Number of optimizer steps taken (AdamW's t). */
int64_t et_optimizer_steps(et_model* model);
/* AdamW state, for checkpoints. Layout: the first moments m (and likewise the second moments v)
 * of every trainable tensor concatenated in the core's order (in full mode the base tensors in
 * registration order, then the adapter's trainable tensors; otherwise the adapter's only), each
 * tensor's values row-major. count is the values per moment; a different count is refused (-1).
 * Before the first step the moments read as zeros. Setting also sets AdamW's step count t. */
int64_t et_optimizer_state_size(et_model* model);
int et_get_optimizer_state(et_model* model, float* m, float* v, size_t count);
int et_set_optimizer_state(et_model* model, const float* m, const float* v, size_t count, int64_t steps);

/* Incremental decoding of one sequence with a KV cache. */
et_session* et_session_create(et_model* model, int32_t max_length);
void et_session_free(et_session* session);
/* Appends n tokens; writes the logits [vocab] after the last one. */
int et_session_append(et_session* session, const int32_t* ids, int32_t n, float* logits_out);
int32_t et_session_length(et_session* session);

#ifdef __cplusplus
}
#endif

#endif /* EXPERTUNE_H */
