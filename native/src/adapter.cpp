#include "adapter.h"

#include <algorithm>
#include <cmath>

#include "blas.h"
#include "kernels/kernels.h"
#include "methods/methods.h"
#include "rng.h"
#include "threadpool.h"

namespace et {

namespace {

constexpr long kRowGrain = 32;
constexpr long kMaxExperts = 256;  // routing keeps per-row scratch of this size on the stack

const char* const kProjectionPaths[ET_NUM_PROJ] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                   "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                   "mlp.down_proj"};
const int kGroupOfProjection[ET_NUM_PROJ] = {GROUP_QKV, GROUP_QKV, GROUP_QKV, GROUP_O,
                                             GROUP_GATE_UP, GROUP_GATE_UP, GROUP_DOWN};
const int kFirstProjection[NUM_GROUPS] = {ET_PROJ_Q, ET_PROJ_O, ET_PROJ_GATE, ET_PROJ_DOWN};

ThreadPool& pool() { return ThreadPool::global(); }

bool masked_out(const uint8_t* mask, long t) { return mask && !mask[t]; }

// f of the load balance: counts over all assignments (Switch), or, for DynMoLE's masked gates,
// per real token; zeros when there is nothing to divide by.
std::vector<double> balance_fractions(const std::vector<double>& counts, double tokens, bool by_probability) {
  double assigned = 0.0;
  for (double v : counts) assigned += v;
  const double denominator = by_probability ? tokens : assigned;
  std::vector<double> f(counts.size(), 0.0);
  if (denominator > 0.0)
    for (size_t e = 0; e < counts.size(); ++e) f[e] = counts[e] / denominator;
  return f;
}

// (2u − 1)/sqrt(in) from the counter hash, in double and rounded once (docs/methods.md).
void init_uniform(float* out, long count, long in, uint32_t seed, uint32_t stream) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  for (long i = 0; i < count; ++i) {
    const double u = uniform01(hash3(seed, stream, static_cast<uint32_t>(i)));
    out[i] = static_cast<float>((2.0 * u - 1.0) * bound);
  }
}

void validate(const et_adapter_config& c, long layers) {
  if (c.method < ET_METHOD_LORA || c.method > ET_METHOD_FLYLORA) fail("unknown adapter method ", c.method);
  if (c.rank <= 0) fail("adapter rank must be a positive integer, got ", c.rank);
  if (!(c.dropout >= 0.0f && c.dropout < 1.0f)) fail("adapter dropout must be in [0, 1), got ", c.dropout);
  if ((c.target_mask & ((1u << ET_NUM_PROJ) - 1)) == 0) fail("the adapter targets no projection");
  if (!(c.balance_coef >= 0.0f) || !(c.z_loss_coef >= 0.0f) || !(c.entropy_coef >= 0.0f) || !(c.blc_weight >= 0.0f))
    fail("loss coefficients must be >= 0");
  const bool router = c.method == ET_METHOD_MOLA || c.method == ET_METHOD_LORAMOE || c.method == ET_METHOD_DYNMOLE;
  if (router) {
    if (!c.num_experts) fail("num_experts (one entry per layer) is required for this method");
    for (long l = 0; l < layers; ++l) {
      const long E = c.num_experts[l];
      if (E < 1 || E > kMaxExperts) fail("num_experts[", l, "] must be in [1, ", kMaxExperts, "], got ", E);
      if (c.balance_pooled && E != c.num_experts[0])
        fail("a pooled balance loss needs the same number of experts in every layer (layer ", l, " has ", E,
             ", layer 0 has ", c.num_experts[0], ")");
      if (c.method == ET_METHOD_MOLA) {
        if (!c.top_k) fail("top_k (one entry per layer) is required for MoLA");
        if (c.top_k[l] < 1 || c.top_k[l] > E)
          fail("top_k[", l, "] must be in [1, num_experts[", l, "] = ", E, "], got ", c.top_k[l]);
      }
      if (c.method == ET_METHOD_LORAMOE && c.blc_weight > 0.0f && E % 2 != 0)
        fail("LoRAMoE's balancing constraint splits the experts in two groups: num_experts[", l,
             "] must be even, got ", E);
    }
  }
  if (c.method == ET_METHOD_LORAMOE && !(c.blc_alpha >= 0.0f && c.blc_alpha <= 1.0f))
    fail("blc_alpha must be in [0, 1], got ", c.blc_alpha);
  if (c.method == ET_METHOD_DYNMOLE) {
    if (!(c.top_p > 0.0f && c.top_p <= 1.0f)) fail("top_p must be in (0, 1], got ", c.top_p);
    if (c.keep_top_k < 1) fail("keep_top_k must be >= 1, got ", c.keep_top_k);
    if (!(c.entropy_index > 0.0f && c.entropy_index <= 2.0f))
      fail("entropy_index must be in (0, 2], got ", c.entropy_index);
    if (!(c.entropy_eps >= 0.0f)) fail("entropy_eps must be >= 0, got ", c.entropy_eps);
  }
  if (c.method == ET_METHOD_FLYLORA) {
    if (c.fly_top_k < 1 || c.fly_top_k > c.rank) fail("FlyLoRA top_k must be in [1, rank = ", c.rank, "]");
    if (c.rank % c.fly_top_k != 0) fail("FlyLoRA rank (", c.rank, ") must be a multiple of top_k (", c.fly_top_k, ")");
    if (c.rank > 1024) fail("FlyLoRA rank must be <= 1024, got ", c.rank);
    if (!(c.fly_bias_rate >= 0.0f)) fail("FlyLoRA bias_rate must be >= 0");
  }
}

}  // namespace

