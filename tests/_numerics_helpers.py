"""Shared by the attention-numerics tests and `make -C kernels host-check`.

The kernel's cases live here, not in a test module, so that the host check of the AIE
path (kernels/host/host_check.py) runs exactly the buffers the scalar path is tested on:
the synthetic integer and float cases, and every layer of every speech window.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from amanuensis_npu.npu import quantization as qz


def recording_backend():
    """A CPU attention backend that keeps a copy of every layer's (layer, q, k, v)."""
    from amanuensis_npu.attention import AttentionBackend, cpu_attention

    class Recording(AttentionBackend):
        name = "recording"

        def __init__(self) -> None:
            super().__init__()
            self.records: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []

        def forward(self, q, k, v, *, layer=None):  # type: ignore[override]
            self.records.append((layer, q.detach().clone(), k.detach().clone(), v.detach().clone()))
            return cpu_attention(q, k, v)

    return Recording()


# ------------------------------------------------------------------------- build tools


def require_tool(name: str, why: str) -> str:
    """The path of build tool `name`; without it, skip with the reason, or fail in CI.

    A missing compiler must not let CI pass the byte-exactness tests by skipping them
    (issue 13): CI sets `CI=true`, and there a missing tool is a failure. Locally the
    tests may skip, saying what is missing.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed: {why}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: a missing build tool fails instead of skipping)")
        pytest.skip(message)
    return path


# ------------------------------------------------------------------------- speech


def speech_windows(clips: list[Path]) -> list[tuple[str, np.ndarray]]:
    """Log-mel features of every 30 s window of `clips`, as the encoder gets them.

    Two paddings reach the encoder in practice. faster-whisper's sequential path computes
    the log-mel of the audio and zero-fills the last window's features (`pad_or_trim`);
    whisper and whisperx pad the audio with silence before the log-mel
    (`padding=N_SAMPLES`). Every window is cut the faster-whisper way; each clip's last
    window, the only one where the two differ beyond the STFT's edge, is added a second
    time padded the whisperx way (named "...+audio-pad").
    """
    from faster_whisper import decode_audio
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    fe = FeatureExtractor(feature_size=80)
    out = []
    for clip in clips:
        audio = decode_audio(str(clip))
        features = fe(audio)
        content = max(features.shape[-1] - 1, 1)
        starts = list(range(0, content, 3000))
        for start in starts:
            name = f"{clip.parent.name}/{clip.name}@{start // 100}s"
            out.append((name, pad_or_trim(features[:, start : start + 3000])))
        padded = fe(audio, padding=160 * 3000)
        out.append((f"{name}+audio-pad", padded[:, starts[-1] : starts[-1] + 3000]))
    assert len(out) >= 2 * len(clips) + 1
    return out


class SpeechLayers:
    """(window name, layer, q, k, v) for every encoder layer of every 30 s speech window.

    A sequence computed a window at a time: holding every layer's float Q/K/V at once
    took 1.5 GB. Indexing re-runs the encoder on that one window (the last one is kept).
    """

    def __init__(self, windows) -> None:
        from amanuensis_npu.core.encoder import load_encoder

        self.windows = windows
        self.rec = recording_backend()
        self.encoder = load_encoder("base", attention=self.rec)
        self._last: tuple[int, list] | None = None

    def __len__(self) -> int:
        return 6 * len(self.windows)

    def window(self, w: int) -> list:
        if self._last is None or self._last[0] != w:
            name, mel = self.windows[w]
            self.rec.records.clear()
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)).unsqueeze(0)
                self.encoder(x)
            layers = [(name, int(layer), q, k, v) for layer, q, k, v in self.rec.records]
            self.rec.records.clear()
            assert len(layers) == 6, name
            self._last = (w, layers)
        return self._last[1]

    def __getitem__(self, i: int) -> tuple:
        i = i + len(self) if i < 0 else i
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.window(i // 6)[i % 6]

    def __iter__(self):
        for w in range(len(self.windows)):
            yield from self.window(w)


# ------------------------------------------------------------------------- synthetic cases


def make_buffers(
    rng: np.random.Generator,
    batch: int,
    heads: int,
    frames: int,
    kind: str,
    tp: int | None = None,
) -> list[np.ndarray]:
    """Integer kernel buffers built directly (not through pack_layer), for the extremes.

    Padded rows and keys (>= frames) hold garbage on purpose: the kernel must mask the
    keys, and computes the rows like any other.
    """
    tp = tp or qz.padded_frames(frames)
    shape = (batch, heads, tp, 64)
    qm = qz.Q_MAX
    if kind == "saturated":
        q = rng.choice([-qm, qm], size=shape)
        k = rng.choice([-127, 127], size=shape)
        v = rng.choice([-127, 127], size=shape)
    elif kind == "saturated_same":  # every score is +max, every value +127
        q = np.full(shape, qm)
        k = np.full(shape, 127)
        v = np.full(shape, 127)
    elif kind == "equal":  # all scores equal (keys all zero)
        q = rng.integers(-qm, qm + 1, size=shape)
        k = np.zeros(shape, dtype=np.int64)
        v = rng.integers(-127, 128, size=shape)
    elif kind == "onehot":
        q = np.zeros(shape, dtype=np.int64)
        k = np.zeros(shape, dtype=np.int64)
        idx_q = rng.integers(0, 64, size=shape[:3])
        idx_k = rng.integers(0, 64, size=shape[:3])
        np.put_along_axis(q, idx_q[..., None], qm, axis=3)
        np.put_along_axis(k, idx_k[..., None], 127, axis=3)
        v = rng.integers(-127, 128, size=shape)
    else:  # random
        q = rng.integers(-qm, qm + 1, size=shape)
        k = rng.integers(-127, 128, size=shape)
        v = rng.integers(-127, 128, size=shape)
    kwords = np.zeros((batch, heads, tp), dtype=np.int64)
    vwords = np.zeros((batch, heads, tp // qz.V_SUB, 64), dtype=np.int64)
    one = qz.KQ_ONE
    if kind in ("saturated", "saturated_same"):
        kwords[...] = one  # the largest |s * kq|
        vwords[...] = qz.WV_ONE  # the largest |A * wv|
    elif kind == "kq_half":  # s * 2^13: every odd s is a rounding tie of step 0
        kwords[...] = one // 2
        vwords[...] = qz.WV_ONE // 2  # A * 2^13: every odd A is a rounding tie of step 6
    elif kind == "kq_extremes":
        kwords[...] = rng.choice([0, 1, 2, one - 1, one], size=kwords.shape)
        vwords[...] = rng.choice([0, 1, 2, qz.WV_ONE - 1, qz.WV_ONE], size=vwords.shape)
    else:
        kwords[...] = rng.integers(0, one + 1, size=kwords.shape)
        vwords[...] = rng.integers(0, qz.WV_ONE + 1, size=vwords.shape)
    words_shape = (batch, heads, tp)
    if kind in ("saturated", "saturated_same", "big_mult"):
        mult = rng.integers(8, qz.MULT_MAX + 1, size=words_shape)
        sh = np.zeros(words_shape, dtype=np.int64)
        if kind != "big_mult":
            mult[..., ::2] = qz.MULT_MAX
    elif kind == "tiny":
        mult = np.full(words_shape, qz.MULT_GRID)
        sh = np.full(words_shape, qz.SH_MAX)
    else:
        mult = rng.integers(qz.MULT_GRID, 2 * qz.MULT_GRID, size=words_shape)
        sh = rng.integers(0, qz.SH_MAX + 1, size=words_shape)
    w = mult | (sh << 16)
    if kind == "zero_rows":
        w[..., ::3] = 0
    return qz.assemble(q, k, v, w.astype(np.int32), kwords, vwords, frames)


def float_case(rng: np.random.Generator, batch, heads, frames, scale, vscale=1.0):
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    q = torch.randn(batch, heads, frames, 64, generator=g) * scale
    k = torch.randn(batch, heads, frames, 64, generator=g) * scale + 0.5
    v = torch.randn(batch, heads, frames, 64, generator=g) * vscale
    return q, k, v


CASES: list[tuple[str, dict]] = []
for _i in range(80):
    CASES.append(
        ("random", {"batch": 1 + _i % 2, "heads": 1 + _i % 3, "frames": 1 + (37 * _i) % 700})
    )
for _kind in (
    "saturated",
    "saturated_same",
    "equal",
    "onehot",
    "tiny",
    "big_mult",
    "zero_rows",
    "kq_half",
    "kq_extremes",
):
    for _i in range(12):
        CASES.append(
            (
                _kind,
                {
                    "batch": 1,
                    "heads": 2,
                    "frames": [1, 2, 63, 64, 65, 100, 127, 128, 129, 200, 257, 300][_i],
                },
            )
        )
for _i in range(12):  # one valid key, whatever the padding holds
    CASES.append(("random", {"batch": 1, "heads": 2, "frames": 1, "tp": 64 * (1 + _i % 4)}))
for _frames in (31, 32, 33, 95, 96, 97):  # query tile edges (Q_TILE = 32 rows per work item)
    CASES.append(("random", {"batch": 2, "heads": 3, "frames": _frames}))
for _i in range(8):  # the device shape: 1500 frames, the tail tile holds 28 valid keys
    CASES.append(
        (
            ["random", "saturated", "equal", "onehot"][_i % 4],
            {"batch": 1, "heads": 8, "frames": 1500},
        )
    )
FLOAT_CASES = [
    (scale, frames, batch)
    for scale in (1e-4, 0.05, 1.0, 4.0, 30.0)
    for frames, batch in ((1, 1), (7, 2), (64, 1), (65, 1), (333, 2), (1500, 1))
]


def integer_case(index: int) -> tuple[str, list[np.ndarray]]:
    """Synthetic integer case `index` of CASES: (label, the five kernel buffers)."""
    kind, kw = CASES[index]
    rng = np.random.default_rng(1000 + index)
    bufs = make_buffers(rng, kw["batch"], kw["heads"], kw["frames"], kind, kw.get("tp"))
    return f"{kind} {kw}", bufs


def float_case_packed(scale: float, frames: int, batch: int) -> qz.PackedLayer:
    """Synthetic float case of FLOAT_CASES, packed by the adapters."""
    rng = np.random.default_rng(int(scale * 1e4) + frames)
    q, k, v = float_case(rng, batch, 8 if frames == 1500 else 3, frames, scale)
    return qz.pack_layer(q, k, v)
