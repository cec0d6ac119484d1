// yoso_cpu_avx2.cc -- the x86-64 AVX2+FMA kernels of FastHash and LSHCumulation (float32).
//
// Compiled for the baseline ISA; every kernel function carries __attribute__((target("avx2,fma")))
// and only runs when the dispatch of yoso_cpu.cc selected it (simd::active_isa() == kAvx2).
//  * FastHash, D = 8..64: blocks of 8 consecutive tokens of one (b, h) are transposed so that one
//    ymm register holds one element of the 8 tokens; every butterfly of the three Walsh-Hadamard
//    transforms is then a plain vector add/sub (two passes over an L1 buffer per transform: strides
//    D/2..8, then 4, 2, 1), and the codes of the 8 tokens are built with compares in the last pass.
//    Leftover rows (fewer than 8 up to a head boundary) keep one token in D/8 registers (strides
//    4/2/1 by permutes). D >= 128 runs the stages through an aligned scratch vector; D < 8 uses the
//    scalar kernel.
//  * LSHCumulation processes a (b, h) slice one column chunk (16 value columns) and a block of hash
//    functions at a time, so that the bucket tables of the block, the value chunk and the output
//    chunk stay in L2: keys add their value chunk into the table rows of their codes, queries sum
//    the rows of their codes in registers.
// Both add in the same order as the scalar kernels (yoso_cpu_scalar.cc), so the two paths give
// identical results; see yoso_cpu_kernels.h for why FastHash stays bit-exact.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "yoso_core.h"
#include "yoso_cpu_kernels.h"

