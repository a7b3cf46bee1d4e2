"""Scanned and remat'd layer stacks compute what the plain loop computes (nn.stack)."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_model_config

from mdm_asr_jax.nn.config import ConfigError, ModelConfig, decoder_config
from mdm_asr_jax.nn.fastconformer import canary_encoder_config
from mdm_asr_jax.nn.model import ASRModel, init_params
from mdm_asr_jax.nn.stack import (
    LayoutError,
    has_stacked_layers,
    match_layout,
    stack_layers,
    unstack_layers,
)
from mdm_asr_jax.nn.whisper import WhisperSize, whisper_model_config

TOL = dict(rtol=1e-5, atol=1e-5)


def _whisper_config() -> ModelConfig:
    size = WhisperSize(32, 2, 2, 2, num_mels=16, n_vocab=19, encoder_positions=32)
    return whisper_model_config(size, (2,), 3, ar_decoder=True, mdm_decoder=True, min_frames=0)


def _fastconformer_config() -> ModelConfig:
    encoder = canary_encoder_config("test", num_mels=16, width=32, mlp_dim=64, output_width=0)
    return ModelConfig(
        vocab_size=20,
        encoder=encoder,
        mdm_decoder=decoder_config("test", max_length=16, dropout=0.0),
        ar_decoder=decoder_config("test", max_length=16, bidirectional=False, dropout=0.0),
        prompt_ids=(2,),
        eos_id=3,
    ).validate()


CONFIGS = {
    "conformer": lambda: dataclasses.replace(
        tiny_model_config(), encoder=dataclasses.replace(tiny_model_config().encoder, num_mels=16)
    ),
    "whisper": _whisper_config,
    "fastconformer": _fastconformer_config,
}


def _inputs(num_mels: int):
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.normal(size=(2, 32, num_mels)), jnp.float32)
    mask = jnp.asarray(np.arange(32)[None] < np.array([[32], [20]]))
    canvas = jnp.asarray(rng.integers(0, 19, size=(2, 6)), jnp.int32)
    return features, mask, canvas


def _loop_and_scan(kind: str):
    loop_config = CONFIGS[kind]()
    scan_config = dataclasses.replace(loop_config, scan_layers=True)
    loop_model, scan_model = ASRModel(loop_config), ASRModel(scan_config)
    loop_params = nn.meta.unbox(init_params(loop_model, jax.random.key(0), 32, 6))["params"]
    return loop_model, scan_model, loop_params, stack_layers(loop_params)


@pytest.mark.slow  # compiles a training step several times (> 30 s)
@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_scan_layers_gives_the_loop_outputs_with_the_same_parameters(kind):
    loop_model, scan_model, loop_params, scan_params = _loop_and_scan(kind)
    # the stacked tree is exactly the tree the scanned model initialises (names and shapes)
    scan_init = nn.meta.unbox(init_params(scan_model, jax.random.key(1), 32, 6))["params"]
    assert jax.tree.structure(scan_init) == jax.tree.structure(scan_params)
    assert jax.tree.map(np.shape, scan_init) == jax.tree.map(np.shape, scan_params)
    features, mask, canvas = _inputs(loop_model.config.encoder.num_mels)
    loop_out = loop_model.apply({"params": loop_params}, features, mask, canvas)
    scan_out = scan_model.apply({"params": scan_params}, features, mask, canvas)
    for name in ("encoded", "mdm", "ar"):
        np.testing.assert_allclose(scan_out[name], loop_out[name], **TOL, err_msg=name)


@pytest.mark.slow  # compiles a training step several times (> 30 s)
@pytest.mark.parametrize("remat", ["full", "dots_saveable"])
def test_remat_keeps_loss_and_gradients(remat):
    config = CONFIGS["conformer"]()
    features, mask, canvas = _inputs(config.encoder.num_mels)
    params = nn.meta.unbox(init_params(ASRModel(config), jax.random.key(0), 32, 6))["params"]

    def grads(cfg, p):
        model = ASRModel(cfg)

        def loss(q):
            out = model.apply({"params": q}, features, mask, canvas)
            return jnp.mean(out["mdm"] ** 2) + jnp.mean(out["ar"] ** 2)

        return jax.value_and_grad(loss)(p)

    base_loss, base_grads = grads(config, params)
    for scan in (False, True):
        cfg = dataclasses.replace(config, remat=remat, scan_layers=scan)
        value, got = grads(cfg, stack_layers(params) if scan else params)
        np.testing.assert_allclose(value, base_loss, **TOL)
        got = unstack_layers(got) if scan else got
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), got, base_grads)


def test_ar_decoding_with_a_kv_cache_matches_under_scan():
    loop_model, scan_model, loop_params, scan_params = _loop_and_scan("conformer")
    features, mask, canvas = _inputs(loop_model.config.encoder.num_mels)

    def decode(model, params):
        variables = {"params": params}
        encoded, enc_mask = model.apply(variables, features, mask, method=model.encode)
        cross_kv = model.apply(variables, encoded, method=model.ar_cross_kv)
        cache = model.apply(variables, 2, 8, method=model.ar_init_cache)
        logits, cache = model.apply(
            variables, canvas[:, :3], 0, cache, cross_kv, enc_mask, method=model.ar_step
        )
        outs = [logits]
        for position in range(3, 6):
            logits, cache = model.apply(
                variables,
                canvas[:, position : position + 1],
                position,
                cache,
                cross_kv,
                enc_mask,
                method=model.ar_step,
            )
            outs.append(logits)
        full = model.apply(variables, canvas, encoded, enc_mask, method=model.ar_logits)
        mdm_kv = model.apply(variables, encoded, method=model.mdm_cross_kv)
        mdm = model.apply(variables, canvas, None, enc_mask, mdm_kv, method=model.mdm_logits)
        return jnp.concatenate(outs, axis=1), full, cache, mdm

    loop_steps, loop_full, loop_cache, loop_mdm = decode(loop_model, loop_params)
    scan_steps, scan_full, scan_cache, scan_mdm = decode(scan_model, scan_params)
    np.testing.assert_allclose(loop_steps, loop_full, **TOL)  # the cache is right at all
    np.testing.assert_allclose(scan_steps, loop_steps, **TOL)
    np.testing.assert_allclose(scan_full, loop_full, **TOL)
    np.testing.assert_allclose(scan_mdm, loop_mdm, **TOL)
    # scanned cache: batch leading, then layers (beam search reorders axis 0)
    assert scan_cache["k"].shape[:2] == (2, 2)
    np.testing.assert_allclose(scan_cache["k"][:, 1], loop_cache[1]["k"], **TOL)


def test_stack_and_unstack_are_inverse_and_keep_other_names():
    _, _, loop_params, scan_params = _loop_and_scan("conformer")
    assert not has_stacked_layers(loop_params) and has_stacked_layers(scan_params)
    assert "block_0" in loop_params["encoder"] and "blocks" in scan_params["encoder"]
    assert "layers" in scan_params["mdm_decoder"] and "embed" in scan_params["mdm_decoder"]
    assert (
        scan_params["encoder"]["subsampling"].keys() == loop_params["encoder"]["subsampling"].keys()
    )
    back = unstack_layers(scan_params)
    assert jax.tree.structure(back) == jax.tree.structure(loop_params)
    jax.tree.map(np.testing.assert_array_equal, back, loop_params)
    assert stack_layers(scan_params).keys() == scan_params.keys()  # already stacked: unchanged
    same = match_layout(loop_params, like=scan_params)
    jax.tree.map(np.testing.assert_array_equal, same, scan_params)


def test_stacking_layers_with_a_gap_names_the_path():
    tree = {"encoder": {"block_0": {"w": np.zeros(2)}, "block_2": {"w": np.zeros(2)}}}
    with pytest.raises(LayoutError, match="encoder/block_"):
        stack_layers(tree)


def test_unknown_remat_policy_is_a_config_error():
    with pytest.raises(ConfigError, match="remat='everything'"):
        dataclasses.replace(tiny_model_config(), remat="everything").validate()


def test_scan_config_round_trips_through_the_checkpoint_dict():
    config = dataclasses.replace(tiny_model_config(), scan_layers=True, remat="full")
    assert ModelConfig.from_dict(config.to_dict()) == config
    old = tiny_model_config().to_dict()
    del old["scan_layers"], old["remat"]  # written before these fields existed
    assert ModelConfig.from_dict(old).scan_layers is False
