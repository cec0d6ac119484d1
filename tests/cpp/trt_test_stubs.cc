// trt_test_stubs.cc -- TEST STUBS of yoso::cuda (see trt_test_stubs.h). Test binary only.
#include "trt_test_stubs.h"

namespace yoso_test_stubs {
State& state() {
  static State s;
  return s;
}
}  // namespace yoso_test_stubs

namespace yoso {
namespace cuda {

using yoso_test_stubs::state;

cudaError_t launch_fast_hash(const FastHashDims& d, DType x_type, const void* x, const int32_t* mask,
                             const float* signs, int32_t* codes, void* workspace, size_t workspace_bytes,
                             cudaStream_t stream) {
  auto& l = state().fast_hash;
  ++l.calls;
  l.fast_hash_dims = d;
  l.type = x_type;
  l.inputs[0] = x;
  l.inputs[1] = mask;
  l.inputs[2] = signs;
  l.output = codes;
  l.workspace = workspace;
  l.workspace_bytes = workspace_bytes;
  l.stream = stream;
  return state().launch_result;
}

cudaError_t launch_lsh_cumulation(const LshDims& d, DType value_type, const int32_t* query_codes,
                                  const int32_t* key_codes, const int32_t* query_mask, const int32_t* key_mask,
                                  const void* value, void* output, void* workspace, size_t workspace_bytes,
                                  cudaStream_t stream, int64_t) {
  auto& l = state().lsh;
  ++l.calls;
  l.lsh_dims = d;
  l.type = value_type;
  l.inputs[0] = query_codes;
  l.inputs[1] = key_codes;
  l.inputs[2] = query_mask;
  l.inputs[3] = key_mask;
  l.inputs[4] = value;
  l.output = output;
  l.workspace = workspace;
  l.workspace_bytes = workspace_bytes;
  l.stream = stream;
  return state().launch_result;
}

cudaError_t fast_hash_check_inputs(const FastHashDims&, const int32_t*, const float*, const void*, cudaStream_t,
                                   std::string* message, bool* checked) {
  ++state().check_calls;
  *message = state().check_message;
  *checked = true;
  return cudaSuccess;
}

cudaError_t lsh_check_inputs(const LshDims&, const int32_t*, const int32_t*, const int32_t*, const int32_t*,
                             const void*, cudaStream_t, std::string* message, bool* checked) {
  ++state().check_calls;
  *message = state().check_message;
  *checked = true;
  return cudaSuccess;
}

std::string error_string(cudaError_t err) { return "CUDA error " + std::to_string(static_cast<int>(err)) + " (stub)"; }

}  // namespace cuda
}  // namespace yoso
