#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "blas.h"
#include "kernels/kernels.h"
#include "threadpool.h"

namespace et {

namespace {

constexpr long kRowGrain = 32;       // rows per task in row-parallel kernels
constexpr long kReduceRows = 256;    // rows per partial sum in deterministic reductions
constexpr long kOptimizerGrain = 1 << 14;

ThreadPool& pool() { return ThreadPool::global(); }

void validate_config(const et_model_config& c) {
  auto positive = [](const char* field, long value) {
    if (value <= 0) fail("model config: ", field, " must be a positive integer, got ", value);
  };
  positive("vocab_size", c.vocab_size);
  positive("hidden_size", c.hidden_size);
  positive("intermediate_size", c.intermediate_size);
  positive("num_hidden_layers", c.num_layers);
  positive("num_attention_heads", c.num_heads);
  positive("num_key_value_heads", c.num_kv_heads);
  positive("head_dim", c.head_dim);
  if (c.num_heads % c.num_kv_heads != 0)
    fail("model config: num_attention_heads (", c.num_heads, ") must be a multiple of num_key_value_heads (",
         c.num_kv_heads, ")");
  if (c.head_dim % 2 != 0) fail("model config: head_dim must be even for RoPE, got ", c.head_dim);
  if (!(c.rms_norm_eps > 0.0f)) fail("model config: rms_norm_eps must be positive, got ", c.rms_norm_eps);
  if (!(c.rope_theta > 0.0)) fail("model config: rope_theta must be positive, got ", c.rope_theta);
  if (c.rope_scaling_type < ET_ROPE_NONE || c.rope_scaling_type > ET_ROPE_LLAMA3)
    fail("model config: unknown rope scaling type ", c.rope_scaling_type);
  if (c.rope_scaling_type != ET_ROPE_NONE && !(c.rope_factor > 0.0))
    fail("model config: rope_scaling.factor must be positive, got ", c.rope_factor);
  if (c.rope_scaling_type == ET_ROPE_LLAMA3 &&
      (!(c.rope_high_freq_factor > c.rope_low_freq_factor) || c.rope_original_max_position <= 0))
    fail("model config: llama3 rope_scaling needs high_freq_factor > low_freq_factor and a positive "
         "original_max_position_embeddings");
  if (c.sliding_window < 0) fail("model config: sliding_window must be >= 0, got ", c.sliding_window);
}

}  // namespace

void LayerActivations::reserve(const et_model_config& c, long rows, const std::array<long, NUM_GROUPS>& adapter_widths) {
  const long d = c.hidden_size, q_dim = c.num_heads * c.head_dim, qkv_dim = q_dim + 2L * c.num_kv_heads * c.head_dim;
  xn1.reserve(rows * d);
  rstd1.reserve(rows);
  qkv.reserve(rows * qkv_dim);
  lse.reserve(rows * c.num_heads);
  attn.reserve(rows * q_dim);
  xmid.reserve(rows * d);
  xn2.reserve(rows * d);
  rstd2.reserve(rows);
  gate_up.reserve(rows * 2L * c.intermediate_size);
  for (int g = 0; g < NUM_GROUPS; ++g)
    if (adapter_widths[g] > 0) adapter_hz[g].reserve(rows * adapter_widths[g]);
}

Model::Model(const et_model_config& config) : c_(config), rope_((validate_config(config), config)) {
  blas_init();
  const long d = c_.hidden_size, F = c_.intermediate_size, V = c_.vocab_size;
  q_dim_ = static_cast<long>(c_.num_heads) * c_.head_dim;
  kv_dim_ = static_cast<long>(c_.num_kv_heads) * c_.head_dim;
  qkv_dim_ = q_dim_ + 2 * kv_dim_;
  attention_shape_ = {c_.num_heads, c_.num_kv_heads, c_.head_dim, c_.sliding_window,
                      1.0f / std::sqrt(static_cast<float>(c_.head_dim))};
  embed_.value.resize(V * d);
  final_norm_.value.resize(d);
  if (!c_.tie_word_embeddings) lm_head_.value.resize(V * d);
  layers_.resize(c_.num_layers);
  for (auto& layer : layers_) {
    layer.input_norm.value.resize(d);
    layer.post_norm.value.resize(d);
    layer.qkv.value.resize(qkv_dim_ * d);
    if (c_.qkv_bias) layer.qkv_bias.value.resize(qkv_dim_);
    layer.o.value.resize(d * q_dim_);
    if (c_.o_bias) layer.o_bias.value.resize(d);
    layer.gate_up.value.resize(2 * F * d);
    if (c_.mlp_bias) layer.gate_up_bias.value.resize(2 * F);
    layer.down.value.resize(d * F);
    if (c_.mlp_bias) layer.down_bias.value.resize(d);
  }
  register_params();
  // Where each projection's output columns sit in the fused q/k/v and gate/up buffers.
  qkv_col_[ET_PROJ_Q] = 0;
  qkv_col_[ET_PROJ_K] = q_dim_;
  qkv_col_[ET_PROJ_V] = q_dim_ + kv_dim_;
  gate_up_col_[ET_PROJ_GATE] = 0;
  gate_up_col_[ET_PROJ_UP] = F;
}

Param& Model::add_param(const std::string& name, std::vector<int64_t> shape, Tensor& storage, size_t offset,
                        bool is_adapter, bool trainable) {
  auto p = std::make_unique<Param>();
  p->name = name;
  p->count = 1;
  for (int64_t s : shape) p->count *= static_cast<size_t>(s);
  p->rows = shape.size() >= 2 ? static_cast<long>(shape[0]) : 1;
  p->cols = static_cast<long>(p->count) / p->rows;
  p->ld = p->cols;
  p->shape = std::move(shape);
  p->storage = &storage;
  p->offset = offset;
  p->is_adapter = is_adapter;
  p->trainable = trainable;
  p->was_set = is_adapter;
  by_name_[name] = p.get();
  params_.push_back(std::move(p));
  if (!is_adapter) {
    auto slot = std::make_unique<OptimizerSlot>();
    *slot = OptimizerSlot{&storage, offset, params_.back()->count, params_.back()->shape.size() >= 2, {}, {}};
    base_slots_.push_back(std::move(slot));
  }
  return *params_.back();
}

void Param::read(float* out, bool grad) const {
  if (sparse) {
    if (grad) fail("tensor '", name, "' is frozen, so it has no gradient");
    sparse->expand(out, cols);
    return;
  }
  const float* base = (grad ? storage->grad.data() : storage->value.data()) + offset;
  for (long r = 0; r < rows; ++r) std::memcpy(out + r * cols, base + r * ld, cols * sizeof(float));
}

void Param::write(const float* in) {
  if (sparse) {
    sparse->compress(in, name);
  } else {
    float* base = storage->value.data() + offset;
    for (long r = 0; r < rows; ++r) std::memcpy(base + r * ld, in + r * cols, cols * sizeof(float));
  }
  was_set = true;
}

void Model::register_params() {
  const int64_t d = c_.hidden_size, F = c_.intermediate_size, V = c_.vocab_size;
  add_param("model.embed_tokens.weight", {V, d}, embed_, 0, false);
  for (long l = 0; l < c_.num_layers; ++l) {
    LayerWeights& w = layers_[l];
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    add_param(prefix + "input_layernorm.weight", {d}, w.input_norm, 0, false);
    add_param(prefix + "self_attn.q_proj.weight", {q_dim_, d}, w.qkv, 0, false);
    add_param(prefix + "self_attn.k_proj.weight", {kv_dim_, d}, w.qkv, q_dim_ * d, false);
    add_param(prefix + "self_attn.v_proj.weight", {kv_dim_, d}, w.qkv, (q_dim_ + kv_dim_) * d, false);
    if (c_.qkv_bias) {
      add_param(prefix + "self_attn.q_proj.bias", {q_dim_}, w.qkv_bias, 0, false);
      add_param(prefix + "self_attn.k_proj.bias", {kv_dim_}, w.qkv_bias, q_dim_, false);
      add_param(prefix + "self_attn.v_proj.bias", {kv_dim_}, w.qkv_bias, q_dim_ + kv_dim_, false);
    }
    add_param(prefix + "self_attn.o_proj.weight", {d, q_dim_}, w.o, 0, false);
    if (c_.o_bias) add_param(prefix + "self_attn.o_proj.bias", {d}, w.o_bias, 0, false);
    add_param(prefix + "post_attention_layernorm.weight", {d}, w.post_norm, 0, false);
    add_param(prefix + "mlp.gate_proj.weight", {F, d}, w.gate_up, 0, false);
    add_param(prefix + "mlp.up_proj.weight", {F, d}, w.gate_up, F * d, false);
    add_param(prefix + "mlp.down_proj.weight", {d, F}, w.down, 0, false);
    if (c_.mlp_bias) {
      add_param(prefix + "mlp.gate_proj.bias", {F}, w.gate_up_bias, 0, false);
      add_param(prefix + "mlp.up_proj.bias", {F}, w.gate_up_bias, F, false);
      add_param(prefix + "mlp.down_proj.bias", {d}, w.down_bias, 0, false);
    }
  }
  add_param("model.norm.weight", {d}, final_norm_, 0, false);
  if (!c_.tie_word_embeddings) add_param("lm_head.weight", {V, d}, lm_head_, 0, false);
}

Param& Model::param(const std::string& name) {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    const bool adapter_name = name.find(".lora_") != std::string::npos || name.find(".router.") != std::string::npos ||
                              name.find(".experts.") != std::string::npos;
    fail("unknown tensor '", name, "'",
         adapter_name && !adapter_ ? " (no adapter is attached)"
         : adapter_name            ? " (not part of the attached adapter)"
                                   : " (not part of this model's configuration)");
  }
  return *it->second;
}

