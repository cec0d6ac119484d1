// yoso_cpu_scalar.cc -- the portable scalar kernels of FastHash and LSHCumulation (float32), for
// any CPU: FastHash per token with yoso_core.h, LSHCumulation with a bucket table per hash function
// (dense 2^tau x Dv for small tau, compact for large tau). The dispatch of yoso_cpu.cc runs them
// when the AVX2 kernels (yoso_cpu_avx2.cc) do not apply or YOSO_FORCE_SCALAR asks for them.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "yoso_core.h"
#include "yoso_cpu_kernels.h"

namespace yoso {
namespace cpu {
namespace scalar {

namespace {

inline void add_row(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

// Dense mode: table[2^tau][Dv], all zero between hash functions. Only the rows that keys touched
// are re-zeroed after each hash function, so the cost per function is O((Sk + Sq) * Dv).
void lsh_slice_dense(const LshDims& d, const int32_t* qc, const int32_t* kc,
                     const int32_t* qm, const int32_t* km, const float* value, float* out,
                     std::vector<float>& table, std::vector<int32_t>& touched) {
  const int64_t Dv = d.Dv, m = d.m;
  for (int64_t f = 0; f < m; ++f) {
    int64_t ntouched = 0;
    for (int64_t k = 0; k < d.Sk; ++k) {
      if (!km[k]) continue;
      const int32_t c = kc[k * m + f];
      touched[ntouched++] = c;  // duplicates are harmless (re-zeroed twice)
      add_row(table.data() + static_cast<int64_t>(c) * Dv, value + k * Dv, Dv);
    }
    if (ntouched == 0) continue;  // no unmasked key: every bucket is empty
    for (int64_t q = 0; q < d.Sq; ++q) {
      if (!qm[q]) continue;
      add_row(out + q * Dv, table.data() + static_cast<int64_t>(qc[q * m + f]) * Dv, Dv);
    }
    for (int64_t i = 0; i < ntouched; ++i)
      std::memset(table.data() + static_cast<int64_t>(touched[i]) * Dv, 0,
                  static_cast<size_t>(Dv) * sizeof(float));
  }
}

struct KeyEntry {
  int32_t code;
  int64_t key;
};

// Compact mode (large tau): per hash function, sort the unmasked keys by code, sum the values of
// each occupied bucket into one compact row, and let each query binary-search its bucket.
void lsh_slice_compact(const LshDims& d, const int32_t* qc, const int32_t* kc, const int32_t* qm,
                       const int32_t* km, const float* value, float* out,
                       std::vector<KeyEntry>& entries, std::vector<int32_t>& bucket_codes,
                       std::vector<float>& table) {
  const int64_t Dv = d.Dv, m = d.m;
  for (int64_t f = 0; f < m; ++f) {
    int64_t n = 0;
    for (int64_t k = 0; k < d.Sk; ++k)
      if (km[k]) entries[n++] = KeyEntry{kc[k * m + f], k};
    if (n == 0) continue;
    std::sort(entries.begin(), entries.begin() + n, [](const KeyEntry& a, const KeyEntry& b) {
      return a.code != b.code ? a.code < b.code : a.key < b.key;
    });
    int64_t nb = 0;  // occupied buckets
    for (int64_t i = 0; i < n; ++i) {
      if (nb == 0 || bucket_codes[nb - 1] != entries[i].code) {
        bucket_codes[nb] = entries[i].code;
        std::memset(table.data() + nb * Dv, 0, static_cast<size_t>(Dv) * sizeof(float));
        ++nb;
      }
      add_row(table.data() + (nb - 1) * Dv, value + entries[i].key * Dv, Dv);
    }
    const int32_t* first = bucket_codes.data();
    const int32_t* last = first + nb;
    for (int64_t q = 0; q < d.Sq; ++q) {
      if (!qm[q]) continue;
      const int32_t c = qc[q * m + f];
      const int32_t* it = std::lower_bound(first, last, c);
      if (it != last && *it == c) add_row(out + q * Dv, table.data() + (it - first) * Dv, Dv);
    }
  }
}

}  // namespace

void fast_hash_f32(const FastHashDims& d, const float* x, const int32_t* mask, const float* signs,
                   int32_t* codes, int64_t row_begin, int64_t row_end) {
  const int D = static_cast<int>(d.D);
  float t[kMaxHashDim];  // one token's working vector (D <= kMaxHashDim, validated)
  const int64_t HS = d.H * d.S;
  const int64_t signs_per_head = 3 * d.P * d.D;
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t b = row / HS;
    const int64_t h = (row / d.S) % d.H;
    const int64_t s = row % d.S;
    const bool keep = mask[b * d.S + s] != 0;
    hash_token(x + row * d.D, keep, signs + h * signs_per_head, d.P, D, d.tau, d.per_part, d.m, t,
               codes + row * d.m);
  }
}

void lsh_cumulation_f32(const LshDims& d, bool dense, const int32_t* query_codes,
                        const int32_t* key_codes, const int32_t* query_mask,
                        const int32_t* key_mask, const float* value, float* output,
                        int64_t slice_begin, int64_t slice_end) {
  const int64_t Dv = d.Dv, m = d.m;
  const float m_f = static_cast<float>(m);
  // Scratch, allocated once for the whole range of slices.
  std::vector<float> table;
  std::vector<int32_t> touched_or_codes;
  std::vector<KeyEntry> entries;
  if (d.Sk > 0) {
    if (dense) {
      table.assign(static_cast<size_t>((int64_t{1} << d.tau) * Dv), 0.0f);
      touched_or_codes.resize(static_cast<size_t>(d.Sk));
    } else {
      table.resize(static_cast<size_t>(d.Sk * Dv));
      touched_or_codes.resize(static_cast<size_t>(d.Sk));
      entries.resize(static_cast<size_t>(d.Sk));
    }
  }

  for (int64_t bh = slice_begin; bh < slice_end; ++bh) {
    float* out = output + bh * d.Sq * Dv;
    std::memset(out, 0, static_cast<size_t>(d.Sq * Dv) * sizeof(float));
    if (d.Sk == 0) continue;  // no keys: all-zero output (key inputs are empty, maybe null)
    const int64_t b = bh / d.H;
    const int32_t* qc = query_codes + bh * d.Sq * m;
    const int32_t* kc = key_codes + bh * d.Sk * m;
    const int32_t* qm = query_mask + b * d.Sq;
    const int32_t* km = key_mask + b * d.Sk;
    const float* v = value + bh * d.Sk * Dv;
    if (dense) {
      lsh_slice_dense(d, qc, kc, qm, km, v, out, table, touched_or_codes);
    } else {
      lsh_slice_compact(d, qc, kc, qm, km, v, out, entries, touched_or_codes, table);
    }
    // Average over the hash functions (a division, rounded like the reference's `out / m`;
    // masked queries stay exactly 0).
    const int64_t n = d.Sq * Dv;
    for (int64_t i = 0; i < n; ++i) out[i] = out[i] / m_f;
  }
}

}  // namespace scalar
}  // namespace cpu
}  // namespace yoso
