// Glue between the IRON design (design.py) and the tile functions of attention.cc.
//
// The design delivers each compute core its query tile, its rowp row words and the
// head's key-scale and V-scale words inside one object shared by the 4 cores of a column
// (the "qr" object), and each key tile with its value tile inside one "kv" object, because a
// compute tile has only two input DMA channels (kernels/README.md). IRON cannot take
// sub-views of an object, so these wrappers do the pointer arithmetic: `slot` is the
// core's row in its column (0..3). The arithmetic stays entirely in attention.cc.
//
//   qr  int8 [QR_BYTES]:  [slot 0..3: q tile int8 32 x 64 row-major]    bytes     0 ..  8191
//                         [slot 0..3: 32 rowp row words int32]          bytes  8192 ..  8703
//                         [the head's rowp key words: 1536 int16 kq]    bytes  8704 .. 11775
//                         [the head's rowp V words: 48 x 64 int16 wv]   bytes 11776 .. 17919
//   kv  int8 [8192]:      [Kᵀ tile int8 64 dims x 64 keys][V tile int8 64 keys x 64 dims]
//
// The kv objects carry no key-tile index: every query tile consumes exactly NKT = 24 of
// them per pass, in order, so each core counts them (reset by attn_qr_rows_init) to find
// the tile's 64 key scales and 2 x 64 V scales in the qr object.
//
// Built by the Makefile with Peano for the NPU (`attention.o`, the object every
// Worker links), and by tests/test_kernel_build.py with the host g++ and
// -DATTN_SCALAR, which replays design.py's whole transfer plan through these
// entry points and compares the result byte for byte with the scalar layer driver.

#include "attention.cc"

#define GLUE_SLOTS 4
#define GLUE_TP 1536                               // padded frames of a 30 s window
#define GLUE_NKT 24                                // key tiles per pass at n_frames = 1500
#define GLUE_Q_TILE_BYTES (ATTN_TQ * ATTN_D)       // int8 query tile (SPEC v3 on)
#define GLUE_WORDS_OFFSET (GLUE_SLOTS * GLUE_Q_TILE_BYTES)
#define GLUE_KEYWORDS_OFFSET (GLUE_WORDS_OFFSET + GLUE_SLOTS * ATTN_TQ * 4)
#define GLUE_VWORDS_OFFSET (GLUE_KEYWORDS_OFFSET + GLUE_TP * 2)     // kq: one int16 per key
#define GLUE_QR_BYTES (GLUE_VWORDS_OFFSET + (GLUE_TP / ATTN_VSUB) * ATTN_D * 2)  // wv int16
#define GLUE_V_OFFSET (ATTN_TK * ATTN_D)

static_assert(GLUE_QR_BYTES == 17920, "qr object layout differs from design.py");
static_assert(GLUE_V_OFFSET == 4096, "kv object layout differs from design.py");

#if defined(ATTN_SCALAR)
#define GLUE_EXPORT ATTN_EXPORT
#else
#define GLUE_EXPORT extern "C"
#endif

// Key tiles seen in pass 1 and pass 2 of the current query tile (one core, one worker).
static int32_t glue_kt_max = 0;
static int32_t glue_kt_accum = 0;

static inline const int16_t *glue_key_scales(const int8_t *qr, int32_t kt) {
  return (const int16_t *)(qr + GLUE_KEYWORDS_OFFSET) + kt * ATTN_TK;
}

static inline const int16_t *glue_v_scales(const int8_t *qr, int32_t kt) {
  return (const int16_t *)(qr + GLUE_VWORDS_OFFSET) + kt * (ATTN_TK / ATTN_VSUB) * ATTN_D;
}

// Before a query tile: the row state of SPEC §4 and the key-tile counters.
GLUE_EXPORT void attn_qr_rows_init(int32_t *m, int32_t *l, int32_t *acc) {
  glue_kt_max = 0;
  glue_kt_accum = 0;
  attn_rows_init(m, l, acc);
}

// Pass 1 step for the core in `slot`: row max over the K half of `kv` (SPEC §4).
GLUE_EXPORT void attn_qr_tile_max(const int8_t *qr, const int8_t *kv, int32_t *m, int32_t slot,
                                  int32_t valid) {
  const int32_t kt = glue_kt_max++;
  attn_tile_max(qr + slot * GLUE_Q_TILE_BYTES, kv, glue_key_scales(qr, kt), m, valid);
}

// Pass 2 step for the core in `slot`: probabilities, row sum and P·V (SPEC §4).
GLUE_EXPORT void attn_qr_tile_accum(const int8_t *qr, const int8_t *kv, const int32_t *m,
                                    int32_t *l, int32_t *acc, int32_t slot, int32_t valid) {
  const int32_t kt = glue_kt_accum++;
  const int32_t *words = (const int32_t *)(qr + GLUE_WORDS_OFFSET) + slot * ATTN_TQ;
  attn_tile_accum(qr + slot * GLUE_Q_TILE_BYTES, kv, glue_key_scales(qr, kt), kv + GLUE_V_OFFSET,
                  glue_v_scales(qr, kt), words, m, l, acc, valid);
}

// The object layout compiled in, so a test can check it against design.py.
GLUE_EXPORT int32_t attn_qr_layout(int32_t what) {
  switch (what) {
    case 0: return GLUE_SLOTS;
    case 1: return GLUE_Q_TILE_BYTES;
    case 2: return GLUE_WORDS_OFFSET;
    case 3: return GLUE_QR_BYTES;
    case 4: return GLUE_V_OFFSET;
    case 5: return GLUE_KEYWORDS_OFFSET;
    case 6: return GLUE_NKT;
    case 7: return GLUE_VWORDS_OFFSET;
    default: return -1;
  }
}
