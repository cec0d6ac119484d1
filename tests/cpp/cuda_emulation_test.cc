// cuda_emulation_test.cc -- the CUDA kernels' code run on the CPU, compared with the CPU kernels.
//
// plugins/cuda/yoso_cuda_kernels.h holds every per-thread body and launch sequence of the CUDA
// backend as templates over an executor. HostExec below runs them in plain loops (a FastHash block
// = `threads` emulated threads executing each phase in turn, in forward or reversed thread order;
// atomics = plain read-modify-write), so this test covers, without a GPU:
//   * FastHash: the thread/unit index math, the parallel butterfly schedule (bit-exact codes vs
//     yoso::cpu for every D in 1..1024, many m/tau, masks, float16 x, NaN/inf/-0 inputs),
//   * LSHCumulation: the round planning (bucket-table budget, chunks over (b,h) and hash functions,
//     memset vs touched-row clearing, float32 accumulation for float16 outputs) vs yoso::cpu,
//   * device-side validation: the first invalid element and the message equal the CPU checks',
//     and invalid codes are skipped, never indexed (the test binary runs under AddressSanitizer),
//   * float16 conversions (exhaustive against the compiler's _Float16 where available),
//   * the workspace plan (monotonic in the shapes, within budget).
// Races between GPU threads are not visible here except as differences between thread orders;
// tests/gpu runs the real kernels (and compute-sanitizer) on a GPU machine.
#include <cmath>
#include <cstring>
#include <vector>

#include "yoso_cuda_kernels.h"
#include "yoso_test.h"

using namespace yoso_test;
using yoso::Half;
namespace kern = yoso::cuda::kern;

namespace {

struct HostBlock {
  int threads;
  bool reverse;
  int size() const { return threads; }
  template <class F>
  void run(F&& f) const {
    if (reverse) {
      for (int t = threads - 1; t >= 0; --t) f(t);
    } else {
      for (int t = 0; t < threads; ++t) f(t);
    }
  }
};

struct HostExec {
  int threads = kern::kFastHashThreads;
  bool reverse = false;
  int launches = 0;

  int invalid_value() const { return 1; }
  int memset(void* p, int v, size_t n) {
    if (n) std::memset(p, v, n);
    return 0;
  }
  template <class F>
  int for_each(const F& f, int64_t n) {
    ++launches;
    for (int64_t k = 0; k < n; ++k) f(reverse ? n - 1 - k : k);
    return 0;
  }
  template <class F>
  int for_each_row(const F& f, int64_t rows, int64_t cols) {
    ++launches;
    for (int64_t k = 0; k < rows; ++k) {
      const int64_t r = reverse ? rows - 1 - k : k;
      const typename F::Row st = f.row(r);
      if (!st.active) continue;
      for (int64_t c = 0; c < cols; ++c) f.col(st, reverse ? cols - 1 - c : c);
    }
    return 0;
  }
  template <typename T>
  int fast_hash(const kern::FastHashArgs<T>& a, int64_t n_blocks) {
    ++launches;
    kern::FastHashShared sh;
    const HostBlock blk{threads, reverse};
    for (int64_t k = 0; k < n_blocks; ++k) {
      std::memset(&sh, 0xff, sizeof(sh));  // garbage shared memory (NaN floats) for every block
      kern::fast_hash_block(blk, a, reverse ? n_blocks - 1 - k : k, sh);
    }
    return 0;
  }
};

// Workspace filled with garbage: the kernels must not rely on its content.
std::vector<unsigned char> garbage_workspace(size_t bytes) {
  std::vector<unsigned char> ws(bytes);
  for (size_t i = 0; i < bytes; ++i) ws[i] = static_cast<unsigned char>(0xA5 ^ (i * 131));
  return ws;
}

template <typename T>
std::vector<int32_t> emu_fast_hash(const FastHashCase& c, const std::vector<T>& x, HostExec& ex,
                                   yoso::cuda::ErrorRecord* rec_out = nullptr) {
  std::vector<int32_t> codes(static_cast<size_t>(c.d.B * c.d.H * c.d.S * c.d.m), -7);
  auto ws = garbage_workspace(yoso::cuda::fast_hash_workspace_size(c.d));
  const int rc = kern::run_fast_hash(ex, c.d, x.data(), c.mask.data(), c.signs.data(), codes.data(),
                                     ws.data(), ws.size());
  YT_CHECK(rc == 0, "run_fast_hash failed for " + c.label);
  if (rec_out) std::memcpy(rec_out, ws.data(), sizeof(*rec_out));
  return codes;
}

template <typename T>
std::vector<T> emu_lsh(const LshCase& c, const std::vector<T>& value, HostExec& ex, int64_t budget,
                       yoso::cuda::ErrorRecord* rec_out = nullptr) {
  std::vector<T> out(static_cast<size_t>(c.d.B * c.d.H * c.d.Sq * c.d.Dv));
  for (auto& o : out) std::memset(&o, 0x7f, sizeof(T));  // garbage (NaN-ish) output
  const auto type = kern::dtype_of<T>();
  auto ws = garbage_workspace(yoso::cuda::lsh_workspace_size(c.d, type, budget));
  const int rc = kern::run_lsh(ex, c.d, c.qc.data(), c.kc.data(), c.qm.data(), c.km.data(), value.data(),
                               out.data(), ws.data(), ws.size(), budget);
  YT_CHECK(rc == 0, "run_lsh failed for " + c.label);
  if (rec_out) std::memcpy(rec_out, ws.data(), sizeof(*rec_out));
  return out;
}

float as_float(float v) { return v; }
float as_float(Half h) { return yoso::half_to_float(h); }

bool record_clean(const yoso::cuda::ErrorRecord& r) {
  for (unsigned long long v : r.first_bad)
    if (v != yoso::cuda::kNoError) return false;
  return true;
}

}  // namespace

