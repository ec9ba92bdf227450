"""`amanuensis-npu`: transcribe files, and tell what hardware path would run.

Output files are written by WhisperX's writers (txt, srt, vtt, tsv, json), the
same files `whisperx` writes, so downstream tooling sees no difference.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("amanuensis_npu")

OUTPUT_FORMATS = ("txt", "srt", "vtt", "json", "tsv", "all")


def _str2bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    from .attention import backend_names

    parser = argparse.ArgumentParser(
        prog="amanuensis-npu",
        description="Whisper transcription with encoder attention on the AMD Ryzen AI NPU.",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="transcribe audio files")
    t.add_argument("audio", nargs="+", help="audio files (anything PyAV decodes)")
    t.add_argument("--model", default="base", help="'base' (offline) or a CTranslate2 dir")
    t.add_argument("--device", default="npu", choices=["npu", "cpu", "auto"])
    t.add_argument("--attention", default="auto", choices=backend_names())
    t.add_argument(
        "--encoder",
        default="auto",
        choices=["auto", "torch", "onnx"],
        help="encoder route: our torch encoder, or the ONNX export on ONNX Runtime",
    )
    t.add_argument(
        "--onnx_providers",
        default=None,
        help="ONNX Runtime execution providers, comma-separated or as a JSON list "
        "(default: an NPU provider onnxruntime has, else the CPU)",
    )
    t.add_argument(
        "--compute_type",
        default="default",
        choices=["default", "int8", "int8_float32", "float32"],
        help="CTranslate2 decoder precision (the decoder runs on the CPU)",
    )
    t.add_argument("--language", default=None, help="language code; detected when omitted")
    t.add_argument("--task", default="transcribe", choices=["transcribe", "translate"])
    t.add_argument("--beam_size", type=int, default=5)
    t.add_argument("--best_of", type=int, default=5)
    t.add_argument("--temperature", type=float, default=None, help="fixed temperature")
    t.add_argument(
        "--condition_on_previous_text", type=_str2bool, default=True, metavar="{True,False}"
    )
    t.add_argument("--word_timestamps", type=_str2bool, default=False, metavar="{True,False}")
    t.add_argument("--vad_filter", type=_str2bool, default=False, metavar="{True,False}")
    t.add_argument("--batch_size", type=int, default=None, help="use the batched pipeline")
    t.add_argument("--threads", type=int, default=0, help="CPU threads (0: library default)")
    t.add_argument("--output_format", "-f", default="all", choices=OUTPUT_FORMATS)
    t.add_argument("--output_dir", "-o", default=".")
    t.add_argument("--highlight_words", type=_str2bool, default=False, metavar="{True,False}")
    t.add_argument("--max_line_width", type=int, default=None)
    t.add_argument("--max_line_count", type=int, default=None)
    t.add_argument("--no-progress", dest="progress", action="store_false")

    sub.add_parser("info", help="versions, XRT/NPU presence and the attention backend auto picks")

    e = sub.add_parser("export-onnx", help="export the encoder to ONNX (static shapes)")
    e.add_argument("--model", default="base", help="'base' (offline) or a CTranslate2 dir")
    e.add_argument("--batch", type=int, default=1, help="windows per call (static)")
    e.add_argument("--out", default=None, help="directory (default: the cache --encoder uses)")

    p = sub.add_parser("patch-whisperx", help="make plain `whisperx --device npu` use this plugin")
    p.add_argument("--dry-run", action="store_true", help="show what would change")
    p.add_argument("--revert", action="store_true", help="remove the patch")
    return parser


def _transcribe(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    try:
        from whisperx.utils import get_writer
    except ImportError:
        raise RuntimeError(
            "output writers come from whisperx: pip install --no-deps whisperx==3.8.6"
        ) from None

    from .api import get_model, transcribe
    from .onnx.providers import parse_providers

    providers = parse_providers(args.onnx_providers)
    # Load once up front: a broken model is one error, not one per input file.
    get_model(
        args.model, args.device, args.attention, args.compute_type, args.threads,
        args.encoder, providers,
    )  # fmt: skip

    os.makedirs(args.output_dir, exist_ok=True)
    writer = get_writer(args.output_format, args.output_dir)
    writer_options = {
        "highlight_words": args.highlight_words,
        "max_line_width": args.max_line_width,
        "max_line_count": args.max_line_count,
    }
    options: dict[str, Any] = {
        "language": args.language,
        "task": args.task,
        "beam_size": args.beam_size,
        "best_of": args.best_of,
        "condition_on_previous_text": args.condition_on_previous_text,
        "word_timestamps": args.word_timestamps,
        "vad_filter": args.vad_filter,
    }
    if args.temperature is not None:
        options["temperature"] = args.temperature
    failures = 0
    for path in args.audio:
        bar = tqdm(
            total=1.0,
            desc=os.path.basename(path),
            unit="s",
            disable=not args.progress,
            file=sys.stderr,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}]",
        )

        def progress(done: float, total: float, bar: Any = bar) -> None:
            bar.total = max(total, 1e-3)
            bar.n = done
            bar.refresh()

        try:
            result = transcribe(
                path,
                model=args.model,
                device=args.device,
                attention=args.attention,
                compute_type=args.compute_type,
                batch_size=args.batch_size,
                cpu_threads=args.threads,
                progress=progress,
                encoder=args.encoder,
                onnx_providers=providers,
                **options,
            )
            writer(result.to_dict(), path, writer_options)
        except Exception as exc:  # one bad file must not stop the batch
            failures += 1
            bar.close()
            if args.verbose:
                logger.exception("%s failed", path)
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            continue
        bar.n = bar.total
        bar.close()
        for seg in result.segments:
            print(f"[{_clock(seg.start)} --> {_clock(seg.end)}] {seg.text.strip()}", flush=True)
        if result.stats.get("fallbacks"):
            print(
                f"{path}: {result.stats['fallbacks']} attention call(s) fell back to the CPU",
                file=sys.stderr,
            )
    return 1 if failures else 0


def _clock(seconds: float) -> str:
    from whisperx.utils import format_timestamp

    return format_timestamp(seconds, always_include_hours=False, decimal_marker=".")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def info_report() -> dict[str, Any]:
    """What `info` prints, as data (tests and bug reports use it); each reason said once."""
    from . import __version__
    from .attention import backend_availability, backend_names

    report: dict[str, Any] = {
        "amanuensis-npu": __version__,
        "python": platform.python_version(),
        "torch": _version("torch"),
        "ctranslate2": _version("ctranslate2"),
        "faster-whisper": _version("faster-whisper"),
        "whisperx": _version("whisperx"),
    }
    try:
        from .npu.status import describe

        report["npu"] = describe()
    except ImportError as exc:
        report["npu"] = {"error": f"NPU runtime unavailable ({exc})"}
    try:
        from .integrations.whisperx_patch import patch_state

        report["whisperx patch"] = patch_state()
    except Exception as exc:  # whisperx absent or unreadable: say so, do not fail `info`
        report["whisperx patch"] = f"unknown ({_one_line(exc)})"
    names = [name for name in backend_names() if name != "auto"]
    found = {name: backend_availability(name) for name in names}
    report["attention_backends_available"] = [name for name in names if found[name].ok]
    npu = found.get("npu")
    if npu is not None and npu.ok:
        report["auto_picks"] = f"npu ({npu.summary})"
        report["auto_reason"] = "the NPU is usable (npu: reason above)"
    else:
        report["auto_picks"] = "cpu"
        why = npu.summary if npu is not None else "no NPU backend registered"
        report["auto_reason"] = f"{why} (npu: reason above)"
    from . import encoder_routes
    from .onnx import providers as onnx_providers

    report["onnxruntime"] = onnx_providers.describe()
    report.update(encoder_routes.describe())
    return report


def _info() -> int:
    report = info_report()
    width = max(len(k) for k in report)
    for key, value in report.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {v}")
        elif isinstance(value, list):
            print(f"{key.ljust(width)}  {', '.join(value)}")
        else:
            print(f"{key.ljust(width)}  {value}")
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from .onnx.export import export_encoder

    print(export_encoder(args.model, args.batch, args.out))
    return 0


def _patch_whisperx(args: argparse.Namespace) -> int:
    from .integrations.whisperx_patch import run

    return run(dry_run=args.dry_run, revert=args.revert)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (non-zero if any input failed)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    try:
        if args.command == "transcribe":
            return _transcribe(args)
        if args.command == "info":
            return _info()
        if args.command == "patch-whisperx":
            return _patch_whisperx(args)
        if args.command == "export-onnx":
            return _export_onnx(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
