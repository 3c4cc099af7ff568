// The C API: argument checks, C++ exceptions turned into -1 + et_last_error().
#include <algorithm>
#include <cstring>
#include <string>

#include "../include/expertune.h"
#include "blas.h"
#include "cuda/backend.h"
#include "kernels/kernels.h"
#include "model.h"
#include "threadpool.h"

struct et_model {
  et::Model model;
  std::unique_ptr<et::GpuBackend> gpu;  // null on the CPU
  int32_t device = ET_DEVICE_CPU;
  explicit et_model(const et_model_config& c) : model(c) {}
};

struct et_session {
  et_model* owner;
  et::KvCache cache;
};

namespace {

thread_local std::string last_error;

template <typename F>
int guarded(F&& body) {
  et::FlushDenormals flush;
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown error";
  }
  return -1;
}

void require(const void* pointer, const char* what) {
  if (!pointer) et::fail(what, " is null");
}

void check_count(const et::Param& p, size_t count) {
  if (count != p.count) {
    std::string shape;
    for (size_t i = 0; i < p.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(p.shape[i]);
    et::fail("tensor '", p.name, "' has shape [", shape, "] (", p.count, " values), got ", count, " values");
  }
}

// A CUDA model's host twin must be current before it is read, and the GPU told after it is written.
void host_current(et_model* m) {
  if (m->gpu) m->gpu->sync_to_host();
}
void host_written(et_model* m) {
  if (m->gpu) m->gpu->host_changed();
}

}  // namespace

#ifndef ET_WITH_CUDA
namespace et {
bool gpu_backend_built() { return false; }
std::unique_ptr<GpuBackend> make_gpu_backend(Model&, int) { fail("CUDA backend not built"); }
int gpu_device_count() { fail("CUDA backend not built"); }
}  // namespace et
#endif

extern "C" {

const char* et_last_error(void) { return last_error.c_str(); }

int et_set_num_threads(int32_t n) {
  return guarded([&] {
    if (n < 0) et::fail("thread count must be >= 0, got ", n);
    et::ThreadPool::global().resize(n == 0 ? static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) : n);
  });
}

int32_t et_get_num_threads(void) { return et::ThreadPool::global().size(); }
const char* et_cpu_kernels(void) { return et::kernels().name; }
const char* et_blas_info(void) { return et::blas_info(); }

et_model* et_model_create(const et_model_config* config) {
  et_model* out = nullptr;
  guarded([&] {
    require(config, "config");
    out = new et_model(*config);
  });
  return out;
}

et_model* et_model_create_on(const et_model_config* config, int32_t device) {
  et_model* out = nullptr;
  guarded([&] {
    require(config, "config");
    if (device < ET_DEVICE_CPU) et::fail("device must be ET_DEVICE_CPU (-1) or a CUDA ordinal >= 0, got ", device);
    if (device >= 0 && !et::gpu_backend_built()) et::fail("CUDA backend not built");
    auto model = std::make_unique<et_model>(*config);
    if (device >= 0) {
      model->gpu = et::make_gpu_backend(model->model, device);
      model->device = device;
    }
    out = model.release();
  });
  return out;
}

int32_t et_model_device(et_model* m) { return m ? m->device : ET_DEVICE_CPU; }

int32_t et_cuda_device_count(void) {
  int32_t count = -1;
  guarded([&] {
    if (!et::gpu_backend_built()) et::fail("CUDA backend not built");
    count = et::gpu_device_count();
  });
  return count;
}

void et_model_free(et_model* model) { delete model; }

int et_set_tensor(et_model* m, const char* name, const float* values, size_t count) {
  return guarded([&] {
    require(m, "model");
    require(name, "name");
    require(values, "values");
    et::Param& p = m->model.param(name);
    check_count(p, count);
    host_current(m);
    p.write(values);
    host_written(m);
  });
}

int et_get_tensor(et_model* m, const char* name, float* out, size_t count) {
  return guarded([&] {
    require(m, "model");
    require(name, "name");
    require(out, "out");
    et::Param& p = m->model.param(name);
    check_count(p, count);
    host_current(m);
    p.read(out, false);
  });
}

int et_get_grad(et_model* m, const char* name, float* out, size_t count) {
  return guarded([&] {
    require(m, "model");
    require(name, "name");
    require(out, "out");
    et::Param& p = m->model.param(name);
    check_count(p, count);
    if (!p.has_grad() || (p.is_adapter && !p.trainable))
      et::fail("tensor '", p.name, "' is not trainable in the current mode, so it has no gradient");
    host_current(m);
    p.read(out, true);
  });
}

int et_tensor_shape(et_model* m, const char* name, int64_t* shape, int32_t* ndim) {
  return guarded([&] {
    require(m, "model");
    require(name, "name");
    require(shape, "shape");
    require(ndim, "ndim");
    et::Param& p = m->model.param(name);
    *ndim = static_cast<int32_t>(p.shape.size());
    for (size_t i = 0; i < p.shape.size() && i < 4; ++i) shape[i] = p.shape[i];
  });
}

int64_t et_tensor_names(et_model* m, int32_t kind, char* buf, size_t buf_len) {
  int64_t needed = -1;
  guarded([&] {
    require(m, "model");
    if (kind < ET_TENSORS_BASE || kind > ET_TENSORS_TRAINABLE) et::fail("unknown tensor kind ", kind);
    std::string joined;
    for (const std::string& name : m->model.names(kind)) joined += (joined.empty() ? "" : "\n") + name;
    needed = static_cast<int64_t>(joined.size() + 1);
    if (buf && buf_len >= joined.size() + 1) std::memcpy(buf, joined.c_str(), joined.size() + 1);
  });
  return needed;
}