// =============================================================================================
// float16 conversions
// =============================================================================================

YT_TEST(half_widening_is_exact) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float got = yoso::half_bits_to_float_soft(static_cast<uint16_t>(h));
#if defined(__FLT16_MAX__)
    _Float16 ref;
    const uint16_t bits = static_cast<uint16_t>(h);
    std::memcpy(&ref, &bits, 2);
    const float want = static_cast<float>(ref);
    if (std::isnan(want)) {
      YT_CHECK(std::isnan(got), "half " + std::to_string(h) + " must widen to NaN");
    } else {
      YT_CHECK(std::memcmp(&got, &want, 4) == 0, "half " + std::to_string(h) + " widened wrongly");
    }
#endif
    if (!std::isnan(got)) {  // round trip of every non-NaN half
      YT_CHECK(yoso::float_to_half_bits_soft(got) == h, "round trip of half " + std::to_string(h));
    }
  }
}

YT_TEST(half_rounding_matches_compiler) {
  // Boundaries: every half value, its neighbours and the midpoints to the next half, +-1 float ulp.
  std::vector<float> probes = {0.0f, -0.0f, 65504.0f, 65519.996f, 65520.0f, 65536.0f, 1e30f, -1e30f,
                               std::numeric_limits<float>::infinity(), 5.96e-8f, 2.98e-8f, 2.9802322e-8f,
                               1e-45f, -1e-45f, 6.1035156e-5f, 6.1e-5f};
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const float a = yoso::half_bits_to_float_soft(static_cast<uint16_t>(h));
    const float b = yoso::half_bits_to_float_soft(static_cast<uint16_t>(h + 1));
    const float mid = a + (b - a) * 0.5f;
    for (float v : {a, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      probes.push_back(v);
      probes.push_back(-v);
    }
  }
  // A sweep through all float bit patterns.
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 65537) {
    float f;
    const uint32_t bits = static_cast<uint32_t>(u);
    std::memcpy(&f, &bits, 4);
    probes.push_back(f);
  }
  int checked = 0;
  for (float f : probes) {
    const uint16_t got = yoso::float_to_half_bits_soft(f);
#if defined(__FLT16_MAX__)
    const _Float16 ref = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &ref, 2);
    if (std::isnan(f)) {
      YT_CHECK((got & 0x7c00) == 0x7c00 && (got & 0x3ff) != 0, "NaN must stay NaN");
    } else {
      YT_CHECK(got == want, "float " + std::to_string(f) + " -> half " + std::to_string(got) +
                                ", compiler says " + std::to_string(want));
    }
    ++checked;
#else
    (void)got;
#endif
  }
  YT_CHECK(yoso::float_to_half_bits_soft(65520.0f) == 0x7c00, "65520 rounds to inf");
  YT_CHECK(yoso::float_to_half_bits_soft(65519.0f) == 0x7bff, "65519 rounds to 65504");
  YT_CHECK(yoso::float_to_half_bits_soft(2.98023224e-8f) == 0, "2^-25 ties to even (0)");
  YT_CHECK(yoso::float_to_half_bits_soft(-1.0f) == 0xbc00, "-1");
  std::printf("  %d conversions compared with _Float16\n", checked);
}

