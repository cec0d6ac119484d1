// yoso_cpu_avx512.cc -- the x86-64 AVX-512 (F + BW) kernels of FastHash and LSHCumulation (float32).
//
// Compiled for the baseline ISA like yoso_cpu_avx2.cc: every function that touches a zmm or mask
// register carries __attribute__((target("avx512f,avx512bw,avx2,fma"))) and lives in the namespace
// yoso::cpu::simd::avx512 (so its symbol says so), and runs only when the dispatch of yoso_cpu.cc
// selected it (simd::active_isa() == kAvx512, i.e. the CPU and OS support AVX-512F and AVX-512BW).
// Nothing here runs at load time (no static initialisers), so the same binary runs on CPUs without
// AVX-512.
//  * FastHash, D = 1..64: blocks of up to 16 consecutive tokens of one (b, h) are transposed so that
//    one zmm register holds one element of the 16 tokens; every butterfly of the three Walsh-Hadamard
//    transforms is then a plain vector add/sub (the AVX2 block kernel's two passes per transform:
//    strides D/2..8, then 4, 2, 1), and the codes of the tokens are built with compares into mask
//    registers in the last pass. A block shorter than 16 tokens (end of the range or of a head) is
//    loaded and stored with masks, so there is no separate one-token path and no scalar fallback.
//  * FastHash, D >= 128: one token at a time in an aligned scratch vector; strides >= 64 as passes
//    over memory, each block of 64 elements in 4 registers (strides 32, 16 between registers; 8, 4,
//    2, 1 inside a register: a lane permutation y of x, then x + y in the upper lanes and y - x in the
//    lower ones, by a masked subtract -- plain IEEE adds and subtracts, no FMA).
//  * LSHCumulation: the AVX2 kernel's algorithm with 16-float registers: a (b, h) slice one column
//    chunk of W = 16 value columns (one zmm, one cache line per table row) at a time, one block of hash functions at a time; the last
//    chunk's missing columns are masked loads / stores (no out-of-bounds access).
// Every element sees the same IEEE operations in the same order as in the scalar kernels
// (yoso_cpu_scalar.cc): FastHash codes are bit-identical (OPS.md §1 WHT: the contract's stage
// order, sign diagonals as exact multiplications by +-1, ordered "> 0" compares) and LSHCumulation
// adds keys in key order into a bucket and the hash functions in order into a query, then divides
// by m once, so its outputs are bit-identical to the scalar and AVX2 kernels too.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "yoso_core.h"
#include "yoso_cpu_kernels.h"

#if YOSO_X86_SIMD
// GCC 12's avx512fintrin.h passes _mm512_undefined_ps() (`__m512 __Y = __Y;`) as the unused source
// of many unmasked intrinsics (unpack, shuffle, permute, shifts), which -W(maybe-)uninitialized
// reports at every use once inlined (a known false positive, GCC PR 105593; -O0 and sanitizer builds
// say "is used uninitialized"). Nothing here reads an undefined value.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
// avx512f implies AVX2 and FMA on every CPU that has it; the dispatch checks all four.
#define YOSO_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx2,fma")))
#endif

