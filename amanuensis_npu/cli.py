"""`amanuensis-npu`: transcribe files and archives (or live audio), and tell what hardware
path would run.

Output files are written by WhisperX's writers (txt, srt, vtt, tsv, json), the
same files `whisperx` writes, so downstream tooling sees no difference. The options
are whisperx's names for faster-whisper's; the job itself (inputs, resume, progress,
Ray) lives in `amanuensis_npu.jobs`.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from collections.abc import Sequence
from typing import Any

from .messages import one_line

logger = logging.getLogger("amanuensis_npu")

OUTPUT_FORMATS = ("txt", "srt", "vtt", "json", "tsv", "all")


def _str2bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def _optional(kind: type) -> Any:
    """WhisperX's optional_int/optional_float: a number, or "None"."""

    def parse(text: str) -> Any:
        return None if text.strip().lower() == "none" else kind(text)

    parse.__name__ = kind.__name__
    return parse


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """`(default: X)` where there is one to show: not for flags, nor for None or []."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.default is None or action.default == []:
            return action.help
        return super()._get_help_string(action)


def _encoder_setting(text: str) -> str:
    from .routing import check_encoder

    try:
        return check_encoder(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from .attention import backend_names
    from .jobs.inputs import NAMING_HELP

    # --verbose is accepted before and after the subcommand (SUPPRESS: neither resets the other).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose", action="store_true", default=argparse.SUPPRESS,
        help="details of what runs, and tracebacks",
    )
    parser = argparse.ArgumentParser(
        prog="amanuensis-npu",
        description="Whisper transcription with encoder attention on the AMD Ryzen AI NPU.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    defaults = _ShowDefaults

    # The model and decoding groups are parents: `serve` takes them with the same defaults.
    model_group = argparse.ArgumentParser(add_help=False)
    decoding_group = argparse.ArgumentParser(add_help=False)
    g = model_group.add_argument_group("model")
    g.add_argument("--model", default="base",
                   help="a faster-whisper name (base and tiny.en offline; others from the "
                   "hub), a hub repo id or a CTranslate2 model dir")
    g.add_argument("--device", default="npu", choices=["npu", "cpu", "auto"],
                   help="where the encoder's attention runs ('cpu': no NPU)")
    g.add_argument("--attention", default="auto", choices=backend_names(),
                   help="attention backend ('auto': the NPU when usable, else the CPU)")
    g.add_argument("--compute_type", default="default",
                   choices=["default", "int8", "int8_float32", "float32"],
                   help="CTranslate2 decoder precision (the decoder runs on the CPU)")
    g.add_argument("--encoder", default="auto", type=_encoder_setting,
                   help="encoder route: auto, torch (our encoder; 'attention' applies), onnx "
                   "(the export on ONNX Runtime) or openvino[:CPU|GPU|NPU|AUTO[:f32|bf16|f16]] "
                   "('auto': an NPU, else OpenVINO's CPU encoder when installed, bf16 where "
                   "the CPU computes bf16 natively, else f32)")
    g.add_argument("--onnx_providers", default=None,
                   help="ONNX Runtime execution providers, comma-separated or as a JSON list "
                   "(default: an NPU provider onnxruntime has, else the CPU)")
    g.add_argument("--threads", type=int, default=0,
                   help="CPU threads per model (0: the libraries' default; 1 per Ray worker)")

    d = decoding_group.add_argument_group(
        "decoding (faster-whisper's options, named as in whisperx)"
    )
    d.add_argument("--language", default=None, help="language code; detected when omitted")
    d.add_argument("--task", default="transcribe", choices=["transcribe", "translate"],
                   help="transcribe, or translate to English")
    d.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature; alone it is the only one used (0: greedy/beam, "
                   "deterministic). Neither this nor the increment: faster-whisper's "
                   "0.0, 0.2, ..., 1.0 fallback")
    # SUPPRESS: an explicit "None" (whisperx: no fallback) differs from leaving it out.
    d.add_argument("--temperature_increment_on_fallback", type=_optional(float),
                   default=argparse.SUPPRESS,
                   help="fall back from --temperature (default 0) up to 1.0 in these steps when "
                   "a window fails the thresholds below (whisperx's default is 0.2); None: no "
                   "fallback")
    d.add_argument("--best_of", type=_optional(int), default=5,
                   help="candidates when sampling with non-zero temperature")
    d.add_argument("--beam_size", type=_optional(int), default=5, help="beams in beam search")
    d.add_argument("--patience", type=float, default=1.0, help="beam search patience")
    d.add_argument("--length_penalty", type=float, default=1.0,
                   help="exponential length penalty")
    d.add_argument("--suppress_tokens", default="-1",
                   help="comma-separated token ids to suppress; -1: most special characters")
    d.add_argument("--suppress_numerals", action="store_true",
                   help="suppress tokens with digits and currency signs (spell numbers out)")
    d.add_argument("--initial_prompt", default=None, help="text to prompt the first window")
    d.add_argument("--hotwords", default=None, help="hint phrases for rare words")
    d.add_argument("--condition_on_previous_text", type=_str2bool, default=True,
                   metavar="{True,False}", help="prompt each window with the previous text")
    d.add_argument("--compression_ratio_threshold", type=_optional(float), default=2.4,
                   help="a window compressing better than this failed (gzip ratio)")
    d.add_argument("--logprob_threshold", type=_optional(float), default=-1.0,
                   help="a window with a lower average log probability failed")
    d.add_argument("--no_speech_threshold", type=_optional(float), default=0.6,
                   help="no-speech probability above which a failed window is silence")
    d.add_argument("--word_timestamps", type=_str2bool, default=False, metavar="{True,False}",
                   help="a time for every word (JSON words, word-level subtitles)")
    d.add_argument("--vad_filter", type=_str2bool, default=None, metavar="{True,False}",
                   help="skip non-speech with faster-whisper's Silero VAD (default: on with "
                   "--batch_size, which cuts the audio at pauses, off without)")
    d.add_argument("--vad_onset", type=float, default=None,
                   help="VAD speech threshold (faster-whisper's default 0.5)")
    d.add_argument("--vad_offset", type=float, default=None,
                   help="VAD threshold to end speech (default: onset - 0.15)")
    d.add_argument("--batch_size", type=int, default=None,
                   help="use faster-whisper's batched pipeline with this many windows at once")

    t = sub.add_parser(
        "transcribe", parents=[common, model_group, decoding_group], formatter_class=defaults,
        help="transcribe audio files, directories and manifests",
        description=(
            "Transcribe files, directories (recursively, audio found by extension) and "
            "manifests. The job is resumable: a journal in --output_dir records every finished "
            "input, so running the same command again transcribes only what is new, changed "
            "or (with --retry-failed) failed. " + NAMING_HELP
        ),
    )
    t.add_argument("audio", nargs="*", help="audio files and directories (anything PyAV decodes)")
    t.add_argument(
        "--manifest", action="append", default=[], metavar="FILE",
        help="a file listing inputs: one path per line, or CSV with a 'path' column; "
        "relative paths are from the manifest's folder (repeatable)",
    )

    o = t.add_argument_group("outputs")
    o.add_argument("--output_format", "-f", default="all", choices=OUTPUT_FORMATS,
                   help="WhisperX's output files ('all': the five)")
    o.add_argument("--output_dir", "-o", default=".",
                   help="where outputs, the journal and the failures list go")
    o.add_argument("--highlight_words", type=_str2bool, default=False, metavar="{True,False}",
                   help="underline each word as it is spoken in srt and vtt "
                   "(needs --word_timestamps True)")
    o.add_argument("--max_line_width", type=_optional(int), default=None,
                   help="characters per subtitle line (needs --word_timestamps True)")
    o.add_argument("--max_line_count", type=_optional(int), default=None,
                   help="lines per subtitle (needs --word_timestamps True)")

    j = t.add_argument_group("job")
    j.add_argument("--retry-failed", action="store_true",
                   help="transcribe again the inputs an earlier run of this job failed on")
    j.add_argument("--force", action="store_true",
                   help="transcribe every input again, even those the journal has as done")
    j.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on Ray: alone, an embedded local Ray; with an address ('auto', "
                   "'host:port', 'ray://host:port'), that cluster. Needs the 'ray' extra")
    j.add_argument("--workers", type=int, default=None,
                   help="Ray model actors (default: one per node)")
    j.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")

    sub.add_parser("info", parents=[common],
                   help="versions, XRT/NPU presence and the attention backend auto picks")

    e = sub.add_parser("export-onnx", parents=[common], formatter_class=defaults,
                       help="export the encoder to ONNX (static shapes)")
    e.add_argument("--model", default="base",
                   help="a model name as for transcribe, or a CTranslate2 dir")
    e.add_argument("--batch", type=int, default=1, help="windows per call (static)")
    e.add_argument("--out", default=None, help="directory (default: the cache --encoder uses)")

    s = sub.add_parser(
        "serve", parents=[common, model_group, decoding_group], formatter_class=defaults,
        help="an OpenAI-compatible transcription server and a web page, one model for all",
    )
    from .server.options import add_server_arguments

    add_server_arguments(s)

    lv = sub.add_parser(
        "live", parents=[common, model_group], formatter_class=defaults,
        help="transcribe the microphone, a file or stdin as the audio arrives",
        description=(
            "Live transcription (LocalAgreement-2 over a rolling buffer): each committed "
            "line goes to stdout as soon as two passes agree on it, the changing tail to "
            "stderr (on a terminal, or with --partial); at the end, or on Ctrl-C, the "
            "committed words are written in WhisperX's formats."
        ),
    )
    ld = lv.add_argument_group("decoding")
    ld.add_argument("--language", default=None,
                   help="language code; detected from the first words when omitted")
    ld.add_argument("--task", default="transcribe", choices=["transcribe", "translate"],
                   help="transcribe, or translate to English")
    ld.add_argument("--beam_size", type=int, default=5, help="beams in beam search")
    ld.add_argument("--initial_prompt", default=None, help="text to prompt the first pass")
    ls = lv.add_argument_group("stream")
    ls.add_argument("--input", default=None, metavar="FILE",
                   help="an audio file (anything faster-whisper decodes), or '-' for raw "
                   "PCM16 mono 16 kHz on stdin (default: the default microphone)")
    ls.add_argument("--realtime", action="store_true",
                   help="feed a file at real-time pace (default: as fast as it transcribes)")
    ls.add_argument("--partial", action="store_true",
                   help="show the uncommitted tail on stderr even when it is not a terminal")
    ls.add_argument("--min_chunk", type=float, default=1.0,
                   help="seconds of new audio that start a new pass")
    ls.add_argument("--buffer", type=float, default=15.0,
                   help="seconds of audio kept before the buffer is cut at a committed "
                   "segment end")
    ls.add_argument("--vad", type=_str2bool, default=True, metavar="{True,False}",
                   help="skip silence with faster-whisper's Silero VAD")
    lo = lv.add_argument_group("outputs")
    lo.add_argument("--output_format", "-f", default="all", choices=OUTPUT_FORMATS,
                   help="WhisperX's output files ('all': the five)")
    lo.add_argument("--output_dir", "-o", default=".", help="where the outputs go")
    lo.add_argument("--output_name", default=None,
                   help="base name of the outputs (default: the input's name, else "
                   "live-<date>-<time>)")

    p = sub.add_parser("patch-whisperx", parents=[common],
                       help="make plain `whisperx --device npu` use this plugin")
    p.add_argument("--dry-run", action="store_true", help="show what would change")
    p.add_argument("--revert", action="store_true", help="remove the patch")
    return parser


def _ray_address_or_input(args: argparse.Namespace) -> None:
    """`--ray a.wav`: argparse takes the input for an address; a Ray address looks otherwise."""
    value = args.ray
    if value is None or value in ("local", "auto") or ":" in value:
        return
    args.audio.insert(0, value)
    args.ray = "local"


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """`api.get_model`'s keywords from the command line (a new route adds its option here)."""
    from .onnx.providers import parse_providers

    return {
        "model": args.model,
        "device": args.device,
        "attention": args.attention,
        "compute_type": args.compute_type,
        "cpu_threads": args.threads,
        "encoder": args.encoder,
        "onnx_providers": parse_providers(args.onnx_providers),
    }


