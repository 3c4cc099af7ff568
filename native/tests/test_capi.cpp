// The C API's contract: clear errors for bad input, never a crash.
#include <string>
#include <vector>

#include "check.h"
#include "expertune.h"
#include "fixtures.h"

namespace {
et_model_config small() { return fixtures::llama_config(10, 8, 12, 1, 2, 1, 4); }
bool error_mentions(const char* text) { return std::string(et_last_error()).find(text) != std::string::npos; }
}  // namespace

TEST_CASE("invalid configurations are refused with the field named") {
  et_model_config c = small();
  c.num_kv_heads = 3;
  CHECK(et_model_create(&c) == nullptr);
  CHECK(error_mentions("num_key_value_heads"));
  c = small();
  c.head_dim = 3;
  CHECK(et_model_create(&c) == nullptr);
  CHECK(error_mentions("head_dim"));
  c = small();
  c.vocab_size = 0;
  CHECK(et_model_create(&c) == nullptr);
  CHECK(error_mentions("vocab_size"));
  c = small();
  c.rope_scaling_type = ET_ROPE_LLAMA3;
  c.rope_factor = 8;
  CHECK(et_model_create(&c) == nullptr);
  CHECK(error_mentions("llama3"));
  CHECK(et_model_create(nullptr) == nullptr);
}

TEST_CASE("tensors: unknown names, wrong sizes, missing tensors and untrainable gradients") {
  et_model_config c = small();
  et_model* m = et_model_create(&c);
  CHECK(m != nullptr);
  std::vector<float> v(80, 0.5f);
  CHECK(et_set_tensor(m, "model.layers.7.self_attn.q_proj.weight", v.data(), 64) != 0);
  CHECK(error_mentions("unknown tensor 'model.layers.7.self_attn.q_proj.weight'"));
  CHECK(et_set_tensor(m, "model.embed_tokens.weight", v.data(), 79) != 0);
  CHECK(error_mentions("[10, 8]"));
  CHECK(et_set_tensor(m, "model.layers.0.self_attn.q_proj.lora_A.weight", v.data(), 8) != 0);
  CHECK(error_mentions("no adapter is attached"));
  int64_t shape[4];
  int32_t nd = 0;
  CHECK(et_tensor_shape(m, "model.layers.0.self_attn.k_proj.weight", shape, &nd) == 0);
  CHECK(nd == 2 && shape[0] == 4 && shape[1] == 8);
  // Nothing set yet: a forward names what is missing.
  int32_t ids[3] = {1, 2, 3};
  std::vector<float> logits(30);
  CHECK(et_forward(m, ids, 1, 3, logits.data()) != 0);
  CHECK(error_mentions("never set"));
  CHECK(error_mentions("model.embed_tokens.weight"));
  CHECK(et_get_grad(m, "model.embed_tokens.weight", v.data(), 80) != 0);
  CHECK(error_mentions("not trainable"));
  et_model_free(m);
}

TEST_CASE("token ids and targets outside the vocabulary are refused with their position") {
  et_model_config c = small();
  et_model* m = et_model_create(&c);
  const auto names = fixtures::tensor_names(m, ET_TENSORS_BASE);
  CHECK(names.size() == 12);  // embedding, 2 norms, 7 projections, final norm, lm_head
  for (const std::string& name : names) {
    std::vector<float> v(fixtures::tensor_size(m, name), 0.01f);
    CHECK(et_set_tensor(m, name.c_str(), v.data(), v.size()) == 0);
  }
  int32_t ids[4] = {1, 2, 10, 3};
  std::vector<float> logits(40);
  CHECK(et_forward(m, ids, 1, 4, logits.data()) != 0);
  CHECK(error_mentions("ids[2] = 10"));
  int32_t good[4] = {1, 2, 3, 4}, targets[4] = {2, 3, -2, -1};
  et_step_options opt{1.0f, 0, 0, 0, 1.0f, nullptr, nullptr};
  CHECK(et_forward_backward(m, good, targets, 1, 4, &opt, nullptr) != 0);
  CHECK(error_mentions("nothing to train"));
  et_lora_config bad{0, 1.0f, 0, 0.0f, 1, 0};
  CHECK(et_attach_lora(m, &bad) != 0);
  CHECK(error_mentions("rank"));
  et_lora_config lc{2, 1.0f, 0, 0.0f, 1, 0};
  CHECK(et_attach_lora(m, &lc) == 0);
  CHECK(et_forward_backward(m, good, targets, 1, 4, &opt, nullptr) != 0);
  CHECK(error_mentions("targets[2] = -2"));
  targets[2] = 4;
  et_step_stats stats{};
  CHECK(et_forward_backward(m, good, targets, 1, 4, &opt, &stats) == 0);
  CHECK(stats.tokens == 3);
  et_adamw hyper{-1.0f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f};
  CHECK(et_optimizer_step(m, &hyper, nullptr) != 0);
  CHECK(error_mentions("lr=-1"));
  CHECK(et_session_create(m, 0) == nullptr);
  et_model_free(m);
}

TEST_CASE("thread count and build information") {
  CHECK(et_set_num_threads(3) == 0);
  CHECK(et_get_num_threads() == 3);
  CHECK(et_set_num_threads(-1) != 0);
  CHECK(et_set_num_threads(0) == 0);
  CHECK(et_get_num_threads() >= 1);
  CHECK(std::string(et_blas_info()).find("OpenBLAS") != std::string::npos);
}

int main() { return check::run_all(); }

TEST_CASE("device selection: the CPU by default; a CUDA device in a CPU-only build is refused by name") {
  et_model_config c = small();
  et_model* m = et_model_create_on(&c, ET_DEVICE_CPU);
  CHECK(m != nullptr);
  CHECK(et_model_device(m) == ET_DEVICE_CPU);
  et_model_free(m);
  CHECK(et_model_create_on(&c, -7) == nullptr);
  CHECK(error_mentions("ET_DEVICE_CPU"));
#ifndef ET_WITH_CUDA
  CHECK(et_model_create_on(&c, 0) == nullptr);
  CHECK(error_mentions("CUDA backend not built"));
  CHECK(et_cuda_device_count() == -1);
  CHECK(error_mentions("CUDA backend not built"));
#endif
}
