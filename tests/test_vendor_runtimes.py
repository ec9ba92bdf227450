"""The vendors' runtimes, run for real: plugin EPs (OpenVINO, QNN), the OpenVINO route.

CI installs onnxruntime-ep-openvino, onnxruntime-qnn and openvino (.ci/install-test-deps.sh,
the `test` extra): a missing one fails here, it is never skipped. QNN's HTP backend on
x86 is Qualcomm's emulation of the Hexagon NPU: it compiles exactly what the device
would, and runs it (slowly) on the CPU.

References: our torch encoder (float32, exact to CTranslate2), stock faster-whisper on
the same machine, onnxruntime's own graph assignment, the vendor packages' documented
library names and the file system.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import faster_whisper
import numpy as np
import onnx
import onnxruntime as ort
import onnxruntime_ep_openvino
import onnxruntime_qnn
import openvino
import pytest
import torch
from conftest import LECTURE, LIBRIVOX, SAMPLE_CLIPS, private_onnx_cache, transcript

import amanuensis_npu
from amanuensis_npu import routing
from amanuensis_npu.attention import CPUAttention
from amanuensis_npu.core.encoder import WhisperEncoder, cached_encoder_weights
from amanuensis_npu.core.routes import collect_encoder_stats
from amanuensis_npu.npu.fidelity import cosine
from amanuensis_npu.onnx import export, plugins, providers, runner, sessions

REAL_SESSION = runner.create_session


@pytest.fixture(scope="module")
def cache(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private package cache (the joined model linked in) with the batch 1 and 2 exports."""
    yield from private_onnx_cache(base_dir, tmp_path_factory, "vendor-cache")


@pytest.fixture(scope="module")
def export_b1(cache: Path, base_dir: Path) -> Path:
    return export.export_path(export.model_sha256(base_dir), 1)


@pytest.fixture(scope="module")
def torch_encoder(base_dir: Path) -> WhisperEncoder:
    return WhisperEncoder.from_weights(cached_encoder_weights(base_dir), CPUAttention())


@pytest.fixture(scope="module")
def torch_text(base_dir: Path) -> dict[Path, str]:
    """Our torch encoder's text (float32 decoder, temperature 0) on two short clips."""
    model = amanuensis_npu.WhisperModel(base_dir, device="cpu", compute_type="float32")
    return {clip: transcript(model, clip) for clip in LIBRIVOX[:2]}




def _ours(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "amanuensis_npu" and r.levelno >= logging.WARNING
    ]


def _compare(session, encoder: WhisperEncoder, windows: list) -> dict:  # noqa: ANN001
    worst = {"max_abs": 0.0, "mean_abs": 0.0, "cosine": 1.0}
    for _, mel in windows:
        with torch.inference_mode():
            ref = encoder(torch.from_numpy(mel[None])).double()
        got = torch.from_numpy(session.run(["encoder_out"], {"mel": mel[None]})[0]).double()
        diff = (got - ref).abs()
        worst["max_abs"] = max(worst["max_abs"], float(diff.max()))
        worst["mean_abs"] = max(worst["mean_abs"], float(diff.mean()))
        worst["cosine"] = min(worst["cosine"], cosine(got, ref))
    return worst


# --- plugin EPs: found, registered once, listed with their devices ---------------------------


def _plugin_cpu_devices() -> list:
    """The OpenVINO plugin's CPU devices as ONNX Runtime itself lists them after registration
    (the reference: onnxruntime's own `get_ep_devices`, not our summary of it)."""
    plugins.register_plugins()
    return [
        d
        for d in ort.get_ep_devices()
        if d.ep_name == providers.OPENVINO and dict(d.ep_metadata).get("ov_device") == "CPU"
    ]


def _host_cpu_vendor_id() -> int:
    """The host CPU's PCI vendor id as ONNX Runtime reads it (0x8086 Intel, 0x1022 AMD)."""
    (cpu,) = [d for d in ort.get_ep_devices() if d.ep_name == providers.CPU]
    return int(cpu.device.vendor_id)


