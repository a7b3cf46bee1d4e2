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
# The paper's samplers and their variants; the variants compile separately, so the slower ones
# run with `pytest -m slow`.
SPECS = (
    "random",
    "random(mode=bernoulli)",
    "dfm",
    "topk(schedule=linear)",
    "topk(schedule=cosine)",
    "eb(gamma=0.05)",
    "eb(gamma=0)",
    "pbeb(lam=0.2, gamma=0.05)",
)
SLOW_SPECS = (
    "eb(gamma=0.05, proxy=confidence)",
    "eb(gamma=0.05, proxy=margin)",
    "dfm(temperature=0)",
)
ALL_SPECS = SPECS + tuple(pytest.param(s, marks=pytest.mark.slow) for s in SLOW_SPECS)


def fake_params(
    seed: int,
    *,
    b: int = B,
    eos_bias: float = -8.0,
    scale: float = 3.0,
    noise: float = 0.0,
    target=None,
):
    """Weights of a deterministic bidirectional fake "model" (see `fake_logits`).

    eos_bias shifts the EOS logit (very negative: EOS is never chosen); target [b,L,V] is added
    to the logits (an oracle that knows the answer when the rest is zero), or else a per-row
    random offset of size `noise` so that rows differ.
    """
    rng = np.random.default_rng(seed)
    if target is None:
        target = noise * rng.normal(size=(b, L, V))
    return {
        "emb": jnp.asarray(rng.normal(size=(V, 8)), jnp.float32),
        "pos": jnp.asarray(rng.normal(size=(L, 8)), jnp.float32),
        "out": jnp.asarray(rng.normal(size=(8, V)), jnp.float32),
        "scale": jnp.float32(scale),
        "bias": jnp.zeros((V,), jnp.float32).at[EOS].set(eos_bias),
        "target": jnp.asarray(target, jnp.float32),
    }


def fake_logits(params, canvas):
    """logits [B,L,V]: every position sees the whole row of the canvas; rows are independent."""
    h = params["emb"][canvas] + params["pos"]  # [B,L,8]
    h = h + jnp.mean(h, axis=1, keepdims=True)
    return params["scale"] * jnp.tanh(h) @ params["out"] + params["bias"] + params["target"]


@functools.cache
def _jitted(logits_fn, batch_size, spec, nfe, fixed_steps):
    """One compiled decode per (model function, batch, spec, nfe, fixed_steps); params, key and
    lengths are arguments, so tests with different fake models share the compile."""

    def run(params, key, lengths):
        return samplers.mdm_sample(
            functools.partial(logits_fn, params),
            batch_size,
            L,
            spec=spec,
            nfe=nfe,
            key=key,
            mask_id=MASK,
            eos_id=EOS,
            forbidden_ids=(PAD,),
            lengths=lengths,
            record=True,
            fixed_steps=fixed_steps,
        )

    return jax.jit(run)