std::vector<OptimizerSlot*> Model::trainable_slots() {
  std::vector<OptimizerSlot*> out;
  if (train_mode_ == ET_TRAIN_FULL)
    for (auto& s : base_slots_) out.push_back(s.get());
  for (auto& s : adapter_slots_) out.push_back(s.get());
  return out;
}

std::vector<std::string> Model::names(int kind) {
  std::vector<std::string> out;
  for (auto& p : params_) {
    const bool take = kind == ET_TENSORS_BASE        ? !p->is_adapter
                      : kind == ET_TENSORS_ADAPTER   ? p->is_adapter
                      : kind == ET_TENSORS_TRAINABLE ? (p->is_adapter ? p->trainable : train_mode_ == ET_TRAIN_FULL)
                                                     : false;
    if (take) out.push_back(p->name);
  }
  return out;
}

void Model::attach_lora(const et_lora_config& config) {
  et_adapter_config adapter{};
  adapter.method = ET_METHOD_LORA;
  adapter.rank = config.rank;
  adapter.alpha = config.alpha;
  adapter.use_rslora = config.use_rslora;
  adapter.dropout = config.dropout;
  adapter.target_mask = config.target_mask;
  adapter.seed = config.seed;
  attach_adapter(adapter);
}

void Model::attach_adapter(const et_adapter_config& config) {
  const long d = c_.hidden_size, F = c_.intermediate_size;
  const std::array<std::array<long, 2>, ET_NUM_PROJ> in_out = {
      {{d, q_dim_}, {d, kv_dim_}, {d, kv_dim_}, {q_dim_, d}, {d, F}, {d, F}, {F, d}}};
  auto adapter = std::make_unique<Adapter>(config, c_.num_layers, in_out);
  // Drop the previous adapter's names and optimizer state before its storage goes away.
  params_.erase(std::remove_if(params_.begin(), params_.end(),
                               [&](const std::unique_ptr<Param>& p) {
                                 if (p->is_adapter) by_name_.erase(p->name);
                                 return p->is_adapter;
                               }),
                params_.end());
  adapter_slots_.clear();
  adapter_ = std::move(adapter);
  register_adapter_params();
}

