"""FastConformer, relative attention and the .nemo tensor mapping, without NeMo or PyTorch.

(The comparison with NeMo itself lives in tests/nemo, run by .ci/run_nemo.sh.)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_asr_jax.convert.nemo import (
    BATCH_NORM_EPS,
    MASK_LOGIT_BIAS,
    NemoArchive,
    NemoConversionError,
    check_params_against_model,
    decoder_config_from_nemo,
    encoder_config_from_nemo,
    nemo_params,
)
from mdm_asr_jax.nn.config import ModelConfig
from mdm_asr_jax.nn.fastconformer import canary_decoder_config, canary_encoder_config
from mdm_asr_jax.nn.layers import MultiHeadAttention, relative_shift, relative_sinusoidal_table
from mdm_asr_jax.nn.model import ASRModel

# A NeMo config as small as the tests can make it: encoder width 32 (2 heads), decoder 48.
NEMO_CONFIG = {
    "prompt_format": "canary2",
    "model_defaults": {"asr_enc_hidden": 32, "lm_enc_hidden": 48, "lm_dec_hidden": 48},
    "encoder": {
        "_target_": "nemo.collections.asr.modules.ConformerEncoder",
        "feat_in": 16,
        "n_layers": 1,
        "d_model": 32,
        "subsampling": "dw_striding",
        "subsampling_factor": 8,
        "subsampling_conv_channels": 8,
        "ff_expansion_factor": 2,
        "n_heads": 2,
        "conv_kernel_size": 5,
        "xscaling": True,
    },
    "transf_decoder": {
        "config_dict": {
            "hidden_size": 48,
            "num_layers": 1,
            "num_attention_heads": 2,
            "inner_size": 96,
            "max_sequence_length": 32,
            "pre_ln": True,
            "hidden_act": "relu",
        }
    },
}
NEMO_VOCAB = 24  # rounded to a multiple of 8, as NeMo does
PIECES = 21


def _sinusoid_buffer(length: int, width: int) -> np.ndarray:
    from mdm_asr_jax.nn.layers import interleaved_sinusoidal_table

    return interleaved_sinusoidal_table(length, width) / np.sqrt(width)


def fake_nemo_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """A state dict with NeMo's names and shapes for NEMO_CONFIG (random values)."""
    rng = np.random.default_rng(seed)
    shapes: dict[str, tuple[int, ...]] = {}
    d, c, f, k, heads = 32, 8, 64, 5, 2
    shapes["encoder.pre_encode.conv.0.weight"] = (c, 1, 3, 3)
    shapes["encoder.pre_encode.conv.0.bias"] = (c,)
    for i in (2, 5):
        shapes[f"encoder.pre_encode.conv.{i}.weight"] = (c, 1, 3, 3)
        shapes[f"encoder.pre_encode.conv.{i}.bias"] = (c,)
        shapes[f"encoder.pre_encode.conv.{i + 1}.weight"] = (c, c, 1, 1)
        shapes[f"encoder.pre_encode.conv.{i + 1}.bias"] = (c,)
    shapes["encoder.pre_encode.out.weight"] = (d, c * 2)  # 16 mels / 8 = 2
    shapes["encoder.pre_encode.out.bias"] = (d,)
    layer = "encoder.layers.0"
    for name in ("norm_feed_forward1", "norm_feed_forward2", "norm_conv", "norm_self_att"):
        shapes[f"{layer}.{name}.weight"] = shapes[f"{layer}.{name}.bias"] = (d,)
    shapes[f"{layer}.norm_out.weight"] = shapes[f"{layer}.norm_out.bias"] = (d,)
    for ff in ("feed_forward1", "feed_forward2"):
        shapes[f"{layer}.{ff}.linear1.weight"] = (f, d)
        shapes[f"{layer}.{ff}.linear1.bias"] = (f,)
        shapes[f"{layer}.{ff}.linear2.weight"] = (d, f)
        shapes[f"{layer}.{ff}.linear2.bias"] = (d,)
    for proj in ("q", "k", "v", "out"):
        shapes[f"{layer}.self_attn.linear_{proj}.weight"] = (d, d)
        shapes[f"{layer}.self_attn.linear_{proj}.bias"] = (d,)
    shapes[f"{layer}.self_attn.linear_pos.weight"] = (d, d)
    shapes[f"{layer}.self_attn.pos_bias_u"] = shapes[f"{layer}.self_attn.pos_bias_v"] = (heads, 16)
    shapes[f"{layer}.conv.pointwise_conv1.weight"] = (2 * d, d, 1)
    shapes[f"{layer}.conv.pointwise_conv1.bias"] = (2 * d,)
    shapes[f"{layer}.conv.depthwise_conv.weight"] = (d, 1, k)
    shapes[f"{layer}.conv.depthwise_conv.bias"] = (d,)
    for stat in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{layer}.conv.batch_norm.{stat}"] = (d,)
    shapes[f"{layer}.conv.pointwise_conv2.weight"] = (d, d, 1)
    shapes[f"{layer}.conv.pointwise_conv2.bias"] = (d,)
    shapes["encoder_decoder_proj.weight"] = (48, d)
    shapes["encoder_decoder_proj.bias"] = (48,)
    w = 48
    emb = "transf_decoder._embedding"
    shapes[f"{emb}.token_embedding.weight"] = (NEMO_VOCAB, w)
    shapes[f"{emb}.layer_norm.weight"] = shapes[f"{emb}.layer_norm.bias"] = (w,)
    dec = "transf_decoder._decoder"
    shapes[f"{dec}.final_layer_norm.weight"] = shapes[f"{dec}.final_layer_norm.bias"] = (w,)
    for n in (1, 2, 3):
        shapes[f"{dec}.layers.0.layer_norm_{n}.weight"] = (w,)
        shapes[f"{dec}.layers.0.layer_norm_{n}.bias"] = (w,)
    for sub in ("first_sub_layer", "second_sub_layer"):
        for net in ("query_net", "key_net", "value_net", "out_projection"):
            shapes[f"{dec}.layers.0.{sub}.{net}.weight"] = (w, w)
            shapes[f"{dec}.layers.0.{sub}.{net}.bias"] = (w,)
    shapes[f"{dec}.layers.0.third_sub_layer.dense_in.weight"] = (96, w)
    shapes[f"{dec}.layers.0.third_sub_layer.dense_in.bias"] = (96,)
    shapes[f"{dec}.layers.0.third_sub_layer.dense_out.weight"] = (w, 96)
    shapes[f"{dec}.layers.0.third_sub_layer.dense_out.bias"] = (w,)
    shapes["log_softmax.mlp.layer0.bias"] = (NEMO_VOCAB,)
    tensors = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    tensors[f"{layer}.conv.batch_norm.running_var"] = rng.uniform(0.5, 2.0, d).astype(np.float32)
    tensors[f"{layer}.conv.batch_norm.num_batches_tracked"] = np.array(7, np.int64)
    tensors["log_softmax.mlp.layer0.weight"] = tensors[f"{emb}.token_embedding.weight"]
    tensors[f"{emb}.position_embedding.pos_enc"] = _sinusoid_buffer(32, w)
    tensors["preprocessor.featurizer.fb"] = np.zeros((1, 16, 257), np.float32)
    return tensors