#if YOSO_X86_SIMD
#include <immintrin.h>
#define YOSO_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace yoso {
namespace cpu {

namespace simd {

#if YOSO_X86_SIMD
namespace {

// Lane signs of the in-register butterflies: lane i of stride s is an upper element (+1: gets
// a[i] + a[i+s]) when (i & s) == 0, a lower one (-1: gets a[i-s] - a[i]) otherwise.
struct WhtConsts {
  __m256 sgn4, sgn2, sgn1;
};

YOSO_TARGET_AVX2 inline WhtConsts wht_consts() {
  return {_mm256_setr_ps(1, 1, 1, 1, -1, -1, -1, -1), _mm256_setr_ps(1, 1, -1, -1, 1, 1, -1, -1),
          _mm256_setr_ps(1, -1, 1, -1, 1, -1, 1, -1)};
}

// Strides 4, 2, 1 of the WHT on 8 consecutive elements held in one register. With y the lanes
// of x swapped across the stride, fma(x, +1, y) = y + x = a[i] + a[i+s] (upper lane) and
// fma(x, -1, y) = y - x = a[i-s] - a[i] (lower lane): exact products, one rounding = IEEE add/sub.
YOSO_TARGET_AVX2 inline __m256 wht8_in_register(__m256 x, const WhtConsts& c) {
  x = _mm256_fmadd_ps(x, c.sgn4, _mm256_permute2f128_ps(x, x, 0x01));
  x = _mm256_fmadd_ps(x, c.sgn2, _mm256_permute_ps(x, 0x4E));  // lanes 2,3,0,1 per half
  x = _mm256_fmadd_ps(x, c.sgn1, _mm256_permute_ps(x, 0xB1));  // lanes 1,0,3,2 per half
  return x;
}

// Full WHT of 8*NR consecutive elements in r[0..NR): strides 4*NR .. 8 between registers, then
// 4, 2, 1 inside each register (the per-element stage order of the contract).
template <int NR>
YOSO_TARGET_AVX2 inline void wht_registers(__m256* r, const WhtConsts& c) {
#pragma GCC unroll 8
  for (int rs = NR / 2; rs >= 1; rs >>= 1) {
#pragma GCC unroll 16
    for (int i = 0; i < NR; ++i) {
      if ((i & rs) == 0) {
        const __m256 a = r[i], b = r[i + rs];
        r[i] = _mm256_add_ps(a, b);
        r[i + rs] = _mm256_sub_ps(a, b);
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < NR; ++i) r[i] = wht8_in_register(r[i], c);
}

// Iterates the (b, h, s) of consecutive flattened rows without divisions per row.
struct RowCursor {
  int64_t b, h, s;
  RowCursor(const FastHashDims& d, int64_t row)
      : b(row / (d.H * d.S)), h((row / d.S) % d.H), s(row % d.S) {}
  void next(const FastHashDims& d) {
    if (++s == d.S) {
      s = 0;
      if (++h == d.H) {
        h = 0;
        ++b;
      }
    }
  }
};

// Writes the m codes of one token row.
inline void zero_codes(int32_t* out, int64_t m) {
  std::memset(out, 0, static_cast<size_t>(m) * sizeof(int32_t));
}

// One token, D = 8*NR <= 64, in NR registers for all parts (the tail rows of the block kernel).
template <int NR>
YOSO_TARGET_AVX2 void hash_row_regs(const FastHashDims& d, const float* xr, const float* sh,
                                    const WhtConsts& c, int32_t* out) {
  constexpr int64_t D = 8 * NR;
  const __m256 zero = _mm256_setzero_ps();
  const int64_t P = d.P, m = d.m, per_part = d.per_part;
  const int tau = d.tau;
  const uint64_t code_mask = (uint64_t{1} << tau) - 1;
  __m256 xv[NR];
#pragma GCC unroll 16
  for (int i = 0; i < NR; ++i) xv[i] = _mm256_loadu_ps(xr + 8 * i);
  int64_t f = 0;
  for (int64_t p = 0; p < P; ++p) {
    const float* s0 = sh + p * D;
    const float* s1 = sh + (P + p) * D;
    const float* s2 = sh + (2 * P + p) * D;
    __m256 t[NR];
#pragma GCC unroll 16
    for (int i = 0; i < NR; ++i) t[i] = _mm256_mul_ps(xv[i], _mm256_loadu_ps(s0 + 8 * i));
    wht_registers<NR>(t, c);
#pragma GCC unroll 16
    for (int i = 0; i < NR; ++i) t[i] = _mm256_mul_ps(t[i], _mm256_loadu_ps(s1 + 8 * i));
    wht_registers<NR>(t, c);
#pragma GCC unroll 16
    for (int i = 0; i < NR; ++i) t[i] = _mm256_mul_ps(t[i], _mm256_loadu_ps(s2 + 8 * i));
    wht_registers<NR>(t, c);
    // Bit e of `bits` = [t[e] > 0] (ordered compare: false for +-0 and NaN).
    uint64_t bits = 0;
#pragma GCC unroll 16
    for (int i = 0; i < NR; ++i) {
      const int mm = _mm256_movemask_ps(_mm256_cmp_ps(t[i], zero, _CMP_GT_OQ));
      bits |= static_cast<uint64_t>(static_cast<unsigned>(mm)) << (8 * i);
    }
    for (int64_t j = 0; j < per_part && f < m; ++j, ++f)
      out[f] = static_cast<int32_t>((bits >> (j * tau)) & code_mask);
  }
}

// ---- 8 tokens at once, transposed ------------------------------------------------------------
// Vector e of X / U holds element e of 8 tokens, so every butterfly of every stage is one vector
// add or subtract (no permutes), and a sign is one broadcast multiply.

// In-register transpose of an 8x8 float block: r[k] lane i <- r[i] lane k.
YOSO_TARGET_AVX2 inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

YOSO_TARGET_AVX2 inline void butterfly(__m256& a, __m256& b) {
  const __m256 u = a, v = b;
  a = _mm256_add_ps(u, v);
  b = _mm256_sub_ps(u, v);
}

// dst[e] <- src[e] * sign[e], then the WHT stages of strides D/2 .. 8 (D = 8*NR), in order.
template <int NR>
YOSO_TARGET_AVX2 inline void wht_pass_high(const __m256* src, __m256* dst, const float* sign) {
  for (int e0 = 0; e0 < 8; ++e0) {
    __m256 r[NR];
#pragma GCC unroll 8
    for (int k = 0; k < NR; ++k)
      r[k] = _mm256_mul_ps(src[e0 + 8 * k], _mm256_broadcast_ss(sign + e0 + 8 * k));
#pragma GCC unroll 4
    for (int rs = NR / 2; rs >= 1; rs >>= 1) {
#pragma GCC unroll 8
      for (int k = 0; k < NR; ++k)
        if ((k & rs) == 0) butterfly(r[k], r[k + rs]);
    }
#pragma GCC unroll 8
    for (int k = 0; k < NR; ++k) dst[e0 + 8 * k] = r[k];
  }
}

// The WHT stages of strides 4, 2, 1, in order, on every group of 8 consecutive elements.
template <int NR>
YOSO_TARGET_AVX2 inline void wht_pass_low(__m256* u) {
  for (int g = 0; g < NR; ++g) {
    __m256 r[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) r[k] = u[8 * g + k];
#pragma GCC unroll 3
    for (int h = 4; h >= 1; h >>= 1) {
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k)
        if ((k & h) == 0) butterfly(r[k], r[k + h]);
    }
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) u[8 * g + k] = r[k];
  }
}

// Collects the code vectors of 8 tokens (lane t = token t) in function order and writes them to
// the 8 token rows, 8 functions at a time through an 8x8 transpose (one 32-byte store per row).
struct CodeSink8 {
  __m256 buf[8];
  int n = 0;
  int64_t f0 = 0;  // function of buf[0]
  int32_t* out8;
  int64_t m;