namespace yoso {
namespace cpu {
namespace simd {

#if YOSO_X86_SIMD
namespace avx512 {
namespace {

// Iterates the (b, h, s) of consecutive flattened rows without divisions per row.
struct RowCursor {
  int64_t b, h, s;
  RowCursor(const FastHashDims& d, int64_t row)
      : b(row / (d.H * d.S)), h((row / d.S) % d.H), s(row % d.S) {}
  // Advances by n <= S - s rows (never past the end of the current head).
  void advance(const FastHashDims& d, int64_t n) {
    s += n;
    if (s == d.S) {
      s = 0;
      if (++h == d.H) {
        h = 0;
        ++b;
      }
    }
  }
};

inline void zero_codes(int32_t* out, int64_t m) {
  std::memset(out, 0, static_cast<size_t>(m) * sizeof(int32_t));
}

// In-register transpose of a 16x16 float block: r[k] lane i <- r[i] lane k.
YOSO_TARGET_AVX512 inline void transpose16(__m512* r) {
  __m512 t[16], u[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4q + c] lane L = rows 4q..4q+3 of column 4L + c.
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    u[4 * q + 0] = _mm512_shuffle_ps(t[4 * q + 0], t[4 * q + 2], 0x44);
    u[4 * q + 1] = _mm512_shuffle_ps(t[4 * q + 0], t[4 * q + 2], 0xEE);
    u[4 * q + 2] = _mm512_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0x44);
    u[4 * q + 3] = _mm512_shuffle_ps(t[4 * q + 1], t[4 * q + 3], 0xEE);
  }
  // t[c] / t[4 + c]: rows 0..7 of columns (c, 8 + c) / (4 + c, 12 + c); t[8 + ..]: rows 8..15.
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    t[c] = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
    t[4 + c] = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
    t[8 + c] = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    t[12 + c] = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xDD);
    r[12 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0xDD);
  }
}

YOSO_TARGET_AVX512 inline void butterfly(__m512& a, __m512& b) {
  const __m512 u = a, v = b;
  a = _mm512_add_ps(u, v);
  b = _mm512_sub_ps(u, v);
}

// ---- FastHash, D <= 64: up to 16 tokens at once, transposed -------------------------------------
// Vector e of X / U holds element e of the block's tokens. The elements are processed in groups of
// G = min(D, 8) consecutive ones: NR = D / G groups.

template <int D>
struct BlockShape {
  static constexpr int G = D < 8 ? D : 8;
  static constexpr int NR = D / G;
};

// dst[e] <- src[e] * sign[e] (exact: sign is +-1), then the WHT stages of strides D/2 .. G, in order.
template <int D>
YOSO_TARGET_AVX512 inline void wht_pass_high(const __m512* src, __m512* dst, const float* sign) {
  constexpr int G = BlockShape<D>::G, NR = BlockShape<D>::NR;
  for (int e0 = 0; e0 < G; ++e0) {
    __m512 r[NR];
#pragma GCC unroll 8
    for (int k = 0; k < NR; ++k) r[k] = _mm512_mul_ps(src[e0 + G * k], _mm512_set1_ps(sign[e0 + G * k]));
#pragma GCC unroll 4
    for (int rs = NR / 2; rs >= 1; rs >>= 1) {
#pragma GCC unroll 8
      for (int k = 0; k < NR; ++k)
        if ((k & rs) == 0) butterfly(r[k], r[k + rs]);
    }
#pragma GCC unroll 8
    for (int k = 0; k < NR; ++k) dst[e0 + G * k] = r[k];
  }
}

// The WHT stages of strides G/2 .. 1, in order, on every group of G consecutive elements.
template <int D>
YOSO_TARGET_AVX512 inline void wht_pass_low(__m512* u) {
  constexpr int G = BlockShape<D>::G, NR = BlockShape<D>::NR;
  for (int g = 0; g < NR; ++g) {
    __m512 r[G];
#pragma GCC unroll 8
    for (int k = 0; k < G; ++k) r[k] = u[G * g + k];
#pragma GCC unroll 3
    for (int h = G / 2; h >= 1; h >>= 1) {
#pragma GCC unroll 8
      for (int k = 0; k < G; ++k)
        if ((k & h) == 0) butterfly(r[k], r[k + h]);
    }
#pragma GCC unroll 8
    for (int k = 0; k < G; ++k) u[G * g + k] = r[k];
  }
}

// Collects the code vectors of the block's tokens (lane t = token t) in function order and writes
// them to the token rows, 16 functions at a time through a 16x16 transpose (one 64-byte store per
// row; masked for the last, partial group of functions). Rows t >= ntok are never written.
struct CodeSink16 {
  __m512 buf[16];
  int n = 0;
  int64_t f0 = 0;  // function of buf[0]
  int32_t* out;
  int64_t m;
  int ntok;

