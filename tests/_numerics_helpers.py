"""Shared helper for the attention-numerics tests: capturing each layer's Q/K/V."""

from __future__ import annotations

import torch


def recording_backend():
    """A CPU attention backend that keeps a copy of every layer's (layer, q, k, v)."""
    from amanuensis_npu.attention import AttentionBackend, cpu_attention

    class Recording(AttentionBackend):
        name = "recording"

        def __init__(self) -> None:
            super().__init__()
            self.records: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []

        def forward(self, q, k, v, *, layer=None):  # type: ignore[override]
            self.records.append((layer, q.detach().clone(), k.detach().clone(), v.detach().clone()))
            return cpu_attention(q, k, v)

    return Recording()
