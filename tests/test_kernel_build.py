"""The NPU kernel build: IRON design, transfer plan, manifest, Makefile.

What runs here (no NPU toolchain on this machine):
- the manifest generator on dummy artifacts: buffer order and sizes equal
  `buffer_layout`, sha256 of the files, and the NPU runtime accepts the result;
- design.py's transfer plan replayed byte for byte: the shim transfers are
  gathered from real packed buffers with their exact offsets/sizes/strides, the
  objects are handed to every core as the ObjectFifos would, each core's call
  sequence runs the scalar build of iron_glue.cc + attention.cc through ctypes,
  and the drained output must equal the scalar layer driver's byte for byte. So
  the design covers every (batch, head, query tile) once, with all key tiles in
  both passes, in the order the kernel needs.
What needs the toolchain (skips with the reason otherwise): emitting MLIR with
IRON, and the full `make -C kernels` build.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from amanuensis_npu.npu import quantization as qz

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "kernels"
DESIGN_PY = KERNELS / "attention" / "design.py"
SPEC_MD = KERNELS / "attention" / "SPEC.md"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


design = _load("kb_design", DESIGN_PY)
make_manifest = _load("kb_make_manifest", KERNELS / "make_manifest.py")

IRON_OK, IRON_REASON = design.iron_status()


def _peano_dir() -> Path | None:
    env = os.environ.get("PEANO_INSTALL_DIR")
    if env and (Path(env) / "bin" / "clang++").exists():
        return Path(env)
    return None


# ------------------------------------------------------------------ manifest


def _dummy_artifacts(directory: Path, n_words: int, seed: int) -> tuple[bytes, bytes]:
    rng = np.random.default_rng(seed)
    xclbin = b"xclbin2\0" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    insts = rng.integers(0, 2**32, n_words, dtype=np.uint32).astype("<u4").tobytes()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "final.xclbin").write_bytes(xclbin)
    (directory / "insts.bin").write_bytes(insts)
    return xclbin, insts


@pytest.mark.parametrize(("target", "batch"), [("npu1", 1), ("npu1", 8), ("npu2", 1), ("npu2", 3)])
def test_manifest_matches_adapters_and_hashes(tmp_path, target, batch):
    out = tmp_path / target / f"b{batch}"
    xclbin, insts = _dummy_artifacts(out, n_words=777, seed=batch)
    rc = make_manifest.main(["--target", target, "--batch", str(batch), "--dir", str(out)])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())

    layout = qz.buffer_layout(batch)
    assert [b["name"] for b in manifest["buffers"]] == [s.name for s in layout]
    assert [b["nbytes"] for b in manifest["buffers"]] == [s.nbytes for s in layout]
    assert [tuple(b["shape"]) for b in manifest["buffers"]] == [s.shape for s in layout]
    assert [b["dtype"] for b in manifest["buffers"]] == [s.dtype for s in layout]
    assert [b["direction"] for b in manifest["buffers"]] == [s.direction for s in layout]
    assert [b["group_id"] for b in manifest["buffers"]] == [3, 4, 5, 6, 7]
    # SPEC.md §2 states the bytes per batch element; nothing else depends on the batch.
    stated = re.search(r"Per batch element ([\d,]+) bytes", SPEC_MD.read_text())
    assert stated, "SPEC.md no longer states the bytes per batch element"
    assert sum(b["nbytes"] for b in manifest["buffers"]) == int(stated[1].replace(",", "")) * batch

    assert manifest["sha256"] == {
        "final.xclbin": hashlib.sha256(xclbin).hexdigest(),
        "insts.bin": hashlib.sha256(insts).hexdigest(),
    }
    assert manifest["insts_words"] == 777
    assert manifest["target"] == target and manifest["batch"] == batch
    assert manifest["simulated"] is False and manifest["batch_generic"] is False
    assert manifest["spec_version"] == str(qz.SPEC_VERSION)
    assert manifest["tiles"]["query_tile"] == 32 and manifest["tiles"]["key_tile"] == 64
    assert manifest["tiles"]["padded_frames"] == qz.padded_frames(qz.FRAMES)
    assert manifest["placement"]["dispatches_per_layer"] == 1


def test_npu_runtime_accepts_the_manifest_and_rejects_tampering(tmp_path):
    npu_runtime = pytest.importorskip("amanuensis_npu.npu.runtime")
    out = tmp_path / "npu2" / "b1"
    _dummy_artifacts(out, n_words=64, seed=7)
    assert make_manifest.main(["--target", "npu2", "--batch", "1", "--dir", str(out)]) == 0
    art = npu_runtime.check_artifact(out, "npu2", False)
    assert art.manifest["batch"] == 1
    with pytest.raises(npu_runtime.NPUError, match="npu2"):
        npu_runtime.check_artifact(out, "npu1", False)
    insts = bytearray((out / "insts.bin").read_bytes())
    insts[5] ^= 0xFF
    (out / "insts.bin").write_bytes(bytes(insts))
    with pytest.raises(npu_runtime.NPUError, match="sha256"):
        npu_runtime.check_artifact(out, "npu2", False)


def test_manifest_generator_refuses_missing_or_empty_artifacts(tmp_path, capsys):
    out = tmp_path / "b1"
    _dummy_artifacts(out, n_words=8, seed=1)
    (out / "insts.bin").unlink()
    assert make_manifest.main(["--target", "npu1", "--batch", "1", "--dir", str(out)]) == 1
    assert "insts.bin not found" in capsys.readouterr().err
    (out / "insts.bin").write_bytes(b"")
    assert make_manifest.main(["--target", "npu1", "--batch", "1", "--dir", str(out)]) == 1
    assert "is empty" in capsys.readouterr().err
    assert not (out / "manifest.json").exists()


def test_insts_word_count_binary_and_hex_text(tmp_path):
    binary = tmp_path / "insts.bin"
    binary.write_bytes(np.arange(10, dtype="<u4").tobytes())
    assert make_manifest.count_insts_words(binary) == 10
    text = tmp_path / "insts.txt"
    text.write_text("0x06030100\n00000105\n00000003\n")
    assert make_manifest.count_insts_words(text) == 3
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x00\x01\x02\xff\xfe")
    with pytest.raises(ValueError, match="32-bit words"):
        make_manifest.count_insts_words(odd)


@pytest.mark.parametrize("batch", [1, 2, 8])
def test_design_runtime_sequence_equals_buffer_layout(batch):
    got = design.runtime_buffers(batch)
    want = qz.buffer_layout(batch)
    assert [
        (b["name"], b["dtype"], tuple(b["shape"]), b["nbytes"], b["direction"]) for b in got
    ] == [(s.name, s.dtype, s.shape, s.nbytes, s.direction) for s in want]


def test_design_constants_agree_with_the_adapters():
    assert design.SPEC_VERSION == qz.SPEC_VERSION
    assert (design.D, design.H, design.FRAMES, design.TK) == (
        qz.HEAD_DIM,
        qz.HEADS,
        qz.FRAMES,
        qz.KEY_TILE,
    )
    assert design.TP == qz.padded_frames(qz.FRAMES) == 1536
    assert design.HEADER_WORDS == qz.HEADER_WORDS
    # 1500 frames: 23 full key tiles and 28 valid keys in the last one.
    assert (design.NKT, design.LAST_VALID) == (24, 28)


@pytest.mark.parametrize("target", ["npu1", "npu2"])
def test_core_memory_and_placement_fit_the_device(target):
    assert sum(design.CORE_MEMORY.values()) <= 64 * 1024
    cfg = design.design_config(target, 1)["placement"]
    assert cfg["cores"] == {"npu1": 16, "npu2": 32}[target]
    assert cfg["groups"] * cfg["cores_per_group"] == cfg["cores"]
    assert cfg["rounds_per_head"] * cfg["cores_per_group"] == design.NQT


# ------------------------------------------------------- transfer plan replay


def _indices(t) -> np.ndarray:
    index = np.asarray(t.offset, dtype=np.int64)
    for size, stride in zip(t.sizes, t.strides, strict=True):
        index = index[..., None] + np.arange(size, dtype=np.int64) * stride
    return index.reshape(-1)


@pytest.mark.parametrize("target", ["npu1", "npu2"])
@pytest.mark.parametrize("batch", [1, 8])
def test_plan_respects_shim_dma_limits(target, batch):
    itemsize = {"q": 1, "k": 1, "v": 1, "rowp": 4, "out": 2}
    plan = design.transfer_plan(target, batch)
    per_step_col: dict[tuple[int, int], int] = defaultdict(int)
    for t in plan:
        words0 = t.sizes[3] * itemsize[t.buffer] / 4
        assert words0 == int(words0) and words0 <= 1023, t
        assert t.sizes[1] <= 1023 and t.sizes[2] <= 1023 and 1 <= t.sizes[0] <= 64, t
        assert t.strides[3] == 1, t
        per_step_col[(t.group_step, t.column)] += 1
    # 16 buffer descriptors per shim tile; a task group's transfers are all live at once.
    assert max(per_step_col.values()) <= 16
    assert {c for _, c in per_step_col} == set(range(design.TARGETS[target]["columns"]))


@pytest.fixture(scope="module")
def glue_lib(tmp_path_factory):
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        pytest.skip("no host C++ compiler (g++) to build the scalar kernel path")
    out = tmp_path_factory.mktemp("glue") / "libglue.so"
    src = KERNELS / "attention"
    cmd = [
        cxx,
        "-O2",
        "-shared",
        "-fPIC",
        "-std=c++17",
        "-DATTN_SCALAR",
        "-I",
        str(src),
        str(src / "iron_glue.cc"),
        "-o",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lib = ctypes.CDLL(str(out))
    p8, p16, p32, i32 = (
        ctypes.POINTER(ctypes.c_int8),
        ctypes.POINTER(ctypes.c_int16),
        ctypes.POINTER(ctypes.c_int32),
        ctypes.c_int32,
    )
    lib.attn_qr_rows_init.argtypes = [p32, p32, p32]
    lib.attn_qr_tile_max.argtypes = [p8, p8, p32, i32, i32]
    lib.attn_qr_tile_accum.argtypes = [p8, p8, p32, p32, p32, i32, i32]
    lib.attn_rows_finish.argtypes = [p32, p32, p16]
    lib.attn_qr_layout.argtypes = [i32]
    lib.attn_qr_layout.restype = i32
    return lib


def test_glue_object_layout_equals_design(glue_lib):
    layout = [glue_lib.attn_qr_layout(i) for i in range(8)]
    assert layout == [
        design.ROWS,
        design.QR_Q_TILE_BYTES,
        design.QR_WORDS_OFFSET,
        design.QR_BYTES,
        design.KV_V_OFFSET,
        design.QR_KEYWORDS_OFFSET,
        design.NKT,
        design.QR_VWORDS_OFFSET,
    ]


def _replay(plan, buffers: dict[str, np.ndarray], lib, n_cols: int) -> np.ndarray:
    """Run one dispatch the way the design moves data, with the scalar kernel on each core."""
    flat = {name: buf.reshape(-1) for name, buf in buffers.items()}
    streams: dict[str, list[bytes]] = defaultdict(list)
    drains: dict[str, list[np.ndarray]] = defaultdict(list)
    for t in plan:
        idx = _indices(t)
        assert idx.min() >= 0 and idx.max() < flat[t.buffer].size, t
        if t.kind == "fill":
            streams[t.fifo].append(flat[t.buffer][idx].tobytes())
        else:
            drains[t.fifo].append(idx)

    def objects(fifo: str, size: int) -> list[np.ndarray]:
        data = b"".join(streams[fifo])
        assert len(data) % size == 0, fifo
        return [
            np.frombuffer(data[i : i + size], np.int8).copy() for i in range(0, len(data), size)
        ]

    tile = design.TK * design.D
    out = np.full(flat["out"].size, -32768, dtype=np.int16)
    written = np.zeros(flat["out"].size, dtype=np.int64)
    p8, p16, p32 = (
        ctypes.POINTER(ctypes.c_int8),
        ctypes.POINTER(ctypes.c_int16),
        ctypes.POINTER(ctypes.c_int32),
    )
    kv_by_group = {}
    for g in range(n_cols // design.COLS_PER_GROUP):
        ks, vs = objects(f"k{g}", tile), objects(f"v{g}", tile)
        assert len(ks) == len(vs)
        kv_by_group[g] = [np.concatenate([k, v]) for k, v in zip(ks, vs, strict=True)]
    for col in range(n_cols):
        g = col // design.COLS_PER_GROUP
        qr_objs = objects(f"qr{col}", design.QR_BYTES)
        kvs = kv_by_group[g]
        # Lock step: every core of the group consumes 2 x NKT kv objects per query tile.
        assert len(kvs) == 2 * design.NKT * len(qr_objs)
        tiles = [[None] * design.ROWS for _ in qr_objs]
        for slot in range(design.ROWS):
            m = np.zeros(design.TQ, np.int32)
            lsum = np.zeros(design.TQ, np.int32)
            acc = np.zeros((design.TQ, design.D), np.int32)
            for i, qr in enumerate(qr_objs):
                qp = qr.ctypes.data_as(p8)
                lib.attn_qr_rows_init(
                    m.ctypes.data_as(p32), lsum.ctypes.data_as(p32), acc.ctypes.data_as(p32)
                )
                steps = kvs[2 * design.NKT * i : 2 * design.NKT * (i + 1)]
                for j, kv in enumerate(steps[: design.NKT]):
                    valid = design.LAST_VALID if j == design.NKT - 1 else design.TK
                    lib.attn_qr_tile_max(
                        qp, kv.ctypes.data_as(p8), m.ctypes.data_as(p32), slot, valid
                    )
                for j, kv in enumerate(steps[design.NKT :]):
                    valid = design.LAST_VALID if j == design.NKT - 1 else design.TK
                    lib.attn_qr_tile_accum(
                        qp,
                        kv.ctypes.data_as(p8),
                        m.ctypes.data_as(p32),
                        lsum.ctypes.data_as(p32),
                        acc.ctypes.data_as(p32),
                        slot,
                        valid,
                    )
                o = np.zeros((design.TQ, design.D), np.int16)
                lib.attn_rows_finish(
                    lsum.ctypes.data_as(p32), acc.ctypes.data_as(p32), o.ctypes.data_as(p16)
                )
                tiles[i][slot] = o
        # The memory tile joins the 4 cores' tiles of each round, then drains them.
        stream = np.concatenate([t.reshape(-1) for rnd in tiles for t in rnd])
        idx = np.concatenate(drains[f"out{col}"])
        assert idx.size == stream.size, col
        out[idx] = stream
        written[idx] += 1
    assert (written == 1).all(), "every output element is drained exactly once"
    return out.reshape(buffers["out"].shape)


@pytest.mark.parametrize(("target", "batch"), [("npu1", 1), ("npu2", 2)])
def test_transfer_plan_replay_equals_the_scalar_layer(glue_lib, target, batch):
    from amanuensis_npu.npu.host_kernel import get_host_kernel

    g = torch.Generator().manual_seed(11 + batch)
    q, k, v = (torch.randn(batch, qz.HEADS, qz.FRAMES, qz.HEAD_DIM, generator=g) for _ in range(3))
    k[:, 3, :, :] += 4.0  # a head with a large shared key component
    q[:, 5] *= 6.0  # a head with peaked attention
    packed = qz.pack_layer(q, k, v)
    names = [s.name for s in qz.buffer_layout(batch)]
    buffers = dict(zip(names, [*packed.inputs, packed.output], strict=True))

    got = _replay(
        design.transfer_plan(target, batch), buffers, glue_lib, design.TARGETS[target]["columns"]
    )

    reference = np.zeros_like(packed.output)
    get_host_kernel().run_layer([*packed.inputs, reference], batch)
    assert got.shape == reference.shape
    assert got.tobytes() == reference.tobytes()
    # And the design's output is real attention, not a coincidence of two zero buffers.
    assert np.count_nonzero(reference[:, :, : qz.FRAMES]) > 0.9 * reference[:, :, : qz.FRAMES].size


# --------------------------------------------------------- toolchain-only steps


def test_design_help_explains_what_is_missing():
    proc = subprocess.run(
        [sys.executable, str(DESIGN_PY), "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert "IRON here:" in proc.stdout
    if not IRON_OK:
        assert "mlir-aie (IRON) not installed" in proc.stdout
        gen = subprocess.run(
            [sys.executable, str(DESIGN_PY), "--target", "npu1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert gen.returncode == 2
        assert gen.stderr.strip().count("\n") == 0
        assert "mlir-aie (IRON) not installed" in gen.stderr


@pytest.mark.skipif(not IRON_OK, reason="mlir-aie (IRON) not installed")
@pytest.mark.parametrize("target", ["npu1", "npu2"])
def test_design_emits_mlir(tmp_path, target):
    out = tmp_path / "aie.mlir"
    assert design.main(["--target", target, "--batch", "1", "-o", str(out)]) == 0
    text = out.read_text()
    assert f"aie.device({target}" in text
    assert "runtime_sequence" in text
    for name in design.ENTRY_POINTS:
        assert name in text
    assert text.count("aie.core(") == design.TARGETS[target]["columns"] * design.ROWS


def _toolchain_missing() -> str | None:
    if shutil.which("make") is None:
        return "make not installed"
    if shutil.which("aiecc.py") is None:
        return "aiecc.py (mlir-aie) not on PATH"
    if _peano_dir() is None:
        return "Peano not found (set PEANO_INSTALL_DIR to the llvm-aie install)"
    if not IRON_OK:
        return IRON_REASON
    return None


@pytest.mark.skipif(_toolchain_missing() is not None, reason=f"{_toolchain_missing()}")
def test_full_build_produces_artifacts_the_runtime_accepts(tmp_path):
    from amanuensis_npu.npu import runtime as npu_runtime

    build = tmp_path / "build"
    proc = subprocess.run(
        ["make", "-C", str(KERNELS), f"BUILD={build}", "TARGETS=npu1 npu2", "BATCHES=1"],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for target in ("npu1", "npu2"):
        art = npu_runtime.check_artifact(build / target / "b1", target, False)
        assert art.manifest["insts_words"] > 0


@pytest.mark.skipif(_toolchain_missing() is None, reason="the NPU toolchain is installed here")
@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_without_toolchain_fails_fast_with_the_reason(tmp_path):
    proc = subprocess.run(
        ["make", "-C", str(KERNELS), f"BUILD={tmp_path / 'build'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "cannot build the NPU kernel" in proc.stderr
    assert "aiecc.py" in proc.stderr and "Peano" in proc.stderr
    assert not (tmp_path / "build").exists()
