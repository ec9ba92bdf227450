"""The AIE path's lookup tables, read the way each architecture's lookup unit reads them.

aie::lut<4> keeps four copies of a table: two in `LUT_ab`, two in `LUT_cd`, each run of
entries one memory bank wide followed by the same run again (aie_api aie.hpp, `aie::lut`).
The bank is 128 bits on AIE-ML (npu1; mlir-aie aie_runtime_lib/AIE2/lut_based_ops.cpp)
and 256 bits on XDNA 2 (npu2; aie_runtime_lib/AIE2P/lut_based_ops.cpp). These tests parse
the committed attention_tables.h (not gen_tables.py's arrays), read every entry of every
copy at the positions the architecture's layout gives, and compare it with SPEC.md §4.1's
formulas written out here independently: `E[x] = rne(2^22 * 2^(-x/128))`, slope `-G[x]`,
offset `32 E[x] - 1`, and `2^(13-n)` (0 for n = 14, 15).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

TABLES_H = Path(__file__).resolve().parents[1] / "kernels" / "attention" / "attention_tables.h"
BANK_BYTES = {"npu1": 16, "npu2": 32}


def _blocks() -> dict[str, dict[str, np.ndarray]]:
    """{target: {array name: values}} from the header's per-architecture branches."""
    text = TABLES_H.read_text()
    npu2 = text.split("#elif !defined(ATTN_EXP_NOLUT) && __AIE_ARCH__ == 21\n", 1)[1]
    npu2, npu1 = npu2.split("#elif !defined(ATTN_EXP_NOLUT)\n", 1)
    npu1 = npu1.split("#endif", 1)[0]
    out = {}
    for target, block in (("npu1", npu1), ("npu2", npu2)):
        arrays = {}
        for m in re.finditer(r"(\w+)\[(\d+)\][^=]*= \{([^}]*)\}", block):
            values = np.array([int(v) for v in m[3].split(",") if v.strip()], dtype=np.int64)
            assert len(values) == int(m[2]), m[1]
            arrays[m[1]] = values
        out[target] = arrays
    return out


def _spec_exp_entries() -> np.ndarray:
    """SPEC §4.1: entry x = (slope -G[x], offset 32 E[x] - 1), x = 0..127."""
    e = np.array([round(2.0**22 * 2.0 ** (-x / 128.0)) for x in range(129)], dtype=np.int64)
    # Python's round() is round-half-even, as rne; no E[x] is a tie (irrational powers).
    g = e[:-1] - e[1:]
    return np.stack([-g, 32 * e[:-1] - 1], axis=1)


def _spec_pow2_entries() -> np.ndarray:
    return np.array([2 ** (13 - n) if n <= 13 else 0 for n in range(16)], dtype=np.int64)[:, None]


def read_through_layout(table: np.ndarray, entries: int, words: int, itemsize: int, bank: int):
    """Every copy of every entry as the lookup unit addresses it: `[entries, 2, words]`."""
    per_bank = bank // (itemsize * words)
    out = np.empty((entries, 2, words), dtype=np.int64)
    for i in range(entries):
        base = (i // per_bank) * 2 * per_bank * words + (i % per_bank) * words
        for copy in range(2):
            start = base + copy * per_bank * words
            out[i, copy] = table[start : start + words]
    return out


@pytest.mark.parametrize("target", ["npu1", "npu2"])
def test_every_lookup_entry_of_every_copy_is_the_spec_value(target):
    arrays = _blocks()[target]
    bank = BANK_BYTES[target]
    want_exp, want_pow2 = _spec_exp_entries(), _spec_pow2_entries()
    for name in ("ATTN_EXP_LUT_AB", "ATTN_EXP_LUT_CD"):
        got = read_through_layout(arrays[name], 128, 2, 4, bank)
        for copy in range(2):
            np.testing.assert_array_equal(got[:, copy], want_exp, err_msg=f"{target} {name}")
    for name in ("ATTN_POW2_LUT_AB", "ATTN_POW2_LUT_CD"):
        got = read_through_layout(arrays[name], 16, 1, 2, bank)
        for copy in range(2):
            np.testing.assert_array_equal(got[:, copy], want_pow2, err_msg=f"{target} {name}")


def test_npu1_tables_read_at_256_bits_are_wrong():
    # What the review found: one 128-bit layout for both targets gives XDNA 2 garbage.
    # This is why the test above reads each target's own tables at its own width.
    npu1 = _blocks()["npu1"]
    got = read_through_layout(npu1["ATTN_EXP_LUT_AB"], 128, 2, 4, 32)
    first_copy_wrong = (got[:, 0] != _spec_exp_entries()).any(axis=1)
    assert first_copy_wrong.sum() == 64  # of 128 entries
    assert (got != _spec_exp_entries()[:, None, :]).any(axis=(1, 2)).all()  # no entry intact
    pow2 = read_through_layout(npu1["ATTN_POW2_LUT_AB"], 16, 1, 2, 32)[:, 0, 0]
    assert pow2[14] == 2 ** (13 - 6)  # the n = 14 sentinel reads 128 instead of 0
    assert not np.array_equal(pow2, _spec_pow2_entries()[:, 0])


def test_table_pairs_are_pinned_to_two_banks():
    # LUT_ab in bank A, LUT_cd in bank B (mlir-aie aie_bank_placement.h), in both branches.
    text = TABLES_H.read_text()
    for name in ("ATTN_EXP_LUT", "ATTN_POW2_LUT"):
        assert len(re.findall(rf"{name}_AB\[\d+\] ATTN_LUT_BANK_A =", text)) == 2
        assert len(re.findall(rf"{name}_CD\[\d+\] ATTN_LUT_BANK_B =", text)) == 2
