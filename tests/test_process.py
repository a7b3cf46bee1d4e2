"""The forward process and objectives: masking rate, weights, ISCT, training signal."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tiny import tiny_model_config

from mdm_asr_jax.diffusion import process
from mdm_asr_jax.diffusion.process import ProcessConfig, ProcessError
from mdm_asr_jax.nn.model import ASRModel, init_params

MASK = 19


def test_corruption_masks_at_rate_one_minus_alpha():
    tokens = jnp.full((4, 4000), 5, jnp.int32)
    t = jnp.array([0.1, 0.4, 0.7, 0.95])
    for schedule in process.SCHEDULES:
        out = process.corrupt(jax.random.key(0), tokens, t, MASK, schedule=schedule)
        rate = np.asarray(out.masked.mean(1))
        expected = 1.0 - np.asarray(process.alpha(t, schedule))
        # 4000 Bernoulli draws: standard error <= 0.008; allow 4 sigma.
        np.testing.assert_allclose(rate, expected, atol=0.032)
        assert bool(jnp.all((out.canvas == MASK) == out.masked))


def test_unmasked_positions_carry_no_loss():
    targets = jnp.array([[4, 5, 6, 3]])
    corruption = process.corrupt(jax.random.key(1), targets, jnp.array([0.5]), MASK)
    logits = jax.random.normal(jax.random.key(2), (1, 4, 20))
    base = process.masked_diffusion_terms(logits, targets, jnp.ones((1, 4)), corruption)
    # Changing logits only at unmasked positions leaves the loss unchanged.
    noise = jnp.where(corruption.masked[..., None], 0.0, 100.0)
    moved = process.masked_diffusion_terms(
        logits + noise * jnp.arange(20), targets, jnp.ones((1, 4)), corruption
    )
    assert float(base["loss_sum"]) == pytest.approx(float(moved["loss_sum"]))
    assert float(base["masked_tokens"]) == float(corruption.masked.sum())


def test_linear_schedule_weights_equal_one_over_t():
    t = jnp.array([0.01, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(
        np.asarray(process.loss_weight(t, "linear")), 1.0 / np.asarray(t), rtol=1e-6
    )
    # cosine: -alpha'/(1 - alpha) by finite differences
    h = 1e-4
    numeric = -(process.alpha(t[:3] + h, "cosine") - process.alpha(t[:3] - h, "cosine")) / (2 * h)
    numeric = numeric / (1 - process.alpha(t[:3], "cosine"))
    np.testing.assert_allclose(
        np.asarray(process.loss_weight(t[:3], "cosine")), np.asarray(numeric), rtol=1e-2
    )


def test_low_discrepancy_times_cover_the_unit_interval():
    t = np.sort(np.asarray(process.sample_times(jax.random.key(3), 8, eps=1e-3)))
    assert t.min() >= 1e-3 and t.max() <= 1.0
    # One sample in each eighth of [eps, 1].
    bins = np.floor((t - 1e-3) / (1 - 1e-3) * 8).astype(int)
    assert sorted(bins.tolist()) == list(range(8))


def test_canvas_targets_pad_with_eos_and_reject_overlong():
    out = process.canvas_targets(
        jnp.array([[4, 5, 0], [6, 0, 0]]), jnp.array([2, 1]), 5, eos_id=3, count_padding_eos=False
    )
    np.testing.assert_array_equal(np.asarray(out.targets), [[4, 5, 3, 3, 3], [6, 3, 3, 3, 3]])
    np.testing.assert_array_equal(np.asarray(out.weight), [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    with pytest.raises(ProcessError, match="canvas holds 3"):
        process.canvas_targets(jnp.array([[4, 5, 6]]), jnp.array([3]), 3, eos_id=3)


def _linear_logits_fn(vocab=20):
    weights = jax.random.normal(jax.random.key(4), (vocab, vocab))

    def logits_fn(canvas, key):
        del key
        onehot = jax.nn.one_hot(canvas, vocab)
        return onehot @ weights + onehot.mean(1, keepdims=True) @ weights

    return logits_fn


def test_isct_with_one_step_equals_plain_mdm_loss():
    targets = jnp.array([[4, 5, 6, 3, 3, 3], [7, 8, 3, 3, 3, 3], [9, 9, 9, 9, 3, 3]])
    weight = jnp.ones(targets.shape)
    key = jax.random.key(5)
    plain = process.mdm_loss(_linear_logits_fn(), key, targets, weight, MASK)
    isct = process.isct_loss(
        _linear_logits_fn(), key, targets, weight, MASK, ProcessConfig(isct_steps=1)
    )
    for name in ("loss_sum", "ce_sum", "masked_tokens", "correct", "target_tokens"):
        np.testing.assert_allclose(float(isct[name]), float(plain[name]), rtol=1e-6)


@pytest.mark.slow
def test_isct_gradients_are_finite_for_one_to_three_steps():
    config = tiny_model_config(ar=False, ctc=False)
    model = ASRModel(config)
    params = init_params(model, jax.random.key(0))["params"]
    features = jax.random.normal(jax.random.key(1), (2, 32, 80))
    feature_mask = jnp.ones((2, 32), bool)
    targets = jnp.array([[4, 5, 6, 3, 3, 3, 3, 3], [7, 8, 3, 3, 3, 3, 3, 3]])
    for steps in (1, 2, 3):

        def loss(p, steps=steps):
            encoded, enc_mask = model.apply(
                {"params": p}, features, feature_mask, method=model.encode
            )
            cross = model.apply({"params": p}, encoded, method=model.mdm_cross_kv)

            def logits_fn(canvas, key):
                return model.apply(
                    {"params": p}, canvas, None, enc_mask, cross, method=model.mdm_logits
                )

            terms = process.isct_loss(
                logits_fn,
                jax.random.key(2),
                targets,
                jnp.ones(targets.shape),
                config.mask_id,
                ProcessConfig(isct_steps=steps, prediction="sample"),
            )
            return terms["loss_sum"] / terms["target_tokens"]

        value, grads = jax.jit(jax.value_and_grad(loss))(params)
        assert np.isfinite(float(value))
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_process_config_rejects_bad_values():
    with pytest.raises(ProcessError, match="isct_steps"):
        ProcessConfig(isct_steps=0).validate()
    with pytest.raises(ProcessError, match="step_weights"):
        ProcessConfig(isct_steps=2, step_weights=(1.0,)).validate()
    with pytest.raises(ProcessError, match="schedule"):
        process.corrupt(
            jax.random.key(0), jnp.zeros((1, 3), jnp.int32), jnp.ones(1), MASK, schedule="exp"
        )


def test_tiny_model_drives_mdm_loss_down_by_90_percent():
    """A 2-layer model fits the masked-diffusion loss on a fixed 4-utterance batch."""
    config = tiny_model_config(ar=False, ctc=False, max_length=12)
    model = ASRModel(config)
    params = init_params(model, jax.random.key(0))["params"]
    features = jax.random.normal(jax.random.key(1), (4, 32, 80))
    feature_mask = jnp.ones((4, 32), bool)
    tokens = jnp.array([[4, 5, 6, 7], [8, 9, 0, 0], [10, 11, 12, 0], [13, 0, 0, 0]])
    targets = process.canvas_targets(tokens, jnp.array([4, 2, 3, 1]), 8, config.eos_id)
    optimizer = optax.adam(3e-3)
    opt_state = optimizer.init(params)

    def loss_fn(p, key):
        encoded, enc_mask = model.apply({"params": p}, features, feature_mask, method=model.encode)

        def logits_fn(canvas, k):
            return model.apply({"params": p}, canvas, encoded, enc_mask, method=model.mdm_logits)

        terms = process.mdm_loss(logits_fn, key, targets.targets, targets.weight, config.mask_id)
        return terms["loss_sum"] / terms["target_tokens"]

    @jax.jit
    def step(p, s, key):
        value, grads = jax.value_and_grad(loss_fn)(p, key)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    # Evaluate at fixed keys before and after (the per-step loss is noisy by construction).
    eval_keys = jax.random.split(jax.random.key(9), 16)
    evaluate = jax.jit(lambda p: jnp.mean(jax.vmap(lambda k: loss_fn(p, k))(eval_keys)))
    before = float(evaluate(params))
    for i in range(300):
        params, opt_state, _ = step(params, opt_state, jax.random.key(100 + i))
    after = float(evaluate(params))
    assert after <= 0.1 * before, (before, after)