INTEL = 0x8086


def test_plugins_are_registered_once_and_info_lists_them_with_devices(
    capsys: pytest.CaptureFixture,
) -> None:
    """Both plugins register on any CPU. OpenVINO's plugin offers its devices on an Intel
    CPU only: on an AMD one (Zen 4, seen here) `get_ep_devices` lists none for it and
    onnxruntime leaves it out of the available providers, while the openvino package
    itself still lists the CPU. Each branch asserts what that CPU gives."""
    from amanuensis_npu import cli

    first = plugins.register_plugins()
    assert plugins.register_plugins() == first  # a second registration would raise in ORT
    assert first[providers.QNN].library == onnxruntime_qnn.get_library_path()
    assert first[providers.OPENVINO].library == onnxruntime_ep_openvino.get_library_path()
    available = providers.available_providers()
    assert providers.QNN in available
    # OpenVINO's devices as OpenVINO itself lists them (the openvino package, a reference
    # independent of onnxruntime): on Intel the plugin offers the same kinds, elsewhere none.
    ov_kinds = sorted({d.split(".")[0] for d in openvino.Core().available_devices})
    assert "CPU" in ov_kinds
    expected = ov_kinds if _host_cpu_vendor_id() == INTEL else []
    assert providers.provider_devices(providers.OPENVINO) == expected
    assert (providers.OPENVINO in available) == bool(expected)
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "QNNExecutionProvider (onnxruntime_qnn)" in out
    assert "OpenVINOExecutionProvider (onnxruntime_ep_openvino)" in out
    assert f"devices_OpenVINOExecutionProvider: {', '.join(expected) or 'none'}" in out, out


class _FakeEpDevice:
    """What `get_ep_devices` gives for the OpenVINO plugin on an Intel CPU: its target in
    ep_metadata `ov_device` (its entries all report the host's hardware type)."""

    def __init__(self, ov_device: str) -> None:
        self.ep_name = providers.OPENVINO
        self.ep_metadata = {"ov_device": ov_device}


@pytest.mark.parametrize(
    "listed,chosen",
    [(["CPU", "GPU.0"], ["CPU"]), (["GPU.0"], []), ([], [])],
    ids=["intel-cpu", "intel-gpu-only", "amd-none"],
)
def test_openvino_plugin_device_choice_on_either_cpu(
    monkeypatch: pytest.MonkeyPatch, listed: list, chosen: list
) -> None:
    """Both branches on any machine: with the device lists an Intel and an AMD CPU give,
    the CPU entry is chosen when there is one, else the reason names what there is."""
    fakes = [_FakeEpDevice(kind) for kind in listed]
    monkeypatch.setattr(plugins, "ep_devices", lambda name: list(fakes))
    options = providers.default_options(providers.OPENVINO, "ab" * 32, 1, "1")
    devices, plugin_options, why = sessions.plugin_devices(providers.OPENVINO, options)
    assert [d.ep_metadata["ov_device"] for d in devices] == chosen
    assert json.loads(plugin_options["load_config"]) == {"CPU": {"INFERENCE_PRECISION_HINT": "f32"}}
    if chosen:
        assert why is None
    else:
        have = ", ".join(sorted({k.split(".")[0] for k in listed})) or "none"
        assert why == f"OpenVINO has no CPU device here ({have})"


def test_qnn_backend_library_follows_the_platform(monkeypatch) -> None:  # noqa: ANN001
    """Qualcomm's names: QnnHtp.dll on Windows, libQnnHtp.so on Linux (onnxruntime_qnn's own
    `_lib_name`); with the plugin, the file its package ships."""
    assert providers.qnn_backend_library("win32") == "QnnHtp.dll"
    assert providers.qnn_backend_library("linux") == "libQnnHtp.so"
    monkeypatch.setattr(sys, "platform", "win32")
    assert providers.qnn_backend_library() == "QnnHtp.dll"
    monkeypatch.setattr(sys, "platform", "linux")
    path = providers.qnn_options()["backend_path"]
    assert path == onnxruntime_qnn.get_qnn_htp_path() and Path(path).is_file()
    got = providers.session_providers([providers.QNN], "ab" * 32, 1, "1")
    assert got[0][1]["backend_path"] == path and got[0][1]["enable_htp_fp16_precision"] == "1"


