// The fused gated low-rank kernel (src/adapter.cpp) against a plain double-precision loop over
// experts written from docs/methods.md: forward outputs, and every gradient (A, B, routers, input)
// against central finite differences of that loop. One group of three sites that share their
// input (q, k, v) exercises the stacked GEMMs and the column offsets; dropout exercises the
// group's shared mask.
#include <algorithm>
#include <cmath>
#include <vector>

#include "adapter.h"
#include "check.h"
#include "rng.h"

namespace {

constexpr long kRows = 9, kIn = 12;
const long kOut[3] = {12, 8, 8};  // q, k, v
const std::array<long, ET_NUM_PROJ> kCol = {0, 12, 20, 0, 0, 0, 0};
constexpr long kWidthY = 28;

double uniform_value(uint32_t seed, uint32_t index, double scale) {
  return (2.0 * et::uniform01(et::hash3(seed, 99, index)) - 1.0) * scale;
}

// Parameters of the group in double: the stacked [A; R] rows, each site's B, FlyLoRA's bias.
struct Params {
  std::vector<double> down;
  std::vector<std::vector<double>> B, bias;
};

// The reference: y[t] of every site by a loop over experts, and L = Σ dy ⊙ y.
double reference(const et::Adapter& adapter, et::Group& g, const Params& w, const std::vector<double>& x,
                 const std::vector<double>& dy, uint32_t dropout_seed, std::vector<double>* y_out,
                 long* broadcast_rows) {
  const et_adapter_config& c = adapter.settings().c;
  const double s = adapter.settings().scaling;
  std::vector<double> y(kRows * kWidthY, 0.0);
  // The group's dropped input: one mask for every site (docs/methods.md "Dropout").
  std::vector<double> xd(x);
  if (c.dropout > 0.0f) {
    const uint32_t threshold = et::dropout_threshold(c.dropout);
    const double keep = 1.0 / (1.0 - static_cast<double>(c.dropout));
    for (long i = 0; i < kRows * kIn; ++i)
      xd[i] = et::hash3(dropout_seed, 0, static_cast<uint32_t>(i)) >= threshold ? x[i] * static_cast<float>(keep) : 0.0;
  }
  long broadcasts = 0;
  for (size_t si = 0; si < g.sites.size(); ++si) {
    const et::Site& site = *g.sites[si];
    const long E = site.experts, r = site.rank;
    for (long t = 0; t < kRows; ++t) {
      std::vector<double> h(E * r, 0.0), p(E, 0.0), gate(E, 1.0);
      for (long j = 0; j < E * r; ++j)
        for (long i = 0; i < kIn; ++i) h[j] += w.down[(site.a_row + j) * kIn + i] * xd[t * kIn + i];
      if (adapter.has_router()) {
        double zmax = -1e300;
        std::vector<double> z(E, 0.0);
        for (long e = 0; e < E; ++e) {
          for (long i = 0; i < kIn; ++i) z[e] += w.down[(site.router_row + e) * kIn + i] * x[t * kIn + i];
          zmax = std::max(zmax, z[e]);
        }
        double total = 0.0;
        for (long e = 0; e < E; ++e) total += p[e] = std::exp(z[e] - zmax);
        for (long e = 0; e < E; ++e) p[e] /= total;
      }
      std::vector<long> order(E);
      for (long e = 0; e < E; ++e) order[e] = e;
      auto rank_by = [&](const std::vector<double>& score) {
        std::stable_sort(order.begin(), order.end(), [&](long a, long b) { return score[a] > score[b]; });
      };
      switch (c.method) {
        case ET_METHOD_MOLA: {
          rank_by(p);
          double kept = 0.0;
          for (long j = 0; j < site.top_k; ++j) kept += p[order[j]];
          std::fill(gate.begin(), gate.end(), 0.0);
          for (long j = 0; j < site.top_k; ++j) gate[order[j]] = p[order[j]] / kept;
          break;
        }
        case ET_METHOD_LORAMOE: gate = p; break;
        case ET_METHOD_DYNMOLE: {
          double sum = 0.0;
          for (long e = 0; e < E; ++e) sum += std::pow(p[e] + c.entropy_eps, static_cast<double>(c.entropy_index));
          const double q = c.entropy_index;
          const double normalized = ((1.0 - sum) / (q - 1.0)) / ((1.0 - std::pow(static_cast<double>(E), 1.0 - q)) / (q - 1.0));
          if (normalized > c.entropy_threshold) {
            gate = p;
            ++broadcasts;
            break;
          }
          rank_by(p);
          double cumulative = 0.0;
          for (long j = 0; j < E; ++j) {
            cumulative += p[order[j]];
            gate[order[j]] = (cumulative <= c.top_p || j < c.keep_top_k) ? p[order[j]] : 0.0;
          }
          break;
        }
        case ET_METHOD_FLYLORA: {
          std::vector<double> score(E);
          for (long e = 0; e < E; ++e) {
            score[e] = h[e] + w.bias[si][e];
            if (c.fly_select_abs) score[e] = std::fabs(score[e]);
          }
          rank_by(score);
          std::fill(gate.begin(), gate.end(), 0.0);
          for (long j = 0; j < site.top_k; ++j) gate[order[j]] = 1.0;
          break;
        }
        default: break;
      }
      for (long o = 0; o < site.out; ++o) {
        double acc = 0.0;
        for (long e = 0; e < E; ++e)
          for (long j = 0; j < r; ++j) acc += gate[e] * w.B[si][o * site.width + e * r + j] * h[e * r + j];
        y[t * kWidthY + kCol[site.projection] + o] += s * acc;
      }
    }
  }
  if (broadcast_rows) *broadcast_rows = broadcasts;
  double loss = 0.0;
  for (long i = 0; i < kRows * kWidthY; ++i) loss += dy[i] * y[i];
  if (y_out) *y_out = y;
  return loss;
}

// Forward and backward of the native kernel against the reference for one configuration.
void check_method(et_adapter_config c, const char* label, long* broadcast_rows = nullptr) {
  std::fprintf(stderr, "  %s\n", label);
  const std::array<std::array<long, 2>, ET_NUM_PROJ> in_out = {
      {{kIn, kOut[0]}, {kIn, kOut[1]}, {kIn, kOut[2]}, {12, kIn}, {kIn, 20}, {kIn, 20}, {20, kIn}}};
  c.target_mask = 0x7;  // q, k, v: one input group of three sites
  et::Adapter adapter(c, 1, in_out);
  et::Group& g = adapter.group(0, et::GROUP_QKV);
  CHECK(g.sites.size() == 3);

  // Random parameters (B non-zero so that every gradient is), copied into the double reference.
  Params w;
  uint32_t index = 0;
  const double router_scale = c.method == ET_METHOD_DYNMOLE ? 0.6 : 1.0;  // confident and uncertain rows
  if (adapter.trains_a())
    for (long i = 0; i < static_cast<long>(g.down.value.size()); ++i) {
      const bool router_row = i / kIn >= g.h_width;
      g.down.value[i] = static_cast<float>(uniform_value(1, index++, router_row ? router_scale : 0.3));
    }
  std::vector<float> dense_a(g.h_width * kIn, 0.0f);
  for (et::Site* site : g.sites)
    if (site->sparse_a) site->sparse_a->expand(dense_a.data() + site->a_row * kIn, kIn);
  w.down.assign(g.down.value.size() ? g.down.value.data() : dense_a.data(),
                (g.down.value.size() ? g.down.value.data() : dense_a.data()) +
                    (g.down.value.size() ? g.down.value.size() : dense_a.size()));
  for (et::Site* site : g.sites) {
    for (size_t i = 0; i < site->B.value.size(); ++i) site->B.value[i] = static_cast<float>(uniform_value(2, index++, 0.5));
    w.B.emplace_back(site->B.value.data(), site->B.value.data() + site->B.value.size());
    for (size_t i = 0; i < site->topk_bias.value.size(); ++i)
      site->topk_bias.value[i] = static_cast<float>(uniform_value(3, index++, 0.05));
    w.bias.emplace_back(site->topk_bias.value.data(), site->topk_bias.value.data() + site->topk_bias.value.size());
  }
  std::vector<float> x(kRows * kIn), dy(kRows * kWidthY);
  for (auto& v : x) v = static_cast<float>(uniform_value(4, index++, 1.0));
  for (auto& v : dy) v = static_cast<float>(uniform_value(5, index++, 1.0));
  std::vector<double> xd64(x.begin(), x.end()), dy64(dy.begin(), dy.end());
  const uint32_t seed = 77;

  // Forward.
  std::vector<float> y(kRows * kWidthY, 0.0f), hz(kRows * (g.h_width + g.z_width));
  et::AdapterPass pass{kRows, true, seed, false, nullptr};
  adapter.forward_group(g, x.data(), kIn, y.data(), kWidthY, kCol, hz.data(), pass);
  std::vector<double> y_ref;
  reference(adapter, g, w, xd64, dy64, seed, &y_ref, broadcast_rows);
  CHECK_REL_L2(y, y_ref, y.size(), 1e-5);

  // Backward, with every auxiliary loss off (their gradients are checked against the tfjs engine).
  adapter.auxiliary_losses(1, kRows, nullptr, nullptr, 1.0f);
  std::vector<float> dx(kRows * kIn, 0.0f);
  adapter.backward_group(g, x.data(), kIn, hz.data(), dy.data(), kWidthY, kCol, dx.data(), kIn, pass);

  const double h = 1e-6;
  auto central = [&](double& value) {
    const double saved = value;
    value = saved + h;
    const double plus = reference(adapter, g, w, xd64, dy64, seed, nullptr, nullptr);
    value = saved - h;
    const double minus = reference(adapter, g, w, xd64, dy64, seed, nullptr, nullptr);
    value = saved;
    return (plus - minus) / (2 * h);
  };
  if (adapter.trains_a()) {
    std::vector<double> fd(w.down.size());
    for (size_t i = 0; i < w.down.size(); ++i) fd[i] = central(w.down[i]);
    CHECK_REL_L2(g.down.grad.data(), fd, fd.size(), 1e-4);
  }
  for (size_t si = 0; si < g.sites.size(); ++si) {
    std::vector<double> fd(w.B[si].size());
    for (size_t i = 0; i < fd.size(); ++i) fd[i] = central(w.B[si][i]);
    CHECK_REL_L2(g.sites[si]->B.grad.data(), fd, fd.size(), 1e-4);
  }
  std::vector<double> fd_x(xd64.size());
  for (size_t i = 0; i < xd64.size(); ++i) fd_x[i] = central(xd64[i]);
  CHECK_REL_L2(dx, fd_x, dx.size(), 1e-4);
}

et_adapter_config base_config(int method, int rank) {
  et_adapter_config c{};
  c.method = method;
  c.rank = rank;
  c.alpha = 2.0f * rank;
  c.dropout = 0.25f;
  c.seed = 5;
  return c;
}

}  // namespace

