"""Encoder self-attention on the AMD Ryzen AI NPU through XRT (pyxrt), with CPU fallback.

One kernel dispatch computes one encoder layer for a whole batch (all heads, all
query tiles); the tile loop runs on the device because a host loop over tiles
costs more in dispatch overhead than the attention itself (kernels/attention/SPEC.md).

The same code drives the real NPU and the simulated one: only the module that
provides ``xrt`` differs (XRT's ``pyxrt``, or `amanuensis_npu.npu.xrt_sim` when
``AMANUENSIS_NPU_XRT=sim``). A transcription never fails because of the NPU: any
failure computes that attention call on the CPU, logs one warning per distinct
reason and counts it in ``stats``; after ``AMANUENSIS_NPU_MAX_FAILURES``
(default 3) consecutive failures the device is disabled for the process.

Environment:

- ``AMANUENSIS_NPU_XRT``: unset/``auto`` (pyxrt from site-packages, else
  ``$XILINX_XRT/python``, else ``/opt/xilinx/xrt/python``), ``sim`` (simulated
  device, see `amanuensis_npu.npu.xrt_sim`, incl. ``AMANUENSIS_NPU_SIM_FAULTS``), or
  ``off`` (never use the NPU).
- ``AMANUENSIS_NPU_ARTIFACTS``: a directory searched first for kernel artifacts
  (manifest.json, final.xclbin, insts.bin) in ``<dir>/<target>/``, its per-batch
  folders ``<dir>/<target>/b<N>/`` (one per batch size an instruction stream was
  built for), or ``<dir>`` itself. Then ``$AMANUENSIS_NPU_CACHE`` (default
  ``$XDG_CACHE_HOME/amanuensis-npu``, i.e. ``~/.cache/amanuensis-npu``)
  ``/artifacts/<target>/``, then the package's ``amanuensis_npu/artifacts/<target>/``.
  ``<target>`` is ``npu1`` (Phoenix, Hawk Point) or ``npu2`` (Strix, Krackan).
  Simulated artifact sets live in ``<target>-sim/`` and are generated in the cache
  on demand. A batch with no artifact of its size is split into built sizes.
- ``AMANUENSIS_NPU_MAX_FAILURES`` (default 3), ``AMANUENSIS_NPU_TIMEOUT_MS``
  (per-run wait; default 10000 on hardware, 600000 in the simulation, whose
  "device" is a scalar host build of the kernel).
"""

from __future__ import annotations

import glob
import importlib
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ..attention import AttentionBackend, cpu_attention
from ..core.models import cache_dir, sha256_file

logger = logging.getLogger("amanuensis_npu")

KERNEL_NAME = "MLIR_AIE"
OPCODE_RUN = 3  # mlir-aie's NPU kernels: opcode 3 runs the instruction stream
INSTR_GROUP = 1  # group id of the instruction buffer argument
FIRST_DATA_ARG = 3  # data buffer i is kernel argument 3 + i
XCLBIN_FILE = "final.xclbin"
INSTS_FILE = "insts.bin"
MANIFEST_FILE = "manifest.json"
DEFAULT_MAX_FAILURES = 3
DEFAULT_TIMEOUT_MS = 10_000
DEFAULT_SIM_TIMEOUT_MS = 600_000
_XRT_LOCATIONS = ("$XILINX_XRT/python", "/opt/xilinx/xrt/python")
_BO_CACHE_SHAPES = 4  # batch sizes whose buffers stay allocated

# Device names: "RyzenAI-npu1" (Phoenix, Hawk Point), "RyzenAI-npu4/5/6" (Strix,
# Strix Halo, Krackan). Check npu2 names first: "npu1" is not a substring of them.
_NPU2_KEYS = ("npu4", "npu5", "npu6", "strix", "krackan")
_NPU1_KEYS = ("npu1", "phoenix", "hawk")
# PCI device ids of the AMD IPU/NPU functions, for probing without opening the device.
_PCI_TARGETS = {"0x1502": "npu1", "0x17f0": "npu2"}


class NPUError(RuntimeError):
    """A failure of the NPU path; its message is the fallback reason users see."""


class _Disabled(NPUError):
    """Another thread disabled the device while this call waited for it."""


# ----------------------------------------------------------------------- configuration


def xrt_mode() -> str:
    """'hardware', 'sim' or 'off', from AMANUENSIS_NPU_XRT."""
    value = os.environ.get("AMANUENSIS_NPU_XRT", "").strip().lower()
    if value in ("", "auto", "hw", "hardware", "pyxrt"):
        return "hardware"
    if value in ("sim", "simulated", "simulation"):
        return "sim"
    if value in ("off", "0", "none", "no", "false", "disable", "disabled"):
        return "off"
    raise ValueError(f"AMANUENSIS_NPU_XRT must be unset, 'sim' or 'off', got {value!r}")


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def max_failures() -> int:
    return _env_int("AMANUENSIS_NPU_MAX_FAILURES", DEFAULT_MAX_FAILURES, 1)


