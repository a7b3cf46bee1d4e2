"""FastConformer encoder (NeMo / Canary), on the shared layers, and the Canary size table.

features [B, T, M] -> x8 depthwise-separable striding subsampling -> x sqrt(D) (xscaling) ->
N blocks of [½ FFN, relative-position self-attention (Transformer-XL: biases u, v and a projection
of relative sinusoids), conv module (pointwise -> GLU -> depthwise -> batch norm -> swish ->
pointwise), ½ FFN, LayerNorm] -> optional projection to the decoder width -> [B, T', D_out].

Subsampling (NeMo "dw_striding"): a full 3x3 stride-2 conv (1 -> C channels) + ReLU, then per
further factor 2 a depthwise 3x3 stride-2 conv and a pointwise 1x1 conv + ReLU; padded frames
are zeroed before every conv; the [C, M/8] map of each frame is flattened channel-major and
projected to D. The conv module is the shared Conformer one (`conformer.ConvModule`). NeMo's
batch norm after the depthwise conv runs with its inference statistics, which makes it a
per-channel affine map: the converter folds it (running mean/var, weight, bias) into the
depthwise kernel and bias, so the module runs with `conv_norm="none"`, needs no `batch_stats`
collection, and fine-tuning keeps the statistics frozen (the usual choice for small batches).

The Canary decoder is not here: it is `decoder.TransformerDecoder` configured by
`canary_decoder_config` (sinusoidal positions scaled by 1/sqrt(D), embedding LayerNorm, pre-LN
blocks with ReLU MLP, final LayerNorm, output tied to the embedding plus a bias).

Legend: B batch, T frames, T' subsampled frames, M mel bins, C channels, D width.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdm_asr_jax.nn.config import ConfigError, DecoderConfig, EncoderConfig
from mdm_asr_jax.nn.conformer import ConvModule, subsample_mask
from mdm_asr_jax.nn.layers import (
    MLP,
    Dense,
    LayerNorm,
    MultiHeadAttention,
    constrain,
    relative_sinusoidal_table,
)
from mdm_asr_jax.nn.stack import make_blocks, run_stack

Array = jax.Array
Dtype = Any

# Published shapes (NeMo model cards / configs). Encoder: FastConformer; decoder: NeMo
# TransformerDecoderNM. canary-180m-flash has a narrower encoder, so NeMo adds a Linear from the
# encoder width to the decoder width (our `output_width`).
CANARY_VARIANTS: dict[str, dict[str, dict[str, int]]] = {
    "canary-1b-flash": {
        "encoder": dict(
            num_mels=128,
            width=1024,
            num_layers=32,
            num_heads=8,
            mlp_dim=4096,
            conv_kernel=9,
            subsampling=8,
            subsampling_channels=256,
            output_width=0,
        ),
        "decoder": dict(width=1024, num_layers=4, num_heads=8, mlp_dim=4096, max_length=1024),
    },
    "canary-180m-flash": {
        "encoder": dict(
            num_mels=128,
            width=512,
            num_layers=17,
            num_heads=8,
            mlp_dim=2048,
            conv_kernel=9,
            subsampling=8,
            subsampling_channels=256,
            output_width=1024,
        ),
        "decoder": dict(width=1024, num_layers=4, num_heads=8, mlp_dim=4096, max_length=1024),
    },
    # For tests: the shape of the tiny NeMo model the parity test builds.
    "test": {
        "encoder": dict(
            num_mels=128,
            width=64,
            num_layers=2,
            num_heads=4,
            mlp_dim=256,
            conv_kernel=9,
            subsampling=8,
            subsampling_channels=32,
            output_width=96,
        ),
        "decoder": dict(width=96, num_layers=2, num_heads=4, mlp_dim=384, max_length=512),
    },
}


def canary_encoder_config(variant: str = "canary-1b-flash", **overrides: Any) -> EncoderConfig:
    """EncoderConfig of a FastConformer from `CANARY_VARIANTS` (eval-time dropout = 0)."""
    if variant not in CANARY_VARIANTS:
        raise ConfigError(f"Canary variant {variant!r}; choose one of {sorted(CANARY_VARIANTS)}")
    fields = dict(
        kind="fastconformer",
        positions="relative",
        activation="swish",
        conv_norm="none",
        xscaling=True,
        norm_eps=1e-5,
        dropout=0.0,
        attention_dropout=0.0,
    )
    fields.update(CANARY_VARIANTS[variant]["encoder"])
    fields.update(overrides)
    return EncoderConfig(**fields)


def canary_decoder_config(
    variant: str = "canary-1b-flash", bidirectional: bool = False, **overrides: Any
) -> DecoderConfig:
    """DecoderConfig reproducing NeMo's Canary Transformer decoder (causal for AR; set
    `bidirectional=True` for the MDM decoder, the paper's only change)."""
    if variant not in CANARY_VARIANTS:
        raise ConfigError(f"Canary variant {variant!r}; choose one of {sorted(CANARY_VARIANTS)}")
    shape = dict(CANARY_VARIANTS[variant]["decoder"])
    shape.update({k: v for k, v in overrides.items() if k in shape})
    fields = dict(
        positions="sinusoidal",
        position_scale=1.0 / math.sqrt(shape["width"]),
        bidirectional=bidirectional,
        embed_norm=True,
        scale_embedding=False,
        tied_output=True,
        output_bias=True,
        activation="relu",
        attention_bias=(True, True, True, True),
        norm_eps=1e-5,
        dropout=0.0,
        attention_dropout=0.0,
    )
    fields.update(shape)
    fields.update(overrides)
    return DecoderConfig(**fields)