// Names per docs/methods.md: lora `lora_A`/`lora_B`; router methods `router` then each expert's
// `experts.{e}.lora_A`/`lora_B` (views into the group's stacked A rows and the site's B columns);
// FlyLoRA `lora_A` (frozen, sparse), `lora_B`, `topk_bias` (moved by the bias update only).
void Model::register_adapter_params() {
  Adapter& a = *adapter_;
  const long r = a.settings().c.rank;
  for (long l = 0; l < c_.num_layers; ++l)
    for (int kind = 0; kind < NUM_GROUPS; ++kind) {
      Group& g = a.group(l, kind);
      if (a.trains_a() && !g.sites.empty()) {
        auto slot = std::make_unique<OptimizerSlot>();
        *slot = OptimizerSlot{&g.down, 0, g.down.value.size(), true, {}, {}};
        adapter_slots_.push_back(std::move(slot));
      }
    }
  for (Site* site : a.sites()) {
    const std::string module = Adapter::module_name(site->layer, site->projection);
    Group& g = a.group(site->layer, group_of_projection(static_cast<int>(site->projection)));
    const long in = site->in, out = site->out, E = site->experts;
    auto slot = std::make_unique<OptimizerSlot>();
    *slot = OptimizerSlot{&site->B, 0, site->B.value.size(), true, {}, {}};
    adapter_slots_.push_back(std::move(slot));
    switch (a.method()) {
      case ET_METHOD_LORA:
        add_param(module + ".lora_A.weight", {r, in}, g.down, site->a_row * in, true);
        add_param(module + ".lora_B.weight", {out, r}, site->B, 0, true);
        break;
      case ET_METHOD_FLYLORA: {
        add_param(module + ".lora_A.weight", {r, in}, g.down, 0, true, false).sparse = site->sparse_a.get();
        add_param(module + ".lora_B.weight", {out, r}, site->B, 0, true);
        add_param(module + ".topk_bias", {r}, site->topk_bias, 0, true, false);
        break;
      }
      default:
        add_param(module + ".router.weight", {E, in}, g.down, site->router_row * in, true);
        for (long e = 0; e < E; ++e) {
          const std::string expert = module + ".experts." + std::to_string(e);
          add_param(expert + ".lora_A.weight", {r, in}, g.down, (site->a_row + e * r) * in, true);
          add_param(expert + ".lora_B.weight", {out, r}, site->B, e * r, true).ld = site->width;
        }
    }
  }
}

std::array<long, NUM_GROUPS> Model::adapter_widths() const {
  std::array<long, NUM_GROUPS> widths{};
  if (adapter_)
    for (int g = 0; g < NUM_GROUPS; ++g) widths[g] = adapter_->max_group_width(g);
  return widths;
}

void Model::set_train_mode(int mode) {
  if (mode != ET_TRAIN_LORA && mode != ET_TRAIN_FULL) fail("unknown train mode ", mode);
  train_mode_ = mode;
  for (auto& p : params_) {
    if (p->is_adapter) continue;
    Buffer& grad = p->storage->grad;
    grad.resize(mode == ET_TRAIN_FULL ? p->storage->value.size() : 0);
  }
  if (mode != ET_TRAIN_FULL)
    for (auto& slot : base_slots_) {
      slot->adam_m.resize(0);
      slot->adam_v.resize(0);
    }
}

void Model::check_ready() {
  if (ready_) return;
  std::vector<std::string> missing;
  for (auto& p : params_)
    if (!p->was_set) missing.push_back(p->name);
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < std::min<size_t>(missing.size(), 10); ++i) list += (i ? ", " : "") + missing[i];
    if (missing.size() > 10) list += ", …";
    fail(missing.size(), " tensor(s) were never set: ", list);
  }
  ready_ = true;
}

void Model::check_ids(const int32_t* ids, long count, const char* what, bool allow_ignore) const {
  for (long i = 0; i < count; ++i) {
    const int32_t id = ids[i];
    if (id >= c_.vocab_size || id < (allow_ignore ? -1 : 0))
      fail(what, "[", i, "] = ", id, " is outside the vocabulary [0, ", c_.vocab_size, ")",
           allow_ignore ? " (or -1 to ignore)" : "");
  }
}