TEST_CASE("lora: the fused kernel equals the per-site loop and its gradients") {
  check_method(base_config(ET_METHOD_LORA, 3), "lora r=3, dropout 0.25");
}

TEST_CASE("mola: renormalised top-k gates") {
  const int32_t experts[1] = {4}, top_k[1] = {2};
  et_adapter_config c = base_config(ET_METHOD_MOLA, 2);
  c.num_experts = experts;
  c.top_k = top_k;
  check_method(c, "mola E=4 k=2 r=2");
  const int32_t top_one[1] = {1};
  c.top_k = top_one;
  c.dropout = 0.0f;  // every A block and router in one GEMM
  check_method(c, "mola E=4 k=1 r=2, no dropout");
}

TEST_CASE("loramoe: dense softmax gates") {
  const int32_t experts[1] = {3};
  et_adapter_config c = base_config(ET_METHOD_LORAMOE, 2);
  c.num_experts = experts;
  check_method(c, "loramoe E=3 r=2");
}

TEST_CASE("dynmole: broadcast above the entropy threshold, top-p below") {
  const int32_t experts[1] = {5};
  et_adapter_config c = base_config(ET_METHOD_DYNMOLE, 2);
  c.num_experts = experts;
  c.top_p = 0.75f;
  c.keep_top_k = 2;
  c.entropy_index = 1.1f;
  c.entropy_threshold = 0.9f;
  c.entropy_eps = 1e-5f;
  long broadcast = 0;
  check_method(c, "dynmole E=5 r=2", &broadcast);
  // Both regimes must have been exercised for the comparison to mean anything.
  std::fprintf(stderr, "    %ld of %ld rows broadcast\n", broadcast, 3 * kRows);
  CHECK_MSG(broadcast > 0 && broadcast < 3 * kRows, std::to_string(broadcast) + " broadcast rows of 27");
}

