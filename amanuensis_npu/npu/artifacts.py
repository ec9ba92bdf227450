"""Kernel artifacts (xclbin, instruction stream, manifest): where they are, and whether they fit.

Search order, first hit per batch size wins: ``$AMANUENSIS_NPU_ARTIFACTS``, then
``$AMANUENSIS_NPU_CACHE/artifacts`` (default ``~/.cache/amanuensis-npu/artifacts``,
where ``make -C kernels install`` puts builds), then the package's
``amanuensis_npu/artifacts``. In each root a set is ``<target>/`` or ``<target>/b<N>/``
(one per batch size an instruction stream was built for), the same under
``<target>/h<H>/`` for a model of H heads other than Base's 8 (a design's runtime
sequence is fixed per head count), or the root itself. The manifest's ``heads`` decides
the shape (absent: 8, as manifests were before other sizes).
``<target>`` is ``npu1`` (Phoenix, Hawk Point) or ``npu2`` (Strix, Krackan, Gorgon
Point); simulated sets live in ``<target>-sim*/`` and are generated in the cache.

A manifest that disagrees with this package (simulated or not, device, SPEC version,
buffer names and sizes from `quantization.buffer_layout`, sha256 of both files) is
refused with the reason; the runtime never guesses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.models import cache_dir, sha256_file
from .config import artifacts_dir, simulated_batches
from .errors import NPUError

KERNEL_NAME = "MLIR_AIE"
FIRST_DATA_ARG = 3  # data buffer i is kernel argument 3 + i (opcode, instructions, count)
XCLBIN_FILE = "final.xclbin"
INSTS_FILE = "insts.bin"
MANIFEST_FILE = "manifest.json"


def package_artifacts_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "artifacts"


def artifact_roots() -> list[Path]:
    """Where artifacts are looked for, in order."""
    user = artifacts_dir()
    return [*([user] if user else []), cache_dir() / "artifacts", package_artifacts_dir()]


def spec_version() -> str:
    from . import quantization

    return str(quantization.SPEC_VERSION)


def buffer_layout(batch: int, heads: int | None = None) -> list[Any]:
    """The kernel's buffers for `batch` and `heads` (default Base's), as `quantization` lays
    them out (the runtime follows)."""
    from . import quantization

    return list(quantization.buffer_layout(batch, heads=heads or quantization.HEADS))


def base_heads() -> int:
    from . import quantization

    return quantization.HEADS


def build_command(target: str, heads: int) -> str:
    """The command that builds and installs the kernel for `heads` on `target`
    (kernels/Makefile)."""
    return f"make -C kernels HEADS={heads} TARGETS={target} install"


class NoArtifact(NPUError):
    """No artifact is built for this model's shape: its calls run on the CPU, the NPU
    stays on for the shapes that have one (not a device failure)."""


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
        return None if self.manifest.get("batch_generic") else manifest_batch(self.manifest)

    @property
    def sha256(self) -> dict[str, str]:
        return manifest_hashes(self.manifest)

    @property
    def heads(self) -> int:
        """Attention heads per layer the runtime sequence was built for."""
        return manifest_heads(self.manifest)


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
        chunks: list[tuple[Artifact, int]] = []
        remaining = batch
        while remaining:
            fitting = [size for size in sorted(self.by_batch, reverse=True) if size <= remaining]
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
            return f"{self.generic.directory} (any batch, {self.generic.heads} heads)"
        return ", ".join(
            f"{a.directory} (batch {b}, {a.heads} heads)" for b, a in sorted(self.by_batch.items())
        )


def manifest_heads(manifest: dict[str, Any]) -> int:
    """The manifest's head count: `heads`, else `tiles.heads`, else Base's 8 (older builds)."""
    tiles = manifest.get("tiles")
    raw = manifest.get("heads", tiles.get("heads") if isinstance(tiles, dict) else None)
    if raw is None:
        return base_heads()
    try:
        heads = int(raw)
    except (TypeError, ValueError):
        raise NPUError(f"manifest heads {raw!r} is not an integer") from None
    if heads < 1:
        raise NPUError(f"manifest heads {heads} is not positive")
    return heads


def manifest_batch(manifest: dict[str, Any]) -> int:
    try:
        batch = int(manifest.get("batch", 1))
    except (TypeError, ValueError):
        raise NPUError(f"manifest batch {manifest.get('batch')!r} is not an integer") from None
    if batch < 1:
        raise NPUError(f"manifest batch {batch} is not positive")
    return batch


def manifest_hashes(manifest: dict[str, Any]) -> dict[str, str]:
    raw = manifest.get("sha256")
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    raise NPUError("manifest has no sha256 table")


def check_artifact(directory: Path, target: str, simulated: bool) -> Artifact:
    """Load and verify an artifact; raises NPUError saying what does not match."""
    path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise NPUError(f"no {MANIFEST_FILE} in {directory}") from None
    except (OSError, ValueError) as exc:
        raise NPUError(f"unreadable {path}: {exc}") from None
    if not isinstance(manifest, dict):
        raise NPUError(f"{path} is not a JSON object")
    art = Artifact(directory, target, manifest, bool(manifest.get("simulated", False)))
    if art.simulated != simulated:
        kind = "a simulated" if art.simulated else "a hardware"
        want = "the simulated XRT" if simulated else "real XRT"
        raise NPUError(f"{directory} holds {kind} artifact, unusable with {want}")
    found_target = str(manifest.get("target", ""))
    if found_target != target:
        raise NPUError(f"{directory} is built for {found_target or '?'}, the device is {target}")
    spec = str(manifest.get("spec_version", ""))
    if spec != spec_version():
        raise NPUError(
            f"{directory} implements SPEC version {spec or '?'}, this package needs "
            f"{spec_version()}"
        )
    _check_layout(manifest, directory)
    hashes = manifest_hashes(manifest)
    for file in (art.xclbin, art.insts):
        expected = hashes.get(file.name)
        if expected is None:
            raise NPUError(f"manifest in {directory} has no sha256 for {file.name}")
        if not file.is_file():
            raise NPUError(f"{file} is missing")
        if sha256_file(file) != expected:
            raise NPUError(f"{file} does not match the sha256 in its manifest")
    return art


def _check_layout(manifest: dict[str, Any], directory: Path) -> None:
    listed = manifest.get("buffers")
    if not isinstance(listed, list) or not listed:
        raise NPUError(f"{directory}: manifest lists no buffers")
    layout = buffer_layout(manifest_batch(manifest), manifest_heads(manifest))
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
    """`root/<target>/`, its `h<H>/` shapes, their per-batch `b<N>/` folders, and `root`
    itself (a set given directly)."""
    out: list[Path] = []
    shapes = sorted(p for p in (root / subdir).glob("h*") if p.is_dir())
    for base in (root / subdir, *shapes, root):
        if base.is_dir():
            out.append(base)
            out.extend(sorted(p for p in base.glob("b*") if p.is_dir()))
    return [p for p in out if (p / MANIFEST_FILE).is_file()]


def find_artifacts(target: str, simulated: bool, heads: int | None = None) -> ArtifactSet:
    """Every valid artifact for `target` and `heads` (default Base's 8; 0 for any shape,
    as `info` lists them); earlier roots win per batch size.

    Raises NoArtifact (naming the build command) when nothing of this shape is built, and
    NPUError listing what was rejected and where it looked when nothing is usable
    (`sim_artifacts.artifacts_for` generates a simulated set instead).
    """
    want = base_heads() if heads is None else heads
    subdir = sim_subdir(target) if simulated else target
    found = ArtifactSet(target, simulated)
    other_shapes: set[int] = set()
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
            if want and art.heads != want:
                other_shapes.add(art.heads)
                continue
            if art.batch is None:
                found.generic = found.generic or art
            else:
                found.by_batch.setdefault(art.batch, art)
    if found.generic is not None or found.by_batch:
        return found
    if other_shapes:
        built = ", ".join(map(str, sorted(other_shapes)))
        raise NoArtifact(
            f"no {target} kernel for {want} heads (built: {built}); "
            f"build it: {build_command(target, want)}"
        )
    if rejected:
        raise NPUError("no usable kernel artifact: " + "; ".join(rejected))
    where = ", ".join(str(r / subdir) for r in artifact_roots())
    raise NPUError(f"no kernel artifact for {target} (looked in {where})")


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


def sim_subdir(target: str) -> str:
    """Where simulated sets for the current AMANUENSIS_NPU_SIM_BATCHES live, per target."""
    sizes = simulated_batches()
    return f"{target}-sim" if sizes is None else f"{target}-sim-b{'-'.join(map(str, sizes))}"
