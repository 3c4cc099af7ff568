// Small models for the native tests.
#pragma once

#include <string>
#include <vector>

#include "expertune.h"

namespace fixtures {

// A Llama config with RoPE θ = 10000, no scaling, no biases, untied head, full attention.
inline et_model_config llama_config(int vocab, int hidden, int intermediate, int layers, int heads, int kv_heads,
                                    int head_dim) {
  et_model_config c{};
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = 10000.0;
  c.rope_scaling_type = ET_ROPE_NONE;
  c.max_position_embeddings = 128;
  return c;
}

// The model's tensor names of one kind (ET_TENSORS_*).
inline std::vector<std::string> tensor_names(et_model* model, int kind) {
  std::string all(static_cast<size_t>(et_tensor_names(model, kind, nullptr, 0)), '\0');
  et_tensor_names(model, kind, all.data(), all.size());
  all.pop_back();
  std::vector<std::string> names;
  for (size_t start = 0; start < all.size();) {
    size_t end = all.find('\n', start);
    if (end == std::string::npos) end = all.size();
    names.push_back(all.substr(start, end - start));
    start = end + 1;
  }
  return names;
}

inline size_t tensor_size(et_model* model, const std::string& name) {
  int64_t shape[4];
  int32_t nd = 0;
  et_tensor_shape(model, name.c_str(), shape, &nd);
  size_t n = 1;
  for (int i = 0; i < nd; ++i) n *= static_cast<size_t>(shape[i]);
  return n;
}

}  // namespace fixtures
