// yoso_cpu_kernels.h -- internal header of the CPU ops: instruction-set dispatch (yoso_cpu.cc), the
// portable scalar kernels (yoso_cpu_scalar.cc) and the x86-64 AVX2 kernels (yoso_cpu_avx2.cc).
//
// The library is built for the baseline x86-64 ISA (no -march=native: wheels run elsewhere). The
// AVX2+FMA kernels are compiled for that ISA only, per function (__attribute__((target))), and
// selected at run time:
//
//   * active_isa() is kAvx2 when the CPU (and OS) support AVX2 and FMA, unless the environment
//     variable YOSO_FORCE_SCALAR is set to a non-empty value other than "0": then (and on other
//     CPUs / architectures) the portable scalar kernels of yoso_cpu_scalar.cc run. The
//     variable is read on every op call, so it can be toggled between runs (tests, benchmarks).
//
// Bit-exactness of FastHash (plugins/OPS.md): the AVX2 Walsh-Hadamard transforms evaluate the
// contract's butterfly stages in the contract's order (stride D/2 first), one IEEE-754 rounding per
// element and stage, and apply the sign diagonals by exact multiplications by +-1:
//   * the 8-token block kernel (D = 8..64) holds element e of 8 tokens in one register, so every
//     butterfly is a plain vector add and subtract;
//   * the one-token kernels hold 8 consecutive elements per register: strides >= 8 are vector
//     adds/subtracts between registers; strides 4, 2, 1 inside a register use a lane permutation y
//     of x and compute fma(x, +-1, y). A fused multiply-add whose multiplier is exactly +-1 has an
//     exact product, so its single rounding is that of the plain sum y + x or difference y - x:
//     the identical IEEE operation (signed zeros, infinities and NaN included), not a contraction
//     of a real product into a sum.
// Codes are then built from ordered "> 0" compares (false for +-0 and NaN), as in the contract.
//
// These functions are internal to the CPU kernels (only plugins/cpu/*.cc include this header) and
// expect inputs validated by yoso_validate.h, like the functions of yoso_cpu.h.
#pragma once

#include <cstdint>

#include "yoso_validate.h"

// YOSO_NO_X86_SIMD (a compile definition) builds the portable kernels only, as on other CPUs.
#if (defined(__x86_64__) || defined(__i386__)) && !defined(YOSO_NO_X86_SIMD)
#define YOSO_X86_SIMD 1
#else
#define YOSO_X86_SIMD 0
#endif

namespace yoso {
namespace cpu {

// Largest dense bucket table (floats) a task allocates: 2^20 floats = 4 MiB.
constexpr int64_t kDenseTableMaxFloats = int64_t{1} << 20;

// ---- portable scalar kernels (yoso_cpu_scalar.cc) ----
namespace scalar {

// FastHash over the token rows [row_begin, row_end) (same contract as yoso::cpu::fast_hash_f32).
void fast_hash_f32(const FastHashDims& d, const float* x, const int32_t* mask, const float* signs,
                   int32_t* codes, int64_t row_begin, int64_t row_end);

// LSHCumulation over the (b, h) slices [slice_begin, slice_end) (same contract as
// yoso::cpu::lsh_cumulation_f32) with a dense 2^tau x Dv table (`dense`) or a compact table of the
// occupied buckets. Allocates its scratch once per call; throws std::bad_alloc only.
void lsh_cumulation_f32(const LshDims& d, bool dense, const int32_t* query_codes,
                        const int32_t* key_codes, const int32_t* query_mask,
                        const int32_t* key_mask, const float* value, float* output,
                        int64_t slice_begin, int64_t slice_end);

}  // namespace scalar

// ---- instruction-set dispatch (yoso_cpu.cc) and AVX2 kernels (yoso_cpu_avx2.cc) ----
namespace simd {

enum class Isa { kScalar, kAvx2 };

// Whether this CPU and OS support the AVX2 + FMA kernels (cached after the first call).
bool cpu_has_avx2_fma();

// Whether YOSO_FORCE_SCALAR asks for the portable kernels (read from the environment each call).
bool force_scalar_requested();

// The kernels the ops use now: kAvx2 iff cpu_has_avx2_fma() and not force_scalar_requested().
Isa active_isa();

// AVX2 FastHash over the token rows [row_begin, row_end) (same contract as
// yoso::cpu::fast_hash_f32). Requires active_isa() == kAvx2 and D >= 8.
void fast_hash_f32_avx2(const FastHashDims& d, const float* x, const int32_t* mask,
                        const float* signs, int32_t* codes, int64_t row_begin, int64_t row_end);

// AVX2 dense-table LSHCumulation of one (b, h) slice (the pointers are already offset to the
// slice; qm/km are the slice's batch row of the masks). Writes all of out[Sq, Dv].
//   scratch       : lsh_avx2_scratch_floats(d) floats, 64-byte aligned, whose first
//                   lsh_avx2_table_floats(d) (the bucket tables) are zero; they are left zero, so
//                   the scratch serves the next slice as is
//   index_scratch : d.Sk + d.Sq int64
//   code_scratch  : (d.Sk + d.Sq) * d.m int32
// Requires active_isa() == kAvx2, d.Sk >= 1, d.Sq >= 1, d.Dv >= 1.
void lsh_slice_dense_f32_avx2(const LshDims& d, const int32_t* qc, const int32_t* kc,
                              const int32_t* qm, const int32_t* km, const float* value,
                              float* out, float* scratch, int64_t* index_scratch,
                              int32_t* code_scratch);

// Whether lsh_slice_dense_f32_avx2 handles these sizes (its per-chunk bucket table is at most
// 2^20 floats); the caller also requires the dense mode (yoso::cpu::lsh_uses_dense_table).
bool lsh_avx2_applicable(const LshDims& d);

// Floats of the bucket tables at the start of the scratch (one block of hash functions, one chunk).
int64_t lsh_avx2_table_floats(const LshDims& d);

// Scratch floats lsh_slice_dense_f32_avx2 needs: the bucket tables of a block of hash functions
// for one column chunk, and the packed value and output chunks.
int64_t lsh_avx2_scratch_floats(const LshDims& d);

}  // namespace simd
}  // namespace cpu
}  // namespace yoso
