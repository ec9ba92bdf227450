"""Quantize/dequantize adapters between float attention and the NPU kernel's buffers.

`kernels/attention/SPEC.md` is the contract; section numbers below refer to it. The
same functions serve the NPU runtime and the emulator, so both see identical integer
inputs and dequantize identically:

- `pack_layer(q, k, v)`: float32 `[B, H, T, 64]` -> the kernel's five host buffers
  (`q`, `k`, `v` int8, the `rowp` words with the per-row exponent multipliers, the
  per-key K scales and the per-sub-tile V channel scales, and a zeroed `out`), plus the
  per-channel float metadata that dequantization needs (it never goes to the device).
- `unpack_output(packed, out)`: the kernel's int16 output -> float32 `[B, H, T, 64]`.
- `buffer_layout(batch)`: name, dtype, shape, bytes and direction of every buffer, in
  the runtime sequence's argument order; the manifest and the XRT runtime use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

SPEC_VERSION = 4

HEAD_DIM = 64
HEADS = 8
FRAMES = 1500
KEY_TILE = 64
V_SUB = 32  # keys per V scale sub-tile (SPEC v4, §3.4)
HEADER_WORDS = 16

FRAC_BITS = 12  # Q12 base-2 exponent
P_BITS = 13  # p = 1.0 is 8192
P_ONE = 1 << P_BITS
T_ZERO = 14 << FRAC_BITS  # exponents at or past this give p = 0
# Nats per score unit -> Q12 log2 units, with the 1/sqrt(64) = 1/8 score scale folded in.
SCORE_SCALE = 1.0 / math.sqrt(HEAD_DIM)
K2 = float(1 << FRAC_BITS) * math.log2(math.e) * SCORE_SCALE
Q_MAX = 127  # Q is int8 (SPEC v3 on)
K_MAX = 127
MULT_MAX = 511
GRID_BITS = 3  # Q's row multipliers: mult in [8, 16) on the grid, c = mult * 2^-sh (SPEC v4)
MULT_GRID = 1 << GRID_BITS
SH_MAX = 8
KQ_BITS = 14  # per-key K scale relative to the head's largest, Q14 (<= 2^14: fits int16)
KQ_ONE = 1 << KQ_BITS
WV_BITS = 14  # per-sub-tile V channel scale relative to the channel's largest, Q14
WV_ONE = 1 << WV_BITS
OUT_FRAC = 256  # out16 is in units of sv / 256


@contextmanager
def torch_single_thread() -> Iterator[None]:
    """Run the enclosed torch ops single-threaded in this thread (the setting is per thread).

    The adapters are many small element-wise ops: with intra-op threads they spend most
    of their time at thread barriers, 10-30x slower on a loaded two-core machine.
    """
    prev = torch.get_num_threads()
    if prev == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def padded_frames(frames: int) -> int:
    """Frames rounded up to whole key tiles (1500 -> 1536)."""
    return KEY_TILE * -(-int(frames) // KEY_TILE)


def rowp_words(tp: int) -> int:
    """Words of one head's `rowp` (§2): header, one word per query row, then the key
    scales and the V sub-tile scales as int16 pairs (half a word per key, one word per
    two channels of a sub-tile)."""
    return HEADER_WORDS + tp + tp // 2 + (tp // V_SUB) * HEAD_DIM // 2


def key_word_offset(tp: int) -> int:
    """Word index of the first key-scale word in a head's `rowp` (after the query words)."""
    return HEADER_WORDS + tp


def v_word_offset(tp: int) -> int:
    """Word index of the first V-scale word in a head's `rowp` (after the key words)."""
    return HEADER_WORDS + tp + tp // 2


def key_scales_view(rowp: np.ndarray) -> np.ndarray:
    """The `kq` int16 entries of `rowp [..., words]`, one per padded key: `[..., TP]`.

    A view (writable if `rowp` is): the device reads these words as int16 pairs, low
    half first (little-endian), so the int16 view of the words is the kernel's array.
    """
    tp = _tp_of_rowp(rowp)
    h = rowp.view(np.int16)
    start = 2 * key_word_offset(tp)
    return h[..., start : start + tp]


