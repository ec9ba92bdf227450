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
    from ..encoder_routes import check_encoder
    from ..onnx.providers import parse_providers
    from . import whisperx as wxn

    attention = os.environ.get(ATTENTION_ENV, "auto")
    try:
        encoder = check_encoder(os.environ.get(ENCODER_ENV, "auto"))
        providers = parse_providers(os.environ.get(PROVIDERS_ENV))
    except ValueError as exc:
        parser.exit(1, f"{parser.prog}: error: {ENCODER_ENV}/{PROVIDERS_ENV}: {exc}\n")
    ours = wxn.claims_device(args.get("device"))
    replacements: dict[str, Any] = {
        "load_align_model": wxn.load_align_model,
        "align": wxn.align,
        "DiarizationPipeline": wxn.DiarizationPipeline,
    }
    models: list[Any] = []
    if ours:
        requested = args["device"]
        # Everything torch-side in transcribe_task (VAD, alignment, diarization) gets "cpu";
        # only the ASR model, built here, runs our encoder.
        args["device"] = "cpu"

        def npu_load_model(whisper_arch: str, device: str = "cpu", **kwargs: Any) -> Any:
            pipeline = wxn.load_model(
                whisper_arch, wxn.AMD_NPU, attention=attention, encoder=encoder,
                onnx_providers=providers, **kwargs,
            )  # fmt: skip
            models.append(pipeline.model)
            return pipeline

        replacements["load_model"] = npu_load_model
        logger.info(
            "--device %s: Whisper encoder from amanuensis-npu (encoder=%s, attention=%s); "
            "decoder, VAD, alignment and diarization on cpu",
            requested,
            encoder,
            attention,
        )
    try:
        with wxn.patched(stock, replacements), wxn._offline_vad():
            _stock_transcribe_task()(args, parser)
    except (wxn.WhisperXNPUError, ModelFormatError) as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    finally:
        for model in models:
            stats = model.attention_backend.stats.snapshot()
            route = model.encoder_route.stats.snapshot()
            logger.info(
                "encoder route %s: %d windows %s, %d fallbacks %s; attention backend %r: "
                "%d calls, %d fallbacks %s",
                model.encoder_route.name,
                route["encoder_windows"],
                route["encoder_routes"],
                route["encoder_fallbacks"],
                route["encoder_fallback_reasons"] or "",
                model.attention_backend.name,
                stats["attention_calls"],
                stats["fallbacks"],
                stats["fallback_reasons"] or "",
            )


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
    try:
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