def timeout_ms() -> int:
    default = DEFAULT_SIM_TIMEOUT_MS if xrt_mode() == "sim" else DEFAULT_TIMEOUT_MS
    return _env_int("AMANUENSIS_NPU_TIMEOUT_MS", default, 1)


def package_artifacts_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "artifacts"


def artifact_roots() -> list[Path]:
    """Artifact search order: $AMANUENSIS_NPU_ARTIFACTS, the cache, the package data."""
    roots = []
    env = os.environ.get("AMANUENSIS_NPU_ARTIFACTS")
    if env:
        roots.append(Path(env).expanduser())
    roots.append(cache_dir() / "artifacts")
    roots.append(package_artifacts_dir())
    return roots


# ----------------------------------------------------------------------- pyxrt lookup

_xrt_cache: dict[str, tuple[ModuleType | None, str]] = {}
_xrt_lock = threading.Lock()


def load_xrt() -> tuple[ModuleType | None, str]:
    """The module to use as ``xrt`` and where it came from, or (None, why not)."""
    mode = xrt_mode()
    if mode == "off":
        return None, "the NPU is switched off (AMANUENSIS_NPU_XRT=off)"
    if mode == "sim":
        from . import xrt_sim

        return xrt_sim, f"simulated XRT ({xrt_sim.__name__}, AMANUENSIS_NPU_XRT=sim)"
    with _xrt_lock:
        if "hardware" not in _xrt_cache:
            _xrt_cache["hardware"] = _import_pyxrt()
        return _xrt_cache["hardware"]


def _import_pyxrt() -> tuple[ModuleType | None, str]:
    try:
        module = importlib.import_module("pyxrt")
        return module, f"pyxrt from {getattr(module, '__file__', '?')}"
    except ImportError as exc:
        first_error = str(exc)
    tried = []
    for location in _XRT_LOCATIONS:
        if location.startswith("$XILINX_XRT"):
            root = os.environ.get("XILINX_XRT")
            if not root:
                continue
            location = os.path.join(root, "python")
        tried.append(location)
        if not glob.glob(os.path.join(location, "pyxrt*")):
            continue
        sys.path.insert(0, location)
        try:
            module = importlib.import_module("pyxrt")
            return module, f"pyxrt from {getattr(module, '__file__', location)}"
        except ImportError as exc:  # e.g. built for another Python
            sys.path.remove(location)
            return None, f"pyxrt in {location} failed to import ({exc})"
    where = ", ".join(tried)
    if not os.environ.get("XILINX_XRT"):
        where += " ($XILINX_XRT unset)"
    reason = f"XRT Python bindings (pyxrt) not found ({first_error}; looked in {where})"
    if not device_nodes():
        reason += "; no NPU device node either (/dev/accel/accel* absent)"
    return None, reason


def device_nodes() -> list[str]:
    """The accel device nodes the amdxdna driver creates (empty without the driver)."""
    return sorted(glob.glob("/dev/accel/accel*"))


def target_from_name(name: str) -> str | None:
    """'npu1' or 'npu2' from an XRT device name, None for anything else."""
    lowered = name.lower()
    if any(key in lowered for key in _NPU2_KEYS):
        return "npu2"
    if any(key in lowered for key in _NPU1_KEYS):
        return "npu1"
    return None


def _target_from_sysfs() -> str | None:
    for node in device_nodes():
        pci_id = Path("/sys/class/accel") / Path(node).name / "device" / "device"
        try:
            value = pci_id.read_text().strip().lower()
        except OSError:
            continue
        if value in _PCI_TARGETS:
            return _PCI_TARGETS[value]
    return None


# ----------------------------------------------------------------------- artifacts


@dataclass
class Artifact:
    """A checked kernel artifact (xclbin + instructions + manifest) for one batch size."""

    directory: Path
    target: str
    manifest: dict[str, Any]
    simulated: bool

    @property
    def xclbin(self) -> Path:
        return self.directory / str(self.manifest.get("xclbin", XCLBIN_FILE))

    @property
    def insts(self) -> Path:
        return self.directory / str(self.manifest.get("insts", INSTS_FILE))

    @property
    def kernel_name(self) -> str:
        return str(self.manifest.get("kernel_name", KERNEL_NAME))

    @property
    def batch(self) -> int | None:
        """The batch size the instruction stream was built for; None if any batch works."""
        if self.manifest.get("batch_generic"):
            return None
        return _manifest_batch(self.manifest)


