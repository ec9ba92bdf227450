"""The NPU kernel build: IRON design, runtime sequence, manifest, Makefile, host check.

What runs here (no NPU toolchain on this machine):
- the manifest generator on dummy artifacts: buffer order and sizes equal
  `buffer_layout`, sha256 of the files, and the NPU runtime accepts the result;
- the runtime sequence against the shim DMA task queue (at most 4 pushes per
  channel, no await that needs a later push) and the per-core data memory;
- plan.py's transfer plan replayed byte for byte: the shim transfers are
  gathered from real packed buffers with their exact offsets/sizes/strides, the
  objects are handed to every core as the ObjectFifos would, each core's call
  sequence runs iron_glue.cc + attention.cc through ctypes (the scalar path, and the
  AIE path against the aie_api stand-in in 64-byte aligned objects), and the drained
  output must equal the scalar layer driver's byte for byte. So the design covers every
  (batch, head, query tile) once, with all key tiles in both passes;
- the aie_api stand-in refuses what aie_api refuses (vectors under 128 bits, mmul
  shapes a target lacks, misaligned loads), and `make -C kernels host-check` runs.
What needs the toolchain (skips with the reason otherwise): emitting MLIR with
IRON, and the full `make -C kernels` build. A missing g++ or make fails under CI=true.
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
from _numerics_helpers import require_tool

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


design = _load("kb_design", DESIGN_PY)  # the IRON program; it puts its siblings on the path
import estimate  # noqa: E402 - the cycle estimate, as design.py imports it
import layout  # noqa: E402 - shapes, core memory, runtime buffers
import plan  # noqa: E402 - the runtime sequence and its queue check

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

    adapters = qz.buffer_layout(batch)
    assert [b["name"] for b in manifest["buffers"]] == [s.name for s in adapters]
    assert [b["nbytes"] for b in manifest["buffers"]] == [s.nbytes for s in adapters]
    assert [tuple(b["shape"]) for b in manifest["buffers"]] == [s.shape for s in adapters]
    assert [b["dtype"] for b in manifest["buffers"]] == [s.dtype for s in adapters]
    assert [b["direction"] for b in manifest["buffers"]] == [s.direction for s in adapters]
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
    got = layout.runtime_buffers(batch)
    want = qz.buffer_layout(batch)
    assert [
        (b["name"], b["dtype"], tuple(b["shape"]), b["nbytes"], b["direction"]) for b in got
    ] == [(s.name, s.dtype, s.shape, s.nbytes, s.direction) for s in want]


def test_design_constants_agree_with_the_adapters():
    assert layout.SPEC_VERSION == qz.SPEC_VERSION
    assert (layout.D, layout.H, layout.FRAMES, layout.TK, layout.TQ) == (
        qz.HEAD_DIM,
        qz.HEADS,
        qz.FRAMES,
        qz.KEY_TILE,
        qz.Q_TILE,
    )
    assert layout.TP == qz.padded_frames(qz.FRAMES) == 1536
    assert layout.HEADER_WORDS == qz.HEADER_WORDS
    assert layout.REC_BYTES == qz.RECORD_BYTES == 4352
    assert layout.ROWP_WORDS == qz.rowp_words(layout.TP)
    # 1500 frames: 23 full key tiles and 28 valid keys in the last one.
    assert (layout.NKT, layout.LAST_VALID) == (24, 28)


# ------------------------------------------------------- core data memory (finding 5)


def _spec_core_memory_total() -> int:
    text = SPEC_MD.read_text()
    stated = re.search(r"\| \*\*total\*\* \| \*\*([\d,]+)", text)
    assert stated, "SPEC.md §6.2 no longer states the per-core total"
    return int(stated[1].replace(",", ""))


@pytest.mark.parametrize("target", ["npu1", "npu2"])
def test_core_memory_counts_everything_and_fits(target):
    total = sum(layout.CORE_MEMORY.values())
    assert total <= layout.CORE_MEMORY_LIMIT == 64 * 1024
    assert _spec_core_memory_total() == total, "SPEC §6.2 and layout.CORE_MEMORY disagree"
    # The buffers the design declares are the ones counted (sizes of its IRON types).
    entry = layout.CORE_MEMORY
    assert entry["qr object (depth 1)"] == layout.QR_BYTES
    assert entry["kv objects (depth 2)"] == 2 * layout.KV_BYTES
    assert entry["s scores int32 32x64 (LocalBuffer)"] == layout.TQ * layout.TK * 4
    cfg = layout.design_config(target, 1)["placement"]
    assert cfg["core_memory_bytes"] == total
    assert cfg["cores"] == {"npu1": 16, "npu2": 32}[target]
    assert cfg["groups"] * cfg["cores_per_group"] == cfg["cores"]
    assert cfg["rounds_per_head"] * cfg["cores_per_group"] == layout.NQT


def test_core_memory_counts_the_compiled_tables(aie_lib):
    # What the AIE object keeps in data memory besides the buffers: its constant tables,
    # read from the AIE path compiled against the aie_api stand-in (same header, same
    # sizes as the Peano object's).
    tables = {k: v for k, v in layout.CORE_MEMORY.items() if "(rodata)" in k or "(bank" in k}
    assert aie_lib.attn_table_bytes() == sum(tables.values())


@pytest.mark.parametrize("exp", ["lut", "nolut"])
def test_memory_map_puts_each_lookup_table_pair_in_two_banks(exp):
    # Finding 3: aie::lut needs LUT_ab and LUT_cd in different memory banks. The design's
    # memory map (a model of mlir-aie's placement, layout.memory_map) places every item of
    # core_memory(exp) without overlap inside 64 KiB, each table inside one bank, the two
    # tables of each pair in different banks, and the stack first at its explicit size.
    placed = layout.memory_map(exp)
    items = layout.core_memory(exp)
    for name, size in items.items():  # a depth-2 ObjectFifo is two buffers, [0] and [1]
        parts = [n for n in placed if n == name or n.startswith(f"{name} [")]
        assert sum(placed[n][1] - placed[n][0] for n in parts) == size, name
    assert max(end for _, end in placed.values()) <= layout.CORE_MEMORY_LIMIT
    stack = next(n for n in placed if n.startswith("stack"))
    assert placed[stack] == (0, layout.STACK_BYTES) and layout.STACK_BYTES > 1024
    if exp == "lut":
        for ab, cd in layout.LUT_PAIRS:
            assert layout.bank_of(placed[ab]) != layout.bank_of(placed[cd])
    else:
        assert not any("LUT" in n for n in placed), "the nolut build keeps no lookup table"
    # the check can fail: both tables of a pair in one bank is refused
    spans = [(60000, 62048), (62080, 64128)]
    assert layout.bank_of(spans[0]) == layout.bank_of(spans[1]) == "D"


def test_makefile_pins_the_sequential_allocator(tmp_path):
    require_tool("make", "cannot dry-run the kernel Makefile")
    proc = subprocess.run(
        ["make", "-n", "-C", str(KERNELS), f"BUILD={tmp_path}", "TARGETS=npu1", "BATCHES=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    aiecc = [ln for ln in proc.stdout.splitlines() if "--aie-generate-xclbin" in ln]
    assert aiecc and all("--alloc-scheme=basic-sequential" in ln for ln in aiecc), proc.stdout


def test_spec_quotes_the_cycle_estimate_design_computes():
    # SPEC §6.4's ranges are estimate.cycle_estimate's output, labelled as estimates.
    text = SPEC_MD.read_text()
    section = text[text.index("### 6.4") : text.index("## 7.")]
    assert "estimate" in section and "not a measurement" in section
    for target in ("npu1", "npu2"):
        e = estimate.cycle_estimate(target)
        low, high = e["compute_ms_low"], e["compute_ms_high"]
        assert f"**{low:.1f}-{high:.1f} ms**" in section, target
        assert (
            f"{e['compute_cycles_low'] / 1e6:.2f}-{e['compute_cycles_high'] / 1e6:.2f} M" in section
        )
        assert f"{e['stream_cycles'] / 1e6:.2f} M cycles" in section
        assert e["bound"] == "compute"
        assert e["matmul_per_step_high"] > e["matmul_per_step_low"]



def test_spec_quotes_the_estimate_per_whisper_size_and_target():
    """SPEC §6.4's per-size rows are cycle_estimate's for each size's heads, times its
    layers; work per layer grows in proportion to the heads (compute over fixed cores)."""
    text = SPEC_MD.read_text()
    section = text[text.index("### 6.4") : text.index("## 7.")]
    assert "Per Whisper size (estimates, not measurements)" in section
    for row in estimate.size_estimate_rows():
        assert row in section, row
    for target in ("npu1", "npu2"):
        base = estimate.cycle_estimate(target, heads=8)["compute_cycles_low"]
        for heads in (6, 12, 16, 20):
            got = estimate.cycle_estimate(target, heads=heads)["compute_cycles_low"]
            assert abs(got / base - heads / 8) < 1e-3, (target, heads)


# -------------------------------------------------------- runtime sequence (finding 1)


def _indices(t) -> np.ndarray:
    index = np.asarray(t.offset, dtype=np.int64)
    for size, stride in zip(t.sizes, t.strides, strict=True):
        index = index[..., None] + np.arange(size, dtype=np.int64) * stride
    return index.reshape(-1)


@pytest.mark.parametrize("target", ["npu1", "npu2"])
@pytest.mark.parametrize("batch", [1, 8])
def test_plan_respects_shim_dma_limits(target, batch):
    itemsize = {"q": 1, "k": 1, "v": 1, "rowp": 4, "out": 2}
    transfers = plan.transfer_plan(target, batch)
    for t in transfers:
        words0 = t.sizes[3] * itemsize[t.buffer] / 4
        assert words0 == int(words0) and words0 <= 1023, t
        assert t.sizes[1] <= 1023 and t.sizes[2] <= 1023 and 1 <= t.sizes[0] <= 64, t
        assert t.strides[3] == 1, t
        assert t.wait, t  # every push is retired by an await
    assert {t.column for t in transfers} == set(range(layout.TARGETS[target]["columns"]))


@pytest.mark.parametrize("target", ["npu1", "npu2"])
@pytest.mark.parametrize("batch", [1, 8])
def test_runtime_sequence_keeps_every_shim_queue_within_its_depth(target, batch):
    result = plan.check_plan(plan.runtime_sequence(target, batch))
    assert result.ok, result.problems[:5]
    assert result.max_outstanding <= plan.QUEUE_DEPTH == 4
    assert result.max_bds <= plan.SHIM_BDS
    # Two rounds in flight: the queue model reaches the depth, so a third would not fit.
    assert result.max_outstanding == 4


def _one_group_per_step(target: str) -> list:
    """Today's shape of the sequence before issue 9: all of a head's transfers in one
    task group, fills never awaited, 12 fills per qr channel (3 rounds x 4 pieces)."""
    seq = []
    for step in range(2):
        for col in range(layout.TARGETS[target]["columns"]):
            for piece in range(12):
                seq.append(
                    plan.Transfer(
                        "fill",
                        f"qr{col}",
                        "q",
                        piece,
                        (1, 1, 1, 8),
                        (0, 0, 0, 1),
                        col,
                        step,
                        wait=False,
                    )
                )
            seq.append(
                plan.Transfer(
                    "drain", f"out{col}", "out", 0, (1, 1, 1, 8), (0, 0, 0, 1), col, step, wait=True
                )
            )
        seq.append(plan.Finish(step))
    return seq


def test_check_plan_catches_an_overflowing_or_deadlocking_sequence():
    result = plan.check_plan(_one_group_per_step("npu1"))
    assert not result.ok
    assert result.max_outstanding > plan.QUEUE_DEPTH
    assert any("deadlock" in p for p in result.problems)
    assert any("never awaited" in p for p in result.problems)
    # Finishing a round before the next round's transfers exist is fine; awaiting a round
    # whose transfers are issued later is a deadlock.
    seq = plan.runtime_sequence("npu1", 1)
    first_finish = next(i for i, op in enumerate(seq) if isinstance(op, plan.Finish))
    moved = [seq[first_finish], *seq[:first_finish], *seq[first_finish + 1 :]]
    bad = plan.check_plan(moved)
    assert any("deadlock" in p for p in bad.problems)


WHISPER_HEADS = (6, 8, 12, 16, 20)  # tiny, base, small, medium, large (issue 24's list)


def test_check_plan_command_prints_the_largest_queue_per_target_and_size():
    cmd = [sys.executable, str(DESIGN_PY), "--check-plan"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for heads in WHISPER_HEADS:
        for target in ("npu1", "npu2"):
            (line,) = [ln for ln in lines if ln.startswith(f"{target} {heads} heads:")]
            assert "at most 4 outstanding pushes per shim channel (limit 4)" in line, line
            assert line.endswith(": ok"), line


@pytest.mark.parametrize("target", ["npu1", "npu2"])
@pytest.mark.parametrize("heads", [*WHISPER_HEADS, 7])
def test_every_size_keeps_the_queues_and_moves_each_byte_as_the_spec_says(target, heads):
    """For every Whisper size (and an odd count, where npu2's second group idles in the
    last step): the replay stays within the 4-deep shim queues, and the plan fills every
    query byte and row word once, K in both passes of every round, V once per round, and
    drains every output element once, judged against the adapters' buffer sizes."""
    batch = 2
    seq = plan.runtime_sequence(target, batch, heads)
    result = plan.check_plan(seq)
    assert result.ok, result.problems[:5]
    assert result.max_outstanding == plan.QUEUE_DEPTH == 4
    assert result.max_bds <= plan.SHIM_BDS
    adapters = {s.name: s for s in qz.buffer_layout(batch, heads=heads)}
    counts = {name: np.zeros(int(np.prod(s.shape)), np.int64) for name, s in adapters.items()}
    for t in (op for op in seq if isinstance(op, plan.Transfer)):
        np.add.at(counts[t.buffer], _indices(t), 1)
    per_bh = layout.ROWP_WORDS
    rowp_rows = np.arange(counts["rowp"].size) % per_bh >= layout.HEADER_WORDS
    assert (counts["rowp"][rowp_rows] == 1).all() and (counts["rowp"][~rowp_rows] == 0).all()
    assert (counts["q"] == 1).all() and (counts["out"] == 1).all()
    # 48 query tiles per head over a group's 16 cores: 3 rounds, each streaming every key
    # record in both passes (pass 1 keys only) and every value record in pass 2.
    rounds = (qz.padded_frames(qz.FRAMES) // qz.Q_TILE) // 16
    assert (counts["k"] == 2 * rounds).all() and (counts["v"] == rounds).all()
    config = layout.design_config(target, batch, heads)
    assert config["tiles"]["heads"] == heads
    g = min(layout.groups(target), heads)
    assert config["placement"]["rounds_per_core_per_dispatch"] == batch * -(-heads // g) * 3


@pytest.mark.parametrize("heads", [6, 20])
def test_manifest_for_another_size_is_found_by_its_shape(tmp_path, monkeypatch, heads):
    """make_manifest --heads records the shape; the runtime finds the set under
    <target>/h<H>/ for that head count only, and names the build command for another."""
    from amanuensis_npu.npu import artifacts

    out = tmp_path / "npu1" / f"h{heads}" / "b1"
    _dummy_artifacts(out, n_words=64, seed=heads)
    rc = make_manifest.main(
        ["--target", "npu1", "--batch", "1", "--heads", str(heads), "--dir", str(out)]
    )
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["heads"] == heads == manifest["tiles"]["heads"]
    adapters = qz.buffer_layout(1, heads=heads)
    assert [b["nbytes"] for b in manifest["buffers"]] == [s.nbytes for s in adapters]
    monkeypatch.setenv("AMANUENSIS_NPU_ARTIFACTS", str(tmp_path))
    monkeypatch.setenv("AMANUENSIS_NPU_CACHE", str(tmp_path / "cache"))
    found = artifacts.find_artifacts("npu1", simulated=False, heads=heads)
    assert found.by_batch[1].directory == out and found.by_batch[1].heads == heads
    # `info` and availability see every shape a machine built (heads 0: any).
    assert artifacts.find_artifacts("npu1", simulated=False, heads=0).by_batch[1].heads == heads
    with pytest.raises(artifacts.NoArtifact, match="make -C kernels HEADS=12 TARGETS=npu1"):
        artifacts.find_artifacts("npu1", simulated=False, heads=12)


def test_pass_one_streams_keys_only():
    # Finding 7: the pass-1 fills read the k buffer on both join channels; V is read once
    # per round, by pass 2.
    for target in ("npu1", "npu2"):
        transfers = plan.transfer_plan(target, 1)
        kv = [t for t in transfers if t.fifo[0] in "kv" and t.fifo[1:].isdigit()]
        v_bytes = sum(_indices(t).size for t in kv if t.buffer == "v")
        k_bytes = sum(_indices(t).size for t in kv if t.buffer == "k")
        rounds = layout.H * layout.ROUNDS
        assert v_bytes == rounds * layout.NKT * layout.REC_BYTES  # V once per round
        assert k_bytes == 2 * rounds * layout.NKT * layout.REC_BYTES  # K in both passes


# ------------------------------------------------------- transfer plan replay


def _build_glue(tmp_path_factory, name: str, flags: list[str]) -> ctypes.CDLL:
    cxx = require_tool(os.environ.get("CXX", "g++"), "cannot build the kernel glue")
    out = tmp_path_factory.mktemp(name) / f"lib{name}.so"
    src = KERNELS / "attention"
    cmd = [cxx, "-O2", "-shared", "-fPIC", "-std=c++20", *flags, "-I", str(src)]
    cmd += [str(src / "iron_glue.cc"), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lib = ctypes.CDLL(str(out))
    p8, p16, p32, i32 = (
        ctypes.POINTER(ctypes.c_int8),
        ctypes.POINTER(ctypes.c_int16),
        ctypes.POINTER(ctypes.c_int32),
        ctypes.c_int32,
    )
    lib.attn_qr_rows_init.argtypes = [p32, p32, p32]
    lib.attn_qr_pass1.argtypes = [p8, p8, p32, p32, i32, i32, i32]
    lib.attn_qr_pass2.argtypes = [p8, p8, p32, p16, p32, p32, p32, i32, i32]
    lib.attn_rows_finish.argtypes = [p32, p32, p16]
    lib.attn_qr_layout.argtypes = [i32]
    lib.attn_qr_layout.restype = i32
    return lib


@pytest.fixture(scope="module")
def glue_lib(tmp_path_factory):
    return _build_glue(tmp_path_factory, "glue", ["-DATTN_SCALAR"])


@pytest.fixture(scope="module")
def aie_lib(tmp_path_factory):
    """The AIE path of the glue for aie2, against the aie_api stand-in."""
    host = KERNELS / "host"
    lib = _build_glue(
        tmp_path_factory,
        "glue_aie2",
        ["-D__AIE_ARCH__=20", "-DATTN_HOST_DRIVER", "-I", str(host)],
    )
    lib.attn_table_bytes.restype = ctypes.c_int32
    return lib


def test_aie_path_exponent_runs_on_the_lookup_units(aie_lib):
    # Finding 6: one pass-2 step sends every one of its 32 x 64 scores through
    # aie::linear_approx and aie::parallel_lookup (16 lanes at a time), and its products
    # through aie::mmul; no score takes a scalar path.
    aie_lib.attn_standin_count.restype = ctypes.c_uint64
    aie_lib.attn_standin_count.argtypes = [ctypes.c_int32]
    rng = np.random.default_rng(3)
    qr = _aligned(layout.QR_BYTES, np.int8)
    kv = _aligned(layout.KV_BYTES, np.int8)
    qr[:] = rng.integers(-127, 128, qr.size)
    kv[:] = rng.integers(-127, 128, kv.size)
    kv.view(np.int16)[qz.SCALES_OFFSET // 2 : qz.SCALES_OFFSET // 2 + 64] = 1 << 13
    words = qr[layout.QR_WORDS_OFFSET :].view(np.int32)
    words[:] = 12 | (4 << 16)
    s = _aligned(layout.TQ * layout.TK * 4, np.int32)
    p = _aligned(layout.TQ * layout.TK * 2, np.int16)
    m = _aligned(layout.TQ * 4, np.int32)
    lsum = _aligned(layout.TQ * 4, np.int32)
    acc = _aligned(layout.TQ * layout.D * 4, np.int32)
    p8, p16, p32 = (ctypes.POINTER(t) for t in (ctypes.c_int8, ctypes.c_int16, ctypes.c_int32))
    aie_lib.attn_qr_rows_init(*(b.ctypes.data_as(p32) for b in (m, lsum, acc)))
    aie_lib.attn_qr_pass1(
        qr.ctypes.data_as(p8),
        kv.ctypes.data_as(p8),
        s.ctypes.data_as(p32),
        m.ctypes.data_as(p32),
        0,
        64,
        0,
    )
    before = [aie_lib.attn_standin_count(i) for i in range(3)]
    aie_lib.attn_qr_pass2(
        qr.ctypes.data_as(p8),
        kv.ctypes.data_as(p8),
        s.ctypes.data_as(p32),
        p.ctypes.data_as(p16),
        m.ctypes.data_as(p32),
        lsum.ctypes.data_as(p32),
        acc.ctypes.data_as(p32),
        0,
        64,
    )
    after = [aie_lib.attn_standin_count(i) for i in range(3)]
    macs, la, pl = (a - b for a, b in zip(after, before, strict=True))
    scores = layout.TQ * layout.TK
    assert (la, pl) == (scores, scores)
    assert macs == 2 * layout.TQ * layout.TK * layout.D  # Q·Kᵀ and P·V
    assert lsum.min() >= 8192  # every row's max key contributes 2^13


def test_glue_object_layout_equals_design(glue_lib):
    compiled = [glue_lib.attn_qr_layout(i) for i in range(7)]
    assert compiled == [
        layout.ROWS,
        layout.Q_TILE_BYTES,
        layout.QR_WORDS_OFFSET,
        layout.QR_BYTES,
        layout.REC_BYTES,
        layout.KV_BYTES,
        qz.SCALES_OFFSET,
    ]


def _aligned(nbytes: int, dtype) -> np.ndarray:
    """A zeroed array whose data starts on a 64-byte boundary, like a core's buffers."""
    raw = np.zeros(nbytes + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start : start + nbytes].view(dtype)


def _replay(transfers, buffers: dict[str, np.ndarray], lib, n_cols: int) -> np.ndarray:
    """Run one dispatch the way the design moves data, with the glue on each core."""
    flat = {name: buf.reshape(-1) for name, buf in buffers.items()}
    streams: dict[str, list[bytes]] = defaultdict(list)
    drains: dict[str, list[np.ndarray]] = defaultdict(list)
    for t in transfers:
        idx = _indices(t)
        assert idx.min() >= 0 and idx.max() < flat[t.buffer].size, t
        if t.kind == "fill":
            streams[t.fifo].append(flat[t.buffer][idx].tobytes())
        else:
            drains[t.fifo].append(idx)

    def objects(fifo: str, size: int) -> list[bytes]:
        data = b"".join(streams[fifo])
        assert len(data) % size == 0, fifo
        return [data[i : i + size] for i in range(0, len(data), size)]

    def core_buffer(data: bytes) -> np.ndarray:
        buf = _aligned(len(data), np.int8)
        buf[:] = np.frombuffer(data, np.int8)
        return buf

    out = np.full(flat["out"].size, -32768, dtype=np.int16)
    written = np.zeros(flat["out"].size, dtype=np.int64)
    p8, p16, p32 = (
        ctypes.POINTER(ctypes.c_int8),
        ctypes.POINTER(ctypes.c_int16),
        ctypes.POINTER(ctypes.c_int32),
    )
    per_query_tile = layout.PAIRS + layout.NKT
    kv_by_group = {}
    for g in range(n_cols // layout.COLS_PER_GROUP):
        # The memory tile joins one record from each channel into every object.
        ks, vs = objects(f"k{g}", layout.REC_BYTES), objects(f"v{g}", layout.REC_BYTES)
        assert len(ks) == len(vs)
        kv_by_group[g] = [core_buffer(k + v) for k, v in zip(ks, vs, strict=True)]
    s = _aligned(layout.TQ * layout.TK * 4, np.int32)
    p = _aligned(layout.TQ * layout.TK * 2, np.int16)
    m = _aligned(layout.TQ * 4, np.int32)
    lsum = _aligned(layout.TQ * 4, np.int32)
    acc = _aligned(layout.TQ * layout.D * 4, np.int32)
    tile = _aligned(layout.TQ * layout.D * 2, np.int16)
    for col in range(n_cols):
        g = col // layout.COLS_PER_GROUP
        qr_objs = [core_buffer(o) for o in objects(f"qr{col}", layout.QR_BYTES)]
        kvs = kv_by_group[g]
        # Lock step: every core of the group consumes 12 + 24 kv objects per query tile.
        assert len(kvs) == per_query_tile * len(qr_objs)
        tiles = [[None] * layout.ROWS for _ in qr_objs]
        for slot in range(layout.ROWS):
            for i, qr in enumerate(qr_objs):
                qp = qr.ctypes.data_as(p8)
                lib.attn_qr_rows_init(
                    m.ctypes.data_as(p32), lsum.ctypes.data_as(p32), acc.ctypes.data_as(p32)
                )
                steps = kvs[per_query_tile * i : per_query_tile * (i + 1)]
                for j, kv in enumerate(steps[: layout.PAIRS]):
                    valid1 = layout.LAST_VALID if j == layout.PAIRS - 1 else layout.TK
                    lib.attn_qr_pass1(
                        qp,
                        kv.ctypes.data_as(p8),
                        s.ctypes.data_as(p32),
                        m.ctypes.data_as(p32),
                        slot,
                        layout.TK,
                        valid1,
                    )
                for j, kv in enumerate(steps[layout.PAIRS :]):
                    valid = layout.LAST_VALID if j == layout.NKT - 1 else layout.TK
                    lib.attn_qr_pass2(
                        qp,
                        kv.ctypes.data_as(p8),
                        s.ctypes.data_as(p32),
                        p.ctypes.data_as(p16),
                        m.ctypes.data_as(p32),
                        lsum.ctypes.data_as(p32),
                        acc.ctypes.data_as(p32),
                        slot,
                        valid,
                    )
                lib.attn_rows_finish(
                    lsum.ctypes.data_as(p32), acc.ctypes.data_as(p32), tile.ctypes.data_as(p16)
                )
                tiles[i][slot] = tile.copy()
        # The memory tile joins the 4 cores' tiles of each round, then drains them.
        stream = np.concatenate([t.reshape(-1) for rnd in tiles for t in rnd])
        idx = np.concatenate(drains[f"out{col}"])
        assert idx.size == stream.size, col
        out[idx] = stream
        written[idx] += 1
    assert (written == 1).all(), "every output element is drained exactly once"
    return out.reshape(buffers["out"].shape)


def _replay_case(target: str, batch: int):
    from amanuensis_npu.npu.host_kernel import get_host_kernel

    g = torch.Generator().manual_seed(11 + batch)
    q, k, v = (torch.randn(batch, qz.HEADS, qz.FRAMES, qz.HEAD_DIM, generator=g) for _ in range(3))
    k[:, 3, :, :] += 4.0  # a head with a large shared key component
    q[:, 5] *= 6.0  # a head with peaked attention
    packed = qz.pack_layer(q, k, v)
    names = [s.name for s in qz.buffer_layout(batch)]
    buffers = dict(zip(names, [*packed.inputs, packed.output], strict=True))
    reference = np.zeros_like(packed.output)
    get_host_kernel().run_layer([*packed.inputs, reference], batch)
    # The design's output is real attention, not a coincidence of two zero buffers.
    assert np.count_nonzero(reference[:, :, : qz.FRAMES]) > 0.9 * reference[:, :, : qz.FRAMES].size
    return buffers, reference


@pytest.mark.parametrize(("target", "batch"), [("npu1", 1), ("npu2", 2)])
def test_transfer_plan_replay_equals_the_scalar_layer(glue_lib, target, batch):
    buffers, reference = _replay_case(target, batch)
    got = _replay(
        plan.transfer_plan(target, batch), buffers, glue_lib, layout.TARGETS[target]["columns"]
    )
    assert got.shape == reference.shape
    assert got.tobytes() == reference.tobytes()


def test_transfer_plan_replay_through_the_aie_path(aie_lib):
    # The design's objects, 64-byte aligned like core buffers, through the AIE path's
    # entry points (aie2, against the aie_api stand-in): alignment and object offsets are
    # what the stand-in checks on every vector load and store.
    buffers, reference = _replay_case("npu1", 1)
    got = _replay(plan.transfer_plan("npu1", 1), buffers, aie_lib, 4)
    assert got.tobytes() == reference.tobytes()


# ------------------------------------------------------------ IRON usage (finding 4)


@pytest.mark.parametrize("heads", [8, 6, 20])
@pytest.mark.parametrize("target", ["npu1", "npu2"])
def test_build_program_uses_iron_as_documented_and_issues_the_plan(monkeypatch, target, heads):
    # design.build_program() against a recording stand-in of IRON's API (mlir-aie
    # python/iron/): per-core buffers are LocalBuffers created in the core body, kernel
    # operands are MLIR values (acquired elements, LocalBuffers, ints), and the runtime
    # calls are exactly runtime_sequence(): the same tasks, groups, waits and shim tiles.
    import _fake_iron as fake

    fake.install(monkeypatch)
    assert design.iron_status()[0]
    design.build_program(target, 1, heads)
    rt = fake.Program.last.rt
    cores = layout.TARGETS[target]["columns"] * layout.ROWS
    assert len(rt.workers) == cores
    for w in rt.workers:
        assert not w.placed, "no GlobalBuffer handed to a Worker"
        assert w.stack_size == layout.STACK_BYTES, "the stack is set explicitly, as counted"
        assert len(w.local_buffers) == 5  # m, l, acc, s, p
        init, pass1, pass2, finish = w.fn_args[3:7]
        assert [k.name for k in (init, pass1, pass2, finish)] == list(layout.ENTRY_POINTS)
    init, pass1, pass2, finish = rt.workers[0].fn_args[3:7]
    # traced once per worker: a range_ body plus the peeled last key tile, per pass
    assert (len(init.calls), len(pass1.calls), len(pass2.calls), len(finish.calls)) == (
        cores,
        2 * cores,
        2 * cores,
        cores,
    )
    assert {c[6] for c in pass1.calls} == {layout.TK, layout.LAST_VALID}
    # the runtime sequence's arguments are the adapters' buffers for this head count
    sizes = [t.__args__[0][0] for t in rt.arg_types]  # np.ndarray[(n,), dtype]
    assert sizes == [int(np.prod(b.shape)) for b in qz.buffer_layout(1, heads=heads)]
    seq = plan.runtime_sequence(target, 1, heads)
    assert len(rt.ops) == len(seq)
    handles: dict[int, int] = {}
    for got, want in zip(rt.ops, seq, strict=True):
        if isinstance(want, plan.Finish):
            assert got == ("finish", handles[want.group])
            continue
        kind, fifo, tap, group, wait, placement = got
        assert (kind, fifo, wait) == (want.kind, want.fifo, want.wait)
        assert handles.setdefault(want.group, group) == group
        assert (tap.offset, tuple(tap.sizes), tuple(tap.strides)) == (
            want.offset,
            want.sizes,
            want.strides,
        )
        assert (placement.col, placement.row) == (want.column, layout.SHIM_ROW)


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
    for name in layout.ENTRY_POINTS:
        assert name in text
    assert text.count("aie.core(") == layout.TARGETS[target]["columns"] * layout.ROWS


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
def test_make_without_toolchain_fails_fast_with_the_reason(tmp_path):
    require_tool("make", "cannot run the kernel Makefile")
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


# ------------------------------------------------------- the AIE path on the host


def _standin_compile(tmp_path: Path, arch: int, body: str) -> subprocess.CompletedProcess:
    cxx = require_tool(os.environ.get("CXX", "g++"), "cannot compile against the stand-in")
    src = tmp_path / f"probe{arch}.cc"
    src.write_text("#include <aie_api/aie.hpp>\n" + body)
    cmd = [cxx, "-std=c++20", "-fsyntax-only", f"-D__AIE_ARCH__={arch}"]
    cmd += ["-I", str(KERNELS / "host"), str(src)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("arch", [20, 21])
def test_standin_refuses_a_vector_narrower_than_128_bits(tmp_path, arch):
    # Finding 2: `aie::load_v<8>` of int8 (64 bits) does not exist in aie_api; the
    # stand-in fails to compile it for both targets, as Peano would, and accepts 128 bits.
    narrow = "void f(const int8 *p, int8 *o) { aie::store_v(o, aie::load_v<8>(p)); }\n"
    bad = _standin_compile(tmp_path, arch, narrow)
    assert bad.returncode != 0
    assert "no such vector" in bad.stderr or "128" in bad.stderr
    ok = _standin_compile(tmp_path, arch, narrow.replace("load_v<8>", "load_v<16>"))
    assert ok.returncode == 0, ok.stderr
    # Inserting a 32-bit piece into a larger vector (the old query-tile gather) fails too.
    insert = "void g(const int8 *p) { aie::vector<int8, 32> a; a.insert(0, aie::load_v<4>(p)); }\n"
    assert _standin_compile(tmp_path, arch, insert).returncode != 0


def test_standin_has_no_iota_and_checks_mmul_shapes_per_target(tmp_path):
    iota = "auto f() { return aie::iota<int32, 16>(); }\n"
    assert _standin_compile(tmp_path, 20, iota).returncode != 0  # finding 3
    # int8 x int8 4x8x4 exists on AIE-ML but not on XDNA 2 (aie_api detail/mmul.hpp).
    shape = "void f() { aie::mmul<4, 8, 4, int8, int8, acc32> m; (void)m; }\n"
    assert _standin_compile(tmp_path, 20, shape).returncode == 0
    bad = _standin_compile(tmp_path, 21, shape)
    assert bad.returncode != 0 and "shape not in aie_api's table" in bad.stderr


def test_standin_aborts_on_a_misaligned_load(tmp_path):
    cxx = require_tool(os.environ.get("CXX", "g++"), "cannot compile against the stand-in")
    src = tmp_path / "misaligned.cc"
    src.write_text(
        "#include <aie_api/aie.hpp>\n"
        "alignas(64) static int8 buf[128];\n"
        "int main(int argc, char **) {\n"
        "  auto v = aie::load_v<32>(buf + 16 * argc);  // 256 bits from a 16-byte offset\n"
        "  aie::store_v(buf + 64, v);\n  return 0;\n}\n"
    )
    exe = tmp_path / "misaligned"
    cmd = [cxx, "-std=c++20", "-D__AIE_ARCH__=20", "-I", str(KERNELS / "host"), str(src)]
    assert subprocess.run([*cmd, "-o", str(exe)], capture_output=True, timeout=300).returncode == 0
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "insufficient alignment" in run.stderr


STANDIN = KERNELS / "host" / "aie_api" / "aie.hpp"
ATTENTION_CC = KERNELS / "attention" / "attention.cc"


def _aie_path_source() -> str:
    """The AIE path of attention.cc (after `#else  // --- AIE path`), comments removed."""
    text = ATTENTION_CC.read_text()
    text = text[
        text.index(
            "// ------------------------------------------------------------------- AIE path"
        ) :
    ]
    return re.sub(r"//[^\n]*", "", text)


def _modeled_names() -> dict[str, str]:
    """The stand-in's table `//   MODEL name  file:line  note` -> {name: citation}."""
    rows = re.findall(r"^//   MODEL (\w+)\s+(\S+)", STANDIN.read_text(), re.M)
    return dict(rows)


def test_standin_models_every_aie_api_name_the_kernel_uses():
    # Every aie:: name and every member of an aie_api object that the AIE path uses is in
    # the stand-in's table, with the upstream header and line its signature follows.
    source = _aie_path_source()
    names = set(re.findall(r"\baie::(\w+)", source)) - {"standin"}
    names |= set(re.findall(r"\.(?:template\s+)?(\w+)\s*[<(]", source))
    names |= set(re.findall(r"::(size_[ABC]|from_uint32)\b", source))
    modeled = _modeled_names()
    assert names, "no aie_api names found: the parser no longer matches attention.cc"
    missing = sorted(names - set(modeled))
    assert not missing, f"attention.cc uses aie_api names the stand-in does not model: {missing}"
    for name, citation in modeled.items():
        assert re.fullmatch(r"[\w/]+\.(hpp|cpp|h):\d+(-\d+)?,?", citation), (name, citation)
    # and each modeled name is declared in the stand-in itself
    body = STANDIN.read_text().split("namespace aie {", 1)[1]
    for name in names:
        assert re.search(rf"\b{name}\b", body), name


@pytest.mark.parametrize("arch", [20, 21])
def test_standin_lookup_objects_are_not_const(tmp_path, arch):
    # aie_api's linear_approx::compute and parallel_lookup::fetch are non-const (they
    # write a scratch ring; aie.hpp:6448, :6520): calling them on a const object must
    # not compile, and on a non-const one must.
    body = (
        "alignas(64) static int32 la[1024]; alignas(64) static int16 pw[64];\n"
        "void f(aie::vector<int16, 16> x, aie::vector<int32, 16> n) {\n"
        "  aie::lut<4, int32, int32> l1(128, la, la); aie::lut<4, int16, int16> l2(16, pw, pw);\n"
        "  CONST aie::linear_approx<int16, aie::lut<4, int32, int32>> a(l1, 5);\n"
        "  CONST aie::parallel_lookup<int32, aie::lut<4, int16, int16>> p(l2);\n"
        "  (void)a.compute(x); (void)p.fetch(n);\n}\n"
    )
    bad = _standin_compile(tmp_path, arch, body.replace("CONST", "const"))
    assert bad.returncode != 0 and "discards qualifiers" in bad.stderr
    ok = _standin_compile(tmp_path, arch, body.replace("CONST", ""))
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(("arch", "bank"), [(20, 16), (21, 32)])
def test_standin_reads_lookup_tables_at_the_architecture_bank_width(tmp_path, arch, bank):
    # A 16-entry int16 table laid out with 128-bit banks is aie::lut's layout on AIE-ML
    # only; on XDNA 2 (256-bit banks, mlir-aie AIE2P/lut_based_ops.cpp) its copies
    # disagree and the stand-in aborts, and the reverse holds for a 256-bit table.
    cxx = require_tool(os.environ.get("CXX", "g++"), "cannot compile against the stand-in")
    per = {16: 8, 32: 16}
    results = {}
    for width, run_len in per.items():
        values = [1 << (13 - n) if n <= 13 else 0 for n in range(16)]
        table = []
        for i in range(0, 16, run_len):
            table += values[i : i + run_len] * 2
        src = tmp_path / f"lut{arch}_{width}.cc"
        src.write_text(
            "#include <aie_api/aie.hpp>\n"
            f"alignas(64) static int16 t[32] = {{{', '.join(map(str, table))}}};\n"
            "int main() {\n  aie::lut<4, int16, int16> l(16, t, t);\n"
            "  aie::parallel_lookup<int32, aie::lut<4, int16, int16>> p(l);\n"
            "  aie::vector<int32, 16> n; for (unsigned i = 0; i < 16; ++i) n.lane_[i] = i;\n"
            "  auto v = p.fetch(n); return v.lane_[9] == 16 ? 0 : 3;\n}\n"
        )
        exe = tmp_path / f"lut{arch}_{width}"
        cmd = [cxx, "-std=c++20", f"-D__AIE_ARCH__={arch}", "-I", str(KERNELS / "host"), str(src)]
        assert (
            subprocess.run([*cmd, "-o", str(exe)], capture_output=True, timeout=300).returncode == 0
        )
        results[width] = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert results[bank].returncode == 0, results[bank].stderr
    other = results[32 if bank == 16 else 16]
    assert other.returncode != 0 and "copies disagree" in other.stderr


def exp2n_inputs() -> np.ndarray:
    """Every exponent the kernel can produce, t in [0, T_ZERO], padded to whole blocks."""
    t = np.arange(qz.T_ZERO + 1, dtype=np.int32)
    block = 1024  # ATTN_EXP_BLOCK
    return np.concatenate([t, np.full(-len(t) % block, qz.T_ZERO, dtype=np.int32)])


def _aligned64(a: np.ndarray) -> np.ndarray:
    raw = np.empty(a.nbytes + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    out = raw[start : start + a.nbytes].view(a.dtype)
    out[:] = a
    return out


def run_exp2n_blocks(lib: ctypes.CDLL, t: np.ndarray) -> np.ndarray:
    """p = EXP2N(t) through the kernel's bring-up entry point attn_exp2n_block."""
    fn = lib.attn_exp2n_block
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    t = _aligned64(np.asarray(t, dtype=np.int32))
    p = _aligned64(np.full(len(t), -1, dtype=np.int32))  # 512-bit loads need 64-byte alignment
    for i in range(0, len(t), 1024):
        fn(t[i:].ctypes.data, p[i:].ctypes.data)
    return p


@pytest.mark.parametrize("exp", ["lut", "nolut"])
@pytest.mark.parametrize("arch", ["aie2", "aie2p"])
def test_exponent_of_every_input_equals_the_emulator(arch, exp):
    # The bring-up's first question, asked on the host: EXP2N(t) of every t the kernel can
    # produce (0..T_ZERO) through the AIE path's exponent unit (lookup units or no tables,
    # per architecture), against the emulator's SPEC §4.1 integers.
    require_tool(os.environ.get("CXX", "g++"), "cannot build the AIE path on the host")
    hc = _host_check()
    lib = ctypes.CDLL(str(hc.build(arch, exp=exp)))
    from amanuensis_npu.npu import emulator as emu

    t = exp2n_inputs()
    got = run_exp2n_blocks(lib, t)
    want = emu.exp2n(t.astype(np.int64))
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{bad.size} exponents differ, first t={t[bad[0]]}: {got[bad[0]]}"


def test_the_core_does_no_64_bit_integer_arithmetic():
    # Finding 4: 64-bit scalar products and shifts need compiler helpers (__muldi3,
    # __ashrdi3) at link time. The AIE path and the glue it links use 32-bit scalars;
    # 64-bit values live only in vector accumulators (aie::accum<acc64>).
    source = _aie_path_source()
    glue = re.sub(r"//[^\n]*", "", (KERNELS / "attention" / "iron_glue.cc").read_text())
    glue = glue.split("#if defined(ATTN_HOST_DRIVER)\n\n#include <string.h>", 1)[0]
    for name, text in (("attention.cc AIE path", source), ("iron_glue.cc", glue)):
        found = re.findall(r"\b(u?int64_t|long long|__int128|int64)\b", text)
        assert not found, f"{name} uses 64-bit integers: {sorted(set(found))}"


def _host_check():
    return _load("kb_host_check", KERNELS / "host" / "host_check.py")


@pytest.mark.parametrize(("exp", "limit"), [("lut", 40), ("nolut", 12)])
def test_make_host_check_runs_and_reports(tmp_path, exp, limit):
    require_tool("make", "cannot run `make -C kernels host-check`")
    require_tool(os.environ.get("CXX", "g++"), "cannot build the AIE path on the host")
    proc = subprocess.run(
        [
            "make",
            "-C",
            str(KERNELS),
            "host-check",
            f"PYTHON={sys.executable}",
            f"EXP={exp}",
            # a smoke run of the make target: tests/test_numerics.py runs every case
            f"HOST_CHECK_ARGS=--no-speech --limit {limit}",
        ],
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"exponent: {exp}" in proc.stdout
    total = int(re.search(r"^(\d+) cases$", proc.stdout, re.M)[1])
    assert total == limit
    assert f"scalar vs emulator: {total} cases byte-identical" in proc.stdout
    line = f"aie-path vs scalar: {total} cases byte-identical (aie2), {total} (aie2p)"
    assert line in proc.stdout


def test_host_check_covers_every_whisper_head_count():
    """tiny 6, base 8, small 12 and large 20 heads: the scalar path equals the emulator,
    and the AIE path of both targets equals the scalar path, byte for byte. Each head has
    its own statistics, so a head computed at another's offset cannot pass."""
    require_tool(os.environ.get("CXX", "g++"), "cannot build the AIE path on the host")
    hc = _host_check()
    cases = list(hc.head_count_cases())
    assert [bufs[0].shape[1] for _, bufs in cases] == [6, 8, 12, 20]
    for _, bufs in cases:
        from amanuensis_npu.npu import emulator as emu

        out = emu.emulate_layer(bufs[:4])
        assert not np.array_equal(out[0, 0], out[0, 1]) and np.abs(out[0, -1]).max() > 0
    result = hc.check(iter(cases), ["aie2", "aie2p"], log=lambda _line: None)
    assert result["failures"] == []
    assert result["scalar_vs_emulator"] == 4 and result["same"] == {"aie2": 4, "aie2p": 4}


def test_host_check_reports_a_difference():
    # The check can fail: a reference that differs in one element is reported and counted.
    hc = _host_check()
    require_tool(os.environ.get("CXX", "g++"), "cannot build the AIE path on the host")
    from _numerics_helpers import integer_case

    label, bufs = integer_case(0)
    from amanuensis_npu.npu import emulator as emu

    def off_by_one(b):
        want = emu.emulate_layer(b[:4])
        want.reshape(-1)[7] += 1
        return want

    logged = []
    result = hc.check(iter([(label, bufs)]), ["aie2"], reference=off_by_one, log=logged.append)
    assert result["same"] == {"aie2": 0} and len(result["failures"]) == 1
    assert "1 elements differ" in logged[0]
    assert hc.summary(result) == "aie-path vs scalar: 0 cases byte-identical (aie2)"


# ----------------------------------------------------------- CI tool policy (issue 13)


def test_a_missing_build_tool_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="g\\+\\+ not installed"):
        require_tool("g++", "cannot build the kernel")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_tool("g++", "cannot build the kernel")
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert require_tool("make", "x") == "/usr/bin/make"
