// Whisper encoder self-attention for the Ryzen AI NPU: the compute-tile kernel.
//
// The arithmetic is kernels/attention/SPEC.md (version 5); section numbers below
// refer to it. One source, two paths selected by the preprocessor:
//
//   -DATTN_SCALAR   portable C++ (host g++): every integer step written out plainly.
//                   amanuensis_npu.npu.host_kernel builds it into a shared library and the
//                   tests compare its output byte for byte with amanuensis_npu.npu.emulator.
//   (default)       AIE path against aie_api for npu1 (AIE-ML, __AIE_ARCH__ == 20) and
//                   npu2 (AIE2P / XDNA 2, __AIE_ARCH__ == 21), compiled by Peano:
//                   clang++ -O2 -std=c++20 --target=aie2-none-unknown-elf (or aie2p-...)
//                   -I <mlir-aie>/include -c iron_glue.cc
//                   On the host, `make -C kernels host-check` compiles this path against the
//                   aie_api stand-in in kernels/host/ and compares it with the scalar path.
//
// Both paths export the same tile functions, which iron_glue.cc calls on every compute
// core, per query tile of ATTN_TQ = 32 rows and key tile of ATTN_TK = 64 keys:
//
//   attn_rows_init(m, l, acc)                                       before a query tile
//   attn_tile_max(q, krec, s, m, valid)                             pass 1, every key tile
//   attn_tile_accum(q, krec, vrec, words, s, p, m, l, acc, valid)   pass 2, every key tile
//   attn_rows_finish(l, acc, out)                                   after pass 2
//
// Two more entry points serve the bring-up designs (kernels/bringup/): attn_exp2n_block(t, p)
// (EXP2N of 1024 exponents) and attn_tile_scores(q, krec, s) (one tile of §4 step 0).
// The AIE path's exponent is a build-time choice: the lookup units (default) or, with
// -DATTN_EXP_NOLUT (kernels/Makefile EXP=nolut), integer arithmetic without tables; both
// give SPEC §4.1's integers.
//
// Core-side layouts are the host buffers' own (SPEC.md §2): the host lays Q, Kᵀ and V out
// in 8 x 8 blocks (row-major blocks, row-major inside a block), so every aie::mmul operand
// is one whole block loaded with one vector load:
//   q      int8  query tile, 32 rows x 64 dims, blocked               2048 bytes
//   krec   int8  key record: Kᵀ tile (64 dims x 64 keys) blocked      4096 bytes
//                then the tile's key scales kq, int16 x 64            128 bytes (+128 zero)
//   vrec   int8  value record: V tile (64 keys x 64 dims) blocked     4096 bytes
//                then the tile's V scales wv, int16 [2 sub-tiles][64] 256 bytes
//   words  int32 [32]        the query rows' exponent multipliers (rowp words 16 + i)
//   s      int32 [32][64]    scores scratch (core-local)
//   p      int16 [32 x 64]   probabilities scratch, in the P·V mmul's A-block order
//   m, l   int32 [32]        per-row state (core-local)
//   acc    int32 [32][64]    P·V accumulator (core-local)
//   out    int16 [32][64]    row-major
//   valid  keys of this tile that are < n_frames: 64, except 28 for tile 23 at T = 1500

#include <stdint.h>

#define ATTN_TABLE_ALIGN alignas(64)
// aie::lut's two tables must sit in two different memory banks (aie_api aie.hpp:6268).
// Peano ignores chess_storage; mlir-aie's aie_bank_placement.h (aie_runtime_lib/AIE2 and
// AIE2P, on the include path the Makefile adds) pins a static to a bank with a section
// the linker script gives a region per bank, and aiecc checks the placement
// (--check-lut-banks). Without that header the lookup-table exponent cannot be placed
// safely: build the exponent without tables (EXP=nolut, -DATTN_EXP_NOLUT) instead.
#if !defined(ATTN_SCALAR) && !defined(ATTN_HOST_DRIVER) && !defined(ATTN_EXP_NOLUT)
#if __has_include(<aie_bank_placement.h>)
#include <aie_bank_placement.h>
#define ATTN_LUT_BANK_A AIE_BANK_A
#define ATTN_LUT_BANK_B AIE_BANK_B
#else
#error "lookup-table exponent: mlir-aie's aie_bank_placement.h not found; use EXP=nolut or a newer mlir-aie"
#endif
#endif
#include "attention_tables.h"