  YOSO_TARGET_AVX2 void push(__m256i v) {
    buf[n++] = _mm256_castsi256_ps(v);
    if (n == 8) {
      transpose8(buf);
      for (int t = 0; t < 8; ++t)
        _mm256_storeu_ps(reinterpret_cast<float*>(out8 + t * m + f0), buf[t]);
      f0 += 8;
      n = 0;
    }
  }
  YOSO_TARGET_AVX2 void finish() {
    alignas(32) int32_t lanes[8];
    for (int q = 0; q < n; ++q) {
      _mm256_store_ps(reinterpret_cast<float*>(lanes), buf[q]);
      for (int t = 0; t < 8; ++t) out8[t * m + f0 + q] = lanes[t];
    }
  }
};

// The last pass (strides 4, 2, 1) of the third WHT fused with the code extraction: element e < n_el
// adds [u[e] > 0] << (e mod tau) to the code vector of function e / tau.
template <int NR>
YOSO_TARGET_AVX2 inline void wht_pass_low_codes(const __m256* u, int tau, int64_t n_el,
                                                const __m256i* bitv, CodeSink8& sink) {
  const __m256 zero = _mm256_setzero_ps();
  __m256i acc = _mm256_setzero_si256();
  int i = 0;
  for (int g = 0; g < NR && 8 * g < n_el; ++g) {
    __m256 r[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) r[k] = u[8 * g + k];
#pragma GCC unroll 3
    for (int h = 4; h >= 1; h >>= 1) {
#pragma GCC unroll 8
      for (int k = 0; k < 8; ++k)
        if ((k & h) == 0) butterfly(r[k], r[k + h]);
    }
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {
      if (8 * g + k >= n_el) break;
      // Ordered "0 < u": false for +-0 and NaN.
      const __m256i gt = _mm256_castps_si256(_mm256_cmp_ps(zero, r[k], _CMP_LT_OQ));
      acc = _mm256_or_si256(acc, _mm256_and_si256(gt, bitv[i]));
      if (++i == tau) {
        sink.push(acc);
        acc = _mm256_setzero_si256();
        i = 0;
      }
    }
  }
}

// FastHash of 8 consecutive token rows of one (b, h): x8 / out8 point at the first row.
template <int NR>
YOSO_TARGET_AVX2 void hash_block8(const FastHashDims& d, const float* x8, const int32_t* keep8,
                                  const float* sh, const __m256i* bitv, int32_t* out8) {
  constexpr int D = 8 * NR;
  const int64_t P = d.P, m = d.m, per_part = d.per_part;
  const int tau = d.tau;
  __m256 X[D], U[D];
  for (int c = 0; c < NR; ++c) {
    __m256 r[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(x8 + i * D + 8 * c);
    transpose8(r);
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) X[8 * c + k] = r[k];
  }
  CodeSink8 sink;
  sink.out8 = out8;
  sink.m = m;
  for (int64_t p = 0; p < P; ++p) {
    wht_pass_high<NR>(X, U, sh + p * D);
    wht_pass_low<NR>(U);
    wht_pass_high<NR>(U, U, sh + (P + p) * D);
    wht_pass_low<NR>(U);
    wht_pass_high<NR>(U, U, sh + (2 * P + p) * D);
    const int64_t codes_here = std::min(per_part, m - p * per_part);
    wht_pass_low_codes<NR>(U, tau, codes_here * tau, bitv, sink);
  }
  sink.finish();
  for (int t = 0; t < 8; ++t)
    if (keep8[t] == 0) zero_codes(out8 + t * m, m);
}

// FastHash for D = 8*NR <= 64 over rows [row_begin, row_end): blocks of 8 tokens of the same
// (b, h) in the transposed layout, the remaining rows one at a time in registers.
template <int NR>
YOSO_TARGET_AVX2 void fast_hash_rows_regs(const FastHashDims& d, const float* x,
                                          const int32_t* mask, const float* signs,
                                          int32_t* codes, int64_t row_begin, int64_t row_end) {
  constexpr int64_t D = 8 * NR;
  const WhtConsts c = wht_consts();
  const int64_t m = d.m;
  __m256i bitv[kMaxHashCodeLen];
  for (int i = 0; i < d.tau; ++i) bitv[i] = _mm256_set1_epi32(1 << i);
  RowCursor cur(d, row_begin);
  int64_t row = row_begin;
  while (row < row_end) {
    const float* sh = signs + cur.h * 3 * d.P * D;
    const int32_t* keep = mask + cur.b * d.S + cur.s;
    if (row + 8 <= row_end && cur.s + 8 <= d.S) {
      hash_block8<NR>(d, x + row * D, keep, sh, bitv, codes + row * m);
      row += 8;
      for (int i = 0; i < 8; ++i) cur.next(d);
      continue;
    }
    if (keep[0] == 0) {
      zero_codes(codes + row * m, m);
    } else {
      hash_row_regs<NR>(d, x + row * D, sh, c, codes + row * m);
    }
    ++row;
    cur.next(d);
  }
}

// t[0..D) <- WHT(t) for D a multiple of 64: strides >= 64 as passes over memory, then every block
// of 64 elements in registers (strides 32 .. 1).
YOSO_TARGET_AVX2 void wht_memory(float* t, int64_t D, const WhtConsts& c) {
  for (int64_t s = D / 2; s >= 64; s /= 2) {
    for (int64_t base = 0; base < D; base += 2 * s) {
      for (int64_t i = base; i < base + s; i += 8) {
        const __m256 a = _mm256_load_ps(t + i), b = _mm256_load_ps(t + i + s);
        _mm256_store_ps(t + i, _mm256_add_ps(a, b));
        _mm256_store_ps(t + i + s, _mm256_sub_ps(a, b));
      }
    }
  }
  for (int64_t blk = 0; blk < D; blk += 64) {
    __m256 r[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) r[i] = _mm256_load_ps(t + blk + 8 * i);
    wht_registers<8>(r, c);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) _mm256_store_ps(t + blk + 8 * i, r[i]);
  }
}

// t[i] <- src[i] * sign[i] (exact: sign is +-1), i < D (a multiple of 8).
YOSO_TARGET_AVX2 inline void mul_signs(float* t, const float* src, const float* sign, int64_t D) {
  for (int64_t i = 0; i < D; i += 8)
    _mm256_store_ps(t + i, _mm256_mul_ps(_mm256_loadu_ps(src + i), _mm256_loadu_ps(sign + i)));
}

// FastHash for D >= 128 (a multiple of 64, at most kMaxHashDim) through an aligned scratch.
YOSO_TARGET_AVX2 void fast_hash_rows_memory(const FastHashDims& d, const float* x,
                                            const int32_t* mask, const float* signs,
                                            int32_t* codes, int64_t row_begin, int64_t row_end) {
  alignas(64) float t[kMaxHashDim];
  uint64_t words[kMaxHashDim / 64 + 1];
  const WhtConsts c = wht_consts();
  const __m256 zero = _mm256_setzero_ps();
  const int64_t D = d.D, P = d.P, m = d.m, per_part = d.per_part;
  const int tau = d.tau;
  const uint64_t code_mask = (uint64_t{1} << tau) - 1;
  RowCursor cur(d, row_begin);
  for (int64_t row = row_begin; row < row_end; ++row, cur.next(d)) {
    int32_t* out = codes + row * m;
    if (mask[cur.b * d.S + cur.s] == 0) {
      std::memset(out, 0, static_cast<size_t>(m) * sizeof(int32_t));
      continue;
    }
    const float* xr = x + row * D;
    const float* sh = signs + cur.h * 3 * P * D;
    int64_t f = 0;
    for (int64_t p = 0; p < P; ++p) {
      mul_signs(t, xr, sh + p * D, D);
      wht_memory(t, D, c);
      mul_signs(t, t, sh + (P + p) * D, D);
      wht_memory(t, D, c);
      mul_signs(t, t, sh + (2 * P + p) * D, D);
      wht_memory(t, D, c);
      for (int64_t w = 0; w < D / 64; ++w) {
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) {
          const int mm = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_load_ps(t + 64 * w + 8 * i), zero,
                                                          _CMP_GT_OQ));
          bits |= static_cast<uint64_t>(static_cast<unsigned>(mm)) << (8 * i);
        }
        words[w] = bits;
      }
      words[D / 64] = 0;
      for (int64_t j = 0; j < per_part && f < m; ++j, ++f) {
        const int64_t start = j * tau;
        const int64_t w = start >> 6, off = start & 63;
        uint64_t v = words[w] >> off;
        if (off + tau > 64) v |= words[w + 1] << (64 - off);  // off > 0 here
        out[f] = static_cast<int32_t>(v & code_mask);
      }
    }
  }
}

