// The Node binding: a thin layer over the C API. Long calls (forward, backward, optimizer
// step, decoding) run on libuv's worker threads and return Promises, so a worker process keeps
// serving its event loop (progress, cancellation) while a step runs.
#include <napi.h>

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "expertune.h"

namespace {

[[noreturn]] void throw_last_error(Napi::Env env) { throw Napi::Error::New(env, et_last_error()); }

int32_t int_field(const Napi::Object& o, const char* key, int32_t fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Int32Value() : fallback;
}
double number_field(const Napi::Object& o, const char* key, double fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
}
bool bool_field(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : false;
}

std::vector<int32_t> int32_copy(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must be an Int32Array");
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}

std::vector<uint8_t> uint8_copy(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a Uint8Array");
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  return std::vector<uint8_t>(a.Data(), a.Data() + a.ElementLength());
}

// A per-layer list (an array of numbers), or empty when absent.
std::vector<int32_t> int_list_field(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  std::vector<int32_t> out;
  if (!v.IsArray()) return out;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(a.Get(i).As<Napi::Number>().Int32Value());
  return out;
}

Napi::Float32Array to_float32_array(Napi::Env env, const std::vector<float>& values) {
  Napi::Float32Array out = Napi::Float32Array::New(env, values.size());
  if (!values.empty()) std::memcpy(out.Data(), values.data(), values.size() * sizeof(float));
  return out;
}

// An async call on a model: runs `work` off the main thread, resolves with `result()`.
class ModelWork : public Napi::AsyncWorker {
 public:
  ModelWork(Napi::Env env, Napi::Object owner, std::atomic<bool>& busy)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), busy_(busy) {
    owner_ = Napi::Persistent(owner);  // keeps the model alive until the call ends
  }
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  virtual int work() = 0;
  virtual Napi::Value result(Napi::Env env) = 0;
  void Execute() override {
    if (work() != 0) SetError(et_last_error());
  }
  void OnOK() override {
    busy_ = false;
    deferred_.Resolve(result(Env()));
  }
  void OnError(const Napi::Error& e) override {
    busy_ = false;
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference owner_;
  std::atomic<bool>& busy_;
};

class NativeSession;

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {
                           InstanceMethod("setTensor", &NativeModel::SetTensor),
                           InstanceMethod("getTensor", &NativeModel::GetTensor),
                           InstanceMethod("getGrad", &NativeModel::GetGrad),
                           InstanceMethod("tensorShape", &NativeModel::TensorShape),
                           InstanceMethod("tensorNames", &NativeModel::TensorNames),
                           InstanceMethod("attachAdapter", &NativeModel::AttachAdapter),
                           InstanceMethod("routingStats", &NativeModel::RoutingStats),
                           InstanceMethod("setTrainMode", &NativeModel::SetTrainMode),
                           InstanceMethod("forward", &NativeModel::Forward),
                           InstanceMethod("forwardBackward", &NativeModel::ForwardBackward),
                           InstanceMethod("inputGrad", &NativeModel::InputGrad),
                           InstanceMethod("zeroGrad", &NativeModel::ZeroGrad),
                           InstanceMethod("optimizerStep", &NativeModel::OptimizerStep),
                           InstanceMethod("optimizerSteps", &NativeModel::OptimizerSteps),
                           InstanceMethod("getOptimizerState", &NativeModel::GetOptimizerState),
                           InstanceMethod("setOptimizerState", &NativeModel::SetOptimizerState),
                           InstanceMethod("sessionCreate", &NativeModel::SessionCreate),
                           InstanceMethod("sessionAppend", &NativeModel::SessionAppend),
                           InstanceMethod("sessionFree", &NativeModel::SessionFree),
                           InstanceMethod("dispose", &NativeModel::Dispose),
                       });
  }

  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "NativeModel needs a config object");
    Napi::Object o = info[0].As<Napi::Object>();
    et_model_config c{};
    c.vocab_size = int_field(o, "vocabSize", 0);
    c.hidden_size = int_field(o, "hiddenSize", 0);
    c.intermediate_size = int_field(o, "intermediateSize", 0);
    c.num_layers = int_field(o, "numLayers", 0);
    c.num_heads = int_field(o, "numHeads", 0);
    c.num_kv_heads = int_field(o, "numKvHeads", 0);
    c.head_dim = int_field(o, "headDim", 0);
    c.rms_norm_eps = static_cast<float>(number_field(o, "rmsNormEps", 1e-6));
    c.rope_theta = number_field(o, "ropeTheta", 10000.0);
    c.rope_scaling_type = int_field(o, "ropeScalingType", ET_ROPE_NONE);
    c.rope_factor = number_field(o, "ropeFactor", 1.0);
    c.rope_low_freq_factor = number_field(o, "ropeLowFreqFactor", 1.0);
    c.rope_high_freq_factor = number_field(o, "ropeHighFreqFactor", 4.0);
    c.rope_original_max_position = int_field(o, "ropeOriginalMaxPosition", 0);
    c.max_position_embeddings = int_field(o, "maxPositionEmbeddings", 2048);
    c.tie_word_embeddings = bool_field(o, "tieWordEmbeddings");
    c.qkv_bias = bool_field(o, "qkvBias");
    c.o_bias = bool_field(o, "oBias");
    c.mlp_bias = bool_field(o, "mlpBias");
    c.sliding_window = int_field(o, "slidingWindow", 0);
    // Optional second argument: the device (ET_DEVICE_CPU = -1, or a CUDA ordinal; docs/cuda.md).
    const int32_t device = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : ET_DEVICE_CPU;
    model_ = et_model_create_on(&c, device);
    if (!model_) throw_last_error(env);
    hidden_ = c.hidden_size;
    layers_ = c.num_layers;
    vocab_ = c.vocab_size;
  }

  ~NativeModel() override { Free(); }

 private:

  et_model* Live(Napi::Env env) {
    if (!model_) throw Napi::Error::New(env, "the model was disposed");
    if (busy_) throw Napi::Error::New(env, "the model is busy with an asynchronous call: await it first");
    return model_;
  }
  void Free() {
    for (et_session* s : sessions_) et_session_free(s);
    sessions_.clear();
    et_model_free(model_);
    model_ = nullptr;
  }
  std::string Name(const Napi::CallbackInfo& info) {
    if (!info[0].IsString()) throw Napi::TypeError::New(info.Env(), "tensor name must be a string");
    return info[0].As<Napi::String>().Utf8Value();
  }
  size_t Count(Napi::Env env, const std::string& name) {
    int64_t shape[4];
    int32_t nd = 0;
    if (et_tensor_shape(Live(env), name.c_str(), shape, &nd) != 0) throw_last_error(env);
    size_t n = 1;
    for (int i = 0; i < nd; ++i) n *= static_cast<size_t>(shape[i]);
    return n;
  }

  Napi::Value SetTensor(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = Name(info);
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw Napi::TypeError::New(env, "tensor values must be a Float32Array");
    Napi::Float32Array values = info[1].As<Napi::Float32Array>();
    if (et_set_tensor(Live(env), name.c_str(), values.Data(), values.ElementLength()) != 0) throw_last_error(env);
    return env.Undefined();
  }

  // A named tensor's values or gradient, copied into a new Float32Array.
  using TensorReader = int (*)(et_model*, const char*, float*, size_t);
  Napi::Value ReadTensor(const Napi::CallbackInfo& info, TensorReader read) {
    Napi::Env env = info.Env();
    std::string name = Name(info);
    std::vector<float> out(Count(env, name));
    if (read(Live(env), name.c_str(), out.data(), out.size()) != 0) throw_last_error(env);
    return to_float32_array(env, out);
  }
  Napi::Value GetTensor(const Napi::CallbackInfo& info) { return ReadTensor(info, et_get_tensor); }
  Napi::Value GetGrad(const Napi::CallbackInfo& info) { return ReadTensor(info, et_get_grad); }

  Napi::Value TensorShape(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = Name(info);
    int64_t shape[4];
    int32_t nd = 0;
    if (et_tensor_shape(Live(env), name.c_str(), shape, &nd) != 0) throw_last_error(env);
    Napi::Array out = Napi::Array::New(env, nd);
    for (int i = 0; i < nd; ++i) out.Set(i, Napi::Number::New(env, static_cast<double>(shape[i])));
    return out;
  }

  Napi::Value TensorNames(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int32_t kind = info[0].As<Napi::Number>().Int32Value();
    int64_t needed = et_tensor_names(Live(env), kind, nullptr, 0);
    if (needed < 0) throw_last_error(env);
    std::string buf(static_cast<size_t>(needed), '\0');
    et_tensor_names(model_, kind, buf.data(), buf.size());
    buf.resize(static_cast<size_t>(needed - 1));
    Napi::Array out = Napi::Array::New(env);
    size_t start = 0, index = 0;
    while (start < buf.size()) {
      size_t end = buf.find('\n', start);
      if (end == std::string::npos) end = buf.size();
      out.Set(index++, Napi::String::New(env, buf.substr(start, end - start)));
      start = end + 1;
    }
    return out;
  }

  Napi::Value AttachAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = info[0].As<Napi::Object>();
    et_adapter_config c{};
    c.method = int_field(o, "method", ET_METHOD_LORA);
    c.rank = int_field(o, "rank", 0);
    c.alpha = static_cast<float>(number_field(o, "alpha", 0));
    c.use_rslora = bool_field(o, "useRslora");
    c.dropout = static_cast<float>(number_field(o, "dropout", 0));
    c.target_mask = static_cast<uint32_t>(number_field(o, "targetMask", 0));
    c.seed = static_cast<uint32_t>(number_field(o, "seed", 0));
    std::vector<int32_t> experts = int_list_field(o, "numExperts"), top_k = int_list_field(o, "topK");
    if (!experts.empty() && experts.size() != static_cast<size_t>(layers_))
      throw Napi::RangeError::New(env, "numExperts needs one entry per layer (" + std::to_string(layers_) + ")");
    if (!top_k.empty() && top_k.size() != static_cast<size_t>(layers_))
      throw Napi::RangeError::New(env, "topK needs one entry per layer (" + std::to_string(layers_) + ")");
    c.num_experts = experts.empty() ? nullptr : experts.data();
    c.top_k = top_k.empty() ? nullptr : top_k.data();
    c.balance_coef = static_cast<float>(number_field(o, "balanceCoef", 0));
    c.balance_pooled = bool_field(o, "balancePooled");
    c.balance_global = bool_field(o, "balanceGlobal");
    c.z_loss_coef = static_cast<float>(number_field(o, "zLossCoef", 0));
    c.blc_alpha = static_cast<float>(number_field(o, "blcAlpha", 0));
    c.blc_weight = static_cast<float>(number_field(o, "blcWeight", 0));
    c.top_p = static_cast<float>(number_field(o, "topP", 0));
    c.keep_top_k = int_field(o, "keepTopK", 0);
    c.entropy_index = static_cast<float>(number_field(o, "entropyIndex", 0));
    c.entropy_threshold = static_cast<float>(number_field(o, "entropyThreshold", 0));
    c.entropy_eps = static_cast<float>(number_field(o, "entropyEps", 0));
    c.entropy_coef = static_cast<float>(number_field(o, "entropyCoef", 0));
    c.fly_top_k = int_field(o, "flyTopK", 0);
    c.fly_select_abs = bool_field(o, "flySelectAbs");
    c.fly_bias_rate = static_cast<float>(number_field(o, "flyBiasRate", 0));
    if (et_attach_adapter(Live(env), &c) != 0) throw_last_error(env);
    return env.Undefined();
  }

  Napi::Value RoutingStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int64_t needed = et_routing_stats(Live(env), nullptr, 0);
    if (needed < 0) throw_last_error(env);
    Napi::Float64Array out = Napi::Float64Array::New(env, static_cast<size_t>(needed));
    if (needed > 0 && et_routing_stats(model_, out.Data(), out.ElementLength()) < 0) throw_last_error(env);
    return out;
  }

  Napi::Value SetTrainMode(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (et_set_train_mode(Live(env), info[0].As<Napi::Number>().Int32Value()) != 0) throw_last_error(env);
    return env.Undefined();
  }

  struct Shape {
    int32_t batch, seq;
  };
  Shape BatchShape(const Napi::CallbackInfo& info, size_t at, size_t ids_count) {
    int32_t batch = info[at].As<Napi::Number>().Int32Value(), seq = info[at + 1].As<Napi::Number>().Int32Value();
    if (batch <= 0 || seq <= 0 || static_cast<size_t>(batch) * seq != ids_count)
      throw Napi::RangeError::New(info.Env(), "ids must hold batch x seqLen = " + std::to_string(batch) + " x " +
                                                  std::to_string(seq) + " values, got " + std::to_string(ids_count));
    return {batch, seq};
  }

  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct Work : ModelWork {
      et_model* model;
      std::vector<int32_t> ids;
      std::vector<uint8_t> mask;
      bool collect = false;
      int32_t batch, seq, vocab;
      std::vector<float> logits;
      using ModelWork::ModelWork;
      int work() override {
        logits.resize(static_cast<size_t>(batch) * seq * vocab);
        if (!collect) return et_forward(model, ids.data(), batch, seq, logits.data());
        return et_forward_collect(model, ids.data(), batch, seq, mask.empty() ? nullptr : mask.data(), logits.data());
      }
      Napi::Value result(Napi::Env e) override { return to_float32_array(e, logits); }
    };
    et_model* m = Live(env);
    auto ids = int32_copy(info[0], "ids");
    Shape s = BatchShape(info, 1, ids.size());
    Napi::Object o = info[3].IsObject() ? info[3].As<Napi::Object>() : Napi::Object::New(env);
    const bool collect = bool_field(o, "collectRouting");
    std::vector<uint8_t> mask;
    if (o.Get("tokenMask").IsTypedArray()) mask = uint8_copy(o.Get("tokenMask"), "tokenMask");
    if (!mask.empty() && mask.size() != ids.size())
      throw Napi::RangeError::New(env, "tokenMask must have as many values as ids");
    auto* w = new Work(env, info.This().As<Napi::Object>(), busy_);
    w->model = m;
    w->ids = std::move(ids);
    w->batch = s.batch;
    w->seq = s.seq;
    w->vocab = vocab_;
    w->collect = collect;
    w->mask = std::move(mask);
    return Queue(w);
  }

  Napi::Value ForwardBackward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct Work : ModelWork {
      et_model* model;
      std::vector<int32_t> ids, targets, task_types;
      std::vector<uint8_t> mask;
      int32_t batch, seq;
      et_step_options options{};
      et_step_stats stats{};
      using ModelWork::ModelWork;
      int work() override {
        options.token_mask = mask.empty() ? nullptr : mask.data();
        options.task_types = task_types.empty() ? nullptr : task_types.data();
        return et_forward_backward(model, ids.data(), targets.data(), batch, seq, &options, &stats);
      }
      Napi::Value result(Napi::Env e) override {
        Napi::Object o = Napi::Object::New(e);
        o.Set("lossSum", stats.loss_sum);
        o.Set("tokens", static_cast<double>(stats.tokens));
        o.Set("correct", static_cast<double>(stats.correct));
        Napi::Object aux = Napi::Object::New(e);
        aux.Set("balance", stats.aux_balance);
        aux.Set("zLoss", stats.aux_z);
        aux.Set("entropy", stats.aux_entropy);
        aux.Set("lbc", stats.aux_lbc);
        aux.Set("total", stats.aux_total);
        o.Set("aux", aux);
        o.Set("balanceStep", stats.balance_step);
        return o;
      }
    };
    et_model* m = Live(env);
    auto ids = int32_copy(info[0], "ids");
    auto targets = int32_copy(info[1], "targets");
    if (targets.size() != ids.size()) throw Napi::RangeError::New(env, "targets must have as many values as ids");
    Shape s = BatchShape(info, 2, ids.size());
    Napi::Object o = info[4].IsObject() ? info[4].As<Napi::Object>() : Napi::Object::New(env);
    std::vector<uint8_t> mask;
    std::vector<int32_t> task_types;
    if (o.Get("tokenMask").IsTypedArray()) mask = uint8_copy(o.Get("tokenMask"), "tokenMask");
    if (o.Get("taskTypes").IsTypedArray()) task_types = int32_copy(o.Get("taskTypes"), "taskTypes");
    if (!mask.empty() && mask.size() != ids.size())
      throw Napi::RangeError::New(env, "tokenMask must have as many values as ids");
    if (!task_types.empty() && task_types.size() != static_cast<size_t>(s.batch))
      throw Napi::RangeError::New(env, "taskTypes must have one value per row");
    auto* w = new Work(env, info.This().As<Napi::Object>(), busy_);
    w->model = m;
    w->ids = std::move(ids);
    w->targets = std::move(targets);
    w->batch = s.batch;
    w->seq = s.seq;
    w->options.loss_scale = static_cast<float>(number_field(o, "lossScale", 1.0));
    w->options.dropout_seed = static_cast<uint32_t>(number_field(o, "dropoutSeed", 0));
    w->options.need_input_grad = bool_field(o, "needInputGrad");
    w->options.recompute = bool_field(o, "recompute");
    w->options.aux_scale = static_cast<float>(number_field(o, "auxScale", 1.0));
    w->mask = std::move(mask);
    w->task_types = std::move(task_types);
    return Queue(w);
  }

  Napi::Value InputGrad(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    size_t count = static_cast<size_t>(info[0].As<Napi::Number>().Int64Value()) * hidden_;
    std::vector<float> out(count);
    if (et_input_grad(Live(env), out.data(), out.size()) != 0) throw_last_error(env);
    return to_float32_array(env, out);
  }

  Napi::Value ZeroGrad(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (et_zero_grad(Live(env)) != 0) throw_last_error(env);
    return env.Undefined();
  }

  Napi::Value OptimizerStep(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct Work : ModelWork {
      et_model* model;
      et_adamw hyper{};
      float norm = 0;
      using ModelWork::ModelWork;
      int work() override { return et_optimizer_step(model, &hyper, &norm); }
      Napi::Value result(Napi::Env e) override { return Napi::Number::New(e, norm); }
    };
    et_model* m = Live(env);
    Napi::Object o = info[0].As<Napi::Object>();
    auto* w = new Work(env, info.This().As<Napi::Object>(), busy_);
    w->model = m;
    w->hyper.lr = static_cast<float>(number_field(o, "lr", 0));
    w->hyper.beta1 = static_cast<float>(number_field(o, "beta1", 0.9));
    w->hyper.beta2 = static_cast<float>(number_field(o, "beta2", 0.999));
    w->hyper.eps = static_cast<float>(number_field(o, "eps", 1e-8));
    w->hyper.weight_decay = static_cast<float>(number_field(o, "weightDecay", 0));
    w->hyper.max_grad_norm = static_cast<float>(number_field(o, "maxGradNorm", 0));
    return Queue(w);
  }

  Napi::Value OptimizerSteps(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(et_optimizer_steps(Live(info.Env()))));
  }

  // AdamW moments of the trainable tensors in the core's order (see et_get_optimizer_state).
  Napi::Value GetOptimizerState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    et_model* m = Live(env);
    int64_t size = et_optimizer_state_size(m);
    if (size < 0) throw_last_error(env);
    std::vector<float> mv(static_cast<size_t>(size)), vv(static_cast<size_t>(size));
    if (et_get_optimizer_state(m, mv.data(), vv.data(), mv.size()) != 0) throw_last_error(env);
    Napi::Object out = Napi::Object::New(env);
    out.Set("steps", Napi::Number::New(env, static_cast<double>(et_optimizer_steps(m))));
    out.Set("m", to_float32_array(env, mv));
    out.Set("v", to_float32_array(env, vv));
    return out;
  }

  Napi::Value SetOptimizerState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    for (int i = 1; i <= 2; ++i)
      if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        throw Napi::TypeError::New(env, "optimizer moments must be Float32Arrays");
    Napi::Float32Array mv = info[1].As<Napi::Float32Array>(), vv = info[2].As<Napi::Float32Array>();
    if (mv.ElementLength() != vv.ElementLength())
      throw Napi::RangeError::New(env, "optimizer moments m and v differ in length");
    const int64_t steps = info[0].As<Napi::Number>().Int64Value();
    if (et_set_optimizer_state(Live(env), mv.Data(), vv.Data(), mv.ElementLength(), steps) != 0) throw_last_error(env);
    return env.Undefined();
  }

  // Sessions are plain handles (indices) owned by the model, freed with it.
  Napi::Value SessionCreate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    et_session* s = et_session_create(Live(env), info[0].As<Napi::Number>().Int32Value());
    if (!s) throw_last_error(env);
    sessions_.push_back(s);
    return Napi::Number::New(env, static_cast<double>(sessions_.size() - 1));
  }

  et_session* Session(const Napi::CallbackInfo& info) {
    size_t index = static_cast<size_t>(info[0].As<Napi::Number>().Int64Value());
    if (index >= sessions_.size() || !sessions_[index]) throw Napi::Error::New(info.Env(), "the session was disposed");
    return sessions_[index];
  }

  Napi::Value SessionAppend(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    struct Work : ModelWork {
      et_session* session;
      std::vector<int32_t> ids;
      std::vector<float> logits;
      using ModelWork::ModelWork;
      int work() override { return et_session_append(session, ids.data(), static_cast<int32_t>(ids.size()), logits.data()); }
      Napi::Value result(Napi::Env e) override { return to_float32_array(e, logits); }
    };
    Live(env);
    et_session* s = Session(info);
    auto* w = new Work(env, info.This().As<Napi::Object>(), busy_);
    w->session = s;
    w->ids = int32_copy(info[1], "ids");
    w->logits.resize(vocab_);
    return Queue(w);
  }

  Napi::Value SessionFree(const Napi::CallbackInfo& info) {
    Live(info.Env());
    et_session* s = Session(info);
    et_session_free(s);
    sessions_[static_cast<size_t>(info[0].As<Napi::Number>().Int64Value())] = nullptr;
    return info.Env().Undefined();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (busy_) throw Napi::Error::New(info.Env(), "the model is busy with an asynchronous call: await it first");
    Free();
    return info.Env().Undefined();
  }

  Napi::Value Queue(ModelWork* w) {
    busy_ = true;
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  et_model* model_ = nullptr;
  std::vector<et_session*> sessions_;
  std::atomic<bool> busy_{false};
  int32_t hidden_ = 0, vocab_ = 0, layers_ = 0;
};

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  if (et_set_num_threads(info[0].As<Napi::Number>().Int32Value()) != 0) throw_last_error(info.Env());
  return info.Env().Undefined();
}
Napi::Value GetNumThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), et_get_num_threads()); }
Napi::Value CpuKernels(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), et_cpu_kernels()); }
Napi::Value BlasInfo(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), et_blas_info()); }

// Visible CUDA devices; throws "CUDA backend not built" in a CPU-only build.
Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info) {
  const int32_t count = et_cuda_device_count();
  if (count < 0) throw Napi::Error::New(info.Env(), et_last_error());
  return Napi::Number::New(info.Env(), count);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeModel", NativeModel::Define(env));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("getNumThreads", Napi::Function::New(env, GetNumThreads));
  exports.Set("cpuKernels", Napi::Function::New(env, CpuKernels));
  exports.Set("blasInfo", Napi::Function::New(env, BlasInfo));
  exports.Set("cudaDeviceCount", Napi::Function::New(env, CudaDeviceCount));
  return exports;
}

}  // namespace

NODE_API_MODULE(expertune, Init)
