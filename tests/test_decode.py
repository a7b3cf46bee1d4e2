"""`decode` end to end on a tiny random ASRModel (2 layers, width 32): every sampler family."""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_model_config

from mdm_asr_jax import decode as dec
from mdm_asr_jax.nn.model import ASRModel, init_params

CONFIG = tiny_model_config()  # vocab 20 ([MASK] = 19), pad 0, EOS 3, prompt (2,), max_length 16
MODEL = ASRModel(CONFIG)
FORBIDDEN = {CONFIG.pad_id, CONFIG.mask_id, *CONFIG.prompt_ids}


@pytest.fixture(autouse=True, scope="module")
def _fast_compiling_threefry():
    """See tests/test_samplers.py: same sampler, ~10x faster compiles of the random draws."""
    with jax.threefry_partitionable(False):
        yield


@pytest.fixture(scope="module")
def params():
    """Random parameters of the right shapes without compiling init (eval_shape + numpy)."""
    shapes = jax.eval_shape(lambda k: init_params(MODEL, k), jax.random.key(0))
    rng = np.random.default_rng(0)
    return jax.tree.map(
        lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype),
        flax.linen.meta.unbox(shapes)["params"],
    )


def make_batch(rows=(40, 28), frames=40, seed=1, index=None):
    features = jax.random.normal(jax.random.key(seed), (len(rows), frames, 80))
    return {
        "features": np.asarray(features),
        "feature_mask": np.arange(frames)[None] < np.asarray(rows)[:, None],
        "example_mask": np.ones((len(rows),), bool),
        "index": np.arange(len(rows), dtype=np.int32) if index is None else np.asarray(index),
        "seconds": np.asarray(rows, np.float32) * 0.01,
    }


