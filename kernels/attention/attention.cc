// Whisper encoder self-attention for the Ryzen AI NPU: the compute-tile kernel.
//
// The arithmetic is kernels/attention/SPEC.md (version 4); section numbers below
// refer to it. One source, two paths selected by the preprocessor:
//
//   -DATTN_SCALAR   portable C++ (host g++): every integer step written out plainly.
//                   amanuensis_npu.npu.host_kernel builds it into a shared library and the
//                   tests compare its output byte for byte with amanuensis_npu.npu.emulator.
//   (default)       AIE path against aie_api for npu1 (AIE-ML, __AIE_ARCH__ == 20) and
//                   npu2 (AIE2P, __AIE_ARCH__ == 21), compiled by Peano:
//                   clang++ -O2 -std=c++20 --target=aie2-none-unknown-elf (or aie2p-...)
//                   -I <mlir-aie>/include -c attention.cc
//
// Both paths export the same four tile functions, which the IRON design
// (kernels/attention/design.py) calls on every compute core, per query tile of
// ATTN_TQ = 32 rows and key tile of ATTN_TK = 64 keys:
//
//   attn_rows_init(m, l, acc)                                  before a query tile
//   attn_tile_max(q, kt, kw, m, valid)                         pass 1, key tiles 0..NKT-1
//   attn_tile_accum(q, kt, kw, v, vw, words, m, l, acc, valid) pass 2, key tiles 0..NKT-1
//   attn_rows_finish(l, acc, out)                              after pass 2
//
// Core-side tile layouts are the host buffers' own (SPEC.md §2), tile by tile:
//   q      int8  [32 rows][64 dims]           (row-major, |q| <= 127)
//   kt     int8  [64 dims][64 keys]           (K transposed per key tile, as in the host buffer)
//   kw     int16 [64]                         the tile's key scales kq_j in [0, 2^14] (rowp
//                                             key words read as int16 pairs, SPEC §2)
//   v      int8  [64 keys][64 dims]
//   vw     int16 [2 sub-tiles][64 dims]       the tile's V scales wv in [0, 2^14] (rowp V words)
//   words  int32 [32]                         rowp words 16 + i of the tile's rows
//   m, l   int32 [32]                         per-row state (core-local)
//   acc    int32 [32][64]                     P·V accumulator (core-local)
//   out    int16 [32][64]
//   valid  keys of this tile that are < n_frames: 64, except 28 for tile 23 at T = 1500
//
// The scalar path also exports attn_layer(), the whole-layer driver that walks the
// buffers exactly like the design's runtime sequence; kernel_host calls it.

#include <stdint.h>

#include "attention_tables.h"

#define ATTN_SPEC_VERSION 4
#define ATTN_D 64
#define ATTN_TQ 32
#define ATTN_TK 64
#define ATTN_HEADER 16
#define ATTN_FRAC_BITS 12
#define ATTN_T_ZERO (14 << ATTN_FRAC_BITS)
#define ATTN_P_BITS 13
#define ATTN_KQ_BITS 14
#define ATTN_VSUB 32  // keys per V scale sub-tile
#define ATTN_WV_BITS 14

// §5 reciprocal, shared by both paths (it runs on the scalar unit on the device too):
// y ~ 2^60 / x for x = l << (30 - k), k = floor(log2(l)); a seed table and two Newton steps.
static inline int64_t attn_reciprocal(int64_t li, int *k_out) {
  const int k = 31 - __builtin_clz((uint32_t)li);
  const int64_t x = li << (30 - k);
  int64_t y = ATTN_RECIP_SEED[(x >> 24) - 64];
  const int64_t two = (int64_t)1 << 31;
  y = (y * (two - ((x * y) >> 30))) >> 30;
  y = (y * (two - ((x * y) >> 30))) >> 30;
  *k_out = k;
  return y;
}

#if defined(ATTN_SCALAR)

// --------------------------------------------------------------------------- scalar path

#if defined(_WIN32)
#define ATTN_EXPORT extern "C" __declspec(dllexport)
#else
#define ATTN_EXPORT extern "C" __attribute__((visibility("default")))
#endif

