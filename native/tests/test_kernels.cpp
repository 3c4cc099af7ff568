// Every row kernel, for every instruction set this CPU runs, against a plain double-precision
// loop written here from the math; the sgemm wrapper and the thread pool against naive loops.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>
#include <vector>

#include "blas.h"
#include "check.h"
#include "kernels/kernels.h"
#include "rng.h"
#include "threadpool.h"

namespace {

std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -2.0f, float hi = 2.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

std::vector<const et::Kernels*> available() {
  std::vector<const et::Kernels*> out;
  for (const char* name : {"avx512", "avx2", "generic"})
    if (const et::Kernels* k = et::kernels_by_name(name)) out.push_back(k);
  return out;
}

// Lengths that hit full vectors, tails and single elements for 16- and 8-lane kernels.
const long kLengths[] = {1, 7, 8, 15, 16, 17, 33, 64, 100};

}  // namespace

TEST_CASE("generic kernels are always available, and the dispatcher picks one") {
  CHECK(et::kernels_by_name("generic") != nullptr);
  CHECK(et::kernels_by_name("nonsense") == nullptr);
  CHECK(std::strlen(et::kernels().name) > 0);
}

TEST_CASE("rmsnorm forward and backward match double loops") {
  for (const et::Kernels* K : available()) {
    for (long d : kLengths) {
      const long rows = 3;
      auto x = random_vector(rows * d, 1 + d), w = random_vector(d, 2 + d, 0.5f, 1.5f);
      auto dy = random_vector(rows * d, 3 + d);
      std::vector<float> y(rows * d), rstd(rows), dx(rows * d), dw(d, 0.0f);
      K->rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, d, 1e-5f);
      K->rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), rows, d, false);
      std::vector<double> y_ref(rows * d), dx_ref(rows * d), dw_ref(d, 0.0);
      for (long r = 0; r < rows; ++r) {
        double ss = 0;
        for (long i = 0; i < d; ++i) ss += double(x[r * d + i]) * x[r * d + i];
        double inv = 1.0 / std::sqrt(ss / d + 1e-5);
        // dx_i = inv·w_i·dy_i − x_i·inv³/d · Σ_j w_j dy_j x_j
        double s = 0;
        for (long j = 0; j < d; ++j) s += double(w[j]) * dy[r * d + j] * x[r * d + j];
        for (long i = 0; i < d; ++i) {
          y_ref[r * d + i] = x[r * d + i] * inv * w[i];
          dx_ref[r * d + i] = inv * w[i] * dy[r * d + i] - x[r * d + i] * inv * inv * inv / d * s;
          dw_ref[i] += double(dy[r * d + i]) * x[r * d + i] * inv;
        }
      }
      CHECK_REL_L2(y, y_ref, y.size(), 1e-6);
      // At d = 1 the normalised value is ±1 whatever x is, so dx is only rounding noise.
      if (d > 1) CHECK_REL_L2(dx, dx_ref, dx.size(), 1e-5);
      CHECK_REL_L2(dw, dw_ref, dw.size(), 1e-6);
    }
  }
}

TEST_CASE("rope rotates pairs (i, i+hd/2) and the opposite sign undoes it") {
  for (const et::Kernels* K : available()) {
    for (long half : {1L, 4L, 8L, 17L, 32L}) {
      const long hd = 2 * half, heads = 3;
      auto x = random_vector(heads * hd, 7 + half);
      std::vector<float> cs(half), sn(half);
      for (long i = 0; i < half; ++i) {
        cs[i] = std::cos(0.3 * (i + 1));
        sn[i] = std::sin(0.3 * (i + 1));
      }
      auto y = x;
      K->rope(y.data(), heads, hd, cs.data(), sn.data(), 1.0f);
      for (long h = 0; h < heads; ++h)
        for (long i = 0; i < half; ++i) {
          double a = x[h * hd + i], b = x[h * hd + i + half];
          CHECK_NEAR(y[h * hd + i], a * cs[i] - b * sn[i], 1e-6);
          CHECK_NEAR(y[h * hd + i + half], b * cs[i] + a * sn[i], 1e-6);
        }
      K->rope(y.data(), heads, hd, cs.data(), sn.data(), -1.0f);
      CHECK_REL_L2(y, x, x.size(), 1e-6);
    }
  }
}