int group_of_projection(int projection) { return kGroupOfProjection[projection]; }
int first_projection_of_group(int group) { return kFirstProjection[group]; }

// ---------------------------------------------------------------------------------------------
// FlyLoRA's sparse A

void SparseRows::expand(float* dense, long ld) const {
  for (long i = 0; i < rows; ++i) {
    float* row = dense + i * ld;
    std::memset(row, 0, cols * sizeof(float));
    for (long q = 0; q < per_row; ++q) row[column[i * per_row + q]] = value[i * per_row + q];
  }
}

void SparseRows::compress(const float* dense, const std::string& name) {
  for (long i = 0; i < rows; ++i) {
    long q = 0;
    for (long j = 0; j < cols; ++j) {
      if (dense[i * cols + j] == 0.0f) continue;
      if (q == per_row) fail(name, ": row ", i, " has more than ", per_row, " non-zeros; FlyLoRA's A is frozen sparse");
      column[i * per_row + q] = static_cast<int32_t>(j);
      value[i * per_row + q] = dense[i * cols + j];
      ++q;
    }
    // A row with fewer non-zeros (a sampled value of exactly 0) keeps explicit zeros.
    for (long j = 0; q < per_row; ++j)
      if (dense[i * cols + j] == 0.0f) {
        column[i * per_row + q] = static_cast<int32_t>(j);
        value[i * per_row + q] = 0.0f;
        ++q;
      }
    std::sort(column.begin() + i * per_row, column.begin() + (i + 1) * per_row);
    for (long q2 = 0; q2 < per_row; ++q2) value[i * per_row + q2] = dense[i * cols + column[i * per_row + q2]];
  }
}

// ---------------------------------------------------------------------------------------------
// Construction

