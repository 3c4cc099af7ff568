// The CUDA kernels against their CPU twins, and the whole training step CUDA vs CPU.
// Every case draws fresh random inputs, poisons every output buffer with NaN before the kernel
// runs (a kernel that skips an element is caught), synchronises and checks the status after each
// launch, and compares with relative L2 error: bf16 storage 1e-3…1e-2, fp32 paths far below 1e-3.
// Without a CUDA device the binary reports that and exits 77 (CTest: skipped).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../include/expertune.h"
#include "../src/adapter.h"
#include "../src/attention.h"
#include "../src/blas.h"
#include "../src/cuda/check.h"
#include "../src/cuda/gemm.h"
#include "../src/cuda/kernels.h"
#include "../src/kernels/kernels.h"
#include "../src/methods/methods.h"
#include "../src/rng.h"
#include "../src/rope.h"
#include "check.h"
#include "fixtures.h"

namespace {

using et::cuda::bf16;

constexpr double kF32 = 2e-5;   // fp32 everywhere (differences: summation order, __expf)
constexpr double kBF16 = 1e-2;  // one bf16 rounding of an operand or a result

std::mt19937& rng() {
  static std::mt19937 gen(20261123);
  return gen;
}

std::vector<float> random_vector(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng());
  return v;
}

// Device memory for a test: upload, NaN poisoning (all bits set is NaN in fp32 and bf16), download.
template <typename T>
struct Dev {
  T* ptr = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) { ET_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr), std::max<size_t>(1, n) * sizeof(T))); poison(); }
  explicit Dev(const std::vector<T>& host) : Dev(host.size()) { upload(host); }
  ~Dev() { cudaFree(ptr); }
  Dev(const Dev&) = delete;
  void upload(const std::vector<T>& host) {
    ET_CUDA_CHECK(cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  void poison() { ET_CUDA_CHECK(cudaMemset(ptr, 0xff, n * sizeof(T))); }
  std::vector<T> get() const {
    std::vector<T> out(n);
    ET_CUDA_CHECK(cudaMemcpy(out.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return out;
  }
  operator T*() { return ptr; }
};

std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16(v[i]);
  return out;
}
std::vector<float> to_f32(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}
// Values a bf16 tensor can hold exactly, so CPU and GPU start from the same inputs.
std::vector<float> bf16_exact(std::vector<float> v) { return to_f32(to_bf16(v)); }

void sync() {
  ET_CUDA_CHECK(cudaGetLastError());
  ET_CUDA_CHECK(cudaDeviceSynchronize());
}

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

const et::Kernels& cpu() { return et::kernels(); }

// ---------------------------------------------------------------------------------------------

TEST_CASE("gemm matches the CPU sgemm (fp32 and bf16 operands, every transpose)") {
  for (auto [M, N, K] : {std::tuple<long, long, long>{33, 47, 65}, {128, 64, 256}, {5, 300, 17}})
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (int bf = 0; bf < 2; ++bf) {
          const long lda = ta ? M : K, ldb = tb ? K : N;
          auto A = bf16_exact(random_vector(M * K)), B = bf16_exact(random_vector(K * N)), C = random_vector(M * N);
          std::vector<float> ref = C;
          et::gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 1.0f, ref.data(), N);
          Dev<float> c(C);
          if (bf) {
            Dev<bf16> a(to_bf16(A)), b(to_bf16(B));
            et::cuda::gemm(nullptr, ta, tb, M, N, K, 0.5f, a, lda, b, ldb, et::cuda::DType::BF16, 1.0f, c, N,
                           et::cuda::DType::F32);
          } else {
            Dev<float> a(A), b(B);
            et::cuda::gemm(nullptr, ta, tb, M, N, K, 0.5f, a, lda, b, ldb, et::cuda::DType::F32, 1.0f, c, N,
                           et::cuda::DType::F32);
          }
          sync();
          // fp32 operands may run as TF32 in cuBLASLt's heuristics only if asked; we never ask.
          CHECK_REL_L2(c.get(), ref, ref.size(), 1e-4);
        }
}

TEST_CASE("rmsnorm forward (fp32 and bf16 out) and backward match the CPU kernels") {
  for (auto [rows, d] : {std::pair<long, long>{7, 64}, {64, 1000}, {3, 4096}}) {
    auto x = random_vector(rows * d, 2.0f), w = random_vector(d), dy = random_vector(rows * d);
    std::vector<float> y(rows * d), rstd(rows), dx(rows * d, 0.0f), dw(d, 0.0f);
    cpu().rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, d, 1e-5f);
    cpu().rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), rows, d, false);
    Dev<float> gx(x), gw(w), gy(rows * d), grstd(rows), gdy(dy), gdx(rows * d), gdw(std::vector<float>(d, 0.0f));
    Dev<bf16> gy16(rows * d);
    et::cuda::rmsnorm_forward(nullptr, gx, d, gw, gy, d, grstd, rows, d, 1e-5f);
    sync();
    CHECK_REL_L2(gy.get(), y, y.size(), kF32);
    CHECK_REL_L2(grstd.get(), rstd, rows, kF32);
    et::cuda::rmsnorm_forward(nullptr, gx, d, gw, gy16, d, grstd, rows, d, 1e-5f);
    sync();
    CHECK_REL_L2(to_f32(gy16.get()), y, y.size(), kBF16);
    et::cuda::rmsnorm_backward(nullptr, gdy, d, gx, d, gw, grstd, gdx, d, gdw, rows, d, false);
    sync();
    CHECK_REL_L2(gdx.get(), dx, dx.size(), kF32);
    CHECK_REL_L2(gdw.get(), dw, dw.size(), 1e-4);  // atomics: another summation order
  }
}

