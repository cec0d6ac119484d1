// yoso_ort.cc -- ONNX Runtime custom-op library for the com.yoso ops (libyoso_ort.so).
//
// Exposes exactly one symbol, RegisterCustomOps, which ONNX Runtime calls when a session options
// object loads this library (Python: SessionOptions.register_custom_ops_library(path)). It adds a
// "com.yoso" domain (opset 1) with the CPU execution provider kernels FastHash and LSHCumulation,
// implemented per plugins/OPS.md on top of plugins/common, and, in builds with YOSO_BUILD_CUDA=ON
// (YOSO_ORT_WITH_CUDA), the same ops for the CUDA execution provider (float32 and float16 x /
// value) on top of plugins/cuda.
//
// Design notes
//  * The library does not link libonnxruntime: the C++ wrappers are initialised with the OrtApi
//    obtained from the OrtApiBase passed to RegisterCustomOps (ORT_API_MANUAL_INIT).
//  * Kernels are Ort::Custom lite-op structs (the constructor reads the attributes, Compute returns
//    an Ort::Status). No C++ exception may cross the C ABI into ONNX Runtime, so every entry point
//    ONNX Runtime calls (RegisterCustomOps, kernel creation, compute, parallel-for bodies) catches
//    everything and converts it to an OrtStatus.
//  * Every input is validated (shapes, attribute ranges, mask/sign/code values) before any output
//    is written; violations are ORT_INVALID_ARGUMENT with a message naming op, input, expectation,
//    actual value and fix.
//  * Work is split over ONNX Runtime's intra-op thread pool (KernelContext_ParallelFor); there is
//    no private thread pool.
//  * The op objects and every registered domain live for the rest of the process (intentionally
//    leaked heap objects): sessions keep raw pointers to them, and registering into several
//    SessionOptions must keep working.
//  * Diagnostics: a CPU kernel created while the environment variable YOSO_KERNEL_REPORT names a
//    file appends one line per Compute call to it, naming the kernel that ran and how many tasks
//    the work was split into (KernelReport below). The variable is read once, at kernel creation
//    (session creation), so calls of sessions created without it pay one empty-string test.
//  * CUDA kernels run on ONNX Runtime's compute stream (KernelContext_GetGPUComputeStream) and take
//    their workspace from ONNX Runtime's allocator for the device (KernelContext_GetAllocator); they
//    never allocate or synchronise on their own. Invalid mask/sign/code values are detected on the
//    device and reported after a stream synchronisation (see yoso::cuda::input_checks_enabled for
//    the opt-out, and the CUDA-graph caveat).
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#include "onnxruntime_lite_custom_op.h"
#undef ORT_API_MANUAL_INIT

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "yoso_cpu.h"
#include "yoso_validate.h"

#if defined(YOSO_ORT_WITH_CUDA)
#include "yoso_cuda.h"
#endif

#ifndef YOSO_ORT_HEADERS_VERSION
#define YOSO_ORT_HEADERS_VERSION "unknown"
#endif

