// The engine's side of bench/gpu: tokens/s and model-FLOPs utilisation of one training step
// (forward + backward + AdamW) of a random-weight Llama, through the C API only, so the same
// program runs on a CUDA device (--device cuda:0) and on the CPU (--device cpu, small shapes:
// that is how the driver itself is checked on machines without a GPU).
//
// Prints one JSON line per method: {"impl":"expertune","method":…,"tokens_per_s":…,"mfu":…}.
// Model FLOPs per token (frozen base, trainable adapter) are counted in flops.h, shared with
// nothing else on purpose: the Python baselines count the same way in bench/gpu/common.py.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "expertune.h"

namespace {

struct Options {
  std::string device = "cuda:0", methods = "lora,mola,loramoe,dynmole,flylora";
  int hidden = 2048, layers = 16, heads = 16, kv_heads = 8, vocab = 32000, intermediate = 5632;
  int batch = 8, seq = 1024, steps = 10, warmup = 3;
  double peak_tflops = 989.0;  // H100 SXM dense bf16; run.sh passes the measured rate too
  double measured_tflops = 0.0;
};

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "engine_step: %s\n", message.c_str());
  std::exit(1);
}

void check(int status, const char* what) {
  if (status != 0) die(std::string(what) + ": " + et_last_error());
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value after " + arg);
      return argv[++i];
    };
    if (arg == "--device") o.device = value();
    else if (arg == "--methods") o.methods = value();
    else if (arg == "--hidden") o.hidden = std::stoi(value());
    else if (arg == "--layers") o.layers = std::stoi(value());
    else if (arg == "--heads") o.heads = std::stoi(value());
    else if (arg == "--kv-heads") o.kv_heads = std::stoi(value());
    else if (arg == "--vocab") o.vocab = std::stoi(value());
    else if (arg == "--intermediate") o.intermediate = std::stoi(value());
    else if (arg == "--batch") o.batch = std::stoi(value());
    else if (arg == "--seq") o.seq = std::stoi(value());
    else if (arg == "--steps") o.steps = std::stoi(value());
    else if (arg == "--warmup") o.warmup = std::stoi(value());
    else if (arg == "--peak-tflops") o.peak_tflops = std::stod(value());
    else if (arg == "--measured-tflops") o.measured_tflops = std::stod(value());
    else die("unknown argument " + arg);
  }
  return o;
}

int device_ordinal(const std::string& device) {
  if (device == "cpu") return ET_DEVICE_CPU;
  if (device.rfind("cuda:", 0) == 0) return std::stoi(device.substr(5));
  die("--device must be cpu or cuda:<n>, got " + device);
}

// A cheap deterministic fill: 1.2 B parameters through std::normal_distribution would take minutes.
void fill(std::vector<float>& v, uint32_t seed, float center, float scale) {
  uint32_t x = seed * 2654435761u + 1u;
  for (float& f : v) {
    x = x * 1664525u + 1013904223u;
    f = center + scale * (static_cast<float>(x >> 8) * (1.0f / 16777216.0f) * 2.0f - 1.0f);
  }
}

std::vector<std::string> split(const std::string& text, char by) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(by, start);
    if (end == std::string::npos) end = text.size();
    if (end > start) out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// Per token: 2 FLOPs per frozen weight forward and 2 for its input gradient (no weight gradient),
// 6 per trainable adapter weight (forward, input and weight gradients), causal attention as
// 2·T·(H·hd) forward and 2.5× that backward per layer (the usual flash-attention count), and the
// head. Router products are in the adapter count; gates and norms are not counted.
double flops_per_token(const Options& o, long adapter_params) {
  const double d = o.hidden, hd = static_cast<double>(o.hidden) / o.heads, q = o.heads * hd, kv = o.kv_heads * hd;
  const double F = o.intermediate, V = o.vocab, T = o.seq;
  const double per_layer = d * (q + 2 * kv) + q * d + 3 * d * F;
  const double base = o.layers * per_layer + V * d;
  const double attention = o.layers * 3.5 * 2.0 * T * q;
  return 4.0 * base + 6.0 * static_cast<double>(adapter_params) + attention;
}

et_adapter_config adapter_for(const std::string& method, const Options& o, std::vector<int32_t>& experts,
                              std::vector<int32_t>& top_k) {
  et_adapter_config c{};
  c.target_mask = 0x7f;  // all 7 projections
  c.seed = 7;
  c.dropout = 0.0f;
  experts.assign(o.layers, 8);
  top_k.assign(o.layers, 2);
  if (method == "lora") {
    c.method = ET_METHOD_LORA;
    c.rank = 16;
    c.alpha = 32.0f;
  } else if (method == "flylora") {
    c.method = ET_METHOD_FLYLORA;
    c.rank = 32;
    c.alpha = 64.0f;
    c.fly_top_k = 8;
    c.fly_bias_rate = 1e-3f;
  } else {
    c.rank = 8;  // 8 experts of rank 8
    c.alpha = 16.0f;
    c.num_experts = experts.data();
    if (method == "mola") {
      c.method = ET_METHOD_MOLA;
      c.top_k = top_k.data();
      c.balance_coef = 0.01f;
    } else if (method == "loramoe") {
      c.method = ET_METHOD_LORAMOE;
      c.blc_alpha = 0.1f;
      c.blc_weight = 0.0f;  // no task types in a benchmark batch
    } else if (method == "dynmole") {
      c.method = ET_METHOD_DYNMOLE;
      c.top_p = 0.75f;
      c.keep_top_k = 1;
      c.entropy_index = 1.1f;
      c.entropy_threshold = 0.9f;
      c.entropy_eps = 1e-6f;
      c.entropy_coef = 0.01f;
      c.balance_coef = 0.01f;
    } else {
      die("unknown method " + method);
    }
  }
  return c;
}

