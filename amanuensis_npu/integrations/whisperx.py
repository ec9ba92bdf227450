"""WhisperX with our encoder: `load_model(..., device="npu")` and `install()`.

WhisperX has no plugin entry point, but its ASR model is a faster-whisper
`WhisperModel` subclass that reaches the encoder only through `encode`, and
`whisperx.asr.load_model` accepts a ready-made model through `model=`. So we
build WhisperX's own model class with our `encode` mixed in, and let stock
`load_model` do everything else (options, tokenizer, VAD) with the device set
to "cpu": VAD, alignment and diarization are torch code that cannot run on
"npu", and the CTranslate2 decoder runs on the CPU anyway.

Device names: "amd-npu" always means this plugin. "npu" means it too, unless
Huawei's `torch_npu` is importable: whisperX issue #1482 proposes "npu" for
Ascend, so then the whisperx hooks (`install()`, `whisperx-npu`, the patch)
leave "npu" to stock whisperx and log how to reach us ("amd-npu"); only an
explicit call of this module's `load_model` keeps "npu", with a warning.

Offline use: silero VAD is loaded from the `silero-vad` package (which bundles
the model) instead of torch.hub, and missing alignment/diarization models raise
`ModelUnavailableError` naming the model and how to provide it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import threading
import urllib.error
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .quiet import whisperx_imports

try:
    with whisperx_imports():
        import whisperx
        import whisperx.asr
        import whisperx.vads
        import whisperx.vads.silero
except ImportError as exc:  # pragma: no cover - exercised only without whisperx
    raise ImportError(
        "amanuensis_npu.integrations.whisperx needs whisperx 3.8.6 "
        "(install it with .ci/install-whisperx.sh, or `pip install --no-deps whisperx==3.8.6` "
        f"plus its runtime dependencies): {exc}"
    ) from exc

from ..attention import AttentionBackend
from ..core.models import resolve_model
from ..core.weights import ModelFormatError
from ..routing import check_encoder
from .faster_whisper import NPUEncoderMixin

logger = logging.getLogger("amanuensis_npu")

AMD_NPU = "amd-npu"
DEVICE_NAMES = ("npu", AMD_NPU)

# Stock callables, captured before anything here replaces them, so hooks can
# always reach the original even after install() (no recursion through hooks).
_STOCK_LOAD_MODEL = getattr(whisperx.asr.load_model, "__wrapped__", whisperx.asr.load_model)
_STOCK_SILERO = whisperx.vads.silero.Silero


class WhisperXNPUError(RuntimeError):
    """A user-facing problem with a one-line message (the CLI prints it, no traceback)."""


class ModelUnavailableError(WhisperXNPUError):
    """A model WhisperX needs is neither cached locally nor downloadable (offline)."""


class UnsupportedComputeTypeError(WhisperXNPUError, ValueError):
    """A compute type the CPU-side CTranslate2 decoder cannot run."""


def torch_npu_present() -> bool:
    """Whether Huawei's torch_npu is importable (checked without importing it)."""
    try:
        return importlib.util.find_spec("torch_npu") is not None
    except (ImportError, ValueError):
        return False


_warned_clash = False
_warn_lock = threading.Lock()


def _warn_clash_once(message: str) -> None:
    global _warned_clash
    with _warn_lock:
        if not _warned_clash:
            logger.warning(message)
            _warned_clash = True


def claims_device(device: Any) -> bool:
    """Whether a whisperx `device` string means this plugin (see the module docstring).

    "npu" yields to torch_npu when that is installed, so an Ascend user never
    gets the AMD plugin by accident; they are told to say "amd-npu" for ours.
    """
    if not isinstance(device, str):
        return False
    name = device.strip()
    if name == AMD_NPU:
        return True
    if name != "npu":
        return False
    if torch_npu_present():
        _warn_clash_once(
            "device 'npu' left to whisperx/torch_npu because torch_npu (Huawei Ascend) is "
            "installed; use device 'amd-npu' for the AMD Ryzen AI NPU encoder"
        )
        return False
    return True


