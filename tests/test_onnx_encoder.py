"""The ONNX encoder route (`encoder="onnx"`): export, ONNX Runtime parity, providers, fallback.

References: our torch encoder (float32, CPU attention) for encoder outputs; stock
faster-whisper and stock whisperx (CTranslate2 float32, temperature 0) for transcripts.
Exports go to a private cache for this module, made once (batch 1 and 2) and reused.
No vendor build of onnxruntime exists here: NPU providers are exercised through what
onnxruntime reports (monkeypatched) and through sessions that really fail.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import (
    BATCHED_CLIPS,
    CARDS,
    LIBRIVOX,
    SAMPLE_CLIPS,
    console_script,
    private_onnx_cache,
    transcript,
)

import amanuensis_npu
import amanuensis_npu.integrations.whisperx  # noqa: F401  (see below)
from amanuensis_npu import routing
from amanuensis_npu.attention import CPUAttention
from amanuensis_npu.core.encoder import WhisperEncoder, cached_encoder_weights
from amanuensis_npu.core.routes import collect_encoder_stats
from amanuensis_npu.npu.fidelity import cosine
from amanuensis_npu.onnx import export, providers, runner
from amanuensis_npu.openvino import devices as openvino_devices

# The WhisperX stack is imported with the module, not inside a test: optuna (under
# pyannote) keeps the traceback of an optional import that failed, and that traceback's
# frames would keep the importing test's frame, with its models, alive for the session.

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "amanuensis_npu" / "assets" / "demo.wav"
REAL_SESSION = runner.create_session  # tests below substitute the module's factory


@pytest.fixture(scope="module")
def onnx_cache(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private package cache (the joined model linked in) holding exports for batch 1 and 2."""
    yield from private_onnx_cache(base_dir, tmp_path_factory, "onnx-cache")


@pytest.fixture(scope="module")
def weights(base_dir: Path) -> dict:
    return cached_encoder_weights(base_dir)


@pytest.fixture(scope="module")
def sha(base_dir: Path) -> str:
    return hashlib.sha256((base_dir / "model.bin").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def stock(stock_texts: dict) -> dict[tuple[Path, bool], str]:
    """Stock faster-whisper's text per (clip, batched): the session's shared reference."""
    return stock_texts


@pytest.fixture(scope="module")
def torch_cpu_text(base_dir: Path) -> dict[Path, str]:
    """Our torch encoder's text for the short clips the provider and fallback tests use."""
    model = amanuensis_npu.WhisperModel(base_dir, device="cpu", compute_type="float32")
    return {clip: transcript(model, clip) for clip in (LIBRIVOX[0], LIBRIVOX[1])}


@pytest.fixture
def onnx_model(onnx_cache: Path, base_dir: Path) -> amanuensis_npu.WhisperModel:
    # Per test (two use it): a module-wide model would stay loaded under every later test.
    return amanuensis_npu.WhisperModel(
        base_dir, device="cpu", compute_type="float32", encoder="onnx", cpu_threads=2
    )




# --- export --------------------------------------------------------------------------------


def test_export_is_static_standard_checked_and_tagged(onnx_cache: Path, sha: str) -> None:
    path = export.export_path(sha, 1)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")][0] >= 17
    assert {node.domain for node in model.graph.node} <= {""}  # standard operators only
    ops = {n.op_type for n in model.graph.node}
    assert {"MatMul", "Softmax", "LayerNormalization", "Conv"} <= ops
    (inp,), (out,) = model.graph.input, model.graph.output
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 80, 3000]
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 1500, 512]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["amanuensis_npu.model_sha256"] == sha  # hashed here, independently
    assert meta["amanuensis_npu.batch"] == "1"
    assert meta["amanuensis_npu.version"] == amanuensis_npu.__version__
    assert export.exported_batches(sha) == [1, 2]