#define ATTN_SPEC_VERSION 5
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
#define ATTN_BLK 8                 // the host's block edge (SPEC §2)
#define ATTN_Q_TILE_BYTES 2048     // int8 32 x 64
#define ATTN_TILE_BYTES 4096       // int8 64 x 64
#define ATTN_SCALES ATTN_TILE_BYTES  // offset of a record's int16 scales
#define ATTN_REC_BYTES 4352        // tile + 256 bytes of scales
#define ATTN_EXP_BLOCK 1024        // exponents per attn_exp2n_block call (bring-up)

// Element (r, c) of a blocked tile with 64 columns (8 blocks of 8 per block row).
#define ATTN_BLOCKED(r, c) \
  ((((r) >> 3) * (ATTN_D / ATTN_BLK) + ((c) >> 3)) * 64 + ((r) & 7) * 8 + ((c) & 7))

#if defined(ATTN_SCALAR)

// --------------------------------------------------------------------------- scalar path

#if defined(_WIN32)
#define ATTN_EXPORT extern "C" __declspec(dllexport)
#else
#define ATTN_EXPORT extern "C" __attribute__((visibility("default")))
#endif

// §5 reciprocal as SPEC.md writes it (int64 products). The AIE path computes the same
// integers with 32-bit lanes and 64-bit accumulators (attn_rows_finish below), so the
// core needs no 64-bit scalar arithmetic (no __muldi3 / __ashrdi3 at link time).
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

// Bring-up entry point: p[i] = EXP2N(t[i]) for a block of ATTN_EXP_BLOCK exponents.
ATTN_EXPORT void attn_exp2n_block(const int32_t *t, int32_t *p) {
  for (int i = 0; i < ATTN_EXP_BLOCK; ++i) p[i] = attn_exp2n(t[i]);
}

// A blocked tile (SPEC §2) back to row-major, rows x 64.
static inline void attn_unblock(const int8_t *blocked, int rows, int8_t *plain) {
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < ATTN_D; ++c) plain[r * ATTN_D + c] = blocked[ATTN_BLOCKED(r, c)];
}