// =============================================================================================
// Core primitives used by the kernels
// =============================================================================================

YT_TEST(wht_pair_index_enumerates_each_stage) {
  for (int D = 2; D <= 1024; D *= 2) {
    for (int s = D / 2; s >= 1; s /= 2) {
      std::vector<int> seen(static_cast<size_t>(D), 0);
      int prev = -1;
      for (int k = 0; k < D / 2; ++k) {
        const int i = yoso::wht_pair_index(k, s);
        YT_CHECK(i > prev && (i % (2 * s)) < s && i + s < D, "D=" + std::to_string(D) + " s=" + std::to_string(s));
        prev = i;
        seen[static_cast<size_t>(i)]++;
        seen[static_cast<size_t>(i + s)]++;
      }
      for (int v : seen) YT_CHECK(v == 1, "every element in exactly one butterfly");
    }
  }
}

// =============================================================================================
// FastHash
// =============================================================================================

YT_TEST(fast_hash_matches_cpu_bit_exact) {
  Rng rng(1234);
  int cases = 0;
  const int64_t Ds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
  for (int64_t D : Ds) {
    const int taus[] = {1, 2, 3, 5, 8, 9, 16, 30};
    for (int tau : taus) {
      if (tau > D) continue;
      const int64_t per_part = D / tau;
      const int64_t ms[] = {1, per_part, per_part + 1, 3 * per_part + 2, 128};
      for (int64_t m : ms) {
        if (D >= 256 && m > per_part + 1 && (rng() % 3)) continue;  // keep the run short
        const int64_t S = static_cast<int64_t>(1 + rng() % 13);
        const MaskMode mode = static_cast<MaskMode>(rng() % 3);
        const auto c = make_fast_hash_case(rng, 1 + static_cast<int64_t>(rng() % 2), 1 + static_cast<int64_t>(rng() % 3),
                                           S, D, m, tau, mode, false, true);
        const auto want = cpu_fast_hash(c);
        HostExec fwd;
        const auto got = emu_fast_hash(c, c.x, fwd);
        YT_CHECK(got == want, "codes differ (forward threads) for " + c.label);
        HostExec rev;
        rev.reverse = true;
        YT_CHECK(emu_fast_hash(c, c.x, rev) == want, "codes differ (reversed threads) for " + c.label);
        ++cases;
      }
    }
  }
  std::printf("  %d shapes\n", cases);
}

YT_TEST(fast_hash_sequence_lengths_and_block_sizes) {
  Rng rng(99);
  const int64_t Ss[] = {1, 13, 4099};
  for (int64_t S : Ss) {
    const auto c = make_fast_hash_case(rng, 2, 2, S, 64, 32, 9, MaskMode::kRightPadded, false, false);
    const auto want = cpu_fast_hash(c);
    for (int threads : {128, 1, 7, 33}) {  // the strided loops must not depend on blockDim
      HostExec ex;
      ex.threads = threads;
      YT_CHECK(emu_fast_hash(c, c.x, ex) == want,
               "S=" + std::to_string(S) + " threads=" + std::to_string(threads));
    }
  }
}

YT_TEST(fast_hash_float16_input) {
  Rng rng(7);
  for (int64_t D : {8, 64, 1024}) {
    const auto c = make_fast_hash_case(rng, 2, 3, 13, D, 16, 5, MaskMode::kRandom, true, true);
    const auto want = cpu_fast_hash(c);  // on the exactly widened values
    HostExec ex;
    YT_CHECK(emu_fast_hash(c, to_half(c.x), ex) == want, "float16 x for " + c.label);
  }
}

YT_TEST(fast_hash_masked_and_empty) {
  Rng rng(3);
  auto c = make_fast_hash_case(rng, 2, 2, 5, 16, 7, 4, MaskMode::kAllZeros, false, false);
  HostExec ex;
  const auto got = emu_fast_hash(c, c.x, ex);
  for (int32_t v : got) YT_CHECK(v == 0, "masked tokens hash to 0");
  // B = 0 and S = 0: empty outputs, nothing launched but the validation of the signs.
  for (auto bs : {std::pair<int64_t, int64_t>{0, 4}, std::pair<int64_t, int64_t>{2, 0}}) {
    auto e = make_fast_hash_case(rng, bs.first, 2, bs.second, 16, 7, 4, MaskMode::kAllOnes, false, false);
    HostExec ex2;
    yoso::cuda::ErrorRecord rec;
    const auto codes = emu_fast_hash(e, e.x, ex2, &rec);
    YT_CHECK(codes.empty(), "empty output");
    YT_CHECK(record_clean(rec), "no error for valid empty input");
    YT_CHECK(ex2.launches == 1, "only the validation runs, got " + std::to_string(ex2.launches) + " launches");
  }
}

