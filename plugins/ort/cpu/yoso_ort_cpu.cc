// yoso_ort_cpu.cc -- the CPU execution provider kernels of libyoso_ort.so: FastHash and
// LSHCumulation (float32) per plugins/OPS.md on the CPU kernels of plugins/cpu, split over ONNX
// Runtime's intra-op thread pool, with the optional kernel report (YOSO_KERNEL_REPORT). A float16
// node gets a kernel that refuses it at session creation with the fix (float16 runs on the CUDA
// execution provider only).
#include "yoso_ort_cpu.h"

#include "yoso_ort_common.h"

namespace yoso_ort {
namespace cpu {
namespace {

constexpr const char* kProvider = "CPUExecutionProvider";

// ------------------------------------ FastHash -----------------------------------------------

struct FastHashKernel : KernelBase<yoso::FastHashAttrs> {
  static constexpr const char* kName = "FastHash";

  // Must not throw: problems are kept in init_error_ and reported by kernel creation / Compute.
  FastHashKernel(const OrtApi* api, const OrtKernelInfo* info) noexcept
      : KernelBase(api, info), report_(api, info) {}

  Ort::Status Compute(OrtKernelContext* context, const Ort::Custom::Tensor<float>& x,
                      const Ort::Custom::Tensor<int32_t>& mask,
                      const Ort::Custom::Tensor<float>& signs,
                      Ort::Custom::Tensor<int32_t>& codes) {
    if (!init_error_.empty()) return invalid_argument(init_error_);

    // 1. Shapes and attributes.
    yoso::FastHashDims d;
    std::string err = yoso::check_fast_hash_shapes(shape_ref(x.Shape()), shape_ref(mask.Shape()),
                                                   shape_ref(signs.Shape()), attrs_.num_hash,
                                                   attrs_.hash_code_len, &d);
    if (!err.empty()) return invalid_argument(err);

    // 2. Values (read-only passes, before any output is written).
    const int64_t mask_n = d.B * d.S;
    const int64_t signs_n = d.H * 3 * d.P * d.D;
    if (mask_n > 0) err = yoso::check_mask_values(kName, "mask", 1, mask.Data(), mask_n);
    if (err.empty() && signs_n > 0) err = yoso::check_signs_values(signs.Data(), signs_n);
    if (!err.empty()) return invalid_argument(err);

    // 3. Output and computation.
    int32_t* out = codes.Allocate({d.B, d.H, d.S, d.m});
    const int64_t rows = d.B * d.H * d.S;
    if (rows == 0) return Ort::Status{nullptr};

    struct Job {
      const yoso::FastHashDims* d;
      const float* x;
      const int32_t* mask;
      const float* signs;
      int32_t* codes;
      int64_t rows, per_task;
    } job{&d, x.Data(), mask.Data(), signs.Data(), out, rows, yoso::cpu::fast_hash_rows_per_task(d)};

    auto task = [](void* p, size_t i) noexcept {
      const Job& j = *static_cast<const Job*>(p);
      const int64_t begin = static_cast<int64_t>(i) * j.per_task;
      const int64_t end = std::min(j.rows, begin + j.per_task);
      yoso::cpu::fast_hash_f32(*j.d, j.x, j.mask, j.signs, j.codes, begin, end);  // cannot fail
    };
    const size_t tasks = ceil_div(rows, job.per_task);
    parallel_for(context, task, tasks, &job);
    if (report_.enabled()) {
      report_.write(kName, std::string("kernel=") +
                               yoso::cpu::cpu_kernel_name(yoso::cpu::fast_hash_kernel(d)) +
                               kv("tasks", static_cast<int64_t>(tasks)) + kv("B", d.B) + kv("H", d.H) +
                               kv("S", d.S) + kv("D", d.D) + kv("m", d.m) + kv("tau", d.tau));
    }
    return Ort::Status{nullptr};
  }