void Model::reserve_scratch(long rows) {
  const long d = c_.hidden_size, F = c_.intermediate_size;
  ffn_act_.reserve(rows * F);
  d_ffn_act_.reserve(rows * F);
  d_gate_up_.reserve(rows * 2 * F);
  d_qkv_.reserve(rows * qkv_dim_);
  d_attn_.reserve(rows * q_dim_);
  d_res_.reserve(rows * d);
  d_normed_.reserve(rows * d);
  final_normed_.reserve(rows * d);
  final_rstd_.reserve(rows);
  if (static_cast<long>(ones_.size()) < rows) {
    ones_.resize(rows);
    std::fill(ones_.data(), ones_.data() + rows, 1.0f);
  }
}

// ---------------------------------------------------------------------------------------------
// Building blocks

void Model::embed(const int32_t* ids, long rows, float* x) {
  const long d = c_.hidden_size;
  pool().parallel_for(rows, kRowGrain, [&](long r0, long r1, int) {
    for (long t = r0; t < r1; ++t) std::memcpy(x + t * d, embed_.value.data() + static_cast<long>(ids[t]) * d, d * 4);
  });
}

void Model::add_bias_rows(const float* bias, float* y, long ldy, long rows, long n) {
  const Kernels& K = kernels();
  pool().parallel_for(rows, kRowGrain, [&](long r0, long r1, int) {
    for (long t = r0; t < r1; ++t) K.add(y + t * ldy, bias, y + t * ldy, n);
  });
}

// grad[n] += Σ_rows dy (a 1×rows by rows×n product with a row of ones).
void Model::accumulate_bias_grad(const float* dy, long lddy, long rows, long n, float* grad) {
  gemm(false, false, 1, n, rows, 1.0f, ones_.data(), rows, dy, lddy, 1.0f, grad, n);
}

// y = x Wᵀ (+ bias) with beta = 0, or y += … with beta = 1.
void Model::linear_forward(Tensor& w, Tensor& bias, long bias_offset, long out, long in, const float* x, long rows,
                           float* y, long ldy, float beta) {
  gemm(false, true, rows, out, in, 1.0f, x, in, w.value.data(), in, beta, y, ldy);
  if (!bias.value.empty()) add_bias_rows(bias.value.data() + bias_offset, y, ldy, rows, out);
}

// y = rmsnorm(x, w) and rstd for `rows` rows, split across the pool.
void Model::rmsnorm_forward(const float* x, const Tensor& w, float* y, float* rstd, long rows) {
  const Kernels& K = kernels();
  const long d = c_.hidden_size;
  pool().parallel_for(rows, kRowGrain, [&](long r0, long r1, int) {
    K.rmsnorm_forward(x + r0 * d, w.value.data(), y + r0 * d, rstd + r0, r1 - r0, d, c_.rms_norm_eps);
  });
}

// act[rows, F] = silu(gate) ⊙ up from the stacked [rows, 2F] gate/up pre-activations.
void Model::swiglu_forward(const float* gate_up, float* act, long rows) {
  const Kernels& K = kernels();
  const long F = c_.intermediate_size;
  pool().parallel_for(rows, kRowGrain, [&](long r0, long r1, int) {
    for (long t = r0; t < r1; ++t) K.swiglu_forward(gate_up + t * 2 * F, gate_up + t * 2 * F + F, act + t * F, F);
  });
}

void Model::rmsnorm_backward(const float* dy, const float* x, Tensor& w, const float* rstd, float* dx, long rows,
                             bool accumulate_dx) {
  const Kernels& K = kernels();
  const long d = c_.hidden_size;
  const bool want_dw = !w.grad.empty();
  const long chunks = (rows + kReduceRows - 1) / kReduceRows;
  if (want_dw) {
    norm_partials_.reserve(chunks * d);
    std::memset(norm_partials_.data(), 0, chunks * d * sizeof(float));
  }
  pool().parallel_for(rows, kReduceRows, [&](long r0, long r1, int) {
    float* partial = want_dw ? norm_partials_.data() + (r0 / kReduceRows) * d : nullptr;
    K.rmsnorm_backward(dy + r0 * d, x + r0 * d, w.value.data(), rstd + r0, dx + r0 * d, partial, r1 - r0, d,
                       accumulate_dx);
  });
  // Partial sums added in chunk order, so the result does not depend on thread timing.
  if (want_dw)
    for (long c = 0; c < chunks; ++c) K.add(w.grad.data(), norm_partials_.data() + c * d, w.grad.data(), d);
}

void Model::apply_rope(float* qkv, long rows, long seq, long position0, float sign) {
  const Kernels& K = kernels();
  rope_.ensure(position0 + seq);
  pool().parallel_for(rows, kRowGrain, [&](long r0, long r1, int) {
    for (long t = r0; t < r1; ++t) {
      const long pos = position0 + t % seq;
      float* row = qkv + t * qkv_dim_;
      K.rope(row, c_.num_heads, c_.head_dim, rope_.cos(pos), rope_.sin(pos), sign);
      K.rope(row + q_dim_, c_.num_kv_heads, c_.head_dim, rope_.cos(pos), rope_.sin(pos), sign);
    }
  });
}

