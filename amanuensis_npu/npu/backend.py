"""`attention="npu"`: encoder attention on the Ryzen AI NPU, and when it falls back to the CPU.

One kernel dispatch computes one encoder layer for a whole batch (all heads, all query
tiles); the tile loop runs on the device because a host loop over tiles costs more in
dispatch overhead than the attention itself (kernels/attention/SPEC.md). The same code
drives the real NPU and the simulated one (`xrt.load_xrt`).

The fallback policy: a transcription never fails because of the NPU.

- No usable NPU: every call runs on the CPU, and one line says so, worded as `auto`
  words it (`attention.cpu_fallback_message`); `amanuensis-npu info` has the reason.
- A failed call (run state other than COMPLETED, exception, NaN/inf, all-zero or
  out-of-range output) runs on the CPU, with one warning per distinct reason, counted
  in ``stats``. A success resets the count of consecutive failures; after
  ``AMANUENSIS_NPU_MAX_FAILURES`` (default 3) in a row the NPU is disabled for the
  process.
- A run that timed out disables the NPU at once: it cannot be aborted and may still be
  writing its buffers, which are dropped with its context and never reused
  (`amanuensis_npu.npu.session` gives the upstream reasons).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import torch

from ..attention import AttentionBackend, Availability, cpu_attention, cpu_fallback_message
from . import quantization
from .artifacts import Artifact, NoArtifact, buffer_layout
from .config import DEFAULT_MAX_FAILURES, DEFAULT_TIMEOUT_MS, max_failures, timeout_ms
from .errors import NPUError, RunTimedOut
from .session import DispatchTiming, Session
from .status import availability
from .xrt import load_xrt

logger = logging.getLogger("amanuensis_npu")

TIMED_OUT = "NPU disabled after a run timed out (pyxrt cannot abort it)"


class _Disabled(NPUError):
    """Another thread disabled the device while this call waited for it."""


class NPUAttention(AttentionBackend):
    """Attention on the Ryzen AI NPU (or the simulated one), falling back to the CPU per call.

    Constructing it never fails. One instance is shared per process (`get_backend`);
    the device is used under one lock, quantization and the CPU fallback are not.
    """

    name = "npu"

    @classmethod
    def availability(cls) -> Availability:
        return availability()

    def __init__(self) -> None:
        super().__init__()
        self._device_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._session: Session | None = None
        self._warned: set[str] = set()
        self._consecutive_failures = 0
        self._disabled: str | None = None
        self.keep_timings = False
        self.timings: list[tuple[int | None, int, DispatchTiming]] = []
        self._found = availability()
        self._unavailable: str | None = None if self._found.ok else self._found.summary
        self._max_failures, self._timeout_ms = DEFAULT_MAX_FAILURES, DEFAULT_TIMEOUT_MS
        self._xrt: Any = None
        if self._unavailable is not None:
            logger.warning(cpu_fallback_message(self._unavailable))
            return
        self._max_failures, self._timeout_ms = max_failures(), timeout_ms()
        self._xrt, _ = load_xrt()
        logger.info("NPU attention: %s", self._found.detail)

    # -- public state -----------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False when there is no usable NPU or it was disabled for this process."""
        return self._unavailable is None and self._disabled is None

    @property
    def route(self) -> str:
        """'npu (npu1)', 'npu (simulated npu1)', or 'cpu (...)' when the NPU is not used."""
        if self._unavailable is not None:
            return f"cpu ({self._unavailable})"
        if self._disabled is not None:
            return f"cpu ({self._disabled})"
        summary = self._found.summary.removesuffix(" NPU")
        return f"npu ({summary})"

    def state(self) -> dict[str, Any]:
        """Live state for `info` and debugging (no device access)."""
        session = self._session
        return {
            "route": self.route,
            "unavailable": self._unavailable,
            "disabled": self._disabled,
            "consecutive_failures": self._consecutive_failures,
            "max_failures": self._max_failures,
            "timeout_ms": self._timeout_ms,
            "session_open": session is not None,
            **(session.state() if session is not None else {}),
        }

    # -- the attention call -----------------------------------------------------------

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, layer: int | None = None
    ) -> torch.Tensor:
        if self._unavailable is not None:
            return self._cpu(q, k, v, self._unavailable, warn=False)
        if self._disabled is not None:
            return self._cpu(q, k, v, self._disabled, warn=False)
        try:
            return self._npu(q, k, v, layer)
        except NoArtifact as exc:  # a model shape not built: not a device failure
            return self._cpu(q, k, v, str(exc), warn=True, note="its calls run on the CPU")
        except _Disabled as exc:
            return self._cpu(q, k, v, str(exc), warn=False)
        except RunTimedOut as exc:
            return self._failure(q, k, v, str(exc), timed_out=True)
        except NPUError as exc:
            return self._failure(q, k, v, str(exc))
        except Exception as exc:  # anything unexpected: the transcription must go on
            return self._failure(q, k, v, f"unexpected {type(exc).__name__}: {exc}")

    def _open_session(self) -> Session:
        """The open session (opened here if needed); call with the device lock held."""
        if self._disabled is not None:
            raise _Disabled(self._disabled)
        if self._session is None:
            self._session = Session(self._xrt)
        return self._session

    def _npu(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer: int | None
    ) -> torch.Tensor:
        # Every Whisper size has heads of 64 over 1500 frames; the head count is the
        # model's, and selects the artifact (its runtime sequence is built per count).
        kernel_shape = (quantization.FRAMES, quantization.HEAD_DIM)
        if q.dim() != 4 or tuple(q.shape[2:]) != kernel_shape:
            raise NPUError(
                f"the NPU kernel is built for attention of shape [batch, heads, "
                f"{kernel_shape[0]}, {kernel_shape[1]}], got {list(q.shape)}"
            )
        batch, heads = int(q.shape[0]), int(q.shape[1])
        with self._device_lock:
            session = self._open_session()
            artifacts = session.artifact_set(heads)
            plan = artifacts.plan(batch)
            loaded = set(session.loaded)
        if not plan:
            raise NPUError(
                f"no kernel artifact covers batch {batch} (built: {artifacts.summary()})"
            )
        chunks, start = [], 0
        for artifact, size in plan:
            chunks.append((artifact, slice(start, start + size), size))
            start += size
        # Chunks for the artifact already loaded first: fewer context switches on npu1.
        outs: dict[int, torch.Tensor] = {}
        for artifact, sl, size in sorted(chunks, key=lambda c: c[0].directory not in loaded):
            outs[sl.start] = self._dispatch(artifact, q[sl], k[sl], v[sl], size, layer)
        with self._state_lock:
            self._consecutive_failures = 0
        ordered = [outs[s] for s in sorted(outs)]
        return ordered[0] if len(ordered) == 1 else torch.cat(ordered, dim=0)

    def _dispatch(
        self,
        artifact: Artifact,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        batch: int,
        layer: int | None,
    ) -> torch.Tensor:
        packed = quantization.pack_layer(q, k, v)  # outside the lock: other threads may dispatch
        inputs = [np.ascontiguousarray(a) for a in packed.inputs]
        template = packed.output
        sizes = [int(a.nbytes) for a in inputs] + [int(template.nbytes)]
        expected = [int(spec.nbytes) for spec in buffer_layout(batch, artifact.heads)]
        if sizes != expected:
            raise NPUError(f"packed buffers {sizes} do not match the kernel layout {expected}")
        moved = {"dispatches": 0, "to_device": 0, "from_device": 0}
        with self._device_lock:
            session = self._open_session()
            try:
                raw, timing = session.dispatch(
                    session.load(artifact),
                    inputs,
                    int(template.nbytes),
                    batch,
                    self._timeout_ms,
                    moved,
                )
            except Exception as exc:
                # The device may still write these buffers, or the context may be
                # unusable: drop them all; the next call starts from a fresh session.
                session.close()
                self._session = None
                if isinstance(exc, RunTimedOut):  # before the lock opens to other threads
                    self._set_disabled(TIMED_OUT)
                raise
            finally:
                self.stats.add(
                    dispatches=moved["dispatches"],
                    bytes_to_device=moved["to_device"],
                    bytes_from_device=moved["from_device"],
                )
        self.stats.add(layer_time=(layer, timing.total))
        if self.keep_timings:
            self.timings.append((layer, batch, timing))
        return _checked_output(raw, packed, template, v).to(dtype=q.dtype)

    # -- fallback ---------------------------------------------------------------------

    def _set_disabled(self, why: str) -> bool:
        """Disable the NPU for the process; True for the caller that did it."""
        with self._state_lock:
            if self._disabled is not None:
                return False
            self._disabled = why
            return True

    def _failure(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        reason: str,
        *,
        timed_out: bool = False,
    ) -> torch.Tensor:
        with self._state_lock:
            self._consecutive_failures += 1
            failures = self._consecutive_failures
        result = self._cpu(q, k, v, reason, warn=True)
        announce = timed_out  # _dispatch disabled the device under its lock
        if not timed_out and failures >= self._max_failures:
            announce = self._set_disabled(f"NPU disabled after {failures} consecutive failures")
            if announce:
                with self._device_lock:
                    if self._session is not None:
                        self._session.close()
                    self._session = None
        if announce:  # the failure itself was just logged, unless it repeated a reason
            detail = "" if timed_out else f" (last: {reason})"
            logger.warning(
                "%s%s; attention runs on the CPU for the rest of this process.",
                self._disabled,
                detail,
            )
        return result

    def _cpu(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        reason: str,
        *,
        warn: bool,
        note: str | None = None,
    ) -> torch.Tensor:
        if warn:
            with self._state_lock:
                first = reason not in self._warned
                self._warned.add(reason)
            if first and note:
                logger.warning("NPU attention: %s; %s.", reason, note)
            elif first:
                logger.warning("NPU attention failed (%s); this call ran on the CPU.", reason)
        self.stats.add(fallback_reason=reason)
        return cpu_attention(q, k, v)


def _checked_output(
    raw: np.ndarray, packed: Any, template: np.ndarray, v: torch.Tensor
) -> torch.Tensor:
    """The kernel's output as float, or NPUError when it cannot be right."""
    if not raw.any() and bool(torch.any(v != 0)):
        raise NPUError("kernel output is all zeros for non-zero input")
    out_buffer = raw.view(template.dtype).reshape(template.shape).copy()
    if np.issubdtype(out_buffer.dtype, np.integer):
        # SPEC.md §5: |out16| <= 127 * 256 on valid input; beyond it is garbage.
        limit = 127 * quantization.OUT_FRAC
        if int(np.abs(out_buffer.astype(np.int32)).max()) > limit:
            raise NPUError(f"kernel output exceeds the SPEC bound |out| <= {limit}")
    result = quantization.unpack_output(packed, out_buffer)
    if not bool(torch.isfinite(result).all()):
        raise NPUError("kernel output is not finite (NaN/inf)")
    return result
