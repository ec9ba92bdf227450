"""Write kernels/attention/attention_tables.h from the formulas of SPEC.md §4.1 and §5.

    python kernels/attention/gen_tables.py > kernels/attention/attention_tables.h

tests/test_numerics.py checks that the committed header equals this output.

The scalar path reads §4.1's tables `E` and `G` directly. The AIE path's lookup-table
exponent (the default build; `-DATTN_EXP_NOLUT` computes the same integers without
tables) reads the same numbers through aie_api's lookup units, whose tables have a
prescribed memory layout (aie_api `include/aie_api/aie.hpp:6264-6275`, `aie::lut`;
`:6368-6384`, `aie::linear_approx`): four copies of every entry, two in `LUT_ab` and two
in `LUT_cd`, each run of entries one memory bank wide followed by the same run again; a
`linear_approx` entry is a (slope, offset) pair, slope first. The bank width differs by
architecture: 128 bits on AIE-ML (npu1, mlir-aie `aie_runtime_lib/AIE2/lut_based_ops.cpp`
lines 17-21) and 256 bits on XDNA 2 (npu2, `aie_runtime_lib/AIE2P/lut_based_ops.cpp` lines
16-20), so each architecture gets its own tables. `LUT_ab` and `LUT_cd` must sit in two
different memory banks (aie.hpp:6268): the header pins them with `ATTN_LUT_BANK_A` and
`ATTN_LUT_BANK_B`, which attention.cc maps to mlir-aie's `AIE_BANK_A` / `AIE_BANK_B`
(`aie_runtime_lib/AIE2/aie_bank_placement.h`).
"""

from __future__ import annotations

import numpy as np

# The bank width of aie::lut's layout per architecture (__AIE_ARCH__ 20: AIE-ML, npu1;
# 21: XDNA 2, npu2), in bytes.
BANK_BYTES = {20: 16, 21: 32}


def exp_segments() -> np.ndarray:
    x = np.arange(129, dtype=np.float64)
    return np.rint(np.ldexp(np.exp2(-x / 128.0), 22)).astype(np.int64)


# SPEC §4.1's segment values E[x] without a table (the `nolut` exponent): a degree-6
# polynomial in x / 128, evaluated in Q30 by Horner steps `h = c_k + ((h * x + 64) >> 7)`,
# then `E = (h + 128) >> 8`. The coefficients were fitted to 2^(-x/128) and adjusted until
# the procedure gives exactly rne(2^22 * 2^(-x/128)) for every x in 0..128 (the smallest
# distance of those values from a rounding tie is 0.0013 of a unit, so a plain fit is
# not enough); tests/test_numerics.py checks all 129 values. Every intermediate fits int32.
EXP_POLY = (1073741822, -744260935, 257938620, -59582133, 10285400, -1369255, 117396)


def exp_segments_by_polynomial(x: np.ndarray) -> np.ndarray:
    """E[x] by the integer procedure above (int64 here; int32 on the device)."""
    x = np.asarray(x, dtype=np.int64)
    h = np.full_like(x, EXP_POLY[-1])
    for c in EXP_POLY[-2::-1]:
        h = c + ((h * x + 64) >> 7)
    return (h + 128) >> 8


def reciprocal_seeds() -> np.ndarray:
    u = np.arange(64, dtype=np.float64)
    return np.rint(np.ldexp(1.0, 37) / (129.0 + 2.0 * u)).astype(np.int64)


def exp_linear_approx() -> np.ndarray:
    """§4.1's `y = E[x] - ((G[x] r + 16) >> 5)` as `aie::linear_approx` entries.

    `linear_approx` computes `slope[x] * r + offset[x]` for `x = f >> 5`, `r = f & 31`;
    with slope `-G[x]` and offset `32 E[x] - 1`, a round-half-up shift by 5 gives
    `floor((32 E - G r + 15) / 32) = E - floor((G r + 16) / 32)`, i.e. §4.1 exactly.
    Returns `[128, 2]` int64 (slope, offset).
    """
    e = exp_segments()
    g = e[:-1] - e[1:]
    return np.stack([-g, 32 * e[:-1] - 1], axis=1)


