// trt_test_stubs.h -- TEST STUBS of the yoso::cuda API (plugins/cuda/yoso_cuda.h) for the TensorRT
// host-logic test. They record what the plugins pass and return what the test configured; no GPU
// code runs. Linked into yoso_trt_host_test ONLY -- never into a shipped library (the shipped
// libyoso_trt*.so link the real plugins/cuda/yoso_cuda.cu).
#pragma once

#include <cstddef>
#include <string>

#include "yoso_cuda.h"

namespace yoso_test_stubs {

struct Launch {
  int calls = 0;
  yoso::FastHashDims fast_hash_dims;
  yoso::LshDims lsh_dims;
  yoso::cuda::DType type = yoso::cuda::DType::kFloat32;
  const void* inputs[5] = {};
  void* output = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  cudaStream_t stream = nullptr;
};

struct State {
  Launch fast_hash, lsh;
  cudaError_t launch_result = cudaSuccess;  // what the next launches return
  std::string check_message;                // what the input checks report ("" = valid)
  int check_calls = 0;
};

State& state();
inline void reset() { state() = State{}; }

}  // namespace yoso_test_stubs
