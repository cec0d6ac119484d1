// yoso_cuda.h -- CUDA implementation of the com.yoso ops (plugins/OPS.md), shared by the ONNX
// Runtime CUDA execution provider kernels (libyoso_ort.so) and the TensorRT plugins
// (libyoso_trt.so).
//
// Contract of every launch function:
//   * inputs, outputs and the workspace are device pointers; shapes were checked on the host with
//     yoso_validate.h (check_fast_hash_shapes / check_lsh_shapes, plus check_lsh_cuda_limits);
//   * the work is enqueued on `stream` only: no allocation, no synchronisation, no host-device copy,
//     so a launch can be captured into a CUDA graph;
//   * the workspace (at least *_workspace_size(...) bytes, from the host framework's allocator)
//     holds the validation record and, for LSHCumulation, the bucket tables; its content on entry
//     does not matter;
//   * mask / sign / code values are validated on the device while the op runs: the first invalid
//     element of each input is recorded in the workspace, and the kernels skip invalid codes, so a
//     bad input never causes an out-of-bounds access. *_check_inputs() turns the record into the
//     contract's error message (it synchronises the stream; see input_checks_enabled());
//   * returns the first CUDA error of the enqueue calls (cudaGetLastError after each launch), or
//     cudaErrorInvalidValue for a workspace that is too small.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "yoso_cuda_plan.h"
#include "yoso_validate.h"

namespace yoso {
namespace cuda {

// codes[B,H,S,m] = FastHash(x[B,H,S,D], mask[B,S], signs[H,3,P,D]); x is float32 or float16.
cudaError_t launch_fast_hash(const FastHashDims& d, DType x_type, const void* x,
                             const int32_t* mask, const float* signs, int32_t* codes,
                             void* workspace, size_t workspace_bytes, cudaStream_t stream);

// output[B,H,Sq,Dv] = LSHCumulation(...); value and output are both float32 or both float16
// (accumulation in float32). table_budget_floats: see plan_lsh (0 = default); the workspace must
// hold lsh_workspace_size(d, value_type, table_budget_floats) bytes.
cudaError_t launch_lsh_cumulation(const LshDims& d, DType value_type, const int32_t* query_codes,
                                  const int32_t* key_codes, const int32_t* query_mask,
                                  const int32_t* key_mask, const void* value, void* output,
                                  void* workspace, size_t workspace_bytes, cudaStream_t stream,
                                  int64_t table_budget_floats = 0);

// After a launch with the same arguments: unless input_checks_enabled() is false or `stream` is
// being captured into a CUDA graph, synchronises `stream` and sets *message to the error of the
// first invalid input element (same text as the CPU kernels), or "" when all values are valid.
// *checked tells whether the check ran.
cudaError_t fast_hash_check_inputs(const FastHashDims& d, const int32_t* mask, const float* signs,
                                   const void* workspace, cudaStream_t stream,
                                   std::string* message, bool* checked);
cudaError_t lsh_check_inputs(const LshDims& d, const int32_t* query_codes,
                             const int32_t* key_codes, const int32_t* query_mask,
                             const int32_t* key_mask, const void* workspace, cudaStream_t stream,
                             std::string* message, bool* checked);

// "CUDA error <name>: <description>" for messages.
std::string error_string(cudaError_t err);

}  // namespace cuda
}  // namespace yoso
