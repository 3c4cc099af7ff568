// The Llama decoder on the CPU: weights, an optional adapter, AdamW state and activations, and
// the forward and backward passes of docs/engine.md.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "../include/expertune.h"
#include "attention.h"
#include "common.h"
#include "adapter.h"
#include "rope.h"

namespace et {

struct LayerWeights {
  Tensor input_norm, post_norm;  // [d]
  Tensor qkv, qkv_bias;          // q, k, v rows stacked: one product for the three [(H+2KV)·hd, d]
  Tensor o, o_bias;              // [d, H·hd]
  Tensor gate_up, gate_up_bias;  // gate and up rows stacked [2F, d]
  Tensor down, down_bias;        // [d, F]
};

// What one layer keeps from its forward for its backward.
struct LayerActivations {
  Buffer xn1, rstd1;   // attention input after RMSNorm, and 1/rms per row
  Buffer qkv;          // q, k (after RoPE) and v, [N, (H+2KV)·hd]
  Buffer lse;          // attention logsumexp per (sequence, head, query)
  Buffer attn;         // attention output before o_proj [N, H·hd]
  Buffer xmid;         // residual stream after attention [N, d]
  Buffer xn2, rstd2;   // MLP input after RMSNorm
  Buffer gate_up;      // gate and up pre-activations [N, 2F]
  std::array<Buffer, NUM_GROUPS> adapter_hz;  // [H | z] of each adapted input group [N, width]
  void reserve(const et_model_config& c, long rows, const std::array<long, NUM_GROUPS>& adapter_widths);
};

// A view of one named tensor: where its values (and gradient) live and how it is shaped. A view
// is `rows` rows of `cols` floats, `ld` apart in its storage (an expert's columns of a stacked B),
// or a frozen sparse matrix (FlyLoRA's A).
struct Param {
  std::string name;
  std::vector<int64_t> shape;
  Tensor* storage;  // the (possibly stacked) tensor holding it
  size_t offset;    // in floats, inside storage
  size_t count;
  long rows, cols, ld;
  bool is_adapter;
  bool trainable;   // adapter tensors the optimizer updates (base tensors: in full mode)
  SparseRows* sparse = nullptr;
  bool was_set = false;
  bool has_grad() const { return !storage->grad.empty(); }
  void read(float* out, bool grad) const;
  void write(const float* in);
};

// What the optimizer updates: a contiguous run of one storage, with its AdamW moments.
struct OptimizerSlot {
  Tensor* storage;
  size_t offset, count;
  bool decay;  // matrices and embeddings, not norms and biases
  Buffer adam_m, adam_v;
  float* value() { return storage->value.data() + offset; }
  float* grad() { return storage->grad.data() + offset; }
};

struct KvCache {
  std::vector<Buffer> k, v;  // per layer [max_length, KV·hd]
  long length = 0, capacity = 0;
};

class Model {
 public:
  explicit Model(const et_model_config& config);
  // The CUDA backend (cuda/model_cuda.cu) mirrors this model's tensors and optimizer state.
  friend class GpuModel;

  const et_model_config& config() const { return c_; }
  Param& param(const std::string& name);
  std::vector<std::string> names(int kind);
  void attach_lora(const et_lora_config& config);
  void attach_adapter(const et_adapter_config& config);
  std::vector<double> routing_stats(bool reset) {
    return adapter_ ? adapter_->routing_stats(reset) : std::vector<double>{};
  }
  void set_train_mode(int mode);

  // Logits; with collect, routing statistics accumulate over tokens where token_mask is 1.
  void forward_logits(const int32_t* ids, long batch, long seq, float* logits, bool collect = false,
                      const uint8_t* token_mask = nullptr);
  et_step_stats forward_backward(const int32_t* ids, const int32_t* targets, long batch, long seq,
                                 const et_step_options& options);
  const Buffer& input_grad() const { return input_grad_; }
  long input_grad_rows() const { return input_grad_rows_; }
  void zero_grad();
  float optimizer_step(const et_adamw& hyper);
  int64_t optimizer_steps() const { return adam_steps_; }
  // AdamW moments over trainable_slots() in order, concatenated (zeros before the first step).
  size_t optimizer_state_size();
  void get_optimizer_state(float* m, float* v, size_t count);
  void set_optimizer_state(const float* m, const float* v, size_t count, int64_t steps);