TEST_CASE("swiglu forward and backward match the closed forms") {
  for (const et::Kernels* K : available()) {
    for (long n : kLengths) {
      auto g = random_vector(n, 11, -9.0f, 9.0f), u = random_vector(n, 12), dout = random_vector(n, 13);
      std::vector<float> out(n), dg(n), du(n);
      K->swiglu_forward(g.data(), u.data(), out.data(), n);
      K->swiglu_backward(g.data(), u.data(), dout.data(), dg.data(), du.data(), n);
      std::vector<double> out_ref(n), dg_ref(n), du_ref(n);
      for (long i = 0; i < n; ++i) {
        double sig = 1.0 / (1.0 + std::exp(-double(g[i])));
        out_ref[i] = g[i] * sig * u[i];
        du_ref[i] = dout[i] * g[i] * sig;
        dg_ref[i] = dout[i] * u[i] * (sig + g[i] * sig * (1 - sig));
      }
      CHECK_REL_L2(out, out_ref, n, 2e-6);
      CHECK_REL_L2(dg, dg_ref, n, 2e-6);
      CHECK_REL_L2(du, du_ref, n, 2e-6);
    }
  }
}

TEST_CASE("softmax, logsumexp, exp_shifted and the softmax backward") {
  for (const et::Kernels* K : available()) {
    for (long n : kLengths) {
      auto s = random_vector(n, 21, -6.0f, 6.0f);
      auto p = s;
      float lse = K->softmax(p.data(), n);
      double mx = *std::max_element(s.begin(), s.end()), sum = 0;
      for (float v : s) sum += std::exp(double(v) - mx);
      CHECK_NEAR(lse, mx + std::log(sum), 1e-5 * std::max(1.0, std::fabs(mx)));
      std::vector<double> p_ref(n);
      for (long i = 0; i < n; ++i) p_ref[i] = std::exp(double(s[i]) - mx) / sum;
      CHECK_REL_L2(p, p_ref, n, 1e-6);
      auto e = s;
      K->exp_shifted(e.data(), n, lse);
      CHECK_REL_L2(e, p_ref, n, 1e-6);
      auto dp = random_vector(n, 22);
      double delta = 0;
      for (long i = 0; i < n; ++i) delta += p_ref[i] * dp[i];
      std::vector<double> ds_ref(n);
      for (long i = 0; i < n; ++i) ds_ref[i] = p_ref[i] * (dp[i] - delta);
      auto ds = dp;
      K->softmax_backward(p.data(), ds.data(), float(delta), n);
      CHECK_REL_L2(ds, ds_ref, n, 1e-5);
    }
  }
}

TEST_CASE("vectorised exp stays within a few ulp over the float range") {
  for (const et::Kernels* K : available()) {
    double worst = 0;
    std::vector<float> xs;
    for (float x = -87.0f; x <= 88.0f; x += 0.0137f) xs.push_back(x);
    auto e = xs;
    K->exp_shifted(e.data(), long(e.size()), 0.0f);
    for (size_t i = 0; i < xs.size(); ++i) worst = std::max(worst, std::fabs(e[i] / std::exp(double(xs[i])) - 1));
    CHECK_MSG(worst < 5e-7, std::string(K->name) + " worst relative error " + std::to_string(worst));
  }
}

