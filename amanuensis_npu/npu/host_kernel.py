"""The attention kernel's portable scalar path, built with the host g++ and run via ctypes.

`kernels/attention/iron_glue.cc` (which includes `attention.cc`) compiled with
`-DATTN_SCALAR -DATTN_HOST_DRIVER` is the same arithmetic as the AIE kernel (SPEC.md),
walked over a whole layer through the entry points the IRON design's cores call, with
the objects the design builds. `get_host_kernel().run_layer(buffers, batch)` does what one
NPU dispatch does for one layer: it reads the input buffers in `buffer_layout` order
and fills the output buffer in place. The tests compare it byte for byte with the
emulator, and the simulated XRT device runs it in place of the NPU.

The shared library is cached per user, keyed by the sha256 of the kernel source, its
table header and the compiler command, under the package cache (`$AMANUENSIS_NPU_CACHE`,
else `$XDG_CACHE_HOME/amanuensis-npu`, else
`~/.cache/amanuensis-npu`) `/kernel-host/<hash>/libattention.so`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..core.models import cache_dir
from . import quantization as qz

SCALAR_MACRO = "ATTN_SCALAR"
SOURCE_NAME = "iron_glue.cc"  # includes attention.cc; exports the layer driver
SOURCES = (SOURCE_NAME, "attention.cc", "attention_tables.h")
CXX_FLAGS = ["-O2", "-shared", "-fPIC", "-std=c++17", f"-D{SCALAR_MACRO}", "-DATTN_HOST_DRIVER"]
LIB_NAME = "libattention.so"


class KernelBuildError(RuntimeError):
    """The host kernel could not be found, compiled or loaded (one-line reason)."""


def kernel_source_dir() -> Path:
    """Directory holding attention.cc: the installed package's copy, else the repo's.

    Looked up in order: `$AMANUENSIS_NPU_KERNEL_SRC`, `amanuensis_npu/kernels/attention`
    (package data), `<repo>/kernels/attention` (a source checkout).
    """
    package = Path(__file__).resolve().parents[1]
    candidates = []
    explicit = os.environ.get("AMANUENSIS_NPU_KERNEL_SRC")
    if explicit:
        candidates.append(Path(explicit).expanduser())
    candidates += [package / "kernels" / "attention", package.parent / "kernels" / "attention"]
    for c in candidates:
        if all((c / name).is_file() for name in SOURCES):
            return c
    raise KernelBuildError(
        "attention kernel source not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + ")"
    )


def compiler() -> str:
    cxx = os.environ.get("CXX") or "g++"
    path = shutil.which(cxx)
    if path is None:
        raise KernelBuildError(
            f"no C++ compiler: {cxx!r} is not on PATH (install g++, e.g. apt-get install g++)"
        )
    return path


def _digest(src: Path, cxx: str) -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((src / name).read_bytes())
    h.update(" ".join([os.path.basename(cxx), *CXX_FLAGS]).encode())
    return h.hexdigest()


def build_library(force: bool = False) -> Path:
    """Compile the scalar path if its cached library is missing; return the .so path."""
    src = kernel_source_dir()
    cxx = compiler()
    out_dir = cache_dir() / "kernel-host" / _digest(src, cxx)[:32]
    lib = out_dir / LIB_NAME
    if lib.is_file() and not force:
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=out_dir)
    os.close(fd)
    cmd = [cxx, *CXX_FLAGS, "-I", str(src), str(src / SOURCE_NAME), "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        os.unlink(tmp)
        raise KernelBuildError(f"could not run {cxx}: {exc}") from None
    if proc.returncode != 0:
        os.unlink(tmp)
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip())
        raise KernelBuildError(f"compiling {src / SOURCE_NAME} failed: {first[:300]}")
    os.replace(tmp, lib)  # atomic: concurrent builders agree on the result
    return lib


_I8 = ctypes.POINTER(ctypes.c_int8)
_I16 = ctypes.POINTER(ctypes.c_int16)
_I32 = ctypes.POINTER(ctypes.c_int32)


class HostKernel:
    """The scalar kernel loaded from a shared library."""

    def __init__(self, path: Path) -> None:
        try:
            self.lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise KernelBuildError(f"could not load {path}: {exc}") from None
        self.path = path
        fn = self.lib.attn_layer
        fn.argtypes = [_I8, _I8, _I8, _I32, _I16] + [ctypes.c_int32] * 5
        fn.restype = ctypes.c_int32
        self._layer = fn
        self.lib.attn_spec_version.restype = ctypes.c_int32
        version = int(self.lib.attn_spec_version())
        if version != qz.SPEC_VERSION:
            raise KernelBuildError(
                f"{path} implements SPEC version {version}, the adapters need {qz.SPEC_VERSION}"
            )
        self.threads = max(1, min(os.cpu_count() or 1, 8))

    def run_layer(self, buffers: list[np.ndarray], batch: int) -> None:
        """One layer, as one NPU dispatch: buffers in `buffer_layout` order, output in place."""
        if len(buffers) != 5:
            raise ValueError(f"expected 5 buffers (q, k, v, rowp, out), got {len(buffers)}")
        q, k, v, rowp, out = buffers
        if out.ndim != 4 or out.shape[0] != batch:
            raise ValueError(f"out buffer shape {out.shape} does not hold batch {batch}")
        _, heads, tp, dim = out.shape
        expect = qz.buffer_layout(batch, tp, heads)
        for buf, spec in zip(buffers, expect, strict=True):
            if buf.dtype != np.dtype(spec.dtype) or buf.size * buf.itemsize != spec.nbytes:
                raise ValueError(
                    f"buffer {spec.name!r}: {buf.dtype} x {buf.size}, expected {spec.dtype} "
                    f"of {spec.nbytes} bytes"
                )
            if not buf.flags.c_contiguous:
                raise ValueError(f"buffer {spec.name!r} is not C-contiguous")
        if not out.flags.writeable:
            raise ValueError("output buffer is read-only")
        nbh = batch * heads
        args = (
            q.ctypes.data_as(_I8),
            k.ctypes.data_as(_I8),
            v.ctypes.data_as(_I8),
            rowp.ctypes.data_as(_I32),
            out.ctypes.data_as(_I16),
        )
        n_jobs = min(self.threads, nbh)
        bounds = [nbh * i // n_jobs for i in range(n_jobs + 1)]

        def job(i: int) -> int:
            return int(self._layer(*args, batch, heads, tp, bounds[i], bounds[i + 1]))

        if n_jobs == 1:
            codes = [job(0)]
        else:  # ctypes releases the GIL: heads run in parallel
            with ThreadPoolExecutor(n_jobs) as pool:
                codes = list(pool.map(job, range(n_jobs)))
        bad = [c for c in codes if c != 0]
        if bad:
            raise ValueError(f"attention kernel rejected the buffers (code {bad[0]}: bad header)")


_KERNEL: HostKernel | None = None
_KERNEL_LOCK = threading.Lock()


def get_host_kernel() -> HostKernel:
    """The compiled scalar kernel, built on first use and shared by the process."""
    global _KERNEL
    with _KERNEL_LOCK:
        if _KERNEL is None:
            _KERNEL = HostKernel(build_library())
        return _KERNEL
