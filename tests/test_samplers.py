"""Masked-diffusion samplers driven by fake deterministic logits (CPU, tiny shapes)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_asr_jax.diffusion import samplers

V = 12  # vocabulary incl. [MASK]
MASK = V - 1
PAD = 0
EOS = 3
L = 8
B = 3
SPECS = (
    "random",
    "random(mode=bernoulli)",
    "dfm",
    "topk(schedule=linear)",
    "topk(schedule=cosine)",
    "eb(gamma=0.05)",
    "eb(gamma=0.05, proxy=confidence)",
    "eb(gamma=0.05, proxy=margin)",
    "pbeb(lam=0.2, gamma=0.05)",
)


def fake_model(seed: int, eos_bias: float = -8.0, scale: float = 3.0):
    """A deterministic bidirectional "model": logits depend on the whole row of the canvas.

    Rows are independent. eos_bias shifts the EOS logit (very negative: EOS never chosen).
    """
    rng = np.random.default_rng(seed)
    emb = jnp.asarray(rng.normal(size=(V, 8)), jnp.float32)
    pos = jnp.asarray(rng.normal(size=(64, 8)), jnp.float32)
    out = jnp.asarray(rng.normal(size=(8, V)), jnp.float32)
    bias = jnp.zeros((V,), jnp.float32).at[EOS].set(eos_bias)

    def logits_fn(canvas):
        h = emb[canvas] + pos[: canvas.shape[1]]  # [B,L,8]
        h = h + jnp.mean(h, axis=1, keepdims=True)
        return scale * jnp.tanh(h) @ out + bias

    return logits_fn


@functools.lru_cache(maxsize=None)
def _jitted(logits_fn, batch_size, canvas_length, spec, nfe, record, fixed_steps, with_lengths):
    def run(key, lengths):
        return samplers.mdm_sample(
            logits_fn,
            batch_size,
            canvas_length,
            spec=spec,
            nfe=nfe,
            key=key,
            mask_id=MASK,
            eos_id=EOS,
            forbidden_ids=(PAD,),
            lengths=lengths if with_lengths else None,
            record=record,
            fixed_steps=fixed_steps,
        )

    return jax.jit(run)


def sample(logits_fn, spec, *, b=B, length=L, nfe=4, key=0, record=False, fixed_steps=False, lengths=None):
    if isinstance(key, int):
        key = jax.random.key(key)
    fn = _jitted(logits_fn, b, length, spec, nfe, record, fixed_steps, lengths is not None)
    return fn(key, None if lengths is None else jnp.asarray(lengths, jnp.int32))


MODEL = fake_model(0)
EOS_MODEL = fake_model(1, eos_bias=2.0)


# ---------------------------------------------------------------------------------------------
# Spec strings.


def test_spec_strings_parse_to_the_documented_parameters():
    cfg = samplers.parse_sampler("pbeb(lam=0.3, gamma=0.1, temperature=0.5)")
    assert (cfg.name, cfg.lam, cfg.gamma, cfg.temperature) == ("pbeb", 0.3, 0.1, 0.5)
    assert samplers.parse_sampler("pbeb").params == {"lam": 0.2, "gamma": 0.05, "temperature": 0.0}
    assert samplers.parse_sampler("random(mode=bernoulli)").mode == "bernoulli"
    assert samplers.parse_sampler("topk(schedule=cosine)").schedule == "cosine"
    assert samplers.parse_sampler("eb(proxy=margin)").proxy == "margin"
    assert samplers.parse_sampler("dfm").temperature == 1.0
    assert samplers.parse_sampler("ar_beam(size=2)").size == 2
    assert samplers.parse_sampler("ctc_greedy").family == "ctc"
    cfg = samplers.parse_sampler("eb(gamma=0.1,proxy=confidence)")
    assert samplers.parse_sampler(cfg.spec) == cfg


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("beam", "valid samplers"),
        ("pbeb(alpha=1)", "valid parameters: lam, gamma, temperature"),
        ("topk(schedule=exp)", "linear|cosine"),
        ("eb(gamma=-1)", "gamma"),
        ("eb(gamma)", "key=value"),
        ("eb(gamma=abc)", "expected float"),
    ],
)
def test_bad_spec_raises_value_error_naming_the_valid_choices(spec, fragment):
    with pytest.raises(ValueError, match=fragment.replace("|", r"\|")):
        samplers.parse_sampler(spec)


# ---------------------------------------------------------------------------------------------
# Selection rules in isolation.


def test_entropy_budget_excess_is_non_decreasing_along_the_prefix():
    rng = np.random.default_rng(0)
    entropy = jnp.asarray(rng.exponential(size=(50, 16)) * rng.integers(0, 2, (50, 16)), jnp.float32)
    excess = np.asarray(samplers.entropy_budget_excess(entropy))
    assert np.all(np.diff(excess, axis=-1) >= 0)
    assert np.all(excess[:, 0] == 0)


def test_pbeb_order_is_unchanged_by_shifting_the_position_origin():
    rng = np.random.default_rng(1)
    confidence = jnp.asarray(rng.uniform(0.05, 1.0, size=(4, 32)), jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(32), (4, 32))
    base = jnp.argsort(-samplers.pbeb_scores(confidence, positions, 0.2), axis=-1)
    for shift in (5, 100):
        shifted = jnp.argsort(-samplers.pbeb_scores(confidence, positions + shift, 0.2), axis=-1)
        np.testing.assert_array_equal(base, shifted)


def _stats(entropy, confidence=None):
    entropy = jnp.asarray(entropy, jnp.float32)
    confidence = jnp.exp(-entropy) if confidence is None else jnp.asarray(confidence, jnp.float32)
    return samplers.TokenStats(jnp.zeros(entropy.shape, jnp.int32), confidence, entropy, None)


@pytest.mark.parametrize("spec", ["eb(gamma=0)", "pbeb(gamma=0)"])
def test_gamma_zero_commits_one_token_plus_zero_entropy_ties(spec):
    cfg = samplers.parse_sampler(spec)
    live = jnp.ones((2, 6), bool)
    entropy = [[0.5, 0.3, 0.9, 0.2, 0.4, 0.7], [0.5, 0.0, 0.9, 0.0, 0.4, 0.7]]
    keys = jax.random.split(jax.random.key(0), 2)
    commit = samplers.select_commits(cfg, _stats(entropy), live, jnp.int32(0), 8, keys)
    counts = np.asarray(commit.sum(-1))
    # Row 0: no zero entropy -> exactly one. Row 1: two zero-entropy positions sort first
    # (their H adds nothing to sum - max), then one more.
    assert counts.tolist() == [1, 3]


def test_eb_budget_commits_the_longest_prefix_within_gamma():
    cfg = samplers.parse_sampler("eb(gamma=0.25)")
    entropy = [[0.1, 0.05, 0.2, 0.4, 0.02, 0.3]]  # sorted: .02 .05 .1 .2 .3 .4
    commit = samplers.select_commits(
        cfg, _stats(entropy), jnp.ones((1, 6), bool), jnp.int32(0), 8, jax.random.split(jax.random.key(0), 1)
    )
    # prefix sums minus max: 0, .02, .07, .17, .37 -> four positions fit gamma = 0.25
    np.testing.assert_array_equal(np.asarray(commit[0]), [1, 1, 1, 0, 1, 0])


def test_schedule_counts_add_up_to_the_live_count():
    for schedule in ("linear", "cosine"):
        for n, steps in ((8, 4), (13, 5), (3, 8), (40, 7)):
            live = jnp.array([n])
            total = 0
            for s in range(steps):
                k = int(samplers.schedule_count(live, jnp.int32(s), steps, schedule)[0])
                k = min(k, int(live[0])) if s < steps - 1 else int(live[0])
                total += k
                live = live - k
            assert total == n and int(live[0]) == 0


# ---------------------------------------------------------------------------------------------
# The loop.


@pytest.mark.parametrize("spec", ["eb(gamma=0.05)", "eb(gamma=0)", "pbeb(gamma=0)"])
def test_eb_commits_at_least_one_token_per_step(spec):
    out = sample(MODEL, spec, nfe=L, record=True)
    traj = out.trajectory
    steps = int(traj.steps)
    assert steps >= 1
    per_step = np.asarray(traj.committed[:steps].sum(-1))  # [steps, B]
    before = np.concatenate([np.full((1, B, L), MASK), np.asarray(traj.canvas[: steps - 1])])
    was_live = (before == MASK).any(-1)  # [steps, B]
    assert np.all(per_step[was_live] >= 1)


def test_gamma_zero_loop_commits_exactly_one_token_per_step():
    out = sample(MODEL, "eb(gamma=0)", nfe=L, record=True)
    per_step = np.asarray(out.trajectory.committed.sum(-1))
    np.testing.assert_array_equal(per_step, np.ones((L, B)))
    np.testing.assert_array_equal(np.asarray(out.nfe_used), [L] * B)


@pytest.mark.parametrize("spec", ["topk(schedule=linear)", "topk(schedule=cosine)", "random"])
def test_topk_per_step_counts_add_up_to_the_live_count(spec):
    lengths = [L, 5, 1]
    out = sample(MODEL, spec, nfe=3, record=True, lengths=lengths)
    committed = np.asarray(out.trajectory.committed)  # [S,B,L]
    np.testing.assert_array_equal(committed.sum((0, 2)), lengths)
    assert np.all(committed.sum(0) <= 1)  # a position commits once


def test_dfm_unmask_rate_matches_one_over_steps_left():
    steps, b, length = 4, 64, 16
    out = sample(MODEL, "dfm", b=b, length=length, nfe=steps, record=True, key=7)
    traj = out.trajectory
    canvas_before = np.concatenate([np.full((1, b, length), MASK), np.asarray(traj.canvas[:-1])])
    committed = np.asarray(traj.committed)
    for s in range(steps - 1):
        live = canvas_before[s] == MASK
        rate = committed[s][live].mean()
        assert abs(rate - 1.0 / (steps - s)) < 0.06, (s, rate)
    assert committed[steps - 1][canvas_before[steps - 1] == MASK].all()


def test_dfm_never_changes_a_decoded_token():
    # A model whose preferred token at every position changes with the number of masks left.
    def shifting(canvas):
        n_mask = jnp.sum(canvas == MASK, axis=1)[:, None, None]
        base = MODEL(canvas)
        return base + 6.0 * jax.nn.one_hot((n_mask + jnp.arange(canvas.shape[1])[None, :, None]) % 3 + 4, V)[:, :, 0]

    out = sample(shifting, "dfm(temperature=0)", nfe=6, record=True, key=3)
    canvases = np.asarray(out.trajectory.canvas)[: int(out.trajectory.steps)]
    for prev, nxt in zip(canvases[:-1], canvases[1:], strict=True):
        decoded = prev != MASK
        np.testing.assert_array_equal(nxt[decoded], prev[decoded])


@pytest.mark.parametrize("spec", SPECS)
def test_last_step_fills_every_mask_and_mask_is_never_output(spec):
    # A model that prefers [MASK] and pad over every real token: both stay forbidden.
    def mask_loving(canvas):
        return MODEL(canvas) + 50.0 * jax.nn.one_hot(jnp.array([MASK, PAD]), V).sum(0)

    out = sample(mask_loving, spec, nfe=2)
    tokens = np.asarray(out.tokens)
    assert not np.any(tokens == MASK) and not np.any(tokens == PAD)
    assert np.all(np.asarray(out.nfe_used) <= 2)


@pytest.mark.parametrize("spec", ["eb(gamma=0)", "random(mode=bernoulli)", "topk"])
def test_nothing_after_the_first_eos_is_committed(spec):
    out = sample(EOS_MODEL, spec, nfe=L, record=True, key=5)
    traj = out.trajectory
    steps = int(traj.steps)
    tokens = np.asarray(out.tokens)
    assert np.any(tokens == EOS)
    for row in tokens:
        hits = np.flatnonzero(row == EOS)
        if hits.size:
            assert np.all(row[hits[0] :] == EOS)
    canvases = np.concatenate([np.full((1, B, L), MASK), np.asarray(traj.canvas[:steps])])
    committed = np.asarray(traj.committed[:steps])
    for s in range(steps):
        for b in range(B):
            hits = np.flatnonzero(canvases[s, b] == EOS)
            if hits.size:
                assert not committed[s, b, hits[0] :].any()
                assert not (canvases[s + 1, b, hits[0] :] == MASK).any()


@pytest.mark.parametrize("spec", SPECS)
def test_batch_of_n_equals_n_runs_of_batch_of_one(spec):
    keys = jax.random.split(jax.random.key(11), B)
    batched = sample(EOS_MODEL, spec, nfe=4, key=keys)
    for b in range(B):
        single = sample(EOS_MODEL, spec, b=1, nfe=4, key=keys[b : b + 1])
        np.testing.assert_array_equal(np.asarray(batched.tokens[b]), np.asarray(single.tokens[0]))
        assert int(batched.nfe_used[b]) == int(single.nfe_used[0])


@pytest.mark.parametrize("spec", SPECS)
def test_a_model_that_knows_the_answer_is_decoded_within_the_nfe_cap(spec):
    rng = np.random.default_rng(2)
    answers = rng.integers(4, MASK, size=(B, 16))
    answer_lengths = [16, 9, 0]
    for b, n in enumerate(answer_lengths):
        answers[b, n:] = EOS
    scale = jnp.asarray(rng.uniform(15, 25, size=(1, 16, 1)), jnp.float32)
    target = jax.nn.one_hot(jnp.asarray(answers), V) * scale

    def oracle(canvas):
        return target + 0.0 * canvas[..., None]

    nfe = 6
    out = sample(oracle, spec, length=16, nfe=nfe, key=4)
    ids = samplers.tokens_to_ids(out.tokens, EOS)
    assert ids == [answers[b, :n].tolist() for b, n in enumerate(answer_lengths)]
    assert np.all(np.asarray(out.nfe_used) <= nfe)


def test_fixed_steps_gives_the_same_tokens_as_early_exit():
    early = sample(EOS_MODEL, "pbeb", nfe=L, key=1)
    fixed = sample(EOS_MODEL, "pbeb", nfe=L, key=1, fixed_steps=True)
    np.testing.assert_array_equal(np.asarray(early.tokens), np.asarray(fixed.tokens))
    np.testing.assert_array_equal(np.asarray(early.nfe_used), np.asarray(fixed.nfe_used))


def test_per_row_lengths_freeze_the_tail_to_eos():
    out = sample(MODEL, "eb(gamma=0)", nfe=L, lengths=[L, 3, 0])
    tokens = np.asarray(out.tokens)
    assert np.all(tokens[1, 3:] == EOS) and np.all(tokens[2] == EOS)
    assert not np.any(tokens[0] == EOS) and not np.any(tokens[1, :3] == EOS)
    np.testing.assert_array_equal(np.asarray(out.nfe_used), [L, 3, 0])


def test_the_loop_compiles_once_per_batch_and_canvas_shape():
    traces = []
    base = fake_model(3)

    def counted(canvas):
        traces.append(canvas.shape)
        return base(canvas)

    for seed in range(3):
        sample(counted, "pbeb", nfe=4, key=seed)
    assert traces == [(B, L)]
    sample(counted, "pbeb", b=2, nfe=4)
    sample(counted, "pbeb", b=2, nfe=4, key=9)
    assert traces == [(B, L), (2, L)]


def test_non_mdm_spec_and_bad_nfe_are_rejected():
    with pytest.raises(ValueError, match="masked-diffusion"):
        samplers.mdm_sample(MODEL, 1, 4, spec="ar_greedy", nfe=2, key=jax.random.key(0), mask_id=MASK, eos_id=EOS)
    with pytest.raises(ValueError, match="nfe"):
        samplers.mdm_sample(MODEL, 1, 4, spec="eb", nfe=0, key=jax.random.key(0), mask_id=MASK, eos_id=EOS)


# ---------------------------------------------------------------------------------------------
# Outputs and canvas sizing.


def test_tokens_to_ids_cuts_at_the_first_eos():
    tokens = np.array([[5, 6, EOS, 7], [EOS, 5, 5, 5], [4, 4, 4, 4]])
    assert samplers.tokens_to_ids(tokens, EOS) == [[5, 6], [], [4, 4, 4, 4]]


def test_adaptive_canvas_rounds_up_to_a_bucket():
    assert samplers.adaptive_canvas_length(1.0, tokens_per_second=10) == 16
    assert samplers.adaptive_canvas_length([0.5, 2.0], tokens_per_second=10) == 32
    assert samplers.adaptive_canvas_length(3.2, tokens_per_second=10) == 64
    assert samplers.adaptive_canvas_length(60.0, tokens_per_second=10) == 256
    np.testing.assert_array_equal(
        samplers.adaptive_row_lengths([0.5, 2.0, 9.0], 32, tokens_per_second=10), [6, 21, 32]
    )
