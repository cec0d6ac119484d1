// yoso_ort_cuda.cc -- the CUDA execution provider kernels of libyoso_ort.so (built with
// YOSO_BUILD_CUDA=ON): FastHash and LSHCumulation for float32 and float16 x / value on the kernels of
// plugins/cuda, on ONNX Runtime's compute stream with workspaces from its device allocator.
#include "yoso_ort_cuda.h"

#include <type_traits>

#include "yoso_cuda.h"
#include "yoso_ort_common.h"

namespace yoso_ort {
namespace cuda {
namespace {

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
struct FastHashKernel : KernelBase<yoso::FastHashAttrs> {
  static constexpr const char* kName = "FastHash";

  FastHashKernel(const OrtApi* api, const OrtKernelInfo* info) noexcept : KernelBase(api, info) {}

  Ort::Status Compute(OrtKernelContext* context, const Ort::Custom::Tensor<T>& x,
                      const Ort::Custom::Tensor<int32_t>& mask,
                      const Ort::Custom::Tensor<float>& signs,
                      Ort::Custom::Tensor<int32_t>& codes) {
    if (!init_error_.empty()) return invalid_argument(init_error_);
    yoso::FastHashDims d;
    std::string err = yoso::check_fast_hash_shapes(shape_ref(x.Shape()), shape_ref(mask.Shape()),
                                                   shape_ref(signs.Shape()), attrs_.num_hash,
                                                   attrs_.hash_code_len, &d);
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

};

// ---------------------------------- LSHCumulation --------------------------------------------

template <typename T>  // float or Ort::Float16_t (value and output)
struct LSHCumulationKernel : KernelBase<yoso::LshAttrs> {
  static constexpr const char* kName = "LSHCumulation";

  LSHCumulationKernel(const OrtApi* api, const OrtKernelInfo* info) noexcept : KernelBase(api, info) {
    try {
      if (init_error_.empty()) init_error_ = yoso::cuda::check_lsh_cuda_limits(attrs_.hash_code_len, 0);
    } catch (...) {
      init_error_ = "LSHCumulation: out of memory while creating the kernel";
    }
  }

  Ort::Status Compute(OrtKernelContext* context, const Ort::Custom::Tensor<int32_t>& query_codes,
                      const Ort::Custom::Tensor<int32_t>& key_codes,
                      const Ort::Custom::Tensor<int32_t>& query_mask,
                      const Ort::Custom::Tensor<int32_t>& key_mask,
                      const Ort::Custom::Tensor<T>& value, Ort::Custom::Tensor<T>& output) {
    if (!init_error_.empty()) return invalid_argument(init_error_);
    yoso::LshDims d;
    std::string err = yoso::check_lsh_shapes(
        shape_ref(query_codes.Shape()), shape_ref(key_codes.Shape()), shape_ref(query_mask.Shape()),
        shape_ref(key_mask.Shape()), shape_ref(value.Shape()), attrs_.hash_code_len, &d);
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

};

}  // namespace

void RegisterOps(Ort::CustomOpDomain& domain) {
  static const OrtCustomOp* const ops[] = {
      Hardened<FastHashKernel<float>>::Create(kProvider),
      Hardened<FastHashKernel<Ort::Float16_t>>::Create(kProvider),
      Hardened<LSHCumulationKernel<float>>::Create(kProvider),
      Hardened<LSHCumulationKernel<Ort::Float16_t>>::Create(kProvider),
  };
  for (const OrtCustomOp* op : ops) domain.Add(op);
}

}  // namespace cuda

}  // namespace yoso_ort