  void session_reset(KvCache& cache, long capacity);
  // Appends n tokens to the cache and writes the logits after the last one.
  void session_append(KvCache& cache, const int32_t* ids, long n, float* logits);

 private:
  struct Pass {  // one forward pass's shape and mode
    long batch, seq, rows;
    bool training;
    uint32_t dropout_seed;
    KvCache* cache;  // decoding: keys and values come from (and go to) the cache
    long position0;
    bool collect = false;  // routing statistics (the first forward of a training step, or calibration)
    const uint8_t* token_mask = nullptr;
    AdapterPass adapter() const { return {rows, training, dropout_seed, collect, token_mask}; }
  };

  void register_params();
  Param& add_param(const std::string& name, std::vector<int64_t> shape, Tensor& storage, size_t offset,
                  bool is_adapter, bool trainable = true);
  void register_adapter_params();
  void check_ready();
  void check_ids(const int32_t* ids, long count, const char* what, bool allow_ignore) const;
  std::vector<OptimizerSlot*> trainable_slots();
  Tensor& lm_head() { return c_.tie_word_embeddings ? embed_ : lm_head_; }

  void embed(const int32_t* ids, long rows, float* x);
  void forward_layer(long l, const float* x, float* x_out, LayerActivations& a, const Pass& pass);
  void backward_layer(long l, const float* x, LayerActivations& a, float* dres, bool need_dx, const Pass& pass);
  void linear_forward(Tensor& w, Tensor& bias, long bias_offset, long out, long in, const float* x, long rows,
                      float* y, long ldy, float beta);
  void add_bias_rows(const float* bias, float* y, long ldy, long rows, long n);
  void accumulate_bias_grad(const float* dy, long lddy, long rows, long n, float* grad);
  void rmsnorm_forward(const float* x, const Tensor& w, float* y, float* rstd, long rows);
  void swiglu_forward(const float* gate_up, float* act, long rows);
  const float* forward_no_grad(const int32_t* ids, const Pass& pass);
  void rmsnorm_backward(const float* dy, const float* x, Tensor& w, const float* rstd, float* dx, long rows,
                        bool accumulate_dx);
  void apply_rope(float* qkv, long rows, long seq, long position0, float sign);
  void adapter_forward(long l, int group, const float* x, long ldx, float* y, long ldy,
                       const std::array<long, ET_NUM_PROJ>& y_col, LayerActivations& a, const Pass& pass);
  void adapter_backward(long l, int group, const float* x, long ldx, const float* dy, long lddy,
                        const std::array<long, ET_NUM_PROJ>& y_col, float* dx, long lddx, LayerActivations& a,
                        const Pass& pass);
  std::array<long, NUM_GROUPS> adapter_widths() const;
  void reserve_scratch(long rows);

  et_model_config c_;
  long q_dim_, kv_dim_, qkv_dim_;
  AttentionShape attention_shape_;
  RopeTables rope_;

  Tensor embed_, final_norm_, lm_head_;
  std::vector<LayerWeights> layers_;
  std::unique_ptr<Adapter> adapter_;
  std::vector<std::unique_ptr<Param>> params_;
  std::vector<std::unique_ptr<OptimizerSlot>> base_slots_, adapter_slots_;
  std::array<long, ET_NUM_PROJ> qkv_col_{}, gate_up_col_{}, single_col_{};
  std::unordered_map<std::string, Param*> by_name_;
  int train_mode_ = ET_TRAIN_LORA;
  int64_t adam_steps_ = 0;
  bool ready_ = false;

  // Activations: layer inputs x_0 … x_L, and per-layer (or, when recomputing or decoding, one
  // shared) activation set.
  std::vector<Buffer> layer_inputs_;
  std::vector<LayerActivations> activations_;
  Buffer final_normed_, final_rstd_;
  // Scratch reused by every layer.
  Buffer ffn_act_, d_ffn_act_, d_gate_up_, d_qkv_, d_attn_, d_res_, d_normed_, logits_chunk_, ones_, norm_partials_;
  Buffer input_grad_;
  long input_grad_rows_ = 0;
};

}  // namespace et