TEST_CASE("rope forward and inverse match the CPU (no scaling, linear, llama3)") {
  for (int type : {ET_ROPE_NONE, ET_ROPE_LINEAR, ET_ROPE_LLAMA3}) {
    et_model_config c = fixtures::llama_config(32, 64, 128, 1, 4, 2, 16);
    c.rope_scaling_type = type;
    c.rope_factor = 8.0;
    c.rope_low_freq_factor = 1.0;
    c.rope_high_freq_factor = 4.0;
    c.rope_original_max_position = 32;
    c.rope_theta = type == ET_ROPE_LLAMA3 ? 500000.0 : 10000.0;
    const long seq = 37, rows = 2 * seq, hd = c.head_dim, heads = 6, ld = heads * hd + 3;
    et::RopeTables tables(c);
    tables.ensure(seq);
    std::vector<float> cos(tables.cos(0), tables.cos(0) + seq * hd / 2), sin(tables.sin(0), tables.sin(0) + seq * hd / 2);
    for (float sign : {1.0f, -1.0f}) {
      auto x = random_vector(rows * ld);
      std::vector<float> ref = x;
      for (long t = 0; t < rows; ++t) cpu().rope(ref.data() + t * ld + 2, heads - 1, hd, tables.cos(t % seq), tables.sin(t % seq), sign);
      Dev<float> gx(x), gc(cos), gs(sin);
      et::cuda::rope(nullptr, gx, ld, 2, rows, seq, 0, heads - 1, hd, gc, gs, sign);
      sync();
      CHECK_REL_L2(gx.get(), ref, ref.size(), kF32);
    }
  }
}

struct AttentionCase {
  long batch, seq, heads, kv_heads, hd, window;
};