Adapter::Adapter(const et_adapter_config& config, long layers,
                 const std::array<std::array<long, 2>, ET_NUM_PROJ>& in_out)
    : layers_(layers) {
  validate(config, layers);
  s_.c = config;
  if (has_router()) s_.num_experts.assign(config.num_experts, config.num_experts + layers);
  if (config.method == ET_METHOD_MOLA) s_.top_k.assign(config.top_k, config.top_k + layers);
  s_.c.num_experts = nullptr;  // the caller's arrays are not kept
  s_.c.top_k = nullptr;
  const long r = config.rank;
  s_.scaling = config.use_rslora ? config.alpha / std::sqrt(static_cast<float>(r)) : config.alpha / static_cast<float>(r);

  sites_.resize(layers * ET_NUM_PROJ);
  groups_.resize(layers * NUM_GROUPS);
  for (long l = 0; l < layers; ++l) {
    for (int kind = 0; kind < NUM_GROUPS; ++kind) {
      Group& g = group(l, kind);
      g.layer = l;
      g.kind = kind;
      g.in = in_out[kFirstProjection[kind]][0];
      for (long p = 0; p < ET_NUM_PROJ; ++p) {
        if (kGroupOfProjection[p] != kind || !(config.target_mask & (1u << p))) continue;
        auto site = std::make_unique<Site>();
        site->layer = l;
        site->projection = p;
        site->in = in_out[p][0];
        site->out = in_out[p][1];
        site->experts = has_router() ? s_.num_experts[l] : config.method == ET_METHOD_FLYLORA ? r : 1;
        site->rank = config.method == ET_METHOD_FLYLORA ? 1 : r;
        site->width = site->experts * site->rank;
        site->top_k = config.method == ET_METHOD_MOLA ? s_.top_k[l] : config.fly_top_k;
        site->h_col = site->a_row = g.h_width;
        g.h_width += site->width;
        site->B.value.resize(site->out * site->width);
        site->B.grad.resize(site->out * site->width);
        g.sites.push_back(site.get());
        sites_[l * ET_NUM_PROJ + p] = std::move(site);
      }
      if (has_router())
        for (Site* site : g.sites) {
          site->z_col = site->router_row = g.h_width + g.z_width;
          g.z_width += site->experts;
        }
      if (g.sites.empty()) continue;
      const uint32_t seed = config.seed;
      if (config.method == ET_METHOD_FLYLORA) {
        for (Site* site : g.sites) {
          const uint32_t index = static_cast<uint32_t>(l * ET_NUM_PROJ + site->projection);
          site->sparse_a = std::make_unique<SparseRows>();
          flylora_init_a(*site->sparse_a, seed, index, r, config.fly_top_k, site->in);
          site->topk_bias.value.resize(r);
          site->rank_counts.assign(r, 0.0);
        }
        continue;
      }
      g.down.value.resize((g.h_width + g.z_width) * g.in);
      g.down.grad.resize((g.h_width + g.z_width) * g.in);
      for (Site* site : g.sites) {
        const uint32_t index = static_cast<uint32_t>(l * ET_NUM_PROJ + site->projection);
        init_uniform(g.down.value.data() + site->a_row * g.in, site->width * g.in, g.in, seed, 2u * index);
        if (has_router())
          init_uniform(g.down.value.data() + site->router_row * g.in, site->experts * g.in, g.in, seed,
                       2u * index + 1u);
      }
    }
  }
  for (Site* site : sites()) {
    site->stat_load.assign(site->experts, 0.0);
    site->stat_gate.assign(site->experts, 0.0);
  }
}

bool Adapter::has_router() const {
  const int m = s_.c.method;
  return m == ET_METHOD_MOLA || m == ET_METHOD_LORAMOE || m == ET_METHOD_DYNMOLE;
}

std::vector<Site*> Adapter::sites() {
  std::vector<Site*> all;
  for (auto& s : sites_)
    if (s) all.push_back(s.get());
  return all;
}

long Adapter::max_group_width(int kind) const {
  long widest = 0;
  for (long l = 0; l < layers_; ++l) {
    const Group& g = groups_[l * NUM_GROUPS + kind];
    widest = std::max(widest, g.h_width + g.z_width);
  }
  return widest;
}

std::string Adapter::module_name(long layer, long projection) {
  return "model.layers." + std::to_string(layer) + "." + kProjectionPaths[projection];
}

