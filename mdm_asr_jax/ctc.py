"""CTC baseline head: loss (optax) and greedy decoding. Blank = pad id (never a transcript token).

Legend: B batch, S encoder frames, L labels, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


def ctc_loss(
    logits: Array, logit_mask: Array, labels: Array, label_mask: Array, blank_id: int = 0
) -> tuple[Array, Array]:
    """(sum of per-utterance CTC losses, number of label tokens) over the utterances CTC can
    align. logits [B,S,V] float32-cast.

    An alignment needs a frame per label plus one blank between repeated labels; an utterance
    with fewer encoder frames (fast speech, long transcript, heavy subsampling) has no path and
    a loss of ~1e5 that would swamp the batch: it is left out of both sums (its decoders still
    learn from it).
    """
    per_seq = optax.ctc_loss(
        jnp.asarray(logits, jnp.float32),
        1.0 - logit_mask.astype(jnp.float32),
        labels,
        1.0 - label_mask.astype(jnp.float32),
        blank_id=blank_id,
    )
    label_mask = jnp.asarray(label_mask, bool)
    repeats = jnp.sum(label_mask[:, 1:] & (labels[:, 1:] == labels[:, :-1]), axis=1)
    needed = jnp.sum(label_mask, axis=1) + repeats
    frames = jnp.sum(jnp.asarray(logit_mask, bool), axis=1)
    alignable = jnp.any(label_mask, axis=1) & (frames >= needed)
    counted = jnp.sum(jnp.where(alignable, jnp.sum(label_mask, axis=1), 0)).astype(jnp.float32)
    return jnp.sum(jnp.where(alignable, per_seq, 0.0)), counted


def ctc_greedy_tokens(
    logits: Array, mask: Array, blank_id: int = 0, forbidden_ids: Sequence[int] = ()
) -> tuple[Array, Array]:
    """Best path, jittable: (tokens [B,S] int32 left-packed, padded with blank; lengths [B]).

    argmax per valid frame (forbidden ids such as [MASK] excluded), collapse repeats, drop
    blanks. A repeat separated by a blank (a, blank, a) stays two tokens. mask [B,S] marks
    valid frames (a prefix of each row); masked frames emit nothing.
    """
    logits = jnp.asarray(logits, jnp.float32)
    forbidden = sorted(set(int(i) for i in forbidden_ids) - {blank_id})
    if forbidden:
        logits = logits.at[..., jnp.asarray(forbidden, jnp.int32)].set(-1e9)
    best = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B,S]
    mask = jnp.asarray(mask, bool)

    previous = jnp.pad(best, ((0, 0), (1, 0)), constant_values=-1)[:, :-1]  # [B,S]
    keep = mask & (best != blank_id) & (best != previous)
    lengths = jnp.sum(keep, axis=-1).astype(jnp.int32)
    # Left-pack the kept tokens: kept frame j goes to slot (number kept before j).
    slot = jnp.where(keep, jnp.cumsum(keep, axis=-1) - 1, best.shape[1])  # dropped -> out of range
    rows = jnp.arange(best.shape[0])[:, None]
    tokens = jnp.full(best.shape, blank_id, jnp.int32).at[rows, slot].set(best, mode="drop")
    return tokens, lengths


def ctc_greedy(
    logits: Array, mask: Array, blank_id: int = 0, forbidden_ids: Sequence[int] = ()
) -> list[list[int]]:
    """Best path decoding (see `ctc_greedy_tokens`) as per-row id lists."""
    tokens, lengths = ctc_greedy_tokens(logits, mask, blank_id, forbidden_ids)
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    return [[int(t) for t in row[:n]] for row, n in zip(tokens, lengths, strict=True)]


def ctc_forced_align(
    log_probs: np.ndarray, tokens: Sequence[int], blank_id: int = 0
) -> np.ndarray | None:
    """Viterbi alignment of a given token sequence on CTC log-probabilities (host numpy).

    log_probs [S, V] (valid frames only; log-softmax over V), tokens [U] (no blanks). Returns the
    frame span of every token as int [U, 2] (first frame, last frame; inclusive), or None when no
    alignment exists (fewer frames than tokens plus the blanks repeated tokens need). The most
    likely path is taken among those that emit exactly `tokens` in order, with the usual CTC
    topology (blank between any two tokens optional, required between equal neighbours).
    """
    tokens = [int(t) for t in tokens]
    frames, count = log_probs.shape[0], len(tokens)
    if count == 0:
        return np.zeros((0, 2), np.int64)
    repeats = sum(1 for a, b in zip(tokens, tokens[1:], strict=False) if a == b)
    if frames < count + repeats:
        return None
    states = np.full(2 * count + 1, blank_id, np.int64)
    states[1::2] = tokens  # [2U+1]: blank, t0, blank, t1, ..., blank
    skip = np.zeros(2 * count + 1, bool)  # state s may be entered from s - 2
    skip[3::2] = np.asarray(tokens[1:]) != np.asarray(tokens[:-1])
    emit = np.asarray(log_probs, np.float64)[:, states]  # [S, 2U+1]
    neg = -np.inf
    score = np.full(2 * count + 1, neg)
    score[:2] = emit[0, :2]
    back = np.zeros((frames, 2 * count + 1), np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    for t in range(1, frames):
        from1 = np.concatenate([[neg], score[:-1]])
        from2 = np.where(skip, np.concatenate([[neg, neg], score[:-2]]), neg)
        stacked = np.stack([score, from1, from2])  # [3, 2U+1]
        choice = np.argmax(stacked, axis=0)
        back[t] = choice
        score = stacked[choice, np.arange(stacked.shape[1])] + emit[t]
    last = 2 * count if score[2 * count] >= score[2 * count - 1] else 2 * count - 1
    if not np.isfinite(score[last]):
        return None
    spans = np.full((count, 2), -1, np.int64)
    state = last
    for t in range(frames - 1, -1, -1):
        if state % 2 == 1:
            k = state // 2
            spans[k, 1] = t if spans[k, 1] < 0 else spans[k, 1]
            spans[k, 0] = t
        state -= int(back[t, state])
    return spans
