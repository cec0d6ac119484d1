// yoso_cuda_kernels.h -- the CUDA kernels' per-thread bodies and launch sequences, written once
// for the device and for a CPU emulation.
//
// Every kernel of plugins/cuda is one of three shapes, and this header holds its body:
//   * element kernels:  f(i) for i in [0, n), independent              (input validation)
//   * row kernels:      f.row(r) once per row, then f.col(state, c) for every column c; on the GPU
//                       a warp takes a row and its lanes take the columns  (LSHCumulation)
//   * FastHash blocks:  a block of threads hashes U tokens in shared memory, in phases separated
//                       by block barriers (Block::run)
// and the launch sequences (run_fast_hash, run_lsh) are templates over an executor `Exec` that
// provides memset / for_each / for_each_row / fast_hash. plugins/cuda/yoso_cuda.cu instantiates
// them with an executor that launches kernels on a stream; tests/cpp/cuda_emulation_test.cc with
// one that runs the same bodies in loops on the CPU (and in reversed thread order, to expose races
// between threads of one phase). So the index arithmetic, the chunking into rounds and the
// per-element math (from yoso_core.h) are tested on machines without a GPU.
//
// Nothing here allocates or synchronises; no CUDA header is needed (device-only pieces are behind
// __CUDA_ARCH__).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "yoso_core.h"
#include "yoso_cuda_plan.h"
#include "yoso_half.h"
#include "yoso_validate.h"

namespace yoso {
namespace cuda {
namespace kern {

YOSO_HD inline void atomic_add_f32(float* p, float v) {
#if defined(__CUDA_ARCH__)
  atomicAdd(p, v);
#else
  *p += v;
#endif
}

YOSO_HD inline void atomic_min_u64(unsigned long long* p, unsigned long long v) {
#if defined(__CUDA_ARCH__)
  atomicMin(p, v);
#else
  if (v < *p) *p = v;
#endif
}

template <typename T>
constexpr DType dtype_of() {
  return std::is_same<T, Half>::value ? DType::kFloat16 : DType::kFloat32;
}

// =============================================================================================
// Input validation (element kernel)
// =============================================================================================

struct Validate {
  const void* data[kMaxCheckedInputs];
  int64_t n[kMaxCheckedInputs];
  int kind[kMaxCheckedInputs];
  int slot[kMaxCheckedInputs];
  int tau[kMaxCheckedInputs];
  int count;
  unsigned long long* first_bad;