def sample(params, spec, *, nfe=4, key=0, fixed_steps=False, lengths=None, logits_fn=fake_logits):
    b = params["target"].shape[0]
    if isinstance(key, int):
        key = jax.random.key(key)
    lengths = jnp.full((b,), L, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
    config = samplers.parse_sampler(spec)  # equivalent spellings share one compile
    return _jitted(logits_fn, b, config, nfe, fixed_steps)(params, key, lengths)


@pytest.fixture(autouse=True, scope="module")
def _fast_compiling_threefry():
    """The partitionable threefry lowering takes ~10x longer to compile on CPU; the sampler's
    properties do not depend on which threefry layout draws the bits."""
    with jax.threefry_partitionable(False):
        yield


MODEL = fake_params(0)
EOS_MODEL = fake_params(1, eos_bias=0.0, noise=3.0)
# EOS grows likelier along the canvas, so rows end at different places.
EOS_MODEL["target"] = EOS_MODEL["target"].at[:, :, EOS].add(jnp.linspace(-6.0, 12.0, L))


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
    entropy = jnp.asarray(
        rng.exponential(size=(50, 16)) * rng.integers(0, 2, (50, 16)), jnp.float32
    )
    excess = np.asarray(samplers.entropy_budget_excess(entropy))
    assert np.all(np.diff(excess, axis=-1) >= 0)
    assert np.all(excess[:, 0] == 0)


def test_sampled_tokens_follow_the_tempered_distribution_and_skip_forbidden_ids():
    logits = jnp.log(jnp.array([0.0, 0.1, 0.2, 0.0, 0.7]))[None, None, :]  # ids 0 and 3: p = 0
    logits = jnp.broadcast_to(jnp.maximum(logits, samplers.NEG_LOGIT), (1, 4000, 5))
    uniform = (
        jax.random.uniform(jax.random.key(0), (1, 4000)).at[0, :2].set(jnp.array([0.0, 0.9999999]))
    )
    stats = samplers.token_stats(logits, temperature=1.0, uniform=uniform)
    counts = np.bincount(np.asarray(stats.candidate).ravel(), minlength=5) / 4000
    assert counts[0] == 0 and counts[3] == 0
    np.testing.assert_allclose(counts, [0, 0.1, 0.2, 0, 0.7], atol=0.03)
    hot = samplers.token_stats(logits * 0.5, temperature=0.5, uniform=uniform)  # same distribution
    np.testing.assert_array_equal(np.asarray(hot.candidate), np.asarray(stats.candidate))


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


@pytest.mark.parametrize("spec", ["eb(gamma=0)"])
def test_gamma_zero_commits_one_token_plus_zero_entropy_ties(spec):
    cfg = samplers.parse_sampler(spec)
    live = jnp.ones((2, 6), bool)
    entropy = [[0.5, 0.3, 0.9, 0.2, 0.4, 0.7], [0.5, 0.0, 0.9, 0.0, 0.4, 0.7]]
    commit = samplers.select_commits(cfg, _stats(entropy), live, jnp.int32(0), 8)
    counts = np.asarray(commit.sum(-1))
    # Row 0: no zero entropy -> exactly one. Row 1: two zero-entropy positions sort first
    # (their H adds nothing to sum - max), then one more.
    assert counts.tolist() == [1, 3]


@pytest.mark.parametrize("proxy", ["entropy", "confidence", "margin"])
def test_eb_proxy_sets_the_commit_order(proxy):
    cfg = samplers.parse_sampler(f"eb(gamma=0, proxy={proxy})")
    entropy = jnp.array([[0.3, 0.2, 0.1]])
    confidence = jnp.array([[0.5, 0.9, 0.7]])
    margin = jnp.array([[0.8, 0.1, 0.2]])
    stats = samplers.TokenStats(jnp.zeros((1, 3), jnp.int32), confidence, entropy, margin)
    commit = samplers.select_commits(cfg, stats, jnp.ones((1, 3), bool), jnp.int32(0), 4)
    expect = {"entropy": [0, 0, 1], "confidence": [0, 1, 0], "margin": [1, 0, 0]}[proxy]
    np.testing.assert_array_equal(np.asarray(commit[0]), expect)


def test_eb_orders_by_confidence_by_default_as_the_paper_does():
    assert samplers.parse_sampler("eb").proxy == "confidence"
    assert samplers.parse_sampler("eb(gamma=0.05)") == samplers.parse_sampler(
        "eb(gamma=0.05,proxy=confidence)"
    )


def test_eb_budget_commits_the_longest_prefix_within_gamma():
    cfg = samplers.parse_sampler("eb(gamma=0.25,proxy=entropy)")
    entropy = [[0.1, 0.05, 0.2, 0.4, 0.02, 0.3]]  # sorted: .02 .05 .1 .2 .3 .4
    commit = samplers.select_commits(cfg, _stats(entropy), jnp.ones((1, 6), bool), jnp.int32(0), 8)
    # prefix sums minus max: 0, .02, .07, .17, .37 -> four positions fit gamma = 0.25
    np.testing.assert_array_equal(np.asarray(commit[0]), [1, 1, 1, 0, 1, 0])


def test_pbeb_apart_keeps_only_the_leftmost_of_each_run_pbeb_would_commit():
    entropy = [[0.0, 0.0, 0.9, 0.9, 0.0, 0.9, 0.0, 0.9]]
    live = jnp.ones((1, 8), bool)
    pbeb, apart = (
        samplers.select_commits(samplers.parse_sampler(f"{name}(lam=0,gamma=0)"), _stats(entropy),
                                live, jnp.int32(0), 8)
        for name in ("pbeb", "pbeb_apart")
    )  # fmt: skip
    # pbeb: the zero-entropy slots 0, 1, 4, 6, then one more (2, the earliest of the ties).
    np.testing.assert_array_equal(np.asarray(pbeb[0]), [1, 1, 1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(np.asarray(apart[0]), [1, 0, 0, 0, 1, 0, 1, 0])


def test_pbeb_apart_never_commits_two_neighbours_in_one_step_before_the_last():
    out = sample(MODEL, "pbeb_apart(gamma=1)", nfe=6)
    committed = np.asarray(out.trajectory.committed)[: int(out.trajectory.steps) - 1]  # [S-1,B,L]
    assert committed.sum() > committed.shape[0] * B  # several slots a step, so the rule had work
    assert not np.any(committed[..., 1:] & committed[..., :-1])
    assert not np.any(np.asarray(out.tokens) == MASK)


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


def _before_each_step(out):
    """Canvas at the start of each step [S,B,L] (the initial canvas is all [MASK] here)."""
    canvas = np.asarray(out.trajectory.canvas)
    return np.concatenate([np.full((1, *canvas.shape[1:]), MASK), canvas[:-1]])


@pytest.mark.parametrize("spec", ["eb(gamma=0.05)", "eb(gamma=0)", "pbeb"])
def test_eb_commits_at_least_one_token_per_step(spec):
    out = sample(MODEL, spec)
    steps = int(out.trajectory.steps)
    per_step = np.asarray(out.trajectory.committed[:steps].sum(-1))  # [steps, B]
    was_live = (_before_each_step(out)[:steps] == MASK).any(-1)  # [steps, B]
    assert was_live.any() and np.all(per_step[was_live] >= 1)


@pytest.mark.parametrize("spec", ["eb(gamma=0)", "pbeb(gamma=0)"])
def test_gamma_zero_commits_one_token_a_step_and_the_last_step_fills_the_rest(spec):
    out = sample(MODEL, spec, nfe=4)
    per_step = np.asarray(out.trajectory.committed.sum(-1))  # [S,B]
    np.testing.assert_array_equal(per_step, [[1] * B] * 3 + [[L - 3] * B])
    np.testing.assert_array_equal(np.asarray(out.nfe_used), [4] * B)
    assert not np.any(np.asarray(out.tokens) == MASK)


@pytest.mark.parametrize("spec", ["topk(schedule=linear)", "topk(schedule=cosine)", "random"])
def test_topk_per_step_counts_add_up_to_the_live_count(spec):
    lengths = [L, 5, 1]
    out = sample(MODEL, spec, lengths=lengths)
    committed = np.asarray(out.trajectory.committed)  # [S,B,L]
    np.testing.assert_array_equal(committed.sum((0, 2)), lengths)
    assert np.all(committed.sum(0) <= 1)  # a position commits once
    n_live = np.asarray(lengths)
    config = samplers.parse_sampler(spec)
    # random (count mode) commits ceil(n / (S - s)) a step: topk's linear schedule.
    schedule = config.schedule if config.name == "topk" else "linear"
    for s in range(3):  # the last step fills whatever is left
        expect = np.where(
            n_live > 0, samplers.schedule_count(jnp.asarray(n_live), jnp.int32(s), 4, schedule), 0
        )
        np.testing.assert_array_equal(committed[s].sum(-1), expect)
        n_live = n_live - expect


def test_dfm_unmask_rate_matches_one_over_steps_left():
    steps = 4
    hits, trials = np.zeros(steps), np.zeros(steps)
    for seed in range(40):
        out = sample(MODEL, "dfm", nfe=steps, key=seed)
        before, committed = _before_each_step(out), np.asarray(out.trajectory.committed)
        for s in range(int(out.trajectory.steps)):
            live = before[s] == MASK
            hits[s] += committed[s][live].sum()
            trials[s] += live.sum()
    rate = hits / trials
    for s in range(steps - 1):
        tolerance = 4 * np.sqrt(0.25 / trials[s])
        assert abs(rate[s] - 1.0 / (steps - s)) < tolerance, (s, rate, trials)
    assert rate[steps - 1] == 1.0


def _shifting_logits(params, canvas):
    """fake_logits plus a bonus for a token that changes with the number of masks left."""
    n_mask = jnp.sum(canvas == MASK, axis=1)[:, None]  # [B,1]
    favourite = (n_mask + jnp.arange(canvas.shape[1])[None, :]) % 3 + 4  # [B,L]
    return fake_logits(params, canvas) + 6.0 * jax.nn.one_hot(favourite, V)


def test_dfm_never_changes_a_decoded_token():
    out = sample(MODEL, "dfm(temperature=0)", key=3, logits_fn=_shifting_logits)
    canvases = np.asarray(out.trajectory.canvas)[: int(out.trajectory.steps)]
    assert len(canvases) >= 2
    changed_preference = False
    for prev, nxt in zip(canvases[:-1], canvases[1:], strict=True):
        decoded = prev != MASK
        np.testing.assert_array_equal(nxt[decoded], prev[decoded])
        changed_preference |= bool(decoded.any())
    assert changed_preference


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_mask_and_pad_are_never_output_even_when_the_model_prefers_them(spec):
    params = dict(MODEL, bias=MODEL["bias"].at[MASK].set(50.0).at[PAD].set(40.0))
    out = sample(params, spec)
    tokens = np.asarray(out.tokens)
    assert not np.any(tokens == MASK) and not np.any(tokens == PAD)
    assert np.all(np.asarray(out.nfe_used) <= 4)


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_nothing_after_the_first_eos_is_committed(spec):
    out = sample(EOS_MODEL, spec, key=5)
    steps = int(out.trajectory.steps)
    tokens = np.asarray(out.tokens)
    assert np.any(tokens == EOS)
    for row in tokens:
        hits = np.flatnonzero(row == EOS)
        if hits.size:
            assert np.all(row[hits[0] :] == EOS)
    before = _before_each_step(out)
    after = np.asarray(out.trajectory.canvas)
    committed = np.asarray(out.trajectory.committed)
    for s in range(steps):
        for b in range(B):
            hits = np.flatnonzero(before[s, b] == EOS)
            if hits.size:
                assert not committed[s, b, hits[0] :].any()
            hits = np.flatnonzero(after[s, b] == EOS)
            if hits.size:
                assert not (after[s, b, hits[0] :] == MASK).any()


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_a_model_that_knows_the_answer_is_decoded_within_the_nfe_cap(spec):
    rng = np.random.default_rng(2)
    answers = rng.integers(4, MASK, size=(B, L))
    answer_lengths = [L, 5, 0]
    for b, n in enumerate(answer_lengths):
        answers[b, n:] = EOS
    scale = rng.uniform(15, 25, size=(1, L, 1))  # peaked, with different confidences
    target = np.asarray(jax.nn.one_hot(answers, V)) * scale
    oracle = dict(fake_params(0, target=target), scale=jnp.float32(0.0))
    out = sample(oracle, spec, key=4)
    ids = samplers.tokens_to_ids(out.tokens, EOS)
    assert ids == [answers[b, :n].tolist() for b, n in enumerate(answer_lengths)]
    assert np.all(np.asarray(out.nfe_used) <= 4)


@pytest.mark.parametrize(
    "spec",
    ["dfm"]  # random positions and random tokens; the rest with `pytest -m slow`
    + [
        pytest.param(s, marks=pytest.mark.slow)
        for s in (
            "random",
            "pbeb",
            "random(mode=bernoulli)",
            "topk(schedule=cosine)",
            "eb(proxy=margin)",
        )
    ],
)
def test_batch_of_n_equals_n_runs_of_batch_of_one(spec):
    keys = jax.random.split(jax.random.key(11), B)
    batched = sample(EOS_MODEL, spec, key=keys)
    for b in range(B):
        single_params = dict(EOS_MODEL, target=EOS_MODEL["target"][b : b + 1])
        single = sample(single_params, spec, key=keys[b : b + 1])
        np.testing.assert_array_equal(np.asarray(batched.tokens[b]), np.asarray(single.tokens[0]))
        assert int(batched.nfe_used[b]) == int(single.nfe_used[0])


def test_fixed_steps_gives_the_same_tokens_as_early_exit():
    confident = fake_params(0, scale=10.0)  # pbeb finishes before the cap
    early = sample(confident, "pbeb", key=1)
    fixed = sample(confident, "pbeb", key=1, fixed_steps=True)
    assert int(early.trajectory.steps) < 4 and int(fixed.trajectory.steps) == 4
    np.testing.assert_array_equal(np.asarray(early.tokens), np.asarray(fixed.tokens))
    np.testing.assert_array_equal(np.asarray(early.nfe_used), np.asarray(fixed.nfe_used))


def test_per_row_lengths_freeze_the_tail_to_eos():
    out = sample(MODEL, "eb(gamma=0)", lengths=[L, 3, 0])
    tokens = np.asarray(out.tokens)
    assert np.all(tokens[1, 3:] == EOS) and np.all(tokens[2] == EOS)
    assert not np.any(tokens[0] == EOS) and not np.any(tokens[1, :3] == EOS)
    np.testing.assert_array_equal(np.asarray(out.nfe_used), [4, 3, 0])


def test_the_loop_compiles_once_per_batch_and_canvas_shape():
    traces = []

    def counted(params, canvas):
        traces.append(canvas.shape)
        return fake_logits(params, canvas)

    for seed in range(3):
        sample(fake_params(seed), "pbeb", key=seed, logits_fn=counted)
    assert traces == [(B, L)]
    for seed in range(2):
        sample(fake_params(seed, b=2), "pbeb", key=seed, logits_fn=counted)
    assert traces == [(B, L), (2, L)]


def test_non_mdm_spec_and_bad_nfe_are_rejected():
    logits_fn = functools.partial(fake_logits, MODEL)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="masked-diffusion"):
        samplers.mdm_sample(
            logits_fn, 1, 4, spec="ar_greedy", nfe=2, key=key, mask_id=MASK, eos_id=EOS
        )
    with pytest.raises(ValueError, match="nfe"):
        samplers.mdm_sample(logits_fn, 1, 4, spec="eb", nfe=0, key=key, mask_id=MASK, eos_id=EOS)


# ---------------------------------------------------------------------------------------------
# Logits only for the live positions (masked_logits).


def _fake_hidden(params, canvas):
    """`fake_logits` before its output layer: [B,L,8]."""
    h = params["emb"][canvas] + params["pos"]
    return h + jnp.mean(h, axis=1, keepdims=True)


def _fake_project(params, hidden, positions):
    """`fake_logits`' output layer at `positions` [B,K] (the per-position target gathered)."""
    target = jnp.take_along_axis(params["target"], positions[..., None], axis=1)
    return params["scale"] * jnp.tanh(hidden) @ params["out"] + params["bias"] + target


@functools.cache
def _jitted_masked(batch_size, spec, nfe, buckets):
    def run(params, key):
        return samplers.mdm_sample(
            samplers.SplitLogitsFn(
                functools.partial(_fake_hidden, params), functools.partial(_fake_project, params)
            ),
            batch_size,
            L,
            spec=spec,
            nfe=nfe,
            key=key,
            mask_id=MASK,
            eos_id=EOS,
            forbidden_ids=(PAD,),
            record=True,
            masked_logits=True,
            logit_buckets=buckets,
        )

    return jax.jit(run)


@pytest.mark.parametrize(
    "spec",
    [
        "pbeb",
        pytest.param("eb(gamma=0.05, proxy=margin)", marks=pytest.mark.slow),
        pytest.param("topk(schedule=cosine)", marks=pytest.mark.slow),
        pytest.param("random", marks=pytest.mark.slow),
        "dfm",  # temperature 1: tokens drawn with the gathered uniforms
    ],
)
def test_masked_logits_commit_the_same_tokens_step_by_step_as_full_logits(spec):
    params = dict(EOS_MODEL, scale=jnp.float32(1.0))  # low confidence: several steps
    full = sample(params, spec, nfe=L, key=5)
    masked = _jitted_masked(B, samplers.parse_sampler(spec), L, (2, 4))(params, jax.random.key(5))
    steps = int(full.trajectory.steps)
    assert int(masked.trajectory.steps) == steps
    np.testing.assert_array_equal(np.asarray(masked.tokens), np.asarray(full.tokens))
    np.testing.assert_array_equal(np.asarray(masked.nfe_used), np.asarray(full.nfe_used))
    for name in ("canvas", "committed"):
        np.testing.assert_array_equal(
            np.asarray(getattr(masked.trajectory, name))[:steps],
            np.asarray(getattr(full.trajectory, name))[:steps],
            err_msg=name,
        )
    live = _before_each_step(full)[:steps] == MASK  # [S,B,L]
    for name in ("confidence", "entropy"):
        np.testing.assert_allclose(
            np.asarray(getattr(masked.trajectory, name))[:steps][live],
            np.asarray(getattr(full.trajectory, name))[:steps][live],
            rtol=1e-6,
            atol=1e-7,
        )
    # The decode went through more than one gather size (2, 4 and the whole canvas of 8).
    most_live = live.sum(-1).max(-1)  # [S]
    assert most_live.max() > 4 and most_live.min() <= 4


def test_masked_logits_need_a_split_logits_fn_and_positive_buckets():
    key = jax.random.key(0)
    common = dict(spec="pbeb", nfe=2, key=key, mask_id=MASK, eos_id=EOS, masked_logits=True)
    with pytest.raises(TypeError, match="SplitLogitsFn"):
        samplers.mdm_sample(functools.partial(fake_logits, MODEL), 1, L, **common)
    split = samplers.SplitLogitsFn(
        functools.partial(_fake_hidden, MODEL), functools.partial(_fake_project, MODEL)
    )
    with pytest.raises(ValueError, match="positive gather sizes"):
        samplers.mdm_sample(split, 1, L, logit_buckets=(0, 4), **common)
    assert samplers.masked_logit_buckets(40) == (8, 16, 32, 40)
    assert samplers.masked_logit_buckets(64) == (8, 16, 32, 64)


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
