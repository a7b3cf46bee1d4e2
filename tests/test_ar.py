"""AR baseline (teacher forcing, greedy, beam) and CTC pieces, with fake step functions on CPU."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_asr_jax import ar, ctc

V = 6  # 0 pad, 1 BOS (prompt), 2 EOS, 3..5 text
PAD, BOS, EOS = 0, 1, 2
FORBIDDEN = (PAD, BOS)
HASH = 97  # number of distinct decoder "states" of the fake model


def make_fake_step(seed: int, sharpness: float = 2.0):
    """A fake causal decoder whose next-token logits depend on the whole history (through a
    hash kept in the cache), so a beam search that reorders the cache wrongly gives wrong
    answers. The cache also holds a scalar leaf that must pass through untouched."""
    table = jnp.asarray(sharpness * np.random.default_rng(seed).normal(size=(HASH, V)), jnp.float32)

    def step_fn(tokens, position, cache):
        state, outs = cache["state"], []
        for i in range(tokens.shape[1]):
            state = (state * 31 + tokens[:, i] + 7) % HASH
            outs.append(table[state])
        return jnp.stack(outs, axis=1), {"state": state, "position": position + tokens.shape[1]}

    def init_cache(rows):
        return {"state": jnp.zeros((rows,), jnp.int32), "position": jnp.int32(0)}

    return step_fn, init_cache, np.asarray(table, np.float64)


STEP, INIT, TABLE = make_fake_step(0)


@functools.cache
def _greedy(batch_size, max_len):
    return jax.jit(
        lambda cache: ar.ar_greedy(
            STEP,
            cache,
            prompt_ids=(BOS,),
            batch_size=batch_size,
            max_len=max_len,
            eos_id=EOS,
            forbidden_ids=FORBIDDEN,
        )
    )


@functools.cache
def _beam(batch_size, beam_size, max_len, length_penalty):
    return jax.jit(
        lambda cache: ar.ar_beam(
            STEP,
            cache,
            prompt_ids=(BOS,),
            batch_size=batch_size,
            beam_size=beam_size,
            max_len=max_len,
            eos_id=EOS,
            forbidden_ids=FORBIDDEN,
            length_penalty=length_penalty,
        )
    )


def _fake_log_probs(history):
    """Host replica of the fake: log p(next | BOS + history) with forbidden ids removed."""
    state = 0
    for token in (BOS, *history):
        state = (state * 31 + token + 7) % HASH
    logits = TABLE[state].copy()
    logits[list(FORBIDDEN)] = -np.inf
    return logits - np.logaddexp.reduce(logits)


def _per_row_cache(rows, offsets):
    """Distinct rows: start each row's hash state at a different value."""
    cache = INIT(rows)
    return dict(cache, state=jnp.asarray(offsets, jnp.int32))


# ---------------------------------------------------------------------------------------------
# Teacher forcing.


def test_ar_targets_are_the_transcript_then_eos_from_the_last_prompt_position():
    tokens = jnp.array([[5, 6, 7], [8, 0, 0]])
    decoder_input, targets, weights = ar.ar_inputs_targets(
        tokens, jnp.array([3, 1]), (BOS, 4), eos_id=EOS, pad_id=PAD
    )
    np.testing.assert_array_equal(decoder_input, [[BOS, 4, 5, 6, 7], [BOS, 4, 8, 0, 0]])
    np.testing.assert_array_equal(targets[:, 1:], [[5, 6, 7, EOS], [8, EOS, 0, 0]])
    np.testing.assert_array_equal(weights, [[0, 1, 1, 1, 1], [0, 1, 1, 0, 0]])


def test_ar_loss_is_float32_cross_entropy_summed_over_weighted_targets():
    logits = jax.random.normal(jax.random.key(0), (2, 3, V), jnp.bfloat16)
    targets = jnp.array([[3, 4, 2], [5, 2, 0]])
    weights = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    terms = ar.ar_loss(logits, targets, weights)
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
    expect = -sum(
        float(log_p[b, t, targets[b, t]]) for b in range(2) for t in range(3) if weights[b, t]
    )
    assert terms["loss_sum"].dtype == jnp.float32
    assert float(terms["loss_sum"]) == pytest.approx(expect, rel=1e-6)
    assert float(terms["weight"]) == 5.0