// ---------------------------------------------------------------------------------------------
// The fused gated low-rank kernel

const float* Adapter::a_operand(Group& g) {
  if (s_.c.method != ET_METHOD_FLYLORA) return g.down.value.data();
  dense_a_.reserve(g.h_width * g.in);
  for (Site* site : g.sites) site->sparse_a->expand(dense_a_.data() + site->a_row * g.in, g.in);
  return dense_a_.data();
}

// out (or out +=, when accumulating) = keep ⊙ in · 1/(1 − p) with the group's mask (docs/methods.md "Dropout").
void Adapter::group_dropout(const Group& g, const float* in, long ldin, float* out, long ldout, long rows,
                            uint32_t seed, bool accumulate) {
  const Kernels& K = kernels();
  const uint32_t threshold = dropout_threshold(s_.c.dropout);
  const float keep_scale = 1.0f / (1.0f - s_.c.dropout);
  const uint32_t stream = static_cast<uint32_t>(g.layer * ET_NUM_PROJ + kFirstProjection[g.kind]);
  pool().parallel_for(rows, 64, [&](long r0, long r1, int) {
    K.dropout(in + r0 * ldin, ldin, out + r0 * ldout, ldout, r1 - r0, g.in, r0, seed, stream, threshold, keep_scale,
              accumulate);
  });
}

const float* Adapter::dropped_input(const Group& g, const float* x, long ldx, long rows, uint32_t seed,
                                    long* ld_out) {
  dropped_.reserve(rows * g.in);
  group_dropout(g, x, ldx, dropped_.data(), g.in, rows, seed, false);
  *ld_out = g.in;
  return dropped_.data();
}

// Gates of one site from its router logits (or, for FlyLoRA, its H) in hz; statistics when asked.
void Adapter::route(Site& site, const float* hz, long ldhz, const AdapterPass& pass) {
  const long rows = pass.rows, E = site.experts;
  site.prob.reserve(rows * E);
  site.gate.reserve(rows * E);
  site.lse.reserve(rows);
  if (static_cast<long>(site.selected.size()) < rows * E) site.selected.resize(rows * E);
  if (static_cast<long>(site.broadcast.size()) < rows) site.broadcast.resize(rows);
  const Kernels& K = kernels();
  const et_adapter_config& c = s_.c;
  pool().parallel_for(rows, kRowGrain, [&](long r0, long r1, int) {
    for (long t = r0; t < r1; ++t) {
      float* gate = site.gate.data() + t * E;
      uint8_t* sel = site.selected.data() + t * E;
      site.broadcast[t] = 0;
      if (c.method == ET_METHOD_FLYLORA) {
        flylora_gates(hz + t * ldhz + site.h_col, site.topk_bias.value.data(), E, site.top_k, c.fly_select_abs != 0,
                      gate, sel);
        continue;
      }
      float* p = site.prob.data() + t * E;
      std::memcpy(p, hz + t * ldhz + site.z_col, E * sizeof(float));
      site.lse[t] = K.softmax(p, E);
      switch (c.method) {
        case ET_METHOD_MOLA: mola_gates(p, E, site.top_k, gate, sel); break;
        case ET_METHOD_LORAMOE: loramoe_gates(p, E, gate, sel); break;
        case ET_METHOD_DYNMOLE:
          site.broadcast[t] = dynmole_gates(p, E, c.entropy_index, c.entropy_eps, c.entropy_threshold, c.top_p,
                                            c.keep_top_k, gate, sel);
          break;
      }
    }
  });
  if (!pass.collect) return;
  const double log_e = E > 1 ? std::log(static_cast<double>(E)) : 1.0;
  for (long t = 0; t < rows; ++t) {
    if (masked_out(pass.token_mask, t)) continue;
    site.stat_tokens += 1;
    site.stat_broadcast += site.broadcast[t];
    for (long e = 0; e < E; ++e) {
      site.stat_load[e] += site.selected[t * E + e];
      site.stat_gate[e] += site.gate[t * E + e];
    }
    if (c.method == ET_METHOD_FLYLORA) {
      if (pass.training)
        for (long e = 0; e < E; ++e) site.rank_counts[e] += site.selected[t * E + e];
      continue;
    }
    double entropy = 0.0;
    for (long e = 0; e < E; ++e) {
      const double p = site.prob[t * E + e];
      if (p > 0.0) entropy -= p * std::log(p);
    }
    if (E > 1) site.stat_entropy += entropy / log_e;
  }
}