def test_the_provider_that_ran_is_read_from_the_session(export_b1: Path) -> None:
    """A QNN plugin handed Windows' library on Linux loads no backend: ONNX Runtime still
    lists QNNExecutionProvider, but every node runs on its CPU provider."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    options.add_provider_for_devices(plugins.ep_devices(providers.QNN), {"backend_path": "x.dll"})
    with plugins.quiet_native_output("test"):
        inner = ort.InferenceSession(str(export_b1), options)
    assert providers.QNN in inner.get_providers()  # what ONNX Runtime says
    session = sessions.Session(inner, [providers.QNN], [])
    assert session.get_providers() == [providers.CPU]  # what ran


# --- OpenVINO through its plugin EP ----------------------------------------------------------


def test_openvino_plugin_f32_on_this_cpu_matches_torch_encoder(
    export_b1: Path, torch_encoder: WhisperEncoder, windows: list
) -> None:
    """Where the plugin offers the CPU (Intel), every node goes to OpenVINO, in f32; where it
    offers none (AMD), the session says why and every node runs on the CPU provider. Either
    way the encoder output is our torch encoder's, within the ONNX route's bars."""
    options = providers.default_options(providers.OPENVINO, "ab" * 32, 1, "1")
    assert options == {"device_type": "CPU", "precision": "FP32"}  # no NPU here: the CPU
    device, plugin_options = providers.openvino_plugin_options(options)
    assert json.loads(plugin_options["load_config"]) == {
        "CPU": {"INFERENCE_PRECISION_HINT": "f32"}
    }  # stated explicitly: OpenVINO's own CPU default is bf16 where the CPU computes it
    # A user's (name, options) pair that names only the device gets f32 too.
    _, pair_options = providers.openvino_plugin_options({"device_type": "CPU"})
    assert json.loads(pair_options["load_config"])["CPU"]["INFERENCE_PRECISION_HINT"] == "f32"
    session = REAL_SESSION(export_b1, [(providers.OPENVINO, options)], 2)
    # Every node ONNX Runtime assigned (after turning Constant nodes into initializers)
    # went to one provider: OpenVINO where it offers the CPU, else ONNX Runtime's own.
    ran = providers.OPENVINO if _plugin_cpu_devices() else providers.CPU
    assert set(session.nodes) == {ran} and session.nodes[ran] > 150
    if ran == providers.CPU:
        assert session.notes == ["OpenVINO has no CPU device here (none)"]
    picked = windows[:: max(1, len(windows) // 3)][:3]
    worst = _compare(session, torch_encoder, picked)
    print(f"OpenVINO plugin requested, {ran} ran, vs torch over {len(picked)} windows: {worst}")
    # The ONNX route's thresholds (test_onnx_encoder: ONNX Runtime CPU vs torch).
    assert worst["max_abs"] <= 5e-3 and worst["mean_abs"] <= 1e-5 and worst["cosine"] >= 0.99999


def test_transcribe_with_the_openvino_provider_reports_what_ran_and_gives_the_torch_text(
    cache: Path, torch_text: dict, caplog: pytest.LogCaptureFixture
) -> None:
    clip = LIBRIVOX[0]
    with caplog.at_level(logging.WARNING, logger="amanuensis_npu"):
        result = amanuensis_npu.transcribe(
            clip, encoder="onnx", onnx_providers=["OpenVINOExecutionProvider"], temperature=0.0
        )
    if _plugin_cpu_devices():
        assert result.encoder == "onnx:OpenVINOExecutionProvider"
        assert not _ours(caplog)
    else:  # one line says what ran instead, and why
        assert result.encoder == "onnx:CPUExecutionProvider"
        (line,) = _ours(caplog)
        assert line == (
            "OpenVINO has no CPU device here (none); the ONNX encoder runs on "
            "CPUExecutionProvider"
        ), line
    assert result.stats["encoder_fallbacks"] == 0
    assert result.text == torch_text[clip]


def test_openvino_npu_where_there_is_none_is_one_line_and_no_native_output(
    cache: Path, base_dir: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    spec = [("OpenVINOExecutionProvider", {"device_type": "NPU"}), "CPUExecutionProvider"]
    with caplog.at_level(logging.WARNING, logger="amanuensis_npu"):
        model = amanuensis_npu.WhisperModel(base_dir, device="npu", onnx_providers=spec)
    assert model.encoder_route.name == "onnx:CPUExecutionProvider"
    (line,) = _ours(caplog)
    assert "no NPU device" in line and "runs on CPUExecutionProvider" in line, line
    assert len(line) < 100, line
    out, err = capfd.readouterr()
    assert "onnxruntime" not in out + err, out + err


def test_a_provider_that_fails_natively_prints_nothing_and_warns_once(
    cache: Path, base_dir: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    """A QNN backend that does not load: ONNX Runtime and QNN print errors of their own on
    fd 2; the user sees our one line only, and the transcription runs on our CPU encoder."""
    spec = [("QNNExecutionProvider", {"backend_path": "/nonexistent/libQnnHtp.so"})]
    with caplog.at_level(logging.WARNING, logger="amanuensis_npu"):
        model = amanuensis_npu.WhisperModel(base_dir, device="cpu", onnx_providers=spec)
        text = transcript(model, LIBRIVOX[1])
    assert text
    (line,) = _ours(caplog)
    assert "no ONNX Runtime session for batch 1 (QNN" in line, line
    out, err = capfd.readouterr()
    assert "[E:onnxruntime" not in err and "QnnHtp" not in err and "QnnHtp" not in out, err


# --- QNN HTP: strict ahead-of-time compile, cached context -----------------------------------


def _single_op_model(path: Path, op: str) -> Path:
    from onnx import helper

    out_shape = [] if op == "Det" else [4, 4]
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"])],
        op,
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_qnn_strict_compile_fails_when_a_node_would_leave_the_htp(tmp_path: Path) -> None:
    options = providers.qnn_options()
    ok = sessions.compile_qnn_context(
        _single_op_model(tmp_path / "relu.onnx", "Relu"), options, tmp_path / "relu-ctx.onnx"
    )
    assert dict(ok) == {providers.QNN: 1} and (tmp_path / "relu-ctx.onnx").is_file()
    # Det has no HTP kernel (QNN op support table): strict mode refuses the CPU for it.
    with pytest.raises(Exception, match="fallback to CPU EP has been explicitly disabled"):
        sessions.compile_qnn_context(
            _single_op_model(tmp_path / "det.onnx", "Det"), options, tmp_path / "det-ctx.onnx"
        )
    assert not (tmp_path / "det-ctx.onnx").exists()
    assert not list(tmp_path.glob(".qnn-compile-*"))  # nothing half-written left behind


def test_qnn_compiles_our_export_once_and_reuses_the_context(
    export_b1: Path, monkeypatch, caplog: pytest.LogCaptureFixture  # noqa: ANN001
) -> None:
    spec = providers.session_providers([providers.QNN], "ab" * 32, 1, "1")
    target = sessions.qnn_context_path(export_b1, spec[0][1])
    assert not target.exists()
    compiles: list[Path] = []
    real_compile = sessions.compile_qnn_context

    def counting(export_path: Path, options: dict, out: Path, threads: int = 0):  # noqa: ANN202
        compiles.append(out)
        nodes = real_compile(export_path, options, out, threads)
        assert set(nodes) == {providers.QNN} and nodes[providers.QNN] > 150  # all on the HTP
        return nodes

    monkeypatch.setattr(sessions, "compile_qnn_context", counting)
    with caplog.at_level(logging.INFO, logger="amanuensis_npu"):
        first = REAL_SESSION(export_b1, spec, 2)
    assert compiles == [target] and target.is_file()
    assert "QNN is compiling" in caplog.text
    assert first.get_providers()[0] == providers.QNN
    # Second start: the cached context, nothing compiled. The context model holds only
    # EPContext nodes, so a session from it cannot have compiled the graph again.
    assert {n.op_type for n in onnx.load(str(target)).graph.node} == {"EPContext"}
    stamp = target.stat().st_mtime_ns
    second = REAL_SESSION(export_b1, spec, 2)
    assert compiles == [target] and target.stat().st_mtime_ns == stamp
    assert second.get_providers() == [providers.QNN]


# The emulated HTP's FP16 arithmetic on a real window (minutes per window on the CPU) is
# measured by benchmarks/npu_numerics.py (QNN FP16 row), not here: what our code decides
# for QNN (options, strict compile, the cached context) is tested above.


# --- the OpenVINO route (encoder="openvino") and what auto picks ------------------------------


def test_openvino_encoder_matches_stock_on_the_sampled_clips(
    cache: Path, base_dir: Path, stock_texts: dict
) -> None:
    ours = amanuensis_npu.WhisperModel(
        base_dir, device="cpu", compute_type="float32", encoder="openvino", cpu_threads=2
    )
    assert ours.encoder_route.name == "openvino:CPU"
    with collect_encoder_stats() as stats:
        for clip in SAMPLE_CLIPS:
            assert transcript(ours, clip) == stock_texts[clip, False], clip.name
    counts = stats.snapshot()
    assert counts["encoder_fallbacks"] == 0
    assert counts["encoder_routes"] == {"openvino:CPU": counts["encoder_windows"]}


def test_openvino_compiles_once_and_recompiles_a_rewritten_export(
    cache: Path, base_dir: Path, export_b1: Path, tmp_path: Path
) -> None:
    """A second start reads the compiled encoder from OpenVINO's cache (its own
    LOADED_FROM_CACHE says so); an export written again is compiled anew, its old cache
    folder gone, since OpenVINO keys a file's compile by path and options only."""
    from amanuensis_npu.openvino import route as openvino_route

    # A copy of its own, so that no other test's compile of the shared export is in the cache.
    own = tmp_path / "own-encoder-b1.onnx"
    shutil.copyfile(export_b1, own)
    export_b1 = own
    spec = [("CPU", {"precision": "f32"})]
    first = openvino_route.compile_encoder(export_b1, spec, 2)
    folder = openvino_route.cache_dir_for(export_b1)
    again = openvino_route.compile_encoder(export_b1, spec, 2)
    assert (first.loaded_from_cache, again.loaded_from_cache) == (False, True)
    assert any(folder.iterdir())
    x = {"mel": np.zeros((1, 80, 3000), np.float32)}
    np.testing.assert_array_equal(first.run(None, x)[0], again.run(None, x)[0])
    data = export_b1.read_bytes()
    export_b1.unlink()
    export_b1.write_bytes(data)  # the same path, a new file (as ensure_export rebuilds it)
    rebuilt = openvino_route.compile_encoder(export_b1, spec, 2)
    assert not rebuilt.loaded_from_cache
    assert not folder.exists() and openvino_route.cache_dir_for(export_b1).is_dir()