// ---- LSHCumulation ---------------------------------------------------------------------------
//
// One (b, h) slice is processed one column chunk of W = 8*NV value columns at a time (NV = 2 for
// Dv > 8), and within a chunk one block of fb hash functions at a time:
//   vc[i]  <- value[keys[i], chunk]              packed once per chunk (unmasked keys only)
//   keys:    table_j[kc[keys[i], f0+j]] += vc[i]  i in key order, j < fb
//   queries: oc[iq] (+)= table_j[qc[queries[iq], f0+j]] for j in order; / m after the last block
//   out[q, chunk] <- oc[iq] (0 for masked queries)
// The fb bucket tables (<= 256 KiB), vc and oc are contiguous and L2-resident; the codes are
// first converted, once per slice, into block-major table offsets so that every pass streams
// them sequentially. The remaining cost is the random row traffic between L1 and L2.

// Tunables (chosen by measurement on Zen 4; see scripts/bench/bench_ops.py).
constexpr int64_t kLshTableFloats = int64_t{1} << 16;  // tables of one block: 256 KiB
constexpr int64_t kLshMaxBlock = 16;                   // at most 16 hash functions per block

inline int lsh_chunk_vectors(const LshDims& d) { return d.Dv > 8 ? 2 : 1; }

inline int64_t lsh_block_functions(const LshDims& d) {
  const int64_t table = (int64_t{1} << d.tau) * 8 * lsh_chunk_vectors(d);
  return std::max<int64_t>(1, std::min({d.m, kLshMaxBlock, kLshTableFloats / table}));
}

