"""ONNX Runtime sessions for the exported encoder: classic or plugin EPs, verified, quiet.

- Classic builds get `providers=[(name, options), ...]`; plugin EPs (plugins.py) get
  `SessionOptions.add_provider_for_devices(devices, options)` with the devices their
  options ask for. A plugin without such a device is left out, and said so.
- What really ran is read back from the session: ONNX Runtime's graph assignment
  (`session.record_ep_graph_assignment_info`, `get_provider_graph_assignment_info()`),
  because `get_providers()` lists a provider that took no node (a QNN backend that did
  not load leaves all 213 nodes to the CPU and still lists QNNExecutionProvider).
- QNN HTP compiles the graph ahead of time in strict mode (`session.disable_cpu_ep_fallback`:
  any node the HTP cannot take fails the compile) into an EP context file
  (`ep.context_enable`, onnxruntime docs execution-providers/EP-Context-Design.md), kept in
  the provider cache; later sessions load that file and compile nothing.
- Native output printed during creation (ONNX Runtime's `[E:onnxruntime:...]` lines, QNN's
  notes) is logged at info level instead of reaching the terminal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from . import plugins
from . import providers as eps

logger = logging.getLogger("amanuensis_npu")


class Session:
    """An onnxruntime.InferenceSession with the providers that really took nodes."""

    def __init__(self, inner: Any, requested: list[str], notes: list[str]) -> None:
        self.inner = inner
        self.notes = notes  # why a requested provider was left out, one phrase each
        self.nodes = assigned_nodes(inner)
        if self.nodes:  # most nodes first: [0] is the provider that ran the encoder
            self._providers = [name for name, _ in self.nodes.most_common()]
        else:
            self._providers = list(inner.get_providers())
        self.requested = requested

    def get_providers(self) -> list[str]:
        return list(self._providers)

    def run(self, outputs: Any, feed: dict) -> Any:
        return self.inner.run(outputs, feed)


def assigned_nodes(session: Any) -> Counter:
    """Nodes per execution provider in this session; empty when onnxruntime cannot say."""
    counts: Counter = Counter()
    try:
        for subgraph in session.get_provider_graph_assignment_info():
            counts[subgraph.ep_name] += len(subgraph.get_nodes())
    except Exception:
        return Counter()
    return counts


def _options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Errors reach us as exceptions and are logged once; ORT's own log only with --verbose.
    options.log_severity_level = 1 if logger.isEnabledFor(logging.DEBUG) else 4
    if threads > 0:
        options.intra_op_num_threads = threads
    # Without its CPU arena a session hands each window's activations back after the run
    # (measured: +24 MB instead of +275 MB held per batch-1 session, same speed).
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    return options


def plugin_devices(name: str, options: dict) -> tuple[list[Any], dict[str, str], str | None]:
    """(devices, options, why-none) for a plugin EP asked for with classic-form options."""
    devices = plugins.ep_devices(name)
    if name == eps.OPENVINO:
        kind, options = eps.openvino_plugin_options(options)
        chosen = [d for d in devices if plugins.device_kind(d) == kind]
        if not chosen:
            have = ", ".join(sorted({plugins.device_kind(d) for d in devices})) or "none"
            return [], options, f"OpenVINO has no {kind} device here ({have})"
        return chosen, options, None
    options = {k: str(v) for k, v in options.items()}
    return devices, options, None if devices else f"{name} offers no device here"


def create_session(path: Path, providers: list[tuple[str, dict]], threads: int) -> Session:
    """A session on `providers` that raises instead of printing and switching EPs.

    ONNX Runtime's Python session, when an execution provider fails, prints and retries
    on the CPU provider unless `enable_fallback=0`; we keep control so the fallback is our
    torch encoder, logged once, counted.
    """
    import onnxruntime as ort

    requested = [name for name, _ in providers]
    plugins.register_plugins()
    options = _options(threads)
    notes: list[str] = []
    first = providers[0][0] if providers else eps.CPU
    if first == eps.OPENVINO:
        # OpenVINO's documentation advises leaving graph optimization to OpenVINO.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with plugins.quiet_native_output("onnxruntime session"), warnings.catch_warnings():
        # "Specified provider ... is not in available provider names": checked by the caller.
        warnings.simplefilter("ignore")
        if not any(plugins.is_plugin(name) for name in requested):
            inner = ort.InferenceSession(
                str(path), sess_options=options, providers=providers, enable_fallback=0
            )
            return Session(inner, requested, notes)
        model = str(path)
        for name, opts in providers:
            if name == eps.CPU:
                continue  # always there after the others
            if not plugins.is_plugin(name):
                notes.append(f"{name} is not a plugin and cannot be mixed with plugins")
                continue
            if name == eps.QNN:
                model = str(qnn_context(path, opts, threads))
                opts = {k: v for k, v in opts.items() if k != "ep.context_file_path"}
            devices, plugin_opts, why = plugin_devices(name, opts)
            if why:
                notes.append(why)
                continue
            if name == eps.OPENVINO and threads > 0:
                _, plugin_opts = eps.openvino_plugin_options(opts, threads)
            options.add_provider_for_devices(devices, plugin_opts)
        inner = ort.InferenceSession(model, sess_options=options)
    return Session(inner, requested, notes)


def qnn_context_path(export: Path, options: dict) -> Path:
    """Where the compiled QNN context of this export with these options is cached."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    return eps.provider_cache_dir() / f"{export.stem}-qnn-{digest}.onnx"