  YOSO_HD void operator()(int64_t i) const {
    int s = 0;
    while (s < count && i >= n[s]) {
      i -= n[s];
      ++s;
    }
    if (s >= count) return;
    bool ok = true;
    if (kind[s] == static_cast<int>(CheckKind::kSign)) {
      ok = is_valid_sign_value(static_cast<const float*>(data[s])[i]);
    } else if (kind[s] == static_cast<int>(CheckKind::kMask)) {
      ok = is_valid_mask_value(static_cast<const int32_t*>(data[s])[i]);
    } else {
      ok = is_valid_code_value(static_cast<const int32_t*>(data[s])[i], tau[s]);
    }
    if (!ok) atomic_min_u64(first_bad + slot[s], static_cast<unsigned long long>(i));
  }
};

// Resets the record and validates every listed input (all elements, masked tokens included).
template <class Exec>
int run_validation(Exec& ex, const InputCheck* checks, int n_checks, ErrorRecord* record) {
  int rc = ex.memset(record, 0xff, sizeof(ErrorRecord));
  if (rc) return rc;
  Validate v{};
  v.count = 0;
  v.first_bad = record->first_bad;
  int64_t total = 0;
  for (int i = 0; i < n_checks; ++i) {
    if (checks[i].n <= 0) continue;
    v.data[v.count] = checks[i].data;
    v.n[v.count] = checks[i].n;
    v.kind[v.count] = static_cast<int>(checks[i].kind);
    v.slot[v.count] = checks[i].slot;
    v.tau[v.count] = checks[i].tau;
    total += checks[i].n;
    ++v.count;
  }
  if (total == 0) return 0;
  return ex.for_each(v, total);
}

// =============================================================================================
// FastHash (block kernel)
// =============================================================================================

constexpr int kFastHashThreads = 128;     // threads per block
constexpr int kFastHashUnitFloats = 256;  // a block hashes U = max(1, 256 / D) (token, part) units
constexpr int kFastHashTileFloats = kMaxHashDim;  // U * D <= max(256, D) <= 1024
constexpr int kFastHashMaxUnits = kFastHashUnitFloats;

// Shared memory of one block.
struct FastHashShared {
  float t[kFastHashTileFloats];              // U working vectors of D floats
  int64_t row[kFastHashMaxUnits];            // (b*H + h)*S + s of each unit
  int64_t sign_off[kFastHashMaxUnits];       // offset of signs[h, 0, part, 0]
  int32_t part[kFastHashMaxUnits];
  unsigned char valid[kFastHashMaxUnits];    // unit exists (the last block may be partial)
  unsigned char keep[kFastHashMaxUnits];     // mask[b, s] != 0
};

template <typename T>
struct FastHashArgs {
  const T* x;
  const int32_t* mask;
  const float* signs;
  int32_t* codes;
  int64_t H, S, P, m, units;  // units = B*H*S*P (token, part) pairs
  int D, log2D, tau, per_part, U;
};

template <typename T>
FastHashArgs<T> make_fast_hash_args(const FastHashDims& d, const T* x, const int32_t* mask,
                                    const float* signs, int32_t* codes) {
  FastHashArgs<T> a{};
  a.x = x;
  a.mask = mask;
  a.signs = signs;
  a.codes = codes;
  a.H = d.H;
  a.S = d.S;
  a.P = d.P;
  a.m = d.m;
  a.units = d.B * d.H * d.S * d.P;
  a.D = static_cast<int>(d.D);
  a.log2D = 0;
  while ((1 << a.log2D) < a.D) ++a.log2D;
  a.tau = d.tau;
  a.per_part = static_cast<int>(d.per_part);
  a.U = std::max(1, kFastHashUnitFloats / a.D);
  return a;
}

inline int64_t fast_hash_num_blocks(int64_t units, int U) { return (units + U - 1) / U; }

// Hashes units [block_index * U, block_index * U + U) with the block's threads. `Block` provides
// size() and run(f): every thread calls f(thread_index), then the block synchronises. Per unit and
// part this is OPS.md FastHash steps 1-5 with the butterflies of a stage spread over the threads;
// the stages run in the contract's order, so the codes are bit-identical to the CPU's.
template <class Block, typename T>
YOSO_HD void fast_hash_block(const Block& blk, const FastHashArgs<T>& a, int64_t block_index,
                             FastHashShared& sh) {
  const int D = a.D;
  const int U = a.U;
  const int nt = blk.size();
  const int64_t unit0 = block_index * U;
  float* t = sh.t;

  // Per-unit bookkeeping.
  blk.run([&](int tid) {
    for (int u = tid; u < U; u += nt) {
      const int64_t unit = unit0 + u;
      const bool valid = unit < a.units;
      int64_t row = 0, part = 0, off = 0;
      bool keep = false;
      if (valid) {
        row = unit / a.P;
        part = unit - row * a.P;
        const int64_t s = row % a.S;
        const int64_t bh = row / a.S;
        const int64_t h = bh % a.H;
        const int64_t b = bh / a.H;
        keep = a.mask[b * a.S + s] != 0;
        off = (h * 3 * a.P + part) * D;
      }
      sh.valid[u] = valid ? 1 : 0;
      sh.keep[u] = keep ? 1 : 0;
      sh.row[u] = row;
      sh.part[u] = static_cast<int32_t>(part);
      sh.sign_off[u] = off;
    }
  });

  // Step 1-2a: t = float32(x) * signs[h, 0, part, :].
  blk.run([&](int tid) {
    for (int e = tid; e < U * D; e += nt) {
      const int u = e >> a.log2D;
      const int i = e & (D - 1);
      t[e] = sh.valid[u] ? load_as_float(a.x, sh.row[u] * D + i) * a.signs[sh.sign_off[u] + i]
                         : 0.0f;
    }
  });

  const int half = D >> 1;  // butterflies per unit and stage
  const int64_t plane = a.P * D;
  for (int k = 0; k < 3; ++k) {
    if (k > 0) {  // t = t * signs[h, k, part, :]
      blk.run([&](int tid) {
        for (int e = tid; e < U * D; e += nt) {
          const int u = e >> a.log2D;
          const int i = e & (D - 1);
          if (sh.valid[u]) t[e] = t[e] * a.signs[sh.sign_off[u] + k * plane + i];
        }
      });
    }
    for (int s = half; s >= 1; s >>= 1) {  // t = WHT(t), stride D/2 first
      blk.run([&](int tid) {
        for (int e = tid; e < U * half; e += nt) {
          const int u = e >> (a.log2D - 1);
          const int i = wht_pair_index(e & (half - 1), s);
          float* tu = t + u * D;
          wht_butterfly(tu + i, tu + i + s);
        }
      });
    }
  }

  // Step 5: codes of this part (zeros for masked tokens).
  blk.run([&](int tid) {
    const int pp = a.per_part;
    for (int e = tid; e < U * pp; e += nt) {
      const int u = e / pp;
      const int j = e - u * pp;
      if (!sh.valid[u]) continue;
      const int64_t f = static_cast<int64_t>(sh.part[u]) * pp + j;
      if (f >= a.m) continue;
      a.codes[sh.row[u] * a.m + f] = sh.keep[u] ? pack_code(t + u * D + j * a.tau, a.tau) : 0;
    }
  });
}

template <class Exec, typename T>
int run_fast_hash(Exec& ex, const FastHashDims& d, const T* x, const int32_t* mask,
                  const float* signs, int32_t* codes, void* workspace, size_t workspace_bytes) {
  if (workspace == nullptr || workspace_bytes < fast_hash_workspace_size(d)) return ex.invalid_value();
  if (d.D < 1 || d.D > kMaxHashDim || !is_power_of_two(d.D)) return ex.invalid_value();
  InputCheck checks[kMaxCheckedInputs];
  const int nc = fast_hash_checks(d, mask, signs, checks);
  int rc = run_validation(ex, checks, nc, static_cast<ErrorRecord*>(workspace));
  if (rc) return rc;
  const FastHashArgs<T> a = make_fast_hash_args(d, x, mask, signs, codes);
  if (a.units == 0) return 0;
  return ex.fast_hash(a, fast_hash_num_blocks(a.units, a.U));
}

// =============================================================================================
// LSHCumulation (row kernels)
// =============================================================================================

// One round: (b, h) slices [bh0, bh0 + nbh) x hash functions [f0, f0 + nf). The bucket table of
// slot (bhl, fl) = (bh - bh0, f - f0) is table[(bhl * nf + fl) << tau ... ] with rows of Dv floats.
template <typename T>
struct LshRound {
  const int32_t* qc;
  const int32_t* kc;
  const int32_t* qm;
  const int32_t* km;
  const T* value;
  T* out;
  float* table;
  float* acc;          // float32 running sums when f is split over rounds (may alias out)
  bool acc_is_output;  // acc == out (float32 output): index like out; else [nbh, Sq, Dv]
  bool f_split, first_f, last_f;
  int tau;
  int64_t H, Sq, Sk, m, Dv;
  int64_t bh0, nbh, f0, nf;
  float m_f;
};

struct KeyRow {
  int64_t table_base;  // float offset of the slot's table
  int64_t value_base;  // offset of value[b, h, k, 0]
  int32_t code;
  bool active;         // unmasked key with a valid code
};

// Rows: (bhl, fl, k) with k fastest. Shared by scatter and clear.
template <typename T>
YOSO_HD inline KeyRow lsh_key_row(const LshRound<T>& a, int64_t r) {
  KeyRow st{};
  const int64_t k = r % a.Sk;
  const int64_t slot = r / a.Sk;  // bhl * nf + fl
  const int64_t fl = slot % a.nf;
  const int64_t bhl = slot / a.nf;
  const int64_t bh = a.bh0 + bhl;
  const int64_t b = bh / a.H;
  st.active = false;
  if (a.km[b * a.Sk + k] == 0) return st;
  const int32_t code = a.kc[(bh * a.Sk + k) * a.m + a.f0 + fl];
  if (!is_valid_code_value(code, a.tau)) return st;  // reported by the validation kernel
  st.code = code;
  st.table_base = ((slot << a.tau) + code) * a.Dv;
  st.value_base = (bh * a.Sk + k) * a.Dv;
  st.active = true;
  return st;
}

// table[slot][code(k)] += value[b, h, k] for every unmasked key.
template <typename T>
struct LshScatter {
  LshRound<T> a;
  using Row = KeyRow;
  YOSO_HD Row row(int64_t r) const { return lsh_key_row(a, r); }
  YOSO_HD void col(const Row& st, int64_t c) const {
    atomic_add_f32(a.table + st.table_base + c, load_as_float(a.value, st.value_base + c));
  }
};

// Zeroes exactly the table rows the scatter touched (cheaper than a memset when 2^tau > Sk).
template <typename T>
struct LshClear {
  LshRound<T> a;
  using Row = KeyRow;
  YOSO_HD Row row(int64_t r) const { return lsh_key_row(a, r); }
  YOSO_HD void col(const Row& st, int64_t c) const { a.table[st.table_base + c] = 0.0f; }
};

struct QueryRow {
  int64_t code_base;   // offset of query_codes[b, h, q, f0]
  int64_t slot_base;   // bhl * nf
  int64_t out_base;    // offset of output[b, h, q, 0]
  int64_t acc_base;    // offset in the separate accumulator
  bool keep;
  bool active;
};

// output[b, h, q] = (sum over f of table[slot(f)][code_q(f)]) / m, over one or more rounds.
template <typename T>
struct LshGather {
  LshRound<T> a;
  using Row = QueryRow;
  YOSO_HD Row row(int64_t r) const {
    QueryRow st{};
    const int64_t q = r % a.Sq;
    const int64_t bhl = r / a.Sq;
    const int64_t bh = a.bh0 + bhl;
    const int64_t b = bh / a.H;
    st.keep = a.qm[b * a.Sq + q] != 0;
    st.code_base = (bh * a.Sq + q) * a.m + a.f0;
    st.slot_base = bhl * a.nf;
    st.out_base = (bh * a.Sq + q) * a.Dv;
    st.acc_base = (bhl * a.Sq + q) * a.Dv;
    st.active = true;
    return st;
  }
  YOSO_HD void col(const Row& st, int64_t c) const {
    float sum = 0.0f;
    if (st.keep) {
      for (int64_t fl = 0; fl < a.nf; ++fl) {
        const int32_t code = a.qc[st.code_base + fl];
        if (!is_valid_code_value(code, a.tau)) continue;  // reported by the validation kernel
        sum += a.table[(((st.slot_base + fl) << a.tau) + code) * a.Dv + c];
      }
    }
    const int64_t o = st.out_base + c;
    if (!a.f_split) {
      store_from_float(a.out, o, sum / a.m_f);
      return;
    }
    float* acc = a.acc + (a.acc_is_output ? o : st.acc_base + c);
    const float total = a.first_f ? sum : *acc + sum;
    if (a.last_f) {
      store_from_float(a.out, o, total / a.m_f);
    } else {
      *acc = total;
    }
  }
};

// The whole LSHCumulation call: validation, then rounds of (clear, scatter, gather). `d` must have
// passed check_lsh_shapes and check_lsh_cuda_limits; the workspace must hold
// lsh_workspace_size(d, dtype, budget_floats) bytes.
template <class Exec, typename T>
int run_lsh(Exec& ex, const LshDims& d, const int32_t* query_codes, const int32_t* key_codes,
            const int32_t* query_mask, const int32_t* key_mask, const T* value, T* output,
            void* workspace, size_t workspace_bytes, int64_t budget_floats = 0) {
  if (d.tau < 1 || d.tau > kMaxCudaHashCodeLen) return ex.invalid_value();
  const LshPlan p = plan_lsh(d, dtype_of<T>(), budget_floats);
  if (workspace == nullptr || workspace_bytes < p.workspace_bytes) return ex.invalid_value();
  InputCheck checks[kMaxCheckedInputs];
  const int nc = lsh_checks(d, query_codes, key_codes, query_mask, key_mask, checks);
  int rc = run_validation(ex, checks, nc, static_cast<ErrorRecord*>(workspace));
  if (rc) return rc;

  const int64_t BH = d.B * d.H;
  if (BH == 0 || d.Sq == 0 || d.Dv == 0) return 0;  // empty output
  if (d.Sk == 0) {                                   // no keys: all-zero output
    return ex.memset(output, 0, static_cast<size_t>(BH * d.Sq * d.Dv) * sizeof(T));
  }

  char* ws = static_cast<char*>(workspace);
  float* table = reinterpret_cast<float*>(ws + p.table_offset);
  float* acc = nullptr;
  bool acc_is_output = false;
  if (p.f_split) {
    if constexpr (std::is_same<T, float>::value) {
      acc = output;
      acc_is_output = true;
    } else {
      acc = reinterpret_cast<float*>(ws + p.acc_offset);
    }
  }
  rc = ex.memset(table, 0, p.table_bytes);
  if (rc) return rc;
  // Between rounds the touched table rows must be zero again: a memset of the round's tables, or
  // (when the tables are much larger than the number of keys) a pass over the keys.
  const bool clear_by_memset = (int64_t{1} << d.tau) <= d.Sk;

  for (int64_t bh0 = 0; bh0 < BH; bh0 += p.bh_chunk) {
    const int64_t nbh = std::min(p.bh_chunk, BH - bh0);
    for (int64_t f0 = 0; f0 < d.m; f0 += p.f_chunk) {
      const int64_t nf = std::min(p.f_chunk, d.m - f0);
      LshRound<T> r{};
      r.qc = query_codes;
      r.kc = key_codes;
      r.qm = query_mask;
      r.km = key_mask;
      r.value = value;
      r.out = output;
      r.table = table;
      r.acc = acc;
      r.acc_is_output = acc_is_output;
      r.f_split = p.f_split;
      r.first_f = f0 == 0;
      r.last_f = f0 + nf == d.m;
      r.tau = d.tau;
      r.H = d.H;
      r.Sq = d.Sq;
      r.Sk = d.Sk;
      r.m = d.m;
      r.Dv = d.Dv;
      r.bh0 = bh0;
      r.nbh = nbh;
      r.f0 = f0;
      r.nf = nf;
      r.m_f = static_cast<float>(d.m);
      const int64_t key_rows = nbh * nf * d.Sk;
      rc = ex.for_each_row(LshScatter<T>{r}, key_rows, d.Dv);
      if (rc) return rc;
      rc = ex.for_each_row(LshGather<T>{r}, nbh * d.Sq, d.Dv);
      if (rc) return rc;
      const bool last_round = bh0 + nbh == BH && r.last_f;
      if (last_round) continue;
      if (clear_by_memset) {
        rc = ex.memset(table, 0, static_cast<size_t>(nbh * nf * p.table_floats) * sizeof(float));
      } else {
        rc = ex.for_each_row(LshClear<T>{r}, key_rows, d.Dv);
      }
      if (rc) return rc;
    }
  }
  return 0;
}

}  // namespace kern
}  // namespace cuda
}  // namespace yoso