def model_config(heads=("mdm", "ar")) -> ModelConfig:
    return ModelConfig(
        vocab_size=NEMO_VOCAB + 1,
        encoder=encoder_config_from_nemo(NEMO_CONFIG),
        mdm_decoder=decoder_config_from_nemo(NEMO_CONFIG, True) if "mdm" in heads else None,
        ar_decoder=decoder_config_from_nemo(NEMO_CONFIG, False) if "ar" in heads else None,
        prompt_ids=(4, 5),
        pad_id=1,
        eos_id=2,
    ).validate()


def archive(tensors: dict[str, np.ndarray]) -> NemoArchive:
    return NemoArchive(Path("fake.nemo"), NEMO_CONFIG, tensors, {}, [])


# -- relative attention ------------------------------------------------------------------------


def test_relative_shift_scores_the_distance_query_minus_key():
    length = 5
    rel = np.random.default_rng(0).standard_normal((1, 2, length, 2 * length - 1))
    shifted = np.asarray(relative_shift(jnp.asarray(rel)))
    for i in range(length):
        for s in range(length):
            # column j of `rel` holds distance length - 1 - j, so distance i - s is column:
            np.testing.assert_allclose(shifted[:, :, i, s], rel[:, :, i, length - 1 - i + s])


def test_relative_table_row_encodes_its_distance():
    table = relative_sinusoidal_table(4, 8)
    assert table.shape == (7, 8)
    np.testing.assert_allclose(table[3], [0, 1, 0, 1, 0, 1, 0, 1], atol=1e-7)  # distance 0
    np.testing.assert_allclose(table[0, 0], np.sin(3.0), rtol=1e-6)  # distance +3


