"""Transformer decoder with cross-attention: the MDM decoder and the AR decoder are one class.

`bidirectional=True` gives the masked-diffusion decoder (full self-attention over prompt +
canvas); `False` gives the causal AR decoder with an explicit KV cache. Whisper's and Canary's
decoders are configurations of this class (positions, embedding norm, tied output).

With `scan_layers` the blocks run as one `nn.scan` (parameters `layers`, stacked; see
`nn.stack`) in every method, training and decoding alike: per-layer cross K/V and the AR cache
are then single trees with a layer axis after the batch, [B, N, ...], instead of tuples.

Legend: B batch, N layers, L tokens, S encoder frames, D width, V vocabulary, H heads, K head dim.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdm_asr_jax.nn.config import DecoderConfig
from mdm_asr_jax.nn.layers import (
    KV,
    MLP,
    Dense,
    LayerNorm,
    MultiHeadAttention,
    constrain,
    init_kv_cache,
    interleaved_sinusoidal_table,
)
from mdm_asr_jax.nn.stack import LAYER_AXIS, make_blocks, run_stack

Array = jax.Array
Dtype = Any
# Loop layout: a tuple with one entry per layer, cross K/V (k, v) and cache {"k", "v"};
# scan layout: one such tree with every leaf [B, N, ...].
CrossKV = tuple[KV, ...] | KV
Cache = tuple[dict[str, Array], ...] | dict[str, Array]


class DecoderLayer(nn.Module):
    """Pre-LN block: self-attention, cross-attention to the encoder, MLP."""

    config: DecoderConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        cfg = self.config
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        head_dim = cfg.width // cfg.num_heads
        attn = dict(
            num_heads=cfg.num_heads,
            head_dim=head_dim,
            out_features=cfg.width,
            use_bias=tuple(cfg.attention_bias),
            dropout_rate=cfg.attention_dropout,
            **common,
        )
        self.self_attn_norm = LayerNorm(cfg.norm_eps, **common)
        self.self_attn = MultiHeadAttention(**attn)
        self.cross_attn_norm = LayerNorm(cfg.norm_eps, **common)
        self.cross_attn = MultiHeadAttention(**attn)
        self.mlp_norm = LayerNorm(cfg.norm_eps, **common)
        self.mlp = MLP(cfg.mlp_dim, cfg.activation, cfg.dropout, **common)
        self.dropout = nn.Dropout(cfg.dropout)

    def cross_kv(self, encoded: Array) -> KV:
        return self.cross_attn.project_kv(encoded)

    def __call__(
        self,
        x,
        *,
        self_mask,
        cross_kv,
        cross_mask,
        cache=None,
        cache_index=None,
        deterministic=True,
    ):
        h, new_cache = self.self_attn(
            self.self_attn_norm(x),
            mask=self_mask,
            cache=cache,
            cache_index=cache_index,
            deterministic=deterministic,
        )
        x = x + self.dropout(h, deterministic=deterministic)
        h, _ = self.cross_attn(
            self.cross_attn_norm(x), kv=cross_kv, mask=cross_mask, deterministic=deterministic
        )
        x = x + self.dropout(h, deterministic=deterministic)
        h = self.mlp(self.mlp_norm(x), deterministic=deterministic)
        x = x + self.dropout(h, deterministic=deterministic)
        return constrain(x, ("act_batch", "act_length", "act_embed")), new_cache


class TransformerDecoder(nn.Module):
    """Token embedding + positions -> pre-LN blocks -> final LN -> logits over V.

    Methods: `__call__` (full sequence), `cross_kv` (every layer's cross K/V, once per
    utterance), `init_cache` and `step` (AR decoding with an explicit, reorderable cache).
    """

    config: DecoderConfig
    vocab_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    scan_layers: bool = False  # layers as one nn.scan (parameters `layers`, see nn.stack)
    remat: str = "none"  # nn.stack.REMAT_POLICIES (applied to the full-sequence __call__)

    def setup(self):
        cfg = self.config
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.embed = nn.Embed(
            self.vocab_size,
            cfg.width,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(0.02), ("vocab", "embed")
            ),
        )
        if cfg.positions == "learned":
            self.position_embedding = self.param(
                "position_embedding",
                nn.with_logical_partitioning(nn.initializers.normal(0.01), (None, "embed")),
                (cfg.max_length, cfg.width),
                self.param_dtype,
            )
        elif cfg.positions not in ("sinusoidal", "none"):
            raise ValueError(
                f"decoder positions {cfg.positions!r} not supported; use learned, sinusoidal or none"
            )
        if cfg.embed_norm:
            self.embed_norm_layer = LayerNorm(cfg.norm_eps, **common)
        self.layers = make_blocks(
            lambda name: DecoderLayer(cfg, **common, name=name),
            cfg.num_layers,
            "layer",
            self.scan_layers,
        )
        self.final_norm = LayerNorm(cfg.norm_eps, **common)
        if not cfg.tied_output:
            self.output = Dense(
                (self.vocab_size,), ("embed", "vocab"), use_bias=cfg.output_bias, **common
            )
        elif cfg.output_bias:
            self.output_bias = self.param(
                "output_bias",
                nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)),
                (self.vocab_size,),
                self.param_dtype,
            )
        self.dropout = nn.Dropout(cfg.dropout)

    def _positions(self, start: Array | int, length: int) -> Array:
        cfg = self.config
        if cfg.positions == "learned":
            table = jnp.asarray(self.position_embedding, self.dtype)
        elif cfg.positions == "sinusoidal":
            table = interleaved_sinusoidal_table(cfg.max_length, cfg.width) * cfg.position_scale
            table = jnp.asarray(table, self.dtype)
        else:
            return jnp.zeros((length, cfg.width), self.dtype)
        return jax.lax.dynamic_slice_in_dim(table, start, length, axis=0)

    def _embed(self, tokens: Array, start: Array | int, deterministic: bool) -> Array:
        cfg = self.config
        x = self.embed(tokens)  # [B, L, D]
        if cfg.scale_embedding:
            x = x * jnp.sqrt(jnp.asarray(cfg.width, self.dtype))
        x = x + self._positions(start, tokens.shape[1])[None]
        if cfg.embed_norm:
            x = self.embed_norm_layer(x)
        x = self.dropout(x, deterministic=deterministic)
        return constrain(x, ("act_batch", "act_length", "act_embed"))

    def _logits(self, x: Array) -> Array:
        x = self.final_norm(x)
        if self.config.tied_output:
            logits = self.embed.attend(x)
            if self.config.output_bias:
                logits = logits + jnp.asarray(self.output_bias, logits.dtype)
        else:
            logits = self.output(x)
        return constrain(logits, ("act_batch", "act_length", "act_vocab"))

    def cross_kv(self, encoded: Array) -> CrossKV:
        """Every layer's cross-attention (k, v) of `encoded` [B, S, D]: computed once."""

        def body(layer: DecoderLayer, carry: None, _: None, enc: Array) -> tuple[None, KV]:
            return carry, layer.cross_kv(enc)

        _, cross_kv = run_stack(
            body, self.layers, None, shared=(encoded,), num_layers=self.config.num_layers
        )
        return cross_kv

    def __call__(
        self,
        tokens: Array,
        encoded: Array | None,
        enc_mask: Array,
        *,
        cross_kv: CrossKV | None = None,
        token_mask: Array | None = None,
        deterministic: bool = True,
        return_hidden: bool = False,
    ) -> Array:
        """tokens [B, L] -> logits [B, L, V] (compute dtype).

        enc_mask [B, S] marks valid encoder frames. token_mask [B, L] (optional) marks valid
        decoder positions (keys outside it are not attended to). Causal if not bidirectional.
        return_hidden: return the last block's output [B, L, D] instead (before the final layer
        norm); `project` turns any subset of its positions into logits.
        """
        length = tokens.shape[1]
        if length > self.config.max_length:
            raise ValueError(
                f"decoder input has {length} positions but max_length is {self.config.max_length}; "
                "shorten the canvas or raise the decoder's max_length"
            )
        x = self._embed(tokens, 0, deterministic)
        self_mask = jnp.ones((1, 1, length, length), bool)
        if not self.config.bidirectional:
            self_mask = jnp.tril(self_mask)
        if token_mask is not None:
            self_mask = self_mask & token_mask[:, None, None, :]
        cross_mask = enc_mask[:, None, None, :]

        def body(layer: DecoderLayer, y, layer_kv, enc, y_mask, y_cross_mask):
            if layer_kv is None:  # projected here, layer by layer, when not given
                layer_kv = layer.cross_kv(enc)
            y, _ = layer(
                y,
                self_mask=y_mask,
                cross_kv=layer_kv,
                cross_mask=y_cross_mask,
                deterministic=deterministic,
            )
            return y, None

        x, _ = run_stack(
            body,
            self.layers,
            x,
            cross_kv,
            (encoded if cross_kv is None else None, self_mask, cross_mask),
            num_layers=self.config.num_layers,
            remat=self.remat,
        )
        return x if return_hidden else self._logits(x)

    def project(self, hidden: Array) -> Array:
        """Last-block outputs [..., D] -> logits [..., V]: final layer norm + output layer.

        Every position on its own, so projecting a gathered subset of positions gives those
        positions' logits of the full `__call__`.
        """
        return self._logits(hidden)

    def init_cache(self, batch_size: int, max_length: int) -> Cache:
        """Empty per-layer self-attention caches for AR decoding."""
        cfg = self.config
        head_dim = cfg.width // cfg.num_heads
        if self.scan_layers:
            cache = init_kv_cache(
                batch_size * cfg.num_layers, max_length, cfg.num_heads, head_dim, self.dtype
            )
            return jax.tree.map(  # [B, N, S, H, K]
                lambda x: x.reshape(batch_size, cfg.num_layers, *x.shape[1:]), cache
            )
        return tuple(
            init_kv_cache(batch_size, max_length, cfg.num_heads, head_dim, self.dtype)
            for _ in range(cfg.num_layers)
        )

    def step(
        self, tokens: Array, position: Array, cache: Cache, cross_kv: CrossKV, enc_mask: Array
    ) -> tuple[Array, Cache]:
        """AR step: tokens [B, N] at positions [position, position + N) -> logits [B, N, V].

        N may be > 1 (e.g. to feed a prompt at once). The cache holds every earlier position.
        """
        num_new = tokens.shape[1]
        if self.scan_layers:
            max_length = cache["k"].shape[LAYER_AXIS + 1]
            per_layer = (cache, cross_kv)
        else:
            max_length = cache[0]["k"].shape[1]
            per_layer = tuple(zip(cache, cross_kv, strict=True))
        x = self._embed(tokens, position, True)
        query_pos = position + jnp.arange(num_new)
        self_mask = (jnp.arange(max_length)[None, :] <= query_pos[:, None])[None, None]  # [1,1,N,S]
        cross_mask = enc_mask[:, None, None, :]

        def body(layer: DecoderLayer, y, layer_input, y_mask, y_cross_mask, index):
            layer_cache, layer_kv = layer_input
            return layer(
                y,
                self_mask=y_mask,
                cross_kv=layer_kv,
                cross_mask=y_cross_mask,
                cache=layer_cache,
                cache_index=index,
                deterministic=True,
            )

        x, new_cache = run_stack(
            body,
            self.layers,
            x,
            per_layer,
            (self_mask, cross_mask, jnp.asarray(position, jnp.int32)),
            num_layers=self.config.num_layers,
        )
        return self._logits(x), new_cache