TEST_CASE("attention forward and backward (GQA, sliding window) match the CPU, CUDA cores and tensor cores") {
  for (const AttentionCase& ac : {AttentionCase{1, 17, 2, 1, 16, 0}, AttentionCase{2, 64, 4, 2, 32, 0},
                                  AttentionCase{2, 100, 8, 2, 64, 24}, AttentionCase{1, 70, 4, 4, 128, 0},
                                  AttentionCase{1, 33, 2, 1, 80, 5}, AttentionCase{2, 200, 4, 1, 128, 0},
                                  AttentionCase{1, 130, 4, 2, 64, 40}}) {
    const long N = ac.batch * ac.seq, qd = ac.heads * ac.hd, kvd = ac.kv_heads * ac.hd, ld = qd + 2 * kvd;
    const et::AttentionShape shape{ac.heads, ac.kv_heads, ac.hd, ac.window, 1.0f / std::sqrt(float(ac.hd))};
    auto qkv = random_vector(N * ld), dout = random_vector(N * qd);
    std::vector<float> out(N * qd), lse(ac.batch * ac.heads * ac.seq), dqkv(N * ld, 0.0f);
    const et::AttentionBatch in{ac.batch, ac.seq, 0, ac.seq, qkv.data(), ld, qkv.data() + qd, qkv.data() + qd + kvd, ld};
    et::attention_forward(shape, in, out.data(), qd, lse.data());
    et::attention_backward(shape, in, out.data(), qd, dout.data(), qd, lse.data(), dqkv.data(), ld, dqkv.data() + qd,
                           dqkv.data() + qd + kvd, ld);

    const et::cuda::AttentionDims dims{ac.batch, ac.heads, ac.kv_heads, ac.hd, ac.seq, 0, ac.seq, ac.window, shape.scale};
    for (auto impl : {et::cuda::AttentionImpl::Simt, et::cuda::AttentionImpl::TensorCore}) {
      const bool tensor = impl == et::cuda::AttentionImpl::TensorCore;
      if (tensor && !et::cuda::tensor_core_attention_supports(dims)) continue;
      et::cuda::set_attention_impl(impl);
      // CUDA cores compute on the fp32 inputs; tensor cores round q, k, v, dout (and P, dS) to bf16.
      const double tol_out = tensor ? kBF16 : kF32, tol_grad = tensor ? 2e-2 : 1e-4;
      Dev<float> g_qkv(qkv), g_out(N * qd), g_lse(lse.size()), g_dout(dout), g_delta(lse.size()), g_dqkv(N * ld);
      Dev<bf16> g_out16(N * qd);
      et::cuda::attention_forward(nullptr, dims, g_qkv, ld, g_qkv + qd, g_qkv + qd + kvd, ld, g_out.ptr, qd, g_lse);
      sync();
      CHECK_REL_L2(g_out.get(), out, out.size(), tol_out);
      CHECK_REL_L2(g_lse.get(), lse, lse.size(), tol_out);
      et::cuda::attention_forward(nullptr, dims, g_qkv, ld, g_qkv + qd, g_qkv + qd + kvd, ld, g_out16.ptr, qd, nullptr);
      sync();
      CHECK_REL_L2(to_f32(g_out16.get()), out, out.size(), kBF16);
      // The backward reads the CPU's output and logsumexp, so only the backward itself is compared.
      g_out.upload(out);
      g_lse.upload(lse);
      et::cuda::attention_backward(nullptr, dims, g_qkv, ld, g_qkv + qd, g_qkv + qd + kvd, ld,
                                   static_cast<const float*>(g_out.ptr), qd, g_dout, qd, g_lse, g_delta, g_dqkv, ld,
                                   g_dqkv + qd, g_dqkv + qd + kvd, ld);
      sync();
      CHECK_REL_L2(g_dqkv.get(), dqkv, dqkv.size(), tol_grad);
    }
    et::cuda::set_attention_impl(et::cuda::AttentionImpl::Simt);
  }
}

TEST_CASE("swiglu forward and backward match the CPU") {
  for (auto [rows, F] : {std::pair<long, long>{5, 33}, {64, 1408}}) {
    auto gu = random_vector(rows * 2 * F, 2.0f), dact = random_vector(rows * F);
    std::vector<float> act(rows * F), dgu(rows * 2 * F);
    for (long t = 0; t < rows; ++t) {
      cpu().swiglu_forward(gu.data() + t * 2 * F, gu.data() + t * 2 * F + F, act.data() + t * F, F);
      cpu().swiglu_backward(gu.data() + t * 2 * F, gu.data() + t * 2 * F + F, dact.data() + t * F, dgu.data() + t * 2 * F,
                            dgu.data() + t * 2 * F + F, F);
    }
    Dev<float> g_gu(gu), g_act(rows * F), g_dact(dact), g_dgu(rows * 2 * F);
    Dev<bf16> g_act16(rows * F);
    et::cuda::swiglu_forward(nullptr, g_gu, 2 * F, g_act.ptr, F, rows, F);
    et::cuda::swiglu_forward(nullptr, g_gu, 2 * F, g_act16.ptr, F, rows, F);
    et::cuda::swiglu_backward(nullptr, g_gu, 2 * F, g_dact, F, g_dgu, 2 * F, rows, F);
    sync();
    CHECK_REL_L2(g_act.get(), act, act.size(), kF32);
    CHECK_REL_L2(to_f32(g_act16.get()), act, act.size(), kBF16);
    CHECK_REL_L2(g_dgu.get(), dgu, dgu.size(), kF32);
  }
}

