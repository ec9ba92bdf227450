"""The model.bin reader against models written by CTranslate2's own spec code."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from _ct2_builders import build_whisper_model

from amanuensis_npu.core.weights import (
    ModelFormatError,
    encoder_num_heads,
    read_encoder_weights,
    read_model_bin,
    saved_compute_type,
)

QUANTIZATIONS = [None, "float16", "int8", "int8_float16", "int8_float32", "int16", "bfloat16"]
# Worst-case weight error each storage type can introduce (|w| < 1 here).
TOLERANCE = {
    None: 0.0,
    "float16": 1e-3,
    "bfloat16": 8e-3,
    "int8": 4e-3,
    "int8_float16": 4e-3,
    "int8_float32": 4e-3,
    "int16": 1e-3,
}


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_round_trip_every_quantization(tmp_path: Path, quantization: str | None) -> None:
    model_dir, source = build_whisper_model(tmp_path / "m", quantization)
    weights = read_encoder_weights(model_dir / "model.bin")
    expected = {k[len("encoder/") :]: v for k, v in source.items() if k.startswith("encoder/")}
    assert set(weights) == set(expected) | {"num_heads"}
    assert encoder_num_heads(weights) == 2
    for name, value in expected.items():
        got = weights[name]
        assert got.dtype == np.float32 and got.shape == value.shape, name
        np.testing.assert_allclose(got, value, atol=TOLERANCE[quantization], rtol=0, err_msg=name)
    if quantization and quantization.startswith("int8"):
        raw = read_model_bin(model_dir / "model.bin").variables
        assert raw["encoder/layer_0/ffn/linear_0/weight"].dtype == np.int8
        assert "encoder/layer_0/ffn/linear_0/weight_scale" in raw


def test_aliases_are_resolved(tmp_path: Path) -> None:
    # Whisper ties the decoder's output projection to its embeddings; CT2 writes an alias.
    model_dir, _ = build_whisper_model(tmp_path / "m", None)
    variables = read_model_bin(model_dir).variables
    assert "decoder/projection/weight" in variables


def test_base_model_is_whisper_base(base_dir: Path) -> None:
    model = read_model_bin(base_dir / "model.bin")
    assert (model.version, model.spec, model.revision) == (6, "WhisperSpec", 3)
    weights = read_encoder_weights(base_dir / "model.bin")
    assert weights["conv1/weight"].shape == (512, 80, 3)
    assert encoder_num_heads(weights) == 8
    assert sum(k.endswith("self_attention/linear_0/weight") for k in weights) == 6
    # Whisper's K projection has no bias; CT2 stores zeros in the fused QKV bias.
    assert not weights["layer_0/self_attention/linear_0/bias"][512:1024].any()


def test_truncated_file_names_the_file(tmp_path: Path, base_dir: Path) -> None:
    bad = tmp_path / "model.bin"
    with open(base_dir / "model.bin", "rb") as fh:
        bad.write_bytes(fh.read(5_000_000))
    with pytest.raises(ModelFormatError, match=r"model\.bin.*truncated or corrupt"):
        read_encoder_weights(bad)


def test_garbage_and_non_whisper_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"this is not a model" * 10)
    with pytest.raises(ModelFormatError, match="junk.bin"):
        read_encoder_weights(junk)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty.bin"):
        read_encoder_weights(empty)
    with pytest.raises(ModelFormatError, match="not found"):
        read_encoder_weights(tmp_path / "missing.bin")


def test_other_spec_is_rejected(tmp_path: Path) -> None:
    model_dir, _ = build_whisper_model(tmp_path / "m", None)
    data = bytearray((model_dir / "model.bin").read_bytes())
    # The spec name follows the u32 version and a u16 length; rename it in place.
    assert data[6:17] == b"WhisperSpec"
    data[6:17] = b"MarianSpec_"
    (tmp_path / "model.bin").write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="not a Whisper model"):
        read_encoder_weights(tmp_path / "model.bin")


def test_bytes_input_matches_file(tmp_path: Path) -> None:
    model_dir, _ = build_whisper_model(tmp_path / "m", "int8")
    from_file = read_encoder_weights(model_dir / "model.bin")
    from_bytes = read_encoder_weights((model_dir / "model.bin").read_bytes())
    for name in from_file:
        np.testing.assert_array_equal(from_file[name], from_bytes[name])


def test_directory_without_model(tmp_path: Path) -> None:
    from amanuensis_npu.core.models import resolve_model

    (tmp_path / "notamodel").mkdir()
    with pytest.raises(ModelFormatError, match="not a CTranslate2 model directory"):
        resolve_model(tmp_path / "notamodel")
    shutil.rmtree(tmp_path / "notamodel")


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_default_compute_type_is_what_ctranslate2_runs(
    tmp_path: Path, quantization: str | None, capfd: pytest.CaptureFixture
) -> None:
    """`compute_type="default"` becomes the very type CTranslate2 picks for "default" on this
    CPU, spelled out, so the same arithmetic runs without its conversion warning."""
    import ctranslate2

    from amanuensis_npu.integrations.faster_whisper import cpu_compute_type

    model_dir, _ = build_whisper_model(tmp_path / "m", quantization)
    stock = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="default")
    converted = "compute type inferred" in capfd.readouterr().err
    saved = saved_compute_type(model_dir)
    assert saved == saved_compute_type((model_dir / "model.bin").read_bytes())
    assert converted == (saved != stock.compute_type)  # CTranslate2 warns exactly then
    resolved = cpu_compute_type("default", model_dir)
    assert resolved == stock.compute_type
    assert resolved in ctranslate2.get_supported_compute_types("cpu")
    ours = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type=resolved)
    assert ours.compute_type == stock.compute_type
    assert "compute type inferred" not in capfd.readouterr().err
    assert cpu_compute_type("int8", model_dir) == "int8"  # explicit choices pass through
