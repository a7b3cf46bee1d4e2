"""The objective's options each keep the property they promise: per-real-token normalisation,
w(t) variants, forbidden ids, a dropout-free ISCT step 1, EOS-tail and suffix masking, MDM
warm-up, and the AR -> MDM initialisation map."""

from __future__ import annotations

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_model_config

from mdm_asr_jax.diffusion import process
from mdm_asr_jax.diffusion.process import ProcessConfig, ProcessError
from mdm_asr_jax.nn.model import ASRModel, init_params
from mdm_asr_jax.train.init_from import default_init_map
from mdm_asr_jax.train.objective import ObjectiveConfig, compute_loss

MASK, PAD, EOS = 19, 0, 3
TARGETS = jnp.array([[4, 5, 6, 3, 3, 3, 3, 3], [7, 8, 3, 3, 3, 3, 3, 3]])
LENGTHS = jnp.array([3, 2])


def _capture_canvases(vocab: int = 20, favourite: int | None = None):
    """A logits_fn recording every canvas it sees; logits favour `favourite` if given."""
    seen: list[np.ndarray] = []

    def logits_fn(canvas, key):
        del key
        jax.debug.callback(lambda c: seen.append(np.asarray(c)), canvas)
        logits = jnp.zeros(canvas.shape + (vocab,), jnp.float32)
        if favourite is not None:
            logits = logits.at[..., favourite].set(10.0)
        return logits

    return logits_fn, seen


def test_mdm_loss_of_a_uniform_model_equals_its_ar_loss_per_real_token():
    """With every decoder weight zero the logits are uniform: per real token both losses are
    log V, so the MDM loss averaged over many draws of t matches the AR loss within 2 %."""
    config = tiny_model_config()
    model = ASRModel(config)
    params = flax.linen.meta.unbox(init_params(model, jax.random.key(0)))["params"]
    for head in ("mdm_decoder", "ar_decoder"):
        params[head] = jax.tree.map(jnp.zeros_like, params[head])
    rng = np.random.default_rng(0)
    batch_size = 8
    lengths = rng.integers(1, 7, size=batch_size).astype(np.int32)
    tokens = rng.integers(4, 19, size=(batch_size, 8)).astype(np.int32)
    batch = dict(
        features=jnp.asarray(rng.standard_normal((batch_size, 32, 80)), jnp.float32),
        feature_mask=jnp.ones((batch_size, 32), bool),
        tokens=jnp.asarray(tokens),
        token_lengths=jnp.asarray(lengths),
        example_mask=jnp.ones((batch_size,), bool),
    )
    objective = ObjectiveConfig(
        ar_weight=1.0,
        canvas_length=12,
        spec_augment=False,
        exclude_special=False,  # the AR softmax spans every id too
        process=ProcessConfig(isct_steps=1, count_padding_eos=False),
    )
    encoded = model.apply({"params": params}, batch["features"], batch["feature_mask"],
                          method=model.encode)  # fmt: skip
    batch = {**batch, "encoded": encoded[0], "enc_mask": encoded[1]}

    @jax.jit
    def all_losses(keys, batch):
        def losses(key):
            _, metrics = compute_loss(model, params, batch, key, objective, train=False)
            return metrics["mdm_loss"], metrics["ar_loss"]

        return jax.lax.map(losses, keys)

    mdm, ar = all_losses(jax.random.split(jax.random.key(1), 3000), batch)
    np.testing.assert_allclose(float(ar[0]), np.log(config.vocab_size), rtol=1e-5)
    assert float(jnp.mean(mdm)) == pytest.approx(float(ar[0]), rel=0.02)
    # Dividing by every canvas slot instead (the "canvas" option) shrinks it by ~n_real / L.
    canvas = dataclasses.replace(
        objective,
        process=dataclasses.replace(objective.process, normalize="canvas", count_padding_eos=True),
    )
    _, metrics = compute_loss(model, params, batch, jax.random.key(2), canvas, train=False)
    assert float(metrics["mdm_loss"]) < 0.8 * float(ar[0]) * 12 / float(np.mean(lengths + 1))


