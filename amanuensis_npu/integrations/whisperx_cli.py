"""`whisperx-npu`: whisperx 3.8.6's own command line, plus `--device npu` / `--device amd-npu`.

The parser, the options and the writers are whisperx's (we call
`whisperx.__main__.cli`), so every argument behaves as in stock whisperx. We
only swap whisperx's `transcribe_task` for `transcribe_task` below, which, for
our device names, builds the ASR model with our encoder (route from
`AMANUENSIS_NPU_ENCODER`: auto|torch|onnx, ONNX Runtime providers from
`AMANUENSIS_NPU_ONNX_PROVIDERS` as in `amanuensis-npu transcribe --onnx_providers`,
attention from `AMANUENSIS_NPU_ATTENTION`; each default "auto") and runs VAD, alignment and
diarization with device "cpu". The patched plain `whisperx` (patches/) calls
the same `transcribe_task`.

For every device, silero VAD loads from the silero-vad package (offline) and a
missing alignment/diarization model ends with a one-line error saying which
model and how to provide it. With torch_npu installed, plain "npu" is left to
stock whisperx (see amanuensis_npu.integrations.whisperx); "amd-npu" always means us.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

logger = logging.getLogger("amanuensis_npu")

ATTENTION_ENV = "AMANUENSIS_NPU_ATTENTION"
ENCODER_ENV = "AMANUENSIS_NPU_ENCODER"
PROVIDERS_ENV = "AMANUENSIS_NPU_ONNX_PROVIDERS"


def transcribe_task(args: dict[str, Any], parser: argparse.ArgumentParser) -> None:
    """Drop-in for `whisperx.transcribe.transcribe_task(args, parser)`."""
    with _whisperx_logging():
        _transcribe_task(args, parser)


def _transcribe_task(args: dict[str, Any], parser: argparse.ArgumentParser) -> None:
    import whisperx.transcribe as stock

    from ..core.weights import ModelFormatError
    from ..onnx.providers import parse_providers
    from ..routing import check_encoder
    from . import whisperx as wxn
    from .quiet import quiet_checkpoint_upgrade

    quiet_checkpoint_upgrade()
    attention = os.environ.get(ATTENTION_ENV, "auto")
    try:
        encoder = check_encoder(os.environ.get(ENCODER_ENV, "auto"))
        providers = parse_providers(os.environ.get(PROVIDERS_ENV))
    except ValueError as exc:
        parser.exit(1, f"{parser.prog}: error: {ENCODER_ENV}/{PROVIDERS_ENV}: {exc}\n")
    models: list[Any] = []
    load_model = stock.load_model
    if wxn.claims_device(args.get("device")):
        requested = args["device"]
        # Everything torch-side in transcribe_task (VAD, alignment, diarization) gets "cpu";
        # only the ASR model, built here, runs our encoder.
        args["device"] = "cpu"

        def load_model(whisper_arch: str, device: str = "cpu", **kwargs: Any) -> Any:
            pipeline = wxn.load_model(
                whisper_arch, wxn.AMD_NPU, attention=attention, encoder=encoder,
                onnx_providers=providers, **kwargs,
            )  # fmt: skip
            models.append(pipeline.model)
            return pipeline

        logger.info(
            "--device %s: Whisper encoder from amanuensis-npu (encoder=%s, attention=%s); "
            "decoder, VAD, alignment and diarization on cpu",
            requested,
            encoder,
            attention,
        )
    known = (wxn.WhisperXNPUError, ModelFormatError)
    run = _Run(args)
    try:
        try:
            run.preflight()
        except known as exc:
            parser.exit(1, f"{parser.prog}: error: {exc}\n")
        try:
            with wxn.patched(stock, run.replacements(load_model)), wxn._offline_vad():
                _stock_transcribe_task()(args, parser)
        except Exception as exc:
            if not run.finished:
                if isinstance(exc, known):
                    parser.exit(1, f"{parser.prog}: error: {exc}\n")
                raise
            saved = run.write_finished()
            if isinstance(exc, known):
                parser.exit(1, f"{parser.prog}: error: {run.stage} failed: {exc}\n{saved}\n")
            print(f"{parser.prog}: {run.stage} failed; {saved}", file=sys.stderr)
            raise
    finally:
        for model in models:
            stats = model.attention_backend.stats.snapshot()
            route = model.encoder_route.stats.snapshot()
            line = "encoder route %s (%s): %d windows %s, %d fallbacks %s"
            args = [model.encoder_route.name, model.encoder_route.reason,
                    route["encoder_windows"], route["encoder_routes"],
                    route["encoder_fallbacks"], route["encoder_fallback_reasons"] or ""]
            if not model.encoder_route.whole_encoder:  # an attention backend ran
                line += "; attention backend %r: %d calls, %d fallbacks %s"
                args += [model.attention_backend.name, stats["attention_calls"],
                         stats["fallbacks"], stats["fallback_reasons"] or ""]
            logger.info(line, *args)

class _Run:
    """One `whisperx-npu` run: what was asked, what is preloaded, what is finished.

    Stock `transcribe_task` transcribes every file, then aligns, then
    diarizes, and writes only at the very end, so a model that cannot be
    loaded for a later stage used to throw the finished transcripts away.
    Here the later stages' models are loaded before any transcription (and
    handed to the stock code when it asks for them), and every result is
    recorded as it is made, so a stage that still fails leaves the files of
    what was finished.
    """

    def __init__(self, args: dict[str, Any]) -> None:
        from whisperx.utils import TO_LANGUAGE_CODE

        # Read before stock transcribe_task pops them from `args`.
        self.device = args["device"]
        self.output_dir = args["output_dir"]
        self.output_format = args["output_format"]
        self.writer_args = {
            k: args.get(k) for k in ("highlight_words", "max_line_count", "max_line_width")
        }
        self.align = not args.get("no_align") and args.get("task") != "translate"
        self.align_model = args.get("align_model")
        self.model_dir = args.get("model_dir")
        self.model_cache_only = args.get("model_cache_only", False)
        self.diarize = bool(args.get("diarize"))
        self.diarize_args = {
            "model_name": args.get("diarize_model"),
            "token": args.get("hf_token"),
            "device": args["device"],
            "cache_dir": args.get("model_dir"),
        }
        # whisperx/transcribe.py's choice of the first alignment language.
        language = (args.get("language") or "").lower() or None
        language = TO_LANGUAGE_CODE.get(language, language) if language else None
        if str(args.get("model", "")).endswith(".en"):
            language = "en"
        self.language = language or "en"
        self.stage = "transcription"
        self.preloaded_align: tuple[tuple, Any] | None = None
        self.preloaded_diarize: Any = None
        self.finished: dict[str, tuple[dict, set[str]]] = {}  # audio path -> result, stages
        self._path_of: dict[int, str] = {}  # id() of a result or its segments -> audio path
        self._current: str | None = None

    def preflight(self) -> None:
        """Load what alignment and diarization need now, so a missing model costs no work."""
        from . import whisperx as wxn

        if self.align:
            key = (self.language, self.align_model)
            self.preloaded_align = (
                key,
                wxn.load_align_model(
                    self.language, self.device, model_name=self.align_model,
                    model_dir=self.model_dir, model_cache_only=self.model_cache_only,
                ),
            )  # fmt: skip
            wxn.check_sentence_splitter(self.language)
        if self.diarize:
            self.preloaded_diarize = wxn.DiarizationPipeline(**self.diarize_args)

    def replacements(self, load_model: Any) -> dict[str, Any]:
        """The whisperx.transcribe globals this run rebinds while stock transcribe_task runs."""
        import whisperx.transcribe as stock

        from . import whisperx as wxn

        stock_load_audio = stock.load_audio
        stock_assign = stock.assign_word_speakers

        def load_audio(path: str, *args: Any, **kwargs: Any) -> Any:
            self._current = path
            return stock_load_audio(path, *args, **kwargs)

        def recording_load_model(*args: Any, **kwargs: Any) -> Any:
            pipeline = load_model(*args, **kwargs)
            transcribe = pipeline.transcribe

            def recording_transcribe(*targs: Any, **tkwargs: Any) -> Any:
                result = transcribe(*targs, **tkwargs)
                self._record(self._current, result, set())
                return result

            pipeline.transcribe = recording_transcribe
            return pipeline

        def load_align_model(language: str, device: str, **kwargs: Any) -> Any:
            self.stage = "alignment"
            if self.preloaded_align and self.preloaded_align[0] == (
                language, kwargs.get("model_name")
            ):  # fmt: skip
                return self.preloaded_align[1]
            return wxn.load_align_model(language, device, **kwargs)

        def align(segments: Any, *args: Any, **kwargs: Any) -> Any:
            self.stage = "alignment"
            result = wxn.align(segments, *args, **kwargs)
            path = self._path_of.get(id(segments))
            if path is not None:
                self._record(path, result, {"alignment"})
            return result

        def diarization_pipeline(**kwargs: Any) -> Any:
            self.stage = "diarization"
            if self.preloaded_diarize is not None and kwargs == self.diarize_args:
                return self.preloaded_diarize
            return wxn.DiarizationPipeline(**kwargs)

        def assign_word_speakers(diarize_df: Any, result: Any, *args: Any, **kwargs: Any) -> Any:
            path = self._path_of.get(id(result))
            out = stock_assign(diarize_df, result, *args, **kwargs)
            if path is not None:
                self._record(path, out, self.finished[path][1] | {"diarization"})
            return out

        return {
            "load_model": recording_load_model,
            "load_audio": load_audio,
            "load_align_model": load_align_model,
            "align": align,
            "DiarizationPipeline": diarization_pipeline,
            "assign_word_speakers": assign_word_speakers,
        }

    def _record(self, path: str | None, result: dict, stages: set[str]) -> None:
        if path is None:
            return
        self.finished[path] = (result, stages)
        self._path_of[id(result)] = path
        if isinstance(result.get("segments"), list):
            self._path_of[id(result["segments"])] = path

    def write_finished(self) -> str:
        """Write every finished result with whisperx's writers; say what the files lack."""
        from whisperx.utils import get_writer

        os.makedirs(self.output_dir, exist_ok=True)
        writer = get_writer(self.output_format, self.output_dir)
        wanted = ["alignment"] * self.align + ["diarization"] * self.diarize
        lacking: set[str] = set()
        for path, (result, stages) in self.finished.items():
            result.setdefault("language", self.language)
            # Without word timings the subtitle writers cannot highlight or re-wrap words.
            words = any("words" in s for s in result.get("segments", []))
            writer(result, path, self.writer_args if words else _NO_WORD_OPTIONS)
            lacking.update(s for s in wanted if s not in stages)
        missing = " and ".join(_MISSING[s] for s in wanted if s in lacking)
        n = len(self.finished)
        what = f"{n} transcript{'s' if n != 1 else ''}"
        return f"wrote {what} to {self.output_dir}" + (f" without {missing}" if missing else "")


