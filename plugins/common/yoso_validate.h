// yoso_validate.h -- host-side validation of the com.yoso op inputs (see plugins/OPS.md).
//
// Shared by every host framework binding (ONNX Runtime CPU and CUDA kernels, TensorRT plugins).
// Each check returns an error message, or an empty string when the input is valid. Messages name
// the op, the input, what was expected, what was found, and how to fix it. Nothing here throws
// except std::bad_alloc from building a message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <string>

#include "yoso_core.h"

namespace yoso {

// A non-owning view of a tensor shape.
struct ShapeRef {
  const int64_t* dims;
  size_t rank;
  int64_t operator[](size_t i) const { return dims[i]; }
};

inline std::string shape_str(ShapeRef s) {
  std::string r = "[";
  for (size_t i = 0; i < s.rank; ++i) {
    if (i) r += ",";
    r += std::to_string(s.dims[i]);
  }
  return r + "]";
}

// A shape for the messages of the partial checks: unknown (negative) sizes print as "?"; the same
// text as shape_str for a fully known shape.
inline std::string shapes_known_str(ShapeRef s) {
  std::string r = "[";
  for (size_t i = 0; i < s.rank; ++i) {
    if (i) r += ",";
    r += s.dims[i] < 0 ? std::string("?") : std::to_string(s.dims[i]);
  }
  return r + "]";
}

// A size for messages: the number, or "?" when it is not known (negative; only in the checks of
// partially known shapes below).
inline std::string dim_str(int64_t d) { return d < 0 ? std::string("?") : std::to_string(d); }

inline std::string dims_str(std::initializer_list<int64_t> dims) {
  std::string r = "[";
  bool first = true;
  for (int64_t d : dims) {
    if (!first) r += ",";
    r += dim_str(d);
    first = false;
  }
  return r + "]";
}

// Whether a size is known: at network build / graph load time a dimension may be -1 (TensorRT) or
// symbolic (ONNX Runtime shape inference), given to the partial checks as a negative number.
inline bool known_dim(int64_t d) { return d >= 0; }

// a != b, both known.
inline bool known_differ(int64_t a, int64_t b) { return known_dim(a) && known_dim(b) && a != b; }

// a * b for non-negative operands; false on int64 overflow.
inline bool checked_mul(int64_t a, int64_t b, int64_t* out) {
  if (a < 0 || b < 0) return false;
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

// Number of elements of a shape; false if a dim is negative or the product (times elem_bytes,
// i.e. the byte size) would overflow int64.
inline bool checked_numel(ShapeRef s, int64_t elem_bytes, int64_t* out) {
  int64_t n = 1;
  for (size_t i = 0; i < s.rank; ++i) {
    if (!checked_mul(n, s.dims[i], &n)) return false;
  }
  int64_t bytes = 0;
  if (!checked_mul(n, elem_bytes, &bytes)) return false;
  *out = n;
  return true;
}

namespace detail {

inline std::string input_name(const char* op, const char* input, int index) {
  return std::string(op) + ": input '" + input + "' (input " + std::to_string(index) + ")";
}

inline std::string rank_error(const char* op, const char* input, int index, size_t want_rank,
                              const char* layout, ShapeRef got) {
  return input_name(op, input, index) + " must have rank " + std::to_string(want_rank) + " " +
         layout + "; got rank " + std::to_string(got.rank) + " with shape " + shape_str(got) +
         ". Fix: reshape the input to " + layout + ".";
}

inline std::string negative_dim_error(const char* op, const char* input, int index, ShapeRef got) {
  return input_name(op, input, index) + " has a negative (unknown) dimension: " + shape_str(got) +
         ". Fix: the op needs concrete, non-negative sizes at run time.";
}

inline bool has_negative_dim(ShapeRef s) {
  for (size_t i = 0; i < s.rank; ++i)
    if (s.dims[i] < 0) return true;
  return false;
}

inline std::string float_str(float v) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%.9g", static_cast<double>(v));
  return buf;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Attributes
// ---------------------------------------------------------------------------------------------

inline std::string check_hash_code_len(const char* op, int64_t hash_code_len) {
  if (hash_code_len < 1 || hash_code_len > kMaxHashCodeLen) {
    return std::string(op) + ": attribute 'hash_code_len' must be in [1, " +
           std::to_string(kMaxHashCodeLen) + "]; got " + std::to_string(hash_code_len) +
           " (the op contract's limit kMaxHashCodeLen, for every backend" +
           (std::string(op) == "LSHCumulation"
                ? "; the CUDA backend's LSHCumulation allows at most " + std::to_string(kMaxCudaHashCodeLen)
                : std::string()) +
           "). Fix: export the model with 1 <= hash_code_len <= " +
           std::to_string(kMaxHashCodeLen) + " (codes are int32 in [0, 2^hash_code_len)).";
  }
  return {};
}

inline std::string check_fast_hash_attrs(int64_t num_hash, int64_t hash_code_len) {
  if (num_hash < 1 || num_hash > std::numeric_limits<int32_t>::max()) {
    return std::string("FastHash: attribute 'num_hash' must be in [1, 2^31-1]; got ") +
           std::to_string(num_hash) + ". Fix: export the model with a positive num_hash.";
  }
  return check_hash_code_len("FastHash", hash_code_len);
}

inline std::string check_lsh_attrs(int64_t hash_code_len) {
  return check_hash_code_len("LSHCumulation", hash_code_len);
}

// ---------------------------------------------------------------------------------------------
// FastHash shapes
// ---------------------------------------------------------------------------------------------

// The rules between the sizes of x [B,H,S,D], mask [B,S] and signs [H,3,P,D] that can be checked
// while some sizes are unknown (negative): each rule whose sizes are all known, in the order and
// with the messages of check_fast_hash_shapes (which runs them on fully known shapes). Used where
// shapes are partially known: ONNX Runtime shape inference (plugins/ort) and TensorRT network
// build (plugins/trt). The ranks must already be 4 / 2 / 4 and the attributes valid.
inline std::string check_fast_hash_known_dims(ShapeRef x, ShapeRef mask, ShapeRef signs,
                                              int64_t num_hash, int64_t hash_code_len) {
  const char* op = "FastHash";
  const int64_t B = x[0], H = x[1], S = x[2], D = x[3];
  if (known_dim(D) && (!is_power_of_two(D) || D > kMaxHashDim)) {
    return detail::input_name(op, "x", 0) + " must have a last dimension D that is a power of two in [1, " +
           std::to_string(kMaxHashDim) + "]; got D=" + std::to_string(D) + " (shape " +
           shapes_known_str(x) + "). Fix: zero-pad the hashed vectors to the next power of two.";
  }
  if (known_dim(D) && hash_code_len > D) {
    return std::string(op) + ": attribute 'hash_code_len' (" + std::to_string(hash_code_len) +
           ") must not exceed the hashed dimension D=" + std::to_string(D) + " of input 'x' " +
           shapes_known_str(x) + ". Fix: zero-pad x to D >= hash_code_len or use shorter codes.";
  }
  if (known_differ(mask[0], B) || known_differ(mask[1], S)) {
    return detail::input_name(op, "mask", 1) + " must have shape [B,S] = " + dims_str({B, S}) +
           " to match x " + shapes_known_str(x) + "; got " + shapes_known_str(mask) +
           ". Fix: pass the [batch, sequence] mask of the hashed tokens.";
  }
  const int64_t P = known_dim(D) ? num_parts(num_hash, D, hash_code_len) : -1;
  if (known_differ(signs[0], H) || known_differ(signs[1], 3) || known_differ(signs[2], P) ||
      known_differ(signs[3], D)) {
    return detail::input_name(op, "signs", 2) + " must have shape [H,3,P,D] = " +
           dims_str({H, 3, P, D}) + " for x " + shapes_known_str(x) + ", num_hash=" +
           std::to_string(num_hash) + ", hash_code_len=" + std::to_string(hash_code_len) +
           " (P = ceil(num_hash / floor(D / hash_code_len)) = " + dim_str(P) + "); got " +
           shapes_known_str(signs) + ". Fix: draw the signs for these sizes (ops.draw_signs) or export "
           "the node with the num_hash/hash_code_len the signs were drawn for.";
  }
  return {};
}

struct FastHashDims {
  int64_t B = 0, H = 0, S = 0, D = 0;  // x is [B, H, S, D]
  int64_t m = 0;                       // num_hash
  int64_t P = 0;                       // parts, signs is [H, 3, P, D]
  int64_t per_part = 0;                // floor(D / tau)
  int tau = 0;                         // hash_code_len
};

// Checks the shapes of x [B,H,S,D], mask [B,S], signs [H,3,P,D] against the (already checked)
// attributes and fills *out.
inline std::string check_fast_hash_shapes(ShapeRef x, ShapeRef mask, ShapeRef signs,
                                          int64_t num_hash, int64_t hash_code_len,
                                          FastHashDims* out) {
  const char* op = "FastHash";
  std::string err = check_fast_hash_attrs(num_hash, hash_code_len);
  if (!err.empty()) return err;
  if (x.rank != 4) return detail::rank_error(op, "x", 0, 4, "[B,H,S,D]", x);
  if (mask.rank != 2) return detail::rank_error(op, "mask", 1, 2, "[B,S]", mask);
  if (signs.rank != 4) return detail::rank_error(op, "signs", 2, 4, "[H,3,P,D]", signs);
  if (detail::has_negative_dim(x)) return detail::negative_dim_error(op, "x", 0, x);
  if (detail::has_negative_dim(mask)) return detail::negative_dim_error(op, "mask", 1, mask);
  if (detail::has_negative_dim(signs)) return detail::negative_dim_error(op, "signs", 2, signs);

  err = check_fast_hash_known_dims(x, mask, signs, num_hash, hash_code_len);
  if (!err.empty()) return err;
  const int64_t B = x[0], H = x[1], S = x[2], D = x[3];
  const int64_t per_part = codes_per_part(D, hash_code_len);
  const int64_t P = num_parts(num_hash, D, hash_code_len);
  int64_t out_numel = 0;
  const int64_t out_dims[4] = {B, H, S, num_hash};
  if (!checked_numel(ShapeRef{out_dims, 4}, static_cast<int64_t>(sizeof(int32_t)), &out_numel)) {
    return std::string(op) + ": output 'codes' of shape " + dims_str({B, H, S, num_hash}) +
           " would overflow a 64-bit size. Fix: use smaller inputs or fewer hashes.";
  }
  out->B = B;
  out->H = H;
  out->S = S;
  out->D = D;
  out->m = num_hash;
  out->P = P;
  out->per_part = per_part;
  out->tau = static_cast<int>(hash_code_len);
  return {};
}

// ---------------------------------------------------------------------------------------------
// Value checks (read the data once; run them before any computation)
// ---------------------------------------------------------------------------------------------

// Messages for one invalid element (flat index `at` of the input). Shared by the host checks
// below and by backends that detect the violation elsewhere (the CUDA kernels record the first
// invalid index on the device; the host then formats the same message).
inline std::string sign_value_error(float v, int64_t at) {
  return detail::input_name("FastHash", "signs", 2) + " must hold only +1.0 or -1.0; got " +
         detail::float_str(v) + " at flat index " + std::to_string(at) +
         ". Fix: the sign diagonals are corrupted; re-export the model.";
}

inline std::string mask_value_error(const char* op, const char* input, int index, int32_t v,
                                    int64_t at) {
  return detail::input_name(op, input, index) + " must hold only 0 or 1; got " + std::to_string(v) +
         " at flat index " + std::to_string(at) +
         ". Fix: convert masks with Cast(Not(Equal(mask, 0)), to=int32) before the op.";
}

inline std::string code_value_error(const char* op, const char* input, int index, int32_t c,
                                    int64_t at, int tau) {
  const int64_t buckets = int64_t{1} << tau;
  return detail::input_name(op, input, index) + " must hold codes in [0, 2^hash_code_len) = [0, " +
         std::to_string(buckets) + ") for hash_code_len=" + std::to_string(tau) + "; got " +
         std::to_string(c) + " at flat index " + std::to_string(at) +
         ". Fix: feed FastHash outputs produced with the same hash_code_len.";
}

// Every signs entry must be exactly +1.0 or -1.0.
inline std::string check_signs_values(const float* signs, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!is_valid_sign_value(signs[i])) return sign_value_error(signs[i], i);
  }
  return {};
}

// Every mask entry must be 0 or 1.
inline std::string check_mask_values(const char* op, const char* input, int index,
                                     const int32_t* mask, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!is_valid_mask_value(mask[i])) return mask_value_error(op, input, index, mask[i], i);
  }
  return {};
}