// §4 step 2: t = min((e * mult) >> sh, T_ZERO), e = m - s' in [0, 2^21); all int32
// (2^21 * 511 < 2^30).
static inline int32_t attn_exponent(int32_t e, int32_t mult, int32_t sh) {
  const int32_t t = (e * mult) >> sh;
  return t > ATTN_T_ZERO ? ATTN_T_ZERO : t;
}

// §4.1: round(8192 * 2^(-t/4096)) by a 128-segment table and a shift.
static inline int32_t attn_exp2n(int32_t t) {
  if (t >= ATTN_T_ZERO) return 0;
  const int32_t n = t >> ATTN_FRAC_BITS;
  const int32_t f = t & ((1 << ATTN_FRAC_BITS) - 1);
  const int32_t x = f >> 5;
  const int32_t r = f & 31;
  const int32_t y = ATTN_EXP_E[x] - ((ATTN_EXP_G[x] * r + 16) >> 5);
  return (int32_t)(((int64_t)y * (int64_t)(1 << (13 - n)) + (1 << 21)) >> 22);
}

// §4 step 0: s'[i][j] = (s * kq_j + 2^13) >> 14 with s = sum_d q[i][d] * kt[d][j], for the
// tile's 32 rows and 64 keys (|s| < 2^20, |s * kq_j| < 2^34: int64 product).
static inline void attn_scores(const int8_t *q, const int8_t *kt, const int16_t *kw, int32_t *s) {
  for (int i = 0; i < ATTN_TQ; ++i) {
    int32_t *row = s + i * ATTN_TK;
    for (int j = 0; j < ATTN_TK; ++j) row[j] = 0;
    for (int d = 0; d < ATTN_D; ++d) {
      const int32_t a = q[i * ATTN_D + d];
      const int8_t *kd = kt + d * ATTN_TK;
      for (int j = 0; j < ATTN_TK; ++j) row[j] += a * (int32_t)kd[j];
    }
    for (int j = 0; j < ATTN_TK; ++j)
      row[j] = (int32_t)(((int64_t)row[j] * kw[j] + (1 << (ATTN_KQ_BITS - 1))) >> ATTN_KQ_BITS);
  }
}

ATTN_EXPORT void attn_rows_init(int32_t *m, int32_t *l, int32_t *acc) {
  for (int i = 0; i < ATTN_TQ; ++i) {
    m[i] = INT32_MIN;
    l[i] = 0;
  }
  for (int i = 0; i < ATTN_TQ * ATTN_D; ++i) acc[i] = 0;
}

// Pass 1 (§4): running row max over the valid keys of this tile.
ATTN_EXPORT void attn_tile_max(const int8_t *q, const int8_t *kt, const int16_t *kw, int32_t *m,
                               int32_t valid) {
  int32_t s[ATTN_TQ * ATTN_TK];
  attn_scores(q, kt, kw, s);
  for (int i = 0; i < ATTN_TQ; ++i) {
    int32_t best = m[i];
    for (int j = 0; j < valid; ++j) best = s[i * ATTN_TK + j] > best ? s[i * ATTN_TK + j] : best;
    m[i] = best;
  }
}

// Pass 2 (§4 steps 1-6): p relative to the final max, row sums, and P·V per 32-key
// sub-tile weighted by the sub-tile's V scales.
ATTN_EXPORT void attn_tile_accum(const int8_t *q, const int8_t *kt, const int16_t *kw,
                                 const int8_t *v, const int16_t *vw, const int32_t *words,
                                 const int32_t *m, int32_t *l, int32_t *acc, int32_t valid) {
  int32_t s[ATTN_TQ * ATTN_TK];
  int32_t p[ATTN_TK];
  attn_scores(q, kt, kw, s);
  for (int i = 0; i < ATTN_TQ; ++i) {
    const int32_t mult = words[i] & 0xFFFF;
    const int32_t sh = (words[i] >> 16) & 0xFF;
    int32_t sum = 0;
    for (int j = 0; j < ATTN_TK; ++j) {
      p[j] = j < valid ? attn_exp2n(attn_exponent(m[i] - s[i * ATTN_TK + j], mult, sh)) : 0;
      sum += p[j];
    }
    l[i] += sum;
    int32_t *o = acc + i * ATTN_D;
    for (int g = 0; g < ATTN_TK / ATTN_VSUB; ++g) {
      int32_t a[ATTN_D];  // |a| <= 32 * 8192 * 127 < 2^25
      for (int d = 0; d < ATTN_D; ++d) a[d] = 0;
      for (int j = g * ATTN_VSUB; j < (g + 1) * ATTN_VSUB && j < valid; ++j) {
        const int32_t pj = p[j];
        if (pj == 0) continue;  // adds nothing; integer sums are order-free
        const int8_t *vj = v + j * ATTN_D;
        for (int d = 0; d < ATTN_D; ++d) a[d] += pj * (int32_t)vj[d];
      }
      const int16_t *w = vw + g * ATTN_D;
      for (int d = 0; d < ATTN_D; ++d)  // §4 step 6: round half up, |a * w| < 2^39
        o[d] += (int32_t)(((int64_t)a[d] * w[d] + (1 << (ATTN_WV_BITS - 1))) >> ATTN_WV_BITS);
    }
  }
}