inline int64_t round_up16(int64_t n) { return (n + 15) / 16 * 16; }

struct LshSliceArgs {
  const LshDims* d;
  const int32_t* qm;
  // Table offsets (j * table_floats + code * W) of the unmasked keys / queries, block-major:
  // block f0 holds [n][fb] entries starting at f0 * n.
  const int32_t *kofs, *qofs;
  const float* value;
  float* out;
  float *tables, *vc, *oc;  // scratch (tables all zero between blocks)
  const int64_t *keys, *queries;  // unmasked keys / queries, increasing
  int64_t n_keys, n_queries;
  int64_t fb;  // hash functions per block
};

// ofs[f0 * n + i * nb + j] = j * table_floats + codes[list[i], f0 + j] * W for every block f0 of
// fb hash functions (nb = min(fb, m - f0)): each code row is read once, sequentially.
YOSO_TARGET_AVX2 void build_offsets(const int32_t* codes, const int64_t* list, int64_t n,
                                    int64_t m, int64_t fb, int64_t table_floats, int64_t W,
                                    int32_t* ofs) {
  int shift = 0;
  while ((int64_t{1} << shift) < W) ++shift;  // W is 8 * NV, a power of two
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i tf = _mm256_set1_epi32(static_cast<int32_t>(table_floats));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t* src = codes + list[i] * m;
    for (int64_t f0 = 0; f0 < m; f0 += fb) {
      const int64_t nb = std::min(fb, m - f0);
      int32_t* dst = ofs + f0 * n + i * nb;
      int64_t j = 0;
      for (; j + 8 <= nb; j += 8) {
        const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + f0 + j));
        const __m256i jj = _mm256_add_epi32(lane, _mm256_set1_epi32(static_cast<int32_t>(j)));
        const __m256i o = _mm256_add_epi32(_mm256_slli_epi32(c, shift), _mm256_mullo_epi32(jj, tf));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), o);
      }
      for (; j < nb; ++j)
        dst[j] = static_cast<int32_t>(j * table_floats +
                                      (static_cast<int64_t>(src[f0 + j]) << shift));
    }
  }
}

