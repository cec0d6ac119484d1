// yoso_core.h -- backend-neutral math of the two com.yoso ops (see plugins/OPS.md).
//
// Everything here is a small inline function with no allocation, no exceptions and no library
// dependency beyond <cstdint>, so the same code compiles for the host (the ONNX Runtime CPU
// kernels) and, via YOSO_HD, for the CUDA kernels (plugins/cuda), which build on the same
// primitives (wht_butterfly, wht_pair_index, pack_code, is_valid_*) so that the CPU tests also
// exercise the GPU's per-element math.
//
// Bit-exactness: FastHash codes must match the PyTorch reference bit for bit. The Walsh-Hadamard
// transform below evaluates exactly the butterfly stages OPS.md prescribes (stride D/2 first) with
// one IEEE-754 add or subtract per element and stage; callers must compile it without
// -ffast-math and with -ffp-contract=off (the CMake build does).
#pragma once

#include <cstdint>

#include "yoso_limits.h"

#if defined(__CUDACC__)
#define YOSO_HD __host__ __device__
#else
#define YOSO_HD
#endif

namespace yoso {

// Limits fixed by the op contract (kMaxHashDim, kMaxHashCodeLen): yoso_limits.h.

YOSO_HD inline bool is_power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

// per_part = floor(D / tau): codes produced by one Hadamard projection of width D.
YOSO_HD inline int64_t codes_per_part(int64_t hash_dim, int64_t hash_code_len) {
  return hash_dim / hash_code_len;
}

// P = ceil(m / per_part): number of projections ("parts") FastHash needs for m codes.
YOSO_HD inline int64_t num_parts(int64_t num_hash, int64_t hash_dim, int64_t hash_code_len) {
  const int64_t per_part = codes_per_part(hash_dim, hash_code_len);
  return (num_hash + per_part - 1) / per_part;
}

// Unnormalised Walsh-Hadamard transform of a[0..D), D a power of two, in the contract's order:
// for s = D/2, D/4, ..., 1: (a[i], a[i+s]) <- (a[i] + a[i+s], a[i] - a[i+s]) for i mod 2s < s.
// Butterflies within a stage are independent; only the stage order matters for the result.
// One butterfly of a WHT stage: (a, b) <- (a + b, a - b), one IEEE add and one subtract.
YOSO_HD inline void wht_butterfly(float* a, float* b) {
  const float u = *a;
  const float v = *b;
  *a = u + v;
  *b = u - v;
}

// Index i of the first element of butterfly k (0 <= k < D/2) in the stage of stride s (a power of
// two): the butterflies of a stage, in increasing k, are the i with (i mod 2s) < s in increasing
// order, paired with i + s. Lets D/2 threads run one stage in parallel (see plugins/cuda).
YOSO_HD inline int wht_pair_index(int k, int s) { return ((k & ~(s - 1)) << 1) | (k & (s - 1)); }

YOSO_HD inline void fwht_inplace(float* a, int D) {
  for (int s = D >> 1; s >= 1; s >>= 1) {
    for (int base = 0; base < D; base += 2 * s) {
      for (int i = base; i < base + s; ++i) wht_butterfly(a + i, a + i + s);
    }
  }
}

// t <- WHT(t * sign) elementwise (sign entries are exactly +-1, so the product is exact).
YOSO_HD inline void sign_then_fwht(float* t, const float* sign, int D) {
  for (int i = 0; i < D; ++i) t[i] = t[i] * sign[i];
  fwht_inplace(t, D);
}

// One code from tau transformed values: bit i is set iff bits[i] > 0 (OPS.md FastHash step 5).
YOSO_HD inline int32_t pack_code(const float* bits, int tau) {
  uint32_t code = 0;
  for (int i = 0; i < tau; ++i) {
    // `> 0.0f` is false for +0, -0 and NaN: those give bit 0 as the contract requires.
    code |= static_cast<uint32_t>(bits[i] > 0.0f) << i;
  }
  return static_cast<int32_t>(code);
}

// Value rules of the contract, shared by the host checks (yoso_validate.h) and device-side checks.
YOSO_HD inline bool is_valid_mask_value(int32_t v) { return v == 0 || v == 1; }
YOSO_HD inline bool is_valid_sign_value(float v) { return v == 1.0f || v == -1.0f; }
YOSO_HD inline bool is_valid_code_value(int32_t c, int tau) {
  return c >= 0 && static_cast<int64_t>(c) < (int64_t{1} << tau);
}

// Hashes one token for one part p (OPS.md FastHash steps 1-5).
//   x        : the token's D input values (already float32)
//   signs_h  : signs[h] of shape [3, P, D] (the head's three diagonals for all parts)
//   t        : scratch of D floats
//   codes    : the token's output row codes[b, h, s, 0..m); entries f = p*per_part + j < m written
YOSO_HD inline void hash_token_part(const float* x, const float* signs_h, int64_t P, int64_t p,
                                    int D, int tau, int64_t per_part, int64_t m, float* t,
                                    int32_t* codes) {
  const int64_t dd = static_cast<int64_t>(D);
  for (int i = 0; i < D; ++i) t[i] = x[i];
  sign_then_fwht(t, signs_h + (0 * P + p) * dd, D);
  sign_then_fwht(t, signs_h + (1 * P + p) * dd, D);
  sign_then_fwht(t, signs_h + (2 * P + p) * dd, D);
  for (int64_t j = 0; j < per_part; ++j) {
    const int64_t f = p * per_part + j;
    if (f >= m) break;
    codes[f] = pack_code(t + j * tau, tau);
  }
}

// Hashes one token for all P parts into codes[0..m), or writes zeros for a masked token.
YOSO_HD inline void hash_token(const float* x, bool keep, const float* signs_h, int64_t P, int D,
                               int tau, int64_t per_part, int64_t m, float* t, int32_t* codes) {
  if (!keep) {
    for (int64_t f = 0; f < m; ++f) codes[f] = 0;
    return;
  }
  for (int64_t p = 0; p < P; ++p) hash_token_part(x, signs_h, P, p, D, tau, per_part, m, t, codes);
}

}  // namespace yoso
