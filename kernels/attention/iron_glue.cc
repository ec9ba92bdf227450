// Glue between the IRON design (design.py) and the tile functions of attention.cc.
//
// A compute tile has two input DMA channels (kernels/README.md), so each core receives
// two kinds of object, and IRON cannot take sub-views of an object: these wrappers do the
// pointer arithmetic. `slot` is the core's row in its column (0..3). The arithmetic stays
// entirely in attention.cc.
//
//   qr  int8 [8704]:  [slot 0..3: query tile, int8 32 x 64 in 8 x 8 blocks]  bytes    0 .. 8191
//                     [slot 0..3: its 32 rowp row words, int32]            bytes 8192 .. 8703
//   kv  int8 [8704]:  [record 0][record 1], each 4352 bytes (SPEC §2):
//                     pass 1: two key records (key tiles 2j and 2j + 1)
//                     pass 2: key record j, then value record j
//
// Every record carries its own scales (kq after a Kᵀ tile, wv after a V tile), so a core
// needs no key-tile counter and pass 1 streams keys only (issue 9, finding 7).
//
// Built by the Makefile with Peano for the NPU (`attention.o`, the object every Worker
// links). On the host, with -DATTN_HOST_DRIVER, it also exports attn_layer(), which walks a
// whole layer through these entry points the way the design feeds a core, in 64-byte
// aligned objects like the cores' buffers: amanuensis_npu.npu.host_kernel builds it with
// -DATTN_SCALAR, and `make -C kernels host-check` builds it for the AIE path against the
// aie_api stand-in in kernels/host/.

#include "attention.cc"

#define GLUE_SLOTS 4
#define GLUE_WORDS_OFFSET (GLUE_SLOTS * ATTN_Q_TILE_BYTES)
#define GLUE_QR_BYTES (GLUE_WORDS_OFFSET + GLUE_SLOTS * ATTN_TQ * 4)
#define GLUE_KV_BYTES (2 * ATTN_REC_BYTES)

static_assert(GLUE_QR_BYTES == 8704, "qr object layout differs from layout.py");
static_assert(GLUE_KV_BYTES == 8704, "kv object layout differs from layout.py");
static_assert(ATTN_REC_BYTES % 64 == 0, "records must keep 64-byte alignment in an object");

#if defined(ATTN_SCALAR) || defined(ATTN_HOST_DRIVER)
#define GLUE_EXPORT extern "C" __attribute__((visibility("default")))
#else
#define GLUE_EXPORT extern "C"
#endif

// Before a query tile: the row state of SPEC §4.
GLUE_EXPORT void attn_qr_rows_init(int32_t *m, int32_t *l, int32_t *acc) {
  attn_rows_init(m, l, acc);
}

// Pass 1 step for the core in `slot`: row max over the two key records of `kv`, the first
// with `valid0` valid keys, the second with `valid1` (0: no tile; its record is skipped).
GLUE_EXPORT void attn_qr_pass1(const int8_t *qr, const int8_t *kv, int32_t *s, int32_t *m,
                               int32_t slot, int32_t valid0, int32_t valid1) {
  const int8_t *q = qr + slot * ATTN_Q_TILE_BYTES;
  attn_tile_max(q, kv, s, m, valid0);
  if (valid1 > 0) attn_tile_max(q, kv + ATTN_REC_BYTES, s, m, valid1);
}

// Pass 2 step for the core in `slot`: probabilities, row sum and P·V (SPEC §4).
GLUE_EXPORT void attn_qr_pass2(const int8_t *qr, const int8_t *kv, int32_t *s, int16_t *p,
                               const int32_t *m, int32_t *l, int32_t *acc, int32_t slot,
                               int32_t valid) {
  const int32_t *words = (const int32_t *)(qr + GLUE_WORDS_OFFSET) + slot * ATTN_TQ;
  attn_tile_accum(qr + slot * ATTN_Q_TILE_BYTES, kv, kv + ATTN_REC_BYTES, words, s, p, m, l, acc,
                  valid);
}

// The object layout compiled in, so a test can check it against layout.py.
GLUE_EXPORT int32_t attn_qr_layout(int32_t what) {
  switch (what) {
    case 0: return GLUE_SLOTS;
    case 1: return ATTN_Q_TILE_BYTES;
    case 2: return GLUE_WORDS_OFFSET;
    case 3: return GLUE_QR_BYTES;
    case 4: return ATTN_REC_BYTES;
    case 5: return GLUE_KV_BYTES;
    case 6: return ATTN_SCALES;
    default: return -1;
  }
}

#if defined(ATTN_HOST_DRIVER)

#include <string.h>

// Bytes of constant tables compiled into this object (what a core's data memory holds
// besides the design's buffers and the stack; layout.CORE_MEMORY counts them).
GLUE_EXPORT int32_t attn_table_bytes(void) {
#if defined(ATTN_SCALAR)
  return (int32_t)(sizeof(ATTN_EXP_E) + sizeof(ATTN_EXP_G) + sizeof(ATTN_RECIP_SEED));
#elif defined(ATTN_EXP_NOLUT)
  return (int32_t)sizeof(ATTN_RECIP_SEED);
#else
  return (int32_t)(sizeof(ATTN_EXP_LUT_AB) + sizeof(ATTN_EXP_LUT_CD) + sizeof(ATTN_POW2_LUT_AB) +
                   sizeof(ATTN_POW2_LUT_CD) + sizeof(ATTN_RECIP_SEED));
#endif
}