def qnn_context(export: Path, options: dict, threads: int = 0) -> Path:
    """The QNN EP context file for `export`: reused when cached, else compiled strictly.

    The compile runs with `session.disable_cpu_ep_fallback`, so a node the HTP backend
    cannot take makes it fail (raised) instead of leaving that node to the CPU.
    """
    target = Path(options.get("ep.context_file_path") or qnn_context_path(export, options))
    if target.is_file():
        logger.info("QNN: reusing the compiled context %s", target)
        return target
    logger.info("QNN is compiling the encoder for the HTP; later starts reuse %s", target)
    try:
        compile_qnn_context(export, options, target, threads)
    except Exception as exc:
        text = str(exc)
        logger.info("QNN compile failed: %s", text)
        if "fallback to CPU EP has been explicitly disabled" in text:
            raise RuntimeError("QNN: part of the encoder cannot run on the HTP") from None
        raise RuntimeError(
            f"QNN could not compile the encoder ({text.splitlines()[0][:80]})"
        ) from None
    return target


def compile_qnn_context(export: Path, options: dict, target: Path, threads: int = 0) -> Counter:
    """Compile `export` for QNN's HTP into the EP context file `target` (atomically).

    Strict: every node must go to QNN, else onnxruntime raises. Returns nodes per provider
    of the compiling session (all QNN when it succeeds).
    """
    import onnxruntime as ort

    devices = plugins.ep_devices(eps.QNN) if plugins.is_plugin(eps.QNN) else []
    opts = {k: str(v) for k, v in options.items() if k != "ep.context_file_path"}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(dir=target.parent, prefix=".qnn-compile-"))
    tmp = tmpdir / target.name
    try:
        so = _options(threads)
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        so.add_session_config_entry("ep.context_enable", "1")
        so.add_session_config_entry("ep.context_file_path", str(tmp))
        so.add_session_config_entry("ep.context_embed_mode", "0")
        with plugins.quiet_native_output("QNN compile"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if devices:
                so.add_provider_for_devices(devices, opts)
                session = ort.InferenceSession(str(export), sess_options=so)
            else:  # a classic onnxruntime-qnn build
                session = ort.InferenceSession(
                    str(export), sess_options=so, providers=[(eps.QNN, opts)]
                )
        nodes = assigned_nodes(session)
        del session
        # The context model names its binary (<stem>_qnn.bin) relative to itself: same
        # names in the cache folder, the binary first, so a present model is complete.
        for produced in sorted(tmpdir.iterdir()):
            if produced != tmp:
                os.replace(produced, target.parent / produced.name)
        os.replace(tmp, target)
        return nodes
    finally:
        for leftover in tmpdir.iterdir() if tmpdir.exists() else ():
            leftover.unlink()
        if tmpdir.exists():
            tmpdir.rmdir()
