// yoso_cpu.cc -- the CPU ops of yoso_cpu.h (float32): run-time instruction-set dispatch, the
// split of the work into tasks, and the per-thread scratch of the AVX2 LSHCumulation kernel.
//
// Three sets of kernels (see yoso_cpu_kernels.h for the dispatch, YOSO_CPU_ISA and YOSO_FORCE_SCALAR):
//  * portable scalar kernels (any CPU): yoso_cpu_scalar.cc;
//  * x86-64 AVX2+FMA kernels, compiled per function with __attribute__((target("avx2,fma"))):
//    yoso_cpu_avx2.cc;
//  * x86-64 AVX-512 (F+BW) kernels, compiled per function with
//    __attribute__((target("avx512f,avx512bw,avx2,fma"))): yoso_cpu_avx512.cc.
// All add in the same order, so the paths give identical results. The kernel report
// (fast_hash_kernel / lsh_kernel) names exactly the functions the dispatch below calls.
#include "yoso_cpu.h"

#include <algorithm>
#include <cstdlib>
#include <cctype>
#include <cstring>
#include <memory>

#include "yoso_core.h"
#include "yoso_cpu_kernels.h"

namespace yoso {
namespace cpu {

// -------------------------------------------------------------------------------------------
// Instruction-set dispatch
// -------------------------------------------------------------------------------------------
namespace simd {

bool cpu_has_avx2_fma() {
#if YOSO_X86_SIMD
  // libgcc's checks include the OS's XSAVE support of the ymm state.
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if YOSO_X86_SIMD
  // libgcc's checks include the OS's XSAVE support of the zmm and opmask state.
  static const bool has = [] {
    __builtin_cpu_init();
    return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw");
  }();
  return has;
#else
  return false;
#endif
}

Isa best_isa() {
  if (cpu_has_avx512()) return Isa::kAvx512;
  return cpu_has_avx2_fma() ? Isa::kAvx2 : Isa::kScalar;
}

bool force_scalar_requested() {
  const char* v = std::getenv("YOSO_FORCE_SCALAR");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

Isa requested_isa() {
  const char* v = std::getenv("YOSO_CPU_ISA");
  if (v == nullptr) return best_isa();
  char name[8] = {0};  // the longest name is "avx512"
  size_t n = 0;
  for (; v[n] != '\0'; ++n) {
    if (n + 1 >= sizeof(name)) return best_isa();  // longer than any name: unknown
    name[n] = static_cast<char>(std::tolower(static_cast<unsigned char>(v[n])));
  }
  if (std::strcmp(name, "scalar") == 0) return Isa::kScalar;
  if (std::strcmp(name, "avx2") == 0) return Isa::kAvx2;
  if (std::strcmp(name, "avx512") == 0) return Isa::kAvx512;
  return best_isa();  // "", "auto" or unknown
}

Isa active_isa() {
  if (force_scalar_requested()) return Isa::kScalar;
  return std::min(requested_isa(), best_isa());
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "unknown";
}

}  // namespace simd

namespace {

// Rough number of scalar operations a parallel task should carry: large enough that ONNX
// Runtime's per-task scheduling cost (tens of ns) is noise next to the SIMD kernels.
constexpr int64_t kTaskWork = int64_t{1} << 19;

// Items per task so that one task carries about kTaskWork operations (estimated in double, where
// the product of sizes cannot overflow).
inline int64_t items_per_task(double work_per_item) {
  if (work_per_item >= static_cast<double>(kTaskWork)) return 1;
  return std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(kTaskWork) /
                                                   std::max(1.0, work_per_item)));
}

inline size_t round_up64(size_t n) { return (n + 63) / 64 * 64; }

// Scratch memory of one thread, reused by the op calls that run on it (ONNX Runtime's pool threads
// live as long as the session), so that a task does not allocate and page-fault megabytes each
// call. Blocks larger than kKeepBytes are released at the end of the call that needed them.
class ThreadScratch {
 public:
  static constexpr size_t kKeepBytes = size_t{64} << 20;

