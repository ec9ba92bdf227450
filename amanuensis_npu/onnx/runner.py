"""The ONNX encoder route: our exported encoder on ONNX Runtime, torch on the CPU as fallback.

One ONNX Runtime session per exported batch size, created on first use (batch 1 at
load). A call of N windows runs through the exported sizes, largest first, so a
batch size without an export of its own still runs on the execution provider.

Fallback, like the NPU attention backend's: a session that fails to create or
compile, a run that raises, or output with NaN/inf runs that call on our torch
encoder on the CPU, with one warning per reason, counted in the encoder statistics.
A batch size whose session failed is not retried (VitisAI compiles can take many
minutes); a failed run is, on the next call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.routes import TORCH, EncoderRoute
from ..messages import one_line
from . import providers as eps
from .export import EXPORT_FORMAT, INPUT_NAME, OUTPUT_NAME, ensure_export, exported_batches
from .sessions import create_session

logger = logging.getLogger("amanuensis_npu")

# (model path, providers, threads) -> an object with onnxruntime.InferenceSession's
# `run` and `get_providers`; tests substitute failing ones.
SessionFactory = Callable[[Path, list[tuple[str, dict]], int], Any]


class SessionUnavailable(RuntimeError):
    """No session can run this batch size (creation failed earlier, reason inside)."""


class OnnxRoute(EncoderRoute):
    """Encoder route `onnx:<provider>` (see the module docstring)."""

    def __init__(
        self,
        weights: dict[str, np.ndarray],
        model_sha256: str,
        spec: Sequence[eps.ProviderSpec],
        fallback: Any,
        *,
        threads: int = 0,
        session_factory: SessionFactory | None = None,
        export_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self._weights = weights
        self._sha256 = model_sha256
        self._spec = list(spec)
        self._fallback = fallback
        self._threads = threads
        self._factory = session_factory or create_session
        self._export_dir = export_dir
        self._lock = threading.Lock()
        self._warn_lock = threading.Lock()
        self._sessions: dict[int, Any] = {}
        self._broken: dict[int, str] = {}
        self._warned: set[str] = set()
        self.batch_sizes = sorted({1, *exported_batches(model_sha256, export_dir)}, reverse=True)
        first = self._spec[0]
        self._provider = first if isinstance(first, str) else first[0]
        try:  # at load, so an unusable route says so now, not mid-transcription
            self._session(1)
        except SessionUnavailable:
            pass  # warned once; every call runs on the torch fallback, counted

    @property
    def name(self) -> str:
        return f"onnx:{self._provider}"

    whole_encoder = True

    @property
    def device(self) -> str:
        """The execution provider that runs the exported (float32) encoder."""
        return self._provider

    @property
    def fallback_encoder(self) -> Any:
        return self._fallback

    # -- sessions ---------------------------------------------------------------------

    def _session(self, batch: int) -> Any:
        with self._lock:
            if batch in self._sessions:
                return self._sessions[batch]
            if batch in self._broken:
                raise SessionUnavailable(self._broken[batch])
            try:
                path = ensure_export(self._weights, self._sha256, batch, self._export_dir)
                providers = eps.session_providers(self._spec, self._sha256, batch, EXPORT_FORMAT)
                self._announce(providers, batch)
                session = self._factory(path, providers, self._threads)
                got = list(session.get_providers())
            except Exception as exc:
                reason = f"no ONNX Runtime session for batch {batch} ({one_line(exc)})"
                self._broken[batch] = reason
                if batch == 1:
                    self._warn(reason)
                else:
                    self._warn(f"{reason}; those windows run through smaller exports", False)
                raise SessionUnavailable(reason) from None
            self._sessions[batch] = session
        missing = self.missing([name for name, _ in providers], got)
        if missing:
            notes = list(getattr(session, "notes", []))
            why = "; ".join(notes) or f"onnxruntime could not use {', '.join(missing)}"
            self._warn(
                f"{why}; the ONNX encoder runs on {got[0] if got else 'no provider'}",
                fallback=False,
            )
        if batch == 1 and got:
            self._provider = got[0]
        return session

    def missing(self, requested: list[str], got: list[str]) -> list[str]:
        """Requested providers that did not run (the CPU one is a fallback, never missing)."""
        return [name for name in requested if name not in got and name != eps.CPU]

    def _announce(self, providers: list[tuple[str, dict]], batch: int) -> None:
        if not providers:
            return
        name, options = providers[0]
        if name == eps.VITISAI:
            target = Path(options.get("cache_dir") or ".") / str(options.get("cache_key", ""))
            if not target.exists():
                logger.warning(
                    "VitisAI is compiling the encoder for the NPU (batch %d); the first compile "
                    "can take 15 minutes or more, later starts reuse %s",
                    batch,
                    target,
                )
                return
        logger.info("ONNX Runtime session for batch %d on %s", batch, name)

    # -- the encoder call -------------------------------------------------------------

    def __call__(self, mel: torch.Tensor) -> np.ndarray:
        x = np.ascontiguousarray(mel.detach().cpu().numpy(), dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        try:
            out = self._run(x)
        except SessionUnavailable as exc:
            return self._cpu(mel, str(exc))
        except Exception as exc:  # whatever a provider raises, the transcription goes on
            reason = f"ONNX Runtime run failed ({one_line(exc)})"
            self._warn(reason)
            return self._cpu(mel, reason)
        if not np.isfinite(out).all():
            reason = "ONNX encoder output is not finite (NaN/inf)"
            self._warn(reason)
            return self._cpu(mel, reason)
        self.stats.add(self.name, int(x.shape[0]))
        return out

    def _run(self, x: np.ndarray) -> np.ndarray:
        outs, start, total = [], 0, x.shape[0]
        while start < total:
            size = next(s for s in self.batch_sizes if s <= total - start)
            try:
                session = self._session(size)
            except SessionUnavailable:
                if size == 1:
                    raise
                # That size cannot run here: from now on its windows go through smaller ones.
                self.batch_sizes = [s for s in self.batch_sizes if s != size]
                continue
            chunk = x[start : start + size]
            outs.append(session.run([OUTPUT_NAME], {INPUT_NAME: chunk})[0])
            start += size
        out = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _cpu(self, mel: torch.Tensor, reason: str) -> np.ndarray:
        with torch.inference_mode():
            out = self._fallback(mel)
        self.stats.add(TORCH, int(out.shape[0]), fallback_reason=reason)
        return np.ascontiguousarray(out.numpy())

    def _warn(self, reason: str, fallback: bool = True) -> None:
        with self._warn_lock:
            if reason in self._warned:
                return
            self._warned.add(reason)
        if fallback:
            logger.warning("%s; the encoder runs on the CPU for those calls", reason)
        else:
            logger.warning("%s", reason)