BATCH = make_batch()
# One of each family by default (each spec compiles the model into its loop: seconds on CPU);
# the others run with `pytest -m slow`.
SPECS = [
    "pbeb(lam=0.2,gamma=0.05)",
    "ar_greedy",
    "ctc_greedy",
    pytest.param("dfm", marks=pytest.mark.slow),
    pytest.param("ar_beam(size=2)", marks=pytest.mark.slow),
    pytest.param("random", marks=pytest.mark.slow),
    pytest.param("topk(schedule=cosine)", marks=pytest.mark.slow),
    pytest.param("eb(gamma=0.05)", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("spec", SPECS)
def test_every_sampler_decodes_a_real_batch(params, spec):
    nfe = 4
    out = dec.decode(MODEL, params, BATCH, spec, nfe, jax.random.key(0))
    assert len(out.ids) == 2 and out.nfe_used.shape == (2,)
    for row in out.ids:
        assert all(0 <= t < CONFIG.vocab_size for t in row)
        assert not FORBIDDEN & set(row) and CONFIG.eos_id not in row
    if spec.startswith(("pbeb", "dfm", "random", "topk", "eb")):
        canvas = CONFIG.mdm_decoder.max_length - len(CONFIG.prompt_ids)
        assert out.tokens.shape == (2, canvas)
        assert np.all((out.nfe_used >= 1) & (out.nfe_used <= nfe))
    # Decoding the same batch again reuses the compiled function and gives the same ids.
    again = dec.decode(MODEL, {"params": params}, BATCH, spec, nfe, jax.random.key(0))
    assert again.ids == out.ids


@jax.jit
def _teacher_forced_logits(params, features, feature_mask, decoder_input):
    variables = {"params": params}
    encoded, enc_mask = MODEL.apply(variables, features, feature_mask, method=MODEL.encode)
    return MODEL.apply(variables, decoder_input, encoded, enc_mask, method=MODEL.ar_logits)


def test_kv_cached_greedy_agrees_with_the_full_causal_forward(params):
    out = dec.decode(MODEL, params, BATCH, "ar_greedy")
    prompt = list(CONFIG.prompt_ids)
    decoder_input = jnp.asarray([prompt + list(row) for row in out.tokens[:, :-1]])
    logits = _teacher_forced_logits(params, BATCH["features"], BATCH["feature_mask"], decoder_input)
    logits = logits.at[..., jnp.asarray(sorted(FORBIDDEN))].set(-1e9)
    predicted = np.asarray(jnp.argmax(logits, -1))[:, len(prompt) - 1 :]
    for row, ids in enumerate(out.ids):
        n = len(ids) + 1  # the transcript and its EOS
        n = min(n, out.tokens.shape[1])
        np.testing.assert_array_equal(predicted[row, :n], out.tokens[row, :n])


@pytest.mark.parametrize("spec", ["pbeb", pytest.param("dfm", marks=pytest.mark.slow)])
def test_a_row_decodes_the_same_alone_and_padding_rows_cost_nothing(params, spec):
    pair = dec.decode(MODEL, params, BATCH, spec, 4, jax.random.key(5))
    single = dict(make_batch(rows=(28,), index=[1]), features=BATCH["features"][1:])
    alone = dec.decode(MODEL, params, single, spec, 4, jax.random.key(5))
    assert alone.ids[0] == pair.ids[1]
    padded = dict(BATCH, example_mask=np.array([True, False]))
    out = dec.decode(MODEL, params, padded, spec, 4, jax.random.key(5))
    assert out.ids[0] == pair.ids[0] and out.ids[1] == [] and out.nfe_used[1] == 0


def test_decode_compiles_once_per_spec_and_shape(params):
    sampler = dec.samplers.parse_sampler("pbeb")
    length = CONFIG.mdm_decoder.max_length - len(CONFIG.prompt_ids)
    forbidden = dec._forbidden(CONFIG, (), "mdm")
    dec.decode(MODEL, params, BATCH, "pbeb", 4, jax.random.key(0))
    run = dec._compiled(MODEL, sampler, 4, length, forbidden, False, False)
    misses, compiled = dec._compiled.cache_info().misses, run._cache_size()
    # Other keys, an equivalent spelling of the spec, the same shapes: nothing new is built.
    for seed, spec in ((1, "pbeb"), (2, "pbeb(lam=0.2, gamma=0.05)"), (3, "pbeb(gamma=0.05)")):
        dec.decode(MODEL, params, BATCH, spec, 4, jax.random.key(seed))
    assert dec._compiled.cache_info().misses == misses
    assert run._cache_size() == compiled


@pytest.mark.parametrize("spec", ["pbeb", "ar_greedy"])
def test_target_lengths_make_a_random_model_emit_exactly_that_many_tokens(params, spec):
    targets = np.array([5, 9], np.int32)
    out = dec.decode(
        MODEL, params, BATCH, spec, 4, jax.random.key(0), target_lengths=targets,
        canvas_buckets=(8, 12),
    )  # fmt: skip
    assert [len(row) for row in out.ids] == targets.tolist()
    for row in out.ids:
        assert not FORBIDDEN & set(row) and CONFIG.eos_id not in row
    if spec == "ar_greedy":
        assert out.nfe_used.tolist() == (targets + 1).tolist()  # the tokens and the forced EOS
    else:
        assert out.tokens.shape == (2, 12)  # the smallest bucket holding 9 tokens + EOS
        assert np.all(out.tokens[0, 5:] == CONFIG.eos_id)
        assert np.all((out.nfe_used >= 1) & (out.nfe_used <= 4))


def test_target_lengths_are_checked_against_the_decoder(params):
    with pytest.raises(ValueError, match="exceed max_len"):
        dec.decode(MODEL, params, BATCH, "ar_greedy", target_lengths=[3, 40])
    with pytest.raises(ValueError, match="do not fit the canvas"):
        dec.decode(MODEL, params, BATCH, "pbeb", 4, target_lengths=[3, 40])
    with pytest.raises(ValueError, match="not CTC"):
        dec.decode(MODEL, params, BATCH, "ctc_greedy", target_lengths=[3, 4])
    with pytest.raises(ValueError, match=r"\[B\] = \[2\]"):
        dec.decode(MODEL, params, BATCH, "ar_greedy", target_lengths=[3])


@pytest.mark.slow
def test_adaptive_canvas_uses_a_bucket_and_per_row_lengths(params):
    batch = dict(BATCH, seconds=np.array([0.25, 0.45], np.float32))
    out = dec.decode(
        MODEL, params, batch, "pbeb", 4, adaptive_canvas=True, canvas_buckets=(4, 8), record=True
    )
    assert out.tokens.shape == (2, 8)  # needs ceil(0.45 * 10) + 1 = 6 -> bucket 8
    assert np.all(out.tokens[0, 4:] == CONFIG.eos_id)  # row 0: ceil(0.25 * 10) + 1 = 4
    assert out.trajectory is not None and out.trajectory.canvas.shape[1:] == (2, 8)


def test_masked_logits_decode_the_same_canvases_step_by_step_as_full_logits(params):
    batch = make_batch(rows=(40, 28, 33), index=[0, 1, 2])
    full = dec.decode(MODEL, params, batch, "pbeb(gamma=0.5)", 8, record=True)
    masked = dec.decode(MODEL, params, batch, "pbeb(gamma=0.5)", 8, record=True, masked_logits=True)
    steps = int(full.trajectory.steps)
    assert int(masked.trajectory.steps) == steps and masked.ids == full.ids
    np.testing.assert_array_equal(masked.nfe_used, full.nfe_used)
    np.testing.assert_array_equal(masked.trajectory.canvas, full.trajectory.canvas)
    np.testing.assert_array_equal(masked.trajectory.committed, full.trajectory.committed)
    # The live count fell below the canvas (15 slots) so a smaller gather (8) ran.
    start = np.full_like(full.trajectory.canvas[:1], CONFIG.mask_id)
    live = np.concatenate([start, full.trajectory.canvas])
    most_live = (live[:steps] == CONFIG.mask_id).sum(-1).max(-1)
    assert most_live.min() <= 8 < most_live.max()


@pytest.mark.slow
def test_ctc_adaptive_canvas_gives_each_row_its_ctc_length_plus_slack(params):
    batch = make_batch(rows=(40, 12, 28), index=[0, 1, 2])
    ctc_ids = dec.decode(MODEL, params, batch, "ctc_greedy").ids
    need = np.asarray(dec.ctc_canvas_lengths(jnp.asarray([len(r) for r in ctc_ids])))
    full = CONFIG.mdm_decoder.max_length - len(CONFIG.prompt_ids)  # 15
    out = dec.decode(MODEL, params, batch, "pbeb", 4, adaptive_canvas="ctc", canvas_buckets=(4, 8))
    assert out.tokens.shape == (3, full)  # padded with EOS to the fixed canvas
    for row, size in enumerate(np.minimum(need, full)):
        assert np.all(out.tokens[row, size:] == CONFIG.eos_id), (row, size, out.tokens[row])
        assert len(out.ids[row]) <= size
    no_ctc = ASRModel(tiny_model_config(ctc=False))
    with pytest.raises(ValueError, match="CTC head"):
        dec.decode(no_ctc, params, batch, "pbeb", 4, adaptive_canvas="ctc")
    with pytest.raises(ValueError, match="'seconds'"):
        dec.decode(MODEL, params, batch, "pbeb", 4, adaptive_canvas="frames")


def test_bad_decode_requests_name_the_fix(params):
    with pytest.raises(ValueError, match="canvas_length=64"):
        dec.decode(MODEL, params, BATCH, "pbeb", 4, canvas_length=64)
    with pytest.raises(ValueError, match="nfe"):
        dec.decode(MODEL, params, BATCH, "pbeb", None)
    with pytest.raises(ValueError, match="unknown sampler"):
        dec.decode(MODEL, params, BATCH, "beam", 4)
    no_ctc = ASRModel(tiny_model_config(ctc=False))
    with pytest.raises(ValueError, match="ctc"):
        dec.decode(no_ctc, params, BATCH, "ctc_greedy")


@pytest.mark.slow
def test_every_sampler_recovers_the_transcripts_a_tiny_model_was_trained_on():
    """Train the tiny model (MDM + AR + CTC losses) for 600 steps to memorise 4 synthetic
    utterances whose features spell the tokens out, then decode them with every spec.
    ~2 CPU minutes (mostly compiling the train step)."""
    import optax

    from mdm_asr_jax.train.objective import ObjectiveConfig, compute_loss

    rng = np.random.default_rng(0)
    lengths = np.array([4, 2, 3, 1], np.int32)
    tokens = np.zeros((4, 6), np.int32)
    features = 0.1 * rng.standard_normal((4, 40, 80)).astype(np.float32)
    for b, n in enumerate(lengths):
        for i in range(n):
            token = int(rng.integers(4, CONFIG.mask_id))
            while i and token == tokens[b, i - 1]:  # no repeats: CTC can spell them anyway
                token = int(rng.integers(4, CONFIG.mask_id))
            tokens[b, i] = token
            features[b, 8 * i : 8 * i + 8, 4 * token : 4 * token + 4] += 3.0  # 8 frames a token
    batch = dict(
        make_batch(rows=(40,) * 4),
        features=features,
        tokens=tokens,
        token_lengths=lengths,
    )
    objective = ObjectiveConfig(ar_weight=1.0, ctc_weight=1.0, canvas_length=14, spec_augment=False)
    optimizer = optax.adam(3e-3)
    trained = flax.linen.meta.unbox(init_params(MODEL, jax.random.key(0)))["params"]
    opt_state = optimizer.init(trained)

    @jax.jit
    def train_step(params, opt_state, key, batch):
        loss_fn = lambda p: compute_loss(MODEL, p, batch, key, objective)
        grads = jax.grad(lambda p: loss_fn(p)[0])(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for i in range(600):
        trained, opt_state = train_step(trained, opt_state, jax.random.key(i), batch)
    truth = [tokens[b, :n].tolist() for b, n in enumerate(lengths)]
    # The paper's sampler and the baselines must recover every transcript; the other MDM rules
    # (more tokens in parallel, or sampled tokens for dfm) from a barely trained model may slip
    # on a few of the 10 tokens.
    exact = ("pbeb", "ar_greedy", "ar_beam(size=2)", "ctc_greedy")
    close = ("eb", "eb(proxy=margin)", "topk(schedule=cosine)", "dfm", "random(mode=bernoulli)")
    for spec in exact + close:
        out = dec.decode(MODEL, trained, batch, spec, 4, jax.random.key(0))
        errors = sum(_edit_distance(h, r) for h, r in zip(out.ids, truth, strict=True))
        assert errors <= (0 if spec in exact else 3), (spec, out.ids, truth)
        assert np.all(out.nfe_used <= (4 if spec in close or spec == "pbeb" else 15)), spec


def _edit_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


# ---------------------------------------------------------------------------------------------
# A selection rule registered from outside the samplers module: one function + one row.


def _leftmost(config, x):
    """Toy rule: commit the `k` leftmost live positions of each row."""
    rank = jnp.cumsum(x.live, axis=-1) - 1  # [B,L] rank among the row's live positions
    return x.live & (rank < config.k)


@pytest.fixture
def leftmost_rule():
    from mdm_asr_jax.diffusion import samplers

    samplers.register_sampler(samplers.SamplerRule("leftmost", "mdm", {"k": 2}, _leftmost))
    yield
    del samplers.SAMPLERS["leftmost"]


def test_a_rule_registered_outside_the_module_decodes_through_decode(params, leftmost_rule):
    out = dec.decode(MODEL, params, BATCH, "leftmost(k=3)", 4, 0, record=True)
    assert out.spec == "leftmost(k=3,temperature=0)"
    traj = out.trajectory
    steps = int(traj.steps)
    assert 1 <= steps <= 4
    length = CONFIG.mdm_decoder.max_length - len(CONFIG.prompt_ids)
    before = np.full((2, length), CONFIG.mask_id)
    for step in range(steps):
        live = before == CONFIG.mask_id
        rank = np.cumsum(live, axis=-1) - 1
        expected = live & (rank < 3) if step < 3 else live  # the last step fills every mask
        np.testing.assert_array_equal(traj.committed[step], expected)
        before = traj.canvas[step]
    assert all(len(ids) <= length for ids in out.ids)
    assert not set(np.asarray(out.tokens).ravel()) & {CONFIG.mask_id}


# --- bfloat16 decoding -------------------------------------------------------------------------


def test_with_decoding_dtype_casts_every_float_weight_and_the_compute_dtype(params):
    config, cast = dec.with_decoding_dtype(CONFIG, params, "bfloat16")
    assert config.dtype == "bfloat16" and config.param_dtype == CONFIG.param_dtype
    assert {leaf.dtype for leaf in jax.tree.leaves(cast)} == {jnp.dtype(jnp.bfloat16)}
    with pytest.raises(ValueError, match="float32"):
        dec.with_decoding_dtype(CONFIG, params, "float16")


@pytest.mark.parametrize("spec", ["pbeb", "ar_greedy"])
def test_bfloat16_decode_returns_valid_tokens_of_the_float32_shapes(params, spec):
    full = dec.decode(MODEL, params, BATCH, spec, 4, jax.random.key(0))
    half = dec.decode(MODEL, params, BATCH, spec, 4, jax.random.key(0), dtype="bfloat16")
    assert half.tokens.shape == full.tokens.shape and half.tokens.dtype == np.int32
    assert half.nfe_used.shape == (2,) and np.all(half.nfe_used >= 1)
    for row in half.ids:
        assert all(0 <= t < CONFIG.vocab_size for t in row)
        assert not FORBIDDEN & set(row) and CONFIG.eos_id not in row


def _mdm_logits(model, variables, batch):
    encoded, enc_mask = model.apply(
        variables, batch["features"], batch["feature_mask"], method=model.encode
    )
    cross_kv = model.apply(variables, encoded, method=model.mdm_cross_kv)
    length = model.config.mdm_decoder.max_length - len(model.config.prompt_ids)
    canvas = jnp.full((batch["features"].shape[0], length), model.config.mask_id, jnp.int32)
    logits = model.apply(variables, canvas, None, enc_mask, cross_kv, method=model.mdm_logits)
    return np.asarray(logits, np.float32)  # [B,L,V]


def test_bfloat16_agrees_with_float32_decisions_where_margins_are_large(params):
    # The first MDM step's decisions on a fixed random model: bfloat16 keeps ~3 significant
    # digits, so wherever the float32 top-2 margin exceeds 5 % of the logit scale the argmax
    # (the token a sampler commits) must be the same.
    config16, params16 = dec.with_decoding_dtype(CONFIG, params, "bfloat16")
    full = _mdm_logits(MODEL, {"params": params}, BATCH)
    half = _mdm_logits(ASRModel(config16), {"params": params16}, BATCH)
    allowed = np.setdiff1d(np.arange(CONFIG.vocab_size), sorted(FORBIDDEN))
    full, half = full[..., allowed], half[..., allowed]
    top2 = np.sort(full, axis=-1)[..., -2:]
    margin = top2[..., 1] - top2[..., 0]  # [B,L]
    wide = margin > 0.05 * np.abs(full).max()
    assert wide.sum() >= 8  # the property is checked on real positions
    np.testing.assert_array_equal(full.argmax(-1)[wide], half.argmax(-1)[wide])
    assert np.abs(full - half).max() < 0.05 * np.abs(full).max()  # activations stayed sane


def test_mdm_hidden_then_project_equals_mdm_logits_at_any_subset_of_positions(params):
    variables = {"params": params}
    encoded, enc_mask = MODEL.apply(
        variables, BATCH["features"], BATCH["feature_mask"], method=MODEL.encode
    )
    canvas = jnp.asarray(np.random.default_rng(0).integers(4, 19, (2, 15)), jnp.int32)
    logits = MODEL.apply(variables, canvas, encoded, enc_mask, method=MODEL.mdm_logits)
    hidden = MODEL.apply(variables, canvas, encoded, enc_mask, method=MODEL.mdm_hidden)
    picked = jnp.asarray([[0, 7, 14], [3, 4, 9]])  # [B,K] canvas positions
    gathered = jnp.take_along_axis(hidden, picked[..., None], axis=1)
    projected = MODEL.apply(variables, gathered, method=MODEL.mdm_project)
    expected = np.take_along_axis(np.asarray(logits), np.asarray(picked)[..., None], axis=1)
    np.testing.assert_allclose(np.asarray(projected), expected, rtol=1e-5, atol=1e-5)
