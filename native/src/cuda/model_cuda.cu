// The training step on a CUDA device: the same computation as model.cpp + adapter.cpp, with the
// frozen base in bf16, fp32 masters and AdamW moments for the adapter, fp32 accumulation.
//
// The fused adapter operand (docs/cuda.md): per input group (q/k/v, o, gate/up, down) the
// activation buffer is [X | M] (bf16, N × (in + Σ E·r)) and the weight is [W | s·B] with each
// site's s·B in its own rows and columns (zeros elsewhere), so the base product and every adapter
// update of the group are one GEMM with K = in + Σ E·r; its backward likewise yields dX and dM.
// M = H ⊙ Ĝ is written into the operand's tail by gate_forward after H = X·Aᵀ (and the router
// logits z = X·Rᵀ) come out of one small GEMM.
//
// The host twin (et::Model) stays the registry of names and the source of initial values; the
// auxiliary losses and routing statistics run on it from the routing arrays copied back (they are
// small: rows × experts per site), so their math exists once.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "../adapter.h"
#include "../model.h"
#include "../rng.h"
#include "backend.h"
#include "check.h"
#include "gemm.h"
#include "kernels.h"

namespace et {

namespace {

using cuda::bf16;
using cuda::DType;

template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() {
    if (ptr_) cudaFree(ptr_);
  }
  // Grows to at least n elements; contents are not kept.
  void reserve(size_t n) {
    if (n <= n_) return;
    if (ptr_) ET_CUDA_CHECK(cudaFree(ptr_));
    ptr_ = nullptr;
    n_ = 0;
    ET_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), n * sizeof(T)));
    n_ = n;
  }
  void zero(cudaStream_t s) {
    if (n_) ET_CUDA_CHECK(cudaMemsetAsync(ptr_, 0, n_ * sizeof(T), s));
  }
  void upload(const T* host, size_t n, cudaStream_t s) {
    reserve(n);
    if (n) ET_CUDA_CHECK(cudaMemcpyAsync(ptr_, host, n * sizeof(T), cudaMemcpyHostToDevice, s));
  }
  void download(T* host, size_t n, cudaStream_t s) const {
    if (n) ET_CUDA_CHECK(cudaMemcpyAsync(host, ptr_, n * sizeof(T), cudaMemcpyDeviceToHost, s));
  }
  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  size_t size() const { return n_; }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

// A trainable tensor on the device: fp32 master, gradient and AdamW moments.
struct DeviceTensor {
  Tensor* host = nullptr;
  OptimizerSlot* slot = nullptr;
  size_t count = 0;
  DeviceArray<float> value, grad, adam_m, adam_v;
};

struct DeviceSite {
  Site* host = nullptr;
  long projection = 0, row0 = 0;  // rows of the group's stacked weight that this projection owns
  DeviceTensor* B = nullptr;
  // Routing of the current pass, [rows, E], kept for the backward.
  DeviceArray<float> prob, gate, lse, aux_dprob, aux_zfactor, dgate;
  DeviceArray<uint8_t> selected, broadcast;
  bool has_aux = false;
  DeviceArray<int32_t> sparse_column;  // FlyLoRA
  DeviceArray<float> sparse_value, topk_bias;
};

struct DeviceGroup {
  Group* host = nullptr;
  long in = 0, out = 0, h_width = 0, z_width = 0;
  long ext() const { return in + h_width; }  // columns of [X | M] and [W | s·B]
  long width() const { return h_width + z_width; }
  DeviceTensor* down = nullptr;  // [A rows; router rows] fp32 master (absent for FlyLoRA)
  DeviceArray<bf16> down_bf16;   // its bf16 shadow for the forward product
  std::vector<DeviceSite*> sites;
  DeviceArray<bf16> weight;      // [out, in + h_width]: [W | s·B]
  DeviceArray<float> bias;       // [out] or empty
};

struct DeviceLayer {
  DeviceArray<float> input_norm, post_norm;
  DeviceGroup groups[NUM_GROUPS];
};

// What one layer keeps from its forward for its backward.
struct DeviceActivations {
  DeviceArray<float> x;                      // layer input [N, d]
  DeviceArray<bf16> operand[NUM_GROUPS];     // [X | M] per group: rmsnorm(x), attention, rmsnorm(xmid), swiglu
  DeviceArray<float> hz[NUM_GROUPS];         // [H | z] per group
  DeviceArray<float> rstd1, rstd2, qkv, lse, xmid, gate_up;
};

}  // namespace

class GpuModel : public GpuBackend {
 public:
  GpuModel(Model& host, int device);
  ~GpuModel() override {
    cudaSetDevice(device_);
    clear_adapter();
    if (stream_) cudaStreamDestroy(stream_);
  }
  void host_changed() override { host_dirty_ = true; }
  void sync_to_host() override;
  et_step_stats forward_backward(const int32_t* ids, const int32_t* targets, long batch, long seq,
                                 const et_step_options& options) override;
  void forward_logits(const int32_t* ids, long batch, long seq, float* logits, bool collect,
                      const uint8_t* token_mask) override;
  float optimizer_step(const et_adamw& hyper) override;
  void zero_grad() override;
  const char* describe() const override { return description_.c_str(); }

 private:
  struct Pass {
    long batch, seq, rows;
    bool training;
    uint32_t dropout_seed;
    bool collect;
    const uint8_t* token_mask;
  };

  void activate() { ET_CUDA_CHECK(cudaSetDevice(device_)); }
  void clear_adapter();
  void upload();
  void upload_weight(DeviceGroup& g, const Tensor& w);
  void refresh_shadows();
  void reserve(long rows, long seq);
  void check_trainable();