#if !defined(ATTN_SCALAR)
// Work the aie_api stand-in saw on this thread (0: mmul MACs, 1: linear_approx lanes,
// 2: parallel_lookup lanes); a test checks that the exponent runs on the lookup units.
GLUE_EXPORT uint64_t attn_standin_count(int32_t what) {
  const aie::standin::counters_t &c = aie::standin::counters;
  return what == 0 ? c.mmul_macs : (what == 1 ? c.linear_approx_lanes : c.parallel_lookup_lanes);
}
#endif

// The whole layer on the host, for every (batch, head) in [head_lo, head_hi): the design's
// objects are assembled from the host buffers (qr per 4 query tiles; kv pairs of key records
// for pass 1, key + value records for pass 2) and every query tile runs through the entry
// points above in its slot. Returns 0, or a negative code for a bad header.
GLUE_EXPORT int32_t attn_layer(const int8_t *q, const int8_t *k, const int8_t *v,
                               const int32_t *rowp, int16_t *out, int32_t batch, int32_t heads,
                               int32_t tp, int32_t head_lo, int32_t head_hi) {
  if (tp <= 0 || tp % ATTN_TK != 0 || batch <= 0 || heads <= 0) return -1;
  const int64_t nbh = (int64_t)batch * heads;
  if (head_lo < 0 || head_hi > nbh || head_lo > head_hi) return -2;
  const int64_t rowp_len = ATTN_HEADER + (int64_t)tp;
  const int32_t nqt = tp / ATTN_TQ;
  const int32_t nt = tp / ATTN_TK;
  alignas(64) static thread_local int8_t qr[GLUE_QR_BYTES];
  alignas(64) static thread_local int8_t kv1[(ATTN_TK / 2 + 1) * GLUE_KV_BYTES];
  alignas(64) static thread_local int8_t kv2[ATTN_TK * GLUE_KV_BYTES];
  alignas(64) static thread_local int32_t s[ATTN_TQ * ATTN_TK];
  alignas(64) static thread_local int16_t p[ATTN_TQ * ATTN_TK];
  alignas(64) static thread_local int32_t acc[ATTN_TQ * ATTN_D];
  alignas(64) static thread_local int32_t m[ATTN_TQ];
  alignas(64) static thread_local int32_t l[ATTN_TQ];
  alignas(64) static thread_local int16_t o[ATTN_TQ * ATTN_D];
  if (nt > ATTN_TK) return -1;  // the object pools above hold up to 64 key tiles
  for (int64_t bh = head_lo; bh < head_hi; ++bh) {
    const int32_t *hdr = rowp + bh * rowp_len;
    const int32_t n = hdr[1];
    if (hdr[0] != ATTN_SPEC_VERSION) return -3;
    if (hdr[2] != tp || n < 1 || n > tp) return -4;
    const int32_t nkt = (n + ATTN_TK - 1) / ATTN_TK;
    const int8_t *kh = k + bh * nt * ATTN_REC_BYTES;
    const int8_t *vh = v + bh * nt * ATTN_REC_BYTES;
    // The head's kv objects, as the memory tile joins them (design.py).
    const int32_t npairs = (nkt + 1) / 2;
    memset(kv1, 0, (size_t)npairs * GLUE_KV_BYTES);
    for (int32_t t = 0; t < nkt; ++t) {
      memcpy(kv1 + (t / 2) * GLUE_KV_BYTES + (t % 2) * ATTN_REC_BYTES,
             kh + (int64_t)t * ATTN_REC_BYTES, ATTN_REC_BYTES);
      memcpy(kv2 + t * GLUE_KV_BYTES, kh + (int64_t)t * ATTN_REC_BYTES, ATTN_REC_BYTES);
      memcpy(kv2 + t * GLUE_KV_BYTES + ATTN_REC_BYTES, vh + (int64_t)t * ATTN_REC_BYTES,
             ATTN_REC_BYTES);
    }
    for (int32_t qt0 = 0; qt0 < nqt; qt0 += GLUE_SLOTS) {
      const int32_t slots = nqt - qt0 < GLUE_SLOTS ? nqt - qt0 : GLUE_SLOTS;
      memset(qr, 0, sizeof(qr));
      memcpy(qr, q + (bh * nqt + qt0) * ATTN_Q_TILE_BYTES, (size_t)slots * ATTN_Q_TILE_BYTES);
      memcpy(qr + GLUE_WORDS_OFFSET, hdr + ATTN_HEADER + qt0 * ATTN_TQ,
             (size_t)slots * ATTN_TQ * 4);
      for (int32_t slot = 0; slot < slots; ++slot) {
        attn_qr_rows_init(m, l, acc);
        for (int32_t pr = 0; pr < npairs; ++pr) {
          const int32_t t0 = 2 * pr, t1 = 2 * pr + 1;
          const int32_t valid0 = n - t0 * ATTN_TK < ATTN_TK ? n - t0 * ATTN_TK : ATTN_TK;
          const int32_t valid1 =
              t1 >= nkt ? 0 : (n - t1 * ATTN_TK < ATTN_TK ? n - t1 * ATTN_TK : ATTN_TK);
          attn_qr_pass1(qr, kv1 + pr * GLUE_KV_BYTES, s, m, slot, valid0, valid1);
        }
        for (int32_t t = 0; t < nkt; ++t) {
          const int32_t valid = n - t * ATTN_TK < ATTN_TK ? n - t * ATTN_TK : ATTN_TK;
          attn_qr_pass2(qr, kv2 + t * GLUE_KV_BYTES, s, p, m, l, acc, slot, valid);
        }
        attn_rows_finish(l, acc, o);
        memcpy(out + (bh * tp + (int64_t)(qt0 + slot) * ATTN_TQ) * ATTN_D, o, sizeof(o));
      }
    }
  }
  return 0;
}

#endif  // ATTN_HOST_DRIVER
