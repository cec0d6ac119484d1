// yoso_limits.h -- the size limits of the com.yoso ops (plugins/OPS.md), in one place.
//
// The single source of truth for every implementation: the C++ backends include it (yoso_core.h,
// the CUDA plan), and the Python side parses it (yoso_deploy/modeling/ops.py reads the installed
// copy, yoso_deploy/modeling/yoso_limits.h, or this file in a source checkout). Keep the format:
// one "constexpr int NAME = VALUE;" per line, nothing computed. tests/plugins/test_contract_limits.py
// checks that the compiled values, the Python values and OPS.md agree.
#pragma once

namespace yoso {

// Largest hashed width D (a power of two) of FastHash's x.
constexpr int kMaxHashDim = 1024;
// Largest hash_code_len (tau) of the contract, every backend: codes are int32 in [0, 2^tau).
constexpr int kMaxHashCodeLen = 30;
// Largest hash_code_len the CUDA backend's LSHCumulation (ONNX Runtime CUDA execution provider,
// TensorRT plugin) accepts: it keeps dense bucket tables of 2^tau rows. Not a contract limit.
constexpr int kMaxCudaHashCodeLen = 16;

}  // namespace yoso