  // 64-byte aligned storage of at least `bytes` bytes whose first `zero_bytes` bytes are zero
  // (the rest unspecified); may throw std::bad_alloc.
  unsigned char* get(size_t bytes, size_t zero_bytes) {
    if (bytes > cap_) {
      buf_.reset();
      cap_ = zero_prefix_ = 0;
      buf_.reset(new unsigned char[bytes + 64]);
      cap_ = bytes;
    }
    const uintptr_t p = reinterpret_cast<uintptr_t>(buf_.get());
    unsigned char* base = buf_.get() + ((64 - (p & 63)) & 63);
    if (zero_bytes > zero_prefix_) std::memset(base + zero_prefix_, 0, zero_bytes - zero_prefix_);
    zero_prefix_ = 0;  // until release() says what the caller left zero
    return base;
  }
  // Ends a use: the caller left the first `zero_bytes` bytes zero. Large blocks are freed.
  void release(size_t zero_bytes) {
    zero_prefix_ = zero_bytes;
    if (cap_ > kKeepBytes) {
      buf_.reset();
      cap_ = zero_prefix_ = 0;
    }
  }

 private:
  std::unique_ptr<unsigned char[]> buf_;
  size_t cap_ = 0;
  size_t zero_prefix_ = 0;  // bytes at the start known to be zero
};

thread_local ThreadScratch tls_scratch;

}  // namespace

// -------------------------------------------------------------------------------------------
// FastHash
// -------------------------------------------------------------------------------------------

CpuKernel fast_hash_kernel(const FastHashDims& d) {
  switch (simd::active_isa()) {
    case simd::Isa::kAvx512: return CpuKernel::kFastHashAvx512;  // every D
    case simd::Isa::kAvx2: return d.D >= 8 ? CpuKernel::kFastHashAvx2 : CpuKernel::kFastHashScalar;
    case simd::Isa::kScalar: break;
  }
  return CpuKernel::kFastHashScalar;
}

const char* cpu_kernel_name(CpuKernel k) {
  switch (k) {
    case CpuKernel::kFastHashScalar: return "scalar";
    case CpuKernel::kFastHashAvx2: return "avx2";
    case CpuKernel::kFastHashAvx512: return "avx512";
    case CpuKernel::kLshScalarDense: return "scalar-dense";
    case CpuKernel::kLshScalarCompact: return "scalar-compact";
    case CpuKernel::kLshAvx2Dense: return "avx2-dense";
    case CpuKernel::kLshAvx512Dense: return "avx512-dense";
  }
  return "unknown";
}

bool cpu_supports_avx2_fma() { return simd::cpu_has_avx2_fma(); }

bool cpu_supports_avx512() { return simd::cpu_has_avx512(); }

const char* cpu_isa_name() { return simd::isa_name(simd::active_isa()); }

void fast_hash_f32(const FastHashDims& d, const float* x, const int32_t* mask, const float* signs,
                   int32_t* codes, int64_t row_begin, int64_t row_end) {
  if (row_begin >= row_end) return;
  switch (fast_hash_kernel(d)) {
    case CpuKernel::kFastHashAvx512:
      return simd::fast_hash_f32_avx512(d, x, mask, signs, codes, row_begin, row_end);
    case CpuKernel::kFastHashAvx2:
      return simd::fast_hash_f32_avx2(d, x, mask, signs, codes, row_begin, row_end);
    default:
      return scalar::fast_hash_f32(d, x, mask, signs, codes, row_begin, row_end);
  }
}

int64_t fast_hash_rows_per_task(const FastHashDims& d) {
  int64_t log2d = 0;
  while ((int64_t{1} << log2d) < d.D) ++log2d;
  const int64_t rows = items_per_task(static_cast<double>(d.P) * 3.0 * static_cast<double>(d.D) *
                                      static_cast<double>(log2d + 1));
  // Whole blocks of 16 tokens for the AVX-512 kernel (of 8 for the AVX2 kernel).
  if (rows >= 16) return rows / 16 * 16;
  return rows < 8 ? rows : rows / 8 * 8;
}

// -------------------------------------------------------------------------------------------
// LSHCumulation
// -------------------------------------------------------------------------------------------

bool lsh_uses_dense_table(const LshDims& d) {
  const int64_t buckets = int64_t{1} << d.tau;
  const int64_t dv = std::max<int64_t>(1, d.Dv);
  if (buckets > kDenseTableMaxFloats / dv) return false;  // table too large (no overflow: tau <= 30)
  // A dense table is zeroed once per task; skip it when it would dwarf the real work.
  const double work = static_cast<double>(d.m) * static_cast<double>(d.Sk + d.Sq);
  return static_cast<double>(buckets) <= std::max(4096.0, work);
}

CpuKernel lsh_kernel(const LshDims& d) {
  const bool dense = lsh_uses_dense_table(d);
  if (dense && d.Sk > 0) {
    const simd::Isa isa = simd::active_isa();
    if (isa == simd::Isa::kAvx512 && simd::lsh_avx512_applicable(d)) return CpuKernel::kLshAvx512Dense;
    if (isa >= simd::Isa::kAvx2 && simd::lsh_avx2_applicable(d)) return CpuKernel::kLshAvx2Dense;
  }
  return dense ? CpuKernel::kLshScalarDense : CpuKernel::kLshScalarCompact;
}

int64_t lsh_slices_per_task(const LshDims& d) {
  return items_per_task(static_cast<double>(d.m) * static_cast<double>(d.Sk + d.Sq) *
                        static_cast<double>(std::max<int64_t>(1, d.Dv)));
}

void lsh_cumulation_f32(const LshDims& d, const int32_t* query_codes, const int32_t* key_codes,
                        const int32_t* query_mask, const int32_t* key_mask, const float* value,
                        float* output, int64_t slice_begin, int64_t slice_end) {
  if (slice_begin >= slice_end || d.Sq == 0 || d.Dv == 0) return;  // nothing to write
  const int64_t Dv = d.Dv, m = d.m;
  const CpuKernel kernel = lsh_kernel(d);
  const bool dense = kernel != CpuKernel::kLshScalarCompact;

  if (kernel == CpuKernel::kLshAvx2Dense || kernel == CpuKernel::kLshAvx512Dense) {
    const bool avx512 = kernel == CpuKernel::kLshAvx512Dense;
    // Scratch from this thread's reusable block: the bucket tables (zeroed here; the kernel
    // leaves them zero), the packed value / output chunks, the lists of unmasked keys and queries
    // and the table offsets of their codes.
    const int64_t scratch_floats =
        avx512 ? simd::lsh_avx512_scratch_floats(d) : simd::lsh_avx2_scratch_floats(d);
    const int64_t table_floats =
        avx512 ? simd::lsh_avx512_table_floats(d) : simd::lsh_avx2_table_floats(d);
    const auto slice_kernel = avx512 ? simd::lsh_slice_dense_f32_avx512 : simd::lsh_slice_dense_f32_avx2;
    const size_t float_bytes = round_up64(static_cast<size_t>(scratch_floats) * sizeof(float));
    const size_t index_bytes = round_up64(static_cast<size_t>(d.Sk + d.Sq) * sizeof(int64_t));
    const size_t code_bytes = static_cast<size_t>((d.Sk + d.Sq) * m) * sizeof(int32_t);
    const size_t table_bytes = static_cast<size_t>(table_floats) * sizeof(float);
    unsigned char* base = tls_scratch.get(float_bytes + index_bytes + code_bytes, table_bytes);
    float* floats = reinterpret_cast<float*>(base);
    int64_t* index_scratch = reinterpret_cast<int64_t*>(base + float_bytes);
    int32_t* code_scratch = reinterpret_cast<int32_t*>(base + float_bytes + index_bytes);
    for (int64_t bh = slice_begin; bh < slice_end; ++bh) {
      const int64_t b = bh / d.H;
      slice_kernel(d, query_codes + bh * d.Sq * m, key_codes + bh * d.Sk * m, query_mask + b * d.Sq,
                   key_mask + b * d.Sk, value + bh * d.Sk * Dv, output + bh * d.Sq * Dv, floats,
                   index_scratch, code_scratch);
    }
    tls_scratch.release(table_bytes);  // the kernel leaves the bucket tables zero
    return;
  }

  scalar::lsh_cumulation_f32(d, dense, query_codes, key_codes, query_mask, key_mask, value, output,
                             slice_begin, slice_end);
}

}  // namespace cpu
}  // namespace yoso
