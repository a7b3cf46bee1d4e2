"""Autoregressive baseline: teacher-forced loss, greedy and beam decoding with a KV cache.

Training: decoder input = prompt + transcript; targets = transcript + EOS, aligned so the last
prompt position predicts the first transcript token.

Decoding is written against a pure step function, so it runs with the model or with a fake:
  step_fn(tokens [B,N] int32, position [] int32, cache) -> (logits [B,N,V], cache)
feeds N tokens starting at absolute decoder position `position` and returns their logits and
the updated explicit KV cache (every array leaf of the cache has the batch on its leading axis,
which is how beam search reorders it). `decode.py` builds it from `ASRModel.ar_step` with the
encoder output and every layer's cross-attention K/V computed once.
  ar_greedy: prefill the prompt in one call, then one token a step (argmax), until every row has
    emitted EOS (early exit) or max_len tokens.
  ar_beam: K beams a row; each step expands the K alive beams by every token, keeps the 2K best,
    moves those ending in EOS to the finished set (score = log p / length ** length_penalty,
    length counting EOS), keeps the K best others alive, and reorders the cache. A row is done
    when its best finished score beats the best score an alive beam can still reach
    (log p only falls, so that bound is alive log p / max_len ** length_penalty).
Forbidden ids ([MASK], pad, prompt/special tokens) get a huge negative logit. Log-probabilities
are float32. Outputs are [B, max_len] tokens padded with EOS after the end (`tokens_to_ids` in
`diffusion.samplers` cuts them) plus per-row lengths.

Legend: B batch, K beams, P prompt length, L / N transcript length, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mdm_asr_jax.diffusion.samplers import NEG_LOGIT

Array = jax.Array
StepFn = Callable[[Array, Array, Any], tuple[Array, Any]]


def prompt_length(prompt_ids: Sequence[int] | Array) -> int:
    """P of a prompt given as ids [P] (one for every row) or per row [B, P]."""
    return int(np.shape(prompt_ids)[-1]) if np.ndim(prompt_ids) == 2 else len(prompt_ids)


def prompt_rows(prompt_ids: Sequence[int] | Array, rows: int, repeat: int = 1) -> Array:
    """The prompt as [rows, P] int32: ids [P] broadcast, or per-row [B, P] with each row repeated
    `repeat` times (rows = B * repeat; beam k of example b is row b * repeat + k)."""
    if np.ndim(prompt_ids) == 2:
        prompt = jnp.asarray(prompt_ids, jnp.int32)
        if prompt.shape[0] * repeat != rows:
            raise ValueError(
                f"per-row prompt has {prompt.shape[0]} rows; expected {rows // max(repeat, 1)}"
            )
        return jnp.repeat(prompt, repeat, axis=0) if repeat > 1 else prompt
    ids = jnp.asarray(tuple(prompt_ids), jnp.int32)
    return jnp.broadcast_to(ids[None], (rows, ids.shape[0]))


def ar_inputs_targets(
    tokens: Array,
    token_lengths: Array,
    prompt_ids: Sequence[int] | Array,
    eos_id: int,
    pad_id: int,
) -> tuple[Array, Array, Array]:
    """(decoder_input [B, P+L], targets [B, P+L], weights [B, P+L]) for teacher forcing.

    tokens [B, L] (padded beyond token_lengths). Position P-1+i predicts transcript token i;
    position P-1+len predicts EOS; everything else has weight 0. With an empty prompt the first
    transcript token cannot be predicted, so a prompt of at least one token (BOS) is required.
    `prompt_ids`: ids [P] for every row, or [B, P] per row (e.g. per-utterance language tokens).
    """
    if prompt_length(prompt_ids) == 0:
        raise ValueError(
            "AR decoding needs a prompt of at least one token (e.g. BOS): set prompt_ids"
        )
    batch, length = tokens.shape
    prompt_len = prompt_length(prompt_ids)
    position = jnp.arange(length)[None, :]
    lengths = token_lengths[:, None]
    body = jnp.where(position < lengths, tokens, pad_id).astype(jnp.int32)
    prompt = prompt_rows(prompt_ids, batch)
    decoder_input = jnp.concatenate([prompt, body], axis=1)  # [B, P+L]
    # Targets: shift left by one: input position j predicts input token j+1; the token after the
    # transcript is EOS.
    with_eos = jnp.concatenate([body, jnp.full((batch, 1), pad_id, jnp.int32)], axis=1)
    with_eos = jnp.where(jnp.arange(length + 1)[None] == lengths, eos_id, with_eos)
    targets = jnp.concatenate(
        [jnp.full((batch, prompt_len - 1), pad_id, jnp.int32), with_eos], axis=1
    )
    target_pos = jnp.arange(prompt_len + length)[None] - (prompt_len - 1)
    weights = ((target_pos >= 0) & (target_pos <= lengths)).astype(jnp.float32)
    return decoder_input, targets, weights


def ar_loss(logits: Array, targets: Array, weights: Array) -> dict[str, Array]:
    """Summed float32 cross-entropy: {"loss_sum", "weight", "correct"}."""
    log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    ce = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    hits = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(ce * weights),
        "weight": jnp.sum(weights),
        "correct": jnp.sum(hits * weights),
    }


# ---------------------------------------------------------------------------------------------
# Decoding.


class ARDecodeOutput(NamedTuple):
    tokens: Array  # [B,N] int32, EOS from the end of each hypothesis on
    lengths: Array  # [B] int32 tokens before EOS
    scores: Array  # [B] float32: greedy: sum log p (EOS included); beam: the normalised score
    steps: Array  # [] int32 decoder calls after the prompt prefill


def _masked_log_probs(logits: Array, forbidden: Sequence[int]) -> Array:
    logits = jnp.asarray(logits, jnp.float32)
    if forbidden:
        logits = logits.at[..., jnp.asarray(forbidden, jnp.int32)].set(NEG_LOGIT)
    return jax.nn.log_softmax(logits, axis=-1)


def _check(
    prompt_ids: Sequence[int] | Array, max_len: int, eos_id: int, forbidden: Sequence[int]
) -> None:
    if prompt_length(prompt_ids) == 0:
        raise ValueError(
            "AR decoding needs a prompt of at least one token (e.g. BOS): set prompt_ids"
        )
    if max_len < 1:
        raise ValueError(f"max_len={max_len} must be >= 1")
    if eos_id in forbidden:
        raise ValueError(f"forbidden_ids contains eos_id={eos_id}; EOS must stay emittable")


def _first_eos_lengths(tokens: Array, eos_id: int) -> Array:
    is_eos = tokens == eos_id
    return jnp.where(jnp.any(is_eos, -1), jnp.argmax(is_eos, -1), tokens.shape[-1]).astype(
        jnp.int32
    )


def ar_greedy(
    step_fn: StepFn,
    cache: Any,
    *,
    prompt_ids: Sequence[int] | Array,
    batch_size: int,
    max_len: int,
    eos_id: int,
    forbidden_ids: Sequence[int] = (),
    begin_forbidden_ids: Sequence[int] = (),
) -> ARDecodeOutput:
    """Greedy AR decoding with a KV cache; stops when every row has emitted EOS.

    `cache` must hold batch_size rows and at least P + max_len positions; `prompt_ids`: ids [P]
    for every row or [batch_size, P] per row.
    `begin_forbidden_ids` are blocked at the first generated position only (Whisper's
    begin-suppression of " " and end-of-text).
    """
    forbidden = sorted(set(int(i) for i in forbidden_ids))
    _check(prompt_ids, max_len, eos_id, forbidden)
    prompt_len = prompt_length(prompt_ids)
    prompt = prompt_rows(prompt_ids, batch_size)
    logits, cache = step_fn(prompt, jnp.int32(0), cache)  # [B,P,V]
    begin = sorted(set(forbidden) | {int(i) for i in begin_forbidden_ids})
    log_probs = _masked_log_probs(logits[:, -1], begin)  # [B,V]

    class State(NamedTuple):
        t: Array
        tokens: Array  # [B,N]
        done: Array  # [B]
        score: Array  # [B]
        log_probs: Array  # [B,V] for position t
        cache: Any

    def cond(state: State) -> Array:
        return (state.t < max_len) & ~jnp.all(state.done)

    def body(state: State) -> State:
        token = jnp.argmax(state.log_probs, axis=-1).astype(jnp.int32)  # [B]
        chosen = jnp.take_along_axis(state.log_probs, token[:, None], axis=-1)[:, 0]
        token = jnp.where(state.done, eos_id, token)
        score = state.score + jnp.where(state.done, 0.0, chosen)
        tokens = state.tokens.at[:, state.t].set(token)
        done = state.done | (token == eos_id)
        logits, cache = step_fn(token[:, None], prompt_len + state.t, state.cache)
        return State(
            state.t + 1, tokens, done, score, _masked_log_probs(logits[:, -1], forbidden), cache
        )

    init = State(
        jnp.int32(0),
        jnp.full((batch_size, max_len), eos_id, jnp.int32),
        jnp.zeros((batch_size,), bool),
        jnp.zeros((batch_size,), jnp.float32),
        log_probs,
        cache,
    )
    final = lax.while_loop(cond, body, init)
    return ARDecodeOutput(
        final.tokens, _first_eos_lengths(final.tokens, eos_id), final.score, final.t
    )


def reorder_cache(cache: Any, rows: Array) -> Any:
    """Gathers rows [R] of every cache leaf whose leading axis is the batch (scalars untouched)."""
    count = rows.shape[0]

    def take(x: Any) -> Any:
        if hasattr(x, "ndim") and x.ndim >= 1 and x.shape[0] == count:
            return jnp.take(x, rows, axis=0)
        return x

    return jax.tree.map(take, cache)


def ar_beam(
    step_fn: StepFn,
    cache: Any,
    *,
    prompt_ids: Sequence[int] | Array,
    batch_size: int,
    beam_size: int,
    max_len: int,
    eos_id: int,
    forbidden_ids: Sequence[int] = (),
    length_penalty: float = 1.0,
    begin_forbidden_ids: Sequence[int] = (),
) -> ARDecodeOutput:
    """Length-normalised beam search with a KV cache; returns each row's best hypothesis.

    `cache` (and whatever `step_fn` closes over, e.g. the encoder output) must hold
    batch_size * beam_size rows, row b * beam_size + k being beam k of example b, and at least
    len(prompt_ids) + max_len positions. Score = sum log p / length ** length_penalty, with
    length counting EOS; length_penalty = 0 ranks by plain log-probability.
    """
    forbidden = sorted(set(int(i) for i in forbidden_ids))
    _check(prompt_ids, max_len, eos_id, forbidden)
    if beam_size < 1:
        raise ValueError(f"beam_size={beam_size} must be >= 1")
    b, k = batch_size, beam_size
    prompt_len = prompt_length(prompt_ids)
    prompt = prompt_rows(prompt_ids, b * k, repeat=k)
    logits, cache = step_fn(prompt, jnp.int32(0), cache)  # [BK,P,V]
    vocab = logits.shape[-1]
    begin = sorted(set(forbidden) | {int(i) for i in begin_forbidden_ids})
    log_probs = _masked_log_probs(logits[:, -1], begin).reshape(b, k, vocab)
    neg_inf = jnp.float32(-jnp.inf)
    bound_divisor = jnp.float32(max_len) ** length_penalty

    class State(NamedTuple):
        t: Array
        alive_seqs: Array  # [B,K,N]
        alive_lp: Array  # [B,K] sorted descending
        finished_seqs: Array  # [B,K,N]
        finished_scores: Array  # [B,K] sorted descending
        log_probs: Array  # [B,K,V] next-token log p of each alive beam
        cache: Any

    def cond(state: State) -> Array:
        best_alive_bound = state.alive_lp[:, 0] / bound_divisor
        row_done = state.finished_scores[:, 0] >= best_alive_bound
        return (state.t < max_len) & ~jnp.all(row_done)

    def body(state: State) -> State:
        candidates = (state.alive_lp[..., None] + state.log_probs).reshape(b, k * vocab)
        top_lp, top_index = lax.top_k(candidates, 2 * k)  # [B,2K]
        parent = top_index // vocab
        token = (top_index % vocab).astype(jnp.int32)
        seqs = jnp.take_along_axis(state.alive_seqs, parent[..., None], axis=1)  # [B,2K,N]
        seqs = seqs.at[:, :, state.t].set(token)
        is_eos = token == eos_id
        # Finished: merge new EOS hypotheses with the old finished set, keep the K best.
        length = (state.t + 1).astype(jnp.float32)
        new_scores = jnp.where(is_eos, top_lp / length**length_penalty, neg_inf)
        all_scores = jnp.concatenate([state.finished_scores, new_scores], axis=1)  # [B,3K]
        all_seqs = jnp.concatenate([state.finished_seqs, seqs], axis=1)
        finished_scores, pick = lax.top_k(all_scores, k)
        finished_seqs = jnp.take_along_axis(all_seqs, pick[..., None], axis=1)
        # Alive: the K best that did not end in EOS.
        alive_lp, pick = lax.top_k(jnp.where(is_eos, neg_inf, top_lp), k)
        alive_seqs = jnp.take_along_axis(seqs, pick[..., None], axis=1)
        alive_token = jnp.take_along_axis(token, pick, axis=1)  # [B,K]
        rows = (jnp.arange(b)[:, None] * k + jnp.take_along_axis(parent, pick, axis=1)).reshape(-1)
        cache = reorder_cache(state.cache, rows)
        logits, cache = step_fn(alive_token.reshape(b * k, 1), prompt_len + state.t, cache)
        log_probs = _masked_log_probs(logits[:, -1], forbidden).reshape(b, k, vocab)
        return State(
            state.t + 1, alive_seqs, alive_lp, finished_seqs, finished_scores, log_probs, cache
        )

    empty = jnp.full((b, k, max_len), eos_id, jnp.int32)
    init = State(
        jnp.int32(0),
        empty,
        jnp.zeros((b, k), jnp.float32).at[:, 1:].set(neg_inf),  # one live beam to start
        empty,
        jnp.full((b, k), neg_inf),
        log_probs,
        cache,
    )
    final = lax.while_loop(cond, body, init)
    # A row with no finished hypothesis (max_len reached) falls back to its best alive beam.
    alive_score = final.alive_lp[:, 0] / bound_divisor
    use_alive = alive_score > final.finished_scores[:, 0]
    tokens = jnp.where(use_alive[:, None], final.alive_seqs[:, 0], final.finished_seqs[:, 0])
    scores = jnp.where(use_alive, alive_score, final.finished_scores[:, 0])
    return ARDecodeOutput(tokens, _first_eos_lengths(tokens, eos_id), scores, final.t)