TEST_CASE("cross-entropy returns the loss, the first argmax and scale·(softmax − onehot)") {
  for (const et::Kernels* K : available()) {
    for (long n : kLengths) {
      auto logits = random_vector(n, 31, -5.0f, 5.0f);
      const long target = n / 2;
      auto row = logits;
      long argmax = -1;
      float loss = K->cross_entropy(row.data(), n, target, 0.25f, &argmax);
      double mx = *std::max_element(logits.begin(), logits.end()), sum = 0;
      for (float v : logits) sum += std::exp(double(v) - mx);
      CHECK_NEAR(loss, mx + std::log(sum) - logits[target], 1e-5);
      CHECK(argmax == std::max_element(logits.begin(), logits.end()) - logits.begin());
      for (long i = 0; i < n; ++i) {
        double g = 0.25 * (std::exp(double(logits[i]) - mx) / sum - (i == target ? 1.0 : 0.0));
        CHECK_NEAR(row[i], g, 1e-6);
      }
    }
    std::vector<float> ties = {1.0f, 3.0f, 3.0f, 2.0f};
    long argmax = -1;
    K->cross_entropy(ties.data(), 4, 0, 1.0f, &argmax);
    CHECK(argmax == 1);
  }
}

TEST_CASE("add, axpy, scale, dot and sum_squares") {
  for (const et::Kernels* K : available()) {
    for (long n : {1L, 17L, 5000L}) {
      auto a = random_vector(n, 41), b = random_vector(n, 42);
      std::vector<float> out(n);
      K->add(a.data(), b.data(), out.data(), n);
      for (long i = 0; i < n; ++i) CHECK_NEAR(out[i], double(a[i]) + b[i], 1e-6);
      auto y = b;
      K->axpy(0.5f, a.data(), y.data(), n);
      for (long i = 0; i < n; ++i) CHECK_NEAR(y[i], 0.5 * a[i] + b[i], 1e-6);
      auto z = a;
      K->scale(z.data(), -3.0f, n);
      for (long i = 0; i < n; ++i) CHECK_NEAR(z[i], -3.0 * a[i], 1e-6);
      double dot = 0, ss = 0;
      for (long i = 0; i < n; ++i) {
        dot += double(a[i]) * b[i];
        ss += double(a[i]) * a[i];
      }
      CHECK_NEAR(K->dot(a.data(), b.data(), n), dot, 1e-4 * std::max(1.0, std::fabs(dot)));
      CHECK_NEAR(K->sum_squares(a.data(), n), ss, 1e-5 * ss);
    }
  }
}

TEST_CASE("adamw follows PyTorch's update on a hand-worked step") {
  for (const et::Kernels* K : available()) {
    // One parameter 1.0, gradient 0.5, lr 0.1, wd 0.01, betas (0.9, 0.999), eps 1e-8, t = 1:
    // decay 1 − 0.001 → 0.999; m = 0.05, v = 0.00025; m̂ = 0.5, sqrt(v̂) = 0.5 → step 0.1 · 1 = 0.1.
    float p = 1.0f, g = 0.5f, m = 0.0f, v = 0.0f;
    et::AdamWScalars s{0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f - 0.9f, std::sqrt(1.0f - 0.999f), 1.0f};
    K->adamw(&p, &g, &m, &v, 1, s);
    CHECK_NEAR(m, 0.05, 1e-7);
    CHECK_NEAR(v, 0.00025, 1e-8);  // 1 − β₂ is 0.00099998713 in float
    CHECK_NEAR(p, 0.999 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-6);
    // The gradient scale (clipping) multiplies g before both moments.
    float p2 = 1.0f, m2 = 0.0f, v2 = 0.0f;
    s.grad_scale = 0.5f;
    s.weight_decay = 0.0f;
    K->adamw(&p2, &g, &m2, &v2, 1, s);
    CHECK_NEAR(m2, 0.1 * 0.25, 1e-7);
  }
}

