// yoso_cpu_kernels.h -- internal header of the CPU ops: instruction-set dispatch (yoso_cpu.cc), the
// portable scalar kernels (yoso_cpu_scalar.cc), the x86-64 AVX2 kernels (yoso_cpu_avx2.cc) and the
// x86-64 AVX-512 kernels (yoso_cpu_avx512.cc).
//
// The library is built for the baseline x86-64 ISA (no -march=native: wheels run elsewhere). The
// AVX2+FMA and AVX-512 kernels are compiled for their ISA only, per function
// (__attribute__((target))), and selected at run time, best first:
//
//   * kAvx512 when the CPU (and OS: zmm/opmask state enabled in XCR0) support AVX-512F and
//     AVX-512BW (and AVX2+FMA, which every such CPU has);
//   * kAvx2 when the CPU (and OS) support AVX2 and FMA;
//   * kScalar otherwise (and on other architectures): the portable kernels of yoso_cpu_scalar.cc.
//
//   The environment variable YOSO_CPU_ISA=scalar|avx2|avx512 (case-insensitive) asks for a path: the
//   requested one if this CPU supports it, else the best supported one below it (avx512 on an
//   AVX2-only CPU runs avx2; any value on a CPU without AVX2 runs scalar); empty, "auto" or an
//   unknown value means the best one. YOSO_FORCE_SCALAR set to a non-empty value other than "0"
//   forces the scalar kernels whatever YOSO_CPU_ISA says (as before YOSO_CPU_ISA existed). Both
//   variables are read on every op call, so they can be toggled between runs (tests, benchmarks);
//   the kernel report (YOSO_KERNEL_REPORT: kernel=avx512 / avx2 / scalar, avx512-dense / ...) and
//   yoso::cpu::cpu_isa_name() say which path ran.
//
// Bit-exactness of FastHash (plugins/OPS.md): the SIMD Walsh-Hadamard transforms evaluate the
// contract's butterfly stages in the contract's order (stride D/2 first), one IEEE-754 rounding per
// element and stage, and apply the sign diagonals by exact multiplications by +-1:
//   * the block kernels (AVX2: 8 tokens, D = 8..64; AVX-512: up to 16 tokens, D = 1..64) hold
//     element e of the block's tokens in one register, so every butterfly is a plain vector add and
//     subtract;
//   * the AVX2 one-token kernels hold 8 consecutive elements per register: strides >= 8 are vector
//     adds/subtracts between registers; strides 4, 2, 1 inside a register use a lane permutation y
//     of x and compute fma(x, +-1, y). A fused multiply-add whose multiplier is exactly +-1 has an
//     exact product, so its single rounding is that of the plain sum y + x or difference y - x:
//     the identical IEEE operation (signed zeros, infinities and NaN included), not a contraction
//     of a real product into a sum;
//   * the AVX-512 one-token kernel (D >= 128) holds 16 consecutive elements per register; strides
//     8, 4, 2, 1 inside a register are x + y (upper lanes) and a masked y - x (lower lanes): plain
//     IEEE adds and subtracts, no FMA at all.
// Codes are then built from ordered "> 0" compares (false for +-0 and NaN), as in the contract.
// LSHCumulation: every kernel adds the keys' values into a bucket in key order and the buckets
// into a query in hash-function order, then divides by m once, so the three paths give
// bit-identical outputs (the contract itself only asks for agreement to rounding).
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

// ---- instruction-set dispatch (yoso_cpu.cc), AVX2 (yoso_cpu_avx2.cc) and AVX-512 kernels
// (yoso_cpu_avx512.cc) ----
namespace simd {

// Ordered: a better path has a larger value.
enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// Whether this CPU and OS support the AVX2 + FMA kernels (cached after the first call).
bool cpu_has_avx2_fma();

// Whether this CPU and OS support the AVX-512 kernels: AVX-512F, AVX-512BW, AVX2 and FMA (cached).
bool cpu_has_avx512();

// The best path this CPU supports (kAvx512, kAvx2 or kScalar).
Isa best_isa();

// Whether YOSO_FORCE_SCALAR asks for the portable kernels (read from the environment each call).
bool force_scalar_requested();

// The path YOSO_CPU_ISA asks for (read from the environment each call); best_isa()'s value when
// the variable is unset, empty, "auto" or unknown.
Isa requested_isa();

// The kernels the ops use now: kScalar if force_scalar_requested(), else the smaller of
// requested_isa() and best_isa() (an unsupported request falls back to the best supported path).
Isa active_isa();

// "scalar", "avx2", "avx512".
const char* isa_name(Isa isa);

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

// AVX-512 FastHash over the token rows [row_begin, row_end) (same contract as
// yoso::cpu::fast_hash_f32), every D. Requires active_isa() == kAvx512.
void fast_hash_f32_avx512(const FastHashDims& d, const float* x, const int32_t* mask,
                          const float* signs, int32_t* codes, int64_t row_begin, int64_t row_end);

// AVX-512 dense-table LSHCumulation of one (b, h) slice: the same interface, scratch rules and
// requirements as lsh_slice_dense_f32_avx2 with the lsh_avx512_* sizes below, and
// active_isa() == kAvx512.
void lsh_slice_dense_f32_avx512(const LshDims& d, const int32_t* qc, const int32_t* kc,
                                const int32_t* qm, const int32_t* km, const float* value,
                                float* out, float* scratch, int64_t* index_scratch,
                                int32_t* code_scratch);
bool lsh_avx512_applicable(const LshDims& d);
int64_t lsh_avx512_table_floats(const LshDims& d);
int64_t lsh_avx512_scratch_floats(const LshDims& d);

}  // namespace simd
}  // namespace cpu
}  // namespace yoso
