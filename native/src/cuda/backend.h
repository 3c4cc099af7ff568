// The CUDA backend as the C API sees it: plain C++, no CUDA headers, so capi.cpp compiles the
// same with or without a toolkit. A model on a GPU keeps its CPU twin (et::Model) as the
// registry of names, shapes and initial values, and as the home of everything the GPU path does
// not implement (KV-cache sessions): values move between the two only when one side is stale.
#pragma once

#include <memory>
#include <vector>

#include "../../include/expertune.h"

namespace et {

class Model;

class GpuBackend {
 public:
  virtual ~GpuBackend() = default;
  // The host twin's tensors changed (set_tensor, attach_adapter, set_train_mode): re-upload before
  // the next GPU call.
  virtual void host_changed() = 0;
  // Copies the GPU's newer values (trainables, gradients, optimizer moments, FlyLoRA biases) back
  // into the host twin, when the host is stale.
  virtual void sync_to_host() = 0;
  virtual et_step_stats forward_backward(const int32_t* ids, const int32_t* targets, long batch, long seq,
                                         const et_step_options& options) = 0;
  virtual void forward_logits(const int32_t* ids, long batch, long seq, float* logits, bool collect,
                              const uint8_t* token_mask) = 0;
  virtual float optimizer_step(const et_adamw& hyper) = 0;
  virtual void zero_grad() = 0;
  virtual const char* describe() const = 0;
};

// Whether this build has the CUDA backend (ET_WITH_CUDA), and the backend for host twin `model`
// on CUDA device `device` (fails when not built or the device does not exist).
bool gpu_backend_built();
std::unique_ptr<GpuBackend> make_gpu_backend(Model& model, int device);
int gpu_device_count();

}  // namespace et