template <int NV>
YOSO_TARGET_AVX2 void lsh_chunk(const LshSliceArgs& a, int64_t c0, int cols) {
  const LshDims& d = *a.d;
  constexpr int64_t W = 8 * NV;  // table row width (floats)
  const int64_t m = d.m, Dv = d.Dv, buckets = int64_t{1} << d.tau;
  const int64_t table_floats = buckets * W;
  const __m256 zero = _mm256_setzero_ps();
  const __m256 m_f = _mm256_set1_ps(static_cast<float>(m));
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i colmask[NV];  // real columns of each vector of the chunk
  for (int u = 0; u < NV; ++u)
    colmask[u] = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols - 8 * u), lanes);
  const bool full = cols == W;
  float* const tables = a.tables;

  // Pack the value chunk of the unmasked keys (missing columns read as 0, never out of bounds).
  for (int64_t i = 0; i < a.n_keys; ++i) {
    const float* src = a.value + a.keys[i] * Dv + c0;
    float* dst = a.vc + i * W;
    if (full) {
#pragma GCC unroll 8
      for (int u = 0; u < NV; ++u) _mm256_store_ps(dst + 8 * u, _mm256_loadu_ps(src + 8 * u));
    } else {
      for (int u = 0; u < NV; ++u)
        _mm256_store_ps(dst + 8 * u, _mm256_maskload_ps(src + 8 * u, colmask[u]));
    }
  }

  for (int64_t f0 = 0; f0 < m; f0 += a.fb) {
    const int64_t fb = std::min(a.fb, m - f0);
    const bool first = f0 == 0, last = f0 + fb == m;
    // Keys, in increasing order: table_j[code] += value chunk.
    for (int64_t i = 0; i < a.n_keys; ++i) {
      __m256 v[NV];
#pragma GCC unroll 8
      for (int u = 0; u < NV; ++u) v[u] = _mm256_load_ps(a.vc + i * W + 8 * u);
      const int32_t* kcr = a.kofs + f0 * a.n_keys + i * fb;
      for (int64_t j = 0; j < fb; ++j) {
        float* row = tables + kcr[j];
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u)
          _mm256_store_ps(row + 8 * u, _mm256_add_ps(_mm256_load_ps(row + 8 * u), v[u]));
      }
    }
    // Unmasked queries: accumulate the rows of their codes, hash functions in order.
    for (int64_t iq = 0; iq < a.n_queries; ++iq) {
      float* o = a.oc + iq * W;
      __m256 acc[NV];
#pragma GCC unroll 8
      for (int u = 0; u < NV; ++u) acc[u] = first ? zero : _mm256_load_ps(o + 8 * u);
      const int32_t* qcr = a.qofs + f0 * a.n_queries + iq * fb;
      for (int64_t j = 0; j < fb; ++j) {
        const float* row = tables + qcr[j];
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u) acc[u] = _mm256_add_ps(acc[u], _mm256_load_ps(row + 8 * u));
      }
      if (last) {
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u) acc[u] = _mm256_div_ps(acc[u], m_f);
      }
