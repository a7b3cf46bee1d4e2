"""ASRModel: one speech encoder shared by an MDM decoder, an AR decoder and a CTC head.

The network knows nothing about diffusion: `diffusion.process` builds canvases and losses,
`diffusion.samplers` and `ar` decode. Every head is optional (config), so one checkpoint can carry
the MDM decoder and its AR baseline on the same encoder.

Methods (call through `model.apply(variables, ..., method=...)` or the helpers below):
  encode(features [B,T,M], feature_mask [B,T]) -> (encoded [B,S,D], enc_mask [B,S])
  mdm_cross_kv(encoded) -> per-layer cross-attention (k, v), computed once per utterance
  mdm_logits(canvas [B,L], encoded, enc_mask, cross_kv=None, prompt=None) -> [B,L,V]
  mdm_hidden(canvas, encoded, enc_mask, cross_kv=None, prompt=None) -> [B,L,D];
      mdm_project([...,D]) -> [...,V]: the same logits in two parts, so a decoder can project
      only some positions
  ar_logits(decoder_input [B,L], encoded, enc_mask) -> [B,L,V]        (teacher forcing)
  ar_cross_kv(encoded); ar_init_cache(B, max_len); ar_step(tokens [B,N], position, cache,
      cross_kv, enc_mask) -> (logits [B,N,V], cache)
  ctc_logits(encoded) -> [B,S,V]  (blank = pad_id)

`prompt` [B,P] (optional) is each row's decoder prompt (e.g. a multilingual Whisper's language
token per utterance); None means `config.prompt_ids` for every row. Same length P either way.

Legend: B batch, T frames, M mel bins, S encoder frames, L tokens, V vocabulary, D width.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdm_asr_jax.nn.config import EncoderConfig, ModelConfig
from mdm_asr_jax.nn.decoder import Cache, CrossKV, TransformerDecoder
from mdm_asr_jax.nn.encoders import encoder_kind
from mdm_asr_jax.nn.layers import Dense

Array = jax.Array


def encoder_class(config: EncoderConfig) -> type[nn.Module]:
    """The encoder module for `config.kind` (from the registry in `nn.encoders`)."""
    return encoder_kind(config).module


class ASRModel(nn.Module):
    config: ModelConfig

    def setup(self):
        cfg = self.config
        common = dict(dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype)
        stack = dict(scan_layers=cfg.scan_layers, remat=cfg.remat)
        self.encoder = encoder_class(cfg.encoder)(cfg.encoder, **common, **stack)
        if cfg.mdm_decoder is not None:
            self.mdm_decoder = TransformerDecoder(
                cfg.mdm_decoder, cfg.vocab_size, **common, **stack
            )
        if cfg.ar_decoder is not None:
            self.ar_decoder = TransformerDecoder(cfg.ar_decoder, cfg.vocab_size, **common, **stack)
        if cfg.ctc:
            self.ctc_head = Dense((cfg.vocab_size,), ("embed", "vocab"), **common)

    # -- encoder ---------------------------------------------------------------------------
    def encode(
        self, features: Array, feature_mask: Array, train: bool = False
    ) -> tuple[Array, Array]:
        return self.encoder(features, feature_mask, deterministic=not train)

    # -- masked diffusion decoder ----------------------------------------------------------
    def _prompt(self, batch_size: int, prompt: Array | None = None) -> Array | None:
        ids = self.config.prompt_ids
        if not ids:
            return None
        if prompt is not None:
            return jnp.asarray(prompt, jnp.int32)
        return jnp.broadcast_to(jnp.asarray(ids, jnp.int32)[None], (batch_size, len(ids)))

    def mdm_cross_kv(self, encoded: Array) -> CrossKV:
        return self.mdm_decoder.cross_kv(encoded)

    def mdm_logits(
        self,
        canvas: Array,
        encoded: Array | None,
        enc_mask: Array,
        cross_kv: CrossKV | None = None,
        train: bool = False,
        prompt: Array | None = None,
    ) -> Array:
        """canvas [B, L] -> logits [B, L, V] for the canvas positions (prompt prepended inside;
        `prompt` [B, P] per row, default `config.prompt_ids`)."""
        prompt = self._prompt(canvas.shape[0], prompt)
        tokens = canvas if prompt is None else jnp.concatenate([prompt, canvas], axis=1)
        logits = self.mdm_decoder(
            tokens, encoded, enc_mask, cross_kv=cross_kv, deterministic=not train
        )
        return self._canvas_slots(logits, prompt, canvas.shape[1])

    def mdm_hidden(
        self,
        canvas: Array,
        encoded: Array | None,
        enc_mask: Array,
        cross_kv: CrossKV | None = None,
        prompt: Array | None = None,
    ) -> Array:
        """canvas [B, L] -> the MDM decoder's last-block outputs [B, L, D] at the canvas
        positions; `mdm_project` of any of them = those positions of `mdm_logits` (same
        `prompt` convention)."""
        prompt = self._prompt(canvas.shape[0], prompt)
        tokens = canvas if prompt is None else jnp.concatenate([prompt, canvas], axis=1)
        hidden = self.mdm_decoder(tokens, encoded, enc_mask, cross_kv=cross_kv, return_hidden=True)
        return self._canvas_slots(hidden, prompt, canvas.shape[1])

    def _canvas_slots(self, out: Array, prompt: Array | None, length: int) -> Array:
        """The decoder outputs [B, P + L, ...] that belong to the L canvas slots: the canvas
        positions themselves, or with `mdm_shift` the positions one to the left."""
        start = 0 if prompt is None else prompt.shape[1]
        if self.config.mdm_shift:
            start -= 1  # validate() guarantees a prompt
        return out[:, start : start + length]

    def mdm_project(self, hidden: Array) -> Array:
        """MDM decoder outputs [..., D] -> logits [..., V] (final norm + output layer)."""
        return self.mdm_decoder.project(hidden)

    # -- autoregressive decoder ------------------------------------------------------------
    def ar_logits(
        self, decoder_input: Array, encoded: Array, enc_mask: Array, train: bool = False
    ) -> Array:
        return self.ar_decoder(decoder_input, encoded, enc_mask, deterministic=not train)

    def ar_cross_kv(self, encoded: Array) -> CrossKV:
        return self.ar_decoder.cross_kv(encoded)

    def ar_init_cache(self, batch_size: int, max_length: int) -> Cache:
        return self.ar_decoder.init_cache(batch_size, max_length)

    def ar_step(
        self, tokens: Array, position: Array, cache: Cache, cross_kv: CrossKV, enc_mask: Array
    ) -> tuple[Array, Cache]:
        return self.ar_decoder.step(tokens, position, cache, cross_kv, enc_mask)

    # -- CTC -------------------------------------------------------------------------------
    def ctc_logits(self, encoded: Array) -> Array:
        return self.ctc_head(encoded)

    # -- everything at once (used for init) ------------------------------------------------
    def __call__(
        self,
        features: Array,
        feature_mask: Array,
        canvas: Array,
        ar_input: Array | None = None,
        train: bool = False,
    ) -> dict[str, Array]:
        encoded, enc_mask = self.encode(features, feature_mask, train)
        out: dict[str, Array] = {"encoded": encoded, "enc_mask": enc_mask}
        if self.config.mdm_decoder is not None:
            out["mdm"] = self.mdm_logits(canvas, encoded, enc_mask, train=train)
        if self.config.ar_decoder is not None:
            out["ar"] = self.ar_logits(
                canvas if ar_input is None else ar_input, encoded, enc_mask, train
            )
        if self.config.ctc:
            out["ctc"] = self.ctc_logits(encoded)
        return out


def init_params(model: ASRModel, key: Array, num_frames: int = 64, canvas_length: int = 8) -> Any:
    """Initialise all parameters (boxed with logical axis metadata) from dummy inputs."""
    cfg = model.config
    features = jnp.zeros((1, num_frames, cfg.encoder.num_mels), jnp.float32)
    feature_mask = jnp.ones((1, num_frames), bool)
    canvas = jnp.zeros((1, canvas_length), jnp.int32)
    return jax.jit(model.init)({"params": key}, features, feature_mask, canvas)
