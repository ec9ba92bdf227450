"""Bit-exact emulation of the NPU attention kernel (kernels/attention/SPEC.md), vectorised.

`emulate_layer(packed)` takes the kernel's own host buffers (from
`quantization.pack_layer`) and returns the int16 output buffer the kernel would
write, byte for byte. `EmulatorAttention` (`get_backend("emulator")`) wraps it as an
attention backend: pack -> emulate -> unpack, exactly the NPU's data path.

Every integer of the kernel is reproduced exactly with float32 tensor arithmetic where
SPEC.md §7 shows that float32 is exact (all partial sums are integers below 2^24),
with float64 for the per-key rescaled scores (multiples of 2^-14 below 2^34) and the
per-sub-tile P·V sums (integers below 2^39), and with int64 where neither is enough.
Pass 2's probabilities come from a table of `EXP2N(t)` for every exponent `t` the
kernel can produce (57,345 entries), built from the integer formula of §4.1 once per
process. The loop runs over (head, query block)
chunks sized for the cache; all keys of a chunk are handled at once, since the
two-pass softmax has no order-dependent rescaling.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..attention import AttentionBackend
from . import quantization as qz

# s' = floor(s kq / 2^14 + 1/2) by float rounding: see emulate_layer.
_MAGIC = 1.5 * float(1 << 23)
_HALF_ULP = 2.0**-15

# ----------------------------------------------------------------------------- tables


def exp_segment_table() -> np.ndarray:
    """`E[x] = rne(2^22 * 2^(-x/128))`, x = 0..128 (SPEC.md §4.1), int64."""
    x = np.arange(129, dtype=np.float64)
    return np.rint(np.ldexp(np.exp2(-x / 128.0), 22)).astype(np.int64)


def reciprocal_seed_table() -> np.ndarray:
    """`R[u] = rne(2^37 / (128 + 2u + 1))`, u = 0..63 (SPEC.md §5), int64."""
    u = np.arange(64, dtype=np.float64)
    return np.rint(np.ldexp(1.0, 37) / (129.0 + 2.0 * u)).astype(np.int64)


def exp2n(t: np.ndarray) -> np.ndarray:
    """`EXP2N(t)` of SPEC.md §4.1 for an int64 array of exponents `t >= 0`."""
    t = np.asarray(t, dtype=np.int64)
    e = exp_segment_table()
    g = e[:-1] - e[1:]
    tc = np.minimum(t, qz.T_ZERO - 1)
    n = tc >> qz.FRAC_BITS
    f = tc & ((1 << qz.FRAC_BITS) - 1)
    x = f >> 5
    r = f & 31
    y = e[x] - ((g[x] * r + 16) >> 5)
    p = (y * (np.int64(1) << (13 - n)) + (1 << 21)) >> 22
    return np.where(t >= qz.T_ZERO, 0, p)


_TABLE_LOCK = threading.Lock()
_P_TABLE: torch.Tensor | None = None


def p_table() -> torch.Tensor:
    """`EXP2N(t)` for t = 0..T_ZERO as float32 (exact: p <= 8192).

    The last entry stands for every `t >= T_ZERO` (p = 0).
    """
    global _P_TABLE
    with _TABLE_LOCK:
        if _P_TABLE is None:
            p = exp2n(np.arange(qz.T_ZERO + 1, dtype=np.int64))
            _P_TABLE = torch.from_numpy(p.astype(np.float32))
        return _P_TABLE


def normalise(acc: torch.Tensor, lsum: torch.Tensor) -> torch.Tensor:
    """SPEC.md §5: int64 `acc [..., 64]`, row sums `lsum [...]` -> int16 `round(256 acc / l)`."""
    seeds = torch.from_numpy(reciprocal_seed_table())
    lsum = lsum.to(torch.int64)
    _, e = torch.frexp(lsum.to(torch.float64))
    k = e.to(torch.int64) - 1  # floor(log2(l)), exact for l < 2^53
    x = lsum << (30 - k)
    y = seeds[(x >> 24) - 64]
    one = 1 << 31
    y = (y * (one - ((x * y) >> 30))) >> 30
    y = (y * (one - ((x * y) >> 30))) >> 30
    shift = (22 + k).unsqueeze(-1)
    out = (acc * y.unsqueeze(-1) + (torch.ones_like(shift) << (shift - 1))) >> shift
    return out.clamp_(-32768, 32767).to(torch.int16)


# ----------------------------------------------------------------------------- the kernel


def check_header(rowp: np.ndarray, tp: int) -> int:
    """Validate the `rowp` headers and return `n_frames` (one value for the whole call)."""
    head = rowp[..., : qz.HEADER_WORDS].reshape(-1, qz.HEADER_WORDS)
    if not (head[:, 0] == qz.SPEC_VERSION).all():
        raise ValueError(f"rowp header: SPEC version {head[0, 0]}, expected {qz.SPEC_VERSION}")
    n = int(head[0, 1])
    if not (head[:, 1] == n).all() or not (head[:, 2] == tp).all() or not 1 <= n <= tp:
        raise ValueError(f"rowp header: inconsistent n_frames/TP ({head[0, 1]}, {head[0, 2]})")
    return n


def emulate_layer(
    packed: qz.PackedLayer | list[np.ndarray], rows_per_chunk: int = 128
) -> np.ndarray:
    """Run SPEC.md §4-§5 on the kernel's input buffers; returns the int16 `out` buffer.

    Per chunk of query rows of one head: (1) `s = q8 · k8ᵀ` as an exact int8 x int8 ->
    int32 product, then `1.5 * 2^23 + 2^-15 + s * kq / 2^14` in float64 (exact: a
    multiple of 2^-15 below 2^25), rounded to float32, whose unit step there makes it
    `1.5 * 2^23 + s'` with `s' = floor(s kq / 2^14 + 1/2)` (`s kq / 2^14` is a multiple
    of 2^-14, so `floor(x + 1/2) = rne(x + 2^-15)` and no tie occurs); (2)
    `t = min((max_j s' - s') * c, T_ZERO)` in float32, floored by the int32 cast: exact
    wherever `t < T_ZERO` (§7); (3) p from the table; (4) per 32-key sub-tile,
    `A = Σ p v8` as one batched product, float32 where every sub-tile's `Σ p |v8|` is
    below 2^24 and float64 otherwise (exact either way), then
    `O = Σ_g floor(A wv / 2^14 + 1/2)` in float64 (exact below 2^53); (5) §5 in
    int64. Masked keys (j >= n_frames) take no part in the max and get p = 0, which is
    what the kernel's masking amounts to.
    """
    bufs = packed.inputs if isinstance(packed, qz.PackedLayer) else list(packed)[:4]
    qbuf, kbuf, vbuf, rowp = bufs
    q_rows = qz.query_rows(qbuf)  # the host layout of §2 back to rows
    batch, heads, tp, dim = q_rows.shape
    n = check_header(rowp, tp)
    nbh = batch * heads
    groups = -(-n // qz.V_SUB)  # sub-tiles holding a valid key
    n32 = groups * qz.V_SUB
    q8 = torch.from_numpy(q_rows).reshape(nbh, tp, dim)
    k8 = torch.from_numpy(qz.key_rows(kbuf)).reshape(nbh, tp, dim)
    v8 = torch.from_numpy(qz.value_rows(vbuf)).reshape(nbh, tp, dim)
    words = torch.from_numpy(qz.row_words(rowp).astype(np.int64)).reshape(nbh, tp)
    kq = torch.from_numpy(qz.key_scales_view(kbuf).astype(np.int64)).reshape(nbh, tp)
    # wv / 2^14 as float64 (exact dyadics), [nbh, G, 1, 64]
    wv = torch.from_numpy(qz.v_scales_view(vbuf).astype(np.float64) / qz.WV_ONE)
    wv = wv.reshape(nbh, tp // qz.V_SUB, 1, dim)
    mult = words & 0xFFFF
    sh = (words >> 16) & 0xFF
    # c = mult * 2^-sh, exact in float32 (mult <= 511, sh <= 8).
    cm = (mult.to(torch.float64) * torch.pow(2.0, -sh.to(torch.float64))).to(torch.float32)
    ptab = p_table()
    out = np.empty((nbh, tp, dim), dtype=np.int16)
    rows = min(rows_per_chunk, tp)

    def head(bh: int) -> None:
        # Key-major throughout ([key, row]): every product and table lookup is contiguous.
        _single_threaded()
        keys = torch.zeros(n32, dim, dtype=torch.int8)
        keys[:n] = k8[bh, :n]
        qt = q8[bh].t().contiguous()  # [64, TP]
        kscale = torch.zeros(n32, 1, dtype=torch.float64)
        kscale[:n, 0] = kq[bh, :n].to(torch.float64) * (1.0 / qz.KQ_ONE)  # exact dyadics
        vgt = torch.zeros(groups, dim, qz.V_SUB)  # V per sub-tile, transposed
        vgt.copy_(v8[bh, :n32].reshape(groups, qz.V_SUB, dim).transpose(1, 2))
        vgt64 = vgt.to(torch.float64)
        # A sub-tile's float32 sums are exact while Σ p |v8| < 2^24 in it (every partial
        # sum is then an integer below 2^24, in any order); past that, float64.
        limit = float(1 << 24) / vgt.abs().amax(dim=(1, 2)).clamp_(min=1.0)
        w = wv[bh, :groups].transpose(1, 2).contiguous()  # [G, 64, 1], wv / 2^14
        s_buf = torch.empty(n32, rows, dtype=torch.float64)
        x_buf = torch.empty(n32, rows)
        idx_buf = torch.empty(n32 * rows, dtype=torch.int32)
        p_buf = torch.empty(n32 * rows)
        o_buf = torch.empty(groups, dim, rows, dtype=torch.float64)
        res = torch.empty(dim + 1, tp, dtype=torch.int64)
        for r0 in range(0, tp, rows):
            r1 = min(tp, r0 + rows)
            m = r1 - r0
            # 1.5 * 2^23 + 2^-15 + s kq / 2^14, exact; its float32 rounding (ulp 1 there,
            # never a tie) is 1.5 * 2^23 + floor(s kq / 2^14 + 1/2) = 1.5 * 2^23 + s'.
            s32 = torch._int_mm(keys, qt[:, r0:r1])  # sᵀ, exact int32 (|s| < 2^20)
            s64 = s_buf[:, :m]
            torch.mul(s32, kscale, out=s64).add_(_MAGIC + _HALF_ULP)
            x = x_buf[:, :m]
            x.copy_(s64)
            top = x[:n].amax(dim=0, keepdim=True)  # masked keys take no part
            torch.sub(top, x, out=x)  # e = m - s' (offsets cancel)
            x.mul_(cm[bh, r0:r1].unsqueeze(0)).clamp_(max=float(qz.T_ZERO))
            x[n:] = float(qz.T_ZERO)  # masked keys: p = 0
            idx = idx_buf[: n32 * m]
            idx.copy_(x.reshape(-1))  # floor: x >= 0
            p = torch.index_select(ptab, 0, idx, out=p_buf[: n32 * m])
            p = p.view(groups, qz.V_SUB, m)
            psum = p.sum(dim=1)  # [G, m], exact integers < 2^19
            if bool((psum < limit.unsqueeze(-1)).all()):
                a = torch.bmm(vgt, p)  # (Σ p v8)ᵀ per sub-tile, exact (< 2^24)
            else:
                a = torch.bmm(vgt64, p.to(torch.float64))  # exact below 2^53
            # O = Σ_g floor(A wv / 2^14 + 1/2): A wv / 2^14 < 2^39 exact in float64.
            o = o_buf[:, :, :m]
            o.copy_(a)
            o.mul_(w).add_(0.5).floor_()
            res[:dim, r0:r1] = o.sum(dim=0).to(torch.int64)
            res[dim, r0:r1] = psum.sum(dim=0).to(torch.int64)  # l < 2^24: exact in float32
        out[bh] = normalise(res[:dim].t(), res[dim]).numpy()

    if nbh == 1:
        _pool().submit(head, 0).result()
    else:
        list(_pool().map(head, range(nbh)))
    return out.reshape(batch, heads, tp, dim)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_LOCAL = threading.local()


def _pool() -> ThreadPoolExecutor:
    """Workers for the per-head loop (two: this project's machines have two cores).

    Each worker runs torch single-threaded: many small ops with intra-op threading spend
    most of their time at thread barriers, badly so on a loaded machine.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            workers = max(1, min(2, os.cpu_count() or 1))
            _POOL = ThreadPoolExecutor(workers, thread_name_prefix="amanuensis-emulator")
        return _POOL


def _single_threaded() -> None:
    if not getattr(_LOCAL, "single", False):
        torch.set_num_threads(1)  # thread-local: the caller's setting is untouched
        _LOCAL.single = True


class EmulatorAttention(AttentionBackend):
    """The NPU kernel's exact arithmetic on the CPU: pack -> emulate -> unpack."""

    name = "emulator"

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, layer: int | None = None
    ) -> torch.Tensor:
        packed = qz.pack_layer(q, k, v)
        out = emulate_layer(packed)
        return qz.unpack_output(packed, out).to(dtype=q.dtype, device=q.device)