@dataclass
class ArtifactSet:
    """Every usable artifact for one device, by the batch size it was built for."""

    target: str
    simulated: bool
    by_batch: dict[int, Artifact] = field(default_factory=dict)
    generic: Artifact | None = None

    def plan(self, batch: int) -> list[tuple[Artifact, int]]:
        """How to cover `batch` items: one dispatch per layer if an artifact fits exactly.

        Otherwise split greedily into the largest built batch sizes (each chunk is a
        dispatch); an empty list means no combination covers it.
        """
        if self.generic is not None:
            return [(self.generic, batch)]
        if batch in self.by_batch:
            return [(self.by_batch[batch], batch)]
        sizes = sorted(self.by_batch, reverse=True)
        chunks: list[tuple[Artifact, int]] = []
        remaining = batch
        while remaining:
            fitting = [size for size in sizes if size <= remaining]
            if not fitting:
                return []
            chunks.append((self.by_batch[fitting[0]], fitting[0]))
            remaining -= fitting[0]
        return chunks

    def artifacts(self) -> list[Artifact]:
        found = [self.generic] if self.generic else []
        return found + [self.by_batch[b] for b in sorted(self.by_batch)]

    def summary(self) -> str:
        if self.generic is not None:
            return f"{self.generic.directory} (any batch)"
        return ", ".join(f"{a.directory} (batch {b})" for b, a in sorted(self.by_batch.items()))


def _spec_version() -> str:
    from . import quantization

    return str(quantization.SPEC_VERSION)


def _layout(batch: int) -> list[Any]:
    from . import quantization

    return list(quantization.buffer_layout(batch))


def _manifest_buffers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    buffers = manifest.get("buffers")
    if not isinstance(buffers, list) or not buffers:
        raise NPUError("manifest lists no buffers")
    return buffers


def _manifest_batch(manifest: dict[str, Any]) -> int:
    try:
        batch = int(manifest.get("batch", 1))
    except (TypeError, ValueError):
        raise NPUError(f"manifest batch {manifest.get('batch')!r} is not an integer") from None
    if batch < 1:
        raise NPUError(f"manifest batch {batch} is not positive")
    return batch


def _manifest_hashes(manifest: dict[str, Any]) -> dict[str, str]:
    raw = manifest.get("sha256")
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    raise NPUError("manifest has no sha256 table")


def check_artifact(directory: Path, target: str, simulated: bool) -> Artifact:
    """Load and verify an artifact; raises NPUError saying what does not match.

    Checked: simulated vs real, target device, SPEC version, buffer order and byte
    sizes against `quantization.buffer_layout`, and the sha256 of both files.
    """
    manifest_path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise NPUError(f"no {MANIFEST_FILE} in {directory}") from None
    except (OSError, ValueError) as exc:
        raise NPUError(f"unreadable {manifest_path}: {exc}") from None
    if not isinstance(manifest, dict):
        raise NPUError(f"{manifest_path} is not a JSON object")
    art = Artifact(directory, target, manifest, bool(manifest.get("simulated", False)))
    if art.simulated != simulated:
        kind = "a simulated" if art.simulated else "a hardware"
        want = "the simulated XRT" if simulated else "real XRT"
        raise NPUError(f"{directory} holds {kind} artifact, unusable with {want}")
    found_target = str(manifest.get("target", ""))
    if found_target != target:
        raise NPUError(f"{directory} is built for {found_target or '?'}, the device is {target}")
    spec = str(manifest.get("spec_version", ""))
    if spec != _spec_version():
        raise NPUError(
            f"{directory} implements SPEC version {spec or '?'}, this package needs "
            f"{_spec_version()}"
        )
    _check_layout(manifest, directory)
    hashes = _manifest_hashes(manifest)
    for path in (art.xclbin, art.insts):
        expected = hashes.get(path.name)
        if expected is None:
            raise NPUError(f"manifest in {directory} has no sha256 for {path.name}")
        if not path.is_file():
            raise NPUError(f"{path} is missing")
        if sha256_file(path) != expected:
            raise NPUError(f"{path} does not match the sha256 in its manifest")
    return art


def _check_layout(manifest: dict[str, Any], directory: Path) -> None:
    batch = _manifest_batch(manifest)
    listed = _manifest_buffers(manifest)
    layout = _layout(batch)
    if len(listed) != len(layout):
        raise NPUError(
            f"{directory}: manifest lists {len(listed)} buffers, the adapters produce {len(layout)}"
        )
    for got, spec in zip(listed, layout, strict=True):
        if got.get("name") != spec.name or int(got.get("nbytes", -1)) != int(spec.nbytes):
            raise NPUError(
                f"{directory}: buffer {got.get('name')!r} of {got.get('nbytes')} bytes in the "
                f"manifest, the adapters produce {spec.name!r} of {spec.nbytes} bytes"
            )