YT_TEST(fast_hash_validation_reports_first_invalid_like_cpu) {
  Rng rng(11);
  auto c = make_fast_hash_case(rng, 2, 2, 9, 16, 7, 4, MaskMode::kRandom, false, false);
  // Invalid mask values at two places: the first must be reported (and the mask wins over signs).
  c.mask[5] = 2;
  c.mask[11] = -1;
  c.signs[3] = 0.5f;
  HostExec ex;
  ex.reverse = true;  // atomicMin must still find the smallest index
  yoso::cuda::ErrorRecord rec;
  (void)emu_fast_hash(c, c.x, ex, &rec);
  yoso::cuda::InputCheck checks[yoso::cuda::kMaxCheckedInputs];
  const int n = yoso::cuda::fast_hash_checks(c.d, c.mask.data(), c.signs.data(), checks);
  const int i = yoso::cuda::first_failed_check(rec, checks, n);
  YT_CHECK(i == 0, "mask reported first");
  if (i == 0) {
    const int64_t at = static_cast<int64_t>(rec.first_bad[checks[i].slot]);
    uint32_t raw;
    std::memcpy(&raw, &c.mask[static_cast<size_t>(at)], 4);
    const std::string got = yoso::cuda::input_error_message(checks[i], at, raw);
    const std::string want = yoso::check_mask_values("FastHash", "mask", 1, c.mask.data(), c.d.B * c.d.S);
    YT_CHECK(got == want, "message: " + got + " | cpu: " + want);
  }
  YT_CHECK(rec.first_bad[1] == 3, "signs: first invalid at 3");
  // Signs only.
  auto s = make_fast_hash_case(rng, 1, 2, 4, 8, 3, 2, MaskMode::kAllOnes, false, false);
  s.signs[7] = std::numeric_limits<float>::quiet_NaN();
  s.signs[2] = -0.0f;
  HostExec ex2;
  (void)emu_fast_hash(s, s.x, ex2, &rec);
  const int n2 = yoso::cuda::fast_hash_checks(s.d, s.mask.data(), s.signs.data(), checks);
  const int j = yoso::cuda::first_failed_check(rec, checks, n2);
  YT_CHECK(j == 1 && rec.first_bad[1] == 2, "signs: first invalid at 2");
  if (j == 1) {
    uint32_t raw;
    std::memcpy(&raw, &s.signs[2], 4);
    const std::string got = yoso::cuda::input_error_message(checks[j], 2, raw);
    YT_CHECK(got == yoso::check_signs_values(s.signs.data(), static_cast<int64_t>(s.signs.size())), got);
  }
}

// =============================================================================================
// LSHCumulation
// =============================================================================================

namespace {

template <typename T>
void compare_lsh(const LshCase& c, const std::vector<T>& got, const std::vector<float>& want,
                 const std::vector<float>& abs_ref, const std::string& what) {
  YT_CHECK(got.size() == want.size(), "size " + what);
  int bad = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const float g = as_float(got[i]);
    if (!lsh_close(g, want[i], abs_ref[i], std::is_same<T, Half>::value)) {
      if (++bad <= 3)
        YT_CHECK(false, what + " " + c.label + ": element " + std::to_string(i) + " got " + std::to_string(g) +
                            " want " + std::to_string(want[i]));
    }
  }
}

// Runs one case through the emulated kernels with several table budgets (forcing the different
// round structures) and both thread orders.
void check_lsh_case(const LshCase& c) {
  const auto want = cpu_lsh(c, c.value);
  const auto abs_ref = cpu_lsh(c, abs_values(c.value));
  const int64_t table = (int64_t{1} << c.d.tau) * std::max<int64_t>(1, c.d.Dv);
  const int64_t budgets[] = {0, table, table * std::max<int64_t>(1, c.d.m) * 2, table * 3};
  for (int64_t budget : budgets) {
    for (bool rev : {false, true}) {
      HostExec ex;
      ex.reverse = rev;
      yoso::cuda::ErrorRecord rec;
      const auto got = emu_lsh(c, c.value, ex, budget, &rec);
      compare_lsh(c, got, want, abs_ref, "float32 budget=" + std::to_string(budget));
      YT_CHECK(record_clean(rec), "no validation error for valid input " + c.label);
    }
    HostExec ex;
    const auto half_value = to_half(c.value);  // values are exactly representable
    const auto got_h = emu_lsh(c, half_value, ex, budget);
    compare_lsh(c, got_h, want, abs_ref, "float16 budget=" + std::to_string(budget));
  }
}

}  // namespace