  YOSO_TARGET_AVX512 void push(__m512i v) {
    buf[n++] = _mm512_castsi512_ps(v);
    if (n == 16) {
      transpose16(buf);
      for (int t = 0; t < ntok; ++t) _mm512_storeu_ps(out + t * m + f0, buf[t]);
      f0 += 16;
      n = 0;
    }
  }
  YOSO_TARGET_AVX512 void finish() {
    if (n == 0) return;
    for (int q = n; q < 16; ++q) buf[q] = _mm512_setzero_ps();
    transpose16(buf);
    const __mmask16 cols = static_cast<__mmask16>((1u << n) - 1);
    for (int t = 0; t < ntok; ++t) _mm512_mask_storeu_ps(out + t * m + f0, cols, buf[t]);
    n = 0;
  }
};

// The last pass (strides G/2 .. 1) of the third WHT fused with the code extraction: element
// e < n_el sets bit (e mod tau) of the code vector of function e / tau where u[e] > 0.
template <int D>
YOSO_TARGET_AVX512 inline void wht_pass_low_codes(const __m512* u, int tau, int64_t n_el,
                                                  const __m512i* bitv, CodeSink16& sink) {
  constexpr int G = BlockShape<D>::G, NR = BlockShape<D>::NR;
  const __m512 zero = _mm512_setzero_ps();
  __m512i acc = _mm512_setzero_si512();
  int i = 0;
  for (int g = 0; g < NR && G * g < n_el; ++g) {
    __m512 r[G];
#pragma GCC unroll 8
    for (int k = 0; k < G; ++k) r[k] = u[G * g + k];
#pragma GCC unroll 3
    for (int h = G / 2; h >= 1; h >>= 1) {
#pragma GCC unroll 8
      for (int k = 0; k < G; ++k)
        if ((k & h) == 0) butterfly(r[k], r[k + h]);
    }
#pragma GCC unroll 8
    for (int k = 0; k < G; ++k) {
      if (G * g + k >= n_el) break;
      // Ordered "u > 0": false for +-0 and NaN.
      const __mmask16 gt = _mm512_cmp_ps_mask(r[k], zero, _CMP_GT_OQ);
      acc = _mm512_mask_or_epi32(acc, gt, acc, bitv[i]);
      if (++i == tau) {
        sink.push(acc);
        acc = _mm512_setzero_si512();
        i = 0;
      }
    }
  }
}

// FastHash of ntok (1..16) consecutive token rows of one (b, h): x16 / out16 point at the first row.
template <int D>
YOSO_TARGET_AVX512 void hash_block16(const FastHashDims& d, const float* x16, const int32_t* keep,
                                     const float* sh, const __m512i* bitv, int32_t* out16, int ntok) {
  constexpr int L = D < 16 ? D : 16;  // elements per 16-wide column chunk
  constexpr int C = D / L;            // column chunks
  const int64_t P = d.P, m = d.m, per_part = d.per_part;
  const int tau = d.tau;
  const __mmask16 lanes = static_cast<__mmask16>((1u << L) - 1);
  __m512 X[D], U[D];
  for (int c = 0; c < C; ++c) {
    __m512 r[16];
    for (int t = 0; t < 16; ++t)
      r[t] = t < ntok ? _mm512_maskz_loadu_ps(lanes, x16 + t * D + 16 * c) : _mm512_setzero_ps();
    transpose16(r);
#pragma GCC unroll 16
    for (int k = 0; k < L; ++k) X[16 * c + k] = r[k];
  }
  CodeSink16 sink;
  sink.out = out16;
  sink.m = m;
  sink.ntok = ntok;
  for (int64_t p = 0; p < P; ++p) {
    wht_pass_high<D>(X, U, sh + p * D);
    wht_pass_low<D>(U);
    wht_pass_high<D>(U, U, sh + (P + p) * D);
    wht_pass_low<D>(U);
    wht_pass_high<D>(U, U, sh + (2 * P + p) * D);
    const int64_t codes_here = std::min(per_part, m - p * per_part);
    wht_pass_low_codes<D>(U, tau, codes_here * tau, bitv, sink);
  }
  sink.finish();
  for (int t = 0; t < ntok; ++t)
    if (keep[t] == 0) zero_codes(out16 + t * m, m);
}

// FastHash for D <= 64 over rows [row_begin, row_end): blocks of up to 16 tokens of one (b, h).
template <int D>
YOSO_TARGET_AVX512 void fast_hash_rows_block(const FastHashDims& d, const float* x,
                                             const int32_t* mask, const float* signs,
                                             int32_t* codes, int64_t row_begin, int64_t row_end) {
  const int64_t m = d.m;
  __m512i bitv[kMaxHashCodeLen];
  for (int i = 0; i < d.tau; ++i) bitv[i] = _mm512_set1_epi32(1 << i);
  RowCursor cur(d, row_begin);
  int64_t row = row_begin;
  while (row < row_end) {
    const int64_t n = std::min<int64_t>({16, row_end - row, d.S - cur.s});
    hash_block16<D>(d, x + row * D, mask + cur.b * d.S + cur.s, signs + cur.h * 3 * d.P * D, bitv,
                    codes + row * m, static_cast<int>(n));
    row += n;
    cur.advance(d, n);
  }
}

// ---- FastHash, D >= 128: one token at a time ----------------------------------------------------

// Lanes that are the lower element of a butterfly of stride s inside a register: (i & s) != 0.
struct LowLanes {
  __mmask16 s8, s4, s2, s1;
};
constexpr LowLanes kLowLanes = {0xFF00, 0xF0F0, 0xCCCC, 0xAAAA};

// Strides 8, 4, 2, 1 of the WHT on 16 consecutive elements in one register: with y the lanes of x
// swapped across the stride, upper lanes get x + y = a[i] + a[i+s], lower lanes y - x =
// a[i-s] - a[i] (a masked subtract): one IEEE add or subtract per element and stage.
YOSO_TARGET_AVX512 inline __m512 wht16_in_register(__m512 x) {
  __m512 y = _mm512_shuffle_f32x4(x, x, 0x4E);  // 128-bit blocks 2,3,0,1
  x = _mm512_mask_sub_ps(_mm512_add_ps(x, y), kLowLanes.s8, y, x);
  y = _mm512_shuffle_f32x4(x, x, 0xB1);  // blocks 1,0,3,2
  x = _mm512_mask_sub_ps(_mm512_add_ps(x, y), kLowLanes.s4, y, x);
  y = _mm512_permute_ps(x, 0x4E);  // lanes 2,3,0,1 of each block
  x = _mm512_mask_sub_ps(_mm512_add_ps(x, y), kLowLanes.s2, y, x);
  y = _mm512_permute_ps(x, 0xB1);  // lanes 1,0,3,2 of each block
  x = _mm512_mask_sub_ps(_mm512_add_ps(x, y), kLowLanes.s1, y, x);
  return x;
}

// t[0..D) <- WHT(t) for D a multiple of 64 (64-byte aligned): strides >= 64 as passes over memory,
// then every block of 64 elements in 4 registers (strides 32, 16 between them, 8 .. 1 inside).
YOSO_TARGET_AVX512 void wht_memory(float* t, int64_t D) {
  for (int64_t s = D / 2; s >= 64; s /= 2) {
    for (int64_t base = 0; base < D; base += 2 * s) {
      for (int64_t i = base; i < base + s; i += 16) {
        const __m512 a = _mm512_load_ps(t + i), b = _mm512_load_ps(t + i + s);
        _mm512_store_ps(t + i, _mm512_add_ps(a, b));
        _mm512_store_ps(t + i + s, _mm512_sub_ps(a, b));
      }
    }
  }
  for (int64_t blk = 0; blk < D; blk += 64) {
    __m512 r[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) r[i] = _mm512_load_ps(t + blk + 16 * i);
    butterfly(r[0], r[2]);  // stride 32
    butterfly(r[1], r[3]);
    butterfly(r[0], r[1]);  // stride 16
    butterfly(r[2], r[3]);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) _mm512_store_ps(t + blk + 16 * i, wht16_in_register(r[i]));
  }
}