  void forward_layer(long l, const Pass& p, float* x_out);
  void backward_layer(long l, const Pass& p, float* dres, bool need_dx);
  void adapter_forward(DeviceGroup& g, long layer, bf16* operand, float* hz, const Pass& p);
  void adapter_backward(DeviceGroup& g, long layer, const bf16* operand, const float* hz, const float* dy, long lddy,
                        const std::array<long, ET_NUM_PROJ>& y_col, float* dext, bool need_dx, const Pass& p);
  // Routing arrays back to the host twin: statistics, auxiliary losses (and their gradients back up).
  void routing_to_host(const Pass& p, bool auxiliary, long batch, long seq, const et_step_options* options,
                       AuxResult* aux);
  const std::array<long, ET_NUM_PROJ>& y_col(int kind) const {
    return kind == GROUP_QKV ? host_.qkv_col_ : kind == GROUP_GATE_UP ? host_.gate_up_col_ : host_.single_col_;
  }

  Model& host_;
  int device_;
  std::string description_;
  cudaStream_t stream_ = nullptr;
  bool host_dirty_ = true;     // the host changed since the last upload
  bool device_newer_ = false;  // the device trained since the last download
  const et_model_config c_;
  long d_, F_, V_, q_dim_, kv_dim_, qkv_dim_;

