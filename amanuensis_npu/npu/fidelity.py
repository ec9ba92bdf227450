"""Attention and encoder fidelity: how far a backend's output is from exact attention.

One copy of the yardsticks the numerics tests and the accuracy benchmark both use,
so a bar in SPEC.md means the same number everywhere.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def exact_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """float64 softmax(q kᵀ / sqrt(d)) v: the yardstick every backend is measured against."""
    q64, k64, v64 = q.double(), k.double(), v.double()
    scores = (q64 @ k64.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ v64


def head_metrics(out: torch.Tensor, ref: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per (batch, head) cosine and relative L2 error of `out` against `ref`, in float64."""
    o = out.double().flatten(2)
    r = ref.double().flatten(2)
    dot = (o * r).sum(-1)
    norm_o, norm_r = o.norm(dim=-1), r.norm(dim=-1)
    cos = dot / (norm_o * norm_r).clamp_min(1e-300)
    rel = (o - r).norm(dim=-1) / norm_r.clamp_min(1e-300)
    return cos.cpu().numpy(), rel.cpu().numpy()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two tensors taken as flat vectors, in float64."""
    a64, b64 = a.double().flatten(), b.double().flatten()
    return float((a64 @ b64) / (a64.norm() * b64.norm()).clamp_min(1e-300))