const float* Adapter::gated(const Site& site, const float* h, long ldh, long rows) {
  const long width = site.width, r = site.rank, E = site.experts;
  const float s = s_.scaling;
  gated_.reserve(rows * width);
  float* m = gated_.data();
  const float* gate = site.gate.data();
  pool().parallel_for(rows, kRowGrain, [&](long r0, long r1, int) {
    for (long t = r0; t < r1; ++t)
      for (long e = 0; e < E; ++e) {
        const float ge = s * gate[t * E + e];
        for (long j = 0; j < r; ++j) m[t * width + e * r + j] = ge * h[t * ldh + e * r + j];
      }
  });
  return m;
}

void Adapter::forward_group(Group& g, const float* x, long ldx, float* y, long ldy,
                            const std::array<long, ET_NUM_PROJ>& y_col, float* hz, const AdapterPass& pass) {
  if (g.sites.empty()) return;
  const long rows = pass.rows, W = g.h_width + g.z_width, in = g.in;
  const float* A = a_operand(g);
  if (pass.training && s_.c.dropout > 0.0f) {
    long ld_in = ldx;
    const float* dropped = dropped_input(g, x, ldx, rows, pass.dropout_seed, &ld_in);
    gemm(false, true, rows, g.h_width, in, 1.0f, dropped, ld_in, A, in, 0.0f, hz, W);
    if (g.z_width)
      gemm(false, true, rows, g.z_width, in, 1.0f, x, ldx, A + g.h_width * in, in, 0.0f, hz + g.h_width, W);
  } else {
    // Every A block and every router of the group in one product.
    gemm(false, true, rows, W, in, 1.0f, x, ldx, A, in, 0.0f, hz, W);
  }
  const float s = s_.scaling;
  for (Site* site : g.sites) {
    float* ys = y + y_col[site->projection];
    const float* h = hz + site->h_col;
    const long width = site->width;
    if (s_.c.method == ET_METHOD_LORA) {
      gemm(false, true, rows, site->out, width, s, h, W, site->B.value.data(), width, 1.0f, ys, ldy);
      continue;
    }
    route(*site, hz, W, pass);
    const float* m = gated(*site, h, W, rows);
    gemm(false, true, rows, site->out, width, 1.0f, m, width, site->B.value.data(), width, 1.0f, ys, ldy);
  }
}

