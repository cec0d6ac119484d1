// yoso_ort.cc -- ONNX Runtime custom-op library for the com.yoso ops (libyoso_ort.so).
//
// Exposes exactly one symbol, RegisterCustomOps, which ONNX Runtime calls when a session options
// object loads this library (Python: SessionOptions.register_custom_ops_library(path)). It adds a
// "com.yoso" domain (opset 1) with the ops of each execution provider, one folder and one
// RegisterOps each (the layout of ONNX Runtime's own custom_op_library sample):
//   cpu/yoso_ort_cpu.cc    CPUExecutionProvider: FastHash, LSHCumulation (float32; plugins/cpu)
//   cuda/yoso_ort_cuda.cc  CUDAExecutionProvider, builds with YOSO_BUILD_CUDA=ON (YOSO_ORT_WITH_CUDA):
//                          the same ops for float32 and float16 x / value (plugins/cuda)
//   yoso_ort_common.h      what they share: attributes, the exception firewall, shape inference,
//                          parallel-for, the kernel report
// This file only builds the domain and hands it to ONNX Runtime.
//
// Design notes
//  * The library does not link libonnxruntime: the C++ wrappers are initialised with the OrtApi
//    obtained from the OrtApiBase passed to RegisterCustomOps (ORT_API_MANUAL_INIT).
//  * Kernels are Ort::Custom lite-op structs over KernelBase<Attrs> (the op's attributes,
//    plugins/common/yoso_attrs.h, read and checked once for every provider and type; Compute
//    returns an Ort::Status).
//  * Output shape inference (OrtCustomOp::InferOutputShapeFn): at graph load time ONNX Runtime
//    learns each output's type and shape (FastHash: int32 [B,H,S,num_hash]; LSHCumulation: value's
//    type, [B,H,Sq,Dv]; symbolic sizes carried over). Inputs whose known sizes already violate the
//    contract (the checks of yoso_validate.h on the sizes known then) leave the output unset: ONNX
//    Runtime (1.32) ignores a failed inference, and the run-time check reports the violation. No C++ exception may cross the C ABI into ONNX Runtime, so every entry point
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
#undef ORT_API_MANUAL_INIT

#include <memory>
#include <mutex>
#include <string>

#include "cpu/yoso_ort_cpu.h"
#if defined(YOSO_ORT_WITH_CUDA)
#include "cuda/yoso_ort_cuda.h"
#endif

#ifndef YOSO_ORT_HEADERS_VERSION
#define YOSO_ORT_HEADERS_VERSION "unknown"
#endif

namespace yoso_ort {

constexpr const char* kDomainName = "com.yoso";

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
      auto fresh = std::make_unique<Ort::CustomOpDomain>(yoso_ort::kDomainName);
      yoso_ort::cpu::RegisterOps(*fresh);
#if defined(YOSO_ORT_WITH_CUDA)
      yoso_ort::cuda::RegisterOps(*fresh);
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
