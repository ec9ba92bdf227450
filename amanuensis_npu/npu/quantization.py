"""Quantize/dequantize adapters between float attention and the NPU kernel's buffers.

`kernels/attention/SPEC.md` is the contract; section numbers below refer to it. The
same functions serve the NPU runtime and the emulator, so both see identical integer
inputs and dequantize identically:

- `pack_layer(q, k, v)`: float32 `[B, H, T, 64]` -> the kernel's five host buffers
  (`q` int8 query tiles, `k` and `v` records of an int8 tile in mmul block order with
  its int16 scales, the `rowp` header and per-row exponent multipliers, and a zeroed
  `out`), plus the per-channel float metadata that dequantization needs (it never goes
  to the device). The host owns the layout: the device only loads whole blocks.
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

SPEC_VERSION = 5

HEAD_DIM = 64
HEADS = 8
FRAMES = 1500
KEY_TILE = 64
Q_TILE = 32  # query rows per tile (one core's work item)
V_SUB = 32  # keys per V scale sub-tile (SPEC v4 on, §3.4)
HEADER_WORDS = 16
BLOCK = 8  # the host lays Q, Kᵀ and V out in 8 x 8 blocks (SPEC v5, §2)
TILE_BYTES = KEY_TILE * HEAD_DIM  # one int8 64 x 64 tile, 4096
SCALES_OFFSET = TILE_BYTES  # a record's int16 scales follow its tile
RECORD_BYTES = TILE_BYTES + 2 * (KEY_TILE // V_SUB) * HEAD_DIM  # 4352: tile + 256 B of scales

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
    """Words of one head's `rowp` (§2): the header, then one word per query row."""
    return HEADER_WORDS + tp