void Adapter::backward_group(Group& g, const float* x, long ldx, const float* hz, const float* dy, long lddy,
                             const std::array<long, ET_NUM_PROJ>& y_col, float* dx, long lddx,
                             const AdapterPass& pass) {
  if (g.sites.empty()) return;
  const long rows = pass.rows, W = g.h_width + g.z_width, in = g.in;
  const float s = s_.scaling;
  const Kernels& K = kernels();
  grad_hz_.reserve(rows * W);
  float* dhz = grad_hz_.data();
  for (Site* site : g.sites) {
    const float* dys = dy + y_col[site->projection];
    const float* h = hz + site->h_col;
    float* u = dhz + site->h_col;
    const long width = site->width, r = site->rank, E = site->experts, out = site->out;
    if (s_.c.method == ET_METHOD_LORA) {
      gemm(true, false, out, width, rows, s, dys, lddy, h, W, 1.0f, site->B.grad.data(), width);  // dB += s·dYᵀH
      gemm(false, false, rows, width, out, s, dys, lddy, site->B.value.data(), width, 0.0f, u, W);  // dH = s·dY B
      continue;
    }
    const float* m = gated(*site, h, W, rows);  // recomputed: cheaper than keeping it per layer
    const float* gate = site->gate.data();
    gemm(true, false, out, width, rows, 1.0f, dys, lddy, m, width, 1.0f, site->B.grad.data(), width);  // dB += dYᵀM
    gemm(false, false, rows, width, out, 1.0f, dys, lddy, site->B.value.data(), width, 0.0f, u, W);  // U = dY B
    const bool router = has_router();
    const int method = s_.c.method;
    pool().parallel_for(rows, kRowGrain, [&](long r0, long r1, int) {
      float dgate[kMaxExperts], dprob[kMaxExperts];
      for (long t = r0; t < r1; ++t) {
        float* ut = u + t * W;
        const float* ht = h + t * W;
        const float* gt = gate + t * E;
        for (long e = 0; e < E; ++e) {
          dgate[e] = s * K.dot(ht + e * r, ut + e * r, r);  // dG = s·Σ_block H⊙U
          for (long j = 0; j < r; ++j) ut[e * r + j] *= s * gt[e];  // dH = s·U⊙Ĝ
        }
        if (!router) continue;
        const float* p = site->prob.data() + t * E;
        std::memcpy(dprob, site->aux_dprob.data() + t * E, E * sizeof(float));
        const uint8_t* sel = site->selected.data() + t * E;
        if (method == ET_METHOD_MOLA)
          mola_gates_backward(p, gt, sel, dgate, E, dprob);
        else
          for (long e = 0; e < E; ++e) dprob[e] += sel[e] ? dgate[e] : 0.0f;  // g = p (⊙ mask)
        // Softmax backward, plus the z-loss's direct term on the logits.
        float delta = 0.0f;
        for (long e = 0; e < E; ++e) delta += p[e] * dprob[e];
        float* dz = dhz + t * W + site->z_col;
        const float zf = site->aux_zfactor[t];
        for (long e = 0; e < E; ++e) dz[e] = p[e] * (dprob[e] - delta) + zf * p[e];
      }
    });
  }
  const bool dropped = pass.training && s_.c.dropout > 0.0f;
  long ld_in = ldx;
  const float* input = dropped ? dropped_input(g, x, ldx, rows, pass.dropout_seed, &ld_in) : x;
  if (trains_a()) {
    if (!dropped) {
      gemm(true, false, W, in, rows, 1.0f, dhz, W, x, ldx, 1.0f, g.down.grad.data(), in);  // dA and dR at once
    } else {
      gemm(true, false, g.h_width, in, rows, 1.0f, dhz, W, input, ld_in, 1.0f, g.down.grad.data(), in);
      if (g.z_width)
        gemm(true, false, g.z_width, in, rows, 1.0f, dhz + g.h_width, W, x, ldx, 1.0f,
             g.down.grad.data() + g.h_width * in, in);
    }
  }
  if (!dx) return;
  const float* A = a_operand(g);
  if (!dropped) {
    gemm(false, false, rows, in, W, 1.0f, dhz, W, A, in, 1.0f, dx, lddx);
    return;
  }
  grad_x_.reserve(rows * in);
  gemm(false, false, rows, in, g.h_width, 1.0f, dhz, W, A, in, 0.0f, grad_x_.data(), in);
  group_dropout(g, grad_x_.data(), in, dx, lddx, rows, pass.dropout_seed, true);  // drop'(dH A)
  if (g.z_width) gemm(false, false, rows, in, g.z_width, 1.0f, dhz + g.h_width, W, A + g.h_width * in, in, 1.0f, dx, lddx);
}

// ---------------------------------------------------------------------------------------------
// Auxiliary losses, after the forward of a training micro-batch