class NPUWhisperModel(NPUEncoderMixin, whisperx.asr.WhisperModel):
    """WhisperX's batched WhisperModel whose encoder is ours; CTranslate2 decodes on the CPU."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        attention: str | AttentionBackend = "auto",
        encoder: str = "auto",
        onnx_providers: Sequence[Any] | None = None,
        compute_type: str = "float32",
        cpu_threads: int = 4,
        **model_kwargs: Any,
    ) -> None:
        path = str(model_path)
        encoder = check_encoder(encoder)
        super().__init__(
            path, device="cpu", compute_type=compute_type, cpu_threads=cpu_threads, **model_kwargs
        )
        self.model_path = path
        self._init_npu_encoder(
            path,
            attention,
            encoder=encoder,
            onnx_providers=onnx_providers,
            threads=cpu_threads,
        )


class OfflineSilero(_STOCK_SILERO):
    """WhisperX's Silero VAD, loaded from the silero-vad package instead of torch.hub.

    torch.hub fetches a GitHub repository at run time, which fails offline;
    the package bundles the same JIT model and the same helper functions.
    Without the package this falls back to stock (torch.hub) and, if that
    fails, says how to fix it instead of showing torch.hub's traceback.
    """

    def __init__(self, **kwargs: Any) -> None:
        try:
            import silero_vad
        except ImportError:
            try:
                super().__init__(**kwargs)
            except (OSError, RuntimeError) as exc:
                raise ModelUnavailableError(
                    "silero VAD model not available offline (torch.hub needs the network): "
                    "pip install silero-vad, or use --vad_method pyannote "
                    f"[{type(exc).__name__}]"
                ) from None
            return
        whisperx.vads.silero.logger.info(
            "Performing voice activity detection using Silero (silero-vad package)..."
        )
        whisperx.vads.Vad.__init__(self, kwargs["vad_onset"])
        self.vad_onset = kwargs["vad_onset"]
        self.chunk_size = kwargs["chunk_size"]
        self.vad_pipeline = silero_vad.load_silero_vad(onnx=False)
        self.get_speech_timestamps = silero_vad.get_speech_timestamps
        self.read_audio = silero_vad.read_audio


@contextlib.contextmanager
def patched(module: Any, replacements: dict[str, Any]) -> Iterator[None]:
    """Temporarily rebind module globals (whisperx binds its helpers at import time)."""
    saved = {name: getattr(module, name) for name in replacements}
    try:
        for name, value in replacements.items():
            setattr(module, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def load_model(
    whisper_arch: str,
    device: str = "npu",
    device_index: int = 0,
    compute_type: str = "default",
    asr_options: dict | None = None,
    language: str | None = None,
    vad_model: Any = None,
    vad_method: str | None = "pyannote",
    vad_options: dict | None = None,
    model: Any = None,
    task: str = "transcribe",
    download_root: str | None = None,
    local_files_only: bool = False,
    threads: int = 4,
    use_auth_token: str | bool | None = None,
    *,
    attention: str | AttentionBackend = "auto",
    encoder: str = "auto",
    onnx_providers: Sequence[Any] | None = None,
) -> whisperx.asr.FasterWhisperPipeline:
    """`whisperx.load_model` whose ASR encoder is ours when `device` is "npu"/"amd-npu".

    Same parameters as whisperx 3.8.6's `load_model` (plus `attention`, `encoder`
    and `onnx_providers`, as in `amanuensis_npu.WhisperModel`), so
    code written for WhisperX only changes its import. On those devices the
    model name resolves offline for "base" (registry packages), `compute_type`
    "default" means float32 (the decoder is on the CPU), and the VAD runs on
    the CPU. Any other device is passed to stock whisperx unchanged.
    """
    name = device.strip() if isinstance(device, str) else device
    ours = name == AMD_NPU or name == "npu"
    if name == "npu" and torch_npu_present():
        logger.warning(
            "device 'npu' taken as the AMD Ryzen AI NPU although torch_npu (Huawei Ascend) is "
            "installed; pass device='amd-npu' to say so explicitly"
        )
    vad_ctx = _offline_vad()
    if not ours:
        with vad_ctx:
            return _STOCK_LOAD_MODEL(
                whisper_arch, device, device_index, compute_type, asr_options, language,
                vad_model, vad_method, vad_options, model, task, download_root,
                local_files_only, threads, use_auth_token,
            )  # fmt: skip
    if compute_type == "default":
        compute_type = "float32"
        logger.info("compute type not specified: float32 for the CPU decoder")
    if compute_type == "float16":
        raise UnsupportedComputeTypeError(
            "compute type float16 is not available with the NPU device: the CTranslate2 "
            "decoder runs on the CPU; use int8 or float32"
        )
    if model is None:
        try:
            model_path = resolve_model(
                whisper_arch, download_root, local_files_only, use_auth_token=use_auth_token
            )
        except ModelFormatError as exc:
            if Path(os.fspath(whisper_arch)).expanduser().exists():
                raise
            raise ModelUnavailableError(str(exc)) from None  # resolve_model's one line
        model = NPUWhisperModel(
            model_path,
            attention=attention,
            encoder=encoder,
            onnx_providers=onnx_providers,
            compute_type=compute_type,
            cpu_threads=threads,
        )
    with vad_ctx:
        return _STOCK_LOAD_MODEL(
            whisper_arch,
            "cpu",
            0,
            compute_type,
            asr_options,
            language,
            vad_model,
            vad_method,
            vad_options,
            model,
            task,
            download_root,
            local_files_only,
            threads,
            use_auth_token,
        )


_VAD_LOCK = threading.RLock()


@contextlib.contextmanager
def _offline_vad() -> Iterator[None]:
    """Silero from the silero-vad package while one load_model runs.

    Serialised by a lock because it rebinds a module global that concurrent
    load_model calls would otherwise save and restore out of order.
    """
    with _VAD_LOCK:
        if whisperx.asr.Silero is OfflineSilero:  # install() already did it
            yield
            return
        with patched(whisperx.asr, {"Silero": OfflineSilero}):
            yield


def _hooked_load_model(whisper_arch: str, device: str, *args: Any, **kwargs: Any) -> Any:
    """What `install()` puts in place of whisperx's load_model."""
    if claims_device(device):
        return load_model(whisper_arch, AMD_NPU, *args, **kwargs)
    return _STOCK_LOAD_MODEL(whisper_arch, device, *args, **kwargs)


