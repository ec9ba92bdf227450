"""The Whisper encoder in PyTorch, built from a CTranslate2 model.bin.

It reproduces CTranslate2's float32 encoder (pre-LN blocks, exact-erf GELU,
LayerNorm eps 1e-5, attention scale applied at run time) so that its output
can be handed to CTranslate2's decoder in place of CTranslate2's own encoder
output. The only difference is where the attention core runs: every layer
hands `q, k, v` to an `AttentionBackend`.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..attention import AttentionBackend, get_backend
from .models import resolve_model
from .weights import ModelFormatError, encoder_num_heads, read_encoder_weights

N_MELS_DEFAULT = 80
N_FRAMES = 3000


def _onednn_linear_available() -> bool:
    """oneDNN's prepacked float32 linear (the op TorchInductor's CPU backend emits).

    On the 2-core CPUs here it runs the encoder's GEMMs about 2.5x faster than
    `F.linear` at float32 accuracy, and fuses the FFN's GELU. It is a private
    op, so it is probed once and `F.linear` is used when it is missing or wrong.
    """
    if os.environ.get("AMANUENSIS_NPU_DISABLE_ONEDNN") or not torch.backends.mkldnn.is_available():
        return False
    try:
        w = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
        b = torch.randn(64, generator=torch.Generator().manual_seed(1))
        x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(2))
        packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
        got = torch.ops.mkldnn._linear_pointwise(x, packed, b, "gelu", [], "none")
        return bool(torch.allclose(got, F.gelu(F.linear(x, w, b)), atol=1e-4, rtol=1e-4))
    except (AttributeError, RuntimeError):
        return False


class _Linear(nn.Linear):
    """nn.Linear that can switch to oneDNN prepacked weights, optionally fusing GELU."""

    packed: torch.Tensor | None = None

    def pack(self) -> None:
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), None)

    def forward(self, x: torch.Tensor, gelu: bool = False) -> torch.Tensor:
        if self.packed is not None and x.dtype == torch.float32 and not x.requires_grad:
            attr = "gelu" if gelu else "none"
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, attr, [], "none")
        y = F.linear(x, self.weight, self.bias)
        return F.gelu(y) if gelu else y


class _Layer(nn.Module):
    def __init__(self, d_model: int, d_ffn: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model, eps=1e-5)
        self.qkv = _Linear(d_model, 3 * d_model)
        self.out = _Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model, eps=1e-5)
        self.fc1 = _Linear(d_model, d_ffn)
        self.fc2 = _Linear(d_ffn, d_model)


class WhisperEncoder(nn.Module):
    """Log-mel `[B, n_mels, 3000]` -> encoder states `[B, 1500, d_model]`."""

    def __init__(
        self,
        n_mels: int,
        d_model: int,
        n_heads: int,
        n_layers: int,
        d_ffn: int,
        n_ctx: int,
        backend: AttentionBackend,
    ) -> None:
        super().__init__()
        self.n_mels, self.d_model, self.n_heads = n_mels, d_model, n_heads
        self.n_layers, self.n_ctx = n_layers, n_ctx
        self.conv1 = nn.Conv1d(n_mels, d_model, 3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(n_ctx, d_model))
        self.layers = nn.ModuleList(_Layer(d_model, d_ffn) for _ in range(n_layers))
        self.ln_post = nn.LayerNorm(d_model, eps=1e-5)
        self.backend = backend
        self.eval()
        self.requires_grad_(False)

    @classmethod
    def from_weights(
        cls, weights: dict[str, np.ndarray], backend: AttentionBackend, prepack: bool = True
    ) -> WhisperEncoder:
        """Build from `read_encoder_weights` output; the architecture comes from the shapes.

        `prepack=False` keeps every projection a plain `F.linear`: oneDNN's prepacked
        ops are private and cannot be exported to ONNX.
        """
        try:
            d_model, n_mels, _ = weights["conv1/weight"].shape
            n_ctx = weights["position_encodings/encodings"].shape[0]
            n_layers = sum(1 for k in weights if k.endswith("self_attention/linear_0/weight"))
            d_ffn = weights["layer_0/ffn/linear_0/weight"].shape[0]
        except (KeyError, ValueError) as exc:
            raise ModelFormatError(f"not a Whisper encoder ({exc})") from None
        n_heads = encoder_num_heads(weights)
        enc = cls(n_mels, d_model, n_heads, n_layers, d_ffn, n_ctx, backend)

        def t(name: str) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(weights[name], dtype=np.float32))

        try:
            with torch.no_grad():
                enc.conv1.weight.copy_(t("conv1/weight"))
                enc.conv1.bias.copy_(t("conv1/bias"))
                enc.conv2.weight.copy_(t("conv2/weight"))
                enc.conv2.bias.copy_(t("conv2/bias"))
                enc.positions.copy_(t("position_encodings/encodings"))
                for i, layer in enumerate(enc.layers):
                    p = f"layer_{i}/"
                    layer.ln1.weight.copy_(t(p + "self_attention/layer_norm/gamma"))
                    layer.ln1.bias.copy_(t(p + "self_attention/layer_norm/beta"))
                    layer.qkv.weight.copy_(t(p + "self_attention/linear_0/weight"))
                    layer.qkv.bias.copy_(t(p + "self_attention/linear_0/bias"))
                    layer.out.weight.copy_(t(p + "self_attention/linear_1/weight"))
                    layer.out.bias.copy_(t(p + "self_attention/linear_1/bias"))
                    layer.ln2.weight.copy_(t(p + "ffn/layer_norm/gamma"))
                    layer.ln2.bias.copy_(t(p + "ffn/layer_norm/beta"))
                    layer.fc1.weight.copy_(t(p + "ffn/linear_0/weight"))
                    layer.fc1.bias.copy_(t(p + "ffn/linear_0/bias"))
                    layer.fc2.weight.copy_(t(p + "ffn/linear_1/weight"))
                    layer.fc2.bias.copy_(t(p + "ffn/linear_1/bias"))
                enc.ln_post.weight.copy_(t("layer_norm/gamma"))
                enc.ln_post.bias.copy_(t("layer_norm/beta"))
        except (KeyError, RuntimeError) as exc:
            raise ModelFormatError(f"not a Whisper encoder ({exc})") from None
        if prepack and _onednn_linear_available():
            for module in enc.modules():
                if isinstance(module, _Linear):
                    module.pack()
        return enc

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.dim() == 2:
            mel = mel.unsqueeze(0)
        if mel.dim() != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(
                f"expected log-mel features [batch, {self.n_mels}, frames], got {tuple(mel.shape)}"
            )
        x = mel.to(torch.float32)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        frames = x.shape[2]
        if frames > self.n_ctx:
            raise ValueError(f"input has {frames} encoder frames, the model supports {self.n_ctx}")
        # Contiguous [B, T, C] once here: a transposed view would make every
        # later LayerNorm and Linear copy its input.
        x = (x.transpose(1, 2) + self.positions[:frames]).contiguous()
        batch, heads = x.shape[0], self.n_heads
        head_dim = self.d_model // heads
        for i, layer in enumerate(self.layers):
            h = layer.ln1(x)
            qkv = layer.qkv(h).view(batch, frames, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            a = self.backend(qkv[0], qkv[1], qkv[2], layer=i)
            a = a.transpose(1, 2).reshape(batch, frames, self.d_model)
            x = x + layer.out(a)
            x = x + layer.fc2(layer.fc1(layer.ln2(x), gelu=True))
        return self.ln_post(x)


_CACHE: dict[tuple, dict[str, np.ndarray]] = {}
_CACHE_LOCK = threading.Lock()


def cached_encoder_weights(model_dir: os.PathLike | str) -> dict[str, np.ndarray]:
    """Encoder tensors of a model directory, read once per process and file version."""
    path = os.path.realpath(os.path.join(os.fspath(model_dir), "model.bin"))
    try:
        st = os.stat(path)
    except OSError:
        raise ModelFormatError(
            f"{model_dir}: not a CTranslate2 model directory (no model.bin)"
        ) from None
    key = (path, st.st_size, st.st_mtime_ns)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = read_encoder_weights(path)
        return _CACHE[key]


def load_encoder(
    model: str | os.PathLike = "base", attention: str | AttentionBackend = "auto"
) -> WhisperEncoder:
    """Our encoder for a model name or CTranslate2 directory, attention on `attention`.

    Weights are read once per process and model file, since a WhisperModel and
    a benchmark may each build an encoder for the same model.
    """
    backend = get_backend(attention)
    model_dir = resolve_model(model)
    return WhisperEncoder.from_weights(cached_encoder_weights(model_dir), backend)
