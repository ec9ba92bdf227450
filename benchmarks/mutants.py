"""A mutation check of the user-facing layer: realistic bugs the tests must catch.

Each mutant below is one small bug a user would notice (an output format refused, word
times wrong, a failure counter that never resets, a setting ignored, a journal that
forgets, a write that is not atomic...), written as an exact edit of the source. The
script copies the repository to a temporary folder once, then for each mutant applies
its edit there, runs the tests named for it (by node id, cheapest decisive test first,
stopping at the first failure) with that copy first on PYTHONPATH (the CLI tests' child
processes inherit it), and restores the file. A mutant is killed when a test fails;
one that leaves every named test green survived: either a test is missing or the
mutant is harmless, and the report says which.

Why a named list rather than a mutation tool: mutmut 3.8.1 generates 4,525 mutants for
these modules (cli.py alone 1,173), and the tests that can judge them transcribe real
speech in child processes (10-60 s each); at even 10 s per mutant that is 12 hours on
two cores, and mutmut's in-process coverage map does not see code that runs in a child
process, so the CLI's mutants would all be reported as untested.

    python benchmarks/mutants.py                 # baseline, then every mutant (~8 min on 2 cores)
    python benchmarks/mutants.py --list          # names, files, what each breaks
    python benchmarks/mutants.py -k counter tsv  # only mutants whose name contains a word
    python benchmarks/mutants.py --check         # each still applies; runs no test

tests/test_mutants.py checks on every run of the suite that every mutant still applies
(its text occurs exactly once, the result parses) and that every test it names exists.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CLI_T = "tests/test_cli_transcribe.py::"
CLI_A = "tests/test_cli_api.py::"
JOBS = "tests/test_jobs.py::"
NPU = "tests/test_npu_runtime.py::"
ONNX = "tests/test_onnx_encoder.py::"
WX = "tests/test_whisperx.py::"
WXCLI = "tests/test_whisperx_cli.py::"
SRV = "tests/test_server.py::"
LIVE = "tests/test_live.py::"
VR = "tests/test_vendor_runtimes.py::"


@dataclass(frozen=True)
class Mutant:
    """One realistic bug: exact edits of one file, and the tests that must catch it."""

    name: str
    path: str  # relative to the repository
    edits: tuple[tuple[str, str], ...]  # (text that occurs exactly once, its replacement)
    tests: tuple[str, ...]  # pytest node ids, the cheapest decisive one first
    breaks: str  # what a user would see

    def apply(self, source: str) -> str:
        """The mutated source; ValueError when an edit's text is not there exactly once."""
        for old, new in self.edits:
            count = source.count(old)
            if count != 1:
                raise ValueError(f"{self.name}: {self.path} holds {count} copies of {old!r}")
            source = source.replace(old, new)
        return source