def test_openvino_bf16_only_when_asked(cache: Path, base_dir: Path) -> None:
    from amanuensis_npu.openvino import devices

    bf16 = amanuensis_npu.WhisperModel(base_dir, device="cpu", encoder="openvino:cpu:bf16")
    if devices.native_bf16()[0]:
        assert bf16.encoder_route.name == "openvino:CPU:bf16"
        assert bf16.encoder_route.precision == "bf16"
    else:  # OpenVINO crashes on bf16 without bf16 hardware: f32 runs, and the reason says so
        assert bf16.encoder_route.name == "openvino:CPU"
        assert bf16.encoder_route.precision == "f32" and "f32 ran" in bf16.encoder_route.reason
    f32 = amanuensis_npu.WhisperModel(base_dir, device="cpu", encoder="openvino")
    assert f32.encoder_route.precision == "f32"
    with pytest.raises(ValueError, match="OpenVINO device must be one of"):
        amanuensis_npu.WhisperModel(base_dir, device="cpu", encoder="openvino:TPU")


def _cpu_flags() -> set[str]:
    """The kernel's CPU flags (Linux): an independent record of what the CPU computes."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _auto_name() -> str:
    """What auto must run on this CPU: bf16 where the kernel lists bf16 instructions."""
    native = bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
    return "openvino:CPU:bf16" if native else "openvino:CPU"


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads Linux's CPU flags")
def test_openvino_says_bf16_is_native_exactly_where_the_cpu_has_bf16_instructions() -> None:
    from amanuensis_npu.openvino import devices

    native, why = devices.native_bf16()
    assert native == bool({"avx512_bf16", "amx_bf16"} & _cpu_flags()), why
    assert devices.auto_precision() == ("bf16" if native else "f32", why)


@pytest.mark.parametrize("native", [True, False], ids=["bf16-cpu", "no-bf16-cpu"])
def test_auto_precision_follows_the_cpu_on_either_branch(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """Both branches on any machine: the reason names the precision and why."""
    from amanuensis_npu.openvino import devices

    why = "the CPU computes bf16 natively" if native else "no native bf16 on this CPU"
    monkeypatch.setattr(devices, "native_bf16", lambda: (native, why))
    monkeypatch.delenv("AMANUENSIS_NPU_XRT", raising=False)
    choice, reason = routing.resolve_auto("npu")
    precision = "bf16" if native else "f32"
    assert choice == f"openvino:CPU:{precision}"
    assert reason.endswith(f"on the CPU in {precision}; {why}")


def test_bf16_encoder_is_closer_to_float32_than_stock_int8(
    cache: Path, base_dir: Path, windows: list
) -> None:
    """Why auto may run bf16: against CTranslate2's float32 encoder (the reference, same
    machine), OpenVINO's bf16 encoder is closer than the int8 encoder stock faster-whisper
    users run. Two windows here (speech and the conversation); every window of the test
    speech in benchmarks/cpu_precision.py."""
    import ctranslate2
    import numpy as np

    def ct2(compute_type: str):  # noqa: ANN202
        model = ctranslate2.models.Whisper(str(base_dir), compute_type=compute_type)
        return lambda x: np.array(model.encode(ctranslate2.StorageView.from_array(x), True))

    from amanuensis_npu.openvino import devices

    bf16 = amanuensis_npu.WhisperModel(base_dir, device="cpu", encoder="openvino:CPU:bf16")
    if not devices.native_bf16()[0]:  # auto never runs bf16 here; asked, it runs f32
        assert bf16.encoder_route.precision == "f32" and "f32 ran" in bf16.encoder_route.reason
        return
    reference, stock_int8 = ct2("float32"), ct2("int8")
    picked = [w for w in windows if "conversation" in w[0]][:1] + windows[:1]
    for name, mel in picked:
        x = mel[None].astype(np.float32)
        ref = torch.from_numpy(reference(x)).double()
        ours = cosine(torch.from_numpy(bf16.encoder_route(torch.from_numpy(x))).double(), ref)
        stock = cosine(torch.from_numpy(stock_int8(x)).double(), ref)
        print(f"{name}: cosine vs float32: openvino bf16 {ours:.6f}, stock int8 {stock:.6f}")
        assert ours > stock, (name, ours, stock)


def test_auto_without_npu_picks_openvino_with_one_short_line(
    cache: Path, base_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch  # noqa: ANN001
) -> None:
    monkeypatch.setattr(routing, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="amanuensis_npu"):
        model = amanuensis_npu.WhisperModel(base_dir, device="npu", compute_type="int8")
        amanuensis_npu.WhisperModel(base_dir, device="npu", compute_type="int8")
    assert model.encoder_route.name == _auto_name()
    (line,) = _ours(caplog)
    assert "CPU" in line and "amanuensis-npu info" in line and len(line) < 100, line


def test_auto_says_nothing_when_the_user_switched_the_npu_off(
    cache: Path, base_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch  # noqa: ANN001
) -> None:
    monkeypatch.setattr(routing, "_warned", set())
    monkeypatch.setenv("AMANUENSIS_NPU_XRT", "off")
    with caplog.at_level(logging.WARNING, logger="amanuensis_npu"):
        model = amanuensis_npu.WhisperModel(base_dir, device="npu", compute_type="int8")
    assert model.encoder_route.name == _auto_name()
    assert _ours(caplog) == []


# --- sessions are created once; a failing batch size does not stall ---------------------------


def _failing_session(path: Path, eps: list, threads: int):  # noqa: ANN202
    """A real onnxruntime failure: strict mode with a provider that is not here."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return ort.InferenceSession(str(path), options, providers=["VitisAIExecutionProvider"])