# ---------------------------------------------------------------------------------------------
# Greedy and beam search.


def test_greedy_follows_the_argmax_and_stops_when_every_row_has_ended():
    out = _greedy(3, 8)(INIT(3))
    for row in range(3):
        history = []
        while len(history) < 8:
            token = int(np.argmax(_fake_log_probs(history)))
            history.append(token)
            if token == EOS:
                break
        expect = history + [EOS] * (8 - len(history))
        np.testing.assert_array_equal(np.asarray(out.tokens[row]), expect)
    lengths = np.asarray(out.lengths)
    assert int(out.steps) == min(8, int(lengths.max()) + 1)
    assert not np.isin(np.asarray(out.tokens), FORBIDDEN).any()


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_size_one_equals_greedy(length_penalty):
    step, init, _ = make_fake_step(3, sharpness=6.0)  # peaked: normalisation cannot flip it
    cache = dict(init(4), state=jnp.arange(4, dtype=jnp.int32) * 11)
    greedy = jax.jit(
        ar.ar_greedy,
        static_argnums=0,
        static_argnames=("prompt_ids", "batch_size", "max_len", "eos_id", "forbidden_ids"),
    )(step, cache, prompt_ids=(BOS,), batch_size=4, max_len=6, eos_id=EOS, forbidden_ids=FORBIDDEN)
    beam = jax.jit(
        ar.ar_beam,
        static_argnums=0,
        static_argnames=(
            "prompt_ids",
            "batch_size",
            "beam_size",
            "max_len",
            "eos_id",
            "forbidden_ids",
            "length_penalty",
        ),
    )(
        step,
        cache,
        prompt_ids=(BOS,),
        batch_size=4,
        beam_size=1,
        max_len=6,
        eos_id=EOS,
        forbidden_ids=FORBIDDEN,
        length_penalty=length_penalty,
    )
    np.testing.assert_array_equal(np.asarray(beam.tokens), np.asarray(greedy.tokens))
    np.testing.assert_array_equal(np.asarray(beam.lengths), np.asarray(greedy.lengths))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_finds_the_exhaustive_best_and_reorders_the_cache(length_penalty):
    max_len, text = 4, (EOS, 3, 4, 5)
    best_score, best = -np.inf, None
    for n in range(1, max_len + 1):
        for seq in itertools.product(text, repeat=n):
            if EOS in seq[:-1]:
                continue
            if seq[-1] != EOS and n < max_len:
                continue
            lp = sum(_fake_log_probs(list(seq[:i]))[seq[i]] for i in range(n))
            score = lp / n**length_penalty
            if score > best_score:
                best_score, best = score, list(seq)
    beam_size = 27  # keeps every prefix alive: exact search
    out = _beam(1, beam_size, max_len, length_penalty)(INIT(beam_size))
    got = np.asarray(out.tokens[0]).tolist()
    expect = (best + [EOS] * max_len)[:max_len]
    assert got == expect
    assert float(out.scores[0]) == pytest.approx(best_score, rel=1e-4)


def test_beam_rows_are_independent_and_never_emit_forbidden_ids():
    k, offsets = 3, [0, 5, 9]
    cache = _per_row_cache(2 * k, [offsets[0]] * k + [offsets[1]] * k)
    both = _beam(2, k, 6, 1.0)(cache)
    alone = _beam(1, k, 6, 1.0)(_per_row_cache(k, [offsets[1]] * k))
    np.testing.assert_array_equal(np.asarray(both.tokens[1]), np.asarray(alone.tokens[0]))
    assert not np.isin(np.asarray(both.tokens), FORBIDDEN).any()


def test_bad_decoding_arguments_are_rejected():
    with pytest.raises(ValueError, match="prompt"):
        ar.ar_greedy(STEP, INIT(1), prompt_ids=(), batch_size=1, max_len=4, eos_id=EOS)
    with pytest.raises(ValueError, match="eos_id"):
        ar.ar_beam(
            STEP,
            INIT(1),
            prompt_ids=(BOS,),
            batch_size=1,
            beam_size=1,
            max_len=4,
            eos_id=EOS,
            forbidden_ids=(EOS,),
        )