AuxResult Adapter::auxiliary_losses(long batch, long seq, const uint8_t* mask, const int32_t* task_types,
                                    float aux_scale) {
  AuxResult result;
  if (!has_router()) return result;
  const et_adapter_config& c = s_.c;
  const long rows = batch * seq;
  std::vector<Site*> all = sites();
  for (Site* site : all) {
    site->aux_dprob.reserve(rows * site->experts);
    std::memset(site->aux_dprob.data(), 0, rows * site->experts * sizeof(float));
    site->aux_zfactor.reserve(rows);
    std::memset(site->aux_zfactor.data(), 0, rows * sizeof(float));
  }
  double real = 0.0;
  for (long t = 0; t < rows; ++t) real += masked_out(mask, t) ? 0.0 : 1.0;
  const double all_rows = real * static_cast<double>(all.size());

  // Load balance, per pool (a layer, or everything).
  const bool by_probability = c.method == ET_METHOD_DYNMOLE;  // DynMoLE's f: masked gates, not counts
  const long pools = c.balance_pooled ? 1 : layers_;
  if (step_counts_.size() != static_cast<size_t>(pools)) {
    step_counts_.assign(pools, {});
    step_prob_.assign(pools, {});
    step_tokens_.assign(pools, 0.0);
  }
  if (real == 0.0) {  // nothing to balance in this micro-batch; the step's value so far stands
    result.balance_step = step_balance(by_probability);
    return result;
  }
  for (long pool_index = 0; pool_index < pools; ++pool_index) {
    std::vector<Site*> members;
    for (Site* site : all)
      if (c.balance_pooled || site->layer == pool_index) members.push_back(site);
    if (members.empty()) continue;
    const long N = members[0]->experts;
    std::vector<double> count(N, 0.0), prob(N, 0.0);
    double tokens = 0.0;
    for (Site* site : members)
      for (long t = 0; t < rows; ++t) {
        if (masked_out(mask, t)) continue;
        tokens += 1.0;
        const float* p = site->prob.data() + t * N;
        long argmax = 0;
        for (long e = 0; e < N; ++e) {
          prob[e] += p[e];
          if (p[e] > p[argmax]) argmax = e;
        }
        if (by_probability)
          for (long e = 0; e < N; ++e) count[e] += site->gate[t * N + e];
        else if (c.method == ET_METHOD_LORAMOE)
          count[argmax] += 1.0;  // dense gates: Switch's top-1 assignment
        else
          for (long e = 0; e < N; ++e) count[e] += site->selected[t * N + e];
      }
    std::vector<double>& step_count = step_counts_[pool_index];
    std::vector<double>& step_prob = step_prob_[pool_index];
    step_count.resize(N, 0.0);
    step_prob.resize(N, 0.0);
    for (long e = 0; e < N; ++e) {
      step_count[e] += count[e];
      step_prob[e] += prob[e];
    }
    step_tokens_[pool_index] += tokens;
    const std::vector<double> f = c.balance_global
                                      ? balance_fractions(step_count, step_tokens_[pool_index], by_probability)
                                      : balance_fractions(count, tokens, by_probability);
    double loss = 0.0;
    for (long e = 0; e < N; ++e) loss += N * f[e] * prob[e] / tokens;
    result.balance += loss;
    if (c.balance_coef <= 0.0f) continue;
    const double scale = c.balance_coef * aux_scale * N / tokens;
    const bool through_gates = by_probability && !c.balance_global;  // f differentiable (DynMoLE, micro)
    for (Site* site : members)
      for (long t = 0; t < rows; ++t) {
        if (masked_out(mask, t)) continue;
        float* dp = site->aux_dprob.data() + t * N;
        for (long e = 0; e < N; ++e) {
          double g = scale * f[e];
          if (through_gates && site->selected[t * N + e]) g += scale * prob[e] / tokens;
          dp[e] += static_cast<float>(g);
        }
      }
  }
  result.total += c.balance_coef * result.balance;
  result.balance_step = step_balance(by_probability);

  // Router z-loss and DynMoLE's entropy loss, means over every site's real rows.
  for (Site* site : all) {
    const long E = site->experts;
    for (long t = 0; t < rows; ++t) {
      if (masked_out(mask, t)) continue;
      const double lse = site->lse[t];
      result.z += lse * lse / all_rows;
      if (c.z_loss_coef > 0.0f)
        site->aux_zfactor[t] = static_cast<float>(c.z_loss_coef * aux_scale * 2.0 * lse / all_rows);
      if (c.method != ET_METHOD_DYNMOLE) continue;
      const float* p = site->prob.data() + t * E;
      result.entropy += tsallis_normalized(p, E, c.entropy_index, c.entropy_eps) / all_rows;
      if (c.entropy_coef > 0.0f)
        tsallis_normalized_backward(p, E, c.entropy_index, c.entropy_eps, c.entropy_coef * aux_scale / all_rows,
                                    site->aux_dprob.data() + t * E);
    }
  }
  result.total += c.z_loss_coef * result.z + c.entropy_coef * result.entropy;

  // LoRAMoE's localized balancing constraint, summed over sites.
  if (c.method == ET_METHOD_LORAMOE && task_types && c.blc_weight > 0.0f) {
    for (long b = 0; b < batch; ++b)
      if (task_types[b] != 0 && task_types[b] != 1) fail("task_types[", b, "] must be 0 or 1, got ", task_types[b]);
    for (Site* site : all)
      result.lbc += loramoe_balance_constraint(site->prob.data(), site->experts, batch, seq, mask, task_types,
                                               c.blc_alpha, c.blc_weight * aux_scale, site->aux_dprob.data());
    result.total += c.blc_weight * result.lbc;
  }
  return result;
}