TEST_CASE("cross-entropy: loss, argmax and dlogits match the CPU, masked rows give zeros") {
  for (auto [rows, V] : {std::pair<long, long>{9, 50}, {33, 32000}, {4, 1000}}) {
    auto logits = random_vector(rows * V, 3.0f);
    std::vector<int32_t> targets(rows);
    for (long t = 0; t < rows; ++t) targets[t] = t % 4 == 3 ? -1 : static_cast<int32_t>(rng()() % V);
    std::vector<float> dl = logits, loss(rows, 0.0f);
    std::vector<int32_t> arg(rows, -1);
    for (long t = 0; t < rows; ++t) {
      if (targets[t] < 0) {
        std::fill(dl.begin() + t * V, dl.begin() + (t + 1) * V, 0.0f);
        continue;
      }
      long a = 0;
      loss[t] = cpu().cross_entropy(dl.data() + t * V, V, targets[t], 0.25f, &a);
      arg[t] = static_cast<int32_t>(a);
    }
    Dev<float> g_logits(logits), g_dl(rows * V), g_loss(rows);
    Dev<int32_t> g_targets(targets), g_arg(rows);
    Dev<bf16> g_dl16(rows * V);
    et::cuda::cross_entropy(nullptr, g_logits, V, g_targets, rows, V, 0.25f, g_dl.ptr, V, g_loss, g_arg);
    sync();
    CHECK_REL_L2(g_dl.get(), dl, dl.size(), kF32);
    CHECK_REL_L2(g_loss.get(), loss, rows, kF32);
    CHECK(g_arg.get() == arg);
    et::cuda::cross_entropy(nullptr, g_logits, V, g_targets, rows, V, 0.25f, g_dl16.ptr, V, g_loss, nullptr);
    sync();
    CHECK_REL_L2(to_f32(g_dl16.get()), dl, dl.size(), kBF16);
  }
}

TEST_CASE("gated low-rank: gate forward and backward, and dropout, match the adapter's math") {
  for (auto [rows, E, r] : {std::tuple<long, long, long>{7, 1, 16}, {64, 8, 8}, {33, 4, 40}}) {
    const long width = E * r, ldh = width + 5, ldm = width + 3;
    auto h = random_vector(rows * ldh), gate = random_vector(rows * E), dm = random_vector(rows * ldm);
    std::vector<float> m(rows * ldm, 0.0f), dh(rows * ldh, 0.0f), dg(rows * E);
    for (long t = 0; t < rows; ++t)
      for (long e = 0; e < E; ++e) {
        double sum = 0.0;
        for (long j = 0; j < r; ++j) {
          const long c = e * r + j;
          m[t * ldm + c] = gate[t * E + e] * h[t * ldh + c];
          dh[t * ldh + c] = dm[t * ldm + c] * gate[t * E + e];
          sum += double(dm[t * ldm + c]) * h[t * ldh + c];
        }
        dg[t * E + e] = static_cast<float>(sum);
      }
    Dev<float> g_h(h), g_gate(gate), g_m(std::vector<float>(rows * ldm, 0.0f)), g_dm(dm),
        g_dh(std::vector<float>(rows * ldh, 0.0f)), g_dg(rows * E);
    et::cuda::gate_forward(nullptr, g_h, ldh, g_gate, E, r, g_m.ptr, ldm, rows);
    et::cuda::gate_backward(nullptr, g_dm, ldm, g_h, ldh, g_gate, E, r, g_dh, ldh, g_dg, rows);
    sync();
    CHECK_REL_L2(g_m.get(), m, m.size(), kF32);
    CHECK_REL_L2(g_dh.get(), dh, dh.size(), kF32);
    CHECK_REL_L2(g_dg.get(), dg, dg.size(), kF32);
  }
  for (float p : {0.1f, 0.5f}) {
    const long rows = 37, cols = 300;
    auto x = random_vector(rows * cols), acc = random_vector(rows * cols);
    std::vector<float> out = acc;
    const uint32_t threshold = et::dropout_threshold(p);
    cpu().dropout(x.data(), cols, out.data(), cols, rows, cols, 0, 1234u, 17u, threshold, 1.0f / (1.0f - p), true);
    Dev<float> g_x(x), g_out(acc);
    et::cuda::dropout(nullptr, g_x, cols, g_out, cols, rows, cols, 1234u, 17u, threshold, 1.0f / (1.0f - p), true);
    sync();
    CHECK_REL_L2(g_out.get(), out, out.size(), 1e-6);  // exact but for a possible fused multiply-add
  }
}