// Every code (masked tokens included) must lie in [0, 2^tau).
inline std::string check_code_values(const char* op, const char* input, int index,
                                     const int32_t* codes, int64_t n, int tau) {
  for (int64_t i = 0; i < n; ++i) {
    if (!is_valid_code_value(codes[i], tau)) return code_value_error(op, input, index, codes[i], i, tau);
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// LSHCumulation shapes
// ---------------------------------------------------------------------------------------------

// The rules between the sizes of query_codes [B,H,Sq,m], key_codes [B,H,Sk,m], query_mask [B,Sq],
// key_mask [B,Sk] and value [B,H,Sk,Dv] that can be checked while some sizes are unknown
// (negative): each rule whose sizes are all known, in the order and with the messages of
// check_lsh_shapes. The ranks must already be 4 / 4 / 2 / 2 / 4.
inline std::string check_lsh_known_dims(ShapeRef qc, ShapeRef kc, ShapeRef qm, ShapeRef km, ShapeRef v) {
  const char* op = "LSHCumulation";
  const int64_t B = qc[0], H = qc[1], Sq = qc[2], m = qc[3];
  const int64_t Sk = kc[2];
  if (known_dim(m) && m < 1) {
    return detail::input_name(op, "query_codes", 0) +
           " must have at least one hash function (last dimension m >= 1); got shape " +
           shapes_known_str(qc) + ". Fix: feed FastHash outputs with num_hash >= 1.";
  }
  if (known_differ(kc[0], B) || known_differ(kc[1], H) || known_differ(kc[3], m)) {
    return detail::input_name(op, "key_codes", 1) + " must have shape [B,H,Sk,m] = [" + dim_str(B) +
           "," + dim_str(H) + ",Sk," + dim_str(m) + "] to match query_codes " + shapes_known_str(qc) +
           "; got " + shapes_known_str(kc) +
           ". Fix: hash queries and keys of the same batch/heads with the same num_hash.";
  }
  if (known_differ(v[0], B) || known_differ(v[1], H) || known_differ(v[2], Sk)) {
    return detail::input_name(op, "value", 4) + " must have shape [B,H,Sk,Dv] = [" + dim_str(B) +
           "," + dim_str(H) + "," + dim_str(Sk) + ",Dv] to match key_codes " + shapes_known_str(kc) +
           "; got " + shapes_known_str(v) + ". Fix: pass the values of the hashed keys.";
  }
  if (known_differ(qm[0], B) || known_differ(qm[1], Sq)) {
    return detail::input_name(op, "query_mask", 2) + " must have shape [B,Sq] = " +
           dims_str({B, Sq}) + " to match query_codes " + shapes_known_str(qc) + "; got " +
           shapes_known_str(qm) + ". Fix: pass the [batch, query] mask.";
  }
  if (known_differ(km[0], B) || known_differ(km[1], Sk)) {
    return detail::input_name(op, "key_mask", 3) + " must have shape [B,Sk] = " +
           dims_str({B, Sk}) + " to match key_codes " + shapes_known_str(kc) + "; got " +
           shapes_known_str(km) + ". Fix: pass the [batch, key] mask.";
  }
  return {};
}

struct LshDims {
  int64_t B = 0, H = 0, Sq = 0, Sk = 0;
  int64_t m = 0;   // hash functions (last dim of the code tensors)
  int64_t Dv = 0;  // value width
  int tau = 0;     // hash_code_len
};

// Checks query_codes [B,H,Sq,m], key_codes [B,H,Sk,m], query_mask [B,Sq], key_mask [B,Sk],
// value [B,H,Sk,Dv] and the attribute, and fills *out.
inline std::string check_lsh_shapes(ShapeRef qc, ShapeRef kc, ShapeRef qm, ShapeRef km, ShapeRef v,
                                    int64_t hash_code_len, LshDims* out) {
  const char* op = "LSHCumulation";
  std::string err = check_lsh_attrs(hash_code_len);
  if (!err.empty()) return err;
  if (qc.rank != 4) return detail::rank_error(op, "query_codes", 0, 4, "[B,H,Sq,m]", qc);
  if (kc.rank != 4) return detail::rank_error(op, "key_codes", 1, 4, "[B,H,Sk,m]", kc);
  if (qm.rank != 2) return detail::rank_error(op, "query_mask", 2, 2, "[B,Sq]", qm);
  if (km.rank != 2) return detail::rank_error(op, "key_mask", 3, 2, "[B,Sk]", km);
  if (v.rank != 4) return detail::rank_error(op, "value", 4, 4, "[B,H,Sk,Dv]", v);
  const struct {
    const char* name;
    int index;
    ShapeRef s;
  } all[] = {{"query_codes", 0, qc}, {"key_codes", 1, kc}, {"query_mask", 2, qm},
             {"key_mask", 3, km}, {"value", 4, v}};
  for (const auto& a : all)
    if (detail::has_negative_dim(a.s)) return detail::negative_dim_error(op, a.name, a.index, a.s);

  err = check_lsh_known_dims(qc, kc, qm, km, v);
  if (!err.empty()) return err;
  const int64_t B = qc[0], H = qc[1], Sq = qc[2], m = qc[3];
  const int64_t Sk = kc[2], Dv = v[3];
  int64_t out_numel = 0;
  const int64_t out_dims[4] = {B, H, Sq, Dv};
  if (!checked_numel(ShapeRef{out_dims, 4}, static_cast<int64_t>(sizeof(float)), &out_numel)) {
    return std::string(op) + ": output of shape " + dims_str({B, H, Sq, Dv}) +
           " would overflow a 64-bit size. Fix: use smaller inputs.";
  }
  out->B = B;
  out->H = H;
  out->Sq = Sq;
  out->Sk = Sk;
  out->m = m;
  out->Dv = Dv;
  out->tau = static_cast<int>(hash_code_len);
  return {};
}

// ---------------------------------------------------------------------------------------------
// The value checks of one call, after its shapes (read-only passes, before any output is written)
// ---------------------------------------------------------------------------------------------

// FastHash: the mask is 0/1 and every signs entry is +-1.
inline std::string check_fast_hash_values(const FastHashDims& d, const int32_t* mask, const float* signs) {
  const int64_t mask_n = d.B * d.S, signs_n = d.H * 3 * d.P * d.D;
  std::string err;
  if (mask_n > 0) err = check_mask_values("FastHash", "mask", 1, mask, mask_n);
  if (err.empty() && signs_n > 0) err = check_signs_values(signs, signs_n);
  return err;
}

// LSHCumulation: the masks are 0/1 and every code (masked tokens included) lies in [0, 2^tau).
inline std::string check_lsh_values(const LshDims& d, const int32_t* query_codes, const int32_t* key_codes,
                                    const int32_t* query_mask, const int32_t* key_mask) {
  const char* op = "LSHCumulation";
  const int64_t qm_n = d.B * d.Sq, km_n = d.B * d.Sk;
  const int64_t qc_n = qm_n * d.H * d.m, kc_n = km_n * d.H * d.m;
  std::string err;
  if (qm_n > 0) err = check_mask_values(op, "query_mask", 2, query_mask, qm_n);
  if (err.empty() && km_n > 0) err = check_mask_values(op, "key_mask", 3, key_mask, km_n);
  if (err.empty() && qc_n > 0) err = check_code_values(op, "query_codes", 0, query_codes, qc_n, d.tau);
  if (err.empty() && kc_n > 0) err = check_code_values(op, "key_codes", 1, key_codes, kc_n, d.tau);
  return err;
}

}  // namespace yoso