// §5: out = round(256 * acc / l) with a seeded Newton reciprocal, saturated to int16.
ATTN_EXPORT void attn_rows_finish(const int32_t *l, const int32_t *acc, int16_t *out) {
  for (int i = 0; i < ATTN_TQ; ++i) {
    int k;
    const int64_t y = attn_reciprocal(l[i], &k);
    const int shift = 22 + k;
    const int64_t half = (int64_t)1 << (shift - 1);
    for (int d = 0; d < ATTN_D; ++d) {
      int64_t r = ((int64_t)acc[i * ATTN_D + d] * y + half) >> shift;
      r = r < -32768 ? -32768 : (r > 32767 ? 32767 : r);
      out[i * ATTN_D + d] = (int16_t)r;
    }
  }
}

// The whole layer, walked like the design's runtime sequence (§6.1): for every
// (batch, head) in [head_lo, head_hi) and every query tile, pass 1 then pass 2 over the
// key tiles in order, then the finish. Returns 0, or a negative code for a bad header.
ATTN_EXPORT int32_t attn_layer(const int8_t *q, const int8_t *k, const int8_t *v,
                               const int32_t *rowp, int16_t *out, int32_t batch, int32_t heads,
                               int32_t tp, int32_t head_lo, int32_t head_hi) {
  if (tp <= 0 || tp % ATTN_TK != 0 || batch <= 0 || heads <= 0) return -1;
  const int64_t nbh = (int64_t)batch * heads;
  if (head_lo < 0 || head_hi > nbh || head_lo > head_hi) return -2;
  // header, query words, key words (int16 pairs), V words (int16 pairs): SPEC §2
  const int64_t rowp_len = ATTN_HEADER + (int64_t)tp + tp / 2 + (tp / ATTN_VSUB) * ATTN_D / 2;
  int32_t m[ATTN_TQ], l[ATTN_TQ];
  static thread_local int32_t acc[ATTN_TQ * ATTN_D];
  for (int64_t bh = head_lo; bh < head_hi; ++bh) {
    const int32_t *hdr = rowp + bh * rowp_len;
    const int32_t n = hdr[1];
    if (hdr[0] != ATTN_SPEC_VERSION) return -3;
    if (hdr[2] != tp || n < 1 || n > tp) return -4;
    const int32_t nkt = (n + ATTN_TK - 1) / ATTN_TK;
    const int8_t *qh = q + bh * tp * ATTN_D;
    const int8_t *kh = k + bh * tp * ATTN_D;  // [tp/64][64 dims][64 keys]
    const int8_t *vh = v + bh * tp * ATTN_D;
    const int32_t *wh = hdr + ATTN_HEADER;
    const int16_t *kwh = (const int16_t *)(hdr + ATTN_HEADER + tp);
    const int16_t *vwh = (const int16_t *)(hdr + ATTN_HEADER + tp + tp / 2);
    int16_t *oh = out + bh * tp * ATTN_D;
    for (int32_t r0 = 0; r0 < tp; r0 += ATTN_TQ) {
      const int8_t *qt = qh + (int64_t)r0 * ATTN_D;
      attn_rows_init(m, l, acc);
      for (int32_t t = 0; t < nkt; ++t) {
        const int32_t valid = n - t * ATTN_TK < ATTN_TK ? n - t * ATTN_TK : ATTN_TK;
        attn_tile_max(qt, kh + (int64_t)t * ATTN_TK * ATTN_D, kwh + t * ATTN_TK, m, valid);
      }
      for (int32_t t = 0; t < nkt; ++t) {
        const int32_t valid = n - t * ATTN_TK < ATTN_TK ? n - t * ATTN_TK : ATTN_TK;
        attn_tile_accum(qt, kh + (int64_t)t * ATTN_TK * ATTN_D, kwh + t * ATTN_TK,
                        vh + (int64_t)t * ATTN_TK * ATTN_D, vwh + (int64_t)t * (ATTN_TK / ATTN_VSUB) * ATTN_D,
                        wh + r0, m, l, acc, valid);
      }
      attn_rows_finish(l, acc, oh + (int64_t)r0 * ATTN_D);
    }
  }
  return 0;
}