void Model::adapter_forward(long l, int group, const float* x, long ldx, float* y, long ldy,
                            const std::array<long, ET_NUM_PROJ>& y_col, LayerActivations& a, const Pass& pass) {
  if (adapter_)
    adapter_->forward_group(adapter_->group(l, group), x, ldx, y, ldy, y_col, a.adapter_hz[group].data(),
                            pass.adapter());
}

void Model::adapter_backward(long l, int group, const float* x, long ldx, const float* dy, long lddy,
                             const std::array<long, ET_NUM_PROJ>& y_col, float* dx, long lddx, LayerActivations& a,
                             const Pass& pass) {
  if (adapter_)
    adapter_->backward_group(adapter_->group(l, group), x, ldx, a.adapter_hz[group].data(), dy, lddy, y_col, dx,
                             lddx, pass.adapter());
}

// ---------------------------------------------------------------------------------------------
// One decoder layer

void Model::forward_layer(long l, const float* x, float* x_out, LayerActivations& a, const Pass& pass) {
  LayerWeights& w = layers_[l];
  const long N = pass.rows, d = c_.hidden_size, F = c_.intermediate_size;

  rmsnorm_forward(x, w.input_norm, a.xn1.data(), a.rstd1.data(), N);
  linear_forward(w.qkv, w.qkv_bias, 0, qkv_dim_, d, a.xn1.data(), N, a.qkv.data(), qkv_dim_, 0.0f);
  adapter_forward(l, GROUP_QKV, a.xn1.data(), d, a.qkv.data(), qkv_dim_, qkv_col_, a, pass);
  apply_rope(a.qkv.data(), N, pass.seq, pass.position0, 1.0f);

  AttentionBatch batch{pass.batch, pass.seq, 0, pass.seq, a.qkv.data(), qkv_dim_, a.qkv.data() + q_dim_,
                       a.qkv.data() + q_dim_ + kv_dim_, qkv_dim_};
  if (pass.cache) {
    KvCache& cache = *pass.cache;
    for (long t = 0; t < N; ++t) {
      std::memcpy(cache.k[l].data() + (pass.position0 + t) * kv_dim_, a.qkv.data() + t * qkv_dim_ + q_dim_, kv_dim_ * 4);
      std::memcpy(cache.v[l].data() + (pass.position0 + t) * kv_dim_,
                  a.qkv.data() + t * qkv_dim_ + q_dim_ + kv_dim_, kv_dim_ * 4);
    }
    batch = {1, N, pass.position0, cache.capacity, a.qkv.data(), qkv_dim_, cache.k[l].data(), cache.v[l].data(),
             kv_dim_};
  }
  attention_forward(attention_shape_, batch, a.attn.data(), q_dim_, pass.training ? a.lse.data() : nullptr);

  std::memcpy(a.xmid.data(), x, N * d * sizeof(float));
  linear_forward(w.o, w.o_bias, 0, d, q_dim_, a.attn.data(), N, a.xmid.data(), d, 1.0f);
  adapter_forward(l, GROUP_O, a.attn.data(), q_dim_, a.xmid.data(), d, single_col_, a, pass);

  rmsnorm_forward(a.xmid.data(), w.post_norm, a.xn2.data(), a.rstd2.data(), N);
  linear_forward(w.gate_up, w.gate_up_bias, 0, 2 * F, d, a.xn2.data(), N, a.gate_up.data(), 2 * F, 0.0f);
  adapter_forward(l, GROUP_GATE_UP, a.xn2.data(), d, a.gate_up.data(), 2 * F, gate_up_col_, a, pass);
  float* act = ffn_act_.data();
  swiglu_forward(a.gate_up.data(), act, N);

  std::memcpy(x_out, a.xmid.data(), N * d * sizeof(float));
  linear_forward(w.down, w.down_bias, 0, d, F, act, N, x_out, d, 1.0f);
  adapter_forward(l, GROUP_DOWN, act, F, x_out, d, single_col_, a, pass);
}