MUTANTS: tuple[Mutant, ...] = (
    # --- the four of issue 13 ---------------------------------------------------------------
    Mutant(
        "cli-tsv-refused",
        "amanuensis_npu/cli.py",
        (('OUTPUT_FORMATS = ("txt", "srt", "vtt", "json", "tsv", "all")',
          'OUTPUT_FORMATS = ("txt", "srt", "vtt", "json", "all")'),),
        (f"{CLI_T}test_tsv_alone",),
        "`-f tsv` is refused",
    ),
    Mutant(
        "json-words-get-the-segment-start",
        "amanuensis_npu/api.py",
        (('seg["words"] = whisperx_words(s.words, language)',
          'seg["words"] = [{**w, "start": seg["start"]} '
          "for w in whisperx_words(s.words, language)]"),),
        (f"{CLI_T}test_json_words_have_their_own_times",),
        "every word in the JSON starts when its segment starts",
    ),
    Mutant(
        "npu-failure-counter-never-reset",
        "amanuensis_npu/npu/backend.py",
        (("        with self._state_lock:\n            self._consecutive_failures = 0\n",
          "        with self._state_lock:\n            pass\n"),),
        (f"{NPU}test_regression_success_resets_the_consecutive_failure_count",),
        "errors on NPU dispatches 1, 3 and 5 disable the NPU for the process",
    ),
    Mutant(
        "whisperx-npu-ignores-attention-setting",
        "amanuensis_npu/integrations/whisperx_cli.py",
        (('attention = os.environ.get(ATTENTION_ENV, "auto")', 'attention = "auto"'),),
        (f"{WXCLI}test_cli_emulator_int8_writes_all_five_formats",),
        "AMANUENSIS_NPU_ATTENTION=emulator has no effect on whisperx-npu",
    ),
    # --- the CLI's options ------------------------------------------------------------------
    Mutant(
        "cli-temperature-schedule-one-short",
        "amanuensis_npu/cli.py",
        (("n = int((1.0 - first) / step + 1e-6) + 1", "n = int((1.0 - first) / step + 1e-6)"),),
        (f"{CLI_T}test_decoding_options_reach_faster_whisper_as_whisperx_means_them",
         f"{CLI_T}test_every_format_matches_stock_whisperx"),
        "--temperature_increment_on_fallback 0.2 never falls back as far as 1.0",
    ),
    Mutant(
        "cli-temperature-increment-none-falls-back",
        "amanuensis_npu/cli.py",
        (('if args.temperature is not None or hasattr(args, "temperature_increment_on_fallback"):',
          "if args.temperature is not None or step is not None:"),),
        (f"{CLI_T}test_decoding_options_reach_faster_whisper_as_whisperx_means_them",),
        "--temperature_increment_on_fallback None still falls back up to temperature 1.0",
    ),
    Mutant(
        "cli-vad-offset-sets-the-onset",
        "amanuensis_npu/cli.py",
        (('vad["neg_threshold"] = args.vad_offset', 'vad["threshold"] = args.vad_offset'),),
        (f"{CLI_T}test_decoding_options_reach_faster_whisper_as_whisperx_means_them",
         f"{CLI_T}test_batch_size_matches_stock_batched_pipeline"),
        "--vad_offset replaces --vad_onset",
    ),
    Mutant(
        "cli-default-device-cpu",
        "amanuensis_npu/cli.py",
        (('g.add_argument("--device", default="npu",',
          'g.add_argument("--device", default="cpu",'),),
        (f"{CLI_T}test_route_line_for_the_emulator_and_the_simulated_npu",
         f"{CLI_A}test_default_run_prints_no_warning_but_the_cpu_line"),
        "the README's first command never uses the NPU",
    ),
    Mutant(
        "fw-device-cpu-uses-the-npu",
        "amanuensis_npu/integrations/faster_whisper.py",
        (('if device == "cpu" and isinstance(attention, str) and attention.lower() == "auto":',
          "if False:"),),
        (f"{NPU}test_device_cpu_keeps_attention_off_a_usable_npu",
         "tests/test_faster_whisper.py::test_device_cpu_uses_cpu_backend"),
        "--device cpu still sends attention to the NPU",
    ),
    Mutant(
        "cli-word-timestamps-dropped",
        "amanuensis_npu/cli.py",
        (('"word_timestamps": args.word_timestamps,', '"word_timestamps": False,'),),
        (f"{CLI_T}test_json_words_have_their_own_times",),
        "--word_timestamps True gives no word times",
    ),
    Mutant(
        "cli-suppress-numerals-dropped",
        "amanuensis_npu/cli.py",
        (('    if args.suppress_numerals:\n        options["suppress_numerals"] = True',
          '    if False:\n        options["suppress_numerals"] = True'),),
        (f"{CLI_T}test_suppress_numerals_reaches_decoding",),
        "--suppress_numerals still writes digits",
    ),
    Mutant(
        "cli-beam-size-default-1",
        "amanuensis_npu/cli.py",
        (('"--beam_size", type=_optional(int), default=5,',
          '"--beam_size", type=_optional(int), default=1,'),),
        (f"{CLI_T}test_help_shows_defaults_and_naming",),
        "greedy decoding by default where whisperx uses 5 beams",
    ),
    # --- the one-call API and its result ---------------------------------------------------
    Mutant(
        "api-hyphenated-word-split",
        "amanuensis_npu/api.py",
        (("if groups and not w.word[:1].isspace():", "if False:"),),
        (f"{CLI_A}test_word_level_subtitles_match_stock_whisperx",),
        "\"ill-disposed\" becomes two subtitle words, unlike stock whisperx",
    ),
    Mutant(
        "api-cjk-one-word-per-segment",
        "amanuensis_npu/api.py",
        (("    if language in LANGUAGES_WITHOUT_SPACES:\n", "    if False:\n"),),
        (f"{CLI_A}test_words_of_languages_without_spaces_keep_their_own_times[ja]",),
        "Japanese and Chinese JSON words and word-level subtitles: one 'word' per segment",
    ),
    Mutant(
        "api-model-cache-ignores-compute-type",
        "amanuensis_npu/api.py",
        (("key = (os.fspath(model), device, attention, compute_type, cpu_threads, encoder, "
          "providers_key)",
          "key = (os.fspath(model), device, attention, cpu_threads, encoder, providers_key)"),),
        (f"{CLI_A}test_one_cached_model_per_settings",),
        "compute_type='float32' after 'int8' in one process still decodes in int8",
    ),
    Mutant(
        "api-batch-size-ignored",
        "amanuensis_npu/api.py",
        (("        elif batch_size:\n", "        elif False:\n"),),
        (f"{CLI_T}test_batch_size_matches_stock_batched_pipeline",),
        "transcribe(batch_size=8) and --batch_size run the sequential pipeline",
    ),
    # Not listed: `if samples.size == 0:` never taken. Equivalent: faster-whisper 1.2.1
    # transcribes zero samples to no segments itself (sequential and batched, with VAD, word
    # times or translation); the branch only saves a language-detection pass. Removed after it
    # survived: a special case for WAV headers without samples, which PyAV (12.3 and 18.1)
    # decodes to zero samples itself; test_empty_and_tiny_audio_give_empty_transcript stays.
    Mutant(
        "api-stats-over-the-process",
        "amanuensis_npu/api.py",
        (("stats={**stats.snapshot(), **encoder_stats.snapshot()},",
          "stats={**whisper.attention_backend.stats.snapshot(), "
          "**encoder_stats.snapshot()},"),),
        (f"{CLI_A}test_transcribe_stats_are_per_call",),
        "result.stats counts every transcription the model ever made",
    ),
    # --- archive jobs -------------------------------------------------------------------------
    Mutant(
        "jobs-done-not-journaled",
        "amanuensis_npu/jobs/runner.py",
        (('                journal.record(\n                    **record, outputs=outputs, '
          'status="done",',
          '                dict(\n                    **record, outputs=outputs, '
          'status="done",'),),
        (f"{JOBS}test_a_bad_file_is_reported_kept_and_retried_on_request",),
        "a rerun transcribes everything again",
    ),
    Mutant(
        "jobs-non-atomic-write",
        "amanuensis_npu/jobs/outputs.py",
        (('with open(tmp, "x", encoding="utf-8") as fh:',
          'with open(path, "w", encoding="utf-8") as fh:'),
         ("        os.replace(tmp, path)\n", "")),
        (f"{JOBS}test_an_interrupted_write_leaves_the_old_file_whole",),
        "Ctrl-C during a write leaves half a transcript under the real name",
    ),
    Mutant(
        "jobs-stale-parts-kept",
        "amanuensis_npu/jobs/runner.py",
        (("remove_stale_parts(d for d in dirs if os.path.isdir(d))",
          "list(d for d in dirs if os.path.isdir(d))"),),
        (f"{JOBS}test_temporary_files_of_a_killed_run_are_removed",
         f"{JOBS}test_sigkill_mid_job_then_rerun_gives_identical_outputs"),
        "temporary files of a killed run stay in the output folder for ever",
    ),
    Mutant(
        "jobs-changed-options-not-redone",
        "amanuensis_npu/jobs/runner.py",
        (("            and entry.settings == fingerprint\n", ""),),
        (f"{JOBS}test_a_bad_file_is_reported_kept_and_retried_on_request",),
        "rerunning with other options keeps the old outputs",
    ),
    Mutant(
        "jobs-failed-retried-unasked",
        "amanuensis_npu/jobs/runner.py",
        (('if unchanged and entry.status == "failed" and not settings.retry_failed:',
          'if unchanged and entry.status == "failed" and settings.retry_failed:'),),
        (f"{JOBS}test_a_bad_file_is_reported_kept_and_retried_on_request",),
        "every rerun retries the files that failed (and --retry-failed skips them)",
    ),
    Mutant(
        "jobs-exit-0-with-earlier-failures",
        "amanuensis_npu/jobs/runner.py",
        (("return 1 if self.failed or self.failed_before else 0",
          "return 1 if self.failed else 0"),),
        (f"{JOBS}test_a_bad_file_is_reported_kept_and_retried_on_request",),
        "a rerun exits 0 while inputs are still failed",
    ),
    Mutant(
        "jobs-bad-first-file-stops-the-job",
        "amanuensis_npu/jobs/runner.py",
        (("        except AudioError as exc:\n", "        except LookupError as exc:\n"),),
        (f"{JOBS}test_a_bad_file_is_reported_kept_and_retried_on_request",),
        "an unreadable first file ends the job before the others are transcribed",
    ),
    Mutant(
        "jobs-output-names-collide",
        "amanuensis_npu/jobs/inputs.py",
        (("            while candidate.casefold() in taken:\n",
          "            if candidate.casefold() in taken:\n"),),
        (f"{JOBS}test_output_names_mirror_the_tree_and_never_collide",),
        "a third talk.wav from another folder overwrites the second one's outputs",
    ),
    Mutant(
        "jobs-manifest-paths-from-cwd",
        "amanuensis_npu/jobs/inputs.py",
        (("        base = os.path.dirname(os.path.abspath(manifest))\n",
          "        base = os.getcwd()\n"),),
        (f"{JOBS}test_manifests_plain_and_csv",),
        "a manifest's relative paths are read from the current folder",
    ),
    Mutant(
        "jobs-output-dir-made-when-all-fail",
        "amanuensis_npu/jobs/journal.py",
        (("        if os.path.exists(self.path):\n            self._open()\n",
          "        self._open()\n"),),
        (f"{JOBS}test_output_dir_is_not_created_when_every_input_fails",),
        "a run whose every input fails leaves an output folder with a journal",
    ),
    Mutant(
        "jobs-srt-and-vtt-swapped",
        "amanuensis_npu/jobs/outputs.py",
        (("writer = get_writer(ext, output_dir)",
          'writer = get_writer({"srt": "vtt", "vtt": "srt"}.get(ext, ext), output_dir)'),),
        (f"{CLI_T}test_every_format_matches_stock_whisperx",),
        "talk.srt holds WebVTT and talk.vtt holds SubRip",
    ),
    Mutant(
        "jobs-route-line-counts-dispatches",
        "amanuensis_npu/jobs/runner.py",
        (('summary.fallbacks += outcome.stats.get("fallbacks", 0)',
          'summary.fallbacks += outcome.stats.get("dispatches", 0)'),),
        (f"{CLI_T}test_route_line_for_the_emulator_and_the_simulated_npu",),
        "the route line says NPU calls fell back to the CPU when they ran on the NPU",
    ),
    # --- archive jobs, issue 19 --------------------------------------------------------------
    Mutant(
        "jobs-upper-case-extensions-not-audio",
        "amanuensis_npu/jobs/inputs.py",
        (("return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS",
          "return os.path.splitext(name)[1] in AUDIO_EXTENSIONS"),),
        (f"{JOBS}test_recorder_files_with_upper_case_extensions_are_audio",),
        "a folder of ZOOM0001.WAV and REC.MP3 is 'no audio files in this directory'",
    ),
    Mutant(
        "jobs-manifest-dotdot-escapes-output-dir",
        "amanuensis_npu/jobs/inputs.py",
        (("    if rel.startswith(os.pardir + os.sep) or rel == os.pardir or os.path.isabs(rel):\n",
          "    if os.path.isabs(rel):\n"),),
        (f"{JOBS}test_manifest_entries_with_dotdot_write_inside_the_output_dir",),
        "a manifest's ../audio/talk.wav writes talk.txt beside the audio, over the user's own",
    ),
    Mutant(
        "jobs-new-format-skipped",
        "amanuensis_npu/jobs/settings.py",
        (('            "formats": list(self.formats),\n', ""),),
        (f"{JOBS}test_another_output_format_on_rerun_writes_it",),
        "rerunning a finished job with -f srt after -f txt skips every file: no srt",
    ),
    Mutant(
        "jobs-same-size-edit-kept",
        "amanuensis_npu/jobs/runner.py",
        (("            and entry.mtime_ns == st.st_mtime_ns\n", ""),),
        (f"{JOBS}test_an_input_rewritten_to_the_same_size_is_transcribed_again",),
        "a re-recorded take of the same byte size keeps the old take's transcript",
    ),
    Mutant(
        "jobs-late-failure-not-journaled",
        "amanuensis_npu/jobs/runner.py",
        (("                if journal.exists:\n                    journal.record(**failed)\n",
          "                if False:\n                    journal.record(**failed)\n"),),
        (f"{JOBS}test_a_file_failing_after_a_success_is_journaled",),
        "a file failing after a success is retried by every rerun; --retry-failed means nothing",
    ),
    Mutant(
        "jobs-ray-address-taken-for-an-input",
        "amanuensis_npu/cli.py",
        (('if value is None or value in ("local", "auto") or ":" in value:',
          'if value is None or value in ("local", "auto"):'),),
        (f"{JOBS}test_ray_address_before_the_inputs_is_the_address[ray://head:10001]",),
        "--ray ray://head:10001 talk.wav starts a local Ray: 'ray://head:10001: no such file'",
    ),
    Mutant(
        "jobs-ray-queued-files-dropped",
        "amanuensis_npu/jobs/ray_actors.py",
        (("lost = [task] + [t for r, (t, s, _) in list(in_flight.items()) if s == slot]",
          "lost = [task]"),),
        (f"{JOBS}test_ray_two_workers_match_the_local_run_even_when_one_is_killed",),
        "the file queued behind the one a lost Ray worker was transcribing is never done",
    ),
    # --- the NPU backend's fallback policy --------------------------------------------------
    Mutant(
        "npu-disabled-one-failure-late",
        "amanuensis_npu/npu/backend.py",
        (("if not timed_out and failures >= self._max_failures:",
          "if not timed_out and failures > self._max_failures:"),),
        (f"{NPU}test_max_failures_setting",),
        "AMANUENSIS_NPU_MAX_FAILURES=2 disables the NPU after 3 failures",
    ),
    Mutant(
        "npu-timeout-keeps-the-device",
        "amanuensis_npu/npu/backend.py",
        (("                if isinstance(exc, RunTimedOut):",
          "                if False:"),),
        (f"{NPU}test_regression_timed_out_run_disables_the_npu_and_its_buffers_are_dropped",),
        "after a hung run, every call queues behind it for the timeout again",
    ),
    Mutant(
        "npu-all-zero-output-accepted",
        "amanuensis_npu/npu/backend.py",
        (("if not raw.any() and bool(torch.any(v != 0)):", "if False:"),),
        (f"{NPU}test_persistent_fault_falls_back_warns_twice_and_disables[zeros]",),
        "a kernel that wrote nothing gives silence-attention, and a wrong transcript",
    ),
    Mutant(
        "npu-warns-on-every-call",
        "amanuensis_npu/npu/backend.py",
        (("first = reason not in self._warned", "first = True"),),
        (f"{NPU}test_persistent_fault_falls_back_warns_twice_and_disables[error]",),
        "one warning per failed call: the terminal floods",
    ),
    Mutant(
        "npu-unexpected-error-escapes",
        "amanuensis_npu/npu/backend.py",
        (("        except Exception as exc:  # anything unexpected: the transcription must go on\n"
          "            return self._failure(q, k, v, "
          "f\"unexpected {type(exc).__name__}: {exc}\")\n",
          ""),),
        (f"{NPU}test_unexpected_error_in_a_dispatch_runs_that_call_on_the_cpu",
         f"{NPU}test_persistent_fault_falls_back_warns_twice_and_disables[raise]"),
        "a bug or driver error outside NPUError ends the transcription",
    ),
    Mutant(
        "npu-bad-outputs-keep-the-device",
        "amanuensis_npu/npu/backend.py",
        (("                with self._device_lock:\n"
          "                    if self._session is not None:\n"
          "                        self._session.close()\n"
          "                    self._session = None\n",
          "                pass\n"),),
        (f"{NPU}test_npu_disabled_for_bad_outputs_releases_its_context_and_buffers[zeros]",),
        "the NPU disabled for bad outputs keeps its context and buffers: npu1 blocked for others",
    ),
    # --- encoder routes, ONNX fallback ------------------------------------------------------
    Mutant(
        "onnx-run-error-escapes",
        "amanuensis_npu/onnx/runner.py",
        (("        except Exception as exc:  # whatever a provider raises, the transcription "
          "goes on\n",
          "        except MemoryError as exc:\n"),),
        (f"{ONNX}test_failing_onnx_runs_on_the_torch_cpu_encoder[run-raises]",),
        "an execution provider's error ends the transcription",
    ),
    Mutant(
        "onnx-nan-output-accepted",
        "amanuensis_npu/onnx/runner.py",
        (("        if not np.isfinite(out).all():\n", "        if False:\n"),),
        (f"{ONNX}test_failing_onnx_runs_on_the_torch_cpu_encoder[nan-output]",),
        "NaN encoder states reach the decoder",
    ),
    Mutant(
        "routes-no-npu-said-nothing",
        "amanuensis_npu/routing.py",
        (('                        _warn_once("auto", NO_NPU_LINE)\n',
          "                        pass\n"),),
        (f"{ONNX}test_auto_without_npu_provider_uses_torch_cpu_with_one_warning",),
        "device='npu' without an NPU runs on the CPU without saying so",
    ),
    # --- ONNX route, issue 19 items 7-10 -----------------------------------------------------
    Mutant(
        "onnx-failed-session-recreated",
        "amanuensis_npu/onnx/runner.py",
        (("            if batch in self._broken:\n", "            if False:\n"),),
        (f"{VR}test_a_session_that_fails_is_created_once",),
        "a provider whose session fails (a VitisAI compile error) is re-created on every call",
    ),
    Mutant(
        "onnx-failed-batch-size-kept",
        "amanuensis_npu/onnx/runner.py",
        (("                self.batch_sizes = [s for s in self.batch_sizes if s != size]\n",
          "                pass\n"),),
        (f"{VR}test_batched_run_finishes_when_the_batch_2_session_fails",),
        "batched transcription spins forever when a batch-above-1 session cannot be created",
    ),
    Mutant(
        "qnn-backend-wrong-platform",
        "amanuensis_npu/onnx/providers.py",
        (('    return "QnnHtp.dll" if (system or sys.platform) == "win32" else "libQnnHtp.so"',
          '    return "QnnHtp.dll" if (system or sys.platform) != "win32" else "libQnnHtp.so"'),),
        (f"{VR}test_qnn_backend_library_follows_the_platform",),
        "the QNN backend library of the other platform is asked for: the NPU never loads",
    ),
    Mutant(
        "onnx-providers-refused-with-auto",
        "amanuensis_npu/routing.py",
        (('            encoder = "onnx"  # naming providers is asking for the ONNX route\n',
          '            raise ValueError("onnx_providers applies to encoder=\'onnx\'")\n'),),
        (f"{VR}test_onnx_providers_with_the_default_encoder_is_the_onnx_route",),
        "`--onnx_providers X` with the default `--encoder auto` is refused",
    ),
    # --- vendor runtimes (plugin EPs, OpenVINO): written before their tests (issue 19) ------
    Mutant(
        "vendor-openvino-precision-not-f32",
        "amanuensis_npu/onnx/providers.py",
        (('    precision = str(options.get("precision", "FP32")).upper()',
          '    precision = str(options.get("precision", "BF16")).upper()'),),
        (f"{VR}test_openvino_plugin_f32_on_this_cpu_matches_torch_encoder",
         f"{VR}test_openvino_plugin_device_choice_on_either_cpu",
         f"{ONNX}test_provider_defaults_follow_the_vendor_docs",
         f"{ONNX}test_auto_prefers_an_npu_provider_with_the_vendor_options"),
        "the OpenVINO plugin runs in bf16 on AMX CPUs although nobody asked: words change",
    ),
    Mutant(
        "vendor-provider-not-verified",
        "amanuensis_npu/onnx/sessions.py",
        (("        self.nodes = assigned_nodes(inner)\n", "        self.nodes = Counter()\n"),),
        (f"{VR}test_the_provider_that_ran_is_read_from_the_session",
         f"{ONNX}test_onnx_on_device_npu_without_npu_provider_says_so_once",
         f"{ONNX}test_auto_prefers_an_npu_provider_with_the_vendor_options",
         f"{ONNX}test_transcribe_api_reports_the_route"),
        "`.encoder` names a plugin provider that took no node (all ran on the CPU)",
    ),
    # --- WhisperX -----------------------------------------------------------------------------
    Mutant(
        "whisperx-default-compute-type-not-float32",
        "amanuensis_npu/integrations/whisperx.py",
        (('    if compute_type == "default":\n        compute_type = "float32"\n',
          '    if False:\n        compute_type = "float32"\n'),),
        (f"{WXCLI}test_cli_amd_npu_default_compute_type_matches_stock_whisperx",),
        "--compute_type default converts float16 weights with a CTranslate2 warning",
    ),
    Mutant(
        "whisperx-load-model-decodes-in-float32",
        "amanuensis_npu/integrations/whisperx.py",
        (("            onnx_providers=onnx_providers,\n            compute_type=compute_type,\n",
          '            onnx_providers=onnx_providers,\n            compute_type="float32",\n'),),
        (f"{WXCLI}test_compute_type_reaches_ctranslate2[int8]",),
        "load_model(compute_type='int8') silently decodes in float32",
    ),
    Mutant(
        "whisperx-npu-compute-type-dropped",
        "amanuensis_npu/integrations/whisperx_cli.py",
        (("onnx_providers=providers, **kwargs,",
          'onnx_providers=providers, **{**kwargs, "compute_type": "default"},'),),
        (f"{WXCLI}test_compute_type_reaches_ctranslate2[int8]",),
        "whisperx-npu --compute_type int8 silently decodes in float32",
    ),
    Mutant(
        "whisperx-float16-accepted",
        "amanuensis_npu/integrations/whisperx.py",
        (('    if compute_type == "float16":\n        raise UnsupportedComputeTypeError(',
          '    if False:\n        raise UnsupportedComputeTypeError('),),
        (f"{WXCLI}test_float16_is_refused_clearly",),
        "--compute_type float16 with --device npu fails deep in CTranslate2, not in one line",
    ),
    Mutant(
        "whisperx-amd-npu-not-claimed",
        "amanuensis_npu/integrations/whisperx.py",
        (("    if name == AMD_NPU:\n        return True\n",
          "    if name == AMD_NPU:\n        return False\n"),),
        (f"{WXCLI}test_cli_amd_npu_default_compute_type_matches_stock_whisperx",),
        "--device amd-npu is handed to torch, which does not know it",
    ),
    Mutant(
        "whisperx-npu-taken-from-torch-npu",
        "amanuensis_npu/integrations/whisperx.py",
        (("    if torch_npu_present():\n        _warn_clash_once(",
          "    if False:\n        _warn_clash_once("),),
        (f"{WX}test_npu_name_yields_to_torch_npu",),
        "an Ascend user's --device npu gets the AMD plugin",
    ),
    Mutant(
        "whisperx-finished-transcripts-lost",
        "amanuensis_npu/integrations/whisperx_cli.py",
        (("            saved = run.write_finished()\n",
          '            saved = "wrote nothing"\n'),),
        (f"{WXCLI}test_cli_stage_failing_after_transcription_keeps_the_transcript",),
        "alignment failing after transcription throws the transcripts away",
    ),
    Mutant(
        "whisperx-no-preflight",
        "amanuensis_npu/integrations/whisperx_cli.py",
        (("            run.preflight()\n", "            pass\n"),),
        (f"{WXCLI}test_cli_alignment_offline_stops_before_transcribing",),
        "a missing alignment model is found only after every file was transcribed",
    ),
    # --- the server (issue 16) ----------------------------------------------------------------
    Mutant(
        "server-stream-done-text-empty",
        "amanuensis_npu/server/formats.py",
        (('return sse({"type": "transcript.text.done", "text": result.text})',
          'return sse({"type": "transcript.text.done", "text": ""})'),),
        (f"{SRV}test_streaming_deltas_join_to_the_done_text",),
        "a streaming client's final transcript is empty (one peer ships exactly this)",
    ),
    Mutant(
        "server-content-length-ignored",
        "amanuensis_npu/server/limits.py",
        (('            if name == b"content-length":\n',
          '            if name == b"content_length":\n'),),
        (f"{SRV}test_upload_over_the_limit_is_refused_before_its_body_is_read",),
        "a 30 MB upload is read in full before its 413",
    ),
    Mutant(
        "server-queued-client-never-dropped",
        "amanuensis_npu/server/app.py",
        (("        if await request.is_disconnected():\n            scheduler.cancel(job)\n",
          "        pass\n"),),
        (f"{SRV}test_client_leaving_the_queue_is_dropped_and_one_leaving_mid_run_breaks_nothing",),
        "a client that gave up still costs a whole transcription of the NPU's time",
    ),
    # --- issue 26: honest route lines, OpenAI's published schema -----------------------------
    Mutant(
        "whole-encoder-route-claims-attention",
        "amanuensis_npu/api.py",
        (('        "backend": NO_BACKEND if whole else model.attention_backend.name,',
          '        "backend": model.attention_backend.name,'),),
        (f"{SRV}test_health_route_of_a_whole_encoder_route_names_no_attention",
         f"{ONNX}test_transcribe_api_reports_the_route"),
        "the OpenVINO/ONNX route line reports an attention backend and 0 of 0 calls",
    ),
    Mutant(
        "translation-json-carries-usage",
        "amanuensis_npu/server/formats.py",
        (('        if task == "transcribe":  # CreateTranslationResponseJson is {"text"} only',
          '        if True:'),),
        ("tests/test_server_schema.py::test_translation_json_and_verbose_json",),
        "translations answer fields OpenAI's published translation schema does not have",
    ),
    Mutant(
        "live-keeps-hallucinated-segments",
        "amanuensis_npu/live/streaming.py",
        (("            if segment.words and _anomalous(segment.words):",
          "            if False:"),),
        ("tests/test_live.py::test_a_hallucinated_tail_is_not_committed",),
        "a sentence Whisper invents at the open end of a live buffer is committed",
    ),
    Mutant(
        "live-cuts-mid-gap",
        "amanuensis_npu/live/streaming.py",
        (("                self._cut(self._quietest(w.end, max(w.end, nxt.start)))",
          "                self._cut(max(w.end, (w.end + nxt.start) / 2))"),),
        (f"{LIVE}test_a_cut_goes_in_the_quiet_and_the_prompt_keeps_the_word_before_it",),
        "a live buffer cut inside the next word's sound loses that word",
    ),
    Mutant(
        "live-prompt-drops-straddling-word",
        "amanuensis_npu/live/streaming.py",
        (("        gone = [w for w in self._committed if (w.start + w.end) / 2 <= self._offset]",
          "        gone = [w for w in self._committed if w.end <= self._offset]"),),
        (f"{LIVE}test_a_cut_goes_in_the_quiet_and_the_prompt_keeps_the_word_before_it",),
        "the word before a live cut is neither heard again nor in the prompt, and the next is lost",
    ),
    Mutant(
        "live-ctrl-c-ignored",
        "amanuensis_npu/live/command.py",
        (("                while not ended and not interrupted.is_set():",
          "                while not ended:"),),
        (f"{LIVE}test_live_realtime_commits_before_the_audio_ends_and_ctrl_c_writes",),
        "Ctrl-C on `live --realtime` does not stop the stream: it plays on to the end",
    ),
    Mutant(
        "realtime-buffer-unbounded",
        "amanuensis_npu/server/realtime.py",
        (("        if self.detector is None and self.buffer.size + incoming > MAX_BUFFER_SAMPLES:",
          "        if False:"),),
        ("tests/test_server_realtime.py::test_a_full_buffer_refuses_more_audio_until_cleared",),
        "a client-committed realtime session holds audio without bound",
    ),
)