def decode_options(args: argparse.Namespace) -> dict[str, Any]:
    """faster-whisper's `transcribe` keywords from the command line."""
    options: dict[str, Any] = {
        "language": args.language,
        "task": args.task,
        "beam_size": args.beam_size,
        "best_of": args.best_of,
        "patience": args.patience,
        "length_penalty": args.length_penalty,
        "suppress_tokens": [int(x) for x in args.suppress_tokens.split(",") if x.strip()],
        "initial_prompt": args.initial_prompt,
        "hotwords": args.hotwords,
        "condition_on_previous_text": args.condition_on_previous_text,
        "compression_ratio_threshold": args.compression_ratio_threshold,
        "log_prob_threshold": args.logprob_threshold,
        "no_speech_threshold": args.no_speech_threshold,
        "word_timestamps": args.word_timestamps,
    }
    if args.vad_filter is not None:  # else each pipeline's own default
        options["vad_filter"] = args.vad_filter
    step = getattr(args, "temperature_increment_on_fallback", None)
    if args.temperature is not None or hasattr(args, "temperature_increment_on_fallback"):
        first = args.temperature or 0.0
        if step:
            n = int((1.0 - first) / step + 1e-6) + 1
            options["temperature"] = [round(first + i * step, 6) for i in range(max(n, 1))]
        else:
            options["temperature"] = [first]
    if args.suppress_numerals:
        options["suppress_numerals"] = True
    vad = {}
    if args.vad_onset is not None:
        vad["threshold"] = args.vad_onset
    if args.vad_offset is not None:
        vad["neg_threshold"] = args.vad_offset
    if vad:
        options["vad_parameters"] = vad
    return options


