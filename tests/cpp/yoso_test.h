// yoso_test.h -- a minimal test harness and the random cases shared by the native tests
// (tests/cpp: CPU-only; tests/gpu: CUDA kernels vs CPU kernels).
//
// Output: one "[ RUN ] name" / "[ OK ] name" / "[ FAIL ] name" line per test, then
// "yoso-test summary: <n> tests, <f> failed". Exit status 1 if anything failed. An optional
// argument selects the tests whose name contains it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "yoso_cpu.h"
#include "yoso_half.h"
#include "yoso_validate.h"

namespace yoso_test {

struct TestCase {
  const char* name;
  void (*fn)();
};

inline std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

struct Registrar {
  Registrar(const char* name, void (*fn)()) { registry().push_back({name, fn}); }
};

inline int& current_failures() {
  static int n = 0;
  return n;
}

inline void report_failure(const char* file, int line, const std::string& what) {
  ++current_failures();
  if (current_failures() <= 20) std::printf("  %s:%d: %s\n", file, line, what.c_str());
  if (current_failures() == 21) std::printf("  (further failures of this test not shown)\n");
}

inline int run_all(int argc, char** argv) {
  const char* filter = argc > 1 ? argv[1] : nullptr;
  int n = 0, failed = 0;
  for (const TestCase& t : registry()) {
    if (filter && !std::strstr(t.name, filter)) continue;
    ++n;
    current_failures() = 0;
    std::printf("[ RUN ] %s\n", t.name);
    std::fflush(stdout);
    t.fn();
    if (current_failures() == 0) {
      std::printf("[ OK ] %s\n", t.name);
    } else {
      ++failed;
      std::printf("[ FAIL ] %s (%d failed checks)\n", t.name, current_failures());
    }
    std::fflush(stdout);
  }
  std::printf("yoso-test summary: %d tests, %d failed\n", n, failed);
  return failed == 0 && n > 0 ? 0 : 1;
}

}  // namespace yoso_test

#define YT_TEST(name)                                                           \
  static void name();                                                           \
  static const yoso_test::Registrar yt_registrar_##name(#name, &name);          \
  static void name()