#pragma GCC unroll 8
      for (int u = 0; u < NV; ++u) _mm256_store_ps(o + 8 * u, acc[u]);
    }
    // Leave the tables all zero: the touched rows when keys are few, else everything.
    if (a.n_keys < buckets) {
      for (int64_t i = 0; i < a.n_keys; ++i) {
        const int32_t* kcr = a.kofs + f0 * a.n_keys + i * fb;
        for (int64_t j = 0; j < fb; ++j) {
          float* row = tables + kcr[j];
#pragma GCC unroll 8
          for (int u = 0; u < NV; ++u) _mm256_store_ps(row + 8 * u, zero);
        }
      }
    } else {
      std::memset(tables, 0, static_cast<size_t>(fb * table_floats) * sizeof(float));
    }
  }

  // Write the chunk of every query row (masked queries: exactly 0).
  int64_t iq = 0;
  for (int64_t q = 0; q < d.Sq; ++q) {
    float* dst = a.out + q * Dv + c0;
    __m256 r[NV];
    if (a.qm[q] != 0) {
#pragma GCC unroll 8
      for (int u = 0; u < NV; ++u) r[u] = _mm256_load_ps(a.oc + iq * W + 8 * u);
      ++iq;
    } else {
#pragma GCC unroll 8
      for (int u = 0; u < NV; ++u) r[u] = zero;
    }
    if (full) {
#pragma GCC unroll 8
      for (int u = 0; u < NV; ++u) _mm256_storeu_ps(dst + 8 * u, r[u]);
    } else {
      for (int u = 0; u < NV; ++u) _mm256_maskstore_ps(dst + 8 * u, colmask[u], r[u]);
    }
  }
}

}  // namespace

void fast_hash_f32_avx2(const FastHashDims& d, const float* x, const int32_t* mask,
                        const float* signs, int32_t* codes, int64_t row_begin, int64_t row_end) {
  switch (d.D) {
    case 8: return fast_hash_rows_regs<1>(d, x, mask, signs, codes, row_begin, row_end);
    case 16: return fast_hash_rows_regs<2>(d, x, mask, signs, codes, row_begin, row_end);
    case 32: return fast_hash_rows_regs<4>(d, x, mask, signs, codes, row_begin, row_end);
    case 64: return fast_hash_rows_regs<8>(d, x, mask, signs, codes, row_begin, row_end);
    default: return fast_hash_rows_memory(d, x, mask, signs, codes, row_begin, row_end);
  }
}



int64_t lsh_avx2_table_floats(const LshDims& d) {
  return lsh_block_functions(d) * (int64_t{1} << d.tau) * 8 * lsh_chunk_vectors(d);
}