def test_target_tokens_count_transcript_and_first_eos_only():
    weight = jnp.ones(TARGETS.shape)
    logits_fn, _ = _capture_canvases()
    terms = process.mdm_loss(logits_fn, jax.random.key(0), TARGETS, weight, MASK, lengths=LENGTHS)
    assert float(terms["target_tokens"]) == 4 + 3
    old = process.mdm_loss(
        logits_fn,
        jax.random.key(0),
        TARGETS,
        weight,
        MASK,
        ProcessConfig(normalize="canvas"),
        lengths=LENGTHS,
    )
    assert float(old["target_tokens"]) == 16


def test_capped_time_weight_never_exceeds_the_cap():
    t = jnp.array([1e-3, 0.01, 0.5, 1.0])
    corruption = process.corrupt(jax.random.key(0), jnp.full((4, 8), 5), t, MASK)
    weights = process.time_weights(corruption, jnp.ones((4, 8)), "capped", cap=5.0)
    np.testing.assert_allclose(np.asarray(weights), [5.0, 5.0, 2.0, 1.0], rtol=1e-6)


def test_masked_mean_weight_is_counted_over_masked_tokens_per_utterance():
    tokens = jnp.full((3, 10), 5)
    corruption = process.corrupt(jax.random.key(3), tokens, jnp.array([0.2, 0.5, 0.9]), MASK)
    counted = jnp.ones((3, 10)).at[0, 8:].set(0.0)
    weights = process.time_weights(corruption, counted, "masked_mean")
    masked = np.asarray((corruption.masked * counted).sum(1))
    np.testing.assert_allclose(np.asarray(weights), [8, 10, 10] / np.maximum(masked, 1))
    # So the weighted loss of a constant CE c is c * counted tokens, whatever t drew.
    logits = jnp.zeros((3, 10, 20))
    terms = process.masked_diffusion_terms(
        logits, tokens, counted, corruption, time_weight="masked_mean"
    )
    assert float(terms["loss_sum"]) == pytest.approx(np.log(20) * 28, rel=1e-5)


def test_forbidden_ids_never_enter_the_isct_step_two_canvas():
    """The model's favourite id is pad and [MASK] is next: ISCT's step-1 prediction must pick
    neither, so step 2 sees only real tokens besides its own [MASK] slots."""
    seen: list[np.ndarray] = []

    def logits_fn(canvas, key):
        del key
        jax.debug.callback(lambda c: seen.append(np.asarray(c)), canvas)
        logits = jnp.zeros(canvas.shape + (20,), jnp.float32)
        return logits.at[..., PAD].set(9.0).at[..., MASK].set(8.0).at[..., 7].set(1.0)

    config = ProcessConfig(isct_steps=2, forbidden_ids=(PAD, MASK))
    for prediction in ("argmax", "sample"):
        seen.clear()
        cfg = dataclasses.replace(config, prediction=prediction)
        process.isct_loss(logits_fn, jax.random.key(4), TARGETS, jnp.ones(TARGETS.shape), MASK, cfg)
        step1, step2 = seen
        predicted = step2[(step1 == MASK) & (step2 != MASK)]
        assert predicted.size > 0
        assert not np.isin(predicted, [PAD, MASK]).any(), prediction
    # Without the exclusion the step-2 canvas does hold them (so the check above can fail).
    seen.clear()
    process.isct_loss(
        logits_fn,
        jax.random.key(4),
        TARGETS,
        jnp.ones(TARGETS.shape),
        MASK,
        ProcessConfig(isct_steps=2),
    )
    assert np.isin(seen[1][(seen[0] == MASK) & (seen[1] != MASK)], [PAD]).any()