def test_export_is_reused_when_valid_and_rebuilt_when_broken(
    weights: dict, sha: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = export.ensure_export(weights, sha, 1, tmp_path)
    first = path.stat()
    assert export.ensure_export(weights, sha, 1, tmp_path) == path
    assert path.stat().st_ino == first.st_ino and path.stat().st_mtime_ns == first.st_mtime_ns

    # Cut short (an interrupted copy, a full disk): rebuilt, with one warning naming it.
    path.write_bytes(path.read_bytes()[:1_000_000])
    with caplog.at_level(logging.WARNING, logger="amanuensis_npu"):
        export.ensure_export(weights, sha, 1, tmp_path)
    assert "not a valid ONNX model" in caplog.text and str(path) in caplog.text
    assert export.check_export(path, sha, 1, (80, 1500, 512)) is None

    # A valid ONNX file made for another model: rebuilt too.
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == "amanuensis_npu.model_sha256":
            prop.value = "0" * 64
    onnx.save(model, str(path))
    assert "model_sha256" in export.check_export(path, sha, 1, (80, 1500, 512))
    export.ensure_export(weights, sha, 1, tmp_path)
    assert export.check_export(path, sha, 1, (80, 1500, 512)) is None
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".checked"))
    assert left == [path.name]  # no temporary leftovers