# ---------------------------------------------------------------------------------------------
# CTC.


def _frames(ids, vocab=V):
    return jax.nn.one_hot(jnp.asarray(ids), vocab) * 10.0


def test_ctc_greedy_collapses_repeats_and_drops_blanks():
    frames = [
        [3, 3, 0, 3, 4, 4, 0, 0, 5, 5],  # a a _ a b b _ _ c c -> a a b c
        [0, 0, 4, 0, 0, 0, 4, 4, 3, 3],  # masked after 6 frames: only "b b"
    ]
    mask = jnp.arange(10)[None] < jnp.array([[10], [7]])
    assert ctc.ctc_greedy(_frames(frames), mask) == [[3, 3, 4, 5], [4, 4]]
    tokens, lengths = ctc.ctc_greedy_tokens(_frames(frames), mask)
    np.testing.assert_array_equal(lengths, [4, 2])
    np.testing.assert_array_equal(tokens[1], [4, 4] + [0] * 8)


def test_ctc_greedy_never_emits_a_forbidden_id():
    logits = _frames([[5, 5, 1, 4]]).at[0, 2, 3].set(5.0)  # frame 2: [MASK]-like id 1, then 3
    assert ctc.ctc_greedy(logits, jnp.ones((1, 4), bool), forbidden_ids=(1,)) == [[5, 3, 4]]


def test_ctc_loss_sums_per_utterance_losses_and_counts_label_tokens():
    labels = jnp.array([[3, 4, 0], [5, 0, 0]])
    label_mask = labels > 0
    good = _frames([[3, 0, 4, 0, 0, 0], [5, 5, 0, 0, 0, 0]])
    bad = _frames([[5, 5, 5, 5, 5, 5], [3, 3, 3, 3, 3, 3]])
    mask = jnp.ones((2, 6), bool)
    loss = jax.jit(ctc.ctc_loss)
    good_sum, weight = loss(good, mask, labels, label_mask)
    bad_sum, _ = loss(bad, mask, labels, label_mask)
    assert float(weight) == 3.0
    assert 0 <= float(good_sum) < 0.1 < float(bad_sum)


def test_begin_forbidden_ids_block_only_the_first_generated_token():
    first = int(np.argmax(_fake_log_probs([])))
    blocked = jax.jit(
        lambda cache: ar.ar_greedy(
            STEP,
            cache,
            prompt_ids=(BOS,),
            batch_size=1,
            max_len=6,
            eos_id=EOS,
            forbidden_ids=FORBIDDEN,
            begin_forbidden_ids=(first,),
        )
    )(INIT(1))
    tokens = [int(t) for t in np.asarray(blocked.tokens[0])]
    # The first token is the best one *except* the blocked id; the rest follow the plain argmax.
    scores = _fake_log_probs([]).copy()
    scores[first] = -np.inf
    assert tokens[0] == int(np.argmax(scores)) != first
    history = [tokens[0]]
    while len(history) < 6 and history[-1] != EOS:
        history.append(int(np.argmax(_fake_log_probs(history))))
    assert tokens[: len(history)] == history


def test_ctc_loss_leaves_out_utterances_too_short_to_align():
    """Three labels with a repeat need four frames: with three the utterance has no alignment
    (optax gives it ~1e5) and is left out of the loss and the token count; with four it counts."""
    labels = jnp.array([[3, 3, 4], [5, 6, 0]])
    label_mask = labels > 0
    logits = _frames([[3, 0, 3, 4], [5, 6, 0, 0]])
    short = jnp.array([[True, True, True, False], [True, True, True, True]])
    total, weight = ctc.ctc_loss(logits, short, labels, label_mask)
    assert float(weight) == 2.0 and float(total) < 0.1
    total, weight = ctc.ctc_loss(logits, jnp.ones((2, 4), bool), labels, label_mask)
    assert float(weight) == 5.0 and float(total) < 0.1