 private:
  KernelReport report_;
};

// ---------------------------------- LSHCumulation --------------------------------------------

struct LSHCumulationKernel : KernelBase<yoso::LshAttrs> {
  static constexpr const char* kName = "LSHCumulation";

  LSHCumulationKernel(const OrtApi* api, const OrtKernelInfo* info) noexcept
      : KernelBase(api, info), report_(api, info) {}

  Ort::Status Compute(OrtKernelContext* context, const Ort::Custom::Tensor<int32_t>& query_codes,
                      const Ort::Custom::Tensor<int32_t>& key_codes,
                      const Ort::Custom::Tensor<int32_t>& query_mask,
                      const Ort::Custom::Tensor<int32_t>& key_mask,
                      const Ort::Custom::Tensor<float>& value,
                      Ort::Custom::Tensor<float>& output) {
    if (!init_error_.empty()) return invalid_argument(init_error_);

    // 1. Shapes and attribute.
    yoso::LshDims d;
    std::string err = yoso::check_lsh_shapes(
        shape_ref(query_codes.Shape()), shape_ref(key_codes.Shape()), shape_ref(query_mask.Shape()),
        shape_ref(key_mask.Shape()), shape_ref(value.Shape()), attrs_.hash_code_len, &d);
    if (!err.empty()) return invalid_argument(err);

    // 2. Values: masks are 0/1 and every code (masked tokens included) lies in [0, 2^tau).
    const int64_t qm_n = d.B * d.Sq, km_n = d.B * d.Sk;
    const int64_t qc_n = qm_n * d.H * d.m, kc_n = km_n * d.H * d.m;
    if (qm_n > 0) err = yoso::check_mask_values(kName, "query_mask", 2, query_mask.Data(), qm_n);
    if (err.empty() && km_n > 0)
      err = yoso::check_mask_values(kName, "key_mask", 3, key_mask.Data(), km_n);
    if (err.empty() && qc_n > 0)
      err = yoso::check_code_values(kName, "query_codes", 0, query_codes.Data(), qc_n, d.tau);
    if (err.empty() && kc_n > 0)
      err = yoso::check_code_values(kName, "key_codes", 1, key_codes.Data(), kc_n, d.tau);
    if (!err.empty()) return invalid_argument(err);

    // 3. Output and computation, one task per group of (b, h) slices.
    float* out = output.Allocate({d.B, d.H, d.Sq, d.Dv});
    const int64_t slices = d.B * d.H;
    if (slices == 0 || d.Sq == 0 || d.Dv == 0) return Ort::Status{nullptr};

    struct Job {
      const yoso::LshDims* d;
      const int32_t *qc, *kc, *qm, *km;
      const float* value;
      float* out;
      int64_t slices, per_task;
      std::atomic<bool> failed{false};
    } job{&d,
          query_codes.Data(),  // non-empty here: B, H, Sq >= 1
          d.Sk > 0 ? key_codes.Data() : nullptr,
          query_mask.Data(),
          d.Sk > 0 ? key_mask.Data() : nullptr,
          d.Sk > 0 ? value.Data() : nullptr,
          out,
          slices,
          yoso::cpu::lsh_slices_per_task(d)};

    auto task = [](void* p, size_t i) noexcept {
      Job& j = *static_cast<Job*>(p);
      const int64_t begin = static_cast<int64_t>(i) * j.per_task;
      const int64_t end = std::min(j.slices, begin + j.per_task);
      try {
        yoso::cpu::lsh_cumulation_f32(*j.d, j.qc, j.kc, j.qm, j.km, j.value, j.out, begin, end);
      } catch (...) {  // only std::bad_alloc for the scratch table is possible
        j.failed.store(true, std::memory_order_relaxed);
      }
    };
    const size_t tasks = ceil_div(slices, job.per_task);
    parallel_for(context, task, tasks, &job);
    if (job.failed.load()) {
      return Ort::Status(
          (std::string(kName) +
           ": out of memory allocating the scratch bucket tables; use a smaller batch or sequence").c_str(),
          ORT_RUNTIME_EXCEPTION);
    }
    if (report_.enabled()) {
      report_.write(kName, std::string("kernel=") +
                               yoso::cpu::cpu_kernel_name(yoso::cpu::lsh_kernel(d)) +
                               kv("tasks", static_cast<int64_t>(tasks)) + kv("B", d.B) + kv("H", d.H) +
                               kv("Sq", d.Sq) + kv("Sk", d.Sk) + kv("m", d.m) + kv("Dv", d.Dv) +
                               kv("tau", d.tau));
    }
    return Ort::Status{nullptr};
  }

