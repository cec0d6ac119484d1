// validation_test.cc -- direct tests of plugins/common/yoso_validate.h for sizes ONNX Runtime
// cannot feed (products of dims beyond int64, negative dims, int64 attribute extremes).
//
// Built and run by tests/test_op_validation_extra.py with -fsanitize=address,undefined
// -fno-sanitize-recover=all, so any signed overflow or out-of-bounds access inside the helpers is
// a failure too. Prints one "ok <name>" line per check and "ALL OK <n>" at the end; exits 1 at the
// first failed check (printing "FAIL <name>: <detail>").
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "yoso_validate.h"

namespace {

int g_checks = 0;

void expect(bool cond, const char* name, const std::string& detail = "") {
  ++g_checks;
  if (!cond) {
    std::printf("FAIL %s: %s\n", name, detail.c_str());
    std::fflush(stdout);
    std::exit(1);
  }
  std::printf("ok %s\n", name);
}

bool contains(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

yoso::ShapeRef shape(const std::vector<int64_t>& v) { return yoso::ShapeRef{v.data(), v.size()}; }

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t k2_31 = int64_t{1} << 31;
constexpr int64_t k2_40 = int64_t{1} << 40;
constexpr int64_t k2_62 = int64_t{1} << 62;

// Signs shape [H,3,P,D] that matches x [.,H,.,D] for (m, tau).
std::vector<int64_t> signs_for(int64_t H, int64_t m, int64_t tau, int64_t D) {
  return {H, 3, yoso::num_parts(m, D, tau), D};
}

}  // namespace

int main() {
  using yoso::checked_mul;
  using yoso::checked_numel;

  // ---- checked_mul / checked_numel ---------------------------------------------------------
  int64_t r = -1;
  expect(checked_mul(0, kMax, &r) && r == 0, "mul_zero_max");
  expect(checked_mul(kMax, 1, &r) && r == kMax, "mul_max_one");
  expect(!checked_mul(int64_t{1} << 32, k2_31, &r), "mul_2^63_overflows");
  expect(!checked_mul(k2_62, 2, &r), "mul_2^62x2_overflows");
  expect(checked_mul(k2_62, 1, &r) && r == k2_62, "mul_2^62x1");
  expect(!checked_mul(-1, 1, &r) && !checked_mul(1, -1, &r), "mul_negative_refused");
  expect(!checked_mul(kMin, 0, &r), "mul_int64_min_refused");

  std::vector<int64_t> s = {k2_40, k2_40, 4};
  expect(!checked_numel(shape(s), 4, &r), "numel_2^82_overflows");
  s = {k2_31, k2_31, 2};  // 2^63 elements
  expect(!checked_numel(shape(s), 1, &r), "numel_2^63_overflows");
  s = {k2_31, k2_31};  // 2^62 elements, 2^64 bytes as float
  expect(checked_numel(shape(s), 1, &r) && r == k2_62, "numel_2^62_fits_as_bytes");
  expect(!checked_numel(shape(s), 4, &r), "numel_bytes_overflow");
  s = {k2_62, 4, 0, 16};  // empty, but a prefix product overflows: refusing is allowed, wrapping is not
  r = -1;
  const bool ok_empty = checked_numel(shape(s), 4, &r);
  expect(!ok_empty || r == 0, "numel_empty_with_huge_prefix_never_wraps", std::to_string(r));
  s = {3, -1, 2};
  expect(!checked_numel(shape(s), 4, &r), "numel_negative_dim_refused");
  s = {};
  expect(checked_numel(shape(s), 4, &r) && r == 1, "numel_scalar_is_one");

  // ---- is_power_of_two / num_parts at the edges ----------------------------------------------
  expect(!yoso::is_power_of_two(0) && !yoso::is_power_of_two(-4) && !yoso::is_power_of_two(kMin),
         "pow2_nonpositive");
  expect(yoso::is_power_of_two(k2_62) && !yoso::is_power_of_two(kMax), "pow2_large");
  expect(yoso::num_parts(std::numeric_limits<int32_t>::max(), 1, 1) == std::numeric_limits<int32_t>::max(),
         "num_parts_max_m_tau1_D1");
  expect(yoso::num_parts(std::numeric_limits<int32_t>::max(), 1024, 30) == (k2_31 - 1 + 33) / 34,
         "num_parts_max_m_tau30_D1024");

  // ---- attributes: int64 extremes are refused, never truncated to int32 ----------------------
  for (int64_t bad : {kMin, int64_t{-1}, int64_t{0}, int64_t{31}, (int64_t{1} << 32) + 4, kMax}) {
    const std::string e = yoso::check_hash_code_len("FastHash", bad);
    expect(contains(e, "hash_code_len") && contains(e, std::to_string(bad).c_str()), "tau_refused", e);
    expect(!yoso::check_lsh_attrs(bad).empty(), "lsh_tau_refused");
  }
  for (int64_t bad : {kMin, int64_t{0}, k2_31, (int64_t{1} << 32) + 6, kMax}) {
    const std::string e = yoso::check_fast_hash_attrs(bad, 4);
    expect(contains(e, "num_hash") && contains(e, std::to_string(bad).c_str()), "num_hash_refused", e);
  }
  expect(yoso::check_fast_hash_attrs(k2_31 - 1, 30).empty(), "num_hash_max_accepted");

  // ---- FastHash shapes -------------------------------------------------------------------------
  yoso::FastHashDims fd;
  {
    // Output [B,H,S,m] far beyond int64 although every dim is "plausible": must be refused.
    const int64_t m = k2_31 - 1, tau = 1, D = 1024;
    std::vector<int64_t> x = {k2_40, k2_40, k2_40, D}, mask = {k2_40, k2_40}, sg = signs_for(k2_40, m, tau, D);
    const std::string e = yoso::check_fast_hash_shapes(shape(x), shape(mask), shape(sg), m, tau, &fd);
    expect(contains(e, "FastHash") && contains(e, "overflow"), "fh_output_overflow_refused", e);
  }
  {
    // 2^31 x 2^31 x 1 x (2^31-1) codes * 4 bytes: just past int64.
    const int64_t m = k2_31 - 1, tau = 1, D = 1;
    std::vector<int64_t> x = {k2_31, k2_31, 1, D}, mask = {k2_31, 1}, sg = signs_for(k2_31, m, tau, D);
    const std::string e = yoso::check_fast_hash_shapes(shape(x), shape(mask), shape(sg), m, tau, &fd);
    expect(contains(e, "overflow"), "fh_output_overflow_2^93_refused", e);
  }
  {
    // Largest legal everything with an empty batch: accepted or refused, never wrapped.
    const int64_t m = k2_31 - 1, tau = 1, D = 1024;
    std::vector<int64_t> x = {0, k2_40, k2_40, D}, mask = {0, k2_40}, sg = signs_for(k2_40, m, tau, D);
    const std::string e = yoso::check_fast_hash_shapes(shape(x), shape(mask), shape(sg), m, tau, &fd);
    expect(e.empty() ? (fd.B == 0 && fd.m == m && fd.P == sg[2]) : contains(e, "overflow"),
           "fh_empty_batch_huge_dims", e);
  }
  {
    std::vector<int64_t> x = {2, 2, 5, 16}, mask = {2, 5}, sg = {2, 3, 2, 16};
    for (int64_t D : {int64_t{0}, int64_t{3}, int64_t{2048}, k2_62, kMax}) {
      x[3] = D;
      const std::string e = yoso::check_fast_hash_shapes(shape(x), shape(mask), shape(sg), 6, 4, &fd);
      expect(contains(e, "power of two") && contains(e, ("D=" + std::to_string(D)).c_str()), "fh_bad_D", e);
    }
    x = {2, -2, 5, 16};
    std::string e = yoso::check_fast_hash_shapes(shape(x), shape(mask), shape(sg), 6, 4, &fd);
    expect(contains(e, "negative"), "fh_negative_dim_x", e);
    x = {2, 2, 5, 16};
    mask = {2, kMin};
    e = yoso::check_fast_hash_shapes(shape(x), shape(mask), shape(sg), 6, 4, &fd);
    expect(contains(e, "'mask'") && contains(e, "negative"), "fh_negative_dim_mask", e);
    mask = {2, 5};
    sg = {2, 3, -2, 16};
    e = yoso::check_fast_hash_shapes(shape(x), shape(mask), shape(sg), 6, 4, &fd);
    expect(contains(e, "'signs'") && contains(e, "negative"), "fh_negative_dim_signs", e);
    sg = {2, 3, 2, 16};
    std::vector<int64_t> x3 = {2, 2, 5};
    e = yoso::check_fast_hash_shapes(shape(x3), shape(mask), shape(sg), 6, 4, &fd);
    expect(contains(e, "rank 4"), "fh_rank", e);
    e = yoso::check_fast_hash_shapes(shape(x), shape(mask), shape(sg), 6, 4, &fd);
    expect(e.empty() && fd.B == 2 && fd.H == 2 && fd.S == 5 && fd.D == 16 && fd.P == 2 &&
               fd.per_part == 4 && fd.m == 6 && fd.tau == 4,
           "fh_valid_dims_filled", e);
  }

  // ---- LSHCumulation shapes --------------------------------------------------------------------
  yoso::LshDims ld;
  {
    // Sk = 0 lets Dv be anything in a real (empty) value tensor: output [1,1,4,2^60] floats = 2^64
    // bytes must be refused (this is also exercised through ONNX Runtime by the Python tests).
    std::vector<int64_t> qc = {1, 1, 4, 2}, kc = {1, 1, 0, 2}, qm = {1, 4}, km = {1, 0}, v = {1, 1, 0, int64_t{1} << 60};
    const std::string e = yoso::check_lsh_shapes(shape(qc), shape(kc), shape(qm), shape(km), shape(v), 4, &ld);
    expect(contains(e, "LSHCumulation") && contains(e, "overflow"), "lsh_output_overflow_refused", e);
  }
  {
    std::vector<int64_t> qc = {k2_40, k2_40, k2_40, 8}, kc = {k2_40, k2_40, k2_40, 8}, qm = {k2_40, k2_40},
                         km = {k2_40, k2_40}, v = {k2_40, k2_40, k2_40, kMax};
    const std::string e = yoso::check_lsh_shapes(shape(qc), shape(kc), shape(qm), shape(km), shape(v), 30, &ld);
    expect(contains(e, "overflow"), "lsh_all_huge_refused", e);
  }
  {
    // Empty batch, every other dim huge: accepted (empty output) or refused, never wrapped.
    std::vector<int64_t> qc = {0, k2_62, k2_62, k2_62}, kc = {0, k2_62, k2_62, k2_62}, qm = {0, k2_62},
                         km = {0, k2_62}, v = {0, k2_62, k2_62, k2_62};
    const std::string e = yoso::check_lsh_shapes(shape(qc), shape(kc), shape(qm), shape(km), shape(v), 30, &ld);
    expect(e.empty() ? ld.B == 0 : contains(e, "overflow"), "lsh_empty_batch_huge_dims", e);
  }
  {
    std::vector<int64_t> qc = {2, 2, 6, 4}, kc = {2, 2, 7, 4}, qm = {2, 6}, km = {2, 7}, v = {2, 2, 7, 5};
    std::string e = yoso::check_lsh_shapes(shape(qc), shape(kc), shape(qm), shape(km), shape(v), 4, &ld);
    expect(e.empty() && ld.B == 2 && ld.H == 2 && ld.Sq == 6 && ld.Sk == 7 && ld.m == 4 && ld.Dv == 5 &&
               ld.tau == 4,
           "lsh_valid_dims_filled", e);
    std::vector<int64_t> bad_v = {2, 2, 7, -1};
    e = yoso::check_lsh_shapes(shape(qc), shape(kc), shape(qm), shape(km), shape(bad_v), 4, &ld);
    expect(contains(e, "'value'") && contains(e, "negative"), "lsh_negative_dim_value", e);
    std::vector<int64_t> m0 = {2, 2, 6, 0}, km0 = {2, 2, 7, 0};
    e = yoso::check_lsh_shapes(shape(m0), shape(km0), shape(qm), shape(km), shape(v), 4, &ld);
    expect(contains(e, "m >= 1"), "lsh_m_zero", e);
    std::vector<int64_t> kc_h = {2, 3, 7, 4};
    e = yoso::check_lsh_shapes(shape(qc), shape(kc_h), shape(qm), shape(km), shape(v), 4, &ld);
    expect(contains(e, "'key_codes'"), "lsh_h_mismatch", e);
  }

  // ---- value checks at the int32 extremes --------------------------------------------------------
  {
    const int32_t codes[] = {0, (1 << 30) - 1, std::numeric_limits<int32_t>::max()};
    std::string e = yoso::check_code_values("LSHCumulation", "key_codes", 1, codes, 2, 30);
    expect(e.empty(), "codes_tau30_in_range", e);
    e = yoso::check_code_values("LSHCumulation", "key_codes", 1, codes, 3, 30);
    expect(contains(e, "2147483647") && contains(e, "flat index 2"), "codes_int32_max_refused", e);
    const int32_t neg[] = {1, std::numeric_limits<int32_t>::min()};
    e = yoso::check_code_values("LSHCumulation", "query_codes", 0, neg, 2, 1);
    expect(contains(e, "-2147483648") && contains(e, "flat index 1"), "codes_int32_min_refused", e);
    const int32_t masks[] = {0, 1, 1, std::numeric_limits<int32_t>::min()};
    e = yoso::check_mask_values("FastHash", "mask", 1, masks, 4);
    expect(contains(e, "-2147483648") && contains(e, "flat index 3"), "mask_int32_min_refused", e);
    const float signs[] = {1.0f, -1.0f, -0.0f};
    e = yoso::check_signs_values(signs, 3);
    expect(contains(e, "flat index 2"), "signs_negative_zero_refused", e);
    const float denorm[] = {1.0f, std::numeric_limits<float>::denorm_min()};
    e = yoso::check_signs_values(denorm, 2);
    expect(contains(e, "flat index 1"), "signs_denormal_refused", e);
  }

  std::printf("ALL OK %d\n", g_checks);
  return 0;
}