namespace yoso_ort {

constexpr const char* kDomain = "com.yoso";
constexpr int kOpsetVersion = 1;

namespace {

// ---------------------------------------------------------------------------------------------
// Helpers shared by all execution providers
// ---------------------------------------------------------------------------------------------

yoso::ShapeRef shape_ref(const std::vector<int64_t>& shape) {
  return yoso::ShapeRef{shape.data(), shape.size()};
}

Ort::Status invalid_argument(const std::string& msg) {
  return Ort::Status(msg.c_str(), ORT_INVALID_ARGUMENT);
}

// Takes ownership of a C API status and returns its message (empty if status is null).
std::string take_status_message(const OrtApi* api, OrtStatus* status) {
  if (status == nullptr) return {};
  std::string msg = api->GetErrorMessage(status);
  api->ReleaseStatus(status);
  return msg.empty() ? std::string("unknown error") : msg;
}

// Reads a required int64 attribute without throwing; returns an error message or "".
std::string read_int_attr(const OrtApi* api, const OrtKernelInfo* info, const char* op,
                          const char* name, int64_t* value) {
  std::string err = take_status_message(api, api->KernelInfoGetAttribute_int64(info, name, value));
  if (!err.empty()) {
    return std::string(op) + ": required int attribute '" + name +
           "' is missing or not an int (" + err + "). Fix: set " + name + " on the node.";
  }
  return {};
}

// Checks the node's arity: all `names` inputs present (lite ops declare their inputs optional,
// so ONNX Runtime itself would accept a node with fewer or empty inputs) and one output.
std::string check_node_io(const OrtApi* api, const OrtKernelInfo* info, const char* op,
                          const std::vector<const char*>& names) {
  size_t n_in = 0, n_out = 0;
  std::string err = take_status_message(api, api->KernelInfo_GetInputCount(info, &n_in));
  if (err.empty()) err = take_status_message(api, api->KernelInfo_GetOutputCount(info, &n_out));
  if (!err.empty()) return std::string(op) + ": cannot inspect the node: " + err;
  if (n_in != names.size()) {
    return std::string(op) + ": expects " + std::to_string(names.size()) + " inputs, got " +
           std::to_string(n_in) + ". Fix: wire all inputs of the op (see plugins/OPS.md).";
  }
  if (n_out != 1) {
    return std::string(op) + ": expects 1 output, got " + std::to_string(n_out) + ".";
  }
  for (size_t i = 0; i < n_in; ++i) {
    size_t size = 0;
    err = take_status_message(api, api->KernelInfo_GetInputName(info, i, nullptr, &size));
    if (!err.empty()) return std::string(op) + ": cannot inspect input " + std::to_string(i) + ": " + err;
    if (size <= 1) {  // only the terminating NUL: the optional-input placeholder ""
      return std::string(op) + ": input '" + names[i] + "' (input " + std::to_string(i) +
             ") is missing. Fix: wire all inputs of the op (see plugins/OPS.md).";
    }
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Exception firewall around the lite-op callbacks
// ---------------------------------------------------------------------------------------------

OrtStatus* status_from_current_exception(const char* op) noexcept {
  const OrtApi& api = Ort::GetApi();
  try {
    throw;
  } catch (const Ort::Exception& e) {
    return api.CreateStatus(e.GetOrtErrorCode(), (std::string(op) + ": " + e.what()).c_str());
  } catch (const std::bad_alloc&) {
    return api.CreateStatus(ORT_RUNTIME_EXCEPTION, (std::string(op) + ": out of memory").c_str());
  } catch (const std::exception& e) {
    return api.CreateStatus(ORT_RUNTIME_EXCEPTION, (std::string(op) + ": " + e.what()).c_str());
  } catch (...) {
    return api.CreateStatus(ORT_RUNTIME_EXCEPTION, (std::string(op) + ": unknown error").c_str());
  }
}

// The lite-op template builds kernels and calls Compute through callbacks that may throw (e.g.
// Ort::Custom::Tensor's constructor). Hardened<K> replaces them with noexcept wrappers that
// forward to the originals and convert any exception into an OrtStatus. It also routes kernel
// creation through CreateKernelV2 so that attribute errors are reported at session creation.
template <typename Kernel>
struct Hardened {
  using LiteOp = Ort::Custom::OrtLiteCustomStruct<Kernel>;
  using LiteKernel = typename LiteOp::Kernel;

  static inline decltype(OrtCustomOp::CreateKernel) inner_create = nullptr;
  static inline decltype(OrtCustomOp::KernelComputeV2) inner_compute = nullptr;

  static OrtStatusPtr ORT_API_CALL CreateKernelV2(const OrtCustomOp* op, const OrtApi* api,
                                                  const OrtKernelInfo* info,
                                                  void** kernel) noexcept {
    *kernel = nullptr;
    try {
      void* created = inner_create(op, api, info);
      const std::string& err = static_cast<LiteKernel*>(created)->custom_op_->init_error();
      if (!err.empty()) {
        OrtStatus* status = api->CreateStatus(ORT_INVALID_ARGUMENT, err.c_str());
        op->KernelDestroy(created);
        return status;
      }
      *kernel = created;
      return nullptr;
    } catch (...) {
      return status_from_current_exception(Kernel::kName);
    }
  }

  static OrtStatusPtr ORT_API_CALL ComputeV2(void* kernel, OrtKernelContext* context) noexcept {
    try {
      return inner_compute(kernel, context);
    } catch (...) {
      return status_from_current_exception(Kernel::kName);
    }
  }

  static const OrtCustomOp* Create(const char* execution_provider) {
    std::unique_ptr<Ort::Custom::OrtLiteCustomOp> op{
        Ort::Custom::CreateLiteCustomOp<Kernel>(Kernel::kName, execution_provider,
                                                /*start_ver=*/kOpsetVersion,
                                                /*end_ver=*/kOpsetVersion)};
    inner_create = op->CreateKernel;
    inner_compute = op->KernelComputeV2;
    op->CreateKernelV2 = &CreateKernelV2;
    op->KernelComputeV2 = &ComputeV2;
    return op.release();
  }
};

// Runs fn(i) for i in [0, n_tasks) on ONNX Runtime's intra-op pool (inline for a single task).
void parallel_for(OrtKernelContext* context, void (*fn)(void*, size_t), size_t n_tasks, void* job) {
  if (n_tasks == 0) return;
  if (n_tasks == 1) {
    fn(job, 0);
    return;
  }
  Ort::KernelContext(context).ParallelFor(fn, n_tasks, 0, job);
}

size_t ceil_div(int64_t a, int64_t b) { return static_cast<size_t>((a + b - 1) / b); }

// ---------------------------------------------------------------------------------------------
// Kernel report (diagnostics and tests): YOSO_KERNEL_REPORT=<file>
// ---------------------------------------------------------------------------------------------
// Read when the kernel is created. If set, every Compute call appends one line:
//   yoso-kernel op=FastHash node=<node> provider=CPUExecutionProvider kernel=avx2 tasks=<parallel
//   tasks> <dims: B=.. H=.. S=.. D=.. m=.. tau=..> cpu_avx2_fma=1
// (kernel: yoso::cpu::cpu_kernel_name of the dispatch's choice; cpu_avx2_fma: what the CPU supports).
// with one write(2) on an O_APPEND descriptor (lines of concurrent calls never interleave). A file
// that cannot be opened is reported once on stderr; inference is never affected.
class KernelReport {
 public:
  // Never throws (a failure to allocate leaves the report off).
  KernelReport(const OrtApi* api, const OrtKernelInfo* info) noexcept {
    try {
      const char* path = std::getenv("YOSO_KERNEL_REPORT");
      if (path == nullptr || path[0] == '\0') return;
      size_t size = 0;
      std::string node;
      if (take_status_message(api, api->KernelInfo_GetNodeName(info, nullptr, &size)).empty() && size > 1) {
        node.resize(size);
        if (!take_status_message(api, api->KernelInfo_GetNodeName(info, &node[0], &size)).empty()) size = 1;
        node.resize(size - 1);
      }
      node_ = node.empty() ? std::string("-") : node;
      path_ = path;
    } catch (...) {
      path_.clear();
    }
  }

  bool enabled() const { return !path_.empty(); }

  // `fields`: the op's own "key=value ..." part (kernel, tasks, dims).
  void write(const char* op, const std::string& fields) const noexcept {
    try {
      const std::string line = std::string("yoso-kernel op=") + op + " node=" + node_ +
                               " provider=CPUExecutionProvider " + fields + " cpu_avx2_fma=" +
                               (yoso::cpu::cpu_supports_avx2_fma() ? "1" : "0") + "\n";
      const int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) {
        static std::atomic<bool> warned{false};
        if (!warned.exchange(true))
          std::fprintf(stderr, "libyoso_ort.so: cannot open YOSO_KERNEL_REPORT=%s; no kernel report\n",
                       path_.c_str());
        return;
      }
      const ssize_t n = ::write(fd, line.data(), line.size());
      (void)n;
      ::close(fd);
    } catch (...) {
    }
  }

 private:
  std::string path_;  // empty: off
  std::string node_;
};

std::string kv(const char* key, int64_t value) { return std::string(" ") + key + "=" + std::to_string(value); }

}  // namespace

// =============================================================================================
// CPU execution provider
// =============================================================================================
namespace cpu_ep {

constexpr const char* kProvider = "CPUExecutionProvider";

// ------------------------------------ FastHash -----------------------------------------------

struct FastHashKernel {
  static constexpr const char* kName = "FastHash";