TEST_CASE("routers: softmax and gates of MoLA, LoRAMoE, DynMoLE, and their backward, match methods/*.cpp") {
  for (int kind : {et::cuda::ROUTER_MOLA, et::cuda::ROUTER_LORAMOE, et::cuda::ROUTER_DYNMOLE})
    for (long E : {2L, 8L, 13L}) {
      const long rows = 97, ldz = E + 4;
      et::cuda::RouterSettings rs{kind, E, std::min(2L, E), 0.75f, 1.5f, 1e-6f, 0.9f, 1};
      auto z = random_vector(rows * ldz, 2.0f), dgate = random_vector(rows * E), aux = random_vector(rows * E, 0.1f);
      auto zf = random_vector(rows, 0.01f);
      std::vector<float> prob(rows * E), gate(rows * E), lse(rows), dz(rows * ldz, 0.0f);
      std::vector<uint8_t> sel(rows * E), bc(rows);
      for (long t = 0; t < rows; ++t) {
        float* p = prob.data() + t * E;
        std::memcpy(p, z.data() + t * ldz, E * sizeof(float));
        lse[t] = cpu().softmax(p, E);
        bc[t] = 0;
        if (kind == et::cuda::ROUTER_MOLA) et::mola_gates(p, E, rs.top_k, gate.data() + t * E, sel.data() + t * E);
        if (kind == et::cuda::ROUTER_LORAMOE) et::loramoe_gates(p, E, gate.data() + t * E, sel.data() + t * E);
        if (kind == et::cuda::ROUTER_DYNMOLE)
          bc[t] = et::dynmole_gates(p, E, rs.entropy_index, rs.entropy_eps, rs.entropy_threshold, rs.top_p, rs.keep_top_k,
                                    gate.data() + t * E, sel.data() + t * E);
        std::vector<float> dp(aux.begin() + t * E, aux.begin() + (t + 1) * E);
        if (kind == et::cuda::ROUTER_MOLA)
          et::mola_gates_backward(p, gate.data() + t * E, sel.data() + t * E, dgate.data() + t * E, E, dp.data());
        else
          for (long e = 0; e < E; ++e) dp[e] += sel[t * E + e] ? dgate[t * E + e] : 0.0f;
        float delta = 0.0f;
        for (long e = 0; e < E; ++e) delta += p[e] * dp[e];
        for (long e = 0; e < E; ++e) dz[t * ldz + e] = p[e] * (dp[e] - delta) + zf[t] * p[e];
      }
      Dev<float> g_z(z), g_prob(rows * E), g_gate(rows * E), g_lse(rows), g_dgate(dgate), g_aux(aux), g_zf(zf),
          g_dz(std::vector<float>(rows * ldz, 0.0f));
      Dev<uint8_t> g_sel(rows * E), g_bc(rows);
      et::cuda::router_forward(nullptr, rs, g_z, ldz, g_prob, g_gate, g_sel, g_lse, g_bc, rows);
      sync();
      CHECK_REL_L2(g_prob.get(), prob, prob.size(), kF32);
      CHECK_REL_L2(g_lse.get(), lse, lse.size(), kF32);
      CHECK(g_sel.get() == sel);
      CHECK(g_bc.get() == bc);
      CHECK_REL_L2(g_gate.get(), gate, gate.size(), kF32);
      // The backward from the CPU's own routing, so a near-tie cannot flip a selection between them.
      g_prob.upload(prob);
      g_gate.upload(gate);
      g_sel.upload(sel);
      et::cuda::router_backward(nullptr, rs, g_prob, g_gate, g_sel, g_dgate, g_aux, g_zf, g_dz, ldz, rows);
      sync();
      CHECK_REL_L2(g_dz.get(), dz, dz.size(), kF32);
      std::vector<double> ent(rows);
      for (long t = 0; t < rows; ++t) ent[t] = et::tsallis_normalized(prob.data() + t * E, E, 1.5f, 1e-6f);
      Dev<double> g_ent(rows);
      et::cuda::tsallis_rows(nullptr, g_prob, E, 1.5f, 1e-6f, g_ent, rows);
      sync();
      CHECK_REL_L2(g_ent.get(), ent, rows, 1e-6);
    }
}

