// yoso_cuda_plan.h -- host-side planning for the CUDA kernels: limits, workspace layout, the
// device-side validation record and its error messages.
//
// Pure C++ (no CUDA headers): the ONNX Runtime and TensorRT bindings size their workspace with
// these functions, the CPU emulation of the kernels (tests/cpp) runs the same plan, and the unit
// tests check it without a GPU.
//
// Workspace (one buffer from the host framework, 256-byte aligned pieces):
//   [0, 256)            ErrorRecord: first invalid flat index per validated input (see below)
//   [table_offset, ...) LSHCumulation bucket tables of one round: slots x 2^tau x Dv floats
//   [acc_offset, ...)   LSHCumulation float32 accumulator, only for float16 outputs when the hash
//                       functions do not fit in one round
//
// LSHCumulation runs in rounds over chunks of (b, h) slices and of hash functions so that the live
// bucket tables stay under a budget (default 128 MiB): the workspace is bounded by
// min(B*H*m, budget / (2^tau * Dv)) tables, independent of the sequence length, and it only grows
// with B, H, Sq (never shrinks), so a size computed for the largest shapes (TensorRT's max profile)
// covers every smaller call.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "yoso_validate.h"

namespace yoso {
namespace cuda {

// ---------------------------------------------------------------------------------------------
// Limits of the CUDA backend
// ---------------------------------------------------------------------------------------------

// LSHCumulation keeps dense bucket tables of 2^tau rows; tau above yoso::kMaxCudaHashCodeLen
// (yoso_limits.h; below the contract's yoso::kMaxHashCodeLen) is refused.
// Largest single (b, h, f) bucket table, 2^tau x Dv floats (1 GiB).
constexpr int64_t kMaxTableFloats = int64_t{1} << 28;
// Default budget of live bucket tables per call (128 MiB of float32).
constexpr int64_t kDefaultTableBudgetFloats = int64_t{1} << 25;
constexpr size_t kAlignment = 256;

enum class DType : int { kFloat32 = 0, kFloat16 = 1 };

inline const char* dtype_name(DType t) { return t == DType::kFloat16 ? "float16" : "float32"; }
inline size_t dtype_size(DType t) { return t == DType::kFloat16 ? 2 : 4; }

inline size_t align_up(size_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

// Extra, backend-specific refusal on top of the contract's checks (OPS.md allows refusing sizes
// whose bucket table would be too large, saying so). "" when the CUDA kernels can run `d`.
inline std::string check_lsh_cuda_limits(int64_t hash_code_len, int64_t value_dim) {
  if (hash_code_len > kMaxCudaHashCodeLen) {
    return "LSHCumulation (CUDA): hash_code_len=" + std::to_string(hash_code_len) +
           " is above the CUDA backend's limit of " + std::to_string(kMaxCudaHashCodeLen) +
           " (kMaxCudaHashCodeLen: it keeps dense bucket tables of 2^hash_code_len rows per hash "
           "function; the op contract and the CPU kernels allow up to " + std::to_string(kMaxHashCodeLen) +
           "). Fix: export the model with hash_code_len <= " + std::to_string(kMaxCudaHashCodeLen) +
           ", or run this node on the CPU execution provider.";
  }
  if (hash_code_len >= 0 && value_dim > 0 && (value_dim > (kMaxTableFloats >> hash_code_len))) {
    return "LSHCumulation (CUDA): the bucket table of one hash function, 2^hash_code_len x Dv = 2^" +
           std::to_string(hash_code_len) + " x " + std::to_string(value_dim) +
           " floats, exceeds the CUDA backend's limit of 2^28 floats (1 GiB). Fix: use shorter codes "
           "or a smaller value width.";
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Device-side validation record
// ---------------------------------------------------------------------------------------------

// For each validated input, the smallest flat index of an invalid element, or kNoError. Written
// with atomicMin by the validation kernel, so the reported element is the first one, exactly the
// element the CPU kernels report.
constexpr unsigned long long kNoError = ~0ull;
constexpr int kMaxCheckedInputs = 4;

struct ErrorRecord {
  unsigned long long first_bad[kMaxCheckedInputs];
};
constexpr size_t kErrorRecordBytes = 256;
static_assert(sizeof(ErrorRecord) <= kErrorRecordBytes, "error record must fit its slot");

enum class CheckKind : int { kMask = 0, kSign = 1, kCode = 2 };

// One validated input: what the device checks and how the host names it. `slot` indexes
// ErrorRecord::first_bad; the order of a launch's list is the order the CPU kernels check in.
struct InputCheck {
  const char* op;
  const char* input;
  int index;        // input position of the node
  CheckKind kind;
  int slot;
  int tau;          // kCode only
  const void* data; // the device tensor (int32 for masks/codes, float32 for signs)
  int64_t n;        // number of elements
};

// The message for element `at` (raw 32-bit pattern `raw`) of an invalid input.
inline std::string input_error_message(const InputCheck& c, int64_t at, uint32_t raw) {
  switch (c.kind) {
    case CheckKind::kSign: {
      float v;
      memcpy(&v, &raw, sizeof(v));
      return sign_value_error(v, at);
    }
    case CheckKind::kMask:
      return mask_value_error(c.op, c.input, c.index, static_cast<int32_t>(raw), at);
    case CheckKind::kCode:
      return code_value_error(c.op, c.input, c.index, static_cast<int32_t>(raw), at, c.tau);
  }
  return std::string(c.op) + ": invalid input";
}

// FastHash validates mask (slot 0) then signs (slot 1), like the CPU kernel.
inline int fast_hash_checks(const FastHashDims& d, const int32_t* mask, const float* signs,
                            InputCheck out[kMaxCheckedInputs]) {
  out[0] = InputCheck{"FastHash", "mask", 1, CheckKind::kMask, 0, 0, mask, d.B * d.S};
  out[1] = InputCheck{"FastHash", "signs", 2, CheckKind::kSign, 1, 0, signs, d.H * 3 * d.P * d.D};
  return 2;
}

// LSHCumulation validates query_mask, key_mask, query_codes, key_codes (slots 0..3).
inline int lsh_checks(const LshDims& d, const int32_t* query_codes, const int32_t* key_codes,
                      const int32_t* query_mask, const int32_t* key_mask,
                      InputCheck out[kMaxCheckedInputs]) {
  const char* op = "LSHCumulation";
  out[0] = InputCheck{op, "query_mask", 2, CheckKind::kMask, 0, 0, query_mask, d.B * d.Sq};
  out[1] = InputCheck{op, "key_mask", 3, CheckKind::kMask, 1, 0, key_mask, d.B * d.Sk};
  out[2] = InputCheck{op, "query_codes", 0, CheckKind::kCode, 2, d.tau, query_codes,
                      d.B * d.H * d.Sq * d.m};
  out[3] = InputCheck{op, "key_codes", 1, CheckKind::kCode, 3, d.tau, key_codes,
                      d.B * d.H * d.Sk * d.m};
  return 4;
}

// The first failing check of a record (in list order), or -1.
inline int first_failed_check(const ErrorRecord& rec, const InputCheck* checks, int n) {
  for (int i = 0; i < n; ++i) {
    if (rec.first_bad[checks[i].slot] != kNoError) return i;
  }
  return -1;
}

// Whether the bindings synchronise after a launch to report invalid mask/sign/code values
// (default yes). YOSO_CUDA_CHECK_INPUTS=0 skips that synchronisation for speed: the kernels still
// never access memory out of bounds (invalid codes are skipped), but the outputs of an invalid call
// are then unspecified and no error is raised. Never possible while a stream is being captured into
// a CUDA graph (the bindings skip the check then).
inline bool input_checks_enabled() {
  const char* v = std::getenv("YOSO_CUDA_CHECK_INPUTS");
  return v == nullptr || !(v[0] == '0' && v[1] == '\0');
}

// ---------------------------------------------------------------------------------------------
// FastHash
// ---------------------------------------------------------------------------------------------

inline size_t fast_hash_workspace_size(const FastHashDims&) { return kErrorRecordBytes; }

// ---------------------------------------------------------------------------------------------
// LSHCumulation plan
// ---------------------------------------------------------------------------------------------

struct LshPlan {
  int64_t table_floats = 0;  // floats of one (b, h, f) table: 2^tau * Dv
  int64_t bh_chunk = 0;      // (b, h) slices per round
  int64_t f_chunk = 0;       // hash functions per round
  bool f_split = false;      // f_chunk < m: partial sums accumulate across rounds
  bool half_accumulator = false;  // float16 output with f_split: separate float32 accumulator
  size_t table_offset = 0;   // byte offsets into the workspace
  size_t table_bytes = 0;    // tables of one round (the largest)
  size_t acc_offset = 0;
  size_t acc_bytes = 0;
  size_t workspace_bytes = 0;
};

// Plans the rounds of one LSHCumulation call. `d` must have passed check_lsh_shapes and
// check_lsh_cuda_limits. budget_floats <= 0 selects kDefaultTableBudgetFloats (tests pass small
// budgets to exercise the chunking).
inline LshPlan plan_lsh(const LshDims& d, DType value_type, int64_t budget_floats = 0) {
  LshPlan p;
  if (budget_floats <= 0) budget_floats = kDefaultTableBudgetFloats;
  const int64_t dv = std::max<int64_t>(1, d.Dv);
  const int64_t bh = std::max<int64_t>(1, d.B * d.H);
  const int64_t m = std::max<int64_t>(1, d.m);
  p.table_floats = (int64_t{1} << d.tau) * dv;
  const int64_t slots = std::max<int64_t>(1, budget_floats / p.table_floats);  // tables per round
  if (slots >= m) {
    p.f_chunk = m;
    p.bh_chunk = std::min(bh, slots / m);
  } else {
    p.f_chunk = slots;
    p.bh_chunk = 1;
  }
  p.f_split = p.f_chunk < m;
  p.half_accumulator = p.f_split && value_type == DType::kFloat16;
  p.table_offset = kErrorRecordBytes;
  p.table_bytes = static_cast<size_t>(p.bh_chunk * p.f_chunk * p.table_floats) * sizeof(float);
  p.acc_offset = p.table_offset + align_up(p.table_bytes);
  p.acc_bytes = p.half_accumulator
                    ? static_cast<size_t>(p.bh_chunk * std::max<int64_t>(0, d.Sq) * dv) * sizeof(float)
                    : 0;
  p.workspace_bytes = p.acc_offset + align_up(p.acc_bytes);
  return p;
}

inline size_t lsh_workspace_size(const LshDims& d, DType value_type, int64_t budget_floats = 0) {
  return plan_lsh(d, value_type, budget_floats).workspace_bytes;
}

}  // namespace cuda
}  // namespace yoso
