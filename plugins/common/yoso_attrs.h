// yoso_attrs.h -- the attributes of the two com.yoso ops (plugins/OPS.md), shared by every host
// binding: the ONNX Runtime kernels read them from the node (plugins/ort), the TensorRT plugins
// from their creator fields (plugins/trt). Each binding fetches the raw int64 values its own way
// and calls make_*_attrs, which applies the contract's checks (yoso_validate.h) and stores them,
// so an invalid attribute reads the same in every backend.
#pragma once

#include <cstdint>
#include <string>

#include "yoso_validate.h"

namespace yoso {

struct FastHashAttrs {
  static constexpr const char* kOp = "FastHash";
  static constexpr int kNumInputs = 3;
  static constexpr const char* kInputNames[kNumInputs] = {"x", "mask", "signs"};
  static constexpr int kNumAttrs = 2;
  static constexpr const char* kAttrNames[kNumAttrs] = {"num_hash", "hash_code_len"};

  int32_t num_hash = 0;
  int32_t hash_code_len = 0;
};

struct LshAttrs {
  static constexpr const char* kOp = "LSHCumulation";
  static constexpr int kNumInputs = 5;
  static constexpr const char* kInputNames[kNumInputs] = {"query_codes", "key_codes", "query_mask",
                                                          "key_mask", "value"};
  static constexpr int kNumAttrs = 1;
  static constexpr const char* kAttrNames[kNumAttrs] = {"hash_code_len"};

  int32_t hash_code_len = 0;
};

// values[i] is the attribute kAttrNames[i]. "" and *out filled when valid, else the message of
// check_fast_hash_attrs / check_lsh_attrs (*out untouched).
inline std::string make_attrs(const int64_t* values, FastHashAttrs* out) {
  std::string err = check_fast_hash_attrs(values[0], values[1]);
  if (!err.empty()) return err;
  out->num_hash = static_cast<int32_t>(values[0]);
  out->hash_code_len = static_cast<int32_t>(values[1]);
  return {};
}

inline std::string make_attrs(const int64_t* values, LshAttrs* out) {
  std::string err = check_lsh_attrs(values[0]);
  if (!err.empty()) return err;
  out->hash_code_len = static_cast<int32_t>(values[0]);
  return {};
}

}  // namespace yoso