_hooked_load_model.__wrapped__ = _STOCK_LOAD_MODEL  # type: ignore[attr-defined]
_hooked_load_model.__doc__ = _STOCK_LOAD_MODEL.__doc__


def install() -> None:
    """Make `whisperx.load_model(..., device="npu"|"amd-npu")` use our encoder.

    Rebinds `whisperx.asr.load_model` (which `whisperx.load_model` calls) and,
    if already imported, `whisperx.transcribe.load_model` (bound at its import;
    a later import binds the hook). Also makes silero VAD load offline.
    Idempotent; `uninstall()` restores stock whisperx.
    """
    import sys

    whisperx.asr.load_model = _hooked_load_model
    whisperx.asr.Silero = OfflineSilero
    transcribe = sys.modules.get("whisperx.transcribe")
    if transcribe is not None:
        transcribe.load_model = _hooked_load_model


def uninstall() -> None:
    """Undo `install()`."""
    import sys

    whisperx.asr.load_model = _STOCK_LOAD_MODEL
    whisperx.asr.Silero = _STOCK_SILERO
    transcribe = sys.modules.get("whisperx.transcribe")
    if transcribe is not None and transcribe.load_model is _hooked_load_model:
        transcribe.load_model = _STOCK_LOAD_MODEL


# --- offline errors for alignment and diarization ----------------------------------------