  // Must not throw: problems are kept in init_error_ and reported by kernel creation / Compute.
  FastHashKernel(const OrtApi* api, const OrtKernelInfo* info) noexcept : report_(api, info) {
    try {
      init_error_ = check_node_io(api, info, kName, {"x", "mask", "signs"});
      if (init_error_.empty()) init_error_ = read_int_attr(api, info, kName, "num_hash", &num_hash_);
      if (init_error_.empty())
        init_error_ = read_int_attr(api, info, kName, "hash_code_len", &hash_code_len_);
      if (init_error_.empty()) init_error_ = yoso::check_fast_hash_attrs(num_hash_, hash_code_len_);
    } catch (...) {
      init_error_ = "FastHash: out of memory while creating the kernel";
    }
  }

  const std::string& init_error() const { return init_error_; }

  Ort::Status Compute(OrtKernelContext* context, const Ort::Custom::Tensor<float>& x,
                      const Ort::Custom::Tensor<int32_t>& mask,
                      const Ort::Custom::Tensor<float>& signs,
                      Ort::Custom::Tensor<int32_t>& codes) {
    if (!init_error_.empty()) return invalid_argument(init_error_);

    // 1. Shapes and attributes.
    yoso::FastHashDims d;
    std::string err = yoso::check_fast_hash_shapes(shape_ref(x.Shape()), shape_ref(mask.Shape()),
                                                   shape_ref(signs.Shape()), num_hash_,
                                                   hash_code_len_, &d);
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
  std::string init_error_;
  int64_t num_hash_ = 0;
  int64_t hash_code_len_ = 0;
};

// ---------------------------------- LSHCumulation --------------------------------------------

struct LSHCumulationKernel {
  static constexpr const char* kName = "LSHCumulation";