// dres holds dL/d(layer output) on entry and dL/d(layer input) on exit (when need_dx).
void Model::backward_layer(long l, const float* x, LayerActivations& a, float* dres, bool need_dx, const Pass& pass) {
  const Kernels& K = kernels();
  LayerWeights& w = layers_[l];
  const long N = pass.rows, d = c_.hidden_size, F = c_.intermediate_size;
  const bool full = train_mode_ == ET_TRAIN_FULL;

  // MLP: the activation silu(gate)·up is recomputed rather than stored.
  float* act = ffn_act_.data();
  float* d_act = d_ffn_act_.data();
  float* d_gu = d_gate_up_.data();
  swiglu_forward(a.gate_up.data(), act, N);
  if (full) {
    gemm(true, false, d, F, N, 1.0f, dres, d, act, F, 1.0f, w.down.grad.data(), F);
    if (c_.mlp_bias) accumulate_bias_grad(dres, d, N, d, w.down_bias.grad.data());
  }
  gemm(false, false, N, F, d, 1.0f, dres, d, w.down.value.data(), F, 0.0f, d_act, F);
  adapter_backward(l, GROUP_DOWN, act, F, dres, d, single_col_, d_act, F, a, pass);
  pool().parallel_for(N, kRowGrain, [&](long r0, long r1, int) {
    for (long t = r0; t < r1; ++t) {
      const float* gu = a.gate_up.data() + t * 2 * F;
      K.swiglu_backward(gu, gu + F, d_act + t * F, d_gu + t * 2 * F, d_gu + t * 2 * F + F, F);
    }
  });
  if (full) {
    gemm(true, false, 2 * F, d, N, 1.0f, d_gu, 2 * F, a.xn2.data(), d, 1.0f, w.gate_up.grad.data(), d);
    if (c_.mlp_bias) accumulate_bias_grad(d_gu, 2 * F, N, 2 * F, w.gate_up_bias.grad.data());
  }
  float* d_normed = d_normed_.data();
  gemm(false, false, N, d, 2 * F, 1.0f, d_gu, 2 * F, w.gate_up.value.data(), d, 0.0f, d_normed, d);
  adapter_backward(l, GROUP_GATE_UP, a.xn2.data(), d, d_gu, 2 * F, gate_up_col_, d_normed, d, a, pass);
  rmsnorm_backward(d_normed, a.xmid.data(), w.post_norm, a.rstd2.data(), dres, N, true);

  // Attention
  if (full) {
    gemm(true, false, d, q_dim_, N, 1.0f, dres, d, a.attn.data(), q_dim_, 1.0f, w.o.grad.data(), q_dim_);
    if (c_.o_bias) accumulate_bias_grad(dres, d, N, d, w.o_bias.grad.data());
  }
  float* d_attn = d_attn_.data();
  gemm(false, false, N, q_dim_, d, 1.0f, dres, d, w.o.value.data(), q_dim_, 0.0f, d_attn, q_dim_);
  adapter_backward(l, GROUP_O, a.attn.data(), q_dim_, dres, d, single_col_, d_attn, q_dim_, a, pass);
  float* d_qkv = d_qkv_.data();
  AttentionBatch batch{pass.batch, pass.seq, 0, pass.seq, a.qkv.data(), qkv_dim_, a.qkv.data() + q_dim_,
                       a.qkv.data() + q_dim_ + kv_dim_, qkv_dim_};
  attention_backward(attention_shape_, batch, a.attn.data(), q_dim_, d_attn, q_dim_, a.lse.data(), d_qkv, qkv_dim_,
                     d_qkv + q_dim_, d_qkv + q_dim_ + kv_dim_, qkv_dim_);
  apply_rope(d_qkv, N, pass.seq, 0, -1.0f);  // the rotation's transpose is the inverse rotation
  if (full) {
    gemm(true, false, qkv_dim_, d, N, 1.0f, d_qkv, qkv_dim_, a.xn1.data(), d, 1.0f, w.qkv.grad.data(), d);
    if (c_.qkv_bias) accumulate_bias_grad(d_qkv, qkv_dim_, N, qkv_dim_, w.qkv_bias.grad.data());
  }
  if (need_dx) gemm(false, false, N, d, qkv_dim_, 1.0f, d_qkv, qkv_dim_, w.qkv.value.data(), d, 0.0f, d_normed, d);
  adapter_backward(l, GROUP_QKV, a.xn1.data(), d, d_qkv, qkv_dim_, qkv_col_, need_dx ? d_normed : nullptr, d, a,
                   pass);
  if (need_dx) rmsnorm_backward(d_normed, x, w.input_norm, a.rstd1.data(), dres, N, true);
}

// ---------------------------------------------------------------------------------------------
// Whole passes

// Runs every layer without keeping activations (one shared set, inputs ping-ponged) and returns
// the last layer's output, [pass.rows, d].
const float* Model::forward_no_grad(const int32_t* ids, const Pass& pass) {
  const long N = pass.rows, d = c_.hidden_size;
  reserve_scratch(N);
  if (activations_.empty()) activations_.resize(1);
  activations_[0].reserve(c_, N, adapter_widths());
  if (layer_inputs_.size() < 2) layer_inputs_.resize(2);
  for (int i = 0; i < 2; ++i) layer_inputs_[i].reserve(N * d);
  embed(ids, N, layer_inputs_[0].data());
  for (long l = 0; l < c_.num_layers; ++l)
    forward_layer(l, layer_inputs_[l % 2].data(), layer_inputs_[(l + 1) % 2].data(), activations_[0], pass);
  return layer_inputs_[c_.num_layers % 2].data();
}

void Model::forward_logits(const int32_t* ids, long batch, long seq, float* logits, bool collect,
                           const uint8_t* token_mask) {
  check_ready();
  if (batch <= 0 || seq <= 0) fail("forward needs batch and sequence length > 0, got ", batch, " x ", seq);
  const long N = batch * seq, d = c_.hidden_size, V = c_.vocab_size;
  check_ids(ids, N, "ids", false);
  const float* xf = forward_no_grad(ids, Pass{batch, seq, N, false, 0, nullptr, 0, collect, token_mask});
  rmsnorm_forward(xf, final_norm_, final_normed_.data(), final_rstd_.data(), N);
  gemm(false, true, N, V, d, 1.0f, final_normed_.data(), d, lm_head().value.data(), d, 0.0f, logits, V);
}

