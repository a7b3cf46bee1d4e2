"""Autoregressive baseline: teacher-forced loss (decoding: greedy and beam, added below).

Decoder input = prompt + transcript; targets = transcript + EOS, aligned so the last prompt
position predicts the first transcript token.

Legend: B batch, P prompt length, L transcript length, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


def ar_inputs_targets(
    tokens: Array, token_lengths: Array, prompt_ids: Sequence[int], eos_id: int, pad_id: int
) -> tuple[Array, Array, Array]:
    """(decoder_input [B, P+L], targets [B, P+L], weights [B, P+L]) for teacher forcing.

    tokens [B, L] (padded beyond token_lengths). Position P-1+i predicts transcript token i;
    position P-1+len predicts EOS; everything else has weight 0. With an empty prompt the first
    transcript token cannot be predicted, so a prompt of at least one token (BOS) is required.
    """
    if len(prompt_ids) == 0:
        raise ValueError(
            "AR decoding needs a prompt of at least one token (e.g. BOS): set prompt_ids"
        )
    batch, length = tokens.shape
    prompt_len = len(prompt_ids)
    position = jnp.arange(length)[None, :]
    lengths = token_lengths[:, None]
    body = jnp.where(position < lengths, tokens, pad_id).astype(jnp.int32)
    prompt = jnp.broadcast_to(jnp.asarray(prompt_ids, jnp.int32)[None], (batch, prompt_len))
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
