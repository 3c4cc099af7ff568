// The model through the C API against a plain double-precision Llama written here from
// docs/engine.md, gradients against central finite differences, and the equivalences the
// engine promises (recomputation, accumulation, the KV cache).
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "expertune.h"
#include "fixtures.h"
#include "rng.h"

namespace {

struct TinyModel {
  et_model_config config{};
  std::map<std::string, std::vector<float>> weights;
  std::map<std::string, std::vector<long>> shapes;
};

et_model_config tiny_config(bool tied, bool qkv_bias, int window) {
  et_model_config c = fixtures::llama_config(48, 32, 72, 2, 4, 2, 8);
  c.tie_word_embeddings = tied;
  c.qkv_bias = qkv_bias;
  c.sliding_window = window;
  return c;
}

TinyModel make_tiny(const et_model_config& c, uint32_t seed) {
  TinyModel m;
  m.config = c;
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 0.15f);
  const long d = c.hidden_size, F = c.intermediate_size, V = c.vocab_size, q = c.num_heads * c.head_dim,
             kv = c.num_kv_heads * c.head_dim;
  auto add = [&](const std::string& name, std::vector<long> shape, float center) {
    long n = 1;
    for (long s : shape) n *= s;
    std::vector<float> v(n);
    for (auto& x : v) x = center + normal(gen);
    m.weights[name] = v;
    m.shapes[name] = shape;
  };
  add("model.embed_tokens.weight", {V, d}, 0.0f);
  for (int l = 0; l < c.num_layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {d}, 1.0f);
    add(p + "self_attn.q_proj.weight", {q, d}, 0.0f);
    add(p + "self_attn.k_proj.weight", {kv, d}, 0.0f);
    add(p + "self_attn.v_proj.weight", {kv, d}, 0.0f);
    if (c.qkv_bias) {
      add(p + "self_attn.q_proj.bias", {q}, 0.0f);
      add(p + "self_attn.k_proj.bias", {kv}, 0.0f);
      add(p + "self_attn.v_proj.bias", {kv}, 0.0f);
    }
    add(p + "self_attn.o_proj.weight", {d, q}, 0.0f);
    add(p + "post_attention_layernorm.weight", {d}, 1.0f);
    add(p + "mlp.gate_proj.weight", {F, d}, 0.0f);
    add(p + "mlp.up_proj.weight", {F, d}, 0.0f);
    add(p + "mlp.down_proj.weight", {d, F}, 0.0f);
  }
  add("model.norm.weight", {d}, 1.0f);
  if (!c.tie_word_embeddings) add("lm_head.weight", {V, d}, 0.0f);
  return m;
}

et_model* load(const TinyModel& m) {
  et_model* model = et_model_create(&m.config);
  for (auto& [name, values] : m.weights)
    if (et_set_tensor(model, name.c_str(), values.data(), values.size()) != 0)
      throw std::runtime_error(et_last_error());
  return model;
}

// ---- the reference: docs/engine.md in double precision, loops only ----------------------------

using Mat = std::vector<double>;  // row-major

const std::vector<float>& W(const TinyModel& m, const std::string& name) { return m.weights.at(name); }

// y[N, out] = x[N, in] Wᵀ (+ b)
Mat linear(const Mat& x, long N, long in, const std::vector<float>& w, long out, const std::vector<float>* b) {
  Mat y(N * out, 0.0);
  for (long t = 0; t < N; ++t)
    for (long o = 0; o < out; ++o) {
      double acc = b ? (*b)[o] : 0.0;
      for (long i = 0; i < in; ++i) acc += x[t * in + i] * w[o * in + i];
      y[t * out + o] = acc;
    }
  return y;
}

Mat rmsnorm(const Mat& x, long N, long d, const std::vector<float>& w, double eps) {
  Mat y(N * d);
  for (long t = 0; t < N; ++t) {
    double ss = 0;
    for (long i = 0; i < d; ++i) ss += x[t * d + i] * x[t * d + i];
    double inv = 1.0 / std::sqrt(ss / d + eps);
    for (long i = 0; i < d; ++i) y[t * d + i] = w[i] * x[t * d + i] * inv;
  }
  return y;
}

