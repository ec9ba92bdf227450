"""Errors of the NPU path; their messages are the fallback reasons users see."""

from __future__ import annotations


class NPUError(RuntimeError):
    """A failure of the NPU path; this call's attention runs on the CPU instead."""


class RunTimedOut(NPUError):
    """A run did not finish within AMANUENSIS_NPU_TIMEOUT_MS and may still be running.

    pyxrt cannot abort it (see `amanuensis_npu.npu.session`), so the backend gives up on
    the device for the rest of the process instead of counting it as one more failure.
    """