def test_a_checked_export_is_not_checked_again_by_the_next_process(
    weights: dict, sha: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking an 82 MB export costs seconds per start: a stamp beside it remembers the
    check; a file written again is checked again."""
    path = export.ensure_export(weights, sha, 1, tmp_path)
    export.ensure_export(weights, sha, 1, tmp_path)  # checked once, stamped
    checks: list[Path] = []
    real = export.check_export
    monkeypatch.setattr(export, "_VALID", set())  # as in a new process
    monkeypatch.setattr(export, "check_export", lambda p, *a: checks.append(p) or real(p, *a))
    assert export.ensure_export(weights, sha, 1, tmp_path) == path and checks == []
    path.write_bytes(path.read_bytes())  # same bytes, written again: a new modification time
    monkeypatch.setattr(export, "_VALID", set())
    assert export.ensure_export(weights, sha, 1, tmp_path) == path and checks == [path]


def test_export_of_a_corrupt_model_is_one_clear_error(tmp_path: Path, base_dir: Path) -> None:
    from amanuensis_npu.core.weights import ModelFormatError

    model = tmp_path / "broken"
    model.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(base_dir / name, model / name)
    (model / "model.bin").write_bytes((base_dir / "model.bin").open("rb").read(5_000_000))
    with pytest.raises(ModelFormatError, match="truncated or corrupt"):
        export.export_encoder(model, out=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --- numerics: ONNX Runtime CPU vs our torch encoder -----------------------------------------


def test_onnxruntime_cpu_matches_torch_encoder_on_sampled_windows(
    onnx_cache: Path, weights: dict, sha: str, windows: list
) -> None:
    torch_encoder = WhisperEncoder.from_weights(weights, CPUAttention())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(
        str(export.export_path(sha, 1)), options, providers=["CPUExecutionProvider"]
    )
    worst = {"max_abs": 0.0, "mean_abs": 0.0, "cosine": 1.0}
    for name, mel in windows:
        with torch.inference_mode():
            ref = torch_encoder(torch.from_numpy(mel[None])).double()
        got = torch.from_numpy(session.run(None, {"mel": mel[None]})[0]).double()
        diff = (got - ref).abs()
        worst["max_abs"] = max(worst["max_abs"], float(diff.max()))
        worst["mean_abs"] = max(worst["mean_abs"], float(diff.mean()))
        worst["cosine"] = min(worst["cosine"], cosine(got, ref))
        assert float(diff.max()) <= 5e-3, (name, float(diff.max()))
        assert float(diff.mean()) <= 1e-5, (name, float(diff.mean()))
        assert cosine(got, ref) >= 0.99999, (name, cosine(got, ref))
    print(f"ONNX Runtime CPU vs torch encoder over {len(windows)} windows: {worst}")


# --- transcripts ---------------------------------------------------------------------------


def test_whisper_model_onnx_matches_stock_on_the_sampled_clips(onnx_model, stock: dict) -> None:  # noqa: ANN001
    assert onnx_model.encoder_route.name == "onnx:CPUExecutionProvider"
    before = onnx_model.encoder_route.stats.snapshot()
    for clip in SAMPLE_CLIPS:
        assert transcript(onnx_model, clip) == stock[clip, False], clip.name
    after = onnx_model.encoder_route.stats.snapshot()
    assert after["encoder_windows"] - before["encoder_windows"] >= 2 * len(SAMPLE_CLIPS)
    assert after["encoder_fallbacks"] == before["encoder_fallbacks"]


def test_batched_pipeline_runs_through_exported_sizes_and_matches_stock(
    onnx_model,  # noqa: ANN001
    stock: dict,
) -> None:
    route = onnx_model.encoder_route
    assert route.batch_sizes == [2, 1]
    seen: list[int] = []
    inner = route._run

    def spy(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape[0])
        return inner(x)

    route._run = spy
    try:
        for clip in BATCHED_CLIPS:
            assert transcript(onnx_model, clip, True) == stock[clip, True], clip.name
    finally:
        del route._run
    assert max(seen) >= 3  # the lecture sends 3+ windows at once: no export of its own
    assert set(route._sessions) == {1, 2}  # ... so they went through batch 2 and batch 1


def test_transcribe_api_reports_the_route(onnx_cache: Path) -> None:
    onnx_result = amanuensis_npu.transcribe(DEMO, device="cpu", encoder="onnx", temperature=0.0)
    torch_result = amanuensis_npu.transcribe(DEMO, device="cpu", encoder="torch", temperature=0.0)
    assert onnx_result.text == torch_result.text
    assert onnx_result.encoder == "onnx:CPUExecutionProvider"
    assert torch_result.encoder == "torch"
    stats = onnx_result.stats
    assert stats["encoder_routes"] == {"onnx:CPUExecutionProvider": stats["encoder_windows"]}
    assert stats["encoder_calls"] >= 2 and stats["encoder_fallbacks"] == 0
    assert stats["attention_calls"] == 0  # attention ran inside ONNX Runtime
    assert torch_result.stats["attention_calls"] == 6 * torch_result.stats["encoder_windows"]
    # ONNX Runtime ran the whole encoder: no attention backend, no attention counter
    assert onnx_result.backend == "none"
    assert onnx_result.route() == {
        "encoder": "onnx:CPUExecutionProvider", "encoder_device": "CPUExecutionProvider",
        "encoder_precision": "f32", "encoder_reason": "encoder='onnx' chosen explicitly",
        "attention": "none",
    }
    assert torch_result.backend == "cpu"
    assert torch_result.route()["attention_calls"] == torch_result.stats["attention_calls"]


def test_cli_encoder_option_and_export_command(
    onnx_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from amanuensis_npu import cli

    assert cli.main(["export-onnx", "--batch", "1", "--out", str(tmp_path / "exports")]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed.parent == tmp_path / "exports" and printed.is_file()
    sha = export.model_sha256(amanuensis_npu.core.models.resolve_model("base"))
    assert export.check_export(printed, sha, 1, (80, 1500, 512)) is None

    clip = LIBRIVOX[4]
    code = cli.main(
        ["transcribe", str(clip), "--device", "cpu", "--encoder", "onnx", "--temperature", "0",
         "--output_format", "json", "--output_dir", str(tmp_path), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    segments = json.loads((tmp_path / f"{clip.stem}.json").read_text())["segments"]
    text = " ".join(s["text"].strip() for s in segments)
    expected = amanuensis_npu.transcribe(clip, device="cpu", encoder="torch", temperature=0.0)
    assert text and text == " ".join(s.text.strip() for s in expected.segments)

    capsys.readouterr()
    bad = cli.main(["transcribe", str(DEMO), "--onnx_providers", "[not json"])
    err = capsys.readouterr().err
    assert bad == 1 and err.startswith("error: onnx providers: not valid JSON"), err
    assert len(err.strip().splitlines()) == 1


# --- WhisperX ------------------------------------------------------------------------------


def test_whisperx_onnx_pipeline_matches_stock_whisperx(onnx_cache: Path, base_dir: Path) -> None:
    import whisperx

    import amanuensis_npu.integrations.whisperx as wxn

    asr = {"temperatures": [0.0]}
    ours = wxn.load_model(
        "base", device="npu", compute_type="float32", language="en", asr_options=asr,
        encoder="onnx", threads=2,
    )  # fmt: skip
    stock = whisperx.load_model(
        str(base_dir), "cpu", compute_type="float32", language="en", asr_options=asr, threads=2
    )
    assert ours.model.encoder_route.name == "onnx:CPUExecutionProvider"
    for clip in [LIBRIVOX[0], CARDS[0]]:
        audio = whisperx.load_audio(str(clip))
        a = ours.transcribe(audio, batch_size=8)["segments"]
        b = stock.transcribe(audio, batch_size=8)["segments"]
        assert [s["text"] for s in a] == [s["text"] for s in b], clip.name
    assert ours.model.encoder_route.stats.snapshot()["encoder_fallbacks"] == 0


def test_whisperx_npu_cli_with_onnx_encoder_matches_stock_cli(
    onnx_cache: Path, base_dir: Path, tmp_path: Path
) -> None:
    def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
        full = {**os.environ, "PYTHONWARNINGS": "ignore", **env}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=full)

    clip = CARDS[2]
    common = ["--compute_type", "float32", "--temperature_increment_on_fallback", "None",
              "--no_align", "--language", "en", "--output_format", "json"]  # fmt: skip
    ours = run(
        [console_script("whisperx-npu"), str(clip), "--model", "base", "--device", "npu", *common,
         "-o", str(tmp_path / "ours")],
        AMANUENSIS_NPU_ENCODER="onnx",
    )  # fmt: skip
    assert ours.returncode == 0, ours.stderr[-2000:]
    assert "encoder route onnx:CPUExecutionProvider" in ours.stdout + ours.stderr
    stock = run(
        [console_script("whisperx"), str(clip), "--model", str(base_dir), "--device", "cpu",
         *common, "-o", str(tmp_path / "stock")]
    )  # fmt: skip
    assert stock.returncode == 0, stock.stderr[-2000:]

    def text(directory: Path) -> str:
        data = json.loads((directory / f"{clip.stem}.json").read_text())
        return " ".join(s["text"].strip() for s in data["segments"])

    assert text(tmp_path / "ours") and text(tmp_path / "ours") == text(tmp_path / "stock")


def test_whisperx_npu_rejects_a_bad_encoder_setting(
    tmp_path: Path, monkeypatch, capsys  # noqa: ANN001
) -> None:
    from amanuensis_npu.integrations import whisperx_cli

    monkeypatch.setenv("AMANUENSIS_NPU_ENCODER", "gpu")
    code = whisperx_cli.main([str(CARDS[0]), "--device", "npu", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "encoder must be one of auto, torch, onnx" in err.strip().splitlines()[-1]


# --- provider choice -----------------------------------------------------------------------


def _our_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "amanuensis_npu" and r.levelno >= logging.WARNING
    ]


def test_auto_without_npu_provider_uses_torch_cpu_with_one_warning(
    onnx_cache: Path, base_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:  # noqa: ANN001
    """Without openvino (auto's CPU choice when installed: test_vendor_runtimes), our torch
    encoder; one short line, the reasons in `info`."""
    from amanuensis_npu import attention

    monkeypatch.setattr(routing, "_warned", set())
    monkeypatch.setattr(attention, "_warned_auto", False)
    monkeypatch.setattr(openvino_devices, "installed", lambda: None)
    assert providers.npu_provider()[0] is None
    with caplog.at_level(logging.WARNING, logger="amanuensis_npu"):
        model = amanuensis_npu.WhisperModel(base_dir, device="npu", compute_type="int8")
        amanuensis_npu.WhisperModel(base_dir, device="npu", compute_type="int8")
    assert model.encoder_route.name == "torch" and model.attention_backend.name == "cpu"
    logged = _our_warnings(caplog)
    assert len(logged) == 1, logged
    assert "runs on the CPU" in logged[0] and "amanuensis-npu info" in logged[0]
    assert len(logged[0]) < 100, logged[0]
    assert "openvino not installed" in routing.describe()["encoder_auto_reason"]


def test_auto_prefers_an_npu_provider_with_the_vendor_options(
    onnx_cache: Path,
    base_dir: Path,
    sha: str,
    torch_cpu_text: dict,
    caplog: pytest.LogCaptureFixture,
    monkeypatch,  # noqa: ANN001
) -> None:
    """onnxruntime reporting VitisAI makes `auto` take the ONNX route with AMD's options.

    This onnxruntime has no VitisAI, so the session it creates drops it and runs on the
    CPU provider: the route says so once, and the text is the CPU text.
    """
    monkeypatch.setattr(
        providers, "available_providers", lambda: [providers.VITISAI, providers.CPU]
    )
    requested: list = []

    def recording_factory(path: Path, eps: list, threads: int):  # noqa: ANN202
        requested.append(eps)
        return REAL_SESSION(path, eps, threads)

    monkeypatch.setattr(runner, "create_session", recording_factory)
    with caplog.at_level(logging.WARNING, logger="amanuensis_npu"):
        model = amanuensis_npu.WhisperModel(base_dir, device="npu", compute_type="float32")
    (eps,) = requested
    assert [name for name, _ in eps] == [providers.VITISAI, providers.CPU]
    options = eps[0][1]
    config = json.loads(Path(options["config_file"]).read_text())
    assert config["target"] == "VAIML"
    assert any(p["plugin"] == "vaip-pass_vaiml_partition" for p in config["passes"])
    assert Path(options["cache_dir"]).is_relative_to(onnx_cache)
    assert sha[:16] in options["cache_key"] and "-b1-" in options["cache_key"]
    assert "first compile can take 15 minutes" in caplog.text
    assert "could not use VitisAIExecutionProvider" in caplog.text
    assert model.encoder_route.name == "onnx:CPUExecutionProvider"
    clip = LIBRIVOX[0]
    assert transcript(model, clip) == torch_cpu_text[clip]


def test_provider_defaults_follow_the_vendor_docs(monkeypatch) -> None:  # noqa: ANN001
    """The classic builds' defaults (a plugin EP is chosen by device: test_vendor_runtimes)."""
    monkeypatch.setattr(
        providers, "available_providers", lambda: [providers.OPENVINO, providers.CPU]
    )
    monkeypatch.setattr(providers.plugins, "is_plugin", lambda name: False)
    monkeypatch.setattr(providers.plugins, "registered", dict)
    monkeypatch.setattr(providers, "openvino_devices", lambda: ["CPU", "GPU"])
    name, reason = providers.npu_provider()
    assert name is None and "OpenVINO sees no NPU (CPU, GPU)" in reason
    monkeypatch.setattr(providers, "openvino_devices", lambda: ["CPU", "NPU"])
    assert providers.npu_provider()[0] == providers.OPENVINO
    assert providers.default_spec("npu") == [providers.OPENVINO, providers.CPU]
    assert providers.default_spec("cpu") == [providers.CPU]
    spec = [providers.OPENVINO, providers.QNN, ("VitisAIExecutionProvider", {"log_level": "info"})]
    got = providers.session_providers(spec, "ab" * 32, 8, "1")
    assert got[0] == (providers.OPENVINO, {"device_type": "NPU", "precision": "FP32"})
    # QNN's documented names: QnnHtp.dll on Windows, libQnnHtp.so on Linux/Android.
    documented = "QnnHtp.dll" if sys.platform == "win32" else "libQnnHtp.so"
    assert got[1][1]["backend_path"] == documented
    assert got[2] == ("VitisAIExecutionProvider", {"log_level": "info"})  # passed unchanged
    assert providers.parse_providers("OpenVINOExecutionProvider, CPUExecutionProvider") == [
        providers.OPENVINO, providers.CPU
    ]  # fmt: skip
    assert providers.parse_providers('[["QNNExecutionProvider", {"backend_path": "x"}]]') == [
        ("QNNExecutionProvider", {"backend_path": "x"})
    ]
    with pytest.raises(ValueError, match="non-empty list"):
        providers.check_spec("CPUExecutionProvider")


def test_onnx_on_device_npu_without_npu_provider_says_so_once(
    onnx_cache: Path, base_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:  # noqa: ANN001
    monkeypatch.setattr(routing, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="amanuensis_npu"):
        for _ in range(2):
            model = amanuensis_npu.WhisperModel(base_dir, device="npu", encoder="onnx")
    assert model.encoder_route.name == "onnx:CPUExecutionProvider"
    logged = _our_warnings(caplog)
    assert len(logged) == 1 and "no NPU execution provider" in logged[0], logged
    assert "runs on CPUExecutionProvider" in logged[0]


def test_bad_encoder_settings_are_refused(base_dir: Path) -> None:
    with pytest.raises(ValueError, match="encoder must be one of"):
        amanuensis_npu.WhisperModel(base_dir, device="cpu", encoder="gpu")
    with pytest.raises(ValueError, match="applies to encoder='torch'"):
        amanuensis_npu.WhisperModel(base_dir, device="cpu", encoder="onnx", attention="emulator")
    with pytest.raises(ValueError, match="applies to encoder='onnx'"):
        amanuensis_npu.WhisperModel(
            base_dir, device="cpu", encoder="torch", onnx_providers=["CPUExecutionProvider"]
        )


def test_info_lists_providers_and_what_auto_picks() -> None:
    from amanuensis_npu.cli import info_report

    report = info_report()
    assert "CPUExecutionProvider" in report["onnxruntime"]["providers"]
    assert report["onnxruntime"]["version"] == ort.__version__
    precision = openvino_devices.auto_precision()[0]  # CI installs openvino
    assert report["encoder_auto_picks"] == f"openvino:CPU:{precision}"
    assert "no NPU execution provider" in report["encoder_auto_reason"]


# --- fallback ------------------------------------------------------------------------------


def _failing_vitisai_session(path: Path, eps: list, threads: int) -> ort.InferenceSession:
    """What a vendor provider that cannot take the graph does: session creation raises.

    A real onnxruntime failure through its public API: the CPU provider is not allowed
    to take the nodes the (here absent) NPU provider does not.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not in available provider names": it is not
        return ort.InferenceSession(str(path), options, providers=[providers.VITISAI])


class _NaNSession:
    def __init__(self, path: Path, eps: list, threads: int) -> None:
        self.inner = REAL_SESSION(path, eps, threads)

    def get_providers(self) -> list[str]:
        return self.inner.get_providers()

    def run(self, outputs, feed):  # noqa: ANN001, ANN201
        (out,) = self.inner.run(outputs, feed)
        out[:, 7, 3] = np.nan
        return [out]


def _wrong_shape_session(path: Path, eps: list, threads: int) -> ort.InferenceSession:
    """A real session whose run raises: it was built for batch 2 and gets batch 1."""
    return REAL_SESSION(Path(str(path).replace("-b1.onnx", "-b2.onnx")), eps, threads)


@pytest.mark.parametrize(
    "factory, reason",
    [
        (_failing_vitisai_session, "no ONNX Runtime session for batch 1"),
        (_wrong_shape_session, "ONNX Runtime run failed"),
        (_NaNSession, "not finite (NaN/inf)"),
    ],
    ids=["session-fails", "run-raises", "nan-output"],
)
def test_failing_onnx_runs_on_the_torch_cpu_encoder(
    onnx_cache: Path,
    base_dir: Path,
    monkeypatch,  # noqa: ANN001
    caplog: pytest.LogCaptureFixture,
    factory,  # noqa: ANN001
    reason: str,
    torch_cpu_text: dict,
) -> None:
    monkeypatch.setattr(runner, "create_session", factory)
    with caplog.at_level(logging.WARNING, logger="amanuensis_npu"):
        model = amanuensis_npu.WhisperModel(
            base_dir, device="cpu", compute_type="float32", encoder="onnx"
        )
        clip = LIBRIVOX[1]
        with collect_encoder_stats() as stats:
            got = [transcript(model, clip), transcript(model, clip)]
    assert got == [torch_cpu_text[clip]] * 2
    counts = stats.snapshot()
    assert counts["encoder_calls"] >= 4
    assert counts["encoder_fallbacks"] == counts["encoder_calls"]
    assert counts["encoder_routes"] == {"torch": counts["encoder_windows"]}
    (why,) = counts["encoder_fallback_reasons"]
    assert reason in why
    logged = _our_warnings(caplog)
    assert len(logged) == 1 and reason in logged[0], logged  # one warning per reason
