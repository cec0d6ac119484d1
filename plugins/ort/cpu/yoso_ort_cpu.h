// yoso_ort_cpu.h -- the CPU execution provider's part of libyoso_ort.so (yoso_ort_cpu.cc).
#pragma once

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

namespace yoso_ort {
namespace cpu {

// Adds the CPUExecutionProvider kernels of FastHash and LSHCumulation to `domain`. The op objects
// are created once and never freed (sessions keep pointers to them).
void RegisterOps(Ort::CustomOpDomain& domain);

}  // namespace cpu
}  // namespace yoso_ort
