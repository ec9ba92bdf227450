#!/usr/bin/env python3
"""Run the AIE path of the attention kernel on the host and compare it with the scalar path.

    make -C kernels host-check              # synthetic cases and every speech layer
    make -C kernels host-check HOST_CHECK_ARGS="--no-speech --limit 40"   # a smoke run

A test instrument (tests/ use it too). The AIE path of attention.cc, the code Peano
compiles for the NPU, is compiled with the host g++ against the aie_api stand-in in
kernels/host/aie_api/ once per target (aie2: npu1, aie2p: npu2) and run through the
same host layer driver (iron_glue.cc, -DATTN_HOST_DRIVER) as the scalar path, on every
case the scalar path is tested on: tests/_numerics_helpers.py's synthetic integer and
float cases and every encoder layer of every 30 s window of tests/data/speech. The
outputs must be byte-identical to the scalar path's, and the scalar path's to the
emulator's. Prints `aie-path vs scalar: N cases byte-identical (aie2), M (aie2p)`; exits
1 on any difference, 2 when a tool is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

HOST = Path(__file__).resolve().parent
KERNELS = HOST.parent
REPO = KERNELS.parent
ATTENTION = KERNELS / "attention"
TESTS = REPO / "tests"
ARCHS = {"aie2": 20, "aie2p": 21}  # __AIE_ARCH__ of AIE-ML (npu1) and XDNA 2 (npu2)
SOURCES = [
    ATTENTION / "iron_glue.cc",
    ATTENTION / "attention.cc",
    ATTENTION / "attention_tables.h",
    HOST / "aie_api" / "aie.hpp",
]


class ToolMissing(RuntimeError):
    """A build tool the check needs is not installed."""


def _paths() -> None:
    for p in (str(REPO), str(TESTS)):
        if p not in sys.path:
            sys.path.insert(0, p)


EXPONENTS = ("lut", "nolut")  # kernels/Makefile EXP: lookup units, or no tables (-DATTN_EXP_NOLUT)


def cxx_command(arch: str, source: Path, output: Path, exp: str = "lut") -> list[str]:
    """The g++ command that builds the AIE path for `arch` and exponent `exp` against the stand-in.

    -O3 -march=native keeps the emulated vector code fast enough to run every speech
    layer; the arithmetic is integer, so the flags cannot change a result.
    """
    cxx = shutil.which(os.environ.get("CXX") or "g++")
    if cxx is None:
        raise ToolMissing("no C++ compiler (g++) on PATH")
    return [
        cxx,
        "-O3",
        "-march=native",
        "-std=c++20",
        "-Wall",
        "-Wextra",
        "-shared",
        "-fPIC",
        f"-D__AIE_ARCH__={ARCHS[arch]}",
        "-DATTN_HOST_DRIVER",
        *(["-DATTN_EXP_NOLUT"] if exp == "nolut" else []),
        "-I",
        str(HOST),
        "-I",
        str(ATTENTION),
        str(source),
        "-o",
        str(output),
    ]


def build(arch: str, cache: Path | None = None, exp: str = "lut") -> Path:
    """Compile the AIE path for `arch` and `exp`; cached by the sha256 of sources and command."""
    _paths()
    from amanuensis_npu.core.models import cache_dir

    probe = cxx_command(arch, ATTENTION / "iron_glue.cc", Path("out.so"), exp)
    h = hashlib.sha256(" ".join([Path(probe[0]).name, *probe[1:-3]]).encode())
    for src in SOURCES:
        h.update(src.read_bytes())
    out_dir = (cache or cache_dir() / "kernel-host") / f"aie-{arch}-{exp}-{h.hexdigest()[:24]}"
    lib = out_dir / "libattention-aie.so"
    if lib.is_file():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=out_dir)
    os.close(fd)
    proc = subprocess.run(
        cxx_command(arch, ATTENTION / "iron_glue.cc", Path(tmp), exp),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        os.unlink(tmp)
        raise RuntimeError(f"compiling the AIE path for {arch} failed:\n{proc.stderr[-4000:]}")
    os.replace(tmp, lib)
    return lib


def load(arch: str, exp: str = "lut"):
    """The AIE path for `arch` and `exp` as a HostKernel (the scalar path's ctypes wrapper)."""
    _paths()
    from amanuensis_npu.npu.host_kernel import HostKernel

    return HostKernel(build(arch, exp=exp))


def run(kernel, buffers: list[np.ndarray]) -> np.ndarray:
    """One layer through `kernel`; the output starts poisoned, so every element must be written."""
    out = np.full_like(buffers[4], 0x5A5A)
    kernel.run_layer([*buffers[:4], out], buffers[0].shape[0])
    return out


def synthetic_cases() -> Iterator[tuple[str, list[np.ndarray]]]:
    """Every synthetic case of tests/test_numerics.py, as (label, buffers)."""
    _paths()
    import _numerics_helpers as nh

    for index in range(len(nh.CASES)):
        yield nh.integer_case(index)
    for scale, frames, batch in nh.FLOAT_CASES:
        yield (
            f"float scale {scale} frames {frames} batch {batch}",
            nh.float_case_packed(scale, frames, batch).buffers,
        )


WHISPER_HEADS = (6, 8, 12, 20)  # tiny, base, small, large: the head counts the check covers
HEAD_CASE_FRAMES = 200  # 4 key tiles, the last one partial: cheap for 20 heads


def head_count_cases(
    heads: tuple[int, ...] = WHISPER_HEADS, frames: int = HEAD_CASE_FRAMES
) -> Iterator[tuple[str, list[np.ndarray]]]:
    """One layer per Whisper head count, each head with its own scale and key offset.

    The head count only changes how the layer driver walks (batch, head) pairs, so the
    frames are few (the per-head arithmetic is covered at 1500 frames by the other
    cases); distinct heads make a head read or written at another's offset show.
    """
    _paths()
    import torch

    from amanuensis_npu.npu import quantization as qz

    for h in heads:
        g = torch.Generator().manual_seed(2400 + h)
        scale = torch.linspace(0.3, 4.0, h).reshape(1, h, 1, 1)
        q = torch.randn(1, h, frames, 64, generator=g) * scale
        offset = torch.randn(1, h, 1, 64, generator=g)
        k = torch.randn(1, h, frames, 64, generator=g) * scale + offset
        v = torch.randn(1, h, frames, 64, generator=g)
        yield f"{h} heads frames {frames}", qz.pack_layer(q, k, v).buffers


def speech_cases() -> Iterator[tuple[str, list[np.ndarray]]]:
    """Every encoder layer of every 30 s window of the shared speech, packed."""
    _paths()
    import _numerics_helpers as nh
    from conftest import CLIPS

    from amanuensis_npu.npu import quantization as qz

    for name, layer, q, k, v in nh.SpeechLayers(nh.speech_windows(CLIPS)):
        yield f"{name} layer {layer}", qz.pack_layer(q, k, v).buffers


def first_difference(got: np.ndarray, want: np.ndarray) -> str:
    diff = np.argwhere(got != want)
    at = tuple(int(x) for x in diff[0])
    return f"{len(diff)} elements differ, first at {at}: {got[at]} vs {want[at]}"


def check(
    cases: Iterator[tuple[str, list[np.ndarray]]],
    targets: list[str],
    reference: Callable[[list[np.ndarray]], np.ndarray] | None = None,
    log: Callable[[str], None] = print,
    exp: str = "lut",
) -> dict[str, object]:
    """Run every case through the scalar path (or `reference`) and the AIE path of each target.

    Returns the counts of byte-identical cases per target and for the scalar path against
    the emulator, and the list of differences (label, what, detail).
    """
    _paths()
    from amanuensis_npu.npu import emulator as emu
    from amanuensis_npu.npu.host_kernel import get_host_kernel

    kernels = {arch: load(arch, exp) for arch in targets}
    scalar = get_host_kernel() if reference is None else None
    same = dict.fromkeys(targets, 0)
    scalar_ok = 0
    total = 0
    failures: list[tuple[str, str, str]] = []
    for label, bufs in cases:
        total += 1
        if total % 50 == 0:
            log(f"host-check: {total} cases run, {len(failures)} differences so far")
        if scalar is not None:
            want = run(scalar, bufs)
            emulated = emu.emulate_layer(bufs[:4])
            if np.array_equal(want, emulated):
                scalar_ok += 1
            else:
                failures.append((label, "scalar vs emulator", first_difference(want, emulated)))
        else:
            want = reference(bufs)
        for arch, kernel in kernels.items():
            got = run(kernel, bufs)
            if np.array_equal(got, want):
                same[arch] += 1
            else:
                what = f"aie-path ({arch}, exponent {exp}) vs scalar"
                failures.append((label, what, first_difference(got, want)))
    for label, what, detail in failures[:20]:
        log(f"DIFFERENT {what}: {label}: {detail}")
    return {"total": total, "same": same, "scalar_vs_emulator": scalar_ok, "failures": failures}


def summary(result: dict[str, object]) -> str:
    """`aie-path vs scalar: N cases byte-identical (aie2), M (aie2p)`."""
    counts = [f"{n} ({arch})" for arch, n in result["same"].items()]
    first = counts[0].replace(" (", " cases byte-identical (", 1)
    return "aie-path vs scalar: " + ", ".join([first, *counts[1:]])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-speech", action="store_true", help="synthetic cases only (quick)")
    p.add_argument("--targets", default="aie2,aie2p", help="comma-separated: aie2, aie2p")
    p.add_argument("--limit", type=int, default=0, help="only the first N cases (a smoke run)")
    p.add_argument(
        "--heads",
        default=",".join(map(str, WHISPER_HEADS)),
        help="head counts of the per-size cases, comma-separated ('' for none)",
    )
    p.add_argument(
        "--exp", choices=EXPONENTS, default="lut", help="the exponent build (kernels/Makefile EXP)"
    )
    args = p.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    if any(t not in ARCHS for t in targets):
        print(f"host-check: unknown target in {args.targets!r}; use aie2, aie2p", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        for arch in targets:
            build(arch, exp=args.exp)
        heads = tuple(int(h) for h in args.heads.split(",") if h)
        cases = _chain(head_count_cases(heads), synthetic_cases())
        if not args.no_speech:
            cases = _chain(cases, speech_cases())
        if args.limit > 0:
            cases = itertools.islice(cases, args.limit)
        result = check(cases, targets, exp=args.exp)
    except ToolMissing as exc:
        print(f"host-check: {exc}", file=sys.stderr)
        return 2
    print(f"exponent: {args.exp}")
    print(f"{result['total']} cases")
    print(f"scalar vs emulator: {result['scalar_vs_emulator']} cases byte-identical")
    print(summary(result))
    print(f"host-check: {time.perf_counter() - t0:.0f} s")
    return 1 if result["failures"] else 0


def _chain(*iterators: Iterator) -> Iterator:
    for it in iterators:
        yield from it


if __name__ == "__main__":
    sys.exit(main())