TEST_CASE("FlyLoRA: sparse A forward and backward match the dense product, gates match flylora_gates") {
  for (auto [rows, in, r, k] : {std::tuple<long, long, long, long>{9, 64, 8, 2}, {40, 512, 32, 8}}) {
    et::SparseRows a;
    et::flylora_init_a(a, 7u, 3u, r, k, in);
    std::vector<float> dense(r * in);
    a.expand(dense.data(), in);
    auto x = bf16_exact(random_vector(rows * in)), dh = random_vector(rows * r), dx0 = random_vector(rows * in);
    std::vector<float> h(rows * r, 0.0f), dx = dx0;
    et::gemm(false, true, rows, r, in, 1.0f, x.data(), in, dense.data(), in, 0.0f, h.data(), r);
    et::gemm(false, false, rows, in, r, 1.0f, dh.data(), r, dense.data(), in, 1.0f, dx.data(), in);
    std::vector<float> values(a.value.data(), a.value.data() + a.value.size());
    Dev<int32_t> g_col(a.column);
    Dev<float> g_val(values), g_h(rows * r), g_dh(dh), g_dx(dx0);
    Dev<bf16> g_x(to_bf16(x));
    et::cuda::sparse_a_forward(nullptr, g_x.ptr, in, g_col, g_val, r, a.per_row, g_h, r, rows);
    et::cuda::sparse_a_backward(nullptr, g_dh, r, g_col, g_val, r, a.per_row, g_dx, in, rows);
    sync();
    CHECK_REL_L2(g_h.get(), h, h.size(), kF32);
    CHECK_REL_L2(g_dx.get(), dx, dx.size(), kF32);
    auto bias = random_vector(r, 0.1f);
    for (bool magnitude : {false, true}) {
      std::vector<float> gate(rows * r);
      std::vector<uint8_t> sel(rows * r);
      for (long t = 0; t < rows; ++t) et::flylora_gates(h.data() + t * r, bias.data(), r, k, magnitude, gate.data() + t * r, sel.data() + t * r);
      Dev<float> g_bias(bias), g_gate(rows * r), g_hh(h);
      Dev<uint8_t> g_sel(rows * r);
      et::cuda::flylora_gates(nullptr, g_hh, r, g_bias, r, k, magnitude, g_gate, g_sel, rows);
      sync();
      CHECK(g_sel.get() == sel);
      CHECK(g_gate.get() == gate);
    }
  }
}

TEST_CASE("gradient norm and fused AdamW over several segments match the CPU kernels") {
  const std::vector<long> counts = {1, 4095, 4096, 10000, 33};
  std::vector<std::vector<float>> value, grad, m, v;
  double sum = 0.0;
  for (long n : counts) {
    value.push_back(random_vector(n));
    grad.push_back(random_vector(n, 0.1f));
    m.push_back(random_vector(n, 0.01f));
    std::vector<float> vv = random_vector(n, 0.01f);
    for (float& x : vv) x = x * x;
    v.push_back(vv);
    sum += cpu().sum_squares(grad.back().data(), n);
  }
  std::vector<std::unique_ptr<Dev<float>>> dv;
  std::vector<et::cuda::TrainableSegment> segments;
  std::vector<long> starts;
  long blocks = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    for (auto* src : {&value[i], &grad[i], &m[i], &v[i]}) dv.push_back(std::make_unique<Dev<float>>(*src));
    const size_t b = dv.size() - 4;
    segments.push_back({*dv[b], *dv[b + 1], *dv[b + 2], *dv[b + 3], counts[i], i % 2 ? 0.1f : 0.0f});
    starts.push_back(blocks);
    blocks += (counts[i] + et::cuda::kOptimizerBlock - 1) / et::cuda::kOptimizerBlock;
  }
  Dev<et::cuda::TrainableSegment> g_segments(segments);
  Dev<long> g_starts(starts);
  Dev<double> partials(et::cuda::grad_norm_partials(blocks));
  const double gpu_sum = et::cuda::grad_sum_squares(nullptr, g_segments, g_starts, long(counts.size()), blocks, partials);
  CHECK_NEAR(gpu_sum, sum, 1e-5 * sum);
  const et::cuda::AdamWStep step{1e-3f, 0.9f, 0.999f, 1e-8f, 1.0f - 0.9f * 0.9f, std::sqrt(1.0f - 0.999f * 0.999f), 0.5f};
  et::cuda::adamw(nullptr, g_segments, g_starts, long(counts.size()), blocks, step);
  sync();
  for (size_t i = 0; i < counts.size(); ++i) {
    et::AdamWScalars s{step.lr, step.beta1, step.beta2, step.eps, segments[i].weight_decay, step.bias_correction1,
                       step.bias_correction2_sqrt, step.grad_scale};
    cpu().adamw(value[i].data(), grad[i].data(), m[i].data(), v[i].data(), counts[i], s);
    CHECK_REL_L2(dv[4 * i]->get(), value[i], counts[i], 1e-6);
    CHECK_REL_L2(dv[4 * i + 2]->get(), m[i], counts[i], 1e-6);
    CHECK_REL_L2(dv[4 * i + 3]->get(), v[i], counts[i], 1e-6);
    const std::vector<float> zeros(counts[i], 0.0f);
    CHECK(dv[4 * i + 1]->get() == zeros);
  }
}

