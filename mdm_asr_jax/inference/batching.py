"""Batching for inference: host features padded into a few frame buckets.

Whisper encoders take 5 / 10 / 20 / 30 s windows; other encoders a ladder of frame counts
growing by sqrt(2), so a corpus compiles a handful of shapes and padding wastes at most ~30 %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mdm_asr_jax.nn.config import ModelConfig
from mdm_asr_jax.nn.encoders import encoder_kind

Batch = dict[str, np.ndarray]
UNBOUNDED_MAX_FRAMES = 6000  # 60 s: the longest eval utterance for encoders without a limit


def frame_bucket(num_frames: int, model_config: ModelConfig) -> int:
    """Padded frame count for a batch whose longest utterance has `num_frames` frames.

    The encoder kind's own buckets when it has them (Whisper: 5 / 10 / 20 / 30 s windows). Others:
    a ladder growing by sqrt(2) from 1 s (100, 144, 208, 288, 400, ... frames, multiples of 16),
    so padding wastes at most ~30 % and a corpus compiles a handful of shapes.
    """
    own = encoder_kind(model_config.encoder).frame_bucket
    if own is not None:
        return own(num_frames)
    bucket = 100.0
    while True:
        frames = int(math.ceil(bucket / 16.0)) * 16
        if frames >= num_frames:
            return frames
        bucket *= math.sqrt(2.0)


def max_frames(model_config: ModelConfig) -> int | None:
    """Longest input (log-mel frames) the encoder accepts, or None when unbounded."""
    return encoder_kind(model_config.encoder).max_frames(model_config.encoder)


def pad_features(
    features: Sequence[np.ndarray], batch_size: int, num_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stack [T_i, M] features into features [B, T, M] float32 and feature_mask [B, T] bool.

    Rows past len(features) are all padding (mask False); frames past T_i are 0.
    """
    if not features:
        raise ValueError("pad_features needs at least one utterance")
    num_mels = features[0].shape[1]
    out = np.zeros((batch_size, num_frames, num_mels), np.float32)
    mask = np.zeros((batch_size, num_frames), bool)
    for row, feats in enumerate(features):
        length = min(feats.shape[0], num_frames)
        out[row, :length] = feats[:length]
        mask[row, :length] = True
    return out, mask


def make_batch(
    items: Sequence[tuple[int, np.ndarray, float, list[int]]],
    batch_size: int,
    model_config: ModelConfig,
    pad_id: int,
    num_frames: int | None = None,
) -> Batch:
    """A batch dict in the data-pipeline layout from (index, features [T,M], seconds, token ids).

    Keys: features [B,T,M], feature_mask [B,T], tokens [B,L], token_lengths [B],
    example_mask [B], seconds [B], index [B] (-1 on padding rows). T is `num_frames` when
    given, else `frame_bucket` of the longest item.
    """
    longest = max(feats.shape[0] for _, feats, _, _ in items)
    if num_frames is None:
        num_frames = frame_bucket(longest, model_config)
    features, feature_mask = pad_features([f for _, f, _, _ in items], batch_size, num_frames)
    token_len = max(1, max(len(t) for *_, t in items))
    token_len = 1 << (token_len - 1).bit_length()  # power of two: few shapes
    tokens = np.full((batch_size, token_len), pad_id, np.int32)
    token_lengths = np.zeros((batch_size,), np.int32)
    example_mask = np.zeros((batch_size,), bool)
    seconds = np.zeros((batch_size,), np.float32)
    index = np.full((batch_size,), -1, np.int32)
    for row, (idx, _, secs, ids) in enumerate(items):
        tokens[row, : len(ids)] = ids
        token_lengths[row] = len(ids)
        example_mask[row] = True
        seconds[row] = secs
        index[row] = idx
    return dict(
        features=features,
        feature_mask=feature_mask,
        tokens=tokens,
        token_lengths=token_lengths,
        example_mask=example_mask,
        seconds=seconds,
        index=index,
    )


def empty_batch_like(batch: Batch) -> Batch:
    """A batch of the same shapes with every row padding (keeps hosts' batch counts equal)."""
    out = {k: np.zeros_like(v) for k, v in batch.items()}
    out["index"] = np.full_like(batch["index"], -1)
    return out


def eval_frame_buckets(model_config: ModelConfig) -> tuple[int, ...]:
    """The frame buckets eval batches are padded to (`frame_bucket` values up to the limit)."""
    limit = max_frames(model_config) or UNBOUNDED_MAX_FRAMES
    buckets, frames = [], 1
    while True:
        bucket = frame_bucket(frames, model_config)
        if bucket >= limit:
            buckets.append(limit)
            return tuple(sorted(set(buckets)))
        buckets.append(bucket)
        frames = bucket + 1