YT_TEST(lsh_matches_cpu_random_shapes) {
  Rng rng(2024);
  int cases = 0;
  const int taus[] = {1, 2, 4, 9, 16};
  const int64_t Dvs[] = {1, 3, 17, 64};
  const int64_t ms[] = {1, 3, 32};
  for (int tau : taus) {
    for (int64_t Dv : Dvs) {
      for (int64_t m : ms) {
        if (tau == 16 && (Dv > 3 || m > 3)) continue;  // 2^16 x Dv tables: keep the run short
        const int64_t Sq = static_cast<int64_t>(rng() % 14);
        const int64_t Sk = static_cast<int64_t>(rng() % 40);
        const auto c = make_lsh_case(rng, 1 + static_cast<int64_t>(rng() % 2), 1 + static_cast<int64_t>(rng() % 3),
                                     Sq, Sk, m, Dv, tau, static_cast<MaskMode>(rng() % 3),
                                     static_cast<MaskMode>(rng() % 4), true);
        check_lsh_case(c);
        ++cases;
      }
    }
  }
  std::printf("  %d shapes x 4 budgets\n", cases);
}

YT_TEST(lsh_long_sequences) {
  Rng rng(5);
  for (int64_t S : {1, 13, 4099}) {
    const auto c = make_lsh_case(rng, 1, 2, S, S, 8, 32, 8, MaskMode::kRightPadded, MaskMode::kRightPadded, true);
    check_lsh_case(c);
  }
}

YT_TEST(lsh_edge_shapes) {
  Rng rng(17);
  // No keys: all-zero output. No queries / no batch / Dv = 0: empty output.
  const int64_t shapes[][6] = {{2, 2, 5, 0, 3, 4}, {2, 2, 0, 5, 3, 4}, {0, 2, 5, 5, 3, 4}, {1, 1, 3, 3, 2, 0}};
  for (const auto& s : shapes) {
    const auto c = make_lsh_case(rng, s[0], s[1], s[2], s[3], s[4], s[5], 4, MaskMode::kAllOnes,
                                 MaskMode::kAllOnes, true);
    HostExec ex;
    yoso::cuda::ErrorRecord rec;
    const auto got = emu_lsh(c, c.value, ex, 0, &rec);
    const auto want = cpu_lsh(c, c.value);
    YT_CHECK(got == want, "edge shape " + c.label);
    YT_CHECK(record_clean(rec), "valid edge input " + c.label);
  }
  // Every key masked: zeros; every query masked: zeros.
  for (auto modes : {std::pair<MaskMode, MaskMode>{MaskMode::kAllOnes, MaskMode::kAllZeros},
                     std::pair<MaskMode, MaskMode>{MaskMode::kAllZeros, MaskMode::kAllOnes}}) {
    const auto c = make_lsh_case(rng, 2, 2, 7, 9, 4, 5, 3, modes.first, modes.second, true);
    HostExec ex;
    const auto got = emu_lsh(c, c.value, ex, 0);
    for (float v : got) YT_CHECK(v == 0.0f && !std::signbit(v), "masked: +0");
  }
}