ATTN_EXPORT int32_t attn_spec_version(void) { return ATTN_SPEC_VERSION; }

#else  // ------------------------------------------------------------------- AIE path

#include <aie_api/aie.hpp>

// Q·Kᵀ is int8 x int8 -> acc32 (SPEC v3 on: Q and K are int8). npu1 (AIE-ML): mmul 4x8x8
// (256 MAC/cycle); npu2 (AIE2P): 8x8x8 (512 MAC/cycle).
// P·V is int16 x int8 -> acc32 (P <= 8192 needs 14 bits). npu1: 4x4x8 (128 MAC/cycle);
// npu2: 4x8x8 (256 MAC/cycle).
#if __AIE_ARCH__ == 21
#define QK_M 8
#define PV_N 8
#else
#define QK_M 4
#define PV_N 4
#endif
#define QK_K 8
#define QK_N 8
#define PV_M 4
#define PV_K 8

using MMulQK = aie::mmul<QK_M, QK_K, QK_N, int8, int8, acc32>;
using MMulPV = aie::mmul<PV_M, PV_K, PV_N, int16, int8, acc32>;

alignas(aie::vector_decl_align) static int32_t attn_s[ATTN_TQ * ATTN_TK];
alignas(aie::vector_decl_align) static int16_t attn_p[ATTN_TQ * ATTN_TK];

// S' = ((Q (32x64) · Kᵀ tile (64 dims x 64 keys)) * kq + 2^13) >> 14, row-major int32 into
// attn_s. Operands are gathered into mmul blocks from the row-major tiles with vector loads
// (the design may instead deliver pre-blocked tiles through the memory tile's DMA; the
// arithmetic is the same exact int32 sum). The per-key rescale is an int32 x int16 -> acc64
// multiply (|s * kq| < 2^34) and a round-half-up shift by 14 (srs, positive_inf).
static inline void attn_scores(const int8_t *__restrict q, const int8_t *__restrict kt,
                               const int16_t *__restrict kw) {
  for (unsigned ib = 0; ib < ATTN_TQ / QK_M; ++ib) {
    for (unsigned jb = 0; jb < ATTN_TK / QK_N; ++jb) {
      MMulQK mm;
      for (unsigned db = 0; db < ATTN_D / QK_K; ++db) {
        aie::vector<int8, QK_M * QK_K> a;
        aie::vector<int8, QK_K * QK_N> b;
        for (unsigned r = 0; r < QK_M; ++r)
          a.insert(r, aie::load_v<QK_K>(q + (ib * QK_M + r) * ATTN_D + db * QK_K));
        for (unsigned r = 0; r < QK_K; ++r)
          b.insert(r, aie::load_v<QK_N>(kt + (db * QK_K + r) * ATTN_TK + jb * QK_N));
        if (db == 0) mm.mul(a, b); else mm.mac(a, b);
      }
      aie::vector<int32, QK_M * QK_N> c = mm.template to_vector<int32>();
      for (unsigned r = 0; r < QK_M; ++r)
        aie::store_v(attn_s + (ib * QK_M + r) * ATTN_TK + jb * QK_N, c.extract<QK_N>(r));
    }
  }
  aie::set_rounding(aie::rounding_mode::positive_inf);  // (x + 2^13) >> 14
  for (unsigned j = 0; j < ATTN_TK; j += 16) {
    const aie::vector<int16, 16> kq = aie::load_v<16>(kw + j);  // kq <= 2^14
    for (unsigned i = 0; i < ATTN_TQ; ++i) {
      aie::vector<int32, 16> sv = aie::load_v<16>(attn_s + i * ATTN_TK + j);
      aie::accum<acc64, 16> sk = aie::mul(sv, kq);
      aie::store_v(attn_s + i * ATTN_TK + j, sk.template to_vector<int32>(ATTN_KQ_BITS));
    }
  }
}

