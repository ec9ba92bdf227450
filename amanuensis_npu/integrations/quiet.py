"""Silence the two messages the WhisperX stack prints on every run that a user cannot act on.

Both are filtered by their exact text and origin, so any other warning or log
line from the same libraries still shows.

- pyannote.audio warns (20 lines) at import when torchcodec cannot load its
  FFmpeg libraries (pyannote/audio/core/io.py). whisperx never asks pyannote
  to decode: VAD and diarization get waveforms already in memory
  (whisperx/vads/pyannote.py, whisperx/diarize.py), so nothing fails.
- Lightning logs "Lightning automatically upgraded your loaded checkpoint ..."
  (lightning/pytorch/utilities/migration/utils.py) each time pyannote loads
  the VAD checkpoint bundled in the whisperx wheel; the advice it gives
  (rewrite a file inside site-packages) is not the user's to follow.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

_TORCHCODEC = r"\s*torchcodec is not installed correctly so built-in audio decoding will fail"
_CHECKPOINT_UPGRADE = "Lightning automatically upgraded your loaded checkpoint"
_LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.migration.utils",
    "pytorch_lightning.utilities.migration.utils",
)


@contextlib.contextmanager
def whisperx_imports() -> Iterator[None]:
    """Import whisperx/pyannote inside this block: their torchcodec warning is dropped."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=_TORCHCODEC, category=UserWarning, module=r"pyannote\.audio"
        )
        yield
    quiet_checkpoint_upgrade()


class _DropCheckpointUpgrade(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_CHECKPOINT_UPGRADE)


def quiet_checkpoint_upgrade() -> None:
    """Drop Lightning's checkpoint-upgrade notice (idempotent)."""
    for name in _LIGHTNING_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropCheckpointUpgrade) for f in target.filters):
            target.addFilter(_DropCheckpointUpgrade())
