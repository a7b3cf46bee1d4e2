"""The train step: same loss sharded over 8 fake CPU devices as on 1; optimiser groups."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from tiny import tiny_model_config

from mdm_asr_jax.nn.model import ASRModel, init_params
from mdm_asr_jax.train import sharding
from mdm_asr_jax.train.config import objective_config
from mdm_asr_jax.train.defaults import base_config
from mdm_asr_jax.train.objective import ObjectiveConfig
from mdm_asr_jax.train.optim import OptimError, make_optimizer
from mdm_asr_jax.train.trainer import before_mdm_start, create_train_state, make_train_step


def _batch(batch_size=8, frames=32, vocab=20):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 6, batch_size)
    tokens = np.where(
        np.arange(6)[None] < lengths[:, None], rng.integers(4, vocab - 1, (batch_size, 6)), 0
    )
    return {
        "features": rng.normal(size=(batch_size, frames, 80)).astype(np.float32),
        "feature_mask": np.arange(frames)[None] < rng.integers(16, frames + 1, batch_size)[:, None],
        "tokens": tokens.astype(np.int32),
        "token_lengths": lengths.astype(np.int32),
        "example_mask": np.ones(batch_size, bool),
        "seconds": np.ones(batch_size, np.float32),
        "index": np.arange(batch_size, dtype=np.int32),
    }


def _objective(config):
    c = base_config()
    c.objective.canvas_length = 8
    c.objective.spec_augment = False
    c.objective.ar_weight = 0.5
    c.objective.ctc_weight = 0.3
    return objective_config(c).validate(config)


def _run_steps(mesh_shape, devices, steps=2):
    config = tiny_model_config(max_length=12)
    model = ASRModel(config)
    c = base_config()
    c.optim.warmup_steps = 1
    mesh = sharding.make_mesh(mesh_shape, devices)
    rules = sharding.DEFAULT_RULES
    abstract = nn.meta.unbox(
        jax.eval_shape(lambda k: init_params(model, k)["params"], jax.random.key(0))
    )
    tx, _ = make_optimizer(c.optim, 10, abstract)
    state, shardings = create_train_state(model, tx, jax.random.key(0), mesh, rules, ema=True)
    step = jax.jit(
        make_train_step(model, tx, _objective(config), 0.9),
        in_shardings=(shardings, sharding.batch_sharding(mesh), None),
        out_shardings=(shardings, None),
    )
    losses = []
    with mesh, nn.logical_axis_rules(rules):
        for i in range(steps):
            batch = sharding.global_batch(_batch(), mesh)
            state, metrics = step(state, batch, jax.random.key(i))
            losses.append(float(metrics["loss"]))
    return losses, state


@pytest.mark.slow
def test_sharded_train_step_matches_single_device():
    devices = jax.devices()
    assert len(devices) == 8, "conftest sets 8 fake CPU devices"
    single, _ = _run_steps((1, 1, 1), devices[:1])
    sharded, state = _run_steps((2, 2, 2), devices)
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-5)
    # The sharding really is split: an embedding table is sharded over vocab (tensor) and embed (fsdp).
    table = state.params["mdm_decoder"]["embed"]["embedding"]
    assert len(table.sharding.device_set) == 8
    assert table.addressable_shards[0].data.shape == (10, 16)


@pytest.mark.slow
def test_freeze_regex_leaves_the_encoder_unchanged():
    config = tiny_model_config(max_length=12)
    model = ASRModel(config)
    c = base_config()
    c.optim.freeze = ("encoder/.*",)
    c.optim.warmup_steps = 0
    params = init_params(model, jax.random.key(0))["params"]
    params = nn.meta.unbox(params)
    tx, _ = make_optimizer(c.optim, 10, params)
    mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
    state, shardings = create_train_state(
        model, tx, jax.random.key(0), mesh, sharding.DEFAULT_RULES, ema=False
    )
    before = traverse_util.flatten_dict(jax.device_get(state.params), sep="/")
    step = jax.jit(make_train_step(model, tx, _objective(config), 0.0))
    state, _ = step(state, jax.tree.map(jnp.asarray, _batch()), jax.random.key(0))
    after = traverse_util.flatten_dict(jax.device_get(state.params), sep="/")
    for name in before:
        same = np.array_equal(before[name], after[name])
        assert same == name.startswith("encoder/"), name


def test_unknown_freeze_pattern_is_an_error():
    c = base_config()
    c.optim.freeze = ("no_such_module/.*",)
    params = {"encoder": {"w": jnp.zeros((2, 2))}}
    with pytest.raises(OptimError, match="matches no parameter"):
        make_optimizer(c.optim, 10, params)


def test_objective_rejects_heads_the_model_lacks():
    config = tiny_model_config(ar=False, ctc=False)
    with pytest.raises(ValueError, match="no AR decoder"):
        ObjectiveConfig(ar_weight=1.0, canvas_length=8).validate(config)


@pytest.mark.slow
def test_steps_before_mdm_start_leave_out_the_mdm_loss_and_update_alike():
    """Before objective.mdm_start_step the trainer runs a step without the MDM loss (its weight
    is 0 there): same parameters after the step as the full objective, no MDM metrics."""
    config = tiny_model_config(max_length=12)
    model = ASRModel(config)
    c = base_config()
    c.optim.warmup_steps = 0
    params = nn.meta.unbox(init_params(model, jax.random.key(0))["params"])
    tx, _ = make_optimizer(c.optim, 10, params)
    mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
    state, _ = create_train_state(
        model, tx, jax.random.key(0), mesh, sharding.DEFAULT_RULES, ema=False
    )
    full = dataclasses.replace(_objective(config), mdm_start_step=5)
    early = before_mdm_start(full)
    assert early is not None and early.mdm_weight == 0.0
    batch = jax.tree.map(jnp.asarray, _batch(batch_size=2))
    before = traverse_util.flatten_dict(jax.device_get(state.params), sep="/")
    after = {}
    for name, objective in (("full", full), ("early", early)):
        step = jax.jit(make_train_step(model, tx, objective, 0.0))
        new_state, metrics = step(state, batch, jax.random.key(1))
        after[name] = traverse_util.flatten_dict(jax.device_get(new_state.params), sep="/")
        assert ("mdm_loss" in metrics) == (name == "full")
        if name == "full":
            assert float(metrics["mdm_weight"]) == 0.0
    moved = [k for k in before if not np.array_equal(after["full"][k], before[k])]
    assert moved, "the step changed no parameter"
    for name in after["full"]:
        np.testing.assert_allclose(
            after["early"][name], after["full"][name], atol=1e-6, err_msg=name
        )
    # No early phase without a later MDM start, or when the MDM loss is all there is.
    assert before_mdm_start(_objective(config)) is None
    mdm_only = dataclasses.replace(full, ar_weight=0.0, ctc_weight=0.0)
    assert before_mdm_start(mdm_only) is None