int et_attach_lora(et_model* m, const et_lora_config* config) {
  return guarded([&] {
    require(m, "model");
    require(config, "config");
    host_current(m);
    m->model.attach_lora(*config);
    host_written(m);
  });
}

int et_attach_adapter(et_model* m, const et_adapter_config* config) {
  return guarded([&] {
    require(m, "model");
    require(config, "config");
    host_current(m);
    m->model.attach_adapter(*config);
    host_written(m);
  });
}

int64_t et_routing_stats(et_model* m, double* out, size_t count) {
  int64_t needed = -1;
  guarded([&] {
    require(m, "model");
    const std::vector<double> peek = m->model.routing_stats(false);
    needed = static_cast<int64_t>(peek.size());
    if (out && count >= peek.size()) {
      std::copy(peek.begin(), peek.end(), out);
      m->model.routing_stats(true);
    }
  });
  return needed;
}

int et_set_train_mode(et_model* m, int32_t mode) {
  return guarded([&] {
    require(m, "model");
    host_current(m);
    m->model.set_train_mode(mode);
    host_written(m);
  });
}

int et_forward(et_model* m, const int32_t* ids, int32_t batch, int32_t seq_len, float* logits_out) {
  return guarded([&] {
    require(m, "model");
    require(ids, "ids");
    require(logits_out, "logits_out");
    if (m->gpu)
      m->gpu->forward_logits(ids, batch, seq_len, logits_out, false, nullptr);
    else
      m->model.forward_logits(ids, batch, seq_len, logits_out);
  });
}

int et_forward_collect(et_model* m, const int32_t* ids, int32_t batch, int32_t seq_len, const uint8_t* token_mask,
                       float* logits_out) {
  return guarded([&] {
    require(m, "model");
    require(ids, "ids");
    require(logits_out, "logits_out");
    if (m->gpu)
      m->gpu->forward_logits(ids, batch, seq_len, logits_out, true, token_mask);
    else
      m->model.forward_logits(ids, batch, seq_len, logits_out, true, token_mask);
  });
}

int et_forward_backward(et_model* m, const int32_t* ids, const int32_t* targets, int32_t batch, int32_t seq_len,
                        const et_step_options* options, et_step_stats* stats) {
  return guarded([&] {
    require(m, "model");
    require(ids, "ids");
    require(targets, "targets");
    require(options, "options");
    et_step_stats result = m->gpu ? m->gpu->forward_backward(ids, targets, batch, seq_len, *options)
                                  : m->model.forward_backward(ids, targets, batch, seq_len, *options);
    if (stats) *stats = result;
  });
}

int et_input_grad(et_model* m, float* out, size_t count) {
  return guarded([&] {
    require(m, "model");
    require(out, "out");
    const size_t have = static_cast<size_t>(m->model.input_grad_rows()) * m->model.config().hidden_size;
    if (have == 0) et::fail("no input gradient: call forward_backward with need_input_grad first");
    if (count != have) et::fail("input gradient has ", have, " values, got a buffer of ", count);
    std::memcpy(out, m->model.input_grad().data(), have * sizeof(float));
  });
}

int et_zero_grad(et_model* m) {
  return guarded([&] {
    require(m, "model");
    if (m->gpu)
      m->gpu->zero_grad();
    else
      m->model.zero_grad();
  });
}

int et_optimizer_step(et_model* m, const et_adamw* hyper, float* grad_norm_out) {
  return guarded([&] {
    require(m, "model");
    require(hyper, "hyperparameters");
    float norm = m->gpu ? m->gpu->optimizer_step(*hyper) : m->model.optimizer_step(*hyper);
    if (grad_norm_out) *grad_norm_out = norm;
  });
}

int64_t et_optimizer_steps(et_model* m) { return m ? m->model.optimizer_steps() : -1; }

int64_t et_optimizer_state_size(et_model* m) {
  int64_t out = -1;
  guarded([&] {
    require(m, "model");
    out = static_cast<int64_t>(m->model.optimizer_state_size());
  });
  return out;
}

int et_get_optimizer_state(et_model* m, float* adam_m, float* adam_v, size_t count) {
  return guarded([&] {
    require(m, "model");
    require(adam_m, "m");
    require(adam_v, "v");
    host_current(m);
    m->model.get_optimizer_state(adam_m, adam_v, count);
  });
}

int et_set_optimizer_state(et_model* m, const float* adam_m, const float* adam_v, size_t count, int64_t steps) {
  return guarded([&] {
    require(m, "model");
    require(adam_m, "m");
    require(adam_v, "v");
    host_current(m);
    m->model.set_optimizer_state(adam_m, adam_v, count, steps);
    host_written(m);
  });
}

et_session* et_session_create(et_model* m, int32_t max_length) {
  et_session* out = nullptr;
  guarded([&] {
    require(m, "model");
    host_current(m);  // sessions decode on the CPU twin
    auto session = new et_session{m, {}};
    try {
      m->model.session_reset(session->cache, max_length);
    } catch (...) {
      delete session;
      throw;
    }
    out = session;
  });
  return out;
}

void et_session_free(et_session* session) { delete session; }

int et_session_append(et_session* s, const int32_t* ids, int32_t n, float* logits_out) {
  return guarded([&] {
    require(s, "session");
    require(ids, "ids");
    require(logits_out, "logits_out");
    host_current(s->owner);
    s->owner->model.session_append(s->cache, ids, n, logits_out);
  });
}

int32_t et_session_length(et_session* s) { return s ? static_cast<int32_t>(s->cache.length) : -1; }

}  // extern "C"
