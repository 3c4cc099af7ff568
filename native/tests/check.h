// A minimal test harness for the native core (no Node, no third-party framework).
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace check {

struct Case {
  const char* name;
  std::function<void()> body;
};

inline std::vector<Case>& cases() {
  static std::vector<Case> all;
  return all;
}
inline int& failures() {
  static int n = 0;
  return n;
}

struct Register {
  Register(const char* name, std::function<void()> body) { cases().push_back({name, std::move(body)}); }
};

inline void report(const char* file, int line, const std::string& message) {
  std::fprintf(stderr, "  FAIL %s:%d: %s\n", file, line, message.c_str());
  ++failures();
}

// Relative L2 distance ‖a − b‖ / max(‖b‖, tiny).
template <typename A, typename B>
double rel_l2(const A& a, const B& b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    num += d * d;
    den += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

inline int run_all() {
  int failed_cases = 0;
  for (auto& c : cases()) {
    int before = failures();
    std::fprintf(stderr, "%s\n", c.name);
    try {
      c.body();
    } catch (const std::exception& e) {
      report(__FILE__, __LINE__, std::string("exception: ") + e.what());
    }
    if (failures() != before) ++failed_cases;
  }
  std::fprintf(stderr, "%zu cases, %d failed\n", cases().size(), failed_cases);
  return failed_cases == 0 ? 0 : 1;
}

}  // namespace check

#define CHECK_CONCAT2(a, b) a##b
#define CHECK_CONCAT(a, b) CHECK_CONCAT2(a, b)
#define TEST_CASE(name) \
  static void CHECK_CONCAT(test_, __LINE__)(); \
  static check::Register CHECK_CONCAT(reg_, __LINE__)(name, CHECK_CONCAT(test_, __LINE__)); \
  static void CHECK_CONCAT(test_, __LINE__)()

#define CHECK(cond) \
  do { if (!(cond)) check::report(__FILE__, __LINE__, #cond); } while (0)
#define CHECK_MSG(cond, msg) \
  do { if (!(cond)) check::report(__FILE__, __LINE__, std::string(#cond) + ": " + (msg)); } while (0)
#define CHECK_NEAR(a, b, tol) \
  do { double va = (a), vb = (b); \
       if (!(std::fabs(va - vb) <= (tol))) \
         check::report(__FILE__, __LINE__, std::string(#a " vs " #b ": ") + std::to_string(va) + " vs " + \
                                              std::to_string(vb)); } while (0)
#define CHECK_REL_L2(a, b, n, tol) \
  do { double check_err_ = check::rel_l2(a, b, n); \
       if (!(check_err_ <= (tol))) check::report(__FILE__, __LINE__, std::string("rel L2 " #a " vs " #b " = ") + \
                                                            std::to_string(check_err_)); } while (0)