double Adapter::step_balance(bool by_probability) const {
  double total = 0.0;
  for (size_t pool_index = 0; pool_index < step_counts_.size(); ++pool_index) {
    const double tokens = step_tokens_[pool_index];
    if (tokens <= 0.0) continue;
    const std::vector<double> f = balance_fractions(step_counts_[pool_index], tokens, by_probability);
    const long N = static_cast<long>(f.size());
    for (long e = 0; e < N; ++e) total += N * f[e] * step_prob_[pool_index][e] / tokens;
  }
  return total;
}

void Adapter::end_micro_batch() {
  if (s_.c.method != ET_METHOD_FLYLORA) return;
  for (Site* site : sites()) {
    const long r = site->experts;
    double mean = 0.0;
    for (double v : site->rank_counts) mean += v;
    mean /= r;
    float* d = site->topk_bias.value.data();
    for (long i = 0; i < r; ++i) {
      const double gap = mean - site->rank_counts[i];
      d[i] += s_.c.fly_bias_rate * static_cast<float>((gap > 0) - (gap < 0));
      site->rank_counts[i] = 0.0;
    }
  }
}

void Adapter::end_step() {
  for (auto& v : step_counts_) std::fill(v.begin(), v.end(), 0.0);
  for (auto& v : step_prob_) std::fill(v.begin(), v.end(), 0.0);
  std::fill(step_tokens_.begin(), step_tokens_.end(), 0.0);
}

std::vector<double> Adapter::routing_stats(bool reset) {
  std::vector<double> out;
  if (s_.c.method == ET_METHOD_LORA) return out;
  for (Site* site : sites()) {
    out.insert(out.end(), {static_cast<double>(site->layer), static_cast<double>(site->projection),
                           static_cast<double>(site->experts), site->stat_tokens, site->stat_entropy,
                           site->stat_broadcast});
    out.insert(out.end(), site->stat_load.begin(), site->stat_load.end());
    out.insert(out.end(), site->stat_gate.begin(), site->stat_gate.end());
    if (!reset) continue;
    site->stat_tokens = site->stat_entropy = site->stat_broadcast = 0.0;
    std::fill(site->stat_load.begin(), site->stat_load.end(), 0.0);
    std::fill(site->stat_gate.begin(), site->stat_gate.end(), 0.0);
  }
  return out;
}

}  // namespace et