def test_relative_attention_without_position_terms_is_plain_attention():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 6, 16)), jnp.float32)

    def dense(*shape):
        return {"kernel": jnp.asarray(rng.standard_normal(shape) * 0.3, jnp.float32)}

    plain_params = {name: dense(16, 2, 8) for name in ("query", "key", "value")}
    plain_params["out"] = dense(2, 8, 16)
    for name in ("query", "key", "value"):
        plain_params[name]["bias"] = jnp.asarray(rng.standard_normal((2, 8)), jnp.float32)
    plain_params["out"]["bias"] = jnp.zeros((16,))
    params = dict(plain_params, pos_proj={"kernel": jnp.zeros((16, 2, 8))})
    params["pos_bias_u"] = params["pos_bias_v"] = jnp.zeros((2, 8))
    table = jnp.asarray(relative_sinusoidal_table(6, 16))
    mask = jnp.arange(6)[None, None, None, :] < jnp.array([6, 4])[:, None, None, None]
    relative = MultiHeadAttention(2, 8, 16, relative=True)
    ours, _ = relative.apply({"params": params}, x, mask=mask, rel_table=table)
    reference, _ = MultiHeadAttention(2, 8, 16).apply({"params": plain_params}, x, mask=mask)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    # and the position terms do act: a non-zero u changes the output
    params["pos_bias_u"] = jnp.ones((2, 8))
    moved, _ = relative.apply({"params": params}, x, mask=mask, rel_table=table)
    assert not np.allclose(moved, reference, atol=1e-3)


# -- FastConformer encoder ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_encoder():
    """Jitted encode of the fake NeMo model (params from the converter: no init compile)."""
    cfg = model_config(heads=("ar",))
    params, _ = nemo_params(archive(fake_nemo_tensors()), cfg, PIECES)
    model = ASRModel(cfg)
    return jax.jit(lambda x, m: model.apply({"params": params}, x, m, method=ASRModel.encode))


def nemo_subsampled_length(frames: int) -> int:
    for _ in range(3):  # NeMo's calc_length: floor((L + 2 - 3) / 2) + 1 per stage
        frames = (frames - 1) // 2 + 1
    return frames


def test_subsampled_lengths_follow_nemo(tiny_encoder):
    lengths = np.array([64, 57, 33, 9])
    mask = np.arange(64)[None, :] < lengths[:, None]
    features = jax.random.normal(jax.random.PRNGKey(2), (4, 64, 16))
    _, enc_mask = tiny_encoder(features, mask)
    assert enc_mask.shape == (4, nemo_subsampled_length(64))
    np.testing.assert_array_equal(
        np.asarray(enc_mask).sum(1), [nemo_subsampled_length(n) for n in lengths]
    )


def test_padding_a_batch_row_does_not_change_its_encoding(tiny_encoder):
    features = jax.random.normal(jax.random.PRNGKey(3), (4, 64, 16))
    padded = features.at[1:, 41:].set(5.0)  # rows 1..3: 41 valid frames, then junk
    mask = jnp.arange(64)[None, :] < jnp.array([64, 41, 41, 41])[:, None]
    batched, mask_batched = tiny_encoder(padded, mask)
    alone, mask_alone = tiny_encoder(
        features.at[1:, 41:].set(0.0), jnp.broadcast_to(mask[1:2], (4, 64))
    )  # same 41 frames, different padding, one compile (same shapes)
    batched, mask_batched, alone, mask_alone = (
        batched[1:2],
        mask_batched[1:2],
        alone[1:2],
        mask_alone[1:2],
    )
    valid = int(np.asarray(mask_alone).sum())
    assert int(np.asarray(mask_batched).sum()) == valid
    np.testing.assert_allclose(batched[:, :valid], alone[:, :valid], atol=1e-5)


def test_canary_variant_table_gives_published_shapes():
    enc = canary_encoder_config("canary-180m-flash")
    dec = canary_decoder_config("canary-180m-flash")
    assert (enc.width, enc.num_layers, enc.output_width, dec.width, dec.num_layers) == (
        512,
        17,
        1024,
        1024,
        4,
    )
    big = canary_encoder_config("canary-1b-flash")
    assert (big.width, big.num_layers, big.output_width) == (1024, 32, 0)
    assert canary_decoder_config("canary-1b-flash", bidirectional=True).bidirectional
    assert dec.position_scale == pytest.approx(1 / 32)


