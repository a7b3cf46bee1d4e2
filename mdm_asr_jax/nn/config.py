"""Model configuration: one frozen dataclass tree that flows to every module.

`ModelConfig` is what a checkpoint directory stores (as JSON, via `to_dict`/`from_dict`), so a
checkpoint can be decoded with no other input. Variants come from small tables (`ENCODER_SIZES`,
`DECODER_SIZES`) and `dataclasses.replace`, never from copied config files.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

ENCODER_KINDS = ("conformer", "whisper", "fastconformer")
POSITION_KINDS = ("learned", "sinusoidal", "rotary", "none")
ACTIVATIONS = ("gelu", "relu", "swish")
# nn.stack.REMAT_POLICIES (repeated here so the config module imports no flax)
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")


class ConfigError(ValueError):
    """A model configuration that cannot be built (names the field and the fix)."""


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Speech encoder. `kind` picks the network; the other fields size it.

    conformer: trained from scratch here (conv subsampling, rotary self-attention, macaron FFN,
      conv module). whisper: Whisper's audio encoder. fastconformer: NeMo/Canary's encoder.
    """

    kind: str = "conformer"
    num_mels: int = 80
    width: int = 144
    num_layers: int = 4
    num_heads: int = 4
    mlp_dim: int = 576
    conv_kernel: int = 15
    subsampling: int = 4  # time reduction of the conv front end (4 or 8)
    subsampling_channels: int = 0  # 0 = width
    positions: str = "rotary"
    max_frames: int = 1500  # positional table length after subsampling (whisper: 1500)
    activation: str = "swish"
    # conv module norm: "layer", "batch" (needs a mutable batch_stats collection), or "none"
    # (fastconformer imported from NeMo: its batch norm is folded into the depthwise conv)
    conv_norm: str = "layer"
    xscaling: bool = False  # fastconformer: scale subsampled input by sqrt(width)
    output_width: int = 0  # 0 = width; else a Dense(width -> output_width) after the blocks
    # whisper: inputs shorter than this many frames are zero-padded to it inside the encoder
    # (3000 = Whisper's own 30 s window, what zero-shot Whisper needs; 0 = run the input as is)
    min_frames: int = 0
    norm_eps: float = 1e-5
    dropout: float = 0.1
    attention_dropout: float = 0.0

    def validate(self) -> None:
        if self.kind not in ENCODER_KINDS:
            raise ConfigError(f"encoder.kind={self.kind!r}; choose one of {ENCODER_KINDS}")
        if self.width % self.num_heads:
            raise ConfigError(
                f"encoder.width={self.width} must be divisible by encoder.num_heads={self.num_heads}"
            )
        if self.subsampling not in (1, 2, 4, 8):
            raise ConfigError(f"encoder.subsampling={self.subsampling}; choose 1, 2, 4 or 8")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"encoder.activation={self.activation!r}; choose one of {ACTIVATIONS}"
            )
        if self.conv_norm not in ("layer", "batch", "none"):
            raise ConfigError(
                f"encoder.conv_norm={self.conv_norm!r}; choose 'layer', 'batch' or 'none'"
            )


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Transformer decoder. The same code is the MDM decoder (bidirectional) and the AR one."""

    width: int = 144
    num_layers: int = 2
    num_heads: int = 4
    mlp_dim: int = 576
    max_length: int = 256  # positions available (prompt + canvas)
    positions: str = "learned"
    position_scale: float = 1.0  # sinusoidal table multiplier (NeMo/Canary: 1/sqrt(width))
    bidirectional: bool = True
    embed_norm: bool = False  # LayerNorm after embedding + positions (NeMo)
    scale_embedding: bool = False  # multiply token embeddings by sqrt(width)
    tied_output: bool = True  # logits = h @ embedding^T (Whisper); else a separate projection
    output_bias: bool = False  # a bias [V] on the logits (tied or not; Canary: tied + bias)
    activation: str = "gelu"
    attention_bias: tuple[bool, bool, bool, bool] = (True, True, True, True)  # q, k, v, out
    norm_eps: float = 1e-5
    dropout: float = 0.1
    attention_dropout: float = 0.0

    def validate(self, name: str = "decoder") -> None:
        if self.width % self.num_heads:
            raise ConfigError(
                f"{name}.width={self.width} must be divisible by {name}.num_heads={self.num_heads}"
            )
        if self.positions not in POSITION_KINDS:
            raise ConfigError(
                f"{name}.positions={self.positions!r}; choose one of {POSITION_KINDS}"
            )
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"{name}.activation={self.activation!r}; choose one of {ACTIVATIONS}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """An encoder shared by up to three heads: MDM decoder, AR decoder, CTC.

    vocab_size counts the tokenizer's ids plus the appended [MASK] (mask_id = vocab_size - 1).
    prompt_ids: a fixed decoder prefix (e.g. BOS, or Whisper's start-of-transcript tokens) that
    the MDM decoder sees before the canvas and the AR decoder before the transcript.
    mdm_shift: read canvas slot i's logits from the MDM decoder's output one position to the
    left (slot i - 1; the last prompt token for slot 0) instead of slot i's own output: the
    next-token layout of an AR decoder. An MDM decoder initialised from an AR decoder then
    starts with the AR output head's alignment (the AR -> diffusion adaptation of
    DiffuLLaMA / Dream); needs a prompt of at least one token.
    """

    vocab_size: int = 256
    encoder: EncoderConfig = EncoderConfig()
    mdm_decoder: DecoderConfig | None = DecoderConfig()
    ar_decoder: DecoderConfig | None = None
    ctc: bool = False
    prompt_ids: tuple[int, ...] = ()
    mdm_shift: bool = False
    pad_id: int = 0
    eos_id: int = 3
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    # Identical blocks of the encoder and decoders as one nn.scan over stacked parameters
    # (fast compiles of deep models; parameter layout `blocks`/`layers`, see nn.stack).
    scan_layers: bool = False
    # Recompute block activations in the backward pass: "none" | "full" | "dots_saveable" |
    # "dots_with_no_batch_dims_saveable" (jax.checkpoint policies; nn.stack.REMAT_POLICIES).
    remat: str = "none"

    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    @property
    def params_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    def validate(self) -> ModelConfig:
        self.encoder.validate()
        if self.mdm_decoder is None and self.ar_decoder is None and not self.ctc:
            raise ConfigError("the model has no output head: set mdm_decoder, ar_decoder or ctc")
        for name in ("mdm_decoder", "ar_decoder"):
            dec = getattr(self, name)
            if dec is not None:
                dec.validate(name)
                if dec.max_length <= len(self.prompt_ids):
                    raise ConfigError(
                        f"{name}.max_length={dec.max_length} leaves no room after the "
                        f"{len(self.prompt_ids)} prompt tokens; raise it"
                    )
        if self.mdm_decoder is not None and self.mdm_decoder.bidirectional is False:
            raise ConfigError("mdm_decoder.bidirectional must be True (a masked-diffusion decoder)")
        if self.mdm_shift and self.mdm_decoder is not None and not self.prompt_ids:
            raise ConfigError(
                "mdm_shift reads canvas slot 0 from the last prompt token, and prompt_ids is "
                "empty: give the tokenizer a prompt (e.g. BOS) or set mdm_shift=False"
            )
        if not isinstance(self.mdm_shift, bool):
            raise ConfigError(f"mdm_shift={self.mdm_shift!r}; use True or False")
        if self.ar_decoder is not None and self.ar_decoder.bidirectional:
            raise ConfigError("ar_decoder.bidirectional must be False (an autoregressive decoder)")
        for ident, label in ((self.pad_id, "pad_id"), (self.eos_id, "eos_id")):
            if not 0 <= ident < self.vocab_size - 1:
                raise ConfigError(
                    f"{label}={ident} is outside the vocabulary [0, {self.vocab_size - 1})"
                )
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"remat={self.remat!r}; choose one of {REMAT_POLICIES}")
        if not isinstance(self.scan_layers, bool):
            raise ConfigError(f"scan_layers={self.scan_layers!r}; use True or False")
        for dtype_name in (self.dtype, self.param_dtype):
            if dtype_name not in ("float32", "bfloat16", "float16"):
                raise ConfigError(f"dtype {dtype_name!r}; choose float32, bfloat16 or float16")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of to_dict; unknown keys are an error (a checkpoint from another version)."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"model config has unknown keys {sorted(unknown)}: the checkpoint was written by "
                "an incompatible version of mdm_asr_jax"
            )
        enc = data.get("encoder")
        if isinstance(enc, dict):
            data["encoder"] = _build(EncoderConfig, enc, "encoder")
        for name in ("mdm_decoder", "ar_decoder"):
            dec = data.get(name)
            if isinstance(dec, dict):
                dec = dict(dec)
                if "attention_bias" in dec:
                    dec["attention_bias"] = tuple(dec["attention_bias"])
                data[name] = _build(DecoderConfig, dec, name)
        if "prompt_ids" in data:
            data["prompt_ids"] = tuple(int(i) for i in data["prompt_ids"])
        return cls(**data).validate()


def _build(cls, data: dict[str, Any], name: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{name} config has unknown keys {sorted(unknown)}")
    return cls(**data)


# Small variant tables: a config picks a row and overrides what it needs.
ENCODER_SIZES: dict[str, dict[str, int]] = {
    "test": dict(width=32, num_layers=2, num_heads=2, mlp_dim=64, conv_kernel=5),
    "tiny": dict(width=96, num_layers=4, num_heads=4, mlp_dim=384, conv_kernel=15),
    "small": dict(width=144, num_layers=8, num_heads=4, mlp_dim=576, conv_kernel=31),
    "medium": dict(width=256, num_layers=16, num_heads=4, mlp_dim=1024, conv_kernel=31),
    "large": dict(width=512, num_layers=17, num_heads=8, mlp_dim=2048, conv_kernel=31),
}
DECODER_SIZES: dict[str, dict[str, int]] = {
    "test": dict(width=32, num_layers=2, num_heads=2, mlp_dim=64),
    "tiny": dict(width=96, num_layers=2, num_heads=4, mlp_dim=384),
    "small": dict(width=144, num_layers=4, num_heads=4, mlp_dim=576),
    "medium": dict(width=256, num_layers=6, num_heads=4, mlp_dim=1024),
    "large": dict(width=512, num_layers=6, num_heads=8, mlp_dim=2048),
}


def encoder_config(size: str, **overrides: Any) -> EncoderConfig:
    if size not in ENCODER_SIZES:
        raise ConfigError(f"encoder size {size!r}; choose one of {sorted(ENCODER_SIZES)}")
    return EncoderConfig(**{**ENCODER_SIZES[size], **overrides})


def decoder_config(size: str, **overrides: Any) -> DecoderConfig:
    if size not in DECODER_SIZES:
        raise ConfigError(f"decoder size {size!r}; choose one of {sorted(DECODER_SIZES)}")
    return DecoderConfig(**{**DECODER_SIZES[size], **overrides})