extern "C" {

void attn_rows_init(int32_t *m, int32_t *l, int32_t *acc) {
  for (unsigned i = 0; i < ATTN_TQ; i += 16) {
    aie::store_v(m + i, aie::broadcast<int32, 16>(INT32_MIN));
    aie::store_v(l + i, aie::zeros<int32, 16>());
  }
  for (unsigned i = 0; i < ATTN_TQ * ATTN_D; i += 16) aie::store_v(acc + i, aie::zeros<int32, 16>());
}

void attn_tile_max(const int8_t *q, const int8_t *kt, const int16_t *kw, int32_t *m,
                   int32_t valid) {
  attn_scores(q, kt, kw);
  const aie::vector<int32, 16> lane = aie::iota<int32, 16>();
  for (unsigned i = 0; i < ATTN_TQ; ++i) {
    aie::vector<int32, 16> best = aie::broadcast<int32, 16>(m[i]);
    for (unsigned j = 0; j < ATTN_TK; j += 16) {
      aie::vector<int32, 16> s = aie::load_v<16>(attn_s + i * ATTN_TK + j);
      auto ok = aie::lt(aie::add(lane, (int32)j), valid);  // mask keys >= n_frames
      best = aie::select(best, aie::max(best, s), ok);
    }
    m[i] = aie::reduce_max(best);
  }
}

void attn_tile_accum(const int8_t *q, const int8_t *kt, const int16_t *kw, const int8_t *v,
                     const int16_t *vw, const int32_t *words, const int32_t *m, int32_t *l,
                     int32_t *acc, int32_t valid) {
  attn_scores(q, kt, kw);
  const aie::vector<int32, 16> lane = aie::iota<int32, 16>();
  aie::set_rounding(aie::rounding_mode::floor);
  aie::set_saturation(aie::saturation_mode::saturate);
  for (unsigned i = 0; i < ATTN_TQ; ++i) {
    const int32 mult = words[i] & 0xFFFF;
    const int32 sh = (words[i] >> 16) & 0xFF;
    aie::vector<int32, 16> rowsum = aie::zeros<int32, 16>();
    for (unsigned j = 0; j < ATTN_TK; j += 16) {
      aie::vector<int32, 16> s = aie::load_v<16>(attn_s + i * ATTN_TK + j);
      aie::vector<int32, 16> e = aie::sub(aie::broadcast<int32, 16>(m[i]), s);
      // t = min((e * mult) >> sh, T_ZERO): int32 x int16 -> acc64, floor shift.
      aie::accum<acc64, 16> em = aie::mul(e, aie::broadcast<int16, 16>((int16)mult));
      aie::vector<int32, 16> t = aie::min(em.template to_vector<int32>(sh), (int32)ATTN_T_ZERO);
      // EXP2N (§4.1): n, x, r by shifts and masks; E[x], G[x] by 4-way parallel lookups
      // (aie::parallel_lookup over the two-bank copies of the tables); y * 2^(13-n) by a
      // per-lane shift, then the round-half-up >> 22.
      alignas(aie::vector_decl_align) int32 tv[16], pv[16];
      aie::store_v(tv, t);
      for (unsigned u = 0; u < 16; ++u) {  // lookup stage; scalar stand-in for parallel_lookup
        const int32 tt = tv[u];
        if (tt >= ATTN_T_ZERO || (int32)(j + u) >= valid) { pv[u] = 0; continue; }
        const int32 n = tt >> ATTN_FRAC_BITS, f = tt & 4095, x = f >> 5, r = f & 31;
        const int32 y = ATTN_EXP_E[x] - ((ATTN_EXP_G[x] * r + 16) >> 5);
        pv[u] = (int32)(((int64_t)y * (int64_t)(1 << (13 - n)) + (1 << 21)) >> 22);
      }
      aie::vector<int32, 16> p = aie::load_v<16>(pv);
      rowsum = aie::add(rowsum, p);
      aie::store_v(attn_p + i * ATTN_TK + j, p.pack());  // int32 -> int16 (p <= 8192)
    }
    l[i] += aie::reduce_add(rowsum);
  }
  // Per 32-key sub-tile g: A = P[:, g] (32x32 int16) · V[g] (32x64 int8), exact in acc32
  // (|A| < 2^25); then acc += (A * wv[g] + 2^13) >> 14 per column (int32 x int16 -> acc64,
  // srs with round half up), §4 steps 5-6.
  aie::set_rounding(aie::rounding_mode::positive_inf);
  constexpr unsigned SUB_K = ATTN_VSUB / PV_K;  // mmul K steps per sub-tile
  for (unsigned g = 0; g < ATTN_TK / ATTN_VSUB; ++g) {
    for (unsigned ib = 0; ib < ATTN_TQ / PV_M; ++ib) {
      for (unsigned db = 0; db < ATTN_D / PV_N; ++db) {
        MMulPV mm;
        for (unsigned jb = g * SUB_K; jb < (g + 1) * SUB_K; ++jb) {
          aie::vector<int16, PV_M * PV_K> a;
          aie::vector<int8, PV_K * PV_N> b;
          for (unsigned r = 0; r < PV_M; ++r)
            a.insert(r, aie::load_v<PV_K>(attn_p + (ib * PV_M + r) * ATTN_TK + jb * PV_K));
          for (unsigned r = 0; r < PV_K; ++r)
            b.insert(r, aie::load_v<PV_N>(v + (jb * PV_K + r) * ATTN_D + db * PV_N));
          if (jb == g * SUB_K) mm.mul(a, b); else mm.mac(a, b);
        }
        aie::vector<int32, PV_M * PV_N> c = mm.template to_vector<int32>();
        // The block's PV_N columns' weights, repeated for its PV_M rows.
        aie::vector<int16, PV_M * PV_N> w;
        for (unsigned r = 0; r < PV_M; ++r)
          w.insert(r, aie::load_v<PV_N>(vw + g * ATTN_D + db * PV_N));
        // int32 x int16 -> acc64 in 16-lane pieces (the width the rescale of step 0 uses).
        aie::vector<int32, PV_M * PV_N> add;
        for (unsigned h = 0; h < PV_M * PV_N / 16; ++h) {
          aie::accum<acc64, 16> cw = aie::mul(c.template extract<16>(h), w.template extract<16>(h));
          add.insert(h, cw.template to_vector<int32>(ATTN_WV_BITS));
        }
        for (unsigned r = 0; r < PV_M; ++r) {
          int32_t *dst = acc + (ib * PV_M + r) * ATTN_D + db * PV_N;
          aie::store_v(dst, aie::add(aie::load_v<PV_N>(dst), add.extract<PV_N>(r)));
        }
      }
    }
  }
}

void attn_rows_finish(const int32_t *l, const int32_t *acc, int16_t *out) {
  aie::set_rounding(aie::rounding_mode::positive_inf);  // round half up
  aie::set_saturation(aie::saturation_mode::saturate);  // clamp to int16
  for (unsigned i = 0; i < ATTN_TQ; ++i) {
    // Reciprocal on the scalar unit (§5): clz, seed, two Newton steps in 64-bit.
    int k;
    const int64_t y = attn_reciprocal(l[i], &k);
    const aie::vector<int32, 16> yv = aie::broadcast<int32, 16>((int32)y);
    for (unsigned d = 0; d < ATTN_D; d += 16) {
      aie::vector<int32, 16> a = aie::load_v<16>(acc + i * ATTN_D + d);
      aie::accum<acc64, 16> prod = aie::mul(a, yv);  // |acc| * y < 2^61
      aie::store_v(out + i * ATTN_D + d, prod.template to_vector<int16>(22 + k));
    }
  }
}

}  // extern "C"

#endif  // ATTN_SCALAR