  LSHCumulationKernel(const OrtApi* api, const OrtKernelInfo* info) noexcept : report_(api, info) {
    try {
      init_error_ = check_node_io(api, info, kName,
                                  {"query_codes", "key_codes", "query_mask", "key_mask", "value"});
      if (init_error_.empty())
        init_error_ = read_int_attr(api, info, kName, "hash_code_len", &hash_code_len_);
      if (init_error_.empty()) init_error_ = yoso::check_lsh_attrs(hash_code_len_);
    } catch (...) {
      init_error_ = "LSHCumulation: out of memory while creating the kernel";
    }
  }

  const std::string& init_error() const { return init_error_; }

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
        shape_ref(key_mask.Shape()), shape_ref(value.Shape()), hash_code_len_, &d);
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
  std::string init_error_;
  int64_t hash_code_len_ = 0;
};

// Adds this provider's ops to `domain`. The op objects are created once and never freed.
void RegisterOps(Ort::CustomOpDomain& domain) {
  static const OrtCustomOp* const fast_hash = Hardened<FastHashKernel>::Create(kProvider);
  static const OrtCustomOp* const lsh_cumulation = Hardened<LSHCumulationKernel>::Create(kProvider);
  domain.Add(fast_hash);
  domain.Add(lsh_cumulation);
}

}  // namespace cpu_ep

#if defined(YOSO_ORT_WITH_CUDA)
// =============================================================================================
// CUDA execution provider
// =============================================================================================
namespace cuda_ep {

constexpr const char* kProvider = "CUDAExecutionProvider";

template <typename T>
constexpr yoso::cuda::DType dtype_of() {
  return std::is_same<T, Ort::Float16_t>::value ? yoso::cuda::DType::kFloat16
                                                 : yoso::cuda::DType::kFloat32;
}

// Device pointer of an input, or null for an empty tensor (never dereferenced then).
template <typename T>
const void* data_or_null(const Ort::Custom::Tensor<T>& t, int64_t n) {
  return n > 0 ? static_cast<const void*>(t.Data()) : nullptr;
}

Ort::Status runtime_error(const char* op, const std::string& what) {
  return Ort::Status((std::string(op) + " (CUDA): " + what).c_str(), ORT_RUNTIME_EXCEPTION);
}

// The kernel's stream and a workspace from ONNX Runtime's allocator for the kernel's device,
// returned to the allocator when the object goes out of scope (after Compute has enqueued its
// work: ONNX Runtime's device allocator is ordered on the compute stream, like its own kernels'
// scratch buffers).
class DeviceContext {
 public:
  DeviceContext() = default;
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;
  ~DeviceContext() {
    const OrtApi& api = Ort::GetApi();
    if (allocator_ != nullptr) {
      if (workspace_ != nullptr) allocator_->Free(allocator_, workspace_);
      api.ReleaseAllocator(allocator_);
    }
  }

