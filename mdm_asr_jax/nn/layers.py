"""Shared building blocks: dense, norms, MLP, multi-head attention, positions.

Every encoder and decoder in the package is assembled from these, so there is one attention
implementation. Kernels carry logical axis names (weights: embed, mlp, heads, kv, vocab;
activations: act_batch, act_length, act_embed, act_heads, act_mlp, act_vocab); the mapping of
names to mesh axes lives in the training config (`train.sharding`). Outside a mesh they cost
nothing.

Legend: B batch, T/S key length, L query length, D width, H heads, K head dim, F mlp width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = Any

# (k, v) each [B, S, H, K]
KV = tuple[Array, Array]


def constrain(x: Array, names: Sequence[str | None]) -> Array:
    """Logical sharding constraint on an activation (a no-op outside a mesh with rules)."""
    return nn.with_logical_constraint(x, tuple(names))


def activation_fn(name: str) -> Callable[[Array], Array]:
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name == "relu":
        return jax.nn.relu
    if name == "swish":
        return jax.nn.silu
    raise ValueError(f"unknown activation {name!r}; choose gelu, relu or swish")


class Dense(nn.Module):
    """Dense layer contracting the last `contract` input dims into `features`.

    kernel shape = input.shape[-contract:] + features; `kernel_axes` names every kernel dim.
    """

    features: tuple[int, ...]
    kernel_axes: tuple[str | None, ...]
    contract: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = tuple(self.features)
        in_shape = x.shape[-self.contract :]
        if len(self.kernel_axes) != len(in_shape) + len(features):
            raise ValueError(
                f"kernel_axes {self.kernel_axes} do not name a kernel of shape {in_shape + features}"
            )
        fan_in = int(np.prod(in_shape))
        fan_out = int(np.prod(features))

        def init(key, shape, dtype):
            flat = self.kernel_init(key, (fan_in, fan_out), dtype)
            return flat.reshape(shape)

        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(init, self.kernel_axes),
            in_shape + features,
            self.param_dtype,
        )
        kernel = jnp.asarray(kernel, self.dtype)
        x = jnp.asarray(x, self.dtype)
        in_letters = "abcdefgh"[: self.contract]
        out_letters = "pqrstuvw"[: len(features)]
        y = jnp.einsum(f"...{in_letters},{in_letters}{out_letters}->...{out_letters}", x, kernel)
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(
                    nn.initializers.zeros_init(), self.kernel_axes[-len(features) :]
                ),
                features,
                self.param_dtype,
            )
            y = y + jnp.asarray(bias, self.dtype)
        return y


class LayerNorm(nn.Module):
    """LayerNorm computed in float32, with logically named scale and bias."""

    epsilon: float = 1e-5
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = x.shape[-1]
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
            (features,),
            self.param_dtype,
        )
        x32 = jnp.asarray(x, jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * jnp.asarray(scale, jnp.float32)
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
                (features,),
                self.param_dtype,
            )
            y = y + jnp.asarray(bias, jnp.float32)
        return jnp.asarray(y, self.dtype)


class MLP(nn.Module):
    """Position-wise feed-forward: Dense(F) -> activation -> dropout -> Dense(D)."""

    hidden: int
    activation: str = "gelu"
    dropout_rate: float = 0.0
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        width = x.shape[-1]
        h = Dense(
            (self.hidden,),
            ("embed", "mlp"),
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="fc1",
        )(x)
        h = constrain(h, ("act_batch", "act_length", "act_mlp"))
        h = activation_fn(self.activation)(h)
        h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return Dense(
            (width,),
            ("mlp", "embed"),
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="fc2",
        )(h)


def sinusoidal_table(length: int, width: int, max_timescale: float = 10000.0) -> np.ndarray:
    """[length, width] sin/cos table (sin in the first half, cos in the second, as Whisper)."""
    half = width // 2
    log_increment = math.log(max_timescale) / max(half - 1, 1)
    inv = np.exp(-log_increment * np.arange(half, dtype=np.float64))
    scaled = np.arange(length, dtype=np.float64)[:, None] * inv[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def interleaved_sinusoidal_table(length: int, width: int) -> np.ndarray:
    """[length, width] table with sin at even and cos at odd channels (Vaswani et al., NeMo)."""
    position = np.arange(length, dtype=np.float64)[:, None]
    div = np.exp(np.arange(0, width, 2, dtype=np.float64) * (-math.log(10000.0) / width))
    table = np.zeros((length, width), np.float64)
    table[:, 0::2] = np.sin(position * div)
    table[:, 1::2] = np.cos(position * div)
    return table.astype(np.float32)


def relative_sinusoidal_table(length: int, width: int) -> np.ndarray:
    """[2*length - 1, width] interleaved sin/cos of relative distances length-1, ..., -(length-1).

    Row j encodes the distance (query index - key index) = length - 1 - j (Transformer-XL /
    NeMo's RelPositionalEncoding).
    """
    position = np.arange(length - 1, -length, -1, dtype=np.float64)[:, None]
    div = np.exp(np.arange(0, width, 2, dtype=np.float64) * (-math.log(10000.0) / width))
    table = np.zeros((2 * length - 1, width), np.float64)
    table[:, 0::2] = np.sin(position * div)
    table[:, 1::2] = np.cos(position * div)
    return table.astype(np.float32)


def relative_shift(scores: Array) -> Array:
    """[B, H, L, 2L-1] scores over relative distances -> [B, H, L, L] over key positions.

    out[..., i, s] = scores[..., i, L - 1 - i + s], i.e. the score for distance i - s, done with
    the Transformer-XL pad/reshape trick (no gather).
    """
    b, h, length, num_rel = scores.shape
    padded = jnp.pad(scores, ((0, 0), (0, 0), (0, 0), (1, 0)))  # [B, H, L, 2L]
    padded = padded.reshape(b, h, num_rel + 1, length)[:, :, 1:]  # [B, H, 2L-1, L]
    return padded.reshape(b, h, length, num_rel)[..., :length]


def apply_rotary(x: Array, positions: Array, base: float = 10000.0) -> Array:
    """Rotary position embedding. x: [B, L, H, K], positions: [B, L] or [L]."""
    head_dim = x.shape[-1]
    half = head_dim // 2
    inv = 1.0 / (base ** (jnp.arange(half, dtype=jnp.float32) / half))
    positions = jnp.asarray(positions, jnp.float32)
    if positions.ndim == 1:
        positions = positions[None, :]
    angles = positions[:, :, None, None] * inv  # [B, L, 1, K/2]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    x32 = jnp.asarray(x, jnp.float32)
    x1, x2 = x32[..., :half], x32[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return jnp.asarray(out, x.dtype)


def init_kv_cache(
    batch_size: int, max_length: int, num_heads: int, head_dim: int, dtype: Dtype = jnp.float32
) -> dict[str, Array]:
    """An empty self-attention cache: k, v [B, S, H, K]. The write index is passed separately."""
    shape = (batch_size, max_length, num_heads, head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


class MultiHeadAttention(nn.Module):
    """Multi-head dot-product attention, the package's only attention.

    Supports: self- and cross-attention; key/value projected once and passed back in (`kv`) so
    decoders reuse the encoder's cross-attention K/V across decoding steps; an explicit KV cache
    for AR decoding (`cache` + `cache_index`); rotary positions; an additive `logit_bias`
    (e.g. relative positions); Transformer-XL relative positions (`relative=True`, FastConformer:
    learned biases u, v per head and a projection of the relative sinusoid table `rel_table`).
    Scores, softmax in float32.
    """

    num_heads: int
    head_dim: int
    out_features: int
    use_bias: tuple[bool, bool, bool, bool] = (True, True, True, True)  # q, k, v, out
    rotary: bool = False
    relative: bool = False
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        q_bias, k_bias, v_bias, out_bias = self.use_bias
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        heads = (self.num_heads, self.head_dim)
        self.query = Dense(heads, ("embed", "heads", "kv"), use_bias=q_bias, **common)
        self.key = Dense(heads, ("embed", "heads", "kv"), use_bias=k_bias, **common)
        self.value = Dense(heads, ("embed", "heads", "kv"), use_bias=v_bias, **common)
        self.out = Dense(
            (self.out_features,), ("heads", "kv", "embed"), contract=2, use_bias=out_bias, **common
        )
        self.dropout = nn.Dropout(self.dropout_rate)
        if self.relative:
            self.pos_proj = Dense(heads, ("embed", "heads", "kv"), use_bias=False, **common)
            bias_init = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("heads", "kv"))
            self.pos_bias_u = self.param("pos_bias_u", bias_init, heads, self.param_dtype)
            self.pos_bias_v = self.param("pos_bias_v", bias_init, heads, self.param_dtype)

    def project_kv(self, inputs_kv: Array) -> KV:
        """Key and value projections of `inputs_kv` [B, S, D] -> ([B,S,H,K], [B,S,H,K])."""
        k = constrain(self.key(inputs_kv), ("act_batch", "act_length", "act_heads", "act_kv"))
        v = constrain(self.value(inputs_kv), ("act_batch", "act_length", "act_heads", "act_kv"))
        return k, v

    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array | None = None,
        *,
        mask: Array | None = None,
        kv: KV | None = None,
        positions: Array | None = None,
        cache: dict[str, Array] | None = None,
        cache_index: Array | None = None,
        logit_bias: Array | None = None,
        rel_table: Array | None = None,
        deterministic: bool = True,
    ) -> tuple[Array, dict[str, Array] | None]:
        """Attend from `inputs_q` [B, L, D].

        mask: bool, broadcastable to [B, H, L, S], True = may attend.
        kv: precomputed (k, v); else projected from inputs_kv (or inputs_q for self-attention).
        positions: [B, L] or [L] query/key positions for rotary (self-attention only).
        cache/cache_index: AR decoding; k, v of the L new positions are written at cache_index
          and attention runs over the whole cache (mask must hide unwritten slots).
        rel_table: [2L-1, D] relative sinusoid table (`relative_sinusoidal_table`), required when
          `relative` (self-attention without cache): scores = ((q+u).k + (q+v).P(i-s)) / sqrt(K).
        Returns (output [B, L, D], updated cache or None).
        """
        q = constrain(self.query(inputs_q), ("act_batch", "act_length", "act_heads", "act_kv"))
        if kv is None:
            k, v = self.project_kv(inputs_q if inputs_kv is None else inputs_kv)
        else:
            k, v = kv
        if self.rotary:
            if positions is None:
                positions = jnp.arange(q.shape[1])
            q = apply_rotary(q, positions)
            k = apply_rotary(k, positions)
        new_cache = None
        if cache is not None:
            index = jnp.asarray(cache_index, jnp.int32)
            ck = jax.lax.dynamic_update_slice(
                cache["k"], k.astype(cache["k"].dtype), (0, index, 0, 0)
            )
            cv = jax.lax.dynamic_update_slice(
                cache["v"], v.astype(cache["v"].dtype), (0, index, 0, 0)
            )
            new_cache = {"k": ck, "v": cv}
            k, v = ck, cv
        q32, k32 = jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32)
        if self.relative:
            if rel_table is None or cache is not None:
                raise ValueError("relative attention needs rel_table and no KV cache")
            p = jnp.asarray(self.pos_proj(rel_table), jnp.float32)  # [2L-1, H, K]
            u = jnp.asarray(self.pos_bias_u, jnp.float32)
            v_bias = jnp.asarray(self.pos_bias_v, jnp.float32)
            scores = jnp.einsum("blhk,bshk->bhls", q32 + u, k32)
            scores = scores + relative_shift(jnp.einsum("blhk,phk->bhlp", q32 + v_bias, p))
        else:
            scores = jnp.einsum("blhk,bshk->bhls", q32, k32)
        scores = scores / math.sqrt(self.head_dim)
        if logit_bias is not None:
            scores = scores + logit_bias
        if mask is not None:
            scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1)
        weights = self.dropout(weights, deterministic=deterministic)
        out = jnp.einsum("bhls,bshk->blhk", weights.astype(self.dtype), jnp.asarray(v, self.dtype))
        out = constrain(out, ("act_batch", "act_length", "act_heads", "act_kv"))
        return self.out(out), new_cache
