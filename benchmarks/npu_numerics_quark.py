#!/usr/bin/env python3
"""AMD Quark's side of benchmarks/npu_numerics.py, run with the Python of Quark's own venv.

amd-quark pins onnx<=1.22, which the project's environment does not have, so this
file imports neither amanuensis_npu nor anything of the project: npu_numerics.py
starts it as a subprocess. It quantizes the exported encoder once with one of
Quark's named configs (BFP16, BF16, ...), then runs the quantized model with ONNX
Runtime on the CPU, with Quark's custom operators (block floating point is not an
ONNX type, so Quark emulates it with its own quantize-dequantize operators).

Protocol on stdin/stdout, one line each way: after quantizing it prints
`OK <what it did>`; then for every input line `<in.npy>\\t<out.npy>` it writes the
encoder output of in.npy ([1, 80, 3000] float32) to out.npy and prints `OK <seconds>`.
Anything else on stdout is an error line. Quark's own chatter goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np


class Windows:
    """Quark's calibration data reader: the .npy mel windows in a directory."""

    def __init__(self, folder: Path) -> None:
        self._it = iter(sorted(folder.glob("*.npy")))

    def get_next(self) -> dict[str, np.ndarray] | None:
        path = next(self._it, None)
        return None if path is None else {"mel": np.load(path)}


def quantize(model: Path, config_name: str, calib: Path, out: Path) -> str:
    from quark.onnx import ModelQuantizer
    from quark.onnx.quantization.config import Config, get_default_config

    config = Config(global_quant_config=get_default_config(config_name))
    t0 = time.perf_counter()
    ModelQuantizer(config).quantize_model(str(model), str(out), Windows(calib))
    return f"Quark config {config_name} quantized in {time.perf_counter() - t0:.0f} s"


def session(model: Path, threads: int):  # noqa: ANN201 - onnxruntime is in this venv only
    import onnxruntime as ort
    from quark.onnx import get_library_path

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.register_custom_ops_library(get_library_path("CPU"))
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--calib", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    reply = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import quark

            what = quantize(args.model, args.config, args.calib, args.out)
            sess = session(args.out, args.threads)
            version = getattr(quark, "__version__", "?")
            what += f" (amd-quark {version}); run by onnxruntime CPU with Quark's custom ops"
    except Exception as exc:  # noqa: BLE001 - the parent reports it as the row's failure
        print(f"ERROR {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=reply, flush=True)  # fmt: skip
        return 1
    print(f"OK {what}", file=reply, flush=True)
    for line in sys.stdin:
        src, dst = line.rstrip("\n").split("\t")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            out = sess.run(None, {"mel": np.load(src)})[0]
        np.save(dst, np.asarray(out, dtype=np.float32))
        print(f"OK {time.perf_counter() - t0:.3f}", file=reply, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