  // `device_input`: any input tensor that lives on the kernel's device (gives the device id).
  Ort::Status Init(const char* op, OrtKernelContext* context, size_t device_input,
                   size_t workspace_bytes) {
    const OrtApi& api = Ort::GetApi();
    void* stream = nullptr;
    std::string err = take_status_message(&api, api.KernelContext_GetGPUComputeStream(context, &stream));
    if (!err.empty()) return runtime_error(op, "cannot get the CUDA stream: " + err);
    stream_ = static_cast<cudaStream_t>(stream);

    const OrtValue* value = nullptr;
    err = take_status_message(&api, api.KernelContext_GetInput(context, device_input, &value));
    const OrtMemoryInfo* tensor_info = nullptr;
    if (err.empty()) err = take_status_message(&api, api.GetTensorMemoryInfo(value, &tensor_info));
    int device_id = 0;
    if (err.empty()) err = take_status_message(&api, api.MemoryInfoGetId(tensor_info, &device_id));
    OrtMemoryInfo* info = nullptr;
    if (err.empty())
      err = take_status_message(
          &api, api.CreateMemoryInfo("Cuda", OrtDeviceAllocator, device_id, OrtMemTypeDefault, &info));
    if (err.empty()) {
      err = take_status_message(&api, api.KernelContext_GetAllocator(context, info, &allocator_));
      api.ReleaseMemoryInfo(info);
    }
    if (!err.empty()) return runtime_error(op, "cannot get the device allocator: " + err);
    workspace_bytes_ = workspace_bytes;
    workspace_ = allocator_->Alloc(allocator_, workspace_bytes);
    if (workspace_ == nullptr) {
      return runtime_error(op, "out of device memory allocating a workspace of " +
                                   std::to_string(workspace_bytes) + " bytes");
    }
    return Ort::Status{nullptr};
  }

  cudaStream_t stream() const { return stream_; }
  void* workspace() const { return workspace_; }
  size_t workspace_bytes() const { return workspace_bytes_; }

 private:
  cudaStream_t stream_ = nullptr;
  OrtAllocator* allocator_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

// ------------------------------------ FastHash -----------------------------------------------

template <typename T>  // float or Ort::Float16_t (x)
struct FastHashKernel {
  static constexpr const char* kName = "FastHash";

  FastHashKernel(const OrtApi* api, const OrtKernelInfo* info) noexcept {
    try {
      init_error_ = check_node_io(api, info, kName, {"x", "mask", "signs"});
      if (init_error_.empty()) init_error_ = read_int_attr(api, info, kName, "num_hash", &num_hash_);
      if (init_error_.empty())
        init_error_ = read_int_attr(api, info, kName, "hash_code_len", &hash_code_len_);
      if (init_error_.empty()) init_error_ = yoso::check_fast_hash_attrs(num_hash_, hash_code_len_);
    } catch (...) {
      init_error_ = "FastHash: out of memory while creating the kernel";
    }
  }

  const std::string& init_error() const { return init_error_; }