// t[i] <- src[i] * sign[i] (exact: sign is +-1), i < D (a multiple of 16).
YOSO_TARGET_AVX512 inline void mul_signs(float* t, const float* src, const float* sign, int64_t D) {
  for (int64_t i = 0; i < D; i += 16)
    _mm512_store_ps(t + i, _mm512_mul_ps(_mm512_loadu_ps(src + i), _mm512_loadu_ps(sign + i)));
}

// FastHash for D >= 128 (a multiple of 64, at most kMaxHashDim) through an aligned scratch.
YOSO_TARGET_AVX512 void fast_hash_rows_memory(const FastHashDims& d, const float* x,
                                              const int32_t* mask, const float* signs,
                                              int32_t* codes, int64_t row_begin, int64_t row_end) {
  alignas(64) float t[kMaxHashDim];
  uint64_t words[kMaxHashDim / 64 + 1];
  const __m512 zero = _mm512_setzero_ps();
  const int64_t D = d.D, P = d.P, m = d.m, per_part = d.per_part;
  const int tau = d.tau;
  const uint64_t code_mask = (uint64_t{1} << tau) - 1;
  RowCursor cur(d, row_begin);
  for (int64_t row = row_begin; row < row_end; ++row, cur.advance(d, 1)) {
    int32_t* out = codes + row * m;
    if (mask[cur.b * d.S + cur.s] == 0) {
      zero_codes(out, m);
      continue;
    }
    const float* xr = x + row * D;
    const float* sh = signs + cur.h * 3 * P * D;
    int64_t f = 0;
    for (int64_t p = 0; p < P; ++p) {
      mul_signs(t, xr, sh + p * D, D);
      wht_memory(t, D);
      mul_signs(t, t, sh + (P + p) * D, D);
      wht_memory(t, D);
      mul_signs(t, t, sh + (2 * P + p) * D, D);
      wht_memory(t, D);
      for (int64_t w = 0; w < D / 64; ++w) {
        uint64_t bits = 0;
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) {
          // Ordered "t > 0": false for +-0 and NaN.
          const __mmask16 gt = _mm512_cmp_ps_mask(_mm512_load_ps(t + 64 * w + 16 * i), zero, _CMP_GT_OQ);
          bits |= static_cast<uint64_t>(static_cast<unsigned>(gt)) << (16 * i);
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
// The AVX2 kernel's scheme (yoso_cpu_avx2.cc) with zmm registers: one (b, h) slice one column chunk
// of W = 16*NV value columns at a time, and within a chunk one block of fb hash functions at a time:
//   vc[i]  <- value[keys[i], chunk]              packed once per chunk (unmasked keys only)
//   keys:    table_j[kc[keys[i], f0+j]] += vc[i]  i in key order, j < fb
//   queries: oc[iq] (+)= table_j[qc[queries[iq], f0+j]] for j in order; / m after the last block
//   out[q, chunk] <- oc[iq] (0 for masked queries)

// Tunables (measured with scripts/bench/bench_kernels_isa.py on Zen 4).
constexpr int64_t kLshTableFloats = int64_t{1} << 16;  // tables of one block: 256 KiB
constexpr int64_t kLshMaxBlock = 16;                   // at most 16 hash functions per block

// zmm registers per table row. One (16 columns: a row is one 64-byte cache line, the AVX2 kernel's
// table geometry): at yoso-4096 sizes 2 or 4 (fewer, larger chunks) measured no faster on Zen 4, where
// the kernel is bound by the latency of the random table rows, not by arithmetic.
inline int lsh_chunk_vectors(const LshDims&) { return 1; }

inline int64_t lsh_row_floats(const LshDims& d) { return 16 * lsh_chunk_vectors(d); }

inline int64_t lsh_block_functions(const LshDims& d) {
  const int64_t table = (int64_t{1} << d.tau) * lsh_row_floats(d);
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
YOSO_TARGET_AVX512 void build_offsets(const int32_t* codes, const int64_t* list, int64_t n,
                                      int64_t m, int64_t fb, int64_t table_floats, int64_t W,
                                      int32_t* ofs) {
  int shift = 0;
  while ((int64_t{1} << shift) < W) ++shift;  // W is 16 * NV, a power of two
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i tf = _mm512_set1_epi32(static_cast<int32_t>(table_floats));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t* src = codes + list[i] * m;
    for (int64_t f0 = 0; f0 < m; f0 += fb) {
      const int64_t nb = std::min(fb, m - f0);
      int32_t* dst = ofs + f0 * n + i * nb;
      for (int64_t j = 0; j < nb; j += 16) {
        const __mmask16 k = static_cast<__mmask16>(nb - j >= 16 ? 0xFFFF : (1u << (nb - j)) - 1);
        const __m512i c = _mm512_maskz_loadu_epi32(k, src + f0 + j);
        const __m512i jj = _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int32_t>(j)));
        const __m512i o = _mm512_add_epi32(_mm512_slli_epi32(c, static_cast<unsigned>(shift)),
                                           _mm512_mullo_epi32(jj, tf));
        _mm512_mask_storeu_epi32(dst + j, k, o);
      }
    }
  }
}

template <int NV>
YOSO_TARGET_AVX512 void lsh_chunk(const LshSliceArgs& a, int64_t c0, int cols) {
  const LshDims& d = *a.d;
  constexpr int64_t W = 16 * NV;  // table row width (floats)
  const int64_t m = d.m, Dv = d.Dv, buckets = int64_t{1} << d.tau;
  const int64_t table_floats = buckets * W;
  const __m512 zero = _mm512_setzero_ps();
  const __m512 m_f = _mm512_set1_ps(static_cast<float>(m));
  __mmask16 colmask[NV];  // real columns of each vector of the chunk
  for (int u = 0; u < NV; ++u) {
    const int n = std::max(0, std::min(16, cols - 16 * u));
    colmask[u] = static_cast<__mmask16>(n == 16 ? 0xFFFFu : (1u << n) - 1);
  }
  const bool full = cols == W;
  float* const tables = a.tables;

  // Pack the value chunk of the unmasked keys (missing columns read as 0, never out of bounds).
  for (int64_t i = 0; i < a.n_keys; ++i) {
    const float* src = a.value + a.keys[i] * Dv + c0;
    float* dst = a.vc + i * W;
    if (full) {
#pragma GCC unroll 4
      for (int u = 0; u < NV; ++u) _mm512_store_ps(dst + 16 * u, _mm512_loadu_ps(src + 16 * u));
    } else {
      for (int u = 0; u < NV; ++u)
        _mm512_store_ps(dst + 16 * u, _mm512_maskz_loadu_ps(colmask[u], src + 16 * u));
    }
  }

  for (int64_t f0 = 0; f0 < m; f0 += a.fb) {
    const int64_t fb = std::min(a.fb, m - f0);
    const bool first = f0 == 0, last = f0 + fb == m;
    // Keys, in increasing order: table_j[code] += value chunk.
    for (int64_t i = 0; i < a.n_keys; ++i) {
      __m512 v[NV];
#pragma GCC unroll 4
      for (int u = 0; u < NV; ++u) v[u] = _mm512_load_ps(a.vc + i * W + 16 * u);
      const int32_t* kcr = a.kofs + f0 * a.n_keys + i * fb;
      for (int64_t j = 0; j < fb; ++j) {
        float* row = tables + kcr[j];
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u)
          _mm512_store_ps(row + 16 * u, _mm512_add_ps(_mm512_load_ps(row + 16 * u), v[u]));
      }
    }
    // Unmasked queries: accumulate the rows of their codes, hash functions in order.
    for (int64_t iq = 0; iq < a.n_queries; ++iq) {
      float* o = a.oc + iq * W;
      __m512 acc[NV];
#pragma GCC unroll 4
      for (int u = 0; u < NV; ++u) acc[u] = first ? zero : _mm512_load_ps(o + 16 * u);
      const int32_t* qcr = a.qofs + f0 * a.n_queries + iq * fb;
      for (int64_t j = 0; j < fb; ++j) {
        const float* row = tables + qcr[j];
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u) acc[u] = _mm512_add_ps(acc[u], _mm512_load_ps(row + 16 * u));
      }
      if (last) {
#pragma GCC unroll 4
        for (int u = 0; u < NV; ++u) acc[u] = _mm512_div_ps(acc[u], m_f);
      }
#pragma GCC unroll 4
      for (int u = 0; u < NV; ++u) _mm512_store_ps(o + 16 * u, acc[u]);
    }
    // Leave the tables all zero: the touched rows when keys are few, else everything.
    if (a.n_keys < buckets) {
      for (int64_t i = 0; i < a.n_keys; ++i) {
        const int32_t* kcr = a.kofs + f0 * a.n_keys + i * fb;
        for (int64_t j = 0; j < fb; ++j) {
          float* row = tables + kcr[j];
#pragma GCC unroll 4
          for (int u = 0; u < NV; ++u) _mm512_store_ps(row + 16 * u, zero);
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
    __m512 r[NV];
    if (a.qm[q] != 0) {
#pragma GCC unroll 4
      for (int u = 0; u < NV; ++u) r[u] = _mm512_load_ps(a.oc + iq * W + 16 * u);
      ++iq;
    } else {
#pragma GCC unroll 4
      for (int u = 0; u < NV; ++u) r[u] = zero;
    }
    if (full) {
#pragma GCC unroll 4
      for (int u = 0; u < NV; ++u) _mm512_storeu_ps(dst + 16 * u, r[u]);
    } else {
      for (int u = 0; u < NV; ++u) _mm512_mask_storeu_ps(dst + 16 * u, colmask[u], r[u]);
    }
  }
}

}  // namespace
}  // namespace avx512

void fast_hash_f32_avx512(const FastHashDims& d, const float* x, const int32_t* mask,
                          const float* signs, int32_t* codes, int64_t row_begin, int64_t row_end) {
  using namespace avx512;
  switch (d.D) {
    case 1: return fast_hash_rows_block<1>(d, x, mask, signs, codes, row_begin, row_end);
    case 2: return fast_hash_rows_block<2>(d, x, mask, signs, codes, row_begin, row_end);
    case 4: return fast_hash_rows_block<4>(d, x, mask, signs, codes, row_begin, row_end);
    case 8: return fast_hash_rows_block<8>(d, x, mask, signs, codes, row_begin, row_end);
    case 16: return fast_hash_rows_block<16>(d, x, mask, signs, codes, row_begin, row_end);
    case 32: return fast_hash_rows_block<32>(d, x, mask, signs, codes, row_begin, row_end);
    case 64: return fast_hash_rows_block<64>(d, x, mask, signs, codes, row_begin, row_end);
    default: return fast_hash_rows_memory(d, x, mask, signs, codes, row_begin, row_end);
  }
}

int64_t lsh_avx512_table_floats(const LshDims& d) {
  using namespace avx512;
  return lsh_block_functions(d) * (int64_t{1} << d.tau) * lsh_row_floats(d);
}

int64_t lsh_avx512_scratch_floats(const LshDims& d) {
  using namespace avx512;
  const int64_t W = lsh_row_floats(d);
  return round_up16(lsh_block_functions(d) * (int64_t{1} << d.tau) * W) + round_up16(d.Sk * W) +
         round_up16(d.Sq * W);
}

bool lsh_avx512_applicable(const LshDims& d) {
  using namespace avx512;
  // As for the AVX2 kernel: one table of a chunk must stay small (offsets are int32), and so must
  // the per-task scratch; beyond that the scalar kernel runs instead.
  const double tokens = static_cast<double>(d.Sk + d.Sq);
  const double scratch_bytes = 4.0 * static_cast<double>(lsh_avx512_scratch_floats(d)) +
                               tokens * (8.0 + 4.0 * static_cast<double>(d.m));
  return (int64_t{1} << d.tau) * lsh_row_floats(d) <= kDenseTableMaxFloats &&
         scratch_bytes <= static_cast<double>(int64_t{1} << 30);
}

void lsh_slice_dense_f32_avx512(const LshDims& d, const int32_t* qc, const int32_t* kc,
                                const int32_t* qm, const int32_t* km, const float* value,
                                float* out, float* scratch, int64_t* index_scratch,
                                int32_t* code_scratch) {
  using namespace avx512;
  const int64_t W = lsh_row_floats(d);
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
    lsh_chunk<1>(a, c0, cols);  // lsh_chunk_vectors(d) == 1
  }
}

#else  // !YOSO_X86_SIMD: never called (active_isa() is kScalar)

void fast_hash_f32_avx512(const FastHashDims&, const float*, const int32_t*, const float*, int32_t*,
                          int64_t, int64_t) {}
bool lsh_avx512_applicable(const LshDims&) { return false; }
int64_t lsh_avx512_table_floats(const LshDims&) { return 0; }
int64_t lsh_avx512_scratch_floats(const LshDims&) { return 0; }
void lsh_slice_dense_f32_avx512(const LshDims&, const int32_t*, const int32_t*, const int32_t*,
                                const int32_t*, const float*, float*, float*, int64_t*, int32_t*) {}

#endif  // YOSO_X86_SIMD

}  // namespace simd
}  // namespace cpu
}  // namespace yoso