def _candidate_dirs(root: Path, subdir: str) -> list[Path]:
    """`root/<target>/`, its per-batch `b<N>/` folders, and `root` itself (a set given directly)."""
    out: list[Path] = []
    for base in (root / subdir, root):
        if not base.is_dir():
            continue
        out.append(base)
        out.extend(sorted(p for p in base.glob("b*") if p.is_dir()))
    return [p for p in out if (p / MANIFEST_FILE).is_file()]


def find_artifacts(target: str, simulated: bool) -> ArtifactSet:
    """All valid artifacts for `target`; earlier roots win per batch size.

    Raises NPUError listing what was rejected and where it looked when none is usable.
    In simulation a simulated set is generated in the cache if none exists.
    """
    subdir = _sim_subdir(target) if simulated else target
    found = ArtifactSet(target, simulated)
    rejected: list[str] = []
    seen: set[Path] = set()
    for root in artifact_roots():
        for candidate in _candidate_dirs(root, subdir):
            if candidate in seen:
                continue
            seen.add(candidate)
            try:
                art = check_artifact(candidate, target, simulated)
            except NPUError as exc:
                rejected.append(str(exc))
                continue
            if art.batch is None:
                found.generic = found.generic or art
            else:
                found.by_batch.setdefault(art.batch, art)
    if found.generic is not None or found.by_batch:
        return found
    if simulated:
        return _generate_simulated_artifacts(target)
    if rejected:
        raise NPUError("no usable kernel artifact: " + "; ".join(rejected))
    where = ", ".join(str(r / subdir) for r in artifact_roots())
    raise NPUError(f"no kernel artifact for {target} (looked in {where})")


_gen_lock = threading.Lock()


def simulated_batches() -> list[int] | None:
    """Batch sizes from AMANUENSIS_NPU_SIM_BATCHES, or None for one any-batch artifact."""
    raw = os.environ.get("AMANUENSIS_NPU_SIM_BATCHES", "").strip()
    if not raw:
        return None
    try:
        sizes = sorted({int(x) for x in raw.replace(" ", ",").split(",") if x})
    except ValueError:
        raise ValueError(f"AMANUENSIS_NPU_SIM_BATCHES must list batch sizes, got {raw!r}") from None
    if not sizes or sizes[0] < 1:
        raise ValueError(f"AMANUENSIS_NPU_SIM_BATCHES must list positive sizes, got {raw!r}")
    return sizes


def _sim_subdir(target: str) -> str:
    sizes = simulated_batches()
    return f"{target}-sim" if sizes is None else f"{target}-sim-b{'-'.join(map(str, sizes))}"


def _generate_simulated_artifacts(target: str) -> ArtifactSet:
    """Write simulated artifact sets into the cache (the sim needs files it can load)."""
    sizes = simulated_batches()
    root = cache_dir() / "artifacts" / _sim_subdir(target)
    found = ArtifactSet(target, True)
    if sizes is None:
        found.generic = _generate_simulated_artifact(root, target, None)
    else:
        for size in sizes:
            found.by_batch[size] = _generate_simulated_artifact(root / f"b{size}", target, size)
    return found