# -- tensor mapping ---------------------------------------------------------------------------


def test_every_tensor_is_mapped_or_reported_and_fits_the_model():
    tensors = fake_nemo_tensors()
    cfg = model_config()
    params, report = nemo_params(archive(tensors), cfg, PIECES)
    assert set(report.mapped) | set(report.unused) == set(tensors)
    check_params_against_model(params, cfg, report)
    for head in ("mdm_decoder", "ar_decoder"):
        emb = params[head]["embed"]["embedding"]
        np.testing.assert_array_equal(emb[:NEMO_VOCAB], tensors["log_softmax.mlp.layer0.weight"])
        np.testing.assert_allclose(emb[-1], emb[:PIECES].mean(0), rtol=1e-6)  # [MASK] row
        assert params[head]["output_bias"][-1] == MASK_LOGIT_BIAS


def test_batch_norm_is_folded_into_the_depthwise_conv():
    tensors = fake_nemo_tensors()
    params, _ = nemo_params(archive(tensors), model_config(), PIECES)
    folded = params["encoder"]["block_0"]["conv"]["depthwise"]
    src = "encoder.layers.0.conv."
    x = np.random.default_rng(1).standard_normal((20, 32)).astype(np.float32)  # [T, D]
    weight, bias = tensors[src + "depthwise_conv.weight"], tensors[src + "depthwise_conv.bias"]
    padded = np.pad(x, ((2, 2), (0, 0)))

    def depthwise(kernel_tdk, b):  # 'same' depthwise conv, kernel [k, D]
        return np.stack([(padded[t : t + 5] * kernel_tdk).sum(0) for t in range(20)]) + b

    conv = depthwise(weight[:, 0, :].T, bias)
    mean, var = tensors[src + "batch_norm.running_mean"], tensors[src + "batch_norm.running_var"]
    gamma, beta = tensors[src + "batch_norm.weight"], tensors[src + "batch_norm.bias"]
    reference = (conv - mean) / np.sqrt(var + BATCH_NORM_EPS) * gamma + beta
    ours = depthwise(folded["kernel"][:, 0, :], folded["bias"])
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)


def test_unknown_tensor_is_an_error_naming_it():
    tensors = fake_nemo_tensors()
    tensors["encoder.layers.0.adapter.linear.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(NemoConversionError, match="adapter.linear.weight"):
        nemo_params(archive(tensors), model_config(), PIECES)


def test_shape_mismatch_is_an_error_naming_the_tensor():
    tensors = fake_nemo_tensors()
    name = "encoder.layers.0.feed_forward1.linear1.weight"
    tensors[name] = np.zeros((80, 32), np.float32)
    cfg = model_config()
    params, report = nemo_params(archive(tensors), cfg, PIECES)
    with pytest.raises(NemoConversionError, match=name.replace(".", r"\.")):
        check_params_against_model(params, cfg, report)


def test_missing_tensor_is_an_error_naming_it():
    tensors = fake_nemo_tensors()
    del tensors["encoder.layers.0.self_attn.pos_bias_v"]
    with pytest.raises(NemoConversionError, match="pos_bias_v"):
        nemo_params(archive(tensors), model_config(), PIECES)


def test_unsupported_encoder_setting_is_named():
    bad = {**NEMO_CONFIG, "encoder": {**NEMO_CONFIG["encoder"], "subsampling": "striding"}}
    with pytest.raises(NemoConversionError, match="encoder.subsampling"):
        encoder_config_from_nemo(bad)


def test_finetune_config_turns_the_converted_ar_decoder_into_a_bidirectional_mdm_decoder():
    from mdm_asr_jax.nn.encoders import finetune_config

    base = model_config(heads=("ar",))
    tuned = finetune_config(base, mdm=True, ar=False, dropout=0.1, max_length=16)
    assert tuned.ar_decoder is None and tuned.mdm_decoder.bidirectional
    assert tuned.mdm_decoder.max_length == 16 and tuned.encoder.dropout == 0.1
    assert dataclasses.replace(
        tuned.mdm_decoder, bidirectional=False, dropout=0.0, max_length=32
    ) == (base.ar_decoder)