long count_trainable(et_model* model) {
  const int64_t needed = et_tensor_names(model, ET_TENSORS_TRAINABLE, nullptr, 0);
  std::string names(static_cast<size_t>(needed), '\0');
  et_tensor_names(model, ET_TENSORS_TRAINABLE, names.data(), names.size());
  names.pop_back();
  long total = 0;
  for (const std::string& name : split(names, '\n')) {
    int64_t shape[4];
    int32_t nd = 0;
    check(et_tensor_shape(model, name.c_str(), shape, &nd), "et_tensor_shape");
    long n = 1;
    for (int i = 0; i < nd; ++i) n *= static_cast<long>(shape[i]);
    total += n;
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  et_model_config c{};
  c.vocab_size = o.vocab;
  c.hidden_size = o.hidden;
  c.intermediate_size = o.intermediate;
  c.num_layers = o.layers;
  c.num_heads = o.heads;
  c.num_kv_heads = o.kv_heads;
  c.head_dim = o.hidden / o.heads;
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = 10000.0;
  c.max_position_embeddings = o.seq;
  et_model* model = et_model_create_on(&c, device_ordinal(o.device));
  if (!model) die(std::string("et_model_create_on(") + o.device + "): " + et_last_error());

  // Random base weights (bf16 on the GPU): norms near 1, matrices uniform with std ≈ 0.02.
  {
    const int64_t needed = et_tensor_names(model, ET_TENSORS_BASE, nullptr, 0);
    std::string names(static_cast<size_t>(needed), '\0');
    et_tensor_names(model, ET_TENSORS_BASE, names.data(), names.size());
    names.pop_back();
    uint32_t seed = 1;
    std::vector<float> values;
    for (const std::string& name : split(names, '\n')) {
      int64_t shape[4];
      int32_t nd = 0;
      check(et_tensor_shape(model, name.c_str(), shape, &nd), "et_tensor_shape");
      size_t n = 1;
      for (int i = 0; i < nd; ++i) n *= static_cast<size_t>(shape[i]);
      values.resize(n);
      const bool norm = name.find("norm") != std::string::npos;
      fill(values, seed++, norm ? 1.0f : 0.0f, norm ? 0.0f : 0.035f);
      check(et_set_tensor(model, name.c_str(), values.data(), n), "et_set_tensor");
    }
  }

  const long N = static_cast<long>(o.batch) * o.seq;
  std::vector<int32_t> ids(N), targets(N);
  uint32_t x = 12345u;
  for (long t = 0; t < N; ++t) {
    x = x * 1664525u + 1013904223u;
    ids[t] = static_cast<int32_t>((x >> 8) % o.vocab);
  }
  for (long t = 0; t < N; ++t) targets[t] = (t + 1) % o.seq == 0 ? -1 : ids[t + 1];
  const et_adamw hyper{1e-4f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f};

  for (const std::string& method : split(o.methods, ',')) {
    std::vector<int32_t> experts, top_k;
    const et_adapter_config ac = adapter_for(method, o, experts, top_k);
    check(et_attach_adapter(model, &ac), "et_attach_adapter");
    const long adapter_params = count_trainable(model);
    et_step_options options{};
    options.loss_scale = 1.0f / static_cast<float>(N);
    options.aux_scale = 1.0f;
    double seconds = 0.0, loss = 0.0;
    for (int step = 0; step < o.warmup + o.steps; ++step) {
      options.dropout_seed = static_cast<uint32_t>(step);
      const auto start = std::chrono::steady_clock::now();
      et_step_stats stats{};
      check(et_forward_backward(model, ids.data(), targets.data(), o.batch, o.seq, &options, &stats),
            "et_forward_backward");
      float norm = 0.0f;
      check(et_optimizer_step(model, &hyper, &norm), "et_optimizer_step");  // returns after the device finished
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (step >= o.warmup) seconds += elapsed;
      loss = stats.loss_sum / std::max<int64_t>(1, stats.tokens);
    }
    const double tokens_per_s = static_cast<double>(N) * o.steps / seconds;
    const double flops = flops_per_token(o, adapter_params);
    const double achieved_tflops = tokens_per_s * flops / 1e12;
    const char* attention = std::getenv("EXPERTUNE_CUDA_ATTENTION");
    std::printf(
        "{\"impl\":\"expertune\",\"method\":\"%s\",\"device\":\"%s\",\"attention\":\"%s\",\"tokens_per_s\":%.1f,"
        "\"step_ms\":%.2f,\"model_tflops\":%.2f,\"mfu\":%.4f,\"mfu_of_measured\":%.4f,\"adapter_params\":%ld,"
        "\"loss\":%.4f}\n",
        method.c_str(), o.device.c_str(), attention ? attention : "simt", tokens_per_s, 1e3 * seconds / o.steps,
        achieved_tflops, achieved_tflops / o.peak_tflops,
        o.measured_tflops > 0 ? achieved_tflops / o.measured_tflops : 0.0, adapter_params, loss);
    std::fflush(stdout);
  }
  et_model_free(model);
  return 0;
}