# ------------------------------------------------------------------------------- running


def check(mutants: tuple[Mutant, ...] = MUTANTS, root: Path = REPO) -> list[str]:
    """Problems that would make a mutant meaningless: missing text, bad syntax, bad test ids."""
    problems = []
    names = [m.name for m in mutants]
    problems += [f"{n}: name used twice" for n in sorted({n for n in names if names.count(n) > 1})]
    for m in mutants:
        source = (root / m.path).read_text()
        try:
            mutated = m.apply(source)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if mutated == source:
            problems.append(f"{m.name}: changes nothing")
        try:
            ast.parse(mutated)
        except SyntaxError as exc:
            problems.append(f"{m.name}: not valid Python ({exc})")
        for node in m.tests:
            file, _, rest = node.partition("::")
            function = re.sub(r"\[.*\]$", "", rest)
            path = root / file
            if not path.is_file() or not re.search(
                rf"^def {re.escape(function)}\(", path.read_text(), re.MULTILINE
            ):
                problems.append(f"{m.name}: no test {node}")
    return problems


def copy_repository(target: Path) -> None:
    """The files git knows (tracked and new), symlinks kept, into `target`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):
        source = REPO / rel
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            dest.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, dest)


def run_tests(root: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, str, float]:
    """('pass' | 'fail' | 'error' | 'timeout', the first failing test or the error, seconds)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])]),
        # Never a stale .pyc of the unmutated file (same size, same second).
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider",
               "--no-header", *tests]  # fmt: skip
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", f"no result within {timeout:.0f} s", time.perf_counter() - started
    seconds = time.perf_counter() - started
    if proc.returncode == 0:
        return "pass", "", seconds
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.MULTILINE)
    if proc.returncode == 1 and failed:
        return "fail", failed[0], seconds
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    return "error", f"pytest exit {proc.returncode}: {' | '.join(tail)}", seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", nargs="+", default=[], metavar="WORD",
                        help="only mutants whose name contains one of these words")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--check", action="store_true",
                        help="check that every mutant applies and names real tests; run nothing")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running the named tests on the unmutated copy first")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per test run")
    args = parser.parse_args(argv)

    mutants = tuple(m for m in MUTANTS if not args.k or any(w in m.name for w in args.k))
    if not mutants:
        parser.error(f"no mutant name contains any of {args.k}")
    if args.list:
        for m in mutants:
            print(f"{m.name:44} {m.path}\n{'':44} {m.breaks}")
        return 0
    problems = check(mutants)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems or args.check:
        if not problems:
            print(f"{len(mutants)} mutants apply and name existing tests")
        return 1 if problems else 0

    with tempfile.TemporaryDirectory(prefix="amanuensis-mutants-") as tmp:
        root = Path(tmp)
        copy_repository(root)
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
            print(f"baseline: {len(tests)} tests on the unmutated copy ...", flush=True)
            outcome, detail, seconds = run_tests(root, tests, args.timeout * 3)
            if outcome != "pass":
                print(f"baseline {outcome}: {detail}; a mutant's result would mean nothing",
                      file=sys.stderr)
                return 1
            print(f"baseline: pass ({seconds:.0f} s)", flush=True)
        survived, errors = [], []
        for m in mutants:
            target = root / m.path
            original = target.read_text()
            target.write_text(m.apply(original))
            try:
                outcome, detail, seconds = run_tests(root, m.tests, args.timeout)
            finally:
                target.write_text(original)
            if outcome == "fail":
                print(f"killed    {m.name:44} by {detail} ({seconds:.0f} s)", flush=True)
            elif outcome == "timeout":
                print(f"killed    {m.name:44} ({detail}: a hang)", flush=True)
            elif outcome == "pass":
                survived.append(m)
                print(f"SURVIVED  {m.name:44} {m.breaks} ({seconds:.0f} s)", flush=True)
            else:
                errors.append(m)
                print(f"error     {m.name:44} {detail}", flush=True)
    judged = len(mutants) - len(errors)
    killed = judged - len(survived)
    score = 100 * killed / judged if judged else 0.0
    print(f"score: {killed}/{judged} mutants killed ({score:.0f}%)"
          + (f"; survived: {', '.join(m.name for m in survived)}" if survived else "")
          + (f"; errors: {', '.join(m.name for m in errors)}" if errors else ""))
    return 0 if not survived and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