et_step_stats Model::forward_backward(const int32_t* ids, const int32_t* targets, long batch, long seq,
                                      const et_step_options& options) {
  check_ready();
  if (batch <= 0 || seq <= 0) fail("forward_backward needs batch and sequence length > 0, got ", batch, " x ", seq);
  if (trainable_slots().empty()) fail("nothing to train: attach an adapter or set the full training mode");
  const long N = batch * seq, d = c_.hidden_size, V = c_.vocab_size, L = c_.num_layers;
  check_ids(ids, N, "ids", false);
  check_ids(targets, N, "targets", true);
  const bool full = train_mode_ == ET_TRAIN_FULL;
  const bool recompute = options.recompute != 0;

  reserve_scratch(N);
  if (static_cast<long>(layer_inputs_.size()) < L + 1) layer_inputs_.resize(L + 1);
  for (auto& x : layer_inputs_) x.reserve(N * d);
  activations_.resize(recompute ? 1 : L);
  for (auto& a : activations_) a.reserve(c_, N, adapter_widths());
  auto activations_of = [&](long l) -> LayerActivations& { return activations_[recompute ? 0 : l]; };
  // The first forward records routing statistics; a recomputing forward in backward does not.
  Pass pass{batch, seq, N, true, options.dropout_seed, nullptr, 0, true, options.token_mask};

  embed(ids, N, layer_inputs_[0].data());
  for (long l = 0; l < L; ++l)
    forward_layer(l, layer_inputs_[l].data(), layer_inputs_[l + 1].data(), activations_of(l), pass);
  pass.collect = false;
  AuxResult aux;
  if (adapter_)
    aux = adapter_->auxiliary_losses(batch, seq, options.token_mask, options.task_types, options.aux_scale);

  // Head: logits, loss and dlogits per chunk of rows, so [N, V] never exists at once.
  const Kernels& K = kernels();
  const float* xf = layer_inputs_[L].data();
  float* xnf = final_normed_.data();
  rmsnorm_forward(xf, final_norm_, xnf, final_rstd_.data(), N);
  const long chunk = std::min(N, std::max(128L, (16L << 20) / (V * 4)));
  logits_chunk_.reserve(chunk * V);
  std::vector<double> row_loss(N, 0.0);
  std::vector<char> row_correct(N, 0);
  float* w_lm = lm_head().value.data();
  float* d_normed = d_normed_.data();
  for (long c0 = 0; c0 < N; c0 += chunk) {
    const long rows = std::min(chunk, N - c0);
    float* logits = logits_chunk_.data();
    gemm(false, true, rows, V, d, 1.0f, xnf + c0 * d, d, w_lm, d, 0.0f, logits, V);
    pool().parallel_for(rows, 8, [&](long r0, long r1, int) {
      for (long r = r0; r < r1; ++r) {
        const long t = c0 + r;
        float* row = logits + r * V;
        if (targets[t] < 0) {
          std::memset(row, 0, V * sizeof(float));
          continue;
        }
        long argmax = 0;
        row_loss[t] = K.cross_entropy(row, V, targets[t], options.loss_scale, &argmax);
        row_correct[t] = argmax == targets[t];
      }
    });
    gemm(false, false, rows, d, V, 1.0f, logits, V, w_lm, d, 0.0f, d_normed + c0 * d, d);
    if (full) gemm(true, false, V, d, rows, 1.0f, logits, V, xnf + c0 * d, d, 1.0f, lm_head().grad.data(), d);
  }
  float* dres = d_res_.data();
  rmsnorm_backward(d_normed, xf, final_norm_, final_rstd_.data(), dres, N, false);

  const bool need_input = options.need_input_grad != 0 || full;
  for (long l = L - 1; l >= 0; --l) {
    if (recompute) forward_layer(l, layer_inputs_[l].data(), layer_inputs_[l + 1].data(), activations_of(l), pass);
    backward_layer(l, layer_inputs_[l].data(), activations_of(l), dres, l > 0 || need_input, pass);
  }
  if (options.need_input_grad) {
    input_grad_.reserve(N * d);
    std::memcpy(input_grad_.data(), dres, N * d * sizeof(float));
    input_grad_rows_ = N;
  }
  if (full) {
    // Scatter-add into the embedding rows; split by columns so repeated ids never race.
    float* grad = embed_.grad.data();
    pool().parallel_for(d, 64, [&](long j0, long j1, int) {
      for (long t = 0; t < N; ++t) {
        float* dst = grad + static_cast<long>(ids[t]) * d;
        for (long j = j0; j < j1; ++j) dst[j] += dres[t * d + j];
      }
    });
  }

  if (adapter_) adapter_->end_micro_batch();

  et_step_stats stats{};
  stats.aux_balance = aux.balance;
  stats.aux_z = aux.z;
  stats.aux_entropy = aux.entropy;
  stats.aux_lbc = aux.lbc;
  stats.aux_total = aux.total;
  stats.balance_step = aux.balance_step;
  for (long t = 0; t < N; ++t) {
    if (targets[t] < 0) continue;
    stats.loss_sum += row_loss[t];
    stats.tokens += 1;
    stats.correct += row_correct[t];
  }
  return stats;
}

void Model::zero_grad() {
  for (OptimizerSlot* slot : trainable_slots()) std::memset(slot->grad(), 0, slot->count * sizeof(float));
}