  Ort::Status Compute(OrtKernelContext* context, const Ort::Custom::Tensor<T>& x,
                      const Ort::Custom::Tensor<int32_t>& mask,
                      const Ort::Custom::Tensor<float>& signs,
                      Ort::Custom::Tensor<int32_t>& codes) {
    if (!init_error_.empty()) return invalid_argument(init_error_);
    yoso::FastHashDims d;
    std::string err = yoso::check_fast_hash_shapes(shape_ref(x.Shape()), shape_ref(mask.Shape()),
                                                   shape_ref(signs.Shape()), num_hash_,
                                                   hash_code_len_, &d);
    if (!err.empty()) return invalid_argument(err);

    int32_t* out = codes.Allocate({d.B, d.H, d.S, d.m});
    const int64_t x_n = d.B * d.H * d.S * d.D;
    const int64_t mask_n = d.B * d.S;
    const int64_t signs_n = d.H * 3 * d.P * d.D;
    if (mask_n == 0 && signs_n == 0) return Ort::Status{nullptr};  // nothing to check or compute

    DeviceContext dev;
    Ort::Status status = dev.Init(kName, context, /*device_input=*/2,
                                  yoso::cuda::fast_hash_workspace_size(d));
    if (!status.IsOK()) return status;
    const auto* mask_p = static_cast<const int32_t*>(data_or_null(mask, mask_n));
    const auto* signs_p = static_cast<const float*>(data_or_null(signs, signs_n));
    cudaError_t e = yoso::cuda::launch_fast_hash(d, dtype_of<T>(), data_or_null(x, x_n), mask_p,
                                                 signs_p, out, dev.workspace(),
                                                 dev.workspace_bytes(), dev.stream());
    if (e != cudaSuccess) return runtime_error(kName, yoso::cuda::error_string(e));
    bool checked = false;
    e = yoso::cuda::fast_hash_check_inputs(d, mask_p, signs_p, dev.workspace(), dev.stream(), &err,
                                           &checked);
    if (e != cudaSuccess) return runtime_error(kName, yoso::cuda::error_string(e));
    if (!err.empty()) return invalid_argument(err);
    return Ort::Status{nullptr};
  }

 private:
  std::string init_error_;
  int64_t num_hash_ = 0;
  int64_t hash_code_len_ = 0;
};

// ---------------------------------- LSHCumulation --------------------------------------------

template <typename T>  // float or Ort::Float16_t (value and output)
struct LSHCumulationKernel {
  static constexpr const char* kName = "LSHCumulation";

  LSHCumulationKernel(const OrtApi* api, const OrtKernelInfo* info) noexcept {
    try {
      init_error_ = check_node_io(api, info, kName,
                                  {"query_codes", "key_codes", "query_mask", "key_mask", "value"});
      if (init_error_.empty())
        init_error_ = read_int_attr(api, info, kName, "hash_code_len", &hash_code_len_);
      if (init_error_.empty()) init_error_ = yoso::check_lsh_attrs(hash_code_len_);
      if (init_error_.empty()) init_error_ = yoso::cuda::check_lsh_cuda_limits(hash_code_len_, 0);
    } catch (...) {
      init_error_ = "LSHCumulation: out of memory while creating the kernel";
    }
  }

  const std::string& init_error() const { return init_error_; }

  Ort::Status Compute(OrtKernelContext* context, const Ort::Custom::Tensor<int32_t>& query_codes,
                      const Ort::Custom::Tensor<int32_t>& key_codes,
                      const Ort::Custom::Tensor<int32_t>& query_mask,
                      const Ort::Custom::Tensor<int32_t>& key_mask,
                      const Ort::Custom::Tensor<T>& value, Ort::Custom::Tensor<T>& output) {
    if (!init_error_.empty()) return invalid_argument(init_error_);
    yoso::LshDims d;
    std::string err = yoso::check_lsh_shapes(
        shape_ref(query_codes.Shape()), shape_ref(key_codes.Shape()), shape_ref(query_mask.Shape()),
        shape_ref(key_mask.Shape()), shape_ref(value.Shape()), hash_code_len_, &d);
    if (err.empty()) err = yoso::cuda::check_lsh_cuda_limits(d.tau, d.Dv);
    if (!err.empty()) return invalid_argument(err);

    T* out = output.Allocate({d.B, d.H, d.Sq, d.Dv});
    const int64_t qm_n = d.B * d.Sq, km_n = d.B * d.Sk;
    const int64_t qc_n = qm_n * d.H * d.m, kc_n = km_n * d.H * d.m;
    if (qm_n == 0 && km_n == 0) return Ort::Status{nullptr};  // B == 0 or Sq == Sk == 0

    constexpr yoso::cuda::DType type = dtype_of<T>();
    DeviceContext dev;
    Ort::Status status = dev.Init(kName, context, /*device_input=*/0,
                                  yoso::cuda::lsh_workspace_size(d, type));
    if (!status.IsOK()) return status;
    const auto* qc = static_cast<const int32_t*>(data_or_null(query_codes, qc_n));
    const auto* kc = static_cast<const int32_t*>(data_or_null(key_codes, kc_n));
    const auto* qm = static_cast<const int32_t*>(data_or_null(query_mask, qm_n));
    const auto* km = static_cast<const int32_t*>(data_or_null(key_mask, km_n));
    cudaError_t e = yoso::cuda::launch_lsh_cumulation(
        d, type, qc, kc, qm, km, data_or_null(value, km_n * d.H * d.Dv), out, dev.workspace(),
        dev.workspace_bytes(), dev.stream());
    if (e != cudaSuccess) return runtime_error(kName, yoso::cuda::error_string(e));
    bool checked = false;
    e = yoso::cuda::lsh_check_inputs(d, qc, kc, qm, km, dev.workspace(), dev.stream(), &err, &checked);
    if (e != cudaSuccess) return runtime_error(kName, yoso::cuda::error_string(e));
    if (!err.empty()) return invalid_argument(err);
    return Ort::Status{nullptr};
  }