  DeviceArray<bf16> embed_, lm_head_;
  DeviceArray<float> final_norm_, rope_cos_, rope_sin_;
  long rope_positions_ = 0;
  std::vector<DeviceLayer> layers_;
  std::vector<std::unique_ptr<DeviceSite>> sites_;
  std::vector<std::unique_ptr<DeviceTensor>> trainables_;  // in the host's trainable_slots() order
  std::vector<DeviceActivations> acts_;
  DeviceArray<float> final_x_, final_rstd_, logits_, d_normed_, dres_, loss_, delta_, dext_, dmid_, dgu_, dqkv_,
      scratch_f32_, scratch2_f32_, dhz_, m_f32_;
  DeviceArray<bf16> final_xn_, dlogits_, dy_bf16_, dropped_;
  DeviceArray<int32_t> ids_, targets_, argmax_;
  DeviceArray<cuda::TrainableSegment> segments_;
  DeviceArray<long> block_start_;
  DeviceArray<double> norm_partials_;
  long reserved_rows_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Construction and the host twin

GpuModel::GpuModel(Model& host, int device) : host_(host), device_(device), c_(host.config()) {
  int count = 0;
  ET_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (device < 0 || device >= count) fail("CUDA device ", device, " does not exist (", count, " visible)");
  activate();
  cudaDeviceProp prop{};
  ET_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  description_ = std::string("cuda:") + std::to_string(device) + " " + prop.name + " (gemm: " + cuda::gemm_backend() + ")";
  ET_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  d_ = c_.hidden_size;
  F_ = c_.intermediate_size;
  V_ = c_.vocab_size;
  q_dim_ = host_.q_dim_;
  kv_dim_ = host_.kv_dim_;
  qkv_dim_ = host_.qkv_dim_;
  layers_ = std::vector<DeviceLayer>(c_.num_layers);
}

void GpuModel::clear_adapter() {
  sites_.clear();
  trainables_.clear();
  for (DeviceLayer& layer : layers_)
    for (DeviceGroup& g : layer.groups) {
      g.sites.clear();
      g.down = nullptr;
      g.host = nullptr;
      g.h_width = g.z_width = 0;
    }
}

// [W | s·B] from the host's fp32 base rows, through a device staging buffer.
void GpuModel::upload_weight(DeviceGroup& g, const Tensor& w) {
  g.weight.reserve(g.out * g.ext());
  g.weight.zero(stream_);
  scratch_f32_.upload(w.value.data(), g.out * g.in, stream_);
  cuda::cast_rows(stream_, scratch_f32_.data(), g.in, g.weight.data(), g.ext(), g.out, g.in, 1.0f);
  ET_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the staging buffer is reused by the next call
}

void GpuModel::upload() {
  activate();
  host_.check_ready();
  if (host_.train_mode_ == ET_TRAIN_FULL)
    fail("full fine-tuning (ET_TRAIN_FULL) is not implemented on the CUDA backend: train an adapter, or use the CPU");
  clear_adapter();
  auto upload_bf16 = [&](DeviceArray<bf16>& dst, const Tensor& src) {
    dst.reserve(src.value.size());
    scratch_f32_.upload(src.value.data(), src.value.size(), stream_);
    cuda::cast_rows(stream_, scratch_f32_.data(), 0, dst.data(), 0, 1, static_cast<long>(src.value.size()), 1.0f);
    ET_CUDA_CHECK(cudaStreamSynchronize(stream_));
  };
  upload_bf16(embed_, host_.embed_);
  upload_bf16(lm_head_, host_.lm_head());
  final_norm_.upload(host_.final_norm_.value.data(), d_, stream_);

  Adapter* adapter = host_.adapter_.get();
  const long in_of[NUM_GROUPS] = {d_, q_dim_, d_, F_}, out_of[NUM_GROUPS] = {qkv_dim_, d_, 2 * F_, d_};
  for (long l = 0; l < c_.num_layers; ++l) {
    LayerWeights& w = host_.layers_[l];
    DeviceLayer& dl = layers_[l];
    dl.input_norm.upload(w.input_norm.value.data(), d_, stream_);
    dl.post_norm.upload(w.post_norm.value.data(), d_, stream_);
    const Tensor* weights[NUM_GROUPS] = {&w.qkv, &w.o, &w.gate_up, &w.down};
    const Tensor* biases[NUM_GROUPS] = {&w.qkv_bias, &w.o_bias, &w.gate_up_bias, &w.down_bias};
    for (int kind = 0; kind < NUM_GROUPS; ++kind) {
      DeviceGroup& g = dl.groups[kind];
      g.in = in_of[kind];
      g.out = out_of[kind];
      if (adapter) {
        g.host = &adapter->group(l, kind);
        g.h_width = g.host->h_width;
        g.z_width = g.host->z_width;
      }
      upload_weight(g, *weights[kind]);
      if (!biases[kind]->value.empty()) g.bias.upload(biases[kind]->value.data(), g.out, stream_);
    }
  }
  // Trainables in the host's optimizer order, so optimizer state maps one to one.
  for (OptimizerSlot* slot : host_.trainable_slots()) {
    auto t = std::make_unique<DeviceTensor>();
    t->host = slot->storage;
    t->slot = slot;
    t->count = slot->count;
    t->value.upload(slot->value(), t->count, stream_);
    t->grad.upload(slot->grad(), t->count, stream_);
    t->adam_m.reserve(t->count);
    t->adam_v.reserve(t->count);
    if (slot->adam_m.size() == t->count) {
      t->adam_m.upload(slot->adam_m.data(), t->count, stream_);
      t->adam_v.upload(slot->adam_v.data(), t->count, stream_);
    } else {
      t->adam_m.zero(stream_);
      t->adam_v.zero(stream_);
    }
    trainables_.push_back(std::move(t));
  }
  auto trainable_of = [&](Tensor* storage) -> DeviceTensor* {
    for (auto& t : trainables_)
      if (t->host == storage) return t.get();
    fail("internal: adapter tensor without an optimizer slot");
  };
  if (adapter) {
    for (long l = 0; l < c_.num_layers; ++l)
      for (int kind = 0; kind < NUM_GROUPS; ++kind) {
        DeviceGroup& g = layers_[l].groups[kind];
        if (g.host->sites.empty()) continue;
        if (adapter->trains_a()) {
          g.down = trainable_of(&g.host->down);
          g.down_bf16.reserve(g.width() * g.in);
        }
        for (Site* site : g.host->sites) {
          auto ds = std::make_unique<DeviceSite>();
          ds->host = site;
          ds->projection = site->projection;
          ds->row0 = y_col(kind)[site->projection];
          ds->B = trainable_of(&site->B);
          if (site->sparse_a) {
            ds->sparse_column.upload(site->sparse_a->column.data(), site->sparse_a->column.size(), stream_);
            ds->sparse_value.upload(site->sparse_a->value.data(), site->sparse_a->value.size(), stream_);
            ds->topk_bias.upload(site->topk_bias.value.data(), site->experts, stream_);
          }
          g.sites.push_back(ds.get());
          sites_.push_back(std::move(ds));
        }
      }
  }
  refresh_shadows();
  ET_CUDA_CHECK(cudaStreamSynchronize(stream_));
  reserved_rows_ = 0;  // activation widths may have changed with the adapter
  host_dirty_ = false;
  device_newer_ = false;
}

// bf16 shadows of the fp32 masters: A/router rows, and s·B inside [W | s·B].
void GpuModel::refresh_shadows() {
  if (!host_.adapter_) return;
  const float s = host_.adapter_->settings().scaling;
  for (DeviceLayer& layer : layers_)
    for (DeviceGroup& g : layer.groups) {
      if (g.down)
        cuda::cast_rows(stream_, g.down->value.data(), g.in, g.down_bf16.data(), g.in, g.width(), g.in, 1.0f);
      for (DeviceSite* site : g.sites) {
        const long width = site->host->width;
        cuda::cast_rows(stream_, site->B->value.data(), width, g.weight.data() + site->row0 * g.ext() + g.in + site->host->h_col,
                        g.ext(), site->host->out, width, s);
      }
    }
}

void GpuModel::sync_to_host() {
  if (!device_newer_) return;
  activate();
  for (auto& t : trainables_) {
    OptimizerSlot* slot = t->slot;
    if (slot->adam_m.size() != t->count) {
      slot->adam_m.resize(t->count);
      slot->adam_v.resize(t->count);
    }
    t->value.download(slot->value(), t->count, stream_);
    t->grad.download(slot->grad(), t->count, stream_);
    t->adam_m.download(slot->adam_m.data(), t->count, stream_);
    t->adam_v.download(slot->adam_v.data(), t->count, stream_);
  }
  for (auto& site : sites_)
    if (site->host->sparse_a) site->topk_bias.download(site->host->topk_bias.value.data(), site->host->experts, stream_);
  ET_CUDA_CHECK(cudaStreamSynchronize(stream_));
  device_newer_ = false;
}

void GpuModel::reserve(long rows, long seq) {
  const long N = rows;
  if (seq > rope_positions_) {
    host_.rope_.ensure(seq);
    const long half = host_.rope_.half();
    rope_cos_.upload(host_.rope_.cos(0), seq * half, stream_);
    rope_sin_.upload(host_.rope_.sin(0), seq * half, stream_);
    ET_CUDA_CHECK(cudaStreamSynchronize(stream_));
    rope_positions_ = seq;
  }
  if (N <= reserved_rows_) return;
  acts_ = std::vector<DeviceActivations>(c_.num_layers);
  long widest_ext = 0, widest_hz = 1, widest_in = F_, widest_h = 1;
  for (long l = 0; l < c_.num_layers; ++l) {
    DeviceActivations& a = acts_[l];
    a.x.reserve(N * d_);
    a.rstd1.reserve(N);
    a.rstd2.reserve(N);
    a.qkv.reserve(N * qkv_dim_);
    a.lse.reserve(N * c_.num_heads);
    a.xmid.reserve(N * d_);
    a.gate_up.reserve(N * 2 * F_);
    for (int kind = 0; kind < NUM_GROUPS; ++kind) {
      const DeviceGroup& g = layers_[l].groups[kind];
      a.operand[kind].reserve(N * g.ext());
      a.hz[kind].reserve(N * std::max(1L, g.width()));
      widest_ext = std::max(widest_ext, g.ext());
      widest_hz = std::max(widest_hz, g.width());
      widest_in = std::max(widest_in, g.in);
      for (const DeviceSite* s : g.sites) widest_h = std::max(widest_h, s->host->width);
    }
  }
  for (auto& site : sites_) {
    const long E = site->host->experts;
    site->prob.reserve(N * E);
    site->gate.reserve(N * E);
    site->dgate.reserve(N * E);
    site->selected.reserve(N * E);
    site->lse.reserve(N);
    site->broadcast.reserve(N);
    site->aux_dprob.reserve(N * E);
    site->aux_zfactor.reserve(N);
  }
  const long widest_out = std::max({d_, qkv_dim_, 2 * F_});
  final_x_.reserve(N * d_);
  final_rstd_.reserve(N);
  final_xn_.reserve(N * d_);
  d_normed_.reserve(N * d_);
  dres_.reserve(N * d_);
  loss_.reserve(N);
  argmax_.reserve(N);
  ids_.reserve(N);
  targets_.reserve(N);
  delta_.reserve(N * c_.num_heads);
  dext_.reserve(N * widest_ext);
  dgu_.reserve(N * 2 * F_);
  dqkv_.reserve(N * qkv_dim_);
  dy_bf16_.reserve(N * widest_out);
  dhz_.reserve(N * widest_hz);
  m_f32_.reserve(N * widest_h);
  scratch2_f32_.reserve(N * widest_in);
  dropped_.reserve(N * widest_in);
  reserved_rows_ = N;
}

void GpuModel::check_trainable() {
  if (host_dirty_) upload();
  if (trainables_.empty()) fail("nothing to train: attach an adapter or set the full training mode");
}

// ---------------------------------------------------------------------------------------------
// The adapter of one input group

void GpuModel::adapter_forward(DeviceGroup& g, long layer, bf16* operand, float* hz, const Pass& p) {
  if (g.sites.empty()) return;
  const AdapterSettings& s = host_.adapter_->settings();
  const et_adapter_config& c = s.c;
  const long N = p.rows, W = g.width();
  const bool dropped = p.training && c.dropout > 0.0f;
  const bf16* xa = operand;
  long ldxa = g.ext();
  if (dropped) {
    const uint32_t key = static_cast<uint32_t>(layer * ET_NUM_PROJ + first_projection_of_group(static_cast<int>(g.host->kind)));
    cuda::dropout(stream_, operand, g.ext(), dropped_.data(), g.in, N, g.in, p.dropout_seed, key,
                  dropout_threshold(c.dropout), 1.0f / (1.0f - c.dropout));
    xa = dropped_.data();
    ldxa = g.in;
  }
  if (c.method == ET_METHOD_FLYLORA) {
    for (DeviceSite* site : g.sites) {
      const SparseRows& a = *site->host->sparse_a;
      cuda::sparse_a_forward(stream_, xa, ldxa, site->sparse_column.data(), site->sparse_value.data(), a.rows,
                             a.per_row, hz + site->host->h_col, W, N);
    }
  } else if (!dropped) {
    cuda::gemm(stream_, false, true, N, W, g.in, 1.0f, operand, g.ext(), g.down_bf16.data(), g.in, DType::BF16, 0.0f, hz,
               W, DType::F32);
  } else {
    cuda::gemm(stream_, false, true, N, g.h_width, g.in, 1.0f, xa, ldxa, g.down_bf16.data(), g.in, DType::BF16, 0.0f, hz,
               W, DType::F32);
    if (g.z_width)
      cuda::gemm(stream_, false, true, N, g.z_width, g.in, 1.0f, operand, g.ext(), g.down_bf16.data() + g.h_width * g.in,
                 g.in, DType::BF16, 0.0f, hz + g.h_width, W, DType::F32);
  }
  for (DeviceSite* site : g.sites) {
    const Site& hs = *site->host;
    const float* gate = nullptr;
    if (c.method == ET_METHOD_FLYLORA) {
      cuda::flylora_gates(stream_, hz + hs.h_col, W, site->topk_bias.data(), hs.experts, hs.top_k, c.fly_select_abs != 0,
                          site->gate.data(), site->selected.data(), N);
      gate = site->gate.data();
    } else if (host_.adapter_->has_router()) {
      const cuda::RouterSettings rs{c.method, hs.experts, hs.top_k, c.top_p, c.entropy_index, c.entropy_eps,
                                    c.entropy_threshold, c.keep_top_k};
      cuda::router_forward(stream_, rs, hz + hs.z_col, W, site->prob.data(), site->gate.data(), site->selected.data(),
                           site->lse.data(), site->broadcast.data(), N);
      gate = site->gate.data();
    }
    cuda::gate_forward(stream_, hz + hs.h_col, W, gate, hs.experts, hs.rank, operand + g.in + hs.h_col, g.ext(), N);
  }
}

// dext holds dL/d[X | M] of the group (from the fused backward product); adds the adapter's dL/dX
// into its first `in` columns when need_dx, and accumulates the adapter's gradients.
void GpuModel::adapter_backward(DeviceGroup& g, long layer, const bf16* operand, const float* hz, const float* dy,
                                long lddy, const std::array<long, ET_NUM_PROJ>& cols, float* dext, bool need_dx,
                                const Pass& p) {
  if (g.sites.empty()) return;
  const AdapterSettings& s = host_.adapter_->settings();
  const et_adapter_config& c = s.c;
  const long N = p.rows, W = g.width(), ext = g.ext();
  const bool router = host_.adapter_->has_router();
  float* dhz = dhz_.data();
  for (DeviceSite* site : g.sites) {
    const Site& hs = *site->host;
    const float* gate = c.method == ET_METHOD_LORA ? nullptr : site->gate.data();
    // dB += s·dYᵀ(H ⊙ Ĝ), in fp32 (M recomputed in fp32 rather than read back from its bf16 copy).
    cuda::gate_forward(stream_, hz + hs.h_col, W, gate, hs.experts, hs.rank, m_f32_.data(), hs.width, N);
    cuda::gemm(stream_, true, false, hs.out, hs.width, N, s.scaling, dy + cols[hs.projection], lddy, m_f32_.data(),
               hs.width, DType::F32, 1.0f, site->B->grad.data(), hs.width, DType::F32);
    cuda::gate_backward(stream_, dext + g.in + hs.h_col, ext, hz + hs.h_col, W, gate, hs.experts, hs.rank,
                        dhz + hs.h_col, W, router ? site->dgate.data() : nullptr, N);
    if (router) {
      const cuda::RouterSettings rs{c.method, hs.experts, hs.top_k, c.top_p, c.entropy_index, c.entropy_eps,
                                    c.entropy_threshold, c.keep_top_k};
      cuda::router_backward(stream_, rs, site->prob.data(), site->gate.data(), site->selected.data(), site->dgate.data(),
                            site->has_aux ? site->aux_dprob.data() : nullptr,
                            site->has_aux ? site->aux_zfactor.data() : nullptr, dhz + hs.z_col, W, N);
    }
  }
  const bool dropped = p.training && c.dropout > 0.0f;
  const uint32_t key = static_cast<uint32_t>(layer * ET_NUM_PROJ + first_projection_of_group(static_cast<int>(g.host->kind)));
  const uint32_t threshold = dropout_threshold(c.dropout);
  const float keep_scale = dropped ? 1.0f / (1.0f - c.dropout) : 1.0f;
  float* x32 = scratch2_f32_.data();
  if (host_.adapter_->trains_a()) {
    // dA (and dR) += dHZᵀ · X, with X the dropped input for the A rows.
    if (dropped) {
      cuda::dropout(stream_, operand, ext, dropped_.data(), g.in, N, g.in, p.dropout_seed, key, threshold, keep_scale);
      cuda::cast_rows(stream_, dropped_.data(), g.in, x32, g.in, N, g.in, 1.0f);
      cuda::gemm(stream_, true, false, g.h_width, g.in, N, 1.0f, dhz, W, x32, g.in, DType::F32, 1.0f, g.down->grad.data(),
                 g.in, DType::F32);
    }
    cuda::cast_rows(stream_, operand, ext, x32, g.in, N, g.in, 1.0f);
    const long row0 = dropped ? g.h_width : 0;
    if (W > row0)
      cuda::gemm(stream_, true, false, W - row0, g.in, N, 1.0f, dhz + row0, W, x32, g.in, DType::F32, 1.0f,
                 g.down->grad.data() + row0 * g.in, g.in, DType::F32);
  }
  if (!need_dx) return;
  if (c.method == ET_METHOD_FLYLORA) {
    float* target = dext;
    long ld = ext;
    if (dropped) {
      target = x32;
      ld = g.in;
      ET_CUDA_CHECK(cudaMemsetAsync(target, 0, N * g.in * sizeof(float), stream_));
    }
    for (DeviceSite* site : g.sites) {
      const SparseRows& a = *site->host->sparse_a;
      cuda::sparse_a_backward(stream_, dhz + site->host->h_col, W, site->sparse_column.data(), site->sparse_value.data(),
                              a.rows, a.per_row, target, ld, N);
    }
    if (dropped) cuda::dropout(stream_, x32, g.in, dext, ext, N, g.in, p.dropout_seed, key, threshold, keep_scale, true);
    return;
  }
  if (!dropped) {
    cuda::gemm(stream_, false, false, N, g.in, W, 1.0f, dhz, W, g.down->value.data(), g.in, DType::F32, 1.0f, dext, ext,
               DType::F32);
    return;
  }
  cuda::gemm(stream_, false, false, N, g.in, g.h_width, 1.0f, dhz, W, g.down->value.data(), g.in, DType::F32, 0.0f, x32,
             g.in, DType::F32);
  cuda::dropout(stream_, x32, g.in, dext, ext, N, g.in, p.dropout_seed, key, threshold, keep_scale, true);
  if (g.z_width)
    cuda::gemm(stream_, false, false, N, g.in, g.z_width, 1.0f, dhz + g.h_width, W, g.down->value.data() + g.h_width * g.in,
               g.in, DType::F32, 1.0f, dext, ext, DType::F32);
}

// ---------------------------------------------------------------------------------------------
// One decoder layer

void GpuModel::forward_layer(long l, const Pass& p, float* x_out) {
  DeviceLayer& w = layers_[l];
  DeviceActivations& a = acts_[l];
  const long N = p.rows;
  const float eps = c_.rms_norm_eps;
  DeviceGroup& qkv = w.groups[GROUP_QKV];
  DeviceGroup& o = w.groups[GROUP_O];
  DeviceGroup& gu = w.groups[GROUP_GATE_UP];
  DeviceGroup& down = w.groups[GROUP_DOWN];

  cuda::rmsnorm_forward(stream_, a.x.data(), d_, w.input_norm.data(), a.operand[GROUP_QKV].data(), qkv.ext(),
                        a.rstd1.data(), N, d_, eps);
  adapter_forward(qkv, l, a.operand[GROUP_QKV].data(), a.hz[GROUP_QKV].data(), p);
  cuda::gemm(stream_, false, true, N, qkv_dim_, qkv.ext(), 1.0f, a.operand[GROUP_QKV].data(), qkv.ext(), qkv.weight.data(),
             qkv.ext(), DType::BF16, 0.0f, a.qkv.data(), qkv_dim_, DType::F32);
  if (qkv.bias.size()) cuda::add_bias_rows(stream_, qkv.bias.data(), a.qkv.data(), qkv_dim_, N, qkv_dim_);
  cuda::rope(stream_, a.qkv.data(), qkv_dim_, 0, N, p.seq, 0, c_.num_heads, c_.head_dim, rope_cos_.data(),
             rope_sin_.data(), 1.0f);
  cuda::rope(stream_, a.qkv.data(), qkv_dim_, q_dim_, N, p.seq, 0, c_.num_kv_heads, c_.head_dim, rope_cos_.data(),
             rope_sin_.data(), 1.0f);

  const cuda::AttentionDims dims{p.batch, c_.num_heads, c_.num_kv_heads, c_.head_dim, p.seq, 0, p.seq,
                                 c_.sliding_window, host_.attention_shape_.scale};
  cuda::attention_forward(stream_, dims, a.qkv.data(), qkv_dim_, a.qkv.data() + q_dim_, a.qkv.data() + q_dim_ + kv_dim_,
                          qkv_dim_, a.operand[GROUP_O].data(), o.ext(), a.lse.data());

  adapter_forward(o, l, a.operand[GROUP_O].data(), a.hz[GROUP_O].data(), p);
  ET_CUDA_CHECK(cudaMemcpyAsync(a.xmid.data(), a.x.data(), N * d_ * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  cuda::gemm(stream_, false, true, N, d_, o.ext(), 1.0f, a.operand[GROUP_O].data(), o.ext(), o.weight.data(), o.ext(),
             DType::BF16, 1.0f, a.xmid.data(), d_, DType::F32);
  if (o.bias.size()) cuda::add_bias_rows(stream_, o.bias.data(), a.xmid.data(), d_, N, d_);

  cuda::rmsnorm_forward(stream_, a.xmid.data(), d_, w.post_norm.data(), a.operand[GROUP_GATE_UP].data(), gu.ext(),
                        a.rstd2.data(), N, d_, eps);
  adapter_forward(gu, l, a.operand[GROUP_GATE_UP].data(), a.hz[GROUP_GATE_UP].data(), p);
  cuda::gemm(stream_, false, true, N, 2 * F_, gu.ext(), 1.0f, a.operand[GROUP_GATE_UP].data(), gu.ext(), gu.weight.data(),
             gu.ext(), DType::BF16, 0.0f, a.gate_up.data(), 2 * F_, DType::F32);
  if (gu.bias.size()) cuda::add_bias_rows(stream_, gu.bias.data(), a.gate_up.data(), 2 * F_, N, 2 * F_);
  cuda::swiglu_forward(stream_, a.gate_up.data(), 2 * F_, a.operand[GROUP_DOWN].data(), down.ext(), N, F_);

  adapter_forward(down, l, a.operand[GROUP_DOWN].data(), a.hz[GROUP_DOWN].data(), p);
  ET_CUDA_CHECK(cudaMemcpyAsync(x_out, a.xmid.data(), N * d_ * sizeof(float), cudaMemcpyDeviceToDevice, stream_));
  cuda::gemm(stream_, false, true, N, d_, down.ext(), 1.0f, a.operand[GROUP_DOWN].data(), down.ext(), down.weight.data(),
             down.ext(), DType::BF16, 1.0f, x_out, d_, DType::F32);
  if (down.bias.size()) cuda::add_bias_rows(stream_, down.bias.data(), x_out, d_, N, d_);
}

// dres: dL/d(layer output) on entry, dL/d(layer input) on exit (when need_dx).
void GpuModel::backward_layer(long l, const Pass& p, float* dres, bool need_dx) {
  DeviceLayer& w = layers_[l];
  DeviceActivations& a = acts_[l];
  const long N = p.rows;
  DeviceGroup& qkv = w.groups[GROUP_QKV];
  DeviceGroup& o = w.groups[GROUP_O];
  DeviceGroup& gu = w.groups[GROUP_GATE_UP];
  DeviceGroup& down = w.groups[GROUP_DOWN];
  float* dext = dext_.data();
  bf16* dy16 = dy_bf16_.data();

  // MLP: d[act | M] = dres · [W_down | s·B]
  cuda::cast_rows(stream_, dres, d_, dy16, d_, N, d_, 1.0f);
  cuda::gemm(stream_, false, false, N, down.ext(), d_, 1.0f, dy16, d_, down.weight.data(), down.ext(), DType::BF16, 0.0f,
             dext, down.ext(), DType::F32);
  adapter_backward(down, l, a.operand[GROUP_DOWN].data(), a.hz[GROUP_DOWN].data(), dres, d_, y_col(GROUP_DOWN), dext,
                   true, p);
  cuda::swiglu_backward(stream_, a.gate_up.data(), 2 * F_, dext, down.ext(), dgu_.data(), 2 * F_, N, F_);
  cuda::cast_rows(stream_, dgu_.data(), 2 * F_, dy16, 2 * F_, N, 2 * F_, 1.0f);
  cuda::gemm(stream_, false, false, N, gu.ext(), 2 * F_, 1.0f, dy16, 2 * F_, gu.weight.data(), gu.ext(), DType::BF16, 0.0f,
             dext, gu.ext(), DType::F32);
  adapter_backward(gu, l, a.operand[GROUP_GATE_UP].data(), a.hz[GROUP_GATE_UP].data(), dgu_.data(), 2 * F_,
                   y_col(GROUP_GATE_UP), dext, true, p);
  cuda::rmsnorm_backward(stream_, dext, gu.ext(), a.xmid.data(), d_, w.post_norm.data(), a.rstd2.data(), dres, d_,
                         nullptr, N, d_, true);

  // Attention
  cuda::cast_rows(stream_, dres, d_, dy16, d_, N, d_, 1.0f);
  cuda::gemm(stream_, false, false, N, o.ext(), d_, 1.0f, dy16, d_, o.weight.data(), o.ext(), DType::BF16, 0.0f, dext,
             o.ext(), DType::F32);
  adapter_backward(o, l, a.operand[GROUP_O].data(), a.hz[GROUP_O].data(), dres, d_, y_col(GROUP_O), dext, true, p);
  const cuda::AttentionDims dims{p.batch, c_.num_heads, c_.num_kv_heads, c_.head_dim, p.seq, 0, p.seq,
                                 c_.sliding_window, host_.attention_shape_.scale};
  float* dq = dqkv_.data();
  cuda::attention_backward(stream_, dims, a.qkv.data(), qkv_dim_, a.qkv.data() + q_dim_, a.qkv.data() + q_dim_ + kv_dim_,
                           qkv_dim_, a.operand[GROUP_O].data(), o.ext(), dext, o.ext(), a.lse.data(), delta_.data(), dq,
                           qkv_dim_, dq + q_dim_, dq + q_dim_ + kv_dim_, qkv_dim_);
  // The rotation's transpose is the inverse rotation.
  cuda::rope(stream_, dq, qkv_dim_, 0, N, p.seq, 0, c_.num_heads, c_.head_dim, rope_cos_.data(), rope_sin_.data(), -1.0f);
  cuda::rope(stream_, dq, qkv_dim_, q_dim_, N, p.seq, 0, c_.num_kv_heads, c_.head_dim, rope_cos_.data(),
             rope_sin_.data(), -1.0f);
  cuda::cast_rows(stream_, dq, qkv_dim_, dy16, qkv_dim_, N, qkv_dim_, 1.0f);
  cuda::gemm(stream_, false, false, N, qkv.ext(), qkv_dim_, 1.0f, dy16, qkv_dim_, qkv.weight.data(), qkv.ext(),
             DType::BF16, 0.0f, dext, qkv.ext(), DType::F32);
  adapter_backward(qkv, l, a.operand[GROUP_QKV].data(), a.hz[GROUP_QKV].data(), dq, qkv_dim_, y_col(GROUP_QKV), dext,
                   need_dx, p);
  if (need_dx)
    cuda::rmsnorm_backward(stream_, dext, qkv.ext(), a.x.data(), d_, w.input_norm.data(), a.rstd1.data(), dres, d_,
                           nullptr, N, d_, true);
}

// ---------------------------------------------------------------------------------------------
// Routing on the host twin

void GpuModel::routing_to_host(const Pass& p, bool auxiliary, long batch, long seq, const et_step_options* options,
                               AuxResult* aux) {
  Adapter* adapter = host_.adapter_.get();
  if (!adapter || adapter->method() == ET_METHOD_LORA) return;
  const bool fly = adapter->method() == ET_METHOD_FLYLORA;
  if (!p.collect && !(auxiliary && adapter->has_router())) return;
  const long N = p.rows;
  for (auto& site : sites_) {
    Site& s = *site->host;
    const long E = s.experts;
    s.prob.reserve(N * E);
    s.gate.reserve(N * E);
    s.lse.reserve(N);
    if (static_cast<long>(s.selected.size()) < N * E) s.selected.resize(N * E);
    if (static_cast<long>(s.broadcast.size()) < N) s.broadcast.resize(N);
    site->gate.download(s.gate.data(), N * E, stream_);
    site->selected.download(s.selected.data(), N * E, stream_);
    if (!fly) {
      site->prob.download(s.prob.data(), N * E, stream_);
      site->lse.download(s.lse.data(), N, stream_);
      site->broadcast.download(s.broadcast.data(), N, stream_);
    }
  }
  ET_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (p.collect) {
    // As Adapter::route's statistics (adapter.cpp).
    for (auto& site : sites_) {
      Site& s = *site->host;
      const long E = s.experts;
      const double log_e = E > 1 ? std::log(static_cast<double>(E)) : 1.0;
      for (long t = 0; t < N; ++t) {
        if (p.token_mask && !p.token_mask[t]) continue;
        s.stat_tokens += 1;
        s.stat_broadcast += fly ? 0 : s.broadcast[t];
        for (long e = 0; e < E; ++e) {
          s.stat_load[e] += s.selected[t * E + e];
          s.stat_gate[e] += s.gate[t * E + e];
        }
        if (fly) {
          if (p.training)
            for (long e = 0; e < E; ++e) s.rank_counts[e] += s.selected[t * E + e];
          continue;
        }
        double entropy = 0.0;
        for (long e = 0; e < E; ++e) {
          const double pe = s.prob[t * E + e];
          if (pe > 0.0) entropy -= pe * std::log(pe);
        }
        if (E > 1) s.stat_entropy += entropy / log_e;
      }
    }
  }
  if (!auxiliary || !adapter->has_router()) return;
  *aux = adapter->auxiliary_losses(batch, seq, options->token_mask, options->task_types, options->aux_scale);
  for (auto& site : sites_) {
    Site& s = *site->host;
    site->aux_dprob.upload(s.aux_dprob.data(), N * s.experts, stream_);
    site->aux_zfactor.upload(s.aux_zfactor.data(), N, stream_);
    site->has_aux = true;
  }
}

// ---------------------------------------------------------------------------------------------
// Whole passes

et_step_stats GpuModel::forward_backward(const int32_t* ids, const int32_t* targets, long batch, long seq,
                                         const et_step_options& options) {
  activate();
  host_.check_ready();
  if (batch <= 0 || seq <= 0) fail("forward_backward needs batch and sequence length > 0, got ", batch, " x ", seq);
  check_trainable();
  const long N = batch * seq, L = c_.num_layers;
  host_.check_ids(ids, N, "ids", false);
  host_.check_ids(targets, N, "targets", true);
  reserve(N, seq);
  Pass pass{batch, seq, N, true, options.dropout_seed, true, options.token_mask};
  ids_.upload(ids, N, stream_);
  targets_.upload(targets, N, stream_);
  for (auto& site : sites_) site->has_aux = false;

  cuda::embed_rows(stream_, embed_.data(), ids_.data(), acts_[0].x.data(), N, d_);
  for (long l = 0; l < L; ++l) forward_layer(l, pass, l + 1 < L ? acts_[l + 1].x.data() : final_x_.data());
  AuxResult aux;
  routing_to_host(pass, true, batch, seq, &options, &aux);
  pass.collect = false;

  // Head, a chunk of rows at a time so [N, V] logits never exist at once.
  cuda::rmsnorm_forward(stream_, final_x_.data(), d_, final_norm_.data(), final_xn_.data(), d_, final_rstd_.data(), N, d_,
                        c_.rms_norm_eps);
  const long chunk = std::min(N, std::max(128L, (256L << 20) / (V_ * 4)));
  logits_.reserve(chunk * V_);
  dlogits_.reserve(chunk * V_);
  for (long c0 = 0; c0 < N; c0 += chunk) {
    const long rows = std::min(chunk, N - c0);
    cuda::gemm(stream_, false, true, rows, V_, d_, 1.0f, final_xn_.data() + c0 * d_, d_, lm_head_.data(), d_, DType::BF16,
               0.0f, logits_.data(), V_, DType::F32);
    cuda::cross_entropy(stream_, logits_.data(), V_, targets_.data() + c0, rows, V_, options.loss_scale, dlogits_.data(),
                        V_, loss_.data() + c0, argmax_.data() + c0);
    cuda::gemm(stream_, false, false, rows, d_, V_, 1.0f, dlogits_.data(), V_, lm_head_.data(), d_, DType::BF16, 0.0f,
               d_normed_.data() + c0 * d_, d_, DType::F32);
  }
  cuda::rmsnorm_backward(stream_, d_normed_.data(), d_, final_x_.data(), d_, final_norm_.data(), final_rstd_.data(),
                         dres_.data(), d_, nullptr, N, d_, false);
  const bool need_input = options.need_input_grad != 0;
  for (long l = L - 1; l >= 0; --l) backward_layer(l, pass, dres_.data(), l > 0 || need_input);

  std::vector<float> row_loss(N);
  std::vector<int32_t> row_argmax(N);
  loss_.download(row_loss.data(), N, stream_);
  argmax_.download(row_argmax.data(), N, stream_);
  if (need_input) {
    host_.input_grad_.reserve(N * d_);
    dres_.download(host_.input_grad_.data(), N * d_, stream_);
    host_.input_grad_rows_ = N;
  }
  ET_CUDA_CHECK(cudaStreamSynchronize(stream_));
  device_newer_ = true;

  Adapter* adapter = host_.adapter_.get();
  if (adapter && adapter->method() == ET_METHOD_FLYLORA) {
    adapter->end_micro_batch();  // the bias update, on the host's rank counts
    for (auto& site : sites_) site->topk_bias.upload(site->host->topk_bias.value.data(), site->host->experts, stream_);
  }

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
    stats.correct += row_argmax[t] == targets[t];
  }
  return stats;
}

void GpuModel::forward_logits(const int32_t* ids, long batch, long seq, float* logits, bool collect,
                              const uint8_t* token_mask) {
  activate();
  host_.check_ready();
  if (batch <= 0 || seq <= 0) fail("forward needs batch and sequence length > 0, got ", batch, " x ", seq);
  if (host_dirty_) upload();
  const long N = batch * seq, L = c_.num_layers;
  host_.check_ids(ids, N, "ids", false);
  reserve(N, seq);
  const Pass pass{batch, seq, N, false, 0, collect, token_mask};
  ids_.upload(ids, N, stream_);
  cuda::embed_rows(stream_, embed_.data(), ids_.data(), acts_[0].x.data(), N, d_);
  for (long l = 0; l < L; ++l) forward_layer(l, pass, l + 1 < L ? acts_[l + 1].x.data() : final_x_.data());
  routing_to_host(pass, false, batch, seq, nullptr, nullptr);
  cuda::rmsnorm_forward(stream_, final_x_.data(), d_, final_norm_.data(), final_xn_.data(), d_, final_rstd_.data(), N, d_,
                        c_.rms_norm_eps);
  logits_.reserve(N * V_);
  cuda::gemm(stream_, false, true, N, V_, d_, 1.0f, final_xn_.data(), d_, lm_head_.data(), d_, DType::BF16, 0.0f,
             logits_.data(), V_, DType::F32);
  logits_.download(logits, N * V_, stream_);
  ET_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void GpuModel::zero_grad() {
  activate();
  if (host_dirty_) upload();
  for (auto& t : trainables_) t->grad.zero(stream_);
  device_newer_ = true;
}

float GpuModel::optimizer_step(const et_adamw& h) {
  activate();
  check_trainable();
  if (!(h.lr >= 0.0f) || !(h.beta1 >= 0.0f && h.beta1 < 1.0f) || !(h.beta2 >= 0.0f && h.beta2 < 1.0f) ||
      !(h.eps > 0.0f) || !(h.weight_decay >= 0.0f) || !(h.max_grad_norm >= 0.0f))
    fail("invalid AdamW hyperparameters: lr=", h.lr, " beta1=", h.beta1, " beta2=", h.beta2, " eps=", h.eps,
         " weight_decay=", h.weight_decay, " max_grad_norm=", h.max_grad_norm);
  std::vector<cuda::TrainableSegment> segments;
  std::vector<long> starts;
  long blocks = 0;
  for (auto& t : trainables_) {
    const float decay = t->slot->decay ? h.weight_decay : 0.0f;
    segments.push_back({t->value.data(), t->grad.data(), t->adam_m.data(), t->adam_v.data(), static_cast<long>(t->count),
                        decay});
    starts.push_back(blocks);
    blocks += (static_cast<long>(t->count) + cuda::kOptimizerBlock - 1) / cuda::kOptimizerBlock;
  }
  segments_.upload(segments.data(), segments.size(), stream_);
  block_start_.upload(starts.data(), starts.size(), stream_);
  norm_partials_.reserve(cuda::grad_norm_partials(blocks));
  const double total = cuda::grad_sum_squares(stream_, segments_.data(), block_start_.data(),
                                              static_cast<long>(segments.size()), blocks, norm_partials_.data());
  const float norm = static_cast<float>(std::sqrt(total));
  if (!std::isfinite(norm)) fail("gradient norm is not finite (", norm, "): the step was not applied");
  float clip = 1.0f;
  if (h.max_grad_norm > 0.0f && norm > h.max_grad_norm) clip = h.max_grad_norm / (norm + 1e-6f);
  ++host_.adam_steps_;
  const double t = static_cast<double>(host_.adam_steps_);
  const cuda::AdamWStep step{h.lr, h.beta1, h.beta2, h.eps, static_cast<float>(1.0 - std::pow(h.beta1, t)),
                             static_cast<float>(std::sqrt(1.0 - std::pow(h.beta2, t))), clip};
  cuda::adamw(stream_, segments_.data(), block_start_.data(), static_cast<long>(segments.size()), blocks, step);
  refresh_shadows();
  ET_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (host_.adapter_) host_.adapter_->end_step();
  device_newer_ = true;
  return norm;
}

// ---------------------------------------------------------------------------------------------

bool gpu_backend_built() { return true; }

int gpu_device_count() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver) {
    cudaGetLastError();  // clear the sticky error: "no device" is an answer here, not a failure
    return 0;
  }
  ET_CUDA_CHECK(status);
  return count;
}

std::unique_ptr<GpuBackend> make_gpu_backend(Model& model, int device) {
  return std::make_unique<GpuModel>(model, device);
}

}  // namespace et