TEST_CASE("dropout keeps exactly the elements whose hash clears the threshold") {
  for (const et::Kernels* K : available()) {
    const long rows = 50, cols = 37, ld = 40;
    auto x = random_vector(rows * ld, 51);
    std::vector<float> out(rows * cols);
    const uint32_t threshold = et::dropout_threshold(0.3f);
    K->dropout(x.data(), ld, out.data(), cols, rows, cols, 5, 1234u, 17u, threshold, 1.0f / 0.7f, false);
    long kept = 0;
    for (long r = 0; r < rows; ++r)
      for (long j = 0; j < cols; ++j) {
        bool keep = et::hash3(1234u, 17u, uint32_t((r + 5) * cols + j)) >= threshold;
        kept += keep;
        CHECK_NEAR(out[r * cols + j], keep ? x[r * ld + j] / 0.7 : 0.0, 1e-6);
      }
    const double rate = double(kept) / (rows * cols);
    CHECK_MSG(rate > 0.65 && rate < 0.75, std::to_string(rate));
    auto acc = out;
    K->dropout(x.data(), ld, acc.data(), cols, rows, cols, 5, 1234u, 17u, threshold, 1.0f / 0.7f, true);
    for (long i = 0; i < rows * cols; ++i) CHECK_NEAR(acc[i], 2.0 * out[i], 1e-6);
  }
}

TEST_CASE("hash3 and uniform01 match hand-computed values") {
  // mix32(0) = 0 (every step maps 0 to 0); mix32(1) computed by hand from the three steps.
  CHECK(et::mix32(0u) == 0u);
  uint32_t x = 1u;
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  CHECK(et::mix32(1u) == x);
  CHECK(et::hash3(1, 2, 3) == et::mix32(3u ^ et::mix32(2u ^ et::mix32(1u))));
  CHECK(et::uniform01(0xffffffffu) < 1.0f);
  CHECK(et::uniform01(0u) == 0.0f);
  CHECK(et::dropout_threshold(0.5f) == 0x80000000u);
}

TEST_CASE("gemm matches a naive product for every transpose, with and without splitting") {
  for (int threads : {1, 2, 3}) {
    et::ThreadPool::global().resize(threads);
    for (long M : {1L, 17L, 200L})
      for (long N : {1L, 33L, 150L})
        for (long K : {1L, 64L, 129L})
          for (int ta = 0; ta < 2; ++ta)
            for (int tb = 0; tb < 2; ++tb) {
              const long lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 5;
              auto A = random_vector((ta ? K : M) * lda, 61), B = random_vector((tb ? N : K) * ldb, 62);
              auto C = random_vector(M * ldc, 63);
              auto C0 = C;
              et::gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 2.0f, C.data(), ldc);
              double worst = 0;
              for (long i = 0; i < M; ++i)
                for (long j = 0; j < N; ++j) {
                  double acc = 0;
                  for (long k = 0; k < K; ++k)
                    acc += double(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
                  double ref = 0.5 * acc + 2.0 * C0[i * ldc + j];
                  worst = std::max(worst, std::fabs(C[i * ldc + j] - ref) / (1.0 + std::fabs(ref)));
                }
              CHECK_MSG(worst < 1e-5, std::to_string(worst));
              // Padding between rows is never written.
              for (long i = 0; i < M; ++i)
                for (long j = N; j < ldc; ++j) CHECK(C[i * ldc + j] == C0[i * ldc + j]);
            }
  }
  et::ThreadPool::global().resize(2);
}

TEST_CASE("parallel_for covers every index exactly once, and nested calls run inline") {
  for (int threads : {1, 2, 4}) {
    et::ThreadPool::global().resize(threads);
    std::vector<std::atomic<int>> hits(10007);
    et::ThreadPool::global().parallel_for(10007, 13, [&](long b, long e, int) {
      for (long i = b; i < e; ++i) hits[i]++;
      et::ThreadPool::global().parallel_for(5, 1, [&](long, long, int) {});
    });
    bool once = true;
    for (auto& h : hits) once = once && h.load() == 1;
    CHECK(once);
  }
  et::ThreadPool::global().resize(2);
}

int main() { return check::run_all(); }