int64_t lsh_avx2_scratch_floats(const LshDims& d) {
  const int64_t W = 8 * lsh_chunk_vectors(d);
  return round_up16(lsh_block_functions(d) * (int64_t{1} << d.tau) * W) + round_up16(d.Sk * W) +
         round_up16(d.Sq * W);
}

bool lsh_avx2_applicable(const LshDims& d) {
  // One table of a chunk must stay small (offsets are int32), and so must the per-task scratch
  // (tables, value/output chunks and the code offsets of one slice, about the size of the slice's
  // inputs); beyond 1 GiB the scalar kernel, whose scratch is one 2^tau x Dv table, runs instead.
  const double tokens = static_cast<double>(d.Sk + d.Sq);
  const double scratch_bytes = 4.0 * static_cast<double>(lsh_avx2_scratch_floats(d)) +
                               tokens * (8.0 + 4.0 * static_cast<double>(d.m));
  return (int64_t{1} << d.tau) * 8 * lsh_chunk_vectors(d) <= kDenseTableMaxFloats &&
         scratch_bytes <= static_cast<double>(int64_t{1} << 30);
}

void lsh_slice_dense_f32_avx2(const LshDims& d, const int32_t* qc, const int32_t* kc,
                              const int32_t* qm, const int32_t* km, const float* value,
                              float* out, float* scratch, int64_t* index_scratch,
                              int32_t* code_scratch) {
  const int nv = lsh_chunk_vectors(d);
  const int64_t W = 8 * nv;
  const int64_t fb = lsh_block_functions(d);
  LshSliceArgs a{};
  a.d = &d;
  a.qm = qm;
  a.value = value;
  a.out = out;
  a.tables = scratch;
  a.vc = a.tables + round_up16(fb * (int64_t{1} << d.tau) * W);
  a.oc = a.vc + round_up16(d.Sk * W);
  int64_t* keys = index_scratch;
  int64_t* queries = index_scratch + d.Sk;
  for (int64_t k = 0; k < d.Sk; ++k)
    if (km[k]) keys[a.n_keys++] = k;
  for (int64_t q = 0; q < d.Sq; ++q)
    if (qm[q]) queries[a.n_queries++] = q;
  a.keys = keys;
  a.queries = queries;
  a.fb = fb;
  // Block-major table offsets of the codes, so that every pass reads them sequentially.
  const int64_t table_floats = (int64_t{1} << d.tau) * W;
  int32_t* kofs = code_scratch;
  int32_t* qofs = code_scratch + a.n_keys * d.m;
  build_offsets(kc, keys, a.n_keys, d.m, fb, table_floats, W, kofs);
  build_offsets(qc, queries, a.n_queries, d.m, fb, table_floats, W, qofs);
  a.kofs = kofs;
  a.qofs = qofs;
  for (int64_t c0 = 0; c0 < d.Dv; c0 += W) {
    const int cols = static_cast<int>(std::min<int64_t>(W, d.Dv - c0));
    if (nv == 2) {
      lsh_chunk<2>(a, c0, cols);
    } else {
      lsh_chunk<1>(a, c0, cols);
    }
  }
}

#else  // !YOSO_X86_SIMD: never called (active_isa() is kScalar)

void fast_hash_f32_avx2(const FastHashDims&, const float*, const int32_t*, const float*, int32_t*,
                        int64_t, int64_t) {}
bool lsh_avx2_applicable(const LshDims&) { return false; }
int64_t lsh_avx2_table_floats(const LshDims&) { return 0; }
int64_t lsh_avx2_scratch_floats(const LshDims&) { return 0; }
void lsh_slice_dense_f32_avx2(const LshDims&, const int32_t*, const int32_t*, const int32_t*,
                              const int32_t*, const float*, float*, float*, int64_t*, int32_t*) {}

#endif  // YOSO_X86_SIMD

}  // namespace simd

}  // namespace cpu
}  // namespace yoso