// §4 step 0: s'[i][j] = (s * kq_j + 2^13) >> 14 with s = sum_d q[i][d] * kt[d][j], for the
// tile's 32 rows and 64 keys (|s| < 2^20, |s * kq_j| < 2^34: int64 product).
static inline void attn_scores(const int8_t *qb, const int8_t *krec, int32_t *s) {
  int8_t q[ATTN_TQ * ATTN_D], kt[ATTN_D * ATTN_TK];
  attn_unblock(qb, ATTN_TQ, q);
  attn_unblock(krec, ATTN_D, kt);
  const int16_t *kw = (const int16_t *)(krec + ATTN_SCALES);
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

// Bring-up entry point: one tile of rescaled scores s' (§4 step 0), row-major int32.
ATTN_EXPORT void attn_tile_scores(const int8_t *q, const int8_t *krec, int32_t *s) {
  attn_scores(q, krec, s);
}

ATTN_EXPORT void attn_rows_init(int32_t *m, int32_t *l, int32_t *acc) {
  for (int i = 0; i < ATTN_TQ; ++i) {
    m[i] = INT32_MIN;
    l[i] = 0;
  }
  for (int i = 0; i < ATTN_TQ * ATTN_D; ++i) acc[i] = 0;
}

// Pass 1 (§4): running row max over the valid keys of this tile.
ATTN_EXPORT void attn_tile_max(const int8_t *q, const int8_t *krec, int32_t *s, int32_t *m,
                               int32_t valid) {
  attn_scores(q, krec, s);
  for (int i = 0; i < ATTN_TQ; ++i) {
    int32_t best = m[i];
    for (int j = 0; j < valid; ++j) best = s[i * ATTN_TK + j] > best ? s[i * ATTN_TK + j] : best;
    m[i] = best;
  }
}

// Pass 2 (§4 steps 1-6): p relative to the final max, row sums, and P·V per 32-key
// sub-tile weighted by the sub-tile's V scales.
ATTN_EXPORT void attn_tile_accum(const int8_t *q, const int8_t *krec, const int8_t *vrec,
                                 const int32_t *words, int32_t *s, int16_t *p_unused,
                                 const int32_t *m, int32_t *l, int32_t *acc, int32_t valid) {
  (void)p_unused;
  int32_t p[ATTN_TK];
  int8_t v[ATTN_TK * ATTN_D];
  attn_unblock(vrec, ATTN_TK, v);
  const int16_t *vw = (const int16_t *)(vrec + ATTN_SCALES);
  attn_scores(q, krec, s);
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

#else  // ------------------------------------------------------------------- AIE path

#include <aie_api/aie.hpp>

#if defined(ATTN_HOST_DRIVER)
#define ATTN_EXPORT extern "C" __attribute__((visibility("default")))
#else
#define ATTN_EXPORT extern "C"
#endif

// mmul shapes (aie_api detail/mmul.hpp, "Matrix multiplication modes for real types"):
// Q·Kᵀ is int8 x int8 -> acc32: npu1 (AIE-ML) 4x8x8, npu2 (XDNA 2) 8x8x8.
// P·V is int16 x int8 -> acc32 (P <= 8192 needs 14 bits): npu1 2x8x8, npu2 4x8x8.
// Every B operand is one 8 x 8 int8 block of the host layout; every A operand is
// QK_M (or PV_M) consecutive rows of one 8-row block, which are contiguous in it.
#if __AIE_ARCH__ == 21
#define QK_M 8
#define PV_M 4
#else
#define QK_M 4
#define PV_M 2
#endif

using MMulQK = aie::mmul<QK_M, ATTN_BLK, ATTN_BLK, int8, int8, acc32>;
using MMulPV = aie::mmul<PV_M, ATTN_BLK, ATTN_BLK, int16, int8, acc32>;

// The A-block element (row i, key j) of P for the P·V mmul: blocks of PV_M rows x 8 keys,
// row-major blocks (8 per block row), row-major inside a block.
#define ATTN_P_AT(i, j) (((((i) / PV_M) * (ATTN_TK / 8) + (j) / 8) * PV_M + (i) % PV_M) * 8)

// Lanes j..j+15 of a key tile that are valid keys, as a mask (no aie::iota in aie_api).
static inline aie::mask<16> attn_valid_mask(int32_t valid, unsigned j) {
  const int32_t n = valid - (int32_t)j;
  const uint32_t bits = n >= 16 ? 0xFFFFu : (n <= 0 ? 0u : (1u << n) - 1u);
  return aie::mask<16>::from_uint32(bits);
}

// S' = ((Q (32x64) · Kᵀ tile (64x64)) * kq + 2^13) >> 14 into s, row-major int32 (§4 step 0).
// The products are exact in acc32 (|s| < 2^20); the per-key rescale is an int32 x int16
// -> acc64 multiply (|s * kq| < 2^34) and a round-half-up shift by 14.
static inline void attn_scores(const int8_t *__restrict q, const int8_t *__restrict krec,
                               int32_t *__restrict s) {
  for (unsigned ib = 0; ib < ATTN_TQ / QK_M; ++ib) {
    // rows ib*QK_M .. +QK_M: block row (ib*QK_M)/8, first row (ib*QK_M)%8 inside it
    const int8_t *qrow = q + ((ib * QK_M) / 8) * (ATTN_D / 8) * 64 + ((ib * QK_M) % 8) * 8;
    for (unsigned jb = 0; jb < ATTN_TK / 8; ++jb) {
      MMulQK mm;
      for (unsigned db = 0; db < ATTN_D / 8; ++db) {
        const aie::vector<int8, MMulQK::size_A> a = aie::load_v<MMulQK::size_A>(qrow + db * 64);
        const aie::vector<int8, MMulQK::size_B> b =
            aie::load_v<MMulQK::size_B>(krec + (db * (ATTN_TK / 8) + jb) * 64);
        if (db == 0) mm.mul(a, b); else mm.mac(a, b);
      }
      const aie::vector<int32, MMulQK::size_C> c = mm.template to_vector<int32>();
      for (unsigned r = 0; r < QK_M; ++r)
        aie::store_v(s + (ib * QK_M + r) * ATTN_TK + jb * 8, c.template extract<8>(r));
    }
  }
  const int16_t *kw = (const int16_t *)(krec + ATTN_SCALES);
  for (unsigned j = 0; j < ATTN_TK; j += 16) {
    const aie::vector<int16, 16> kq = aie::load_v<16>(kw + j);  // kq <= 2^14
    for (unsigned i = 0; i < ATTN_TQ; ++i) {
      const aie::vector<int32, 16> sv = aie::load_v<16>(s + i * ATTN_TK + j);
      const aie::accum<acc64, 16> sk = aie::mul(sv, kq);
      aie::store_v(s + i * ATTN_TK + j, sk.template to_vector<int32>(ATTN_KQ_BITS));
    }
  }
}

// Every entry point runs in one mode: every srs of SPEC §4-§5 rounds half up, and the
// floor shifts (§4 step 2) are arithmetic vector shifts, which no mode affects.
static inline void attn_modes() {
  aie::set_rounding(aie::rounding_mode::positive_inf);
  aie::set_saturation(aie::saturation_mode::saturate);
}

// Bring-up entry point: one tile of rescaled scores s' (§4 step 0), row-major int32.
ATTN_EXPORT void attn_tile_scores(const int8_t *q, const int8_t *krec, int32_t *s) {
  attn_modes();
  attn_scores(q, krec, s);
}

ATTN_EXPORT void attn_rows_init(int32_t *m, int32_t *l, int32_t *acc) {
  for (unsigned i = 0; i < ATTN_TQ; i += 16) {
    aie::store_v(m + i, aie::broadcast<int32, 16>(INT32_MIN));
    aie::store_v(l + i, aie::zeros<int32, 16>());
  }
  for (unsigned i = 0; i < ATTN_TQ * ATTN_D; i += 16) aie::store_v(acc + i, aie::zeros<int32, 16>());
}

// Pass 1 (§4): running row max over the valid keys of this tile.
ATTN_EXPORT void attn_tile_max(const int8_t *q, const int8_t *krec, int32_t *s, int32_t *m,
                               int32_t valid) {
  attn_modes();
  attn_scores(q, krec, s);
  for (unsigned i = 0; i < ATTN_TQ; ++i) {
    aie::vector<int32, 16> best = aie::broadcast<int32, 16>(m[i]);
    for (unsigned j = 0; j < ATTN_TK; j += 16) {
      const aie::vector<int32, 16> sv = aie::load_v<16>(s + i * ATTN_TK + j);
      best = aie::select(best, aie::max(best, sv), attn_valid_mask(valid, j));
    }
    m[i] = aie::reduce_max(best);
  }
}

// The exponent of §4 step 3 and §4.1 on 16 lanes, for t in [0, T_ZERO]:
//   n = t >> 12; f = t & 4095; x = f >> 5; r = f & 31
//   y = E[x] - ((G[x] r + 16) >> 5)                    Q22
//   p = (y * 2^(13-n) + 2^21) >> 22                    2^(13-n) is 0 for n = 14 (t = T_ZERO)
// Two builds give the same integers (host-check and the bring-up's exp2n design check it).
#if !defined(ATTN_EXP_NOLUT)
// lut: y by aie::linear_approx on f (slope -G[x], offset 32 E[x] - 1, srs 5 half up) and
// 2^(13-n) by aie::parallel_lookup on n, from the tables of attention_tables.h in aie::lut's
// layout for this architecture's bank width. The objects are not const: compute() and
// fetch() write their scratch (aie_api aie.hpp:6448, :6520).
struct attn_exp_unit {
  aie::lut<4, int32, int32> exp_lut{128, ATTN_EXP_LUT_AB, ATTN_EXP_LUT_CD};
  aie::lut<4, int16, int16> pow2_lut{16, ATTN_POW2_LUT_AB, ATTN_POW2_LUT_CD};
  aie::linear_approx<int16, aie::lut<4, int32, int32>> exp_frac{exp_lut, 5};
  aie::parallel_lookup<int32, aie::lut<4, int16, int16>> pow2{pow2_lut};
};

static inline aie::vector<int32, 16> attn_exp2n_16(attn_exp_unit &u,
                                                   const aie::vector<int32, 16> &t) {
  const aie::vector<int32, 16> n = aie::downshift(t, ATTN_FRAC_BITS);
  const aie::vector<int16, 16> f = aie::bit_and((int32)4095, t).pack();
  const aie::vector<int32, 16> y = u.exp_frac.compute(f).template to_vector<int32>(5);
  return aie::mul(y, u.pow2.fetch(n)).template to_vector<int32>(22);
}
#else
// nolut: no lookup table. E[x] and E[x + 1] by SPEC §4.1's integer procedure (a degree-6
// polynomial in Q30, Horner steps that round half up, exact for every x in 0..128), and
// 2^(13-n) = 8192 >> n by four selects on the bits of n. Multiplies are 32 x 32 -> acc64.
struct attn_exp_unit {};

static inline aie::vector<int32, 16> attn_exp_segment(const aie::vector<int32, 16> &x) {
  constexpr int32 c[7] = {ATTN_EXP_POLY_0, ATTN_EXP_POLY_1, ATTN_EXP_POLY_2, ATTN_EXP_POLY_3,
                          ATTN_EXP_POLY_4, ATTN_EXP_POLY_5, ATTN_EXP_POLY_6};
  aie::vector<int32, 16> h = aie::broadcast<int32, 16>(c[6]);
  for (int k = 5; k >= 0; --k)  // |h| <= 2^30, |h x| < 2^37
    h = aie::add(aie::broadcast<int32, 16>(c[k]), aie::mul(h, x).template to_vector<int32>(7));
  return aie::mul(h, aie::broadcast<int32, 16>(1)).template to_vector<int32>(8);
}

static inline aie::vector<int32, 16> attn_exp2n_16(attn_exp_unit &,
                                                   const aie::vector<int32, 16> &t) {
  const aie::vector<int32, 16> n = aie::downshift(t, ATTN_FRAC_BITS);
  const aie::vector<int32, 16> f = aie::bit_and((int32)4095, t);
  const aie::vector<int32, 16> x = aie::downshift(f, 5);
  const aie::vector<int32, 16> r = aie::bit_and((int32)31, f);
  const aie::vector<int32, 16> e0 = attn_exp_segment(x);
  const aie::vector<int32, 16> e1 = attn_exp_segment(aie::add(x, aie::broadcast<int32, 16>(1)));
  const aie::vector<int32, 16> y =
      aie::sub(e0, aie::mul(aie::sub(e0, e1), r).template to_vector<int32>(5));
  aie::vector<int32, 16> m = aie::broadcast<int32, 16>(1 << ATTN_P_BITS);
  for (unsigned b = 0; b < 4; ++b)  // 8192 >> n for n in 0..14 (8192 >> 14 = 0)
    m = aie::select(m, aie::downshift(m, 1u << b),
                    aie::ge(aie::bit_and((int32)(1 << b), n), (int32)1));
  return aie::mul(y, m).template to_vector<int32>(22);
}
#endif

// Bring-up entry point: p[i] = EXP2N(t[i]) for a block of ATTN_EXP_BLOCK exponents in
// [0, T_ZERO], through the same exponent unit as pass 2.
ATTN_EXPORT void attn_exp2n_block(const int32_t *t, int32_t *p) {
  attn_modes();
  attn_exp_unit unit;
  for (unsigned i = 0; i < ATTN_EXP_BLOCK; i += 16)
    aie::store_v(p + i, attn_exp2n_16(unit, aie::load_v<16>(t + i)));
}

// Pass 2 (§4 steps 1-6). Per 16 lanes (SPEC §6.3):
//   e = m - s'; t = min((e * mult) >> sh, T_ZERO)     int32 x int16 -> acc64, exact to
//                                                      int32 (< 2^30), arithmetic shift
//   p = EXP2N(t)                                       attn_exp2n_16 above
// Masked keys (>= valid) get p = 0 by select.
ATTN_EXPORT void attn_tile_accum(const int8_t *q, const int8_t *krec, const int8_t *vrec,
                                 const int32_t *words, int32_t *s, int16_t *p, const int32_t *m,
                                 int32_t *l, int32_t *acc, int32_t valid) {
  attn_modes();
  attn_scores(q, krec, s);
  attn_exp_unit unit;
  for (unsigned i = 0; i < ATTN_TQ; ++i) {
    const int32 mult = words[i] & 0xFFFF;
    const unsigned sh = (words[i] >> 16) & 0xFF;
    const aie::vector<int32, 16> mrow = aie::broadcast<int32, 16>(m[i]);
    const aie::vector<int16, 16> mult16 = aie::broadcast<int16, 16>((int16)mult);
    aie::vector<int32, 16> rowsum = aie::zeros<int32, 16>();
    for (unsigned j = 0; j < ATTN_TK; j += 16) {
      const aie::vector<int32, 16> sv = aie::load_v<16>(s + i * ATTN_TK + j);
      const aie::accum<acc64, 16> em = aie::mul(aie::sub(mrow, sv), mult16);
      const aie::vector<int32, 16> t =
          aie::min(aie::downshift(em.template to_vector<int32>(0), sh), (int32)ATTN_T_ZERO);
      const aie::vector<int32, 16> pv =
          aie::select(aie::zeros<int32, 16>(), attn_exp2n_16(unit, t), attn_valid_mask(valid, j));
      rowsum = aie::add(rowsum, pv);
      const aie::vector<int16, 16> p16 = pv.pack();  // p <= 8192
      aie::store_v(p + ATTN_P_AT(i, j), p16.template extract<8>(0));
      aie::store_v(p + ATTN_P_AT(i, j + 8), p16.template extract<8>(1));
    }
    l[i] += aie::reduce_add(rowsum);
  }
  // Per 32-key sub-tile g: A = P[:, g] (32x32 int16) · V[g] (32x64 int8), exact in acc32
  // (|A| < 2^25); then acc += (A * wv[g] + 2^13) >> 14 per column (int32 x int16 -> acc64,
  // srs half up), §4 steps 5-6.
  const int16_t *vw = (const int16_t *)(vrec + ATTN_SCALES);
  constexpr unsigned SUB_KB = ATTN_VSUB / 8;  // 8-key blocks per sub-tile
  for (unsigned g = 0; g < ATTN_TK / ATTN_VSUB; ++g) {
    for (unsigned ib = 0; ib < ATTN_TQ / PV_M; ++ib) {
      for (unsigned nb = 0; nb < ATTN_D / 8; ++nb) {
        MMulPV mm;
        for (unsigned kb = g * SUB_KB; kb < (g + 1) * SUB_KB; ++kb) {
          const aie::vector<int16, MMulPV::size_A> a =
              aie::load_v<MMulPV::size_A>(p + ATTN_P_AT(ib * PV_M, kb * 8));
          const aie::vector<int8, MMulPV::size_B> b =
              aie::load_v<MMulPV::size_B>(vrec + (kb * (ATTN_D / 8) + nb) * 64);
          if (kb == g * SUB_KB) mm.mul(a, b); else mm.mac(a, b);
        }
        const aie::vector<int32, MMulPV::size_C> c = mm.template to_vector<int32>();
        // The block's 8 channels' weights, repeated for its PV_M rows.
        const aie::vector<int16, 8> w8 = aie::load_v<8>(vw + g * ATTN_D + nb * 8);
        aie::vector<int16, MMulPV::size_C> w;
        for (unsigned r = 0; r < PV_M; ++r) w.insert(r, w8);
        for (unsigned h = 0; h < MMulPV::size_C / 16; ++h) {
          const aie::accum<acc64, 16> cw =
              aie::mul(c.template extract<16>(h), w.template extract<16>(h));
          const aie::vector<int32, 16> add = cw.template to_vector<int32>(ATTN_WV_BITS);
          for (unsigned rr = 0; rr < 2; ++rr) {
            int32_t *dst = acc + (ib * PV_M + 2 * h + rr) * ATTN_D + nb * 8;
            aie::store_v(dst, aie::add(aie::load_v<8>(dst), add.template extract<8>(rr)));
          }
        }
      }
    }
  }
}

// §5 without 64-bit scalar arithmetic. Per row on the scalar unit, in 32 bits:
// k = floor(log2 l) (l in [2^13, 2^24)), x = l << (30 - k) in [2^30, 2^31), the seed
// y0 = R[(x >> 24) - 64]. Then both Newton steps on 16 rows at a time, in the floor
// rounding mode: t = (x * y) >> 30 and y = (y * (2^31 - t)) >> 30 are int32 x int32 ->
// acc64 products (< 2^61) shifted down with floor, i.e. SPEC §5's int64 arithmetic
// exactly; 2^31 - t (t ~ 2^30) is (INT32_MAX - t) + 1. Finally O * y (int32 x int32 ->
// acc64), srs(22 + k) half up, saturated to int16.
ATTN_EXPORT void attn_rows_finish(const int32_t *l, const int32_t *acc, int16_t *out) {
  alignas(64) int32_t xs[ATTN_TQ];
  alignas(64) int32_t ys[ATTN_TQ];
  int32_t ks[ATTN_TQ];
  for (unsigned i = 0; i < ATTN_TQ; ++i) {
    const int32_t li = l[i];
    int32_t k = 13;
    while (k < 30 && (li >> (k + 1)) != 0) ++k;
    const int32_t x = li << (30 - k);
    ks[i] = k;
    xs[i] = x;
    ys[i] = ATTN_RECIP_SEED[(x >> 24) - 64];
  }
  aie::set_rounding(aie::rounding_mode::floor);
  aie::set_saturation(aie::saturation_mode::saturate);
  const aie::vector<int32, 16> max32 = aie::broadcast<int32, 16>(INT32_MAX);
  const aie::vector<int32, 16> one = aie::broadcast<int32, 16>(1);
  for (unsigned i = 0; i < ATTN_TQ; i += 16) {
    const aie::vector<int32, 16> x = aie::load_v<16>(xs + i);
    aie::vector<int32, 16> y = aie::load_v<16>(ys + i);
    for (unsigned step = 0; step < 2; ++step) {
      const aie::vector<int32, 16> t = aie::mul(x, y).template to_vector<int32>(30);
      y = aie::mul(y, aie::add(aie::sub(max32, t), one)).template to_vector<int32>(30);
    }
    aie::store_v(ys + i, y);
  }
  attn_modes();
  for (unsigned i = 0; i < ATTN_TQ; ++i) {
    const aie::vector<int32, 16> yv = aie::broadcast<int32, 16>(ys[i]);
    for (unsigned d = 0; d < ATTN_D; d += 16) {
      const aie::vector<int32, 16> a = aie::load_v<16>(acc + i * ATTN_D + d);
      const aie::accum<acc64, 16> prod = aie::mul(a, yv);  // |acc| * y < 2^61
      aie::store_v(out + i * ATTN_D + d, prod.template to_vector<int16>(22 + ks[i]));
    }
  }
}

#endif  // ATTN_SCALAR

ATTN_EXPORT int32_t attn_spec_version(void) { return ATTN_SPEC_VERSION; }