def _generate_simulated_artifact(directory: Path, target: str, batch: int | None) -> Artifact:
    from . import xrt_sim

    with _gen_lock:
        try:
            return check_artifact(directory, target, True)
        except NPUError:
            pass  # absent or stale (e.g. after a SPEC change): write a fresh one
        directory.mkdir(parents=True, exist_ok=True)
        layout = _layout(batch or 1)
        per_batch = [
            {
                "name": s.name,
                "dtype": str(np.dtype(s.dtype)),
                "nbytes_per_batch": int(s.nbytes) // (batch or 1),
            }
            for s in layout
        ]
        tmp = directory / f".tmp-{os.getpid()}-{threading.get_ident()}"
        tmp.mkdir(exist_ok=True)
        u = xrt_sim.write_simulated_xclbin(
            tmp / XCLBIN_FILE,
            target=target,
            buffers_per_batch=per_batch,
            spec_version=_spec_version(),
        )
        n_words = xrt_sim.write_simulated_insts(tmp / INSTS_FILE, u, len(layout), batch)
        manifest = {
            "schema": 1,
            "simulated": True,
            "note": "generated by amanuensis_npu for the simulated XRT device; not an NPU build",
            "target": target,
            "device": f"{target} (simulated)",
            "spec_version": _spec_version(),
            "kernel_name": KERNEL_NAME,
            "batch": batch or 1,
            "batch_generic": batch is None,
            "xclbin": XCLBIN_FILE,
            "insts": INSTS_FILE,
            "insts_words": n_words,
            "buffers": [
                {
                    "index": i,
                    "group_id": FIRST_DATA_ARG + i,
                    "name": s.name,
                    "dtype": str(np.dtype(s.dtype)),
                    "shape": [int(d) for d in s.shape],
                    "nbytes": int(s.nbytes),
                    "direction": s.direction,
                }
                for i, s in enumerate(layout)
            ],
            "sha256": {
                XCLBIN_FILE: sha256_file(tmp / XCLBIN_FILE),
                INSTS_FILE: sha256_file(tmp / INSTS_FILE),
            },
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        for name in (XCLBIN_FILE, INSTS_FILE, MANIFEST_FILE):
            os.replace(tmp / name, directory / name)
        tmp.rmdir()
        logger.info("Generated a SIMULATED NPU artifact in %s", directory)
        return check_artifact(directory, target, True)


def read_insts(path: Path) -> np.ndarray:
    """The instruction stream as uint32 words (binary insts.bin, or hex text from older flows)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("ascii")
        words = [int(tok, 16) for tok in text.split()]
        if words and all(len(tok) <= 8 for tok in text.split()):
            return np.asarray(words, dtype=np.uint32)
    except (UnicodeDecodeError, ValueError):
        pass
    if len(raw) % 4:
        raise NPUError(f"{path} is {len(raw)} bytes, not a whole number of 32-bit words")
    return np.frombuffer(raw, dtype="<u4").copy()


# ----------------------------------------------------------------------- probe/describe


def _probe_target(xrt: ModuleType) -> tuple[str | None, str]:
    if getattr(xrt, "SIMULATED", False):
        return xrt.simulated_target(), "simulated device"
    nodes = device_nodes()
    if not nodes:
        return None, "no NPU device node (/dev/accel/accel* absent: no Ryzen AI NPU or no amdxdna)"
    target = _target_from_sysfs()
    if target is None:
        return None, f"{', '.join(nodes)} is not a supported Ryzen AI NPU (npu1/npu2)"
    return target, nodes[0]


def probe() -> tuple[bool, str]:
    """Whether the NPU backend can run here, and why (not); cheap, never raises.

    Does not open the device: it checks pyxrt, the device node, the NPU generation
    (PCI id, or the simulated device's setting) and the kernel artifacts.
    """
    try:
        xrt, where = load_xrt()
        if xrt is None:
            return False, where
        target, detail = _probe_target(xrt)
        if target is None:
            return False, detail
        arts = find_artifacts(target, bool(getattr(xrt, "SIMULATED", False)))
        if arts.simulated:
            return True, (
                f"SIMULATED {target} device (AMANUENSIS_NPU_XRT=sim, no NPU hardware) with "
                f"simulated kernel artifact {arts.summary()}"
            )
        return True, f"{target} NPU at {detail} with kernel artifact {arts.summary()}"
    except Exception as exc:  # probe must never raise
        return False, str(exc) or type(exc).__name__


def describe() -> dict[str, Any]:
    """Everything `amanuensis-npu info` shows about XRT, the device and the artifact.

    Opens the device to read its name (harmless, and what users need to see when
    detection goes wrong); never raises.
    """
    info: dict[str, Any] = {
        "xrt_mode": None,
        "xrt": None,
        "device_nodes": device_nodes(),
        "device_name": None,
        "target": None,
        "artifacts": [],
        "artifact_search_path": [str(r) for r in artifact_roots()],
        "available": False,
        "reason": "",
        "max_failures": None,
        "timeout_ms": None,
        "sim_device": os.environ.get("AMANUENSIS_NPU_SIM_DEVICE"),
        "sim_faults": os.environ.get("AMANUENSIS_NPU_SIM_FAULTS"),
        "sim_batches": os.environ.get("AMANUENSIS_NPU_SIM_BATCHES"),
    }
    try:
        info["xrt_mode"] = xrt_mode()
        info["max_failures"] = max_failures()
        info["timeout_ms"] = timeout_ms()
    except ValueError as exc:
        info["reason"] = str(exc)
        return info
    info["available"], info["reason"] = probe()
    xrt, info["xrt"] = load_xrt()
    if xrt is not None:
        try:
            name = xrt.device(0).get_info(xrt.xrt_info_device.name)
            info["device_name"] = name
            info["target"] = target_from_name(name)
        except Exception as exc:
            info["device_error"] = f"could not open device 0: {exc}"
        target = info["target"] or _probe_target(xrt)[0]
        if target is not None:
            try:
                arts = find_artifacts(target, bool(getattr(xrt, "SIMULATED", False)))
                info["artifacts"] = [
                    {
                        "directory": str(a.directory),
                        "batch": a.batch if a.batch is not None else "any",
                        "simulated": a.simulated,
                        "spec_version": a.manifest.get("spec_version"),
                        "target": a.target,
                        "sha256": _manifest_hashes(a.manifest),
                    }
                    for a in arts.artifacts()
                ]
            except Exception as exc:
                info["artifact_error"] = str(exc)
    from ..attention import _SINGLETONS

    live = _SINGLETONS.get("npu")
    if isinstance(live, NPUAttention):
        info["backend_state"] = live.state()
    return info


# ----------------------------------------------------------------------- device session


@dataclass
class DispatchTiming:
    """Host-side wall time of one dispatch's phases (seconds), for the latency benchmark."""

    write_sync_in: float = 0.0  # bo.write + sync TO_DEVICE of every input
    launch: float = 0.0  # the kernel call (command submission)
    wait: float = 0.0  # run.wait until the state comes back
    sync_read_out: float = 0.0  # sync FROM_DEVICE + bo.read of the output

    @property
    def total(self) -> float:
        return self.write_sync_in + self.launch + self.wait + self.sync_read_out


@dataclass
class _Loaded:
    """One artifact registered on the device: context, kernel, instructions, buffers."""

    artifact: Artifact
    xclbin: Any
    context: Any
    kernel: Any
    instr_bo: Any
    n_instr: int
    max_data_args: int
    buffers: dict[int, list[Any]] = field(default_factory=dict)


class _Session:
    """An open device; only used under NPUAttention's device lock."""

    def __init__(self, xrt: ModuleType) -> None:
        self.xrt = xrt
        try:
            self.device = xrt.device(0)
            self.device_name = str(self.device.get_info(xrt.xrt_info_device.name))
        except Exception as exc:
            raise NPUError(f"could not open NPU device 0: {exc}") from None
        target = target_from_name(self.device_name)
        if target is None and not getattr(xrt, "SIMULATED", False):
            target = _target_from_sysfs()  # a name we do not know: trust the PCI id
        if target is None:
            raise NPUError(f"device {self.device_name!r} is not a supported NPU (npu1/npu2)")
        self.target = target
        self.artifacts = find_artifacts(target, bool(getattr(xrt, "SIMULATED", False)))
        self.loaded: dict[Path, _Loaded] = {}

    def load(self, artifact: Artifact) -> _Loaded:
        """Register the xclbin, create context and kernel, upload the instructions (once)."""
        found = self.loaded.get(artifact.directory)
        if found is not None:
            return found
        xrt = self.xrt
        try:
            xclbin = xrt.xclbin(str(artifact.xclbin))
            kernels = [k for k in xclbin.get_kernels() if k.get_name() == artifact.kernel_name]
            if not kernels:
                raise NPUError(f"{artifact.xclbin} has no kernel {artifact.kernel_name!r}")
            max_data_args = kernels[0].get_num_args() - FIRST_DATA_ARG
            n_buffers = len(_manifest_buffers(artifact.manifest))
            if n_buffers > max_data_args:
                raise NPUError(
                    f"{artifact.kernel_name} takes {max_data_args} data buffers, "
                    f"the layout has {n_buffers}"
                )
            self.device.register_xclbin(xclbin)
            context = xrt.hw_context(self.device, xclbin.get_uuid())
            kernel = xrt.kernel(context, artifact.kernel_name)
            insts = read_insts(artifact.insts)
            group = kernel.group_id(INSTR_GROUP)
            instr_bo = xrt.bo(self.device, insts.nbytes, xrt.bo.cacheable, group)
            instr_bo.write(insts, 0)
            instr_bo.sync(xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, insts.nbytes, 0)
        except NPUError:
            raise
        except Exception as exc:
            raise NPUError(f"loading {artifact.xclbin} failed: {exc}") from None
        loaded = _Loaded(
            artifact, xclbin, context, kernel, instr_bo, int(insts.size), max_data_args
        )
        self.loaded[artifact.directory] = loaded
        return loaded

    def buffers_for(self, loaded: _Loaded, batch: int, sizes: list[int]) -> list[Any]:
        """Buffer objects for this batch size, allocated once and reused."""
        bos = loaded.buffers.get(batch)
        if bos is not None and [b.size() for b in bos] == sizes:
            return bos
        if len(loaded.buffers) >= _BO_CACHE_SHAPES:
            loaded.buffers.pop(next(iter(loaded.buffers)))
        xrt = self.xrt
        bos = [
            xrt.bo(self.device, n, xrt.bo.host_only, loaded.kernel.group_id(FIRST_DATA_ARG + i))
            for i, n in enumerate(sizes)
        ]
        loaded.buffers[batch] = bos
        return bos

    def dispatch(
        self,
        loaded: _Loaded,
        inputs: list[np.ndarray],
        out_nbytes: int,
        batch: int,
        wait_ms: int,
        moved: dict[str, int],
    ) -> tuple[np.ndarray, DispatchTiming]:
        """Run one layer: write+sync inputs, launch, wait, sync+read output (raw bytes).

        `moved` is filled as data really moves, so the caller counts what happened
        even when a step fails.
        """
        xrt = self.xrt
        to_dev = xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE
        from_dev = xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE
        bos = self.buffers_for(loaded, batch, [int(a.nbytes) for a in inputs] + [out_nbytes])
        timing = DispatchTiming()
        t0 = time.perf_counter()
        try:
            for bo, arr in zip(bos, inputs, strict=False):
                bo.write(arr.reshape(-1).view(np.uint8), 0)
                bo.sync(to_dev, int(arr.nbytes), 0)
                moved["to_device"] += int(arr.nbytes)
        except Exception as exc:
            raise NPUError(f"copying inputs to the device failed: {exc}") from None
        t1 = time.perf_counter()
        try:
            run = loaded.kernel(OPCODE_RUN, loaded.instr_bo, loaded.n_instr, *bos)
        except Exception as exc:
            raise NPUError(f"kernel launch failed: {exc}") from None
        moved["dispatches"] += 1
        t2 = time.perf_counter()
        try:
            state = run.wait(wait_ms)
        except Exception as exc:
            raise NPUError(f"waiting for the kernel failed: {exc}") from None
        t3 = time.perf_counter()
        timing.write_sync_in, timing.launch, timing.wait = t1 - t0, t2 - t1, t3 - t2
        if state != xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
            name = getattr(state, "name", str(state))
            if name == "ERT_CMD_STATE_TIMEOUT":
                raise NPUError(f"kernel run timed out after {wait_ms} ms ({name})")
            raise NPUError(f"kernel run ended in state {name}")
        out_bo = bos[-1]
        try:
            out_bo.sync(from_dev, out_nbytes, 0)
            moved["from_device"] += out_nbytes
            raw = np.asarray(out_bo.read(out_nbytes, 0)).view(np.uint8)
        except Exception as exc:
            raise NPUError(f"reading the output back failed: {exc}") from None
        timing.sync_read_out = time.perf_counter() - t3
        return raw, timing


# ----------------------------------------------------------------------- the backend


class NPUAttention(AttentionBackend):
    """Attention on the Ryzen AI NPU (or the simulated one), falling back to the CPU per call.

    Constructing it never fails: without a usable NPU every call runs on the CPU and
    the reason is logged once. One instance is shared per process (`get_backend`);
    the device is used under one lock, quantization and the CPU fallback are not.
    """

    name = "npu"

    def __init__(self) -> None:
        super().__init__()
        self._device_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._session: _Session | None = None
        self._warned: set[str] = set()
        self._consecutive_failures = 0
        self._disabled: str | None = None
        self.keep_timings = False
        self.timings: list[tuple[int | None, int, DispatchTiming]] = []
        try:
            self._max_failures = max_failures()
            self._timeout_ms = timeout_ms()
            self._xrt, self._xrt_where = load_xrt()
        except ValueError as exc:  # a bad environment setting: say so, use the CPU
            self._max_failures, self._timeout_ms = DEFAULT_MAX_FAILURES, DEFAULT_TIMEOUT_MS
            self._xrt, self._xrt_where = None, str(exc)
        self._unavailable: str | None = None
        if self._xrt is None:
            self._unavailable = self._xrt_where
        else:
            ok, reason = probe()
            if not ok:
                self._unavailable = reason
            else:
                logger.info("NPU attention: %s", reason)
        if self._unavailable is not None:
            logger.warning(
                "NPU attention unavailable (%s); attention runs on the CPU.", self._unavailable
            )

    # -- public state -----------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False when there is no usable NPU or it was disabled after repeated failures."""
        return self._unavailable is None and self._disabled is None

    def state(self) -> dict[str, Any]:
        """Live state for `info` and debugging (no device access)."""
        session = self._session
        return {
            "xrt": self._xrt_where,
            "unavailable": self._unavailable,
            "disabled": self._disabled,
            "consecutive_failures": self._consecutive_failures,
            "max_failures": self._max_failures,
            "timeout_ms": self._timeout_ms,
            "session_open": session is not None,
            "device_name": session.device_name if session else None,
            "loaded_artifacts": [str(d) for d in session.loaded] if session else [],
        }

    # -- the attention call -----------------------------------------------------------

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, layer: int | None = None
    ) -> torch.Tensor:
        if self._unavailable is not None:
            return self._cpu(q, k, v, f"NPU unavailable: {self._unavailable}", warn=False)
        if self._disabled is not None:
            return self._cpu(q, k, v, self._disabled, warn=False)
        try:
            return self._npu(q, k, v, layer)
        except _Disabled as exc:
            return self._cpu(q, k, v, str(exc), warn=False)
        except NPUError as exc:
            return self._failure(q, k, v, str(exc))
        except Exception as exc:  # anything unexpected: the transcription must go on
            return self._failure(q, k, v, f"unexpected {type(exc).__name__}: {exc}")

    def _npu(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int | None
    ) -> torch.Tensor:
        from . import quantization

        kernel_shape = (quantization.HEADS, quantization.FRAMES, quantization.HEAD_DIM)
        if q.dim() != 4 or tuple(q.shape[1:]) != kernel_shape:
            raise NPUError(
                f"the NPU kernel is built for attention of shape [batch, {kernel_shape[0]}, "
                f"{kernel_shape[1]}, {kernel_shape[2]}] (Whisper Base), got {list(q.shape)}"
            )
        batch = int(q.shape[0])
        with self._device_lock:
            if self._session is None:
                self._session = _Session(self._xrt)
            plan = self._session.artifacts.plan(batch)
        if not plan:
            raise NPUError(
                f"no kernel artifact covers batch {batch} "
                f"(built: {self._session.artifacts.summary()})"
            )
        outs = []
        start = 0
        for artifact, size in plan:
            sl = slice(start, start + size)
            outs.append(self._dispatch(artifact, q[sl], k[sl], v[sl], size, layer))
            start += size
        with self._state_lock:
            self._consecutive_failures = 0
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)

    def _dispatch(
        self,
        artifact: Artifact,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        batch: int,
        layer: int | None,
    ) -> torch.Tensor:
        from . import quantization

        packed = quantization.pack_layer(q, k, v)  # outside the lock: other threads may dispatch
        inputs = [np.ascontiguousarray(a) for a in packed.inputs]
        template = packed.output
        sizes = [int(a.nbytes) for a in inputs] + [int(template.nbytes)]
        expected = [int(spec.nbytes) for spec in _layout(batch)]
        if sizes != expected:
            raise NPUError(f"packed buffers {sizes} do not match the kernel layout {expected}")
        moved = {"dispatches": 0, "to_device": 0, "from_device": 0}
        with self._device_lock:
            if self._disabled is not None:
                raise _Disabled(self._disabled)
            if self._session is None:
                self._session = _Session(self._xrt)
            session = self._session
            try:
                loaded = session.load(artifact)
                raw, timing = session.dispatch(
                    loaded, inputs, int(template.nbytes), batch, self._timeout_ms, moved
                )
            except Exception:
                # After a failed run the device may still write these buffers, or the
                # context may be unusable: start from a fresh session next time.
                self._session = None
                raise
            finally:
                self.stats.add(
                    dispatches=moved["dispatches"],
                    bytes_to_device=moved["to_device"],
                    bytes_from_device=moved["from_device"],
                )
        self.stats.add(layer_time=(layer, timing.total))
        if self.keep_timings:
            self.timings.append((layer, batch, timing))
        if not raw.any() and bool(torch.any(v != 0)):
            raise NPUError("kernel output is all zeros for non-zero input")
        out_buffer = raw.view(template.dtype).reshape(template.shape).copy()
        if np.issubdtype(out_buffer.dtype, np.integer):
            # SPEC.md §5: |out16| <= 127 * 256 on valid input; beyond it is garbage.
            limit = 127 * quantization.OUT_FRAC
            if int(np.abs(out_buffer.astype(np.int32)).max()) > limit:
                raise NPUError(f"kernel output exceeds the SPEC bound |out| <= {limit}")
        result = quantization.unpack_output(packed, out_buffer)
        if not bool(torch.isfinite(result).all()):
            raise NPUError("kernel output is not finite (NaN/inf)")
        return result.to(dtype=q.dtype)

    # -- fallback ---------------------------------------------------------------------

    def _failure(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, reason: str
    ) -> torch.Tensor:
        with self._state_lock:
            self._consecutive_failures += 1
            disable = self._disabled is None and self._consecutive_failures >= self._max_failures
            if disable:
                self._disabled = (
                    f"NPU disabled after {self._consecutive_failures} consecutive failures"
                )
        result = self._cpu(q, k, v, reason, warn=True)
        if disable:
            with self._device_lock:
                self._session = None
            logger.warning(
                "NPU attention disabled for this process after %d consecutive failures "
                "(last: %s); attention runs on the CPU from now on.",
                self._max_failures,
                reason,
            )
        return result

    def _cpu(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, reason: str, *, warn: bool
    ) -> torch.Tensor:
        if warn:
            with self._state_lock:
                first = reason not in self._warned
                self._warned.add(reason)
            if first:
                logger.warning("NPU attention failed (%s); this call ran on the CPU.", reason)
        self.stats.add(fallback_reason=reason)
        return cpu_attention(q, k, v)
