"""Conformer encoder trained from scratch (Gulati et al. 2020), on the shared layers.

features [B, T, M] -> conv subsampling (x4 or x8: stride-2 3x3 conv2d stages) -> Dense(D) ->
N blocks of [½ FFN, rotary self-attention, conv module, ½ FFN, LayerNorm] -> [B, T', D].

Legend: B batch, T frames, T' subsampled frames, M mel bins, C channels, D width.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdm_asr_jax.nn.config import EncoderConfig
from mdm_asr_jax.nn.layers import (
    MLP,
    Dense,
    LayerNorm,
    MultiHeadAttention,
    activation_fn,
    constrain,
)
from mdm_asr_jax.nn.stack import make_blocks, run_stack

Array = jax.Array
Dtype = Any


def subsample_mask(mask: Array, factor: int) -> Array:
    """Mask after `log2(factor)` stride-2 stages: frame i is valid iff (2i) was valid, repeatedly."""
    while factor > 1:
        mask = mask[:, ::2]
        factor //= 2
    return mask


class ConvSubsampling(nn.Module):
    """Stride-2 3x3 conv2d stages with ReLU, then a projection of C*M' to D."""

    factor: int
    channels: int
    width: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: Array, mask: Array) -> tuple[Array, Array]:
        x = features[..., None].astype(self.dtype)  # [B, T, M, 1]
        factor = self.factor
        stage = 0
        while factor > 1:
            x = x * mask[:, :, None, None].astype(x.dtype)
            x = nn.Conv(
                self.channels,
                (3, 3),
                strides=(2, 2),
                padding=((1, 1), (1, 1)),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.lecun_normal(), (None, None, None, "conv")
                ),
                name=f"conv_{stage}",
            )(x)
            x = jax.nn.relu(x)
            mask = subsample_mask(mask, 2)
            factor //= 2
            stage += 1
        b, t, m, c = x.shape
        x = x.reshape(b, t, m * c)
        x = Dense(
            (self.width,),
            (None, "embed"),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="project",
        )(x)
        return x, mask


class ConvModule(nn.Module):
    """LN -> pointwise (2D) -> GLU -> depthwise conv (kernel k) -> norm -> swish -> pointwise."""

    config: EncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = LayerNorm(cfg.norm_eps, **common, name="norm")(x)
        h = Dense((2 * cfg.width,), ("embed", "mlp"), **common, name="pointwise_in")(h)
        h = jax.nn.glu(h, axis=-1)
        h = h * mask[..., None].astype(h.dtype)  # padded frames must not leak into the conv
        h = nn.Conv(
            cfg.width,
            (cfg.conv_kernel,),
            feature_group_count=cfg.width,
            padding="SAME",
            **common,
            name="depthwise",
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), (None, None, "embed")
            ),
        )(h)
        if cfg.conv_norm == "batch":
            h = nn.BatchNorm(
                use_running_average=deterministic,
                momentum=0.99,
                epsilon=cfg.norm_eps,
                **common,
                name="conv_norm",
            )(h)
        elif cfg.conv_norm == "layer":
            h = LayerNorm(cfg.norm_eps, **common, name="conv_norm")(h)
        # "none": no norm (an imported batch norm is folded into the depthwise conv)
        h = activation_fn(cfg.activation)(h)
        h = Dense((cfg.width,), ("mlp", "embed"), **common, name="pointwise_out")(h)
        return nn.Dropout(cfg.dropout)(h, deterministic=deterministic)


class ConformerBlock(nn.Module):
    config: EncoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        drop = nn.Dropout(cfg.dropout)

        def ffn(y, name):
            h = LayerNorm(cfg.norm_eps, **common, name=f"{name}_norm")(y)
            h = MLP(cfg.mlp_dim, cfg.activation, cfg.dropout, **common, name=name)(h, deterministic)
            return 0.5 * drop(h, deterministic=deterministic)

        x = x + ffn(x, "ffn1")
        h = LayerNorm(cfg.norm_eps, **common, name="attn_norm")(x)
        h, _ = MultiHeadAttention(
            cfg.num_heads,
            cfg.width // cfg.num_heads,
            cfg.width,
            rotary=cfg.positions == "rotary",
            dropout_rate=cfg.attention_dropout,
            **common,
            name="attn",
        )(h, mask=mask[:, None, None, :], deterministic=deterministic)
        x = x + drop(h, deterministic=deterministic)
        x = x + ConvModule(cfg, **common, name="conv")(x, mask, deterministic)
        x = x + ffn(x, "ffn2")
        x = LayerNorm(cfg.norm_eps, **common, name="out_norm")(x)
        return constrain(x, ("act_batch", "act_length", "act_embed"))


class ConformerEncoder(nn.Module):
    """features [B, T, M], mask [B, T] -> (encoded [B, T', D], mask [B, T'])."""

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
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        channels = cfg.subsampling_channels or cfg.width
        x, mask = ConvSubsampling(
            cfg.subsampling, channels, cfg.width, **common, name="subsampling"
        )(features, mask)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        blocks = make_blocks(
            lambda name: ConformerBlock(cfg, **common, name=name),
            cfg.num_layers,
            "block",
            self.scan_layers,
        )

        def body(block: ConformerBlock, y: Array, _: None, y_mask: Array) -> tuple[Array, None]:
            return block(y, y_mask, deterministic), None

        x, _ = run_stack(
            body, blocks, x, shared=(mask,), num_layers=cfg.num_layers, remat=self.remat
        )
        x = x * mask[..., None].astype(x.dtype)
        return x, mask