def to_blocks(a: np.ndarray) -> np.ndarray:
    """`[..., R, C]` -> `[..., R/8, C/8, 8, 8]`: 8 x 8 blocks in row-major block order,
    row-major inside a block (SPEC §2). The device loads whole `aie::mmul` operand blocks
    from this order, so the host owns it and no core rearranges bytes."""
    *lead, r, c = a.shape
    b = a.reshape(*lead, r // BLOCK, BLOCK, c // BLOCK, BLOCK)
    return np.ascontiguousarray(np.moveaxis(b, -3, -2))


def from_blocks(b: np.ndarray) -> np.ndarray:
    """The inverse of `to_blocks`: `[..., R/8, C/8, 8, 8]` -> `[..., R, C]`."""
    *lead, rb, cb, _, _ = b.shape
    return np.ascontiguousarray(np.moveaxis(b, -2, -3)).reshape(*lead, rb * BLOCK, cb * BLOCK)


def query_rows(qbuf: np.ndarray) -> np.ndarray:
    """`q` buffer `[B, H, TP/32, 2048]` -> int8 `[B, H, TP, 64]` (a copy)."""
    b, h, nt, _ = qbuf.shape
    tiles = qbuf.reshape(b, h, nt, Q_TILE // BLOCK, HEAD_DIM // BLOCK, BLOCK, BLOCK)
    return from_blocks(tiles).reshape(b, h, nt * Q_TILE, HEAD_DIM)


def key_rows(kbuf: np.ndarray) -> np.ndarray:
    """`k` buffer `[B, H, TP/64, 4352]` -> int8 keys `[B, H, TP, 64]` (a copy, key-major)."""
    b, h, nt, _ = kbuf.shape
    kt = from_blocks(kbuf[..., :TILE_BYTES].reshape(b, h, nt, 8, 8, BLOCK, BLOCK))
    return np.ascontiguousarray(kt.swapaxes(-1, -2)).reshape(b, h, nt * KEY_TILE, HEAD_DIM)


def value_rows(vbuf: np.ndarray) -> np.ndarray:
    """`v` buffer `[B, H, TP/64, 4352]` -> int8 values `[B, H, TP, 64]` (a copy)."""
    b, h, nt, _ = vbuf.shape
    vt = from_blocks(vbuf[..., :TILE_BYTES].reshape(b, h, nt, 8, 8, BLOCK, BLOCK))
    return vt.reshape(b, h, nt * KEY_TILE, HEAD_DIM)


def key_scales_view(kbuf: np.ndarray) -> np.ndarray:
    """The `kq` int16 entries of the `k` records, `[B, H, TP/64, 64]` (one per key); a view
    (writable if `kbuf` is). Little-endian int16 at bytes 4096..4223 of each record."""
    return _record_int16(kbuf, SCALES_OFFSET, KEY_TILE).reshape(*kbuf.shape[:-1], KEY_TILE)


def v_scales_view(vbuf: np.ndarray) -> np.ndarray:
    """The `wv` int16 entries of the `v` records, `[B, H, TP/64, 2, 64]` (sub-tile, channel);
    a view. Bytes 4096..4351 of each record."""
    flat = _record_int16(vbuf, SCALES_OFFSET, 2 * HEAD_DIM)
    return flat.reshape(*vbuf.shape[:-1], KEY_TILE // V_SUB, HEAD_DIM)


def row_words(rowp: np.ndarray) -> np.ndarray:
    """The per-row words `mult | sh << 16` of `rowp [B, H, 16 + TP]`: `[B, H, TP]`, a view."""
    return rowp[..., HEADER_WORDS:]


def _record_int16(buf: np.ndarray, offset: int, count: int) -> np.ndarray:
    if buf.dtype != np.int8 or buf.shape[-1] != RECORD_BYTES or not buf.flags.c_contiguous:
        raise TypeError(f"expected a C-contiguous int8 record buffer [..., {RECORD_BYTES}]")
    return buf[..., offset : offset + 2 * count].view(np.int16)


def assemble(
    q8: np.ndarray,
    k8: np.ndarray,
    v8: np.ndarray,
    words: np.ndarray,
    kq: np.ndarray,
    wv: np.ndarray,
    frames: int,
) -> list[np.ndarray]:
    """The five kernel buffers (SPEC §2) from the integer quantities of §3.

    `q8, k8, v8 [B, H, TP, 64]` (row-major, zero past the last frame), `words [B, H, TP]`
    (`mult | sh << 16`), `kq [B, H, TP]`, `wv [B, H, TP/32, 64]`. One function lays out
    every buffer, so the adapters and the tests' hand-made buffers cannot disagree on it.
    """
    batch, heads, tp, dim = q8.shape
    specs = buffer_layout(batch, tp, heads)
    qb, kb, vb, rowp, out = (np.zeros(s.shape, dtype=s.dtype) for s in specs)
    nq, nk = tp // Q_TILE, tp // KEY_TILE
    qb[...] = to_blocks(np.asarray(q8, np.int8).reshape(batch, heads, nq, Q_TILE, dim)).reshape(
        qb.shape
    )
    kt = np.asarray(k8, np.int8).reshape(batch, heads, nk, KEY_TILE, dim).swapaxes(-1, -2)
    kb[..., :TILE_BYTES] = to_blocks(kt).reshape(batch, heads, nk, TILE_BYTES)
    vt = np.asarray(v8, np.int8).reshape(batch, heads, nk, KEY_TILE, dim)
    vb[..., :TILE_BYTES] = to_blocks(vt).reshape(batch, heads, nk, TILE_BYTES)
    key_scales_view(kb)[...] = np.asarray(kq).reshape(batch, heads, nk, KEY_TILE)
    v_scales_view(vb)[...] = np.asarray(wv).reshape(batch, heads, nk, KEY_TILE // V_SUB, dim)
    rowp[..., 0] = SPEC_VERSION
    rowp[..., 1] = frames
    rowp[..., 2] = tp
    row_words(rowp)[...] = words
    return [qb, kb, vb, rowp, out]


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
    records = (batch, heads, tp // KEY_TILE, RECORD_BYTES)  # one record per key tile
    specs = [
        ("q", "int8", (batch, heads, tp // Q_TILE, Q_TILE * HEAD_DIM), "in"),
        ("k", "int8", records, "in"),
        ("v", "int8", records, "in"),
        ("rowp", "int32", (batch, heads, rowp_words(tp)), "in"),
        ("out", "int16", (batch, heads, tp, HEAD_DIM), "out"),
    ]
    return [
        BufferSpec(name, dtype, tuple(shape), int(np.prod(shape)) * np.dtype(dtype).itemsize, d)
        for name, dtype, shape, d in specs
    ]


@dataclass
class PackedLayer:
    """The kernel buffers for one layer and what the host needs to dequantize.

    `inputs` are C-contiguous numpy arrays in argument order (`q`, `k`, `v`, `rowp`;
    laid out as SPEC.md §2 says: `query_rows`, `key_rows`, `value_rows` read them back);
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

    # Q and K rotated by H: scores unchanged, outlier channels spread out (§3.0).
    q = q @ _H64
    k = k @ _H64
    # K: smoothing (per-channel mean), per-key scale relative to the head's largest (§3.1).
    ks = k - k.mean(dim=2, keepdim=True)
    skmax, kq, sk_eff = key_scales(ks)
    safe = torch.where(kq > 0, sk_eff, torch.ones_like(sk_eff))
    k8 = torch.zeros(batch, heads, tp, HEAD_DIM, dtype=torch.int8)
    k8[:, :, :frames] = _to_int8(ks / safe.unsqueeze(-1))
    kq_all = torch.zeros(batch, heads, tp, dtype=torch.int64)
    kq_all[:, :, :frames] = kq
    # Q: fold skmax, int8 per-row scale on the exponent grid (§3.2).
    qf = q * skmax.view(batch, heads, 1, 1)
    mult, sh = row_multipliers(_abs_max(qf, dim=3))
    c = mult.to(torch.float64) * torch.pow(2.0, -sh.to(torch.float64))
    inv = torch.where(mult > 0, K2 / torch.where(mult > 0, c, torch.ones_like(c)), 0.0)
    q8 = torch.zeros(batch, heads, tp, HEAD_DIM, dtype=torch.int8)
    q8[:, :, :frames] = _to_int8(qf * inv.to(torch.float32).unsqueeze(-1))
    words = torch.zeros(batch, heads, tp, dtype=torch.int32)
    words[:, :, :frames] = (mult | (sh << 16)).to(torch.int32)
    # V: smoothing, per-channel scale with a relative weight per 32-key sub-tile (§3.4).
    vmu = v.mean(dim=2, keepdim=True)
    vs = v - vmu
    sv, wv, sv_eff = value_scales(vs, tp)
    safe_v = torch.where(sv_eff > 0, sv_eff, torch.ones_like(sv_eff))
    v8 = torch.zeros(batch, heads, tp, HEAD_DIM, dtype=torch.int8)
    v8q = _to_int8(vs / safe_v)
    v8[:, :, :frames] = torch.where(sv_eff > 0, v8q, torch.zeros_like(v8q))
    bufs = assemble(
        q8.numpy(), k8.numpy(), v8.numpy(), words.numpy(), kq_all.numpy(), wv.numpy(), frames
    )
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
