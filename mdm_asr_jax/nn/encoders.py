"""The encoder registry: every encoder kind in one table, and the one fine-tune config builder.

A row says everything the rest of the package needs to know about a kind, so no other module
tests `encoder.kind == ...`:
  module          the flax module class (its own file under nn/)
  max_frames      the longest input in log-mel frames, or None when unbounded
  frame_bucket    padded frame count for a batch (None: the inference layer's default ladder)
  window_seconds  transcription window (long audio is cut into pieces of at most this)
  finetune_length the fine-tuned decoder's max_length from (converted length, requested length)

Adding an encoder: write its module, add one row here, add its name to
`nn.config.ENCODER_KINDS` (the config validates against that tuple; a test checks both agree).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn

from mdm_asr_jax.nn.config import ConfigError, EncoderConfig, ModelConfig
from mdm_asr_jax.nn.conformer import ConformerEncoder
from mdm_asr_jax.nn.fastconformer import FastConformerEncoder
from mdm_asr_jax.nn.whisper import WHISPER_FRAMES, WhisperEncoder, whisper_window_frames

DEFAULT_WINDOW_SECONDS = 20.0  # about the longest LibriSpeech training utterances
WHISPER_WINDOW_SECONDS = 30.0  # Whisper's positions stop there


def _learned_positions_limit(config: EncoderConfig) -> int | None:
    if config.positions == "learned":
        return config.max_frames * config.subsampling
    return None


@dataclasses.dataclass(frozen=True)
class EncoderKind:
    """One row of the registry (see the module docstring)."""

    name: str
    module: type[nn.Module]
    max_frames: Callable[[EncoderConfig], int | None] = _learned_positions_limit
    frame_bucket: Callable[[int], int] | None = None
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    finetune_length: Callable[[int, int | None], int] = lambda have, want: (
        have if want is None else max(have, want)
    )


ENCODERS: dict[str, EncoderKind] = {}


def register_encoder(row: EncoderKind) -> EncoderKind:
    """Adds (or replaces) a registry row; returns it."""
    ENCODERS[row.name] = row
    return row


register_encoder(EncoderKind("conformer", ConformerEncoder))
register_encoder(
    EncoderKind(
        "whisper",
        WhisperEncoder,
        max_frames=lambda config: WHISPER_FRAMES,
        frame_bucket=whisper_window_frames,  # 5 / 10 / 20 / 30 s windows
        window_seconds=WHISPER_WINDOW_SECONDS,
        finetune_length=lambda have, want: have,  # positions are Whisper's learned table
    )
)
register_encoder(
    EncoderKind(
        "fastconformer",
        FastConformerEncoder,
        # Canary's decoder positions are fixed sinusoids: any length up to the converted table.
        finetune_length=lambda have, want: have if want is None else int(want),
    )
)


def encoder_kind(config: EncoderConfig) -> EncoderKind:
    """The registry row of `config.kind` (ConfigError naming the known kinds otherwise)."""
    try:
        return ENCODERS[config.kind]
    except KeyError:
        raise ConfigError(
            f"unknown encoder kind {config.kind!r}; registered: {sorted(ENCODERS)}"
        ) from None


def finetune_config(
    base: ModelConfig,
    *,
    mdm: bool = True,
    ar: bool = False,
    ctc: bool | None = None,
    dropout: float = 0.1,
    max_length: int | None = None,
    dtype: str | None = None,
    min_frames: int | None = None,
) -> ModelConfig:
    """A fine-tuning ModelConfig from a converted or trained checkpoint's config, any encoder.

    Keeps the architecture, vocabulary and prompt; picks the heads (`mdm`: the base decoder made
    bidirectional, the paper's initialisation; `ar`: the base decoder kept causal, a baseline;
    `ctc`: kept only if the base has one, None = as the base); sets dropout (encoder and
    decoders), the decoder's max_length (per the encoder kind's `finetune_length`), the compute
    dtype (None = the base's) and the encoder's `min_frames` (None = keep; Whisper: 0 trains
    and decodes on short windows). Parameters then come from the checkpoint through the
    trainer's init_from (init_map (("mdm_decoder", "ar_decoder"),) when the checkpoint has
    only an AR decoder).
    """
    row = encoder_kind(base.encoder)
    source = base.ar_decoder or base.mdm_decoder
    if source is None:
        raise ConfigError(f"base config ({row.name} encoder) has no decoder to fine-tune")
    if not (mdm or ar):
        raise ConfigError("pick at least one head: mdm and/or ar")
    decoder = dataclasses.replace(
        source, dropout=dropout, max_length=row.finetune_length(source.max_length, max_length)
    )
    encoder = dataclasses.replace(base.encoder, dropout=dropout)
    if min_frames is not None:
        encoder = dataclasses.replace(encoder, min_frames=min_frames)
    return dataclasses.replace(
        base,
        encoder=encoder,
        mdm_decoder=dataclasses.replace(decoder, bidirectional=True) if mdm else None,
        ar_decoder=dataclasses.replace(decoder, bidirectional=False) if ar else None,
        ctc=base.ctc if ctc is None else (ctc and base.ctc),
        dtype=dtype or base.dtype,
    ).validate()
