"""Network properties: attention direction, cached decoding, cross K/V reuse, config checks."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_model_config

from mdm_asr_jax.nn.config import ConfigError, ModelConfig
from mdm_asr_jax.nn.model import ASRModel, init_params
from mdm_asr_jax.train.config import finetune_model_config
from mdm_asr_jax.train.defaults import base_config


@pytest.fixture(scope="module")
def model_and_params():
    config = tiny_model_config()
    model = ASRModel(config)
    variables = init_params(model, jax.random.key(0))
    features = jax.random.normal(jax.random.key(1), (2, 40, 80))
    mask = jnp.arange(40)[None] < jnp.array([[40], [28]])
    encoded, enc_mask = model.apply(variables, features, mask, method=model.encode)
    return model, variables, encoded, enc_mask


def test_encoder_subsamples_time_and_mask_by_four(model_and_params):
    _, _, encoded, enc_mask = model_and_params
    assert encoded.shape == (2, 10, 32)
    np.testing.assert_array_equal(np.asarray(enc_mask.sum(1)), [10, 7])


def test_bidirectional_logits_depend_on_later_tokens(model_and_params):
    model, variables, encoded, enc_mask = model_and_params
    canvas = jnp.array([[5, 6, 19, 19, 3, 3]] * 2)
    changed = canvas.at[:, 4].set(7)
    a = model.apply(variables, canvas, encoded, enc_mask, method=model.mdm_logits)
    b = model.apply(variables, changed, encoded, enc_mask, method=model.mdm_logits)
    assert float(jnp.abs(a[:, 0] - b[:, 0]).max()) > 1e-4


def test_causal_logits_do_not_depend_on_later_tokens(model_and_params):
    model, variables, encoded, enc_mask = model_and_params
    tokens = jnp.array([[2, 5, 6, 7, 8, 9]] * 2)
    changed = tokens.at[:, 4].set(11)
    a = model.apply(variables, tokens, encoded, enc_mask, method=model.ar_logits)
    b = model.apply(variables, changed, encoded, enc_mask, method=model.ar_logits)
    np.testing.assert_array_equal(np.asarray(a[:, :4]), np.asarray(b[:, :4]))
    assert float(jnp.abs(a[:, 4] - b[:, 4]).max()) > 1e-4


def test_kv_cached_ar_decoding_equals_full_forward(model_and_params):
    model, variables, encoded, enc_mask = model_and_params
    tokens = jnp.array([[2, 5, 6, 7, 8], [2, 9, 10, 11, 12]])
    full = model.apply(variables, tokens, encoded, enc_mask, method=model.ar_logits)
    cache = model.apply(variables, 2, 16, method=model.ar_init_cache)
    cross = model.apply(variables, encoded, method=model.ar_cross_kv)
    # Feed the first two tokens at once (a prompt), then one at a time.
    first, cache = model.apply(
        variables, tokens[:, :2], jnp.int32(0), cache, cross, enc_mask, method=model.ar_step
    )
    steps = [first]
    for i in range(2, 5):
        logits, cache = model.apply(
            variables,
            tokens[:, i : i + 1],
            jnp.int32(i),
            cache,
            cross,
            enc_mask,
            method=model.ar_step,
        )
        steps.append(logits)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, 1)), np.asarray(full), atol=1e-5)


def test_precomputed_cross_kv_gives_the_same_logits(model_and_params):
    model, variables, encoded, enc_mask = model_and_params
    canvas = jnp.array([[5, 19, 19, 3], [19, 8, 3, 3]])
    cross = model.apply(variables, encoded, method=model.mdm_cross_kv)
    a = model.apply(variables, canvas, encoded, enc_mask, method=model.mdm_logits)
    b = model.apply(variables, canvas, None, enc_mask, cross, method=model.mdm_logits)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_padding_frames_do_not_change_a_rows_encoding(model_and_params):
    model, variables, _, _ = model_and_params
    features = jax.random.normal(jax.random.key(2), (1, 24, 80))
    mask = jnp.ones((1, 24), bool)
    padded = jnp.concatenate([features, 5.0 * jnp.ones((1, 16, 80))], axis=1)
    padded_mask = jnp.arange(40)[None] < 24
    a, _ = model.apply(variables, features, mask, method=model.encode)
    b, b_mask = model.apply(variables, padded, padded_mask, method=model.encode)
    np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[0, : a.shape[1]]), atol=1e-4)
    assert int(b_mask.sum()) == a.shape[1]


def test_ctc_head_scores_every_encoder_frame(model_and_params):
    model, variables, encoded, _ = model_and_params
    assert model.apply(variables, encoded, method=model.ctc_logits).shape == (2, 10, 20)


def test_config_round_trips_through_dict():
    config = tiny_model_config()
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_config_errors_name_the_field():
    config = tiny_model_config()
    with pytest.raises(ConfigError, match="unknown keys"):
        ModelConfig.from_dict({**config.to_dict(), "bogus": 1})
    bad = ModelConfig(vocab_size=20, mdm_decoder=None, ar_decoder=None, ctc=False)
    with pytest.raises(ConfigError, match="no output head"):
        bad.validate()


def test_mdm_shift_reads_each_slot_from_the_position_before_it(model_and_params):
    model, variables, encoded, enc_mask = model_and_params
    shifted = ASRModel(dataclasses.replace(model.config, mdm_shift=True).validate())
    canvas = jnp.array([[5, 6, 19, 19, 3, 3], [7, 19, 19, 3, 3, 3]])
    plain = model.apply(variables, canvas, encoded, enc_mask, method=model.mdm_logits)
    moved = shifted.apply(variables, canvas, encoded, enc_mask, method=shifted.mdm_logits)
    # The same decoder run over prompt + canvas: slot i now shows what slot i - 1 showed ...
    np.testing.assert_array_equal(np.asarray(moved[:, 1:]), np.asarray(plain[:, :-1]))
    # ... and slot 0 what the last prompt token's output says.
    tokens = jnp.concatenate([jnp.full((2, 1), 2), canvas], axis=1)
    full = model.apply(variables, tokens, encoded, enc_mask, method=lambda m, *a: m.mdm_decoder(*a))
    np.testing.assert_array_equal(np.asarray(moved[:, 0]), np.asarray(full[:, 0]))
    # The two-part path (hidden states, then the projection) keeps the same layout.
    hidden = shifted.apply(variables, canvas, encoded, enc_mask, method=shifted.mdm_hidden)
    projected = shifted.apply(variables, hidden, method=shifted.mdm_project)
    np.testing.assert_allclose(np.asarray(projected), np.asarray(moved), atol=1e-5)


def test_mdm_shift_needs_a_prompt():
    config = tiny_model_config(prompt_ids=())
    with pytest.raises(ConfigError, match="mdm_shift.*prompt"):
        dataclasses.replace(config, mdm_shift=True).validate()


def test_finetune_config_sets_the_mdm_shift_and_keeps_a_bases():
    c = base_config()
    ar_only = tiny_model_config(ar=True)
    ar_only = dataclasses.replace(ar_only, mdm_decoder=None).validate()
    assert not finetune_model_config(c, ar_only).mdm_shift
    c.model.mdm_shift = True
    assert finetune_model_config(c, ar_only).mdm_shift
    # An MDM checkpoint trained with the shift keeps its head layout when fine-tuned further.
    c.model.mdm_shift = False
    shifted = dataclasses.replace(tiny_model_config(), mdm_shift=True).validate()
    assert finetune_model_config(c, shifted).mdm_shift