def test_a_session_that_fails_is_created_once(
    cache: Path, base_dir: Path, monkeypatch, torch_text: dict  # noqa: ANN001
) -> None:
    created: list[Path] = []

    def counting(path: Path, eps: list, threads: int):  # noqa: ANN202
        created.append(path)
        return _failing_session(path, eps, threads)

    monkeypatch.setattr(runner, "create_session", counting)
    model = amanuensis_npu.WhisperModel(
        base_dir, device="cpu", compute_type="float32", encoder="onnx"
    )
    clip = LIBRIVOX[1]
    with collect_encoder_stats() as stats:
        texts = [transcript(model, clip) for _ in range(2)]
    assert texts == [torch_text[clip]] * 2
    assert stats.snapshot()["encoder_calls"] >= 4
    assert [p.name.rsplit("-", 1)[-1] for p in created] == ["b1.onnx"]  # once, at load


def test_batched_run_finishes_when_the_batch_2_session_fails(
    cache: Path, base_dir: Path, monkeypatch  # noqa: ANN001
) -> None:
    created: list[str] = []

    def b2_fails(path: Path, eps: list, threads: int):  # noqa: ANN202
        created.append(path.name.rsplit("-", 1)[-1])
        if path.name.endswith("-b2.onnx"):
            return _failing_session(path, eps, threads)
        return REAL_SESSION(path, eps, threads)

    monkeypatch.setattr(runner, "create_session", b2_fails)
    ours = amanuensis_npu.WhisperModel(
        base_dir, device="cpu", compute_type="float32", encoder="onnx", cpu_threads=2
    )
    stock = faster_whisper.WhisperModel(str(base_dir), device="cpu", compute_type="float32")
    clip = LECTURE  # 3+ windows at once: the batch 2 export is asked for
    result: list[str] = []
    worker = threading.Thread(
        target=lambda: result.append(transcript(ours, clip, True)), daemon=True
    )
    worker.start()
    worker.join(timeout=300)
    assert not worker.is_alive(), "batched transcription did not finish"
    assert result == [transcript(stock, clip, True)]
    assert created.count("b2.onnx") == 1 and ours.encoder_route.batch_sizes == [1]


def test_onnx_providers_with_the_default_encoder_is_the_onnx_route(
    cache: Path, tmp_path: Path, torch_text: dict
) -> None:
    from amanuensis_npu import cli

    clip = LIBRIVOX[0]
    code = cli.main(
        ["transcribe", str(clip), "--onnx_providers", "CPUExecutionProvider", "--temperature",
         "0", "--compute_type", "float32", "--output_format", "json", "--output_dir",
         str(tmp_path), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    data = json.loads((tmp_path / f"{clip.stem}.json").read_text())
    text = "".join(s["text"] for s in data["segments"]).strip()
    assert text == torch_text[clip]
    result = amanuensis_npu.transcribe(clip, onnx_providers=["CPUExecutionProvider"])
    assert result.encoder == "onnx:CPUExecutionProvider"