// ---------------------------------------------------------------------------------------------
// The whole training step: the same tiny model on the CPU and on the GPU, 20 optimizer steps.

void set_random_weights(et_model* a, et_model* b, uint32_t seed) {
  std::mt19937 gen(seed);
  for (const std::string& name : fixtures::tensor_names(a, ET_TENSORS_BASE)) {
    const size_t n = fixtures::tensor_size(a, name);
    std::normal_distribution<float> dist(name.find("norm") != std::string::npos ? 1.0f : 0.0f, 0.08f);
    std::vector<float> v(n);
    for (float& x : v) x = __bfloat162float(__float2bfloat16(dist(gen)));  // bf16-exact: both start equal
    CHECK(et_set_tensor(a, name.c_str(), v.data(), n) == 0);
    CHECK(et_set_tensor(b, name.c_str(), v.data(), n) == 0);
  }
}

void compare_training(const char* label, et_adapter_config ac, const std::vector<int32_t>& experts,
                      const std::vector<int32_t>& topk, int head_dim = 16) {
  // head_dim 16: 4 heads / 2 KV heads; 64: 2 heads / 1 KV head (the tensor-core attention's size).
  et_model_config c = head_dim == 16 ? fixtures::llama_config(96, 64, 160, 2, 4, 2, 16)
                                     : fixtures::llama_config(96, 128, 320, 2, 2, 1, 64);
  c.sliding_window = 12;
  et_model* cpu_model = et_model_create(&c);
  et_model* gpu_model = et_model_create_on(&c, 0);
  CHECK_MSG(gpu_model != nullptr, et_last_error());
  if (!gpu_model) return;
  set_random_weights(cpu_model, gpu_model, 11);
  ac.num_experts = experts.empty() ? nullptr : experts.data();
  ac.top_k = topk.empty() ? nullptr : topk.data();
  CHECK(et_attach_adapter(cpu_model, &ac) == 0);
  CHECK(et_attach_adapter(gpu_model, &ac) == 0);
  // B starts at zero; give it values so every path carries signal from the first step.
  std::mt19937 gen(5);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  for (const std::string& name : fixtures::tensor_names(cpu_model, ET_TENSORS_TRAINABLE)) {
    if (name.find("lora_B") == std::string::npos) continue;
    std::vector<float> v(fixtures::tensor_size(cpu_model, name));
    for (float& x : v) x = dist(gen);
    et_set_tensor(cpu_model, name.c_str(), v.data(), v.size());
    et_set_tensor(gpu_model, name.c_str(), v.data(), v.size());
  }
  const int32_t B = 2, T = 24;
  std::vector<int32_t> ids(B * T), targets(B * T);
  et_adamw hyper{3e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f};
  double worst = 0.0;
  for (int step = 0; step < 20; ++step) {
    for (int i = 0; i < B * T; ++i) {
      ids[i] = static_cast<int32_t>(gen() % c.vocab_size);
      targets[i] = i % 7 == 6 ? -1 : static_cast<int32_t>((ids[i] * 5 + 3) % c.vocab_size);  // a learnable map
    }
    et_step_options options{};
    options.loss_scale = 1.0f / (B * T);
    options.dropout_seed = 1000u + step;
    options.aux_scale = 1.0f;
    et_step_stats s_cpu{}, s_gpu{};
    CHECK(et_forward_backward(cpu_model, ids.data(), targets.data(), B, T, &options, &s_cpu) == 0);
    CHECK_MSG(et_forward_backward(gpu_model, ids.data(), targets.data(), B, T, &options, &s_gpu) == 0, et_last_error());
    float n_cpu = 0, n_gpu = 0;
    CHECK(et_optimizer_step(cpu_model, &hyper, &n_cpu) == 0);
    CHECK(et_optimizer_step(gpu_model, &hyper, &n_gpu) == 0);
    const double rel = std::fabs(s_gpu.loss_sum - s_cpu.loss_sum) / std::max(1e-9, std::fabs(s_cpu.loss_sum));
    worst = std::max(worst, rel);
    CHECK_MSG(rel < 1e-2, std::string(label) + " step " + std::to_string(step) + ": loss " +
                              std::to_string(s_gpu.loss_sum) + " vs CPU " + std::to_string(s_cpu.loss_sum));
    CHECK_MSG(std::fabs(n_gpu - n_cpu) <= 3e-2 * n_cpu, std::string(label) + " grad norm " + std::to_string(n_gpu) +
                                                            " vs CPU " + std::to_string(n_cpu));
    CHECK(s_gpu.tokens == s_cpu.tokens);
  }
  // The trained adapters agree too (read back through the host twin).
  for (const std::string& name : fixtures::tensor_names(cpu_model, ET_TENSORS_TRAINABLE)) {
    std::vector<float> a(fixtures::tensor_size(cpu_model, name)), b(a.size());
    et_get_tensor(cpu_model, name.c_str(), a.data(), a.size());
    CHECK(et_get_tensor(gpu_model, name.c_str(), b.data(), b.size()) == 0);
    CHECK(all_finite(b));
    CHECK_REL_L2(b, a, a.size(), 5e-2);  // Adam turns small gradient differences into sign flips
  }
  std::fprintf(stderr, "  %s: worst loss relative difference over 20 steps %.2e\n", label, worst);
  et_model_free(cpu_model);
  et_model_free(gpu_model);
}

