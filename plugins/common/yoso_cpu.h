// yoso_cpu.h -- CPU loops of the com.yoso ops over the math in yoso_core.h.
//
// The functions process a contiguous range of independent work items so that a host framework
// can split the work over its own thread pool (ONNX Runtime: KernelContext_ParallelFor). They
// expect inputs already validated by yoso_validate.h (shapes, mask values, code ranges) and never
// read or write outside the tensors described by the dims. Only float32 is implemented so far.
// On x86-64 CPUs with AVX2+FMA they run SIMD kernels chosen at run time (yoso_cpu_simd.h; the
// environment variable YOSO_FORCE_SCALAR=1 forces the portable ones); results are the same.
#pragma once

#include <cstdint>

#include "yoso_validate.h"

namespace yoso {
namespace cpu {

// FastHash for the token rows [row_begin, row_end) of the flattened [B*H*S] row space
// (row = (b*H + h)*S + s): writes codes[row, 0..m). No allocation; cannot fail.
void fast_hash_f32(const FastHashDims& d, const float* x, const int32_t* mask, const float* signs,
                   int32_t* codes, int64_t row_begin, int64_t row_end);

// LSHCumulation for the (b, h) slices [slice_begin, slice_end) of the flattened [B*H] space:
// writes output[b, h, :, :]. When Sk = 0 the key-side pointers are not used (may be null).
// Gets its scratch once per call (so call it once per task, not per element): the AVX2 kernel
// reuses a per-thread block (kept between calls up to 64 MiB), the scalar one allocates; throws
// std::bad_alloc if that fails, nothing else.
void lsh_cumulation_f32(const LshDims& d, const int32_t* query_codes, const int32_t* key_codes,
                        const int32_t* query_mask, const int32_t* key_mask, const float* value,
                        float* output, int64_t slice_begin, int64_t slice_end);

// The kernels fast_hash_f32 / lsh_cumulation_f32 run for these dims right now (their dispatch calls
// exactly these functions, so a report built from them names the code that runs). For diagnostics:
// libyoso_ort.so writes them to the file named by YOSO_KERNEL_REPORT (plugins/ort/yoso_ort.cc).
enum class CpuKernel { kFastHashScalar, kFastHashAvx2, kLshScalarDense, kLshScalarCompact, kLshAvx2Dense };
CpuKernel fast_hash_kernel(const FastHashDims& d);
CpuKernel lsh_kernel(const LshDims& d);
// "scalar" / "avx2" (FastHash), "scalar-dense" / "scalar-compact" / "avx2-dense" (LSHCumulation).
const char* cpu_kernel_name(CpuKernel k);
// Whether this CPU and OS support the AVX2+FMA kernels (whatever YOSO_FORCE_SCALAR says).
bool cpu_supports_avx2_fma();

// Whether lsh_cumulation_f32 uses a dense 2^tau x Dv bucket table (small tau) or a compact table
// of the buckets that unmasked keys actually occupy (large tau; memory O(Sk * Dv) per task).
bool lsh_uses_dense_table(const LshDims& d);

// How many work items (rows / slices) one parallel task should take so that a task carries
// enough work to amortise scheduling. Always >= 1.
int64_t fast_hash_rows_per_task(const FastHashDims& d);
int64_t lsh_slices_per_task(const LshDims& d);

}  // namespace cpu
}  // namespace yoso
