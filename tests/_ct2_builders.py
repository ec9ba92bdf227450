"""Build small, random CTranslate2 Whisper models with ctranslate2.specs, as the converter would.

The shapes follow Whisper's layout (80 mels, 1500 encoder positions, head_dim 64) scaled
down in width and depth, so that every quantization CTranslate2 writes can be produced in
a second and checked against CTranslate2's own encoder.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from ctranslate2.specs import whisper_spec


def _set(spec: object, name: str, value: np.ndarray) -> None:
    obj = spec
    parts = name.split("/")
    for part in parts[:-1]:
        m = re.fullmatch(r"(.+)_(\d+)", part)
        if m and isinstance(getattr(obj, m.group(1), None), list):
            obj = getattr(obj, m.group(1))[int(m.group(2))]
        else:
            obj = getattr(obj, part)
    setattr(obj, parts[-1], value)


def whisper_variables(
    d: int, heads: int, layers: int, vocab: int, seed: int, n_mels: int = 80,
    decoder_layers: int | None = None,
) -> dict:
    """Random float32 variables named as CTranslate2 names them (`n_mels` 128 for
    large-v3 and turbo; the converter takes it from conv1's weight). The decoder has
    `layers` layers too unless `decoder_layers` says otherwise (turbo has 4 for 32)."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def ln(prefix: str) -> dict:
        return {
            f"{prefix}/gamma": (1 + w(d, scale=0.1)).astype(np.float32),
            f"{prefix}/beta": w(d, scale=0.1),
        }

    v: dict[str, np.ndarray] = {
        "encoder/conv1/weight": w(d, n_mels, 3, scale=0.2),
        "encoder/conv1/bias": w(d),
        "encoder/conv2/weight": w(d, d, 3, scale=0.1),
        "encoder/conv2/bias": w(d),
        "encoder/position_encodings/encodings": w(1500, d, scale=0.5),
        "decoder/embeddings/weight": w(vocab, d, scale=0.5),
        "decoder/position_encodings/encodings": w(448, d, scale=0.5),
        "decoder/projection/weight": w(vocab, d, scale=0.5),
    }
    v.update(ln("encoder/layer_norm"))
    v.update(ln("decoder/layer_norm"))
    n_dec = layers if decoder_layers is None else decoder_layers
    for i in range(max(layers, n_dec)):  # interleaved: the default keeps its random stream
        if i < layers:
            e = f"encoder/layer_{i}"
            qkv_bias = w(3 * d)
            qkv_bias[d : 2 * d] = 0  # Whisper's K projection has no bias
            v.update(ln(f"{e}/self_attention/layer_norm"))
            v.update(ln(f"{e}/ffn/layer_norm"))
            v[f"{e}/self_attention/linear_0/weight"] = w(3 * d, d, scale=0.15)
            v[f"{e}/self_attention/linear_0/bias"] = qkv_bias
            v[f"{e}/self_attention/linear_1/weight"] = w(d, d)
            v[f"{e}/self_attention/linear_1/bias"] = w(d)
            v[f"{e}/ffn/linear_0/weight"] = w(4 * d, d)
            v[f"{e}/ffn/linear_0/bias"] = w(4 * d)
            v[f"{e}/ffn/linear_1/weight"] = w(d, 4 * d)
            v[f"{e}/ffn/linear_1/bias"] = w(d)
        if i < n_dec:
            dd = f"decoder/layer_{i}"
            v.update(ln(f"{dd}/self_attention/layer_norm"))
            v.update(ln(f"{dd}/attention/layer_norm"))
            v.update(ln(f"{dd}/ffn/layer_norm"))
            v[f"{dd}/self_attention/linear_0/weight"] = w(3 * d, d)
            v[f"{dd}/self_attention/linear_0/bias"] = w(3 * d)
            v[f"{dd}/self_attention/linear_1/weight"] = w(d, d)
            v[f"{dd}/self_attention/linear_1/bias"] = w(d)
            v[f"{dd}/attention/linear_0/weight"] = w(d, d)
            v[f"{dd}/attention/linear_0/bias"] = w(d)
            v[f"{dd}/attention/linear_1/weight"] = w(2 * d, d)
            v[f"{dd}/attention/linear_1/bias"] = w(2 * d)
            v[f"{dd}/attention/linear_2/weight"] = w(d, d)
            v[f"{dd}/attention/linear_2/bias"] = w(d)
            v[f"{dd}/ffn/linear_0/weight"] = w(4 * d, d)
            v[f"{dd}/ffn/linear_0/bias"] = w(4 * d)
            v[f"{dd}/ffn/linear_1/weight"] = w(d, 4 * d)
            v[f"{dd}/ffn/linear_1/bias"] = w(d)
    return v


def build_whisper_model(
    out_dir: Path,
    quantization: str | None = None,
    d: int = 128,
    heads: int = 2,
    layers: int = 2,
    vocab: int = 64,
    seed: int = 0,
    n_mels: int = 80,
    decoder_layers: int | None = None,
) -> tuple[Path, dict[str, np.ndarray]]:
    """Write a CT2 Whisper model dir; returns it and the float32 variables it was made from."""
    variables = whisper_variables(d, heads, layers, vocab, seed, n_mels, decoder_layers)
    n_dec = layers if decoder_layers is None else decoder_layers
    spec = whisper_spec.WhisperSpec(layers, heads, n_dec, heads)
    for name, value in variables.items():
        _set(spec, name, value.copy())
    spec.register_vocabulary([f"tok{i}" for i in range(vocab)])
    spec.validate()
    spec.optimize(quantization=quantization)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    spec.save(str(out_dir))
    return Path(out_dir), variables