 private:
  std::string init_error_;
  int64_t hash_code_len_ = 0;
};

void RegisterOps(Ort::CustomOpDomain& domain) {
  static const OrtCustomOp* const ops[] = {
      Hardened<FastHashKernel<float>>::Create(kProvider),
      Hardened<FastHashKernel<Ort::Float16_t>>::Create(kProvider),
      Hardened<LSHCumulationKernel<float>>::Create(kProvider),
      Hardened<LSHCumulationKernel<Ort::Float16_t>>::Create(kProvider),
  };
  for (const OrtCustomOp* op : ops) domain.Add(op);
}

}  // namespace cuda_ep
#endif  // YOSO_ORT_WITH_CUDA

namespace {

// The one com.yoso domain, built on the first registration and handed to every SessionOptions
// after it (sessions only read it). Never destroyed: sessions reference it until exit, and one
// shared domain keeps memory constant however many sessions a process creates.
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
Ort::CustomOpDomain*& shared_domain() {
  static Ort::CustomOpDomain* domain = nullptr;
  return domain;
}

}  // namespace
}  // namespace yoso_ort

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) noexcept;

extern "C" OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                     const OrtApiBase* api_base) noexcept {
  if (api_base == nullptr) return nullptr;  // cannot happen with ONNX Runtime; nothing to report to
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // The runtime is older than the headers this library was built against.
    const OrtApi* api1 = api_base->GetApi(1);
    const std::string msg = std::string("libyoso_ort.so needs ONNX Runtime API >= ") +
                            std::to_string(ORT_API_VERSION) + " (built against " +
                            YOSO_ORT_HEADERS_VERSION + "); this runtime is " +
                            api_base->GetVersionString() + ": upgrade onnxruntime";
    return api1 != nullptr ? api1->CreateStatus(ORT_FAIL, msg.c_str()) : nullptr;
  }
  try {
    std::lock_guard<std::mutex> lock(yoso_ort::registry_mutex());
    static std::once_flag api_once;
    std::call_once(api_once, [api] { Ort::InitApi(api); });

    Ort::CustomOpDomain*& domain = yoso_ort::shared_domain();
    if (domain == nullptr) {
      auto fresh = std::make_unique<Ort::CustomOpDomain>(yoso_ort::kDomain);
      yoso_ort::cpu_ep::RegisterOps(*fresh);
#if defined(YOSO_ORT_WITH_CUDA)
      yoso_ort::cuda_ep::RegisterOps(*fresh);
#endif
      domain = fresh.release();
    }
    return api->AddCustomOpDomain(options, *domain);
  } catch (const Ort::Exception& e) {
    return api->CreateStatus(e.GetOrtErrorCode(), (std::string("libyoso_ort.so: ") + e.what()).c_str());
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, (std::string("libyoso_ort.so: ") + e.what()).c_str());
  } catch (...) {
    return api->CreateStatus(ORT_FAIL, "libyoso_ort.so: unknown error while registering custom ops");
  }
}