def test_forbidden_ids_get_no_probability_in_the_training_softmax():
    logits = jax.random.normal(jax.random.key(0), (2, 8, 20))
    key = jax.random.key(6)
    config = ProcessConfig(forbidden_ids=(PAD, MASK))

    def run(values):
        return process.mdm_loss(
            lambda c, k: values, key, TARGETS, jnp.ones(TARGETS.shape), MASK, config
        )

    base = run(logits)
    moved = run(logits.at[..., MASK].add(50.0).at[..., PAD].add(-30.0))
    assert float(base["loss_sum"]) == pytest.approx(float(moved["loss_sum"]), rel=1e-6)
    plain = process.mdm_loss(lambda c, k: logits, key, TARGETS, jnp.ones(TARGETS.shape), MASK)
    assert float(plain["loss_sum"]) > float(base["loss_sum"])  # mass moved off the forbidden ids


def test_deterministic_first_step_uses_the_dropout_free_pass():
    noisy, seen_noisy = _capture_canvases(favourite=7)
    clean, seen_clean = _capture_canvases(favourite=8)
    config = ProcessConfig(isct_steps=2, deterministic_first=True)
    process.isct_loss(
        noisy, jax.random.key(2), TARGETS, jnp.ones(TARGETS.shape), MASK, config,
        first_logits_fn=clean,
    )  # fmt: skip
    (step1,), (step2,) = seen_clean, seen_noisy
    refilled = step2[(step1 == MASK) & (step2 != MASK)]
    assert refilled.size > 0 and np.all(refilled == 8)  # step 1 predicted with the clean pass
    with pytest.raises(ProcessError, match="first_logits_fn"):
        process.isct_loss(noisy, jax.random.key(2), TARGETS, jnp.ones(TARGETS.shape), MASK, config)


def test_tail_masking_hides_the_whole_eos_tail_with_its_probability():
    logits_fn, seen = _capture_canvases()
    targets = jnp.tile(TARGETS, (200, 1))
    lengths = jnp.tile(LENGTHS, 200)
    tail = np.arange(8)[None, :] >= np.asarray(lengths)[:, None]
    for probability in (0.0, 0.5, 1.0):
        seen.clear()
        config = ProcessConfig(tail_mask_prob=probability)
        process.mdm_loss(
            logits_fn, jax.random.key(9), targets, jnp.ones(targets.shape), MASK, config,
            lengths=lengths,
        )  # fmt: skip
        (canvas,) = seen
        whole = np.all((canvas == MASK) | ~tail, axis=1)
        if probability == 1.0:
            assert whole.all()
        elif probability == 0.5:
            assert 0.5 < whole.mean() < 0.75  # 0.5 forced + those masked by chance at high t
        else:
            assert whole.mean() < 0.3
    with pytest.raises(ProcessError, match="tail_mask_prob"):
        ProcessConfig(tail_mask_prob=1.5).validate()


def test_suffix_masking_hides_a_suffix_of_about_t_of_the_real_tokens():
    """With suffix_mask_prob p, a fraction p of the canvases (at every ISCT step) is masked from
    one slot to the end, the states left-to-right decoding meets, hiding about a fraction t of
    the real tokens (mean t = 0.5); the others keep the independent draw."""
    logits_fn, seen = _capture_canvases(favourite=7)
    rows, length = 256, 16
    lengths = jnp.full((rows,), 11)  # 11 transcript tokens + the first EOS = 12 real tokens
    targets = jnp.where(jnp.arange(length)[None, :] < 11, 4, EOS) * jnp.ones((rows, 1), int)
    weight = jnp.ones(targets.shape)

    def suffix_shaped(canvas):  # once a slot is masked, every slot right of it is
        masked = canvas == MASK
        return np.all(masked == np.maximum.accumulate(masked, axis=1), axis=1)

    for probability in (0.0, 0.5, 1.0):
        seen.clear()
        config = ProcessConfig(isct_steps=2, suffix_mask_prob=probability)
        process.isct_loss(
            logits_fn, jax.random.key(4), targets, weight, MASK, config, lengths=lengths
        )
        assert len(seen) == 2
        for canvas in seen:
            suffix = suffix_shaped(canvas)
            if probability == 1.0:
                assert suffix.all()
                hidden = (canvas[:, :12] == MASK).mean()
                assert 0.4 < hidden < 0.6, hidden
                assert np.all(canvas[:, 12:] == MASK)  # the EOS tail is part of the suffix
            elif probability == 0.5:
                assert 0.45 < suffix.mean() < 0.7  # 0.5 chosen + suffixes drawn by chance
            else:
                assert suffix.mean() < 0.2
    with pytest.raises(ProcessError, match="suffix_mask_prob"):
        ProcessConfig(suffix_mask_prob=-0.1).validate()


