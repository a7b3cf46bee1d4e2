"""OpenAI Whisper's audio encoder on the shared layers, and Whisper model configurations.

Encoder: log-mel [B, T, M] -> Conv1d(M->D, width 3) -> GELU -> Conv1d(D->D, width 3, stride 2)
-> GELU -> + positions[:T'] -> N pre-LN blocks [LN, self-attention, LN, MLP] -> LN -> [B, T', D],
T' = ceil(T / 2). Released checkpoints were trained on 30 s windows (T = 3000, T' = 1500, zero
log-mel after the audio). Slicing the positional table lets shorter windows run too (fewer
frames, same weights), but zero-shot Whisper then degrades badly (repetition loops; measured in
docs/whisper.md), so `EncoderConfig.min_frames` (default 3000 in Whisper configs) pads
short inputs back to 30 s inside the encoder; set it to 0 for models fine-tuned on short
windows.

Padding: the encoder reads padded frames as they come. `audio.log_mel_*` put 0 there, which is
exactly what faster-whisper feeds Whisper (it pads log-mel with zeros to 30 s);
`audio.fill_whisper_padding` gives openai-whisper's silence floor instead. With
`attend_padding=True` (the default, Whisper's own behaviour) every frame is attended to and the
returned encoder mask is all True, so a padded window behaves like Whisper's padded 30 s; with
False, padded frames are masked out of self-attention and of the returned mask.

The decoder is not here: it is `nn.decoder.TransformerDecoder` configured by
`whisper_decoder_config` (learned positions, tied output, no key bias, causal for the AR
decoder, bidirectional for MDM-ASR).

Legend: B batch, T frames, T' encoder frames (T/2), M mel bins, D width, H heads, K head dim.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdm_asr_jax.nn.config import DecoderConfig, EncoderConfig, ModelConfig
from mdm_asr_jax.nn.layers import (
    MLP,
    LayerNorm,
    MultiHeadAttention,
    activation_fn,
    constrain,
    sinusoidal_table,
)
from mdm_asr_jax.nn.stack import make_blocks, run_stack

Array = jax.Array
Dtype = Any

# Whisper's window: 30 s of 10 ms log-mel frames, halved by the stride-2 convolution.
WHISPER_FRAMES = 3000
WHISPER_ENCODER_FRAMES = 1500
# Window lengths (log-mel frames) that short inputs are padded up to: 5, 10, 20 and 30 s.
WHISPER_BUCKETS = (500, 1000, 2000, 3000)


def whisper_window_frames(num_frames: int, buckets: tuple[int, ...] = WHISPER_BUCKETS) -> int:
    """The smallest bucket (log-mel frames) that holds `num_frames`; at most 30 s."""
    for bucket in sorted(buckets):
        if num_frames <= bucket:
            return bucket
    raise ValueError(
        f"{num_frames} log-mel frames is longer than Whisper's 30 s window ({max(buckets)} "
        f"frames); split the audio into chunks of at most 30 s"
    )


class WhisperEncoderLayer(nn.Module):
    """Pre-LN Transformer block: x + SelfAttention(LN(x)), then x + MLP(LN(x))."""

    config: EncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, attention_mask: Array | None, deterministic: bool) -> Array:
        cfg = self.config
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h, _ = MultiHeadAttention(
            num_heads=cfg.num_heads,
            head_dim=cfg.width // cfg.num_heads,
            out_features=cfg.width,
            use_bias=(True, False, True, True),  # Whisper's key projection has no bias
            dropout_rate=cfg.attention_dropout,
            **common,
            name="self_attn",
        )(
            LayerNorm(cfg.norm_eps, **common, name="self_attn_norm")(x),
            mask=attention_mask,
            deterministic=deterministic,
        )
        x = x + nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
        h = MLP(cfg.mlp_dim, cfg.activation, cfg.dropout, **common, name="mlp")(
            LayerNorm(cfg.norm_eps, **common, name="mlp_norm")(x), deterministic=deterministic
        )
        x = x + nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
        return constrain(x, ("act_batch", "act_length", "act_embed"))


class WhisperEncoder(nn.Module):
    """features [B, T, M], mask [B, T] -> (encoded [B, T', D], mask [B, T']); T <= 3000."""

    config: EncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attend_padding: bool = True
    scan_layers: bool = False  # layers as one nn.scan (parameters `layers`, see nn.stack)
    remat: str = "none"  # nn.stack.REMAT_POLICIES

    @nn.compact
    def __call__(
        self, features: Array, mask: Array, deterministic: bool = True
    ) -> tuple[Array, Array]:
        cfg = self.config
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        num_frames = features.shape[1]
        encoder_frames = (num_frames + 1) // 2
        if encoder_frames > cfg.max_frames:
            raise ValueError(
                f"features have {num_frames} frames but this Whisper encoder takes at most "
                f"{2 * cfg.max_frames} (30 s); split the audio into shorter chunks"
            )
        if features.shape[-1] != cfg.num_mels:
            raise ValueError(
                f"features have {features.shape[-1]} mel bins but the encoder expects "
                f"{cfg.num_mels}; use FeatureConfig(kind='whisper', num_mels={cfg.num_mels})"
            )
        gelu = activation_fn(cfg.activation)
        if num_frames < cfg.min_frames:  # e.g. Whisper's fixed 30 s window
            extra = cfg.min_frames - num_frames
            features = jnp.pad(features, ((0, 0), (0, extra), (0, 0)))
            mask = jnp.pad(mask, ((0, 0), (0, extra)))
            num_frames, encoder_frames = cfg.min_frames, (cfg.min_frames + 1) // 2
        x = features.astype(self.dtype)  # [B, T, M]

        def conv(name: str, stride: int) -> nn.Conv:
            return nn.Conv(
                cfg.width,
                (3,),
                strides=(stride,),
                padding=((1, 1),),
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.lecun_normal(), (None, None, "embed")
                ),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
                **common,
                name=name,
            )

        x = gelu(conv("conv1", 1)(x))  # [B, T, D]
        x = gelu(conv("conv2", 2)(x))  # [B, T', D]
        positions = self.param(
            "position_embedding",
            nn.with_logical_partitioning(
                lambda key, shape, dtype: jnp.asarray(sinusoidal_table(*shape), dtype),
                (None, "embed"),
            ),
            (cfg.max_frames, cfg.width),
            self.param_dtype,
        )
        x = x + jnp.asarray(positions[:encoder_frames], self.dtype)[None]
        x = constrain(x, ("act_batch", "act_length", "act_embed"))
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)

        enc_mask = mask[:, ::2]  # frame t' covers input frames 2t'-1 .. 2t'+1
        if self.attend_padding:
            enc_mask = jnp.ones_like(enc_mask)
            attention_mask = None
        else:
            attention_mask = enc_mask[:, None, None, :]
        layers = make_blocks(
            lambda name: WhisperEncoderLayer(cfg, **common, name=name),
            cfg.num_layers,
            "layer",
            self.scan_layers,
        )

        def body(layer: WhisperEncoderLayer, y: Array, _: None, y_mask: Array | None):
            return layer(y, y_mask, deterministic), None

        x, _ = run_stack(
            body,
            layers,
            x,
            shared=(attention_mask,),
            num_layers=cfg.num_layers,
            remat=self.remat,
        )
        x = LayerNorm(cfg.norm_eps, **common, name="final_norm")(x)
        return x, enc_mask


# ---------------------------------------------------------------------------------------------
# Configurations.


@dataclasses.dataclass(frozen=True)
class WhisperSize:
    """Architecture of one Whisper checkpoint family (OpenAI's model card)."""

    width: int
    encoder_layers: int
    decoder_layers: int
    heads: int
    num_mels: int = 80
    n_vocab: int = 51865  # decoder embedding rows (timestamps included, no [MASK])
    encoder_positions: int = WHISPER_ENCODER_FRAMES  # 30 s after the stride-2 convolution
    decoder_positions: int = 448


WHISPER_MODEL_SIZES: dict[str, WhisperSize] = {
    "tiny": WhisperSize(384, 4, 4, 6),
    "base": WhisperSize(512, 6, 6, 8),
    "small": WhisperSize(768, 12, 12, 12),
    "medium": WhisperSize(1024, 24, 24, 16),
    "large-v2": WhisperSize(1280, 32, 32, 20),
    "large-v3": WhisperSize(1280, 32, 32, 20, num_mels=128, n_vocab=51866),
    "large-v3-turbo": WhisperSize(1280, 32, 4, 20, num_mels=128, n_vocab=51866),
}
for _name in ("tiny", "base", "small", "medium"):
    WHISPER_MODEL_SIZES[_name + ".en"] = dataclasses.replace(
        WHISPER_MODEL_SIZES[_name], n_vocab=51864
    )
WHISPER_MODEL_SIZES["large"] = WHISPER_MODEL_SIZES["large-v2"]


def whisper_encoder_config(
    size: WhisperSize, dropout: float = 0.0, min_frames: int = WHISPER_FRAMES
) -> EncoderConfig:
    """EncoderConfig(kind="whisper") of a Whisper size (MLP 4x width, exact GELU).

    min_frames: shorter inputs are zero-padded to this many frames inside the encoder; the
    default 3000 (30 s) is what the released weights were trained on (see module docstring);
    0 runs short windows as they come (faster; for models fine-tuned on short windows).
    """
    return EncoderConfig(
        kind="whisper",
        num_mels=size.num_mels,
        width=size.width,
        num_layers=size.encoder_layers,
        num_heads=size.heads,
        mlp_dim=4 * size.width,
        subsampling=2,
        positions="learned",
        max_frames=size.encoder_positions,
        min_frames=min(min_frames, 2 * size.encoder_positions),
        activation="gelu",
        norm_eps=1e-5,
        dropout=dropout,
        attention_dropout=0.0,
    )


def whisper_decoder_config(
    size: WhisperSize, bidirectional: bool = False, dropout: float = 0.0
) -> DecoderConfig:
    """Whisper's text decoder as a TransformerDecoder configuration.

    Learned positions (448 for every released size), tied output embedding, pre-LN, exact GELU, no key bias. Causal for
    the AR decoder; `bidirectional=True` is the MDM-ASR decoder made from it.
    """
    return DecoderConfig(
        width=size.width,
        num_layers=size.decoder_layers,
        num_heads=size.heads,
        mlp_dim=4 * size.width,
        max_length=size.decoder_positions,
        positions="learned",
        bidirectional=bidirectional,
        embed_norm=False,
        scale_embedding=False,
        tied_output=True,
        output_bias=False,
        activation="gelu",
        attention_bias=(True, False, True, True),
        norm_eps=1e-5,
        dropout=dropout,
        attention_dropout=0.0,
    )


def whisper_model_config(
    size: WhisperSize | str,
    prompt_ids: tuple[int, ...],
    eos_id: int,
    *,
    ar_decoder: bool = True,
    mdm_decoder: bool = False,
    dtype: str = "float32",
    dropout: float = 0.0,
    min_frames: int = WHISPER_FRAMES,
) -> ModelConfig:
    """ModelConfig for a Whisper backbone with an AR decoder, an MDM decoder, or both.

    vocab_size = n_vocab + 1 ([MASK] appended last); pad = eos = <|endoftext|>. min_frames: see
    `whisper_encoder_config`.
    """
    if isinstance(size, str):
        if size not in WHISPER_MODEL_SIZES:
            raise ValueError(
                f"Whisper size {size!r} unknown; choose one of {sorted(WHISPER_MODEL_SIZES)}"
            )
        size = WHISPER_MODEL_SIZES[size]
    return ModelConfig(
        vocab_size=size.n_vocab + 1,
        encoder=whisper_encoder_config(size, dropout, min_frames),
        mdm_decoder=whisper_decoder_config(size, True, dropout) if mdm_decoder else None,
        ar_decoder=whisper_decoder_config(size, False, dropout) if ar_decoder else None,
        ctc=False,
        prompt_ids=tuple(prompt_ids),
        pad_id=eos_id,
        eos_id=eos_id,
        dtype=dtype,
        param_dtype="float32",
    ).validate()