TEST_CASE("whole training step, CUDA vs CPU, 20 steps: LoRA, MoLA, LoRAMoE, DynMoLE, FlyLoRA") {
  et_adapter_config base{};
  base.rank = 4;
  base.alpha = 8.0f;
  base.target_mask = 0x7f;
  base.seed = 3;
  et_adapter_config lora = base;
  lora.method = ET_METHOD_LORA;
  lora.dropout = 0.1f;
  compare_training("lora", lora, {}, {});
  et_adapter_config mola = base;
  mola.method = ET_METHOD_MOLA;
  mola.balance_coef = 0.01f;
  mola.z_loss_coef = 0.001f;
  compare_training("mola", mola, {2, 4}, {1, 2});
  et_adapter_config loramoe = base;
  loramoe.method = ET_METHOD_LORAMOE;
  loramoe.blc_alpha = 0.1f;
  compare_training("loramoe", loramoe, {4, 4}, {});
  et_adapter_config dynmole = base;
  dynmole.method = ET_METHOD_DYNMOLE;
  dynmole.top_p = 0.75f;
  dynmole.keep_top_k = 1;
  dynmole.entropy_index = 1.1f;
  dynmole.entropy_threshold = 0.9f;
  dynmole.entropy_eps = 1e-6f;
  dynmole.entropy_coef = 0.01f;
  dynmole.balance_coef = 0.01f;
  compare_training("dynmole", dynmole, {4, 4}, {});
  et_adapter_config fly = base;
  fly.method = ET_METHOD_FLYLORA;
  fly.rank = 8;
  fly.fly_top_k = 2;
  fly.fly_bias_rate = 1e-3f;
  compare_training("flylora", fly, {}, {});
}

TEST_CASE("whole training step with the tensor-core attention, CUDA vs CPU, 20 steps: LoRA and MoLA") {
  et::cuda::set_attention_impl(et::cuda::AttentionImpl::TensorCore);
  et_adapter_config lora{};
  lora.method = ET_METHOD_LORA;
  lora.rank = 8;
  lora.alpha = 16.0f;
  lora.target_mask = 0x7f;
  lora.seed = 9;
  compare_training("lora, mma attention", lora, {}, {}, 64);
  et_adapter_config mola = lora;
  mola.method = ET_METHOD_MOLA;
  mola.rank = 4;
  mola.balance_coef = 0.01f;
  compare_training("mola, mma attention", mola, {4, 4}, {2, 2}, 64);
  et::cuda::set_attention_impl(et::cuda::AttentionImpl::Simt);
}

TEST_CASE("device selection: a bad ordinal fails with a message, the model reports its device") {
  et_model_config c = fixtures::llama_config(32, 32, 64, 1, 2, 1, 16);
  CHECK(et_model_create_on(&c, 4096) == nullptr);
  CHECK(std::string(et_last_error()).find("does not exist") != std::string::npos);
  et_model* m = et_model_create_on(&c, 0);
  CHECK(m && et_model_device(m) == 0);
  et_model_free(m);
  CHECK(et_cuda_device_count() >= 1);
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "test_cuda: no CUDA device visible; skipped (exit 77)\n");
    return 77;
  }
  return check::run_all();
}