def test_mdm_weight_warms_up_linearly_over_its_steps():
    config = tiny_model_config()
    model = ASRModel(config)
    params = flax.linen.meta.unbox(init_params(model, jax.random.key(0)))["params"]
    batch = dict(
        features=jnp.ones((2, 32, 80)),
        feature_mask=jnp.ones((2, 32), bool),
        tokens=TARGETS[:, :4],
        token_lengths=LENGTHS,
        example_mask=jnp.ones((2,), bool),
    )
    objective = ObjectiveConfig(canvas_length=8, spec_augment=False, mdm_warmup_steps=10)
    for step, expected in ((0, 0.1), (4, 0.5), (9, 1.0), (50, 1.0)):
        loss, metrics = compute_loss(
            model, params, batch, jax.random.key(0), objective, train=False, step=jnp.array(step)
        )
        assert float(metrics["mdm_weight"]) == pytest.approx(expected)
        assert float(loss) == pytest.approx(expected * float(metrics["mdm_loss"]), rel=1e-5)
    # Starting later: nothing before the start step, then the same ramp.
    later = dataclasses.replace(objective, mdm_start_step=100)
    for step, expected in ((0, 0.0), (99, 0.0), (100, 0.1), (109, 1.0)):
        _, metrics = compute_loss(
            model, params, batch, jax.random.key(0), later, train=False, step=jnp.array(step)
        )
        assert float(metrics["mdm_weight"]) == pytest.approx(expected)


def test_objective_forbids_mask_pad_prompt_and_specials_but_never_eos():
    config = tiny_model_config(prompt_ids=(2,))
    objective = ObjectiveConfig(special_ids=(1, 3, 17))
    assert objective.forbidden_ids(config) == (0, 1, 2, 17, 19)
    assert dataclasses.replace(objective, exclude_special=False).forbidden_ids(config) == ()


def test_default_init_map_builds_the_mdm_decoder_from_an_ar_checkpoint():
    target = {"encoder/a": 0, "mdm_decoder/x": 0, "ar_decoder/x": 0, "ctc_head/k": 0}
    ar_only = {"encoder/a": 0, "ar_decoder/x": 0, "ctc_head/k": 0}
    assert default_init_map(target, ar_only) == [
        ("ar_decoder", "ar_decoder"),
        ("ctc_head", "ctc_head"),
        ("encoder", "encoder"),
        ("mdm_decoder", "ar_decoder"),
    ]
    # A source that has an MDM decoder of its own keeps it.
    assert ("mdm_decoder", "mdm_decoder") in default_init_map(target, target)


def test_mdm_decoder_from_ar_copies_the_ar_weights_into_the_mdm_decoder():
    from mdm_asr_jax.train.trainer import TrainError, TrainState, mdm_decoder_from_ar

    params = {
        "encoder": {"w": jnp.ones(3)},
        "ar_decoder": {"w": jnp.arange(4.0)},
        "mdm_decoder": {"w": jnp.zeros(4)},
    }
    state = TrainState(step=jnp.array(5), params=params, opt_state=(), ema_params=params)
    out = mdm_decoder_from_ar(state)
    for tree in (out.params, out.ema_params):
        np.testing.assert_array_equal(tree["mdm_decoder"]["w"], np.arange(4.0))
        np.testing.assert_array_equal(tree["encoder"]["w"], np.ones(3))
        assert tree["mdm_decoder"]["w"] is not tree["ar_decoder"]["w"]  # a copy: safe to donate
    with pytest.raises(TrainError, match="model.ar"):
        mdm_decoder_from_ar(
            TrainState(step=0, params={"mdm_decoder": {}}, opt_state=(), ema_params=None)
        )
