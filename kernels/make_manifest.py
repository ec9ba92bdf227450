#!/usr/bin/env python3
"""Write manifest.json for one built attention kernel (xclbin + instruction stream).

The NPU runtime refuses an artifact whose manifest disagrees with the package
it runs in (amanuensis_npu.npu.runtime.check_artifact): target device, SPEC
version, buffer order and byte sizes, and the sha256 of both files. So the
buffer list here is never typed by hand: it is computed from
`amanuensis_npu.npu.quantization.buffer_layout(batch)`, the same function the
adapters and the runtime use, and the tiling is read from design.py, the
program that produced the artifact. Nothing can drift without the runtime
noticing.

Usage (the Makefile runs this after aiecc.py):

    python kernels/make_manifest.py --target npu1 --batch 1 --dir kernels/build/npu1/b1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DESIGN_PY = HERE / "attention" / "design.py"

XCLBIN_FILE = "final.xclbin"
INSTS_FILE = "insts.bin"
MANIFEST_FILE = "manifest.json"
KERNEL_NAME = "MLIR_AIE"  # the kernel name aiecc.py gives every NPU xclbin
MANIFEST_SCHEMA = 1


def _import_repo_package() -> None:
    """Make `amanuensis_npu` importable from a source checkout that is not pip-installed."""
    try:
        import amanuensis_npu  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO))


def load_design(path: Path = DESIGN_PY) -> ModuleType:
    """design.py as a module; it imports without mlir-aie (IRON is only needed to emit MLIR)."""
    spec = importlib.util.spec_from_file_location("amanuensis_attention_design", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def count_insts_words(path: Path) -> int:
    """Instruction count in 32-bit words, as XRT's kernel call needs it.

    aiecc.py writes a binary file of little-endian words; older flows wrote
    one hex word per line. Both are accepted, anything else is an error.
    """
    raw = path.read_bytes()
    try:
        tokens = raw.decode("ascii").split()
        if tokens and all(len(t) <= 10 for t in tokens):
            for token in tokens:
                int(token, 16)
            return len(tokens)
    except (UnicodeDecodeError, ValueError):
        pass
    if len(raw) % 4:
        raise ValueError(f"{path}: {len(raw)} bytes is not a whole number of 32-bit words")
    return len(raw) // 4


def buffer_entries(batch: int, heads: int | None = None) -> list[dict[str, Any]]:
    """The kernel's data buffers in argument order, straight from the adapters' layout."""
    _import_repo_package()
    import numpy as np

    from amanuensis_npu.npu.quantization import HEADS, buffer_layout

    entries = []
    for index, spec in enumerate(buffer_layout(batch, heads=heads or HEADS)):
        entries.append(
            {
                "index": index,
                "group_id": 3 + index,  # kernel argument 3 + i in the XRT call
                "name": spec.name,
                "dtype": str(np.dtype(spec.dtype)),
                "shape": [int(d) for d in spec.shape],
                "nbytes": int(spec.nbytes),
                "direction": spec.direction,
            }
        )
    return entries


def spec_version() -> str:
    _import_repo_package()
    from amanuensis_npu.npu import quantization

    return str(quantization.SPEC_VERSION)


def _toolchain() -> dict[str, str]:
    """Versions of what built the artifact, when they can be read (informational only)."""
    info = {"python": platform.python_version()}
    try:
        from importlib.metadata import PackageNotFoundError, version

        for dist in ("mlir_aie", "mlir-aie", "llvm-aie"):
            try:
                info[dist] = version(dist)
            except PackageNotFoundError:
                continue
    except ImportError:  # pragma: no cover
        pass
    return info


def build_manifest(
    target: str,
    batch: int,
    directory: Path,
    *,
    xclbin: str = XCLBIN_FILE,
    insts: str = INSTS_FILE,
    design: ModuleType | None = None,
    extra: dict[str, Any] | None = None,
    heads: int | None = None,
) -> dict[str, Any]:
    """The manifest for the artifacts in `directory` (built for `heads` heads, default
    design.H); raises if one is missing or empty."""
    design = design or load_design()
    heads = heads or design.H
    config = design.design_config(target, batch, heads)
    files = {name: directory / name for name in (xclbin, insts)}
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: build it first (make -C kernels)")
        if path.stat().st_size == 0:
            raise ValueError(f"{path} is empty")
    buffers = buffer_entries(batch, heads)
    declared = [(b["name"], b["nbytes"]) for b in buffers]
    designed = [(b["name"], b["nbytes"]) for b in design.runtime_buffers(batch, heads)]
    if declared != designed:
        raise ValueError(
            f"design.py's runtime sequence {designed} differs from buffer_layout({batch}) "
            f"{declared}; rebuild from the current sources"
        )
    from amanuensis_npu.core.models import sha256_file

    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "simulated": False,
        "target": target,
        "iron_device": config["device_class"],
        "spec_version": spec_version(),
        "kernel_name": KERNEL_NAME,
        "batch": batch,
        "batch_generic": False,
        "heads": heads,
        "xclbin": xclbin,
        "insts": insts,
        "insts_words": count_insts_words(files[insts]),
        "tiles": config["tiles"],
        "placement": config["placement"],
        "buffers": buffers,
        "sha256": {name: sha256_file(path) for name, path in files.items()},
        "bytes": {name: path.stat().st_size for name, path in files.items()},
        "toolchain": _toolchain(),
        "built": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if extra:
        manifest.update(extra)
    return manifest


def write_manifest(manifest: dict[str, Any], directory: Path) -> Path:
    path = directory / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, choices=["npu1", "npu2"])
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--heads", type=int, help="heads per layer the design was built for (8)")
    p.add_argument("--dir", type=Path, required=True, help="folder holding the artifacts")
    p.add_argument("--xclbin", default=XCLBIN_FILE)
    p.add_argument("--insts", default=INSTS_FILE)
    args = p.parse_args(argv)
    try:
        manifest = build_manifest(
            args.target,
            args.batch,
            args.dir,
            xclbin=args.xclbin,
            insts=args.insts,
            heads=args.heads,
        )
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"make_manifest: {exc}", file=sys.stderr)
        return 1
    path = write_manifest(manifest, args.dir)
    print(f"wrote {path} ({len(manifest['buffers'])} buffers, SPEC {manifest['spec_version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