def pow2_table() -> np.ndarray:
    """`2^(13 - n)` for the exponent's integer part `n = 0..13`; 0 for `n = 14, 15`
    (`t = T_ZERO` has `n = 14`, and `EXP2N(T_ZERO) = 0`)."""
    n = np.arange(16)
    return np.where(n <= 13, np.left_shift(1, np.clip(13 - n, 0, 13)), 0).astype(np.int64)


def lut_copies(entries: np.ndarray, itemsize: int, bank_bytes: int) -> np.ndarray:
    """Two copies of a table interleaved per bank width: the layout of one of
    `aie::lut<4, ...>`'s two tables (`LUT_ab`, `LUT_cd`). `entries` is `[N, words]`."""
    entries = entries.reshape(len(entries), -1)
    per_bank = bank_bytes // (itemsize * entries.shape[1])
    chunks = entries.reshape(-1, per_bank, entries.shape[1])
    return np.concatenate([chunks, chunks], axis=1).reshape(-1)


def _array(name: str, values: np.ndarray, ctype: str = "int32_t", placement: str = "") -> str:
    body = []
    per_line = 8
    for i in range(0, len(values), per_line):
        body.append("    " + ", ".join(str(int(v)) for v in values[i : i + per_line]) + ",")
    return (
        f"ATTN_TABLE_ALIGN static const {ctype} {name}[{len(values)}]{placement} = {{\n"
        + "\n".join(body)
        + "\n};\n"
    )


def _lut_tables(arch: int) -> str:
    bank = BANK_BYTES[arch]
    la = lut_copies(exp_linear_approx(), 4, bank)
    pw = lut_copies(pow2_table(), 2, bank)
    return (
        f"// aie::linear_approx table of SPEC §4.1 for {8 * bank}-bit banks: entry x = (slope\n"
        "// -G[x], offset 32 E[x] - 1); each bank-wide run of entries twice; LUT_ab and LUT_cd\n"
        "// hold the same values, in two different banks.\n"
        + _array("ATTN_EXP_LUT_AB", la, placement=" ATTN_LUT_BANK_A")
        + _array("ATTN_EXP_LUT_CD", la, placement=" ATTN_LUT_BANK_B")
        + "// aie::parallel_lookup table: 2^(13 - n) for n = 0..13, 0 for n = 14, 15.\n"
        + _array("ATTN_POW2_LUT_AB", pw, "int16_t", placement=" ATTN_LUT_BANK_A")
        + _array("ATTN_POW2_LUT_CD", pw, "int16_t", placement=" ATTN_LUT_BANK_B")
    )


def header() -> str:
    e = exp_segments()
    g = e[:-1] - e[1:]
    return (
        "// Generated by kernels/attention/gen_tables.py from SPEC.md §4.1 and §5; do not edit.\n"
        "#pragma once\n#include <stdint.h>\n\n"
        "#ifndef ATTN_TABLE_ALIGN\n#define ATTN_TABLE_ALIGN\n#endif\n"
        "#ifndef ATTN_LUT_BANK_A\n#define ATTN_LUT_BANK_A\n#define ATTN_LUT_BANK_B\n#endif\n\n"
        "#if defined(ATTN_SCALAR)\n"
        "// E[x] = rne(2^22 * 2^(-x/128)), x = 0..128\n" + _array("ATTN_EXP_E", e) + "\n"
        "// G[x] = E[x] - E[x+1], x = 0..127\n"
        + _array("ATTN_EXP_G", g)
        + "#elif !defined(ATTN_EXP_NOLUT) && __AIE_ARCH__ == 21\n"
        + _lut_tables(21)
        + "#elif !defined(ATTN_EXP_NOLUT)\n"
        + _lut_tables(20)
        + "#endif\n\n"
        "// SPEC §4.1 E[x] without a table (-DATTN_EXP_NOLUT): Horner in Q30 over x / 128,\n"
        "// h = c_k + ((h * x + 64) >> 7) from c_6 down to c_0, then E = (h + 128) >> 8.\n"
        + "".join(f"#define ATTN_EXP_POLY_{k} {c}\n" for k, c in enumerate(EXP_POLY))
        + "\n"
        "// R[u] = rne(2^37 / (128 + 2u + 1)), u = 0..63\n"
        + _array("ATTN_RECIP_SEED", reciprocal_seeds())
    )


if __name__ == "__main__":
    print(header(), end="")