#define YT_CHECK(cond, msg)                                                     \
  do {                                                                          \
    if (!(cond)) yoso_test::report_failure(__FILE__, __LINE__, std::string(#cond) + ": " + (msg)); \
  } while (0)

namespace yoso_test {

// ---------------------------------------------------------------------------------------------
// Random cases and CPU references
// ---------------------------------------------------------------------------------------------

using Rng = std::mt19937_64;

inline std::string dims_label(std::initializer_list<std::pair<const char*, int64_t>> kv) {
  std::string r;
  for (const auto& p : kv) r += std::string(r.empty() ? "" : " ") + p.first + "=" + std::to_string(p.second);
  return r;
}

enum class MaskMode { kAllOnes, kRandom, kRightPadded, kAllZeros };

inline std::vector<int32_t> make_mask(Rng& rng, int64_t B, int64_t S, MaskMode mode) {
  std::vector<int32_t> m(static_cast<size_t>(B * S), 1);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t keep = S > 0 ? static_cast<int64_t>(rng() % static_cast<uint64_t>(S + 1)) : 0;
    for (int64_t s = 0; s < S; ++s) {
      int32_t v = 1;
      switch (mode) {
        case MaskMode::kAllOnes: v = 1; break;
        case MaskMode::kRandom: v = static_cast<int32_t>(rng() % 4 != 0); break;
        case MaskMode::kRightPadded: v = s < keep ? 1 : 0; break;
        case MaskMode::kAllZeros: v = 0; break;
      }
      m[static_cast<size_t>(b * S + s)] = v;
    }
  }
  return m;
}

struct FastHashCase {
  yoso::FastHashDims d;
  std::vector<float> x;       // float32 values (for float16 runs: exactly representable in fp16)
  std::vector<int32_t> mask;
  std::vector<float> signs;
  std::string label;
};

// x: normal values, plus a few exact zeros, -0 and (if `specials`) NaN / inf entries.
inline FastHashCase make_fast_hash_case(Rng& rng, int64_t B, int64_t H, int64_t S, int64_t D, int64_t m,
                                        int tau, MaskMode mode, bool half_exact, bool specials) {
  FastHashCase c;
  std::vector<int64_t> xs{B, H, S, D}, ms{B, S};
  const int64_t P = yoso::num_parts(m, D, tau);
  std::vector<int64_t> ss{H, 3, P, D};
  const std::string err = yoso::check_fast_hash_shapes(yoso::ShapeRef{xs.data(), 4}, yoso::ShapeRef{ms.data(), 2},
                                                       yoso::ShapeRef{ss.data(), 4}, m, tau, &c.d);
  if (!err.empty()) {
    std::printf("bad test case: %s\n", err.c_str());
    std::abort();
  }
  std::normal_distribution<float> normal(0.0f, 1.0f);
  c.x.resize(static_cast<size_t>(B * H * S * D));
  for (float& v : c.x) {
    v = normal(rng);
    // A wide dynamic range makes the float sums of the WHT order-sensitive, so a butterfly
    // schedule that deviates from the contract's stage order changes some code bits.
    if (rng() % 3 == 0) v = std::ldexp(v, static_cast<int>(rng() % (half_exact ? 16 : 48)) - (half_exact ? 8 : 24));
    const uint64_t r = rng() % 64;
    if (r == 0) v = 0.0f;
    if (r == 1) v = -0.0f;
    if (specials && r == 2) v = std::numeric_limits<float>::quiet_NaN();
    if (specials && r == 3) v = -std::numeric_limits<float>::infinity();
    if (half_exact) v = yoso::half_to_float(yoso::float_to_half(v));
  }
  c.mask = make_mask(rng, B, S, mode);
  c.signs.resize(static_cast<size_t>(H * 3 * P * D));
  for (float& v : c.signs) v = (rng() & 1) ? 1.0f : -1.0f;
  c.label = dims_label({{"B", B}, {"H", H}, {"S", S}, {"D", D}, {"m", m}, {"tau", tau}});
  return c;
}

inline std::vector<int32_t> cpu_fast_hash(const FastHashCase& c) {
  std::vector<int32_t> codes(static_cast<size_t>(c.d.B * c.d.H * c.d.S * c.d.m), -7);
  const int64_t rows = c.d.B * c.d.H * c.d.S;
  if (rows > 0) yoso::cpu::fast_hash_f32(c.d, c.x.data(), c.mask.data(), c.signs.data(), codes.data(), 0, rows);
  return codes;
}

struct LshCase {
  yoso::LshDims d;
  std::vector<int32_t> qc, kc, qm, km;
  std::vector<float> value;  // float32 (for float16 runs: exactly representable in fp16)
  std::string label;
};

// Codes are drawn from a small pool per (b, h, f) slot so that buckets collide for any tau.
inline LshCase make_lsh_case(Rng& rng, int64_t B, int64_t H, int64_t Sq, int64_t Sk, int64_t m, int64_t Dv,
                             int tau, MaskMode qmode, MaskMode kmode, bool half_exact) {
  LshCase c;
  std::vector<int64_t> qcs{B, H, Sq, m}, kcs{B, H, Sk, m}, qms{B, Sq}, kms{B, Sk}, vs{B, H, Sk, Dv};
  const std::string err = yoso::check_lsh_shapes(
      yoso::ShapeRef{qcs.data(), 4}, yoso::ShapeRef{kcs.data(), 4}, yoso::ShapeRef{qms.data(), 2},
      yoso::ShapeRef{kms.data(), 2}, yoso::ShapeRef{vs.data(), 4}, tau, &c.d);
  if (!err.empty()) {
    std::printf("bad test case: %s\n", err.c_str());
    std::abort();
  }
  const uint64_t buckets = uint64_t{1} << tau;
  const uint64_t pool = std::min<uint64_t>(buckets, 1 + rng() % 12);
  std::vector<int32_t> pool_codes(pool);
  for (auto& p : pool_codes) p = static_cast<int32_t>(rng() % buckets);
  auto draw = [&]() {
    return (rng() % 8 == 0) ? static_cast<int32_t>(rng() % buckets) : pool_codes[rng() % pool];
  };
  c.qc.resize(static_cast<size_t>(B * H * Sq * m));
  c.kc.resize(static_cast<size_t>(B * H * Sk * m));
  for (auto& v : c.qc) v = draw();
  for (auto& v : c.kc) v = draw();
  c.qm = make_mask(rng, B, Sq, qmode);
  c.km = make_mask(rng, B, Sk, kmode);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  c.value.resize(static_cast<size_t>(B * H * Sk * Dv));
  for (float& v : c.value) {
    v = normal(rng);
    if (half_exact) v = yoso::half_to_float(yoso::float_to_half(v));
  }
  c.label = dims_label({{"B", B}, {"H", H}, {"Sq", Sq}, {"Sk", Sk}, {"m", m}, {"Dv", Dv}, {"tau", tau}});
  return c;
}

inline std::vector<float> cpu_lsh(const LshCase& c, const std::vector<float>& value) {
  std::vector<float> out(static_cast<size_t>(c.d.B * c.d.H * c.d.Sq * c.d.Dv), -7.0f);
  const int64_t slices = c.d.B * c.d.H;
  if (slices > 0) {
    yoso::cpu::lsh_cumulation_f32(c.d, c.qc.data(), c.d.Sk ? c.kc.data() : nullptr, c.qm.data(),
                                  c.d.Sk ? c.km.data() : nullptr, c.d.Sk ? value.data() : nullptr,
                                  out.data(), 0, slices);
  }
  return out;
}

// Per-element tolerance: sums in a different order agree to ~1e-6 relative of the sum of
// magnitudes (abs_ref = LSHCumulation of |value|).
inline bool lsh_close(float got, float want, float abs_ref, bool half_out) {
  if (std::isnan(got) || std::isnan(want)) return false;
  float tol = 2e-6f * abs_ref + 1e-7f;
  if (half_out) tol += std::fabs(want) * (1.0f / 1024.0f) + 6e-8f;
  return std::fabs(got - want) <= tol;
}

inline std::vector<float> abs_values(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = std::fabs(v[i]);
  return r;
}

inline std::vector<yoso::Half> to_half(const std::vector<float>& v) {
  std::vector<yoso::Half> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = yoso::float_to_half(v[i]);
  return r;
}

}  // namespace yoso_test
