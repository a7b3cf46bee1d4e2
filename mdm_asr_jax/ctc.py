"""CTC baseline head: loss (optax) and greedy decoding. Blank = pad id (never a transcript token).

Legend: B batch, S encoder frames, L labels, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


def ctc_loss(
    logits: Array, logit_mask: Array, labels: Array, label_mask: Array, blank_id: int = 0
) -> tuple[Array, Array]:
    """(sum of per-utterance CTC losses, number of label tokens). logits [B,S,V] float32-cast."""
    per_seq = optax.ctc_loss(
        jnp.asarray(logits, jnp.float32),
        1.0 - logit_mask.astype(jnp.float32),
        labels,
        1.0 - label_mask.astype(jnp.float32),
        blank_id=blank_id,
    )
    has_labels = jnp.any(label_mask, axis=1) & jnp.any(logit_mask, axis=1)
    return jnp.sum(jnp.where(has_labels, per_seq, 0.0)), jnp.sum(label_mask.astype(jnp.float32))


def ctc_greedy(logits: Array, mask: Array, blank_id: int = 0) -> list[list[int]]:
    """Best path: argmax per frame, collapse repeats, drop blanks. Returns id lists per row."""
    best = np.asarray(jnp.argmax(logits, axis=-1))
    valid = np.asarray(mask)
    out = []
    for row, keep in zip(best, valid, strict=True):
        ids, previous = [], None
        for token in row[keep]:
            if token != previous and token != blank_id:
                ids.append(int(token))
            previous = token
        out.append(ids)
    return out