def with_dropout(config: DecoderConfig | EncoderConfig, rate: float) -> Any:
    """A copy with `dropout` set (fine-tuning configs turn dropout back on)."""
    return dataclasses.replace(config, dropout=rate)


class DepthwiseStridingSubsampling(nn.Module):
    """NeMo's "dw_striding" front end: features [B, T, M], mask [B, T] -> [B, T/f, D], mask."""

    factor: int
    channels: int
    width: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: Array, mask: Array) -> tuple[Array, Array]:
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        kernel_init = nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), (None, None, None, "conv")
        )

        def valid(y: Array, m: Array) -> Array:
            return y * m[:, :, None, None].astype(y.dtype)

        stages = int(round(math.log2(self.factor)))
        if 2**stages != self.factor or stages < 1:
            raise ConfigError(f"encoder.subsampling={self.factor}; fastconformer needs 2, 4 or 8")
        x = valid(features[..., None].astype(self.dtype), mask)  # [B, T, M, 1]
        x = nn.Conv(
            self.channels,
            (3, 3),
            strides=(2, 2),
            padding=((1, 1), (1, 1)),
            kernel_init=kernel_init,
            **common,
            name="conv_0",
        )(x)
        mask = subsample_mask(mask, 2)
        x = valid(jax.nn.relu(x), mask)
        for stage in range(1, stages):
            x = nn.Conv(
                self.channels,
                (3, 3),
                strides=(2, 2),
                padding=((1, 1), (1, 1)),
                feature_group_count=self.channels,
                kernel_init=kernel_init,
                **common,
                name=f"depthwise_{stage}",
            )(x)
            mask = subsample_mask(mask, 2)
            x = valid(x, mask)
            x = nn.Conv(
                self.channels, (1, 1), kernel_init=kernel_init, **common, name=f"pointwise_{stage}"
            )(x)
            x = valid(jax.nn.relu(x), mask)
        b, t, m, c = x.shape
        x = jnp.transpose(x, (0, 1, 3, 2)).reshape(b, t, c * m)  # channel-major, as NeMo
        x = Dense((self.width,), (None, "embed"), **common, name="project")(x)
        return x, mask


class FastConformerBlock(nn.Module):
    """½ FFN -> relative-position self-attention -> conv module -> ½ FFN -> LayerNorm."""

    config: EncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: Array, mask: Array, rel_table: Array, deterministic: bool = True
    ) -> Array:
        cfg = self.config
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        drop = nn.Dropout(cfg.dropout)

        def ffn(y: Array, name: str) -> Array:
            h = LayerNorm(cfg.norm_eps, **common, name=f"{name}_norm")(y)
            h = MLP(cfg.mlp_dim, cfg.activation, cfg.dropout, **common, name=name)(h, deterministic)
            return 0.5 * drop(h, deterministic=deterministic)

        x = x + ffn(x, "ffn1")
        h = LayerNorm(cfg.norm_eps, **common, name="attn_norm")(x)
        h, _ = MultiHeadAttention(
            cfg.num_heads,
            cfg.width // cfg.num_heads,
            cfg.width,
            relative=True,
            dropout_rate=cfg.attention_dropout,
            **common,
            name="attn",
        )(h, mask=mask[:, None, None, :], rel_table=rel_table, deterministic=deterministic)
        x = x + drop(h, deterministic=deterministic)
        x = x + ConvModule(cfg, **common, name="conv")(x, mask, deterministic)
        x = x + ffn(x, "ffn2")
        x = LayerNorm(cfg.norm_eps, **common, name="out_norm")(x)
        return constrain(x, ("act_batch", "act_length", "act_embed"))


class FastConformerEncoder(nn.Module):
    """features [B, T, M], mask [B, T] -> (encoded [B, T', D_out], mask [B, T'])."""

    config: EncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    scan_layers: bool = False  # blocks as one nn.scan (parameters `blocks`, see nn.stack)
    remat: str = "none"  # nn.stack.REMAT_POLICIES

    @nn.compact
    def __call__(
        self, features: Array, mask: Array, deterministic: bool = True
    ) -> tuple[Array, Array]:
        cfg = self.config
        if cfg.positions != "relative":
            raise ConfigError(
                f"encoder.positions={cfg.positions!r}; the fastconformer uses 'relative'"
            )
        if cfg.conv_kernel % 2 != 1:
            raise ConfigError(f"encoder.conv_kernel={cfg.conv_kernel} must be odd")
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        channels = cfg.subsampling_channels or cfg.width
        x, mask = DepthwiseStridingSubsampling(
            cfg.subsampling, channels, cfg.width, **common, name="subsampling"
        )(features, mask)
        if cfg.xscaling:
            x = x * math.sqrt(cfg.width)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        rel_table = jnp.asarray(relative_sinusoidal_table(x.shape[1], cfg.width), self.dtype)
        blocks = make_blocks(
            lambda name: FastConformerBlock(cfg, **common, name=name),
            cfg.num_layers,
            "block",
            self.scan_layers,
        )

        def body(block: FastConformerBlock, y: Array, _: None, y_mask: Array, table: Array):
            return block(y, y_mask, table, deterministic), None

        x, _ = run_stack(
            body, blocks, x, shared=(mask, rel_table), num_layers=cfg.num_layers, remat=self.remat
        )
        if cfg.output_width and cfg.output_width != cfg.width:
            x = Dense((cfg.output_width,), ("embed", "mlp"), **common, name="output_proj")(x)
        x = x * mask[..., None].astype(x.dtype)
        return x, mask