struct LoraRef {
  int rank = 0;
  double scale = 0;
  const TinyModel* weights = nullptr;  // lora tensors by name
  uint32_t targets = 0;
};

void add_lora(Mat& y, const Mat& x, long N, long in, long out, int layer, int proj, const LoraRef& lora) {
  if (!(lora.targets & (1u << proj))) return;
  static const char* paths[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  std::string base = "model.layers." + std::to_string(layer) + "." + paths[proj];
  const auto& A = lora.weights->weights.at(base + ".lora_A.weight");
  const auto& B = lora.weights->weights.at(base + ".lora_B.weight");
  Mat h = linear(x, N, in, A, lora.rank, nullptr);
  Mat delta = linear(h, N, lora.rank, B, out, nullptr);
  for (long i = 0; i < N * out; ++i) y[i] += lora.scale * delta[i];
}

Mat reference_logits(const TinyModel& m, const std::vector<int32_t>& ids, long B, long T, const LoraRef& lora) {
  const auto& c = m.config;
  const long d = c.hidden_size, F = c.intermediate_size, V = c.vocab_size, H = c.num_heads, KV = c.num_kv_heads,
             hd = c.head_dim, N = B * T;
  Mat h(N * d);
  for (long t = 0; t < N; ++t)
    for (long i = 0; i < d; ++i) h[t * d + i] = W(m, "model.embed_tokens.weight")[ids[t] * d + i];
  for (int l = 0; l < c.num_layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    auto bias = [&](const std::string& n) { return c.qkv_bias ? &W(m, p + n) : nullptr; };
    Mat a = rmsnorm(h, N, d, W(m, p + "input_layernorm.weight"), c.rms_norm_eps);
    Mat q = linear(a, N, d, W(m, p + "self_attn.q_proj.weight"), H * hd, bias("self_attn.q_proj.bias"));
    Mat k = linear(a, N, d, W(m, p + "self_attn.k_proj.weight"), KV * hd, bias("self_attn.k_proj.bias"));
    Mat v = linear(a, N, d, W(m, p + "self_attn.v_proj.weight"), KV * hd, bias("self_attn.v_proj.bias"));
    add_lora(q, a, N, d, H * hd, l, 0, lora);
    add_lora(k, a, N, d, KV * hd, l, 1, lora);
    add_lora(v, a, N, d, KV * hd, l, 2, lora);
    auto rope = [&](Mat& x, long heads) {
      for (long t = 0; t < N; ++t) {
        long pos = t % T;
        for (long hh = 0; hh < heads; ++hh)
          for (long i = 0; i < hd / 2; ++i) {
            double f = 1.0 / std::pow(c.rope_theta, 2.0 * i / hd), ang = pos * f;
            double& x1 = x[t * heads * hd + hh * hd + i];
            double& x2 = x[t * heads * hd + hh * hd + i + hd / 2];
            double a1 = x1, a2 = x2;
            x1 = a1 * std::cos(ang) - a2 * std::sin(ang);
            x2 = a2 * std::cos(ang) + a1 * std::sin(ang);
          }
      }
    };
    rope(q, H);
    rope(k, KV);
    Mat att(N * H * hd, 0.0);
    for (long b = 0; b < B; ++b)
      for (long hh = 0; hh < H; ++hh) {
        long g = hh / (H / KV);
        for (long i = 0; i < T; ++i) {
          std::vector<double> s(T, -1e300);
          double mx = -1e300;
          for (long j = 0; j <= i; ++j) {
            if (c.sliding_window > 0 && i - j >= c.sliding_window) continue;
            double dot = 0;
            for (long e = 0; e < hd; ++e) dot += q[(b * T + i) * H * hd + hh * hd + e] * k[(b * T + j) * KV * hd + g * hd + e];
            s[j] = dot / std::sqrt(double(hd));
            mx = std::max(mx, s[j]);
          }
          double z = 0;
          for (long j = 0; j <= i; ++j) z += s[j] > -1e299 ? std::exp(s[j] - mx) : 0.0;
          for (long j = 0; j <= i; ++j) {
            if (s[j] <= -1e299) continue;
            double pj = std::exp(s[j] - mx) / z;
            for (long e = 0; e < hd; ++e)
              att[(b * T + i) * H * hd + hh * hd + e] += pj * v[(b * T + j) * KV * hd + g * hd + e];
          }
        }
      }
    Mat o = linear(att, N, H * hd, W(m, p + "self_attn.o_proj.weight"), d, nullptr);
    add_lora(o, att, N, H * hd, d, l, 3, lora);
    for (long i = 0; i < N * d; ++i) h[i] += o[i];
    Mat mm = rmsnorm(h, N, d, W(m, p + "post_attention_layernorm.weight"), c.rms_norm_eps);
    Mat gate = linear(mm, N, d, W(m, p + "mlp.gate_proj.weight"), F, nullptr);
    Mat up = linear(mm, N, d, W(m, p + "mlp.up_proj.weight"), F, nullptr);
    add_lora(gate, mm, N, d, F, l, 4, lora);
    add_lora(up, mm, N, d, F, l, 5, lora);
    Mat act(N * F);
    for (long i = 0; i < N * F; ++i) act[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
    Mat down = linear(act, N, F, W(m, p + "mlp.down_proj.weight"), d, nullptr);
    add_lora(down, act, N, F, d, l, 6, lora);
    for (long i = 0; i < N * d; ++i) h[i] += down[i];
  }
  Mat hf = rmsnorm(h, N, d, W(m, "model.norm.weight"), c.rms_norm_eps);
  return linear(hf, N, d, W(m, c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"), V, nullptr);
}

std::vector<int32_t> random_ids(long n, long vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int32_t> ids(n);
  for (auto& x : ids) x = int32_t(gen() % vocab);
  return ids;
}

std::vector<int32_t> shifted_targets(const std::vector<int32_t>& ids, long B, long T) {
  std::vector<int32_t> t(ids.size(), -1);
  for (long b = 0; b < B; ++b)
    for (long i = 0; i + 1 < T; ++i) t[b * T + i] = ids[b * T + i + 1];
  return t;
}

double loss_of(et_model* model, const std::vector<int32_t>& ids, const std::vector<int32_t>& targets, long B,
               long T, uint32_t dropout_seed = 7) {
  et_step_options opt{1.0f, dropout_seed, 0, 0, 1.0f, nullptr, nullptr};
  et_step_stats stats{};
  if (et_forward_backward(model, ids.data(), targets.data(), B, T, &opt, &stats) != 0)
    throw std::runtime_error(et_last_error());
  et_zero_grad(model);
  return stats.loss_sum / stats.tokens;
}

std::vector<float> grad_of(et_model* model, const std::string& name, size_t n) {
  std::vector<float> g(n);
  if (et_get_grad(model, name.c_str(), g.data(), n) != 0) throw std::runtime_error(et_last_error());
  return g;
}

// Central finite difference of the mean loss along one coordinate, in float32: coarse but
// independent of every backward formula.
double finite_difference(et_model* model, const std::string& name, size_t n, size_t index,
                         const std::vector<int32_t>& ids, const std::vector<int32_t>& targets, long B, long T,
                         double eps) {
  std::vector<float> value(n);
  et_get_tensor(model, name.c_str(), value.data(), n);
  const float original = value[index];
  value[index] = original + float(eps);
  et_set_tensor(model, name.c_str(), value.data(), n);
  double up = loss_of(model, ids, targets, B, T);
  value[index] = original - float(eps);
  et_set_tensor(model, name.c_str(), value.data(), n);
  double down = loss_of(model, ids, targets, B, T);
  value[index] = original;
  et_set_tensor(model, name.c_str(), value.data(), n);
  return (up - down) / (2 * eps);
}

}  // namespace

TEST_CASE("logits match the double-precision reference (GQA, tied/untied, qkv bias, sliding window)") {
  struct Variant {
    bool tied, bias;
    int window;
  };
  for (Variant v : {Variant{false, false, 0}, Variant{true, true, 0}, Variant{false, true, 3}}) {
    TinyModel m = make_tiny(tiny_config(v.tied, v.bias, v.window), 3);
    et_model* model = load(m);
    const long B = 2, T = 9;
    auto ids = random_ids(B * T, m.config.vocab_size, 5);
    std::vector<float> logits(B * T * m.config.vocab_size);
    CHECK(et_forward(model, ids.data(), B, T, logits.data()) == 0);
    Mat ref = reference_logits(m, ids, B, T, LoraRef{});
    CHECK_REL_L2(logits, ref, logits.size(), 1e-5);
    et_model_free(model);
  }
}

TEST_CASE("LoRA: A starts from the documented hash, B at zero, and the adapter adds s·B·A·x") {
  TinyModel m = make_tiny(tiny_config(false, false, 0), 4);
  et_model* model = load(m);
  et_lora_config lc{4, 8.0f, 0, 0.0f, 0x7f, 99};
  CHECK(et_attach_lora(model, &lc) == 0);
  // Initial A per docs/engine.md: (2u − 1)/sqrt(in), u = uniform(hash3(seed, 2·site, i)); site of layer 1, v_proj = 9.
  std::vector<float> A(4 * 32), B(16 * 4);
  CHECK(et_get_tensor(model, "model.layers.1.self_attn.v_proj.lora_A.weight", A.data(), A.size()) == 0);
  CHECK(et_get_tensor(model, "model.layers.1.self_attn.v_proj.lora_B.weight", B.data(), B.size()) == 0);
  for (uint32_t i = 0; i < A.size(); ++i)
    CHECK_NEAR(A[i], (2.0 * et::uniform01(et::hash3(99, 18, i)) - 1.0) / std::sqrt(32.0), 1e-7);
  for (float b : B) CHECK(b == 0.0f);
  // Give every B random values, then compare the adapted logits with the reference.
  TinyModel adapter;
  std::mt19937 gen(11);
  std::normal_distribution<float> normal(0.0f, 0.2f);
  const long T = 7;
  for (const std::string& name : fixtures::tensor_names(model, ET_TENSORS_ADAPTER)) {
    std::vector<float> values(fixtures::tensor_size(model, name));
    et_get_tensor(model, name.c_str(), values.data(), values.size());
    if (name.find("lora_B") != std::string::npos) {
      for (auto& x : values) x = normal(gen);
      et_set_tensor(model, name.c_str(), values.data(), values.size());
    }
    adapter.weights[name] = values;
  }
  CHECK(adapter.weights.size() == 2 * 7 * 2);
  auto ids = random_ids(T, m.config.vocab_size, 8);
  std::vector<float> logits(T * m.config.vocab_size);
  CHECK(et_forward(model, ids.data(), 1, T, logits.data()) == 0);
  LoraRef lora{4, 8.0 / 4, &adapter, 0x7f};
  Mat ref = reference_logits(m, ids, 1, T, lora);
  CHECK_REL_L2(logits, ref, logits.size(), 1e-5);
  // rsLoRA scales by alpha / sqrt(r): re-attaching replaces the adapter.
  et_lora_config rs{4, 8.0f, 1, 0.0f, 0x01, 99};
  CHECK(et_attach_lora(model, &rs) == 0);
  CHECK(et_get_tensor(model, "model.layers.0.mlp.up_proj.lora_A.weight", A.data(), A.size()) != 0);
  et_model_free(model);
}

TEST_CASE("gradients of LoRA and of every base weight agree with central finite differences") {
  TinyModel m = make_tiny(tiny_config(false, true, 0), 21);
  et_model* model = load(m);
  et_lora_config lc{4, 8.0f, 0, 0.0f, 0x7f, 5};
  et_attach_lora(model, &lc);
  CHECK(et_set_train_mode(model, ET_TRAIN_FULL) == 0);
  // Non-zero B so that the gradient of A is not trivially zero.
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  for (int l = 0; l < 2; ++l)
    for (const char* p : {"self_attn.q_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj", "self_attn.k_proj",
                          "self_attn.v_proj", "mlp.gate_proj"}) {
      std::string name = "model.layers." + std::to_string(l) + "." + p + ".lora_B.weight";
      int64_t shape[4];
      int32_t nd;
      et_tensor_shape(model, name.c_str(), shape, &nd);
      std::vector<float> v(shape[0] * shape[1]);
      for (auto& x : v) x = normal(gen);
      et_set_tensor(model, name.c_str(), v.data(), v.size());
    }
  const long B = 2, T = 6;
  auto ids = random_ids(B * T, m.config.vocab_size, 9);
  auto targets = shifted_targets(ids, B, T);
  et_step_options opt{1.0f, 7, 0, 0, 1.0f, nullptr, nullptr};
  et_step_stats stats{};
  CHECK(et_forward_backward(model, ids.data(), targets.data(), B, T, &opt, &stats) == 0);
  CHECK(stats.tokens == B * (T - 1));
  const double scale = 1.0 / stats.tokens;  // finite differences are of the mean loss
  struct Probe {
    const char* name;
    size_t n;
  };
  const Probe probes[] = {
      {"model.layers.0.self_attn.q_proj.lora_A.weight", 4 * 32},   {"model.layers.1.mlp.down_proj.lora_B.weight", 32 * 4},
      {"model.layers.0.self_attn.q_proj.weight", 32 * 32},        {"model.layers.0.self_attn.k_proj.weight", 16 * 32},
      {"model.layers.1.self_attn.v_proj.weight", 16 * 32},        {"model.layers.0.self_attn.o_proj.weight", 32 * 32},
      {"model.layers.1.mlp.gate_proj.weight", 72 * 32},           {"model.layers.0.mlp.up_proj.weight", 72 * 32},
      {"model.layers.0.mlp.down_proj.weight", 32 * 72},           {"model.layers.0.self_attn.q_proj.bias", 32},
      {"model.layers.1.self_attn.k_proj.bias", 16},               {"model.layers.0.input_layernorm.weight", 32},
      {"model.layers.1.post_attention_layernorm.weight", 32},     {"model.norm.weight", 32},
      {"model.embed_tokens.weight", 48 * 32},                     {"lm_head.weight", 48 * 32},
  };
  std::map<std::string, std::vector<float>> grads;
  for (const Probe& p : probes) grads[p.name] = grad_of(model, p.name, p.n);
  et_zero_grad(model);
  for (const Probe& p : probes) {
    const auto& g = grads[p.name];
    // The 3 coordinates with the largest gradient: well above the float32 noise of the difference.
    std::vector<size_t> order(p.n);
    for (size_t i = 0; i < p.n; ++i) order[i] = i;
    std::partial_sort(order.begin(), order.begin() + 3, order.end(),
                      [&](size_t a, size_t b) { return std::fabs(g[a]) > std::fabs(g[b]); });
    for (int k = 0; k < 3; ++k) {
      size_t i = order[k];
      double fd = finite_difference(model, p.name, p.n, i, ids, targets, B, T, 1e-2);
      double analytic = g[i] * scale;
      CHECK_MSG(std::fabs(fd - analytic) <= 2e-2 * std::fabs(analytic) + 2e-5,
                std::string(p.name) + "[" + std::to_string(i) + "] fd=" + std::to_string(fd) +
                    " analytic=" + std::to_string(analytic));
    }
  }
  et_model_free(model);
}

TEST_CASE("activation recomputation and gradient accumulation leave the gradients unchanged") {
  TinyModel m = make_tiny(tiny_config(true, false, 0), 31);
  et_model* model = load(m);
  et_lora_config lc{4, 4.0f, 0, 0.1f, 0x7f, 5};  // with dropout: masks must be recomputed identically
  et_attach_lora(model, &lc);
  std::vector<float> Bv(32 * 4, 0.1f);
  et_set_tensor(model, "model.layers.1.self_attn.o_proj.lora_B.weight", Bv.data(), Bv.size());
  const long B = 4, T = 8;
  auto ids = random_ids(B * T, m.config.vocab_size, 12);
  auto targets = shifted_targets(ids, B, T);
  const std::string name = "model.layers.0.self_attn.o_proj.lora_A.weight";
  const std::string name_b = "model.layers.1.self_attn.o_proj.lora_B.weight";
  auto run = [&](bool recompute) {
    et_step_options opt{1.0f / (B * (T - 1)), 42, 0, recompute, 1.0f, nullptr, nullptr};
    et_step_stats stats{};
    CHECK(et_forward_backward(model, ids.data(), targets.data(), B, T, &opt, &stats) == 0);
    auto ga = grad_of(model, name, 4 * 32), gb = grad_of(model, name_b, 32 * 4);
    et_zero_grad(model);
    ga.insert(ga.end(), gb.begin(), gb.end());
    return ga;
  };
  auto plain = run(false), recomputed = run(true);
  CHECK_REL_L2(recomputed, plain, plain.size(), 1e-6);
  // Two micro-batches of 2 sequences each, scaled by the step's total token count, sum to the
  // whole batch's gradient. (Without dropout: masks index rows within a micro-batch.)
  const long half = B / 2 * T;
  et_zero_grad(model);
  et_lora_config nodrop{4, 4.0f, 0, 0.0f, 0x7f, 5};
  et_attach_lora(model, &nodrop);
  et_set_tensor(model, name_b.c_str(), Bv.data(), Bv.size());
  auto whole = run(false);
  for (int part = 0; part < 2; ++part) {
    std::vector<int32_t> ids_p(ids.begin() + part * half, ids.begin() + (part + 1) * half);
    std::vector<int32_t> tg_p(targets.begin() + part * half, targets.begin() + (part + 1) * half);
    et_step_options opt{1.0f / (B * (T - 1)), 42, 0, 0, 1.0f, nullptr, nullptr};
    CHECK(et_forward_backward(model, ids_p.data(), tg_p.data(), B / 2, T, &opt, nullptr) == 0);
  }
  auto ga = grad_of(model, name, 4 * 32), gb = grad_of(model, name_b, 32 * 4);
  ga.insert(ga.end(), gb.begin(), gb.end());
  CHECK_REL_L2(ga, whole, whole.size(), 1e-5);
  et_model_free(model);
}

TEST_CASE("the KV-cache session gives the same next-token logits as a full forward") {
  TinyModel m = make_tiny(tiny_config(false, true, 4), 41);
  et_model* model = load(m);
  et_lora_config lc{2, 4.0f, 0, 0.0f, 0x55, 1};
  et_attach_lora(model, &lc);
  std::vector<float> Bv(72 * 2, 0.2f);
  et_set_tensor(model, "model.layers.0.mlp.up_proj.lora_B.weight", Bv.data(), Bv.size());
  const long T = 11, V = m.config.vocab_size;
  auto ids = random_ids(T, V, 3);
  std::vector<float> full(T * V);
  CHECK(et_forward(model, ids.data(), 1, T, full.data()) == 0);
  et_session* s = et_session_create(model, 16);
  std::vector<float> logits(V);
  // A prompt of 5, then one token at a time.
  CHECK(et_session_append(s, ids.data(), 5, logits.data()) == 0);
  CHECK_REL_L2(logits, std::vector<float>(full.begin() + 4 * V, full.begin() + 5 * V), V, 1e-5);
  for (long t = 5; t < T; ++t) {
    CHECK(et_session_append(s, ids.data() + t, 1, logits.data()) == 0);
    CHECK_REL_L2(logits, std::vector<float>(full.begin() + t * V, full.begin() + (t + 1) * V), V, 1e-5);
  }
  CHECK(et_session_length(s) == T);
  CHECK(et_session_append(s, ids.data(), 6, logits.data()) != 0);  // 11 + 6 > 16
  CHECK(std::string(et_last_error()).find("session is full") != std::string::npos);
  et_session_free(s);
  et_model_free(model);
}

TEST_CASE("AdamW with clipping moves the LoRA weights as the update rule says") {
  TinyModel m = make_tiny(tiny_config(false, false, 0), 51);
  et_model* model = load(m);
  et_lora_config lc{2, 2.0f, 0, 0.0f, 1u << ET_PROJ_GATE, 5};  // gate_proj only
  et_attach_lora(model, &lc);
  const std::string a = "model.layers.0.mlp.gate_proj.lora_A.weight", b = "model.layers.0.mlp.gate_proj.lora_B.weight";
  std::vector<float> Bv(72 * 2, 0.05f);
  et_set_tensor(model, b.c_str(), Bv.data(), Bv.size());
  const long T = 8;
  auto ids = random_ids(T, m.config.vocab_size, 2);
  auto targets = shifted_targets(ids, 1, T);
  et_step_options opt{1.0f / (T - 1), 1, 0, 0, 1.0f, nullptr, nullptr};
  et_forward_backward(model, ids.data(), targets.data(), 1, T, &opt, nullptr);
  CHECK(fixtures::tensor_names(model, ET_TENSORS_TRAINABLE) ==
        std::vector<std::string>({"model.layers.0.mlp.gate_proj.lora_A.weight", "model.layers.0.mlp.gate_proj.lora_B.weight",
                                  "model.layers.1.mlp.gate_proj.lora_A.weight", "model.layers.1.mlp.gate_proj.lora_B.weight"}));
  double norm2 = 0;
  std::map<std::string, std::vector<float>> before, grads;
  for (const char* layer : {"0", "1"})
    for (const char* kind : {"lora_A", "lora_B"}) {
      std::string n = std::string("model.layers.") + layer + ".mlp.gate_proj." + kind + ".weight";
      size_t count = std::string(kind) == "lora_A" ? 2 * 32 : 72 * 2;
      before[n].resize(count);
      et_get_tensor(model, n.c_str(), before[n].data(), count);
      grads[n] = grad_of(model, n, count);
      for (float g : grads[n]) norm2 += double(g) * g;
    }
  const double norm = std::sqrt(norm2), max_norm = norm / 4;  // force clipping
  et_adamw hyper{0.01f, 0.9f, 0.99f, 1e-8f, 0.1f, float(max_norm)};
  float reported = 0;
  CHECK(et_optimizer_step(model, &hyper, &reported) == 0);
  CHECK_NEAR(reported, norm, 1e-5 * norm);
  const double clip = max_norm / (norm + 1e-6);
  for (auto& [n, p0] : before) {
    std::vector<float> p1(p0.size());
    et_get_tensor(model, n.c_str(), p1.data(), p1.size());
    for (size_t i = 0; i < p0.size(); ++i) {
      double g = grads[n][i] * clip, m1 = 0.1 * g, v1 = 0.01 * g * g;
      double expected = p0[i] * (1 - 0.01 * 0.1) - 0.01 * (m1 / 0.1) / (std::sqrt(v1) / std::sqrt(0.01) + 1e-8);
      CHECK_NEAR(p1[i], expected, 1e-6);
    }
    // Gradients are zeroed by the step.
    for (float g : grad_of(model, n, p0.size())) CHECK(g == 0.0f);
  }
  CHECK(et_optimizer_steps(model) == 1);
  et_model_free(model);
}

TEST_CASE("the input-embedding gradient matches finite differences through the embedding table") {
  TinyModel m = make_tiny(tiny_config(false, false, 0), 61);
  et_model* model = load(m);
  et_lora_config lc{2, 2.0f, 0, 0.0f, 0x7f, 5};
  et_attach_lora(model, &lc);
  const long T = 6;
  std::vector<int32_t> ids = {3, 17, 5, 9, 30, 2};  // distinct ids: one embedding row per position
  auto targets = shifted_targets(ids, 1, T);
  et_step_options opt{1.0f / (T - 1), 1, 1, 0, 1.0f, nullptr, nullptr};
  CHECK(et_forward_backward(model, ids.data(), targets.data(), 1, T, &opt, nullptr) == 0);
  std::vector<float> dx(T * 32);
  CHECK(et_input_grad(model, dx.data(), dx.size()) == 0);
  et_zero_grad(model);
  for (long t : {0L, 2L, 4L})
    for (long i : {1L, 20L}) {
      double fd = finite_difference(model, "model.embed_tokens.weight", 48 * 32, ids[t] * 32 + i, ids, targets, 1, T,
                                    1e-2);
      CHECK_MSG(std::fabs(fd - dx[t * 32 + i]) <= 2e-2 * std::fabs(dx[t * 32 + i]) + 2e-5,
                std::to_string(fd) + " vs " + std::to_string(dx[t * 32 + i]));
    }
  et_model_free(model);
}

TEST_CASE("optimizer state: save, load into a new model and step gives the uninterrupted weights bit for bit") {
  TinyModel m = make_tiny(tiny_config(false, true, 0), 31);
  const long B = 2, T = 6;
  auto ids = random_ids(B * T, m.config.vocab_size, 4);
  auto targets = shifted_targets(ids, B, T);
  et_adamw hyper{0.01f, 0.9f, 0.99f, 1e-8f, 0.1f, 1.0f};
  auto fresh = [&] {
    et_model* model = load(m);
    et_lora_config lc{2, 4.0f, 0, 0.1f, 0x7f, 5};  // dropout: seeds come from the step number
    et_attach_lora(model, &lc);
    et_set_train_mode(model, ET_TRAIN_FULL);
    return model;
  };
  auto step = [&](et_model* model, uint32_t seed) {
    et_step_options opt{1.0f / (B * (T - 1)), seed, 0, 0, 1.0f, nullptr, nullptr};
    et_step_stats stats{};
    CHECK(et_forward_backward(model, ids.data(), targets.data(), B, T, &opt, &stats) == 0);
    CHECK(et_optimizer_step(model, &hyper, nullptr) == 0);
  };
  et_model* whole = fresh();
  for (uint32_t s = 1; s <= 3; ++s) step(whole, s);
  et_model* first = fresh();
  const int64_t size = et_optimizer_state_size(first);
  std::vector<float> zeros_m(size, 1.0f), zeros_v(size, 1.0f);
  CHECK(et_get_optimizer_state(first, zeros_m.data(), zeros_v.data(), size) == 0);
  CHECK(zeros_m[0] == 0.0f && zeros_v[size - 1] == 0.0f);  // zeros before the first step
  step(first, 1);
  std::vector<float> am(size), av(size);
  CHECK(et_get_optimizer_state(first, am.data(), av.data(), size - 1) != 0);
  CHECK(std::string(et_last_error()).find("values per moment") != std::string::npos);
  CHECK(et_get_optimizer_state(first, am.data(), av.data(), size) == 0);
  const auto names = fixtures::tensor_names(first, ET_TENSORS_TRAINABLE);
  std::map<std::string, std::vector<float>> saved;
  for (const auto& n : names) {
    saved[n].resize(fixtures::tensor_size(first, n));
    et_get_tensor(first, n.c_str(), saved[n].data(), saved[n].size());
  }
  et_model_free(first);
  et_model* resumed = fresh();
  for (auto& [n, v] : saved) CHECK(et_set_tensor(resumed, n.c_str(), v.data(), v.size()) == 0);
  CHECK(et_set_optimizer_state(resumed, am.data(), av.data(), size + 1, 1) != 0);
  CHECK(et_set_optimizer_state(resumed, am.data(), av.data(), size, 1) == 0);
  CHECK(et_optimizer_steps(resumed) == 1);
  for (uint32_t s = 2; s <= 3; ++s) step(resumed, s);
  CHECK(et_optimizer_steps(resumed) == 3);
  for (const auto& n : names) {
    std::vector<float> a(saved[n].size()), b(saved[n].size());
    et_get_tensor(whole, n.c_str(), a.data(), a.size());
    et_get_tensor(resumed, n.c_str(), b.data(), b.size());
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  }
  et_model_free(whole);
  et_model_free(resumed);
}

int main() { return check::run_all(); }
