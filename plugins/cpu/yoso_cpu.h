// yoso_cpu.h -- CPU loops of the com.yoso ops over the math in yoso_core.h.
//
// The functions process a contiguous range of independent work items so that a host framework
// can split the work over its own thread pool (ONNX Runtime: KernelContext_ParallelFor). They
// expect inputs already validated by yoso_validate.h (shapes, mask values, code ranges) and never
// read or write outside the tensors described by the dims. float32 only (callers widen float16).
// On x86-64 CPUs with AVX-512 (F+BW) or AVX2+FMA they run SIMD kernels chosen at run time
// (yoso_cpu_kernels.h; the environment variable YOSO_CPU_ISA=scalar|avx2|avx512 asks for a path,
// YOSO_FORCE_SCALAR=1 forces the portable one); results are the same.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

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
// libyoso_ort.so writes them to the file named by YOSO_KERNEL_REPORT (plugins/ort/yoso_ort_common.h).
enum class CpuKernel {
  kFastHashScalar,
  kFastHashAvx2,
  kFastHashAvx512,
  kLshScalarDense,
  kLshScalarCompact,
  kLshAvx2Dense,
  kLshAvx512Dense
};
CpuKernel fast_hash_kernel(const FastHashDims& d);
CpuKernel lsh_kernel(const LshDims& d);
// "scalar" / "avx2" / "avx512" (FastHash), "scalar-dense" / "scalar-compact" / "avx2-dense" /
// "avx512-dense" (LSHCumulation).
const char* cpu_kernel_name(CpuKernel k);
// Whether this CPU and OS support the AVX2+FMA kernels (whatever YOSO_FORCE_SCALAR says).
bool cpu_supports_avx2_fma();
// Whether this CPU and OS support the AVX-512 kernels (AVX-512F and AVX-512BW; whatever the
// environment asks for).
bool cpu_supports_avx512();
// The instruction-set path the kernels use right now: "avx512", "avx2" or "scalar" (the CPU's best,
// or what YOSO_CPU_ISA / YOSO_FORCE_SCALAR ask for, capped at what the CPU supports). FastHash with
// D < 8 on the AVX2 path and LSHCumulation's compact tables run scalar kernels whatever the path:
// fast_hash_kernel / lsh_kernel name the kernel of a call.
const char* cpu_isa_name();

// Whether lsh_cumulation_f32 uses a dense 2^tau x Dv bucket table (small tau) or a compact table
// of the buckets that unmasked keys actually occupy (large tau; memory O(Sk * Dv) per task).
bool lsh_uses_dense_table(const LshDims& d);

// How many work items (rows / slices) one parallel task should take so that a task carries
// enough work to amortise scheduling. Always >= 1.
int64_t fast_hash_rows_per_task(const FastHashDims& d);
int64_t lsh_slices_per_task(const LshDims& d);

// One whole call split into tasks on the caller's thread pool: `parallel_for(n, task, arg)` must run
// task(arg, i) for every i in [0, n) and return when all are done (libyoso_ort.so: ONNX Runtime's
// intra-op pool; libyoso_kernels.so: its own). Inputs validated as above. Return the number of
// tasks (0: nothing to do).
template <class ParallelFor>
size_t fast_hash_f32_parallel(const FastHashDims& d, const float* x, const int32_t* mask, const float* signs,
                              int32_t* codes, ParallelFor&& parallel_for) {
  const int64_t rows = d.B * d.H * d.S;
  if (rows == 0) return 0;
  struct Job {
    const FastHashDims* d;
    const float* x;
    const int32_t* mask;
    const float* signs;
    int32_t* codes;
    int64_t rows, per_task;
  } job{&d, x, mask, signs, codes, rows, fast_hash_rows_per_task(d)};
  auto task = [](void* p, size_t i) noexcept {
    const Job& j = *static_cast<const Job*>(p);
    const int64_t begin = static_cast<int64_t>(i) * j.per_task;
    const int64_t end = std::min(j.rows, begin + j.per_task);
    fast_hash_f32(*j.d, j.x, j.mask, j.signs, j.codes, begin, end);  // cannot fail
  };
  const size_t tasks = static_cast<size_t>((rows + job.per_task - 1) / job.per_task);
  parallel_for(tasks, static_cast<void (*)(void*, size_t)>(task), static_cast<void*>(&job));
  return tasks;
}

// Throws std::bad_alloc when a task could not get its scratch bucket tables (the only failure).
template <class ParallelFor>
size_t lsh_cumulation_f32_parallel(const LshDims& d, const int32_t* query_codes, const int32_t* key_codes,
                                   const int32_t* query_mask, const int32_t* key_mask, const float* value,
                                   float* output, ParallelFor&& parallel_for) {
  const int64_t slices = d.B * d.H;
  if (slices == 0 || d.Sq == 0 || d.Dv == 0) return 0;
  const bool keys = d.Sk > 0;
  struct Job {
    const LshDims* d;
    const int32_t *qc, *kc, *qm, *km;
    const float* value;
    float* out;
    int64_t slices, per_task;
    std::atomic<bool> failed{false};
  } job{&d, query_codes, keys ? key_codes : nullptr, query_mask, keys ? key_mask : nullptr,
        keys ? value : nullptr, output, slices, lsh_slices_per_task(d)};
  auto task = [](void* p, size_t i) noexcept {
    Job& j = *static_cast<Job*>(p);
    const int64_t begin = static_cast<int64_t>(i) * j.per_task;
    const int64_t end = std::min(j.slices, begin + j.per_task);
    try {
      lsh_cumulation_f32(*j.d, j.qc, j.kc, j.qm, j.km, j.value, j.out, begin, end);
    } catch (...) {  // only std::bad_alloc of the scratch tables is possible
      j.failed.store(true, std::memory_order_relaxed);
    }
  };
  const size_t tasks = static_cast<size_t>((slices + job.per_task - 1) / job.per_task);
  parallel_for(tasks, static_cast<void (*)(void*, size_t)>(task), static_cast<void*>(&job));
  if (job.failed.load()) throw std::bad_alloc();
  return tasks;
}

}  // namespace cpu
}  // namespace yoso
