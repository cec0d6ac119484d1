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
    err = yoso::check_fast_hash_values(d, mask.Data(), signs.Data());
    if (!err.empty()) return invalid_argument(err);

    // 3. Output and computation.
    int32_t* out = codes.Allocate({d.B, d.H, d.S, d.m});
    const size_t tasks = yoso::cpu::fast_hash_f32_parallel(
        d, x.Data(), mask.Data(), signs.Data(), out,
        [context](size_t n, void (*task)(void*, size_t), void* job) { parallel_for(context, task, n, job); });
    if (tasks == 0) return Ort::Status{nullptr};
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
    err = yoso::check_lsh_values(d, query_codes.Data(), key_codes.Data(), query_mask.Data(), key_mask.Data());
    if (!err.empty()) return invalid_argument(err);

    // 3. Output and computation, one task per group of (b, h) slices.
    float* out = output.Allocate({d.B, d.H, d.Sq, d.Dv});
    size_t tasks = 0;
    try {
      tasks = yoso::cpu::lsh_cumulation_f32_parallel(
          d, query_codes.Data(), key_codes.Data(), query_mask.Data(), key_mask.Data(), value.Data(), out,
          [context](size_t n, void (*task)(void*, size_t), void* job) { parallel_for(context, task, n, job); });
    } catch (const std::bad_alloc&) {
      return Ort::Status(
          (std::string(kName) +
           ": out of memory allocating the scratch bucket tables; use a smaller batch or sequence").c_str(),
          ORT_RUNTIME_EXCEPTION);
    }
    if (tasks == 0) return Ort::Status{nullptr};
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