 private:
  KernelReport report_;
};

// ------------------------- float16 x / value: CUDA execution provider only -------------------------
// The CPU kernels are float32 (plugins/OPS.md, "Types"). These kernels take a float16 node only to
// say so when ONNX Runtime creates the kernel (session creation), instead of ONNX Runtime's generic
// "no implementation" / type error; they never compute.

inline std::string float16_cpu_error(const char* op, const char* input, int index) {
  return std::string(op) + ": input '" + input + "' (input " + std::to_string(index) +
         ") is float16, which only the CUDA execution provider of libyoso_ort.so runs (the CPU kernels "
         "are float32 only). Fix: run the model with CUDAExecutionProvider (onnxruntime-gpu) or TensorRT, "
         "or export it with --dtype fp32 for the CPU.";
}

struct FastHashFloat16Kernel : KernelBase<yoso::FastHashAttrs> {
  static constexpr const char* kName = "FastHash";
  FastHashFloat16Kernel(const OrtApi* api, const OrtKernelInfo* info) noexcept : KernelBase(api, info) {
    try {
      if (init_error_.empty()) init_error_ = float16_cpu_error(kName, "x", 0);
    } catch (...) {
      init_error_ = "FastHash: out of memory while creating the kernel";
    }
  }
  Ort::Status Compute(OrtKernelContext*, const Ort::Custom::Tensor<Ort::Float16_t>&,
                      const Ort::Custom::Tensor<int32_t>&, const Ort::Custom::Tensor<float>&,
                      Ort::Custom::Tensor<int32_t>&) {
    return invalid_argument(init_error_.empty() ? float16_cpu_error(kName, "x", 0) : init_error_);
  }
};

struct LSHCumulationFloat16Kernel : KernelBase<yoso::LshAttrs> {
  static constexpr const char* kName = "LSHCumulation";
  LSHCumulationFloat16Kernel(const OrtApi* api, const OrtKernelInfo* info) noexcept : KernelBase(api, info) {
    try {
      if (init_error_.empty()) init_error_ = float16_cpu_error(kName, "value", 4);
    } catch (...) {
      init_error_ = "LSHCumulation: out of memory while creating the kernel";
    }
  }
  Ort::Status Compute(OrtKernelContext*, const Ort::Custom::Tensor<int32_t>&, const Ort::Custom::Tensor<int32_t>&,
                      const Ort::Custom::Tensor<int32_t>&, const Ort::Custom::Tensor<int32_t>&,
                      const Ort::Custom::Tensor<Ort::Float16_t>&, Ort::Custom::Tensor<Ort::Float16_t>&) {
    return invalid_argument(init_error_.empty() ? float16_cpu_error(kName, "value", 4) : init_error_);
  }
};

}  // namespace

void RegisterOps(Ort::CustomOpDomain& domain) {
  static const OrtCustomOp* const ops[] = {
      Hardened<FastHashKernel>::Create(kProvider),
      Hardened<FastHashFloat16Kernel>::Create(kProvider),
      Hardened<LSHCumulationKernel>::Create(kProvider),
      Hardened<LSHCumulationFloat16Kernel>::Create(kProvider),
  };
  for (const OrtCustomOp* op : ops) domain.Add(op);
}

}  // namespace cpu

}  // namespace yoso_ort