def _transcribe(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        import whisperx.utils  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "output writers come from whisperx: pip install --no-deps whisperx==3.8.6"
        ) from None
    from .jobs import JobSettings, run_job
    from .jobs.inputs import collect_inputs
    from .jobs.outputs import formats_for

    _ray_address_or_input(args)
    if not args.audio and not args.manifest:
        parser.error("transcribe: give audio files, directories or --manifest FILE")
    if not args.word_timestamps:
        for option in ("highlight_words", "max_line_width", "max_line_count"):
            if getattr(args, option):
                parser.error(f"--{option} needs --word_timestamps True")
    if args.batch_size and args.vad_filter is False:
        parser.error("--batch_size needs the VAD: the batched pipeline cuts the audio at pauses")
    if args.workers is not None and args.ray is None:
        parser.error("--workers needs --ray")
    if args.ray is not None:
        from .jobs.ray_actors import import_ray

        import_ray()  # without the extra: one line saying how to install it
    inputs, errors = collect_inputs(args.audio, args.manifest)
    settings = JobSettings(
        output_dir=args.output_dir,
        formats=formats_for(args.output_format),
        writer_options={
            "highlight_words": args.highlight_words,
            "max_line_width": args.max_line_width,
            "max_line_count": args.max_line_count,
        },
        model_options=model_options(args),
        decode_options=decode_options(args),
        batch_size=args.batch_size,
        retry_failed=args.retry_failed,
        force=args.force,
        progress=args.progress,
        ray_address=args.ray,
        workers=args.workers,
    )
    return run_job(inputs, errors, settings).exit_status


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
        report["whisperx patch"] = f"unknown ({one_line(exc)})"
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
    from . import routing
    from .onnx import providers as onnx_providers

    report["onnxruntime"] = onnx_providers.describe()
    from .openvino import route as openvino_route

    report["openvino"] = openvino_route.describe()
    report.update(routing.describe())
    picked = report["encoder_auto_picks"]
    if not picked.startswith("torch"):  # a whole-encoder route: no attention backend runs
        report["auto_picks"] = "none"
        report["auto_reason"] += f"; encoder auto picks {picked}, which runs the whole encoder"
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
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    try:
        if args.command == "transcribe":
            return _transcribe(args, parser)
        if args.command == "info":
            return _info()
        if args.command == "patch-whisperx":
            return _patch_whisperx(args)
        if args.command == "export-onnx":
            return _export_onnx(args)
        if args.command == "live":
            from .live.command import run_live

            return run_live(args, model_options(args))
        if args.command == "serve":
            from .server.main import serve

            return serve(args, model_options(args), decode_options(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
