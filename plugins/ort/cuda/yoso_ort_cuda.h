// yoso_ort_cuda.h -- the CUDA execution provider's part of libyoso_ort.so (yoso_ort_cuda.cc; only
// in builds with YOSO_BUILD_CUDA=ON, which define YOSO_ORT_WITH_CUDA).
#pragma once

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

namespace yoso_ort {
namespace cuda {

// Adds the CUDAExecutionProvider kernels (float32 and float16) of FastHash and LSHCumulation to
// `domain`. The op objects are created once and never freed.
void RegisterOps(Ort::CustomOpDomain& domain);

}  // namespace cuda
}  // namespace yoso_ort