def v_scales_view(rowp: np.ndarray) -> np.ndarray:
    """The `wv` int16 entries of `rowp`, `[..., TP / 32, 64]` (sub-tile, channel); a view."""
    tp = _tp_of_rowp(rowp)
    h = rowp.view(np.int16)
    start = 2 * v_word_offset(tp)
    flat = h[..., start : start + (tp // V_SUB) * HEAD_DIM]
    return flat.reshape(*flat.shape[:-1], tp // V_SUB, HEAD_DIM)


def _tp_of_rowp(rowp: np.ndarray) -> int:
    if rowp.dtype != np.int32 or not rowp.flags.c_contiguous:
        raise TypeError("rowp must be a C-contiguous int32 array")
    words = int(rowp.shape[-1]) - HEADER_WORDS
    tp = 2 * words // 5  # words = 2.5 TP
    if tp % KEY_TILE or rowp_words(tp) != rowp.shape[-1]:
        raise ValueError(f"rowp has {rowp.shape[-1]} words, not a valid SPEC layout")
    return tp


@dataclass(frozen=True)
class BufferSpec:
    """One kernel buffer: `name`, numpy `dtype` string, `shape`, `nbytes`, `direction`."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    direction: str  # "in" or "out"


def buffer_layout(batch: int, frames: int = FRAMES, heads: int = HEADS) -> list[BufferSpec]:
    """The kernel's buffers in argument order (inputs, then the output); SPEC.md §2."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    tp = padded_frames(frames)
    rows = (batch, heads, tp, HEAD_DIM)
    key_tiles = (batch, heads, tp // KEY_TILE, HEAD_DIM, KEY_TILE)  # K transposed per tile
    specs = [
        ("q", "int8", rows, "in"),
        ("k", "int8", key_tiles, "in"),
        ("v", "int8", rows, "in"),
        ("rowp", "int32", (batch, heads, rowp_words(tp)), "in"),
        ("out", "int16", rows, "out"),
    ]
    return [
        BufferSpec(name, dtype, tuple(shape), int(np.prod(shape)) * np.dtype(dtype).itemsize, d)
        for name, dtype, shape, d in specs
    ]


@dataclass
class PackedLayer:
    """The kernel buffers for one layer and what the host needs to dequantize.

    `inputs` are C-contiguous numpy arrays in argument order (`q`, `k`, `v`, `rowp`;
    `k` is stored per key tile as dims x keys, see SPEC.md §2);
    `output` is a zeroed int16 buffer of the output's shape. `sv` and `vmu` are each
    V channel's dequantization scale (its largest sub-tile scale, §3.4) and mean,
    float32 `[B, H, 64]`.
    """

    inputs: list[np.ndarray]
    output: np.ndarray
    sv: torch.Tensor
    vmu: torch.Tensor
    frames: int

    @property
    def batch(self) -> int:
        return int(self.output.shape[0])

    @property
    def buffers(self) -> list[np.ndarray]:
        """Inputs then output, the order `HostKernel.run_layer` and the NPU take."""
        return [*self.inputs, self.output]


def _abs_max(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.abs().amax(dim=dim)


def value_scales(vs: torch.Tensor, tp: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sub-tile, per-channel scales of the smoothed values `vs [B, H, T, 64]` (§3.4).

    Returns `sv [B, H, 64]` (float32, each channel's largest sub-tile scale, 1 for an
    all-zero channel: the dequantization scale), the device's relative multipliers
    `wv [B, H, TP / 32, 64]` (int64 in [0, 2^14], 0 past the last frame) and the
    effective float32 scale `sv_eff [B, H, T, 64]` per frame that `v8` is quantized
    against, so the device's per-sub-tile weighting is the exact inverse of the host's.
    """
    batch, heads, frames, dim = vs.shape
    groups = tp // V_SUB
    padded = torch.zeros(batch, heads, groups * V_SUB, dim, dtype=vs.dtype)
    padded[:, :, :frames] = vs.abs()
    svg = padded.view(batch, heads, groups, V_SUB, dim).amax(dim=3) / 127.0  # [B,H,G,64]
    sv = svg.amax(dim=2)
    sv = torch.where(sv > 0, sv, torch.ones_like(sv))
    wv, eff = _relative_multipliers(svg, sv.unsqueeze(2), WV_ONE)
    sv_eff = eff.repeat_interleave(V_SUB, dim=2)[:, :, :frames]
    return sv, wv, sv_eff


def _relative_multipliers(
    scale: torch.Tensor, top: torch.Tensor, one: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`mult = min(ceil(one * scale / top), one)` (float64, int64 result) and the float32
    scale `top * mult / one` it stands for (§3.1 steps 3-4, §3.4 steps 4-5).

    Quantizing against that effective scale makes the device's multiply by `mult / one`
    the exact inverse of the host's division, and `ceil` keeps `|x / eff| <= 127`.
    """
    ratio = scale.to(torch.float64) / top.to(torch.float64)
    mult = torch.ceil(ratio * one).clamp_(0, one).to(torch.int64)
    eff = (top.to(torch.float64) * mult.to(torch.float64) / one).to(torch.float32)
    return mult, eff


def _to_int8(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x).clamp_(-127, 127).to(torch.int8)


def key_scales(ks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-key scales of the smoothed keys `ks [B, H, T, 64]` (SPEC §3.1 steps 2-4).

    Returns `skmax [B, H]` (float32, the head's largest key scale, 1 if every key is
    zero), the device's relative multipliers `kq [B, H, T]` (int64 in [0, 2^14]) and the
    effective float32 scale `sk_eff = skmax * kq / 2^14 [B, H, T]` that `k8` is quantized
    against, so the device's rescaling is the exact inverse of the host's.
    """
    sk = _abs_max(ks, dim=3) / 127.0  # [B, H, T]
    skmax = sk.amax(dim=2)
    skmax = torch.where(skmax > 0, skmax, torch.ones_like(skmax))
    kq, sk_eff = _relative_multipliers(sk, skmax.unsqueeze(-1), KQ_ONE)
    return skmax, kq, sk_eff


def row_multipliers(amax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row `(mult, sh)` on the SPEC §3.2 grid, from `a = max_d |qf|` (float32).

    `qf = (q H) * skmax` (rotated, with the head's largest key scale folded in).
    Returns int64 tensors; rows with `a == 0` get `mult = 0, sh = 0`.
    """
    cmin = amax.to(torch.float64) * (K2 / Q_MAX)
    mant, exp = torch.frexp(cmin)  # cmin = mant * 2^exp, mant in [0.5, 1)
    f = mant * 2.0  # cmin = f * 2^E with f in [1, 2), E = exp - 1
    big_e = exp.to(torch.int64) - 1
    mult = torch.ceil(f * MULT_GRID).to(torch.int64)
    wrap = mult == 2 * MULT_GRID
    mult = torch.where(wrap, torch.full_like(mult, MULT_GRID), mult)
    big_e = big_e + wrap.to(torch.int64)
    sh = GRID_BITS - big_e
    tiny = sh > SH_MAX
    mult = torch.where(tiny, torch.full_like(mult, MULT_GRID), mult)
    sh = torch.where(tiny, torch.full_like(sh, SH_MAX), sh)
    large = cmin > 2 * MULT_GRID - 1
    mult = torch.where(large, torch.ceil(cmin).clamp(max=MULT_MAX).to(torch.int64), mult)
    sh = torch.where(large, torch.zeros_like(sh), sh)
    zero = cmin <= 0
    mult = torch.where(zero, torch.zeros_like(mult), mult)
    sh = torch.where(zero, torch.zeros_like(sh), sh)
    return mult, sh


def hadamard(n: int = HEAD_DIM) -> torch.Tensor:
    """The orthonormal Sylvester Hadamard matrix `H_n / sqrt(n)` (entries ±1/8 for n = 64).

    Rotating Q and K by it leaves every score `q · k` unchanged (§3.0) and spreads a few
    large channels over all of them, which is what per-token int8 Q needs.
    """
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    if h.shape[0] != n:
        raise ValueError(f"no Sylvester Hadamard matrix of order {n}")
    return torch.from_numpy(h / math.sqrt(n)).to(torch.float32)


_H64 = hadamard()


def pack_layer(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> PackedLayer:
    """Float32 `[B, H, T, 64]` Q, K, V -> the kernel's buffers (SPEC.md §2-§3)."""
    with torch_single_thread():
        return _pack_layer(q, k, v)


def _pack_layer(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> PackedLayer:
    if q.shape != k.shape or q.shape != v.shape or q.dim() != 4 or q.shape[-1] != HEAD_DIM:
        raise ValueError(
            f"expected q, k, v of one shape [batch, heads, frames, {HEAD_DIM}], got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    batch, heads, frames, _ = q.shape
    if frames < 1:
        raise ValueError("attention needs at least one frame")
    q = q.detach().to(device="cpu", dtype=torch.float32)
    k = k.detach().to(device="cpu", dtype=torch.float32)
    v = v.detach().to(device="cpu", dtype=torch.float32)
    tp = padded_frames(frames)
    specs = buffer_layout(batch, frames, heads)
    bufs = [np.zeros(s.shape, dtype=s.dtype) for s in specs]
    qb, kb, vb, rowp, out = (torch.from_numpy(b) for b in bufs)

    # Q and K rotated by H: scores unchanged, outlier channels spread out (§3.0).
    q = q @ _H64
    k = k @ _H64
    # K: smoothing (per-channel mean), per-key scale relative to the head's largest (§3.1).
    ks = k - k.mean(dim=2, keepdim=True)
    skmax, kq, sk_eff = key_scales(ks)
    safe = torch.where(kq > 0, sk_eff, torch.ones_like(sk_eff))
    k8 = torch.zeros(batch, heads, tp, HEAD_DIM, dtype=torch.int8)
    k8[:, :, :frames] = _to_int8(ks / safe.unsqueeze(-1))
    # Host layout: per key tile, dims x keys (Kᵀ), the B operand of the QKᵀ mmul.
    kb.copy_(k8.view(batch, heads, tp // KEY_TILE, KEY_TILE, HEAD_DIM).transpose(3, 4))
    # Q: fold skmax, int8 per-row scale on the exponent grid (§3.2).
    qf = q * skmax.view(batch, heads, 1, 1)
    mult, sh = row_multipliers(_abs_max(qf, dim=3))
    c = mult.to(torch.float64) * torch.pow(2.0, -sh.to(torch.float64))
    inv = torch.where(mult > 0, K2 / torch.where(mult > 0, c, torch.ones_like(c)), 0.0)
    qb[:, :, :frames] = _to_int8(qf * inv.to(torch.float32).unsqueeze(-1))
    # rowp: header, per-row words, per-key words (§2, §3.3).
    rowp[:, :, 0] = SPEC_VERSION
    rowp[:, :, 1] = frames
    rowp[:, :, 2] = tp
    rowp[:, :, HEADER_WORDS : HEADER_WORDS + frames] = (mult | (sh << 16)).to(torch.int32)
    key_scales_view(bufs[3])[:, :, :frames] = kq.numpy()
    # V: smoothing, per-channel scale with a relative weight per 32-key sub-tile (§3.4).
    vmu = v.mean(dim=2, keepdim=True)
    vs = v - vmu
    sv, wv, sv_eff = value_scales(vs, tp)
    v_scales_view(bufs[3])[...] = wv.numpy()
    safe_v = torch.where(sv_eff > 0, sv_eff, torch.ones_like(sv_eff))
    v8 = _to_int8(vs / safe_v)
    vb[:, :, :frames] = torch.where(sv_eff > 0, v8, torch.zeros_like(v8))
    del out
    return PackedLayer(
        inputs=bufs[:4],
        output=bufs[4],
        sv=sv.contiguous(),
        vmu=vmu.squeeze(2).contiguous(),
        frames=int(frames),
    )


def unpack_output(packed: PackedLayer, out_buffer: np.ndarray) -> torch.Tensor:
    """The kernel's int16 output -> float32 `[B, H, T, 64]` (SPEC.md §5, dequantization)."""
    expected = packed.output.shape
    out = np.asarray(out_buffer)
    if out.dtype != np.int16:
        raise TypeError(f"kernel output must be int16, got {out.dtype}")
    if out.shape != expected:
        out = out.reshape(expected)
    with torch_single_thread():
        raw = torch.from_numpy(np.ascontiguousarray(out[:, :, : packed.frames]))
        scale = (packed.sv / OUT_FRAC).unsqueeze(2)
        return raw.to(torch.float32) * scale + packed.vmu.unsqueeze(2)

