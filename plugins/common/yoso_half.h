// yoso_half.h -- IEEE-754 binary16 ("fp16") storage type and exact conversions, host and device.
//
// The ops take float16 `x` (FastHash) and `value` (LSHCumulation) tensors; all arithmetic is done
// in float32 (plugins/OPS.md). `Half` is a 16-bit storage type, layout-compatible with CUDA's
// __half, ONNX Runtime's Ort::Float16_t and TensorRT's kHALF buffers, so device pointers of any of
// them can be reinterpreted as `const Half*`.
//
// Conversions: float16 -> float32 is exact; float32 -> float16 rounds to nearest, ties to even
// (what __float2half_rn and numpy do), overflow gives +-inf, NaN stays NaN. Device code uses the
// CUDA intrinsics; host code (the CPU emulation of the kernels, the tests) uses the bit-level
// implementation below, which the unit tests compare with the compiler's _Float16 exhaustively.
#pragma once

#include <cstdint>
#include <cstring>

#include "yoso_core.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif

namespace yoso {

struct Half {
  uint16_t bits;
};
static_assert(sizeof(Half) == 2, "Half must be 16 bits");

YOSO_HD inline uint32_t float_as_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
}

YOSO_HD inline float bits_as_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

// Exact widening (software path; see half_to_float for the dispatching version).
YOSO_HD inline float half_bits_to_float_soft(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1fu) return bits_as_float(sign | 0x7f800000u | (man << 13));  // inf / NaN
  if (exp != 0) return bits_as_float(sign | ((exp + 112u) << 23) | (man << 13));
  if (man == 0) return bits_as_float(sign);  // +-0
  // Subnormal: man * 2^-24; normalise so that bit 10 is the implicit one.
  uint32_t shift = 0;
  while ((man & 0x400u) == 0) {
    man <<= 1;
    ++shift;
  }
  return bits_as_float(sign | ((113u - shift) << 23) | ((man & 0x3ffu) << 13));
}

// Round to nearest even (software path).
YOSO_HD inline uint16_t float_to_half_bits_soft(float f) {
  uint32_t x = float_as_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) {  // inf or NaN (NaN -> canonical quiet NaN)
    return static_cast<uint16_t>(sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u));
  }
  if (x >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65536: overflow
  if (x < 0x38800000u) {
    // Below the smallest normal half (2^-14): the result is a multiple of 2^-24. Adding 0.5
    // (whose float ulp is 2^-24) makes the float adder round |f| to that grid, ties to even; the
    // low mantissa bits of the sum are then the half's subnormal mantissa (0x400 = 2^-14 rounds
    // up into the smallest normal, which has the same bit pattern).
    const float sum = bits_as_float(x) + 0.5f;
    return static_cast<uint16_t>(sign | (float_as_bits(sum) - 0x3f000000u));
  }
  // Normal range: drop 13 mantissa bits with round-to-nearest-even, rebias the exponent
  // (127 - 15 = 112). A carry out of the mantissa correctly bumps the exponent (up to inf).
  const uint32_t odd = (x >> 13) & 1u;
  x += 0xfffu + odd;
  return static_cast<uint16_t>(sign | ((x - (112u << 23)) >> 13));
}

YOSO_HD inline float half_to_float(Half h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h.bits));
#else
  return half_bits_to_float_soft(h.bits);
#endif
}

YOSO_HD inline Half float_to_half(float f) {
#if defined(__CUDA_ARCH__)
  return Half{__half_as_ushort(__float2half_rn(f))};
#else
  return Half{float_to_half_bits_soft(f)};
#endif
}

// Element access for the two storage types of the float tensors.
YOSO_HD inline float load_as_float(const float* p, int64_t i) { return p[i]; }
YOSO_HD inline float load_as_float(const Half* p, int64_t i) { return half_to_float(p[i]); }
YOSO_HD inline void store_from_float(float* p, int64_t i, float v) { p[i] = v; }
YOSO_HD inline void store_from_float(Half* p, int64_t i, float v) { p[i] = float_to_half(v); }

}  // namespace yoso
