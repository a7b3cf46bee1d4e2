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