YT_TEST(lsh_invalid_codes_are_reported_and_never_indexed) {
  Rng rng(23);
  auto c = make_lsh_case(rng, 2, 2, 6, 7, 3, 4, 4, MaskMode::kRandom, MaskMode::kRandom, true);
  // Out-of-range codes, also on masked tokens; far outside so an unchecked index would be caught
  // by AddressSanitizer.
  c.kc[4] = 1 << 20;
  c.kc[9] = -5;
  c.qc[2] = 16;
  c.qc[1] = std::numeric_limits<int32_t>::min();
  HostExec ex;
  yoso::cuda::ErrorRecord rec;
  (void)emu_lsh(c, c.value, ex, 0, &rec);
  YT_CHECK(rec.first_bad[2] == 1, "query_codes: first invalid at 1");
  YT_CHECK(rec.first_bad[3] == 4, "key_codes: first invalid at 4");
  yoso::cuda::InputCheck checks[yoso::cuda::kMaxCheckedInputs];
  const int n = yoso::cuda::lsh_checks(c.d, c.qc.data(), c.kc.data(), c.qm.data(), c.km.data(), checks);
  const int i = yoso::cuda::first_failed_check(rec, checks, n);
  YT_CHECK(i == 2, "query_codes reported first (after the masks), like the CPU");
  if (i == 2) {
    uint32_t raw;
    std::memcpy(&raw, &c.qc[1], 4);
    const std::string got = yoso::cuda::input_error_message(checks[i], 1, raw);
    const std::string want = yoso::check_code_values("LSHCumulation", "query_codes", 0, c.qc.data(),
                                                     static_cast<int64_t>(c.qc.size()), c.d.tau);
    YT_CHECK(got == want, got + " | " + want);
  }
  // Invalid masks are found before codes.
  c.km[3] = 7;
  (void)emu_lsh(c, c.value, ex, 0, &rec);
  YT_CHECK(yoso::cuda::first_failed_check(rec, checks, n) == 1 && rec.first_bad[1] == 3, "key_mask at 3");
}

YT_TEST(lsh_plan_is_bounded_and_monotonic) {
  Rng rng(31);
  for (int trial = 0; trial < 2000; ++trial) {
    yoso::LshDims a;
    a.B = static_cast<int64_t>(rng() % 9);
    a.H = 1 + static_cast<int64_t>(rng() % 16);
    a.Sq = static_cast<int64_t>(rng() % 5000);
    a.Sk = static_cast<int64_t>(rng() % 5000);
    a.m = 1 + static_cast<int64_t>(rng() % 256);
    a.Dv = 1 + static_cast<int64_t>(rng() % 512);
    a.tau = 1 + static_cast<int>(rng() % 16);
    if (!yoso::cuda::check_lsh_cuda_limits(a.tau, a.Dv).empty()) continue;
    yoso::LshDims b = a;  // componentwise larger shapes
    b.B += static_cast<int64_t>(rng() % 4);
    b.H += static_cast<int64_t>(rng() % 4);
    b.Sq += static_cast<int64_t>(rng() % 100);
    b.Sk += static_cast<int64_t>(rng() % 100);
    for (auto type : {yoso::cuda::DType::kFloat32, yoso::cuda::DType::kFloat16}) {
      for (int64_t budget : {int64_t{0}, int64_t{1} << 12, int64_t{1} << 20}) {
        const auto pa = yoso::cuda::plan_lsh(a, type, budget);
        const auto pb = yoso::cuda::plan_lsh(b, type, budget);
        YT_CHECK(pa.workspace_bytes <= pb.workspace_bytes, "monotonic workspace");
        const int64_t eff = budget > 0 ? budget : yoso::cuda::kDefaultTableBudgetFloats;
        YT_CHECK(static_cast<int64_t>(pa.table_bytes / 4) <= std::max(eff, pa.table_floats), "table budget");
        YT_CHECK(pa.bh_chunk >= 1 && pa.f_chunk >= 1 && pa.f_chunk <= std::max<int64_t>(1, a.m), "chunks");
        YT_CHECK(pa.table_offset % yoso::cuda::kAlignment == 0 && pa.acc_offset % yoso::cuda::kAlignment == 0,
                 "aligned");
      }
    }
  }
  yoso::LshDims big;
  big.B = 64;
  big.H = 16;
  big.Sq = big.Sk = 65536;
  big.m = 128;
  big.Dv = 128;
  big.tau = 16;
  const auto p = yoso::cuda::plan_lsh(big, yoso::cuda::DType::kFloat16);
  YT_CHECK(p.table_bytes <= (size_t{1} << 25) * 4, "default budget: 128 MiB of tables");
  YT_CHECK(p.workspace_bytes < (size_t{1} << 30), "bounded workspace for huge shapes");
  YT_CHECK(!yoso::cuda::check_lsh_cuda_limits(17, 64).empty(), "tau 17 refused on CUDA");
  YT_CHECK(!yoso::cuda::check_lsh_cuda_limits(16, 8192).empty(), "2^16 x 8192 table refused");
  YT_CHECK(yoso::cuda::check_lsh_cuda_limits(16, 4096).empty(), "2^16 x 4096 table allowed");
}

int main(int argc, char** argv) { return yoso_test::run_all(argc, argv); }
