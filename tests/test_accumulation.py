"""Gradient accumulation counts optimiser updates; train metrics are window sums divided once."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_asr_jax.train.defaults import base_config
from mdm_asr_jax.train.optim import (
    OptimError,
    applied_learning_rate,
    apply_gradients,
    make_optimizer,
)
from mdm_asr_jax.train.window import MetricWindow

TOL = dict(rtol=1e-5, atol=1e-6)


def _optim_config(k: int, warmup: int, **overrides):
    c = base_config().optim
    c.learning_rate = 0.05
    c.warmup_steps = warmup
    c.decay = "cosine"
    c.grad_accum_steps = k
    for key, value in overrides.items():
        setattr(c, key, value)
    return c


def _data(examples: int):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(examples, 3)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.normal(size=examples)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def _loss(params, x, y):  # a mean over examples, like the trainer's per-token losses
    hidden = jnp.tanh(x @ params["w1"])
    return jnp.mean((hidden @ params["w2"] + params["b"] - y) ** 2)


_grad = jax.jit(jax.grad(_loss))


def _step(tx, k: int, ema_decay: float):
    """apply_gradients of one optimiser, jitted: (grads, params, opt_state, ema, step)."""
    return jax.jit(
        lambda g, p, o, e, s: apply_gradients(
            tx, g, p, o, e, step=s, ema_decay=ema_decay, grad_accum_steps=k
        )
    )


def _init_params():
    rng = np.random.default_rng(1)
    return {
        "w1": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
        "b": jnp.zeros((), jnp.float32),
    }


def _train(k: int, updates: int, batch: int, warmup_updates: int, ema_decay: float = 0.0):
    """`updates` optimiser updates, each from k micro-batches of `batch` examples."""
    params = _init_params()
    num_steps = updates * k  # train steps = micro-batches
    tx, schedule = make_optimizer(_optim_config(k, warmup_updates * k), num_steps, params)
    opt_state = tx.init(params)
    step_fn = _step(tx, k, ema_decay)
    ema = params if ema_decay else None
    x, y = _data(updates * k * batch)
    logged_lrs = []
    for step in range(num_steps):
        rows = slice(step * batch, (step + 1) * batch)
        grads = _grad(params, x[rows], y[rows])
        params, opt_state, ema, _ = step_fn(grads, params, opt_state, ema, jnp.int32(step))
        logged_lrs.append(applied_learning_rate(schedule, step + 1, k))
    return params, ema, logged_lrs


@pytest.mark.parametrize("k", [2, 4])
def test_k_micro_batches_of_b_give_the_params_of_one_batch_of_k_times_b(k):
    # warm-up over 3 updates then cosine decay: a schedule stretched over micro-steps would
    # apply smaller learning rates and end elsewhere
    accumulated, _, _ = _train(k, updates=6, batch=4, warmup_updates=3)
    whole, _, _ = _train(1, updates=6, batch=4 * k, warmup_updates=3)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), accumulated, whole)


def test_logged_learning_rate_is_the_one_each_update_applied():
    # b1 = b2 = 0, no decay, no clipping: every AdamW update moves each weight by exactly lr
    k = 2
    config = _optim_config(k, 4, b1=0.0, b2=0.0, eps=1e-12, weight_decay=0.0, clip_norm=0.0)
    params = {"w": jnp.asarray([1.0, -1.0])}
    tx, schedule = make_optimizer(config, 12, params)
    opt_state = tx.init(params)
    applied, logged = [], []
    for step in range(12):
        grads = {"w": jnp.asarray([0.5, -0.25])}
        new, opt_state, _, _ = apply_gradients(
            tx,
            grads,
            params,
            opt_state,
            None,
            step=jnp.int32(step),
            ema_decay=0.0,
            grad_accum_steps=k,
        )
        moved = float(jnp.abs(new["w"] - params["w"])[0])
        params = new
        if (step + 1) % k == 0:  # an update happened at this step
            applied.append(moved)
            logged.append(applied_learning_rate(schedule, step + 1, k))
        else:
            assert moved == 0.0  # micro-steps only accumulate
    np.testing.assert_allclose(logged, applied, rtol=1e-5)
    # 6 updates, warm-up over 4 train steps = 2 updates: 0, half the peak, then the decay
    assert applied[0] == pytest.approx(0.0, abs=1e-9)
    assert applied[1] == pytest.approx(0.025, rel=1e-5)
    assert applied[2] == pytest.approx(0.05, rel=1e-5)


def test_ema_moves_once_per_update():
    k, decay = 3, 0.5
    params, ema, _ = _train(k, updates=2, batch=2, warmup_updates=0, ema_decay=decay)
    start, after_each_update = _param_sequence(k, updates=2, batch=2)
    expected = start
    for p in after_each_update:  # two blends, not one per micro-step (six)
        expected = jax.tree.map(lambda e, q: decay * e + (1 - decay) * q, expected, p)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), ema, expected)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, **TOL), params, after_each_update[-1]
    )


def _param_sequence(k: int, updates: int, batch: int):
    """(initial parameters, parameters after each update) of `_train(k, updates, batch, 0)`."""
    params = start = _init_params()
    tx, _ = make_optimizer(_optim_config(k, 0), updates * k, params)
    opt_state = tx.init(params)
    x, y = _data(updates * k * batch)
    step_fn = _step(tx, k, 0.0)
    out = []
    for step in range(updates * k):
        rows = slice(step * batch, (step + 1) * batch)
        grads = _grad(params, x[rows], y[rows])
        params, opt_state, _, _ = step_fn(grads, params, opt_state, None, jnp.int32(step))
        if (step + 1) % k == 0:
            out.append(params)
    return start, out


def test_accumulation_below_one_is_refused():
    with pytest.raises(OptimError, match="grad_accum_steps=0"):
        make_optimizer(_optim_config(0, 0), 10, {"w": jnp.zeros(2)})


def test_train_metrics_are_window_sums_divided_once():
    window = MetricWindow()
    # two steps: 2 real examples at loss 1.0, then 6 at loss 3.0 -> (2 + 18) / 8 = 2.5
    window.add({"loss": jnp.float32(1.0), "examples": jnp.float32(2), "finite": jnp.float32(1)})
    window.add({"loss": jnp.float32(3.0), "examples": jnp.float32(6), "finite": jnp.float32(1)})
    out = window.result()
    assert out["loss"] == pytest.approx(2.5)
    assert out["examples"] == 8 and out["window_steps"] == 2 and out["finite"] == 1.0
    # a new window starts empty; a non-finite step anywhere in it is kept
    window.add({"loss": jnp.float32(jnp.nan), "examples": jnp.float32(1), "finite": jnp.float32(0)})
    window.add({"loss": jnp.float32(1.0), "examples": jnp.float32(1), "finite": jnp.float32(1)})
    out = window.result()
    assert out["finite"] == 0.0 and out["window_steps"] == 2