float Model::optimizer_step(const et_adamw& h) {
  std::vector<OptimizerSlot*> params = trainable_slots();
  if (params.empty()) fail("nothing to train: attach an adapter or set the full training mode");
  if (!(h.lr >= 0.0f) || !(h.beta1 >= 0.0f && h.beta1 < 1.0f) || !(h.beta2 >= 0.0f && h.beta2 < 1.0f) ||
      !(h.eps > 0.0f) || !(h.weight_decay >= 0.0f) || !(h.max_grad_norm >= 0.0f))
    fail("invalid AdamW hyperparameters: lr=", h.lr, " beta1=", h.beta1, " beta2=", h.beta2, " eps=", h.eps,
         " weight_decay=", h.weight_decay, " max_grad_norm=", h.max_grad_norm);
  const Kernels& K = kernels();

  // Global norm, summed per fixed chunk then in order: deterministic whatever the threads do.
  double total = 0.0;
  for (OptimizerSlot* p : params) {
    const long n = static_cast<long>(p->count);
    const float* g = p->grad();
    std::vector<double> partial((n + kOptimizerGrain - 1) / kOptimizerGrain, 0.0);
    pool().parallel_for(n, kOptimizerGrain, [&](long i0, long i1, int) {
      partial[i0 / kOptimizerGrain] = K.sum_squares(g + i0, i1 - i0);
    });
    for (double s : partial) total += s;
  }
  const float norm = static_cast<float>(std::sqrt(total));
  float clip = 1.0f;
  if (h.max_grad_norm > 0.0f && norm > h.max_grad_norm) clip = h.max_grad_norm / (norm + 1e-6f);
  if (!std::isfinite(norm)) fail("gradient norm is not finite (", norm, "): the step was not applied");

  ++adam_steps_;
  const double t = static_cast<double>(adam_steps_);
  AdamWScalars s{h.lr, h.beta1, h.beta2, h.eps, 0.0f, static_cast<float>(1.0 - std::pow(h.beta1, t)),
                 static_cast<float>(std::sqrt(1.0 - std::pow(h.beta2, t))), clip};
  for (OptimizerSlot* p : params) {
    if (p->adam_m.size() != p->count) {
      p->adam_m.resize(p->count);
      p->adam_v.resize(p->count);
    }
    // Decoupled weight decay on matrices and embeddings only, not on norms and biases.
    s.weight_decay = p->decay ? h.weight_decay : 0.0f;
    float* value = p->value();
    const float* grad = p->grad();
    pool().parallel_for(static_cast<long>(p->count), kOptimizerGrain, [&](long i0, long i1, int) {
      K.adamw(value + i0, grad + i0, p->adam_m.data() + i0, p->adam_v.data() + i0, i1 - i0, s);
    });
  }
  zero_grad();
  if (adapter_) adapter_->end_step();
  return norm;
}

size_t Model::optimizer_state_size() {
  size_t total = 0;
  for (OptimizerSlot* p : trainable_slots()) total += p->count;
  return total;
}

void Model::get_optimizer_state(float* m, float* v, size_t count) {
  const size_t want = optimizer_state_size();
  if (count != want) fail("optimizer state has ", want, " values per moment, got a buffer of ", count);
  size_t at = 0;
  for (OptimizerSlot* p : trainable_slots()) {
    if (p->adam_m.size() == p->count) {
      std::memcpy(m + at, p->adam_m.data(), p->count * sizeof(float));
      std::memcpy(v + at, p->adam_v.data(), p->count * sizeof(float));
    } else {
      std::memset(m + at, 0, p->count * sizeof(float));
      std::memset(v + at, 0, p->count * sizeof(float));
    }
    at += p->count;
  }
}

void Model::set_optimizer_state(const float* m, const float* v, size_t count, int64_t steps) {
  const size_t want = optimizer_state_size();
  if (count != want) fail("optimizer state has ", want, " values per moment, got ", count);
  if (steps < 0) fail("optimizer step count must not be negative, got ", steps);
  size_t at = 0;
  for (OptimizerSlot* p : trainable_slots()) {
    p->adam_m.resize(p->count);
    p->adam_v.resize(p->count);
    std::memcpy(p->adam_m.data(), m + at, p->count * sizeof(float));
    std::memcpy(p->adam_v.data(), v + at, p->count * sizeof(float));
    at += p->count;
  }
  adam_steps_ = steps;
}

// ---------------------------------------------------------------------------------------------
// Decoding with a KV cache

void Model::session_reset(KvCache& cache, long capacity) {
  if (capacity <= 0) fail("session length must be positive, got ", capacity);
  cache.k.resize(c_.num_layers);
  cache.v.resize(c_.num_layers);
  for (long l = 0; l < c_.num_layers; ++l) {
    cache.k[l].resize(capacity * kv_dim_);
    cache.v[l].resize(capacity * kv_dim_);
  }
  cache.capacity = capacity;
  cache.length = 0;
}

void Model::session_append(KvCache& cache, const int32_t* ids, long n, float* logits) {
  check_ready();
  if (n <= 0) fail("append needs at least one token");
  if (cache.length + n > cache.capacity)
    fail("session is full: ", cache.length, " + ", n, " tokens exceed its length ", cache.capacity);
  check_ids(ids, n, "ids", false);
  const long d = c_.hidden_size, V = c_.vocab_size;
  const float* last = forward_no_grad(ids, Pass{1, n, n, false, 0, &cache, cache.length}) + (n - 1) * d;
  rmsnorm_forward(last, final_norm_, final_normed_.data(), final_rstd_.data(), 1);
  gemm(false, true, 1, V, d, 1.0f, final_normed_.data(), d, lm_head().value.data(), d, 0.0f, logits, V);
  cache.length += n;
}

}  // namespace et