_NO_WORD_OPTIONS = {"highlight_words": False, "max_line_count": None, "max_line_width": None}
_MISSING = {"alignment": "word alignment", "diarization": "speaker labels"}


@contextlib.contextmanager
def _whisperx_logging() -> Iterator[None]:
    """Our log lines follow whisperx's --verbose/--log-level (it configures only its logger)."""
    wx_logger = logging.getLogger("whisperx")
    if logger.handlers or not wx_logger.handlers:
        yield
        return
    saved = (logger.level, logger.propagate)
    handlers = list(wx_logger.handlers)
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(wx_logger.level)
    logger.propagate = False
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.level, logger.propagate = saved


_saved_stock_task: list[Any] = []


def _stock_transcribe_task() -> Any:
    """whisperx's own transcribe_task, even while `main` has ours bound in its place."""
    import whisperx.transcribe as stock

    task = stock.transcribe_task
    if task is transcribe_task:
        return _saved_stock_task[0]
    return task


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point `whisperx-npu`: whisperx's CLI with the NPU device names."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from .quiet import whisperx_imports

    try:
        with whisperx_imports():
            import whisperx.__main__ as wx_main
            import whisperx.transcribe as stock
    except ImportError as exc:
        print(
            "whisperx-npu: error: whisperx 3.8.6 is not installed "
            f"(see the README's WhisperX section): {exc}",
            file=sys.stderr,
        )
        return 1
    from . import whisperx as wxn

    saved_argv = sys.argv
    sys.argv = ["whisperx-npu", *argv]
    try:
        # cli() imports transcribe_task from whisperx.transcribe when it runs.
        if stock.transcribe_task is not transcribe_task:
            _saved_stock_task[:] = [stock.transcribe_task]
        with wxn.patched(stock, {"transcribe_task": transcribe_task}):
            wx_main.cli()
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved_argv
    return 0


if __name__ == "__main__":
    sys.exit(main())