TEST_CASE("flylora: top-k of a frozen sparse projection, signed and by magnitude") {
  et_adapter_config c = base_config(ET_METHOD_FLYLORA, 8);
  c.fly_top_k = 2;
  check_method(c, "flylora r=8 k=2 signed");
  c.fly_select_abs = 1;
  check_method(c, "flylora r=8 k=2 abs");
}

TEST_CASE("flylora: A has exactly in // (r/k) non-zeros per row and is not a gradient target") {
  const std::array<std::array<long, 2>, ET_NUM_PROJ> in_out = {
      {{64, 64}, {64, 32}, {64, 32}, {64, 64}, {64, 96}, {64, 96}, {96, 64}}};
  et_adapter_config c = base_config(ET_METHOD_FLYLORA, 16);
  c.fly_top_k = 4;
  c.target_mask = 0x7f;
  et::Adapter adapter(c, 2, in_out);
  for (et::Site* site : adapter.sites()) {
    std::vector<float> dense(16 * site->in);
    site->sparse_a->expand(dense.data(), site->in);
    for (long i = 0; i < 16; ++i) {
      long nonzero = 0;
      double sum_squares = 0.0;
      for (long j = 0; j < site->in; ++j) {
        nonzero += dense[i * site->in + j] != 0.0f;
        sum_squares += dense[i * site->in + j] * dense[i * site->in + j];
      }
      CHECK(nonzero == site->in / 4);
      (void)sum_squares;
    }
    CHECK(adapter.group(site->layer, et::group_of_projection(static_cast<int>(site->projection))).down.grad.empty());
  }
  // Values are N(0, 1/r²): over all sites, the sample variance is near 1/256.
  double sum = 0.0, sum_squares = 0.0;
  long count = 0;
  for (et::Site* site : adapter.sites())
    for (size_t i = 0; i < site->sparse_a->value.size(); ++i) {
      sum += site->sparse_a->value[i];
      sum_squares += site->sparse_a->value[i] * site->sparse_a->value[i];
      ++count;
    }
  const double variance = sum_squares / count - (sum / count) * (sum / count);
  CHECK_NEAR(variance * 256.0, 1.0, 0.1);
}

int main() { return check::run_all(); }