def _offline_cause(exc: BaseException) -> BaseException | None:
    """The network/missing-file error behind `exc`, if that is what it is."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (urllib.error.URLError, ConnectionError, TimeoutError, OSError)):
            return cur
        text = str(cur).lower()
        if "internet connection" in text or "offline" in text or "couldn't connect" in text:
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def _torch_hub_checkpoints(model_dir: str | None) -> Path:
    import torch.hub

    return Path(model_dir) if model_dir else Path(torch.hub.get_dir()) / "checkpoints"


def load_align_model(
    language_code: str,
    device: str,
    model_name: str | None = None,
    model_dir: str | None = None,
    model_cache_only: bool = False,
) -> tuple[Any, dict]:
    """`whisperx.load_align_model` on the CPU for our devices, with a clear offline error.

    Stock whisperx lets a raw URLError traceback (torchaudio bundles) or a
    printed hub error (Hugging Face models) escape; here the error names the
    model and where to put it.
    """
    import whisperx.alignment as alignment

    if claims_device(device):
        device = "cpu"
    name = model_name
    if name is None:
        name = alignment.DEFAULT_ALIGN_MODELS_TORCH.get(
            language_code, alignment.DEFAULT_ALIGN_MODELS_HF.get(language_code)
        )
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            return alignment.load_align_model(
                language_code, device, model_name=model_name, model_dir=model_dir,
                model_cache_only=model_cache_only,
            )  # fmt: skip
    except Exception as exc:
        cause = _offline_cause(exc)
        if cause is None or name is None:
            out = sink.getvalue().strip()
            if out:
                print(out)
            raise
        raise ModelUnavailableError(_align_help(name, language_code, model_dir, cause)) from None


def _align_help(name: str, language: str, model_dir: str | None, cause: BaseException) -> str:
    import torchaudio

    why = f"{type(cause).__name__}: {str(cause).splitlines()[0][:120] if str(cause) else ''}"
    if name in torchaudio.pipelines.__all__:
        bundle = torchaudio.pipelines.__dict__[name]
        filename = os.path.basename(getattr(bundle, "_path", "") or f"{name}.pth")
        where = _torch_hub_checkpoints(model_dir) / filename
        url = f"https://download.pytorch.org/torchaudio/models/{getattr(bundle, '_path', '')}"
        return (
            f"alignment model {name} (torchaudio, language '{language}') is not available "
            f"offline ({why}). Download {url} where there is network and copy it to {where} "
            "(or pass --model_dir DIR containing it), or run with --no_align"
        )
    return (
        f"alignment model {name} (Hugging Face, language '{language}') is not available "
        f"offline ({why}). Download it where there is network "
        f"(`huggingface-cli download {name}`) and copy the Hugging Face cache (HF_HOME, or "
        "--model_dir), or pass a local model directory with --align_model PATH, "
        "or run with --no_align"
    )


def align(*args: Any, **kwargs: Any) -> Any:
    """`whisperx.align`, with a clear error when NLTK's sentence splitter is missing offline.

    whisperx splits sentences with NLTK's punkt_tab data and calls
    `nltk.download` when it is absent; offline that ends in a LookupError
    pages long. Same arguments and result as `whisperx.align`.
    """
    import whisperx.alignment as alignment

    if len(args) >= 5 and claims_device(args[4]):
        args = (*args[:4], "cpu", *args[5:])
    elif claims_device(kwargs.get("device")):
        kwargs["device"] = "cpu"
    try:
        return alignment.align(*args, **kwargs)
    except LookupError as exc:
        if "punkt" not in str(exc):
            raise
        raise ModelUnavailableError(_PUNKT_HELP) from None


_PUNKT_HELP = (
    "NLTK data punkt_tab (the sentence splitter whisperx alignment uses) is not "
    "available offline. Where there is network run `python -m nltk.downloader "
    "punkt_tab` and copy the nltk_data folder to ~/nltk_data (or point NLTK_DATA at "
    "it), or run with --no_align"
)


def check_sentence_splitter(language_code: str) -> None:
    """Load the NLTK sentence splitter `whisperx.align` will use, as it does, or say why not.

    whisperx/alignment.py loads `tokenizers/punkt_tab/<language>.pickle` and,
    if that is missing, calls `nltk.download("punkt_tab")`; both are done here
    so that a missing splitter is found before any transcription. NLTK's
    offline download messages are kept out of the terminal.
    """
    import nltk
    import whisperx.alignment as alignment

    name = f"tokenizers/punkt_tab/{alignment.PUNKT_LANGUAGES.get(language_code, 'english')}.pickle"
    try:
        nltk.data.load(name)
        return
    except LookupError:
        pass
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        nltk.download("punkt_tab", quiet=True)
    try:
        nltk.data.load(name)
    except LookupError:
        raise ModelUnavailableError(_PUNKT_HELP) from None


class DiarizationPipeline:
    """`whisperx.diarize.DiarizationPipeline` on the CPU for our devices, clear offline error."""

    def __new__(
        cls,
        model_name: str | None = None,
        token: str | None = None,
        device: Any = "cpu",
        cache_dir: str | None = None,
    ) -> Any:
        import whisperx.diarize as diarize

        if claims_device(device):
            device = "cpu"
        name = model_name or "pyannote/speaker-diarization-community-1"
        try:
            return diarize.DiarizationPipeline(
                model_name=model_name, token=token, device=device, cache_dir=cache_dir
            )
        except Exception as exc:
            cause = _offline_cause(exc)
            if cause is None and not (isinstance(exc, AttributeError) and "NoneType" in str(exc)):
                raise
            why = type(cause or exc).__name__
            raise ModelUnavailableError(
                f"diarization model {name} is not available offline ({why}). On a machine "
                "with network, accept its licence on Hugging Face and download it with "
                f"`huggingface-cli download {name}` (with --token), then copy the Hugging Face "
                "cache (HF_HOME, or --model_dir); or pass a local pipeline directory with "
                "--diarize_model PATH; or run without --diarize"
            ) from None
