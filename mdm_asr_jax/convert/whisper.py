"""Whisper weights from Hugging Face or CTranslate2 directories into our parameter layout.

Two sources, one canonical form:

* Hugging Face `openai/whisper-*` (`model.safetensors` or sharded `*.safetensors`, plus
  `config.json`): torch layouts, `Linear.weight` [out, in], `Conv1d.weight` [out, in, width],
  names such as `model.encoder.layers.3.self_attn.q_proj.weight`.
* CTranslate2 (`model.bin`, often float16 or int8, plus `config.json` with the suppressed token
  ids): the same tensors under names such as `encoder/layer_3/self_attention/linear_0/weight`,
  where self-attention query/key/value are fused into one [3D, D] matrix and cross-attention
  key/value into one [2D, D] matrix.

Both are first turned into a flat *canonical* dict (`WhisperWeights.tensors`) with flax layouts
(dense kernels [in, out], conv kernels [width, in, out]) and names independent of either source,
e.g. `encoder/layer_3/attention/query/kernel`; `whisper_params` then places those into the flax
parameter tree of `nn.whisper`. Every source tensor is either mapped or listed in the report, and
any shape disagreement is an error that names the tensor.

Whisper's attention key projection has no bias. CTranslate2 stores zeros there; a key bias adds
the same amount to every score of a query row, which softmax ignores, so it is dropped exactly.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen
import jax
import numpy as np

from mdm_asr_jax.audio import FeatureConfig
from mdm_asr_jax.checkpoint import DecodingDefaults, export_checkpoint
from mdm_asr_jax.convert import ctranslate2 as ct2
from mdm_asr_jax.diffusion.samplers import PAPER_SAMPLER
from mdm_asr_jax.nn.model import ASRModel, init_params
from mdm_asr_jax.nn.whisper import WHISPER_FRAMES, WhisperSize, whisper_model_config
from mdm_asr_jax.text import WhisperTokenizer


class WhisperConversionError(ValueError):
    """A Whisper source that cannot be converted (names the file/tensor and the fix)."""


@dataclasses.dataclass(frozen=True)
class WhisperDims:
    """The sizes that define a Whisper model (all of tiny ... large-v3 are instances)."""

    num_mels: int = 80
    vocab_size: int = 51864  # model output rows, timestamps included (no [MASK])
    encoder_positions: int = 1500  # frames after the stride-2 conv: 30 s
    decoder_positions: int = 448
    width: int = 384
    encoder_layers: int = 4
    encoder_heads: int = 6
    decoder_layers: int = 4
    decoder_heads: int = 6
    mlp_dim: int = 1536

    @property
    def multilingual(self) -> bool:
        """English-only checkpoints have 51864 rows; multilingual ones 51865 (large-v3: 51866)."""
        return self.vocab_size >= 51865

    def size(self) -> WhisperSize:
        """The architecture (nn.whisper.WhisperSize) these tensors describe."""
        if self.encoder_heads != self.decoder_heads or self.mlp_dim != 4 * self.width:
            raise WhisperConversionError(
                f"unsupported Whisper shape {self}: encoder and decoder must share the head "
                f"count and the MLP must be 4x the width"
            )
        return WhisperSize(
            width=self.width,
            encoder_layers=self.encoder_layers,
            decoder_layers=self.decoder_layers,
            heads=self.encoder_heads,
            num_mels=self.num_mels,
            n_vocab=self.vocab_size,
            encoder_positions=self.encoder_positions,
            decoder_positions=self.decoder_positions,
        )


@dataclasses.dataclass
class WhisperWeights:
    """Canonical Whisper tensors (flax layouts) plus what the conversion saw.

    tensors: canonical name -> float array (source dtype kept; cast by the caller).
    ignored: source tensors deliberately not used, with the reason (tied copies, options,
      zero key biases), so that every source tensor is accounted for.
    config: source options that matter for decoding (e.g. CTranslate2's `suppress_ids`).
    """

    dims: WhisperDims
    tensors: dict[str, np.ndarray]
    ignored: dict[str, str]
    config: dict


# ---------------------------------------------------------------------------------------------
# Canonical names and shapes.


def _attention_shapes(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for proj in ("query", "key", "value", "out"):
        shapes[f"{prefix}/{proj}/kernel"] = (width, width)
        if proj != "key":
            shapes[f"{prefix}/{proj}/bias"] = (width,)
    return shapes


def _norm_shapes(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}/scale": (width,), f"{prefix}/bias": (width,)}


def _mlp_shapes(prefix: str, width: int, mlp_dim: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}/fc1/kernel": (width, mlp_dim),
        f"{prefix}/fc1/bias": (mlp_dim,),
        f"{prefix}/fc2/kernel": (mlp_dim, width),
        f"{prefix}/fc2/bias": (width,),
    }


def canonical_shapes(dims: WhisperDims) -> dict[str, tuple[int, ...]]:
    """Every canonical tensor name with its expected shape for a model of size `dims`."""
    d = dims.width
    shapes: dict[str, tuple[int, ...]] = {
        "encoder/conv1/kernel": (3, dims.num_mels, d),
        "encoder/conv1/bias": (d,),
        "encoder/conv2/kernel": (3, d, d),
        "encoder/conv2/bias": (d,),
        "encoder/positions": (dims.encoder_positions, d),
        **_norm_shapes("encoder/final_norm", d),
        "decoder/embedding": (dims.vocab_size, d),
        "decoder/positions": (dims.decoder_positions, d),
        **_norm_shapes("decoder/final_norm", d),
    }
    for i in range(dims.encoder_layers):
        p = f"encoder/layer_{i}"
        shapes.update(_norm_shapes(f"{p}/attention_norm", d))
        shapes.update(_attention_shapes(f"{p}/attention", d))
        shapes.update(_norm_shapes(f"{p}/mlp_norm", d))
        shapes.update(_mlp_shapes(f"{p}/mlp", d, dims.mlp_dim))
    for i in range(dims.decoder_layers):
        p = f"decoder/layer_{i}"
        shapes.update(_norm_shapes(f"{p}/self_attention_norm", d))
        shapes.update(_attention_shapes(f"{p}/self_attention", d))
        shapes.update(_norm_shapes(f"{p}/cross_attention_norm", d))
        shapes.update(_attention_shapes(f"{p}/cross_attention", d))
        shapes.update(_norm_shapes(f"{p}/mlp_norm", d))
        shapes.update(_mlp_shapes(f"{p}/mlp", d, dims.mlp_dim))
    return shapes


class _Collector:
    """Accumulates canonical tensors, checking names and shapes against `canonical_shapes`."""

    def __init__(self, dims: WhisperDims, source: str):
        self.expected = canonical_shapes(dims)
        self.tensors: dict[str, np.ndarray] = {}
        self.source = source

    def put(self, name: str, value: np.ndarray, from_name: str) -> None:
        if name not in self.expected:
            raise WhisperConversionError(f"{self.source}: {from_name!r} maps to unknown {name!r}")
        if tuple(value.shape) != self.expected[name]:
            raise WhisperConversionError(
                f"{self.source}: tensor {from_name!r} has shape {tuple(value.shape)}, expected "
                f"{self.expected[name]} for {name!r}; the config.json and weights disagree"
            )
        self.tensors[name] = value

    def finish(self) -> dict[str, np.ndarray]:
        missing = sorted(set(self.expected) - set(self.tensors))
        if missing:
            shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
            raise WhisperConversionError(
                f"{self.source}: {len(missing)} Whisper tensors missing ({shown}); is this a "
                f"complete Whisper checkpoint?"
            )
        return self.tensors


# ---------------------------------------------------------------------------------------------
# Hugging Face.

_HF_ATTENTION = {"q_proj": "query", "k_proj": "key", "v_proj": "value", "out_proj": "out"}
_HF_LAYER_PARTS = {
    # HF sub-name -> canonical sub-name, for encoder and decoder layers.
    "self_attn_layer_norm": "self_attention_norm",
    "encoder_attn_layer_norm": "cross_attention_norm",
    "final_layer_norm": "mlp_norm",
    "self_attn": "self_attention",
    "encoder_attn": "cross_attention",
}


def _hf_canonical_name(name: str) -> tuple[str, str] | None:
    """Maps an HF tensor name to (canonical name, layout kind), or None when it is not Whisper's.

    layout kind: "linear" (transpose [out, in] -> [in, out]), "conv" ([out, in, w] -> [w, in,
    out]) or "plain".
    """
    name = name.removeprefix("model.")
    norm_param = {"weight": "scale", "bias": "bias"}
    pattern = r"(encoder|decoder)\.layers\.(\d+)\.([a-z0-9_]+)\.(?:([a-z_]+)\.)?(weight|bias)"
    match = re.fullmatch(pattern, name)
    if match:
        stack, index, part, sub, param = match.groups()
        prefix = f"{stack}/layer_{index}"
        if part in ("fc1", "fc2") and sub is None:
            return f"{prefix}/mlp/{part}/{'kernel' if param == 'weight' else 'bias'}", (
                "linear" if param == "weight" else "plain"
            )
        if part.endswith("layer_norm") and sub is None:
            canon = _HF_LAYER_PARTS[part]
            if stack == "encoder" and canon == "self_attention_norm":
                canon = "attention_norm"
            return f"{prefix}/{canon}/{norm_param[param]}", "plain"
        if part in ("self_attn", "encoder_attn") and sub in _HF_ATTENTION:
            canon = _HF_LAYER_PARTS[part]
            if stack == "encoder":
                canon = "attention"
            kind = "linear" if param == "weight" else "plain"
            return f"{prefix}/{canon}/{_HF_ATTENTION[sub]}/{'kernel' if kind == 'linear' else 'bias'}", kind  # fmt: skip
        return None
    fixed = {
        "encoder.conv1.weight": ("encoder/conv1/kernel", "conv"),
        "encoder.conv1.bias": ("encoder/conv1/bias", "plain"),
        "encoder.conv2.weight": ("encoder/conv2/kernel", "conv"),
        "encoder.conv2.bias": ("encoder/conv2/bias", "plain"),
        "encoder.embed_positions.weight": ("encoder/positions", "plain"),
        "encoder.layer_norm.weight": ("encoder/final_norm/scale", "plain"),
        "encoder.layer_norm.bias": ("encoder/final_norm/bias", "plain"),
        "decoder.embed_tokens.weight": ("decoder/embedding", "plain"),
        "decoder.embed_positions.weight": ("decoder/positions", "plain"),
        "decoder.layer_norm.weight": ("decoder/final_norm/scale", "plain"),
        "decoder.layer_norm.bias": ("decoder/final_norm/bias", "plain"),
    }
    return fixed.get(name)


def _to_flax_layout(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == "linear":
        return value.T
    if kind == "conv":
        return value.transpose(2, 1, 0)
    return value


def hf_dims(config: dict) -> WhisperDims:
    """WhisperDims from an HF `config.json` dict (WhisperConfig field names)."""
    try:
        return WhisperDims(
            num_mels=int(config["num_mel_bins"]),
            vocab_size=int(config["vocab_size"]),
            encoder_positions=int(config["max_source_positions"]),
            decoder_positions=int(config["max_target_positions"]),
            width=int(config["d_model"]),
            encoder_layers=int(config["encoder_layers"]),
            encoder_heads=int(config["encoder_attention_heads"]),
            decoder_layers=int(config["decoder_layers"]),
            decoder_heads=int(config["decoder_attention_heads"]),
            mlp_dim=int(config["encoder_ffn_dim"]),
        )
    except KeyError as error:
        raise WhisperConversionError(
            f"config.json has no {error.args[0]!r}; is it a Hugging Face WhisperConfig?"
        ) from None


def _read_safetensors(directory: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise WhisperConversionError(
            f"{directory}: no *.safetensors files; download the safetensors weights "
            f"(PyTorch .bin checkpoints are not read)"
        )
    tensors = {}
    for file in files:
        with safe_open(str(file), framework="numpy") as handle:
            for key in handle.keys():
                tensors[key] = handle.get_tensor(key)
    return tensors


def convert_hf_tensors(
    tensors: dict[str, np.ndarray], dims: WhisperDims, source: str = "HF checkpoint"
) -> WhisperWeights:
    """Maps HF Whisper tensors (name -> array) to canonical tensors; strict on names and shapes."""
    collector = _Collector(dims, source)
    ignored: dict[str, str] = {}
    unknown = []
    for name, value in tensors.items():
        mapped = _hf_canonical_name(name)
        if mapped is None:
            if name in ("proj_out.weight", "model.proj_out.weight"):
                ignored[name] = "output projection tied to decoder.embed_tokens"
                continue
            unknown.append(name)
            continue
        canon, kind = mapped
        collector.put(canon, _to_flax_layout(np.asarray(value), kind), name)
    if unknown:
        shown = ", ".join(sorted(unknown)[:8])
        raise WhisperConversionError(
            f"{source}: {len(unknown)} tensors are not part of a Whisper model ({shown}); "
            f"pass an openai/whisper-* checkpoint"
        )
    weights = collector.finish()
    for name in ignored:
        proj = np.asarray(tensors[name])
        if proj.shape != weights["decoder/embedding"].shape or not np.array_equal(
            proj, weights["decoder/embedding"]
        ):
            raise WhisperConversionError(
                f"{source}: {name!r} differs from the token embedding; Whisper ties them and "
                f"this converter assumes so"
            )
    return WhisperWeights(dims, weights, ignored, {})


def load_hf_whisper(directory: str | Path) -> WhisperWeights:
    """Reads an HF `openai/whisper-*` directory (config.json + safetensors)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise WhisperConversionError(f"{directory}: no config.json; not a Hugging Face model")
    config = json.loads(config_path.read_text())
    weights = convert_hf_tensors(_read_safetensors(directory), hf_dims(config), str(directory))
    generation = directory / "generation_config.json"
    if generation.is_file():
        gen = json.loads(generation.read_text())
        if "suppress_tokens" in gen:
            weights.config["suppress_ids"] = list(gen["suppress_tokens"])
        if "begin_suppress_tokens" in gen:
            weights.config["suppress_ids_begin"] = list(gen["begin_suppress_tokens"])
    return weights


# ---------------------------------------------------------------------------------------------
# CTranslate2.

_CT2_OPTIONS = {
    # option variable -> (expected value, what it means); anything else cannot be represented.
    "decoder/pre_norm": (1, "pre-LayerNorm blocks"),
    "decoder/activation": (3, "exact (erf) GELU"),
    "decoder/alibi": (0, "no ALiBi"),
    "decoder/scale_embeddings": (0, "unscaled embeddings"),
    "decoder/start_from_zero_embedding": (0, "no zero start embedding"),
}
_CT2_INFO = ("decoder/num_heads", "encoder/num_heads", "decoder/alignment_heads",
             "decoder/alignment_layer")  # fmt: skip


def ct2_dims(model: ct2.CTranslate2Model) -> WhisperDims:
    """WhisperDims from the tensor shapes and head counts stored in a CTranslate2 Whisper."""
    if model.spec_name != "WhisperSpec":
        raise WhisperConversionError(
            f"CTranslate2 model is a {model.spec_name}, not a WhisperSpec; pass a Whisper model"
        )
    names = model.variables.keys()

    def count(prefix: str) -> int:
        pattern = re.compile(re.escape(prefix) + r"(\d+)/")
        return len({m.group(1) for n in names if (m := pattern.match(n))})

    conv1 = model.get("encoder/conv1/weight")
    embedding = model.get("decoder/embeddings/weight")
    return WhisperDims(
        num_mels=int(conv1.shape[1]),
        vocab_size=int(embedding.shape[0]),
        encoder_positions=int(model.get("encoder/position_encodings/encodings").shape[0]),
        decoder_positions=int(model.get("decoder/position_encodings/encodings").shape[0]),
        width=int(embedding.shape[1]),
        encoder_layers=count("encoder/layer_"),
        encoder_heads=model.scalar("encoder/num_heads"),
        decoder_layers=count("decoder/layer_"),
        decoder_heads=model.scalar("decoder/num_heads"),
        mlp_dim=int(model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
    )


def convert_ct2_model(
    model: ct2.CTranslate2Model, source: str = "CTranslate2 model"
) -> WhisperWeights:
    """Maps a CTranslate2 WhisperSpec to canonical tensors, splitting fused projections."""
    dims = ct2_dims(model)
    d = dims.width
    collector = _Collector(dims, source)
    ignored: dict[str, str] = {}
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        used.add(name)
        if model.has(name + "_scale"):
            used.add(name + "_scale")
        return ct2.dequantize(model, name)

    def linear(src: str, dst: str) -> None:
        collector.put(f"{dst}/kernel", get(f"{src}/weight").T, f"{src}/weight")
        collector.put(f"{dst}/bias", get(f"{src}/bias"), f"{src}/bias")

    def norm(src: str, dst: str) -> None:
        collector.put(f"{dst}/scale", get(f"{src}/gamma"), f"{src}/gamma")
        collector.put(f"{dst}/bias", get(f"{src}/beta"), f"{src}/beta")

    def fused(src: str, dst: str, parts: tuple[str, ...]) -> None:
        weight, bias = get(f"{src}/weight"), get(f"{src}/bias")
        if weight.shape != (len(parts) * d, d) or bias.shape != (len(parts) * d,):
            raise WhisperConversionError(
                f"{source}: fused tensor {src!r} has shape {weight.shape}, expected "
                f"{(len(parts) * d, d)} ({'+'.join(parts)})"
            )
        for index, part in enumerate(parts):
            rows = slice(index * d, (index + 1) * d)
            collector.put(f"{dst}/{part}/kernel", weight[rows].T, f"{src}/weight")
            if part == "key":
                ignored[f"{src}/bias[{index * d}:{(index + 1) * d}]"] = (
                    "key bias: constant per query row, no effect after softmax"
                )
            else:
                collector.put(f"{dst}/{part}/bias", bias[rows], f"{src}/bias")

    def attention(src: str, dst: str, cross: bool) -> None:
        if cross:
            linear(f"{src}/linear_0", f"{dst}/query")
            fused(f"{src}/linear_1", dst, ("key", "value"))
            linear(f"{src}/linear_2", f"{dst}/out")
        else:
            fused(f"{src}/linear_0", dst, ("query", "key", "value"))
            linear(f"{src}/linear_1", f"{dst}/out")
        norm(f"{src}/layer_norm", f"{dst}_norm")

    def ffn(src: str, dst: str) -> None:
        linear(f"{src}/linear_0", f"{dst}/fc1")
        linear(f"{src}/linear_1", f"{dst}/fc2")
        norm(f"{src}/layer_norm", f"{dst}_norm")

    for name in ("conv1", "conv2"):
        weight = get(f"encoder/{name}/weight")
        collector.put(f"encoder/{name}/kernel", weight.transpose(2, 1, 0), f"encoder/{name}/weight")
        collector.put(f"encoder/{name}/bias", get(f"encoder/{name}/bias"), f"encoder/{name}/bias")
    collector.put("encoder/positions", get("encoder/position_encodings/encodings"), "encoder/position_encodings/encodings")  # fmt: skip
    norm("encoder/layer_norm", "encoder/final_norm")
    for i in range(dims.encoder_layers):
        attention(f"encoder/layer_{i}/self_attention", f"encoder/layer_{i}/attention", False)
        ffn(f"encoder/layer_{i}/ffn", f"encoder/layer_{i}/mlp")
    collector.put(
        "decoder/embedding", get("decoder/embeddings/weight"), "decoder/embeddings/weight"
    )
    collector.put("decoder/positions", get("decoder/position_encodings/encodings"), "decoder/position_encodings/encodings")  # fmt: skip
    norm("decoder/layer_norm", "decoder/final_norm")
    for i in range(dims.decoder_layers):
        p = f"decoder/layer_{i}"
        attention(f"{p}/self_attention", f"{p}/self_attention", False)
        attention(f"{p}/attention", f"{p}/cross_attention", True)
        ffn(f"{p}/ffn", f"{p}/mlp")

    for name, (expected, meaning) in _CT2_OPTIONS.items():
        if model.has(name):
            used.add(name)
            if model.scalar(name) != expected:
                raise WhisperConversionError(
                    f"{source}: option {name}={model.scalar(name)} but Whisper needs {expected} "
                    f"({meaning}); this model is not a standard Whisper"
                )
            ignored[name] = f"option checked: {meaning}"
    for name in _CT2_INFO:
        if model.has(name):
            used.add(name)
            ignored[name] = "option (read from tensor shapes / not needed for decoding)"
    for alias, target in model.aliases.items():
        if alias == "decoder/projection/weight" and target == "decoder/embeddings/weight":
            ignored[alias] = "alias: output projection tied to the token embedding"
        else:
            raise WhisperConversionError(f"{source}: unexpected alias {alias!r} -> {target!r}")
    unused = sorted(set(model.variables) - used)
    if unused:
        raise WhisperConversionError(
            f"{source}: {len(unused)} variables not understood ({', '.join(unused[:8])}); "
            f"this converter reads standard CTranslate2 WhisperSpec models only"
        )
    config = {k: model.config[k] for k in ("suppress_ids", "suppress_ids_begin", "lang_ids",
                                          "alignment_heads") if k in model.config}  # fmt: skip
    return WhisperWeights(dims, collector.finish(), ignored, config)


def load_ct2_whisper(directory: str | Path) -> WhisperWeights:
    """Reads a CTranslate2 Whisper directory (model.bin + config.json)."""
    try:
        model = ct2.load_ctranslate2_dir(directory)
    except ct2.CTranslate2FormatError as error:
        raise WhisperConversionError(str(error)) from None
    return convert_ct2_model(model, str(directory))


def detect_source(directory: str | Path) -> str:
    """'ct2' for a CTranslate2 directory (model.bin), 'hf' for safetensors + config.json."""
    directory = Path(directory)
    if not directory.is_dir():
        raise WhisperConversionError(f"--src={directory}: no such directory")
    if (directory / "model.bin").is_file():
        return "ct2"
    if (directory / "config.json").is_file() and any(directory.glob("*.safetensors")):
        return "hf"
    raise WhisperConversionError(
        f"--src={directory}: neither a CTranslate2 directory (model.bin) nor a Hugging Face "
        f"one (config.json + *.safetensors)"
    )


LOADERS: dict[str, Callable[[str | Path], WhisperWeights]] = {
    "ct2": load_ct2_whisper,
    "hf": load_hf_whisper,
}


def load_whisper_weights(directory: str | Path) -> WhisperWeights:
    """Reads Whisper weights from an HF or CTranslate2 directory (auto-detected)."""
    return LOADERS[detect_source(directory)](directory)


# ---------------------------------------------------------------------------------------------
# Canonical tensors -> flax parameters of nn.model.ASRModel.


def _attention_params(tensors: dict, prefix: str, heads: int) -> dict:
    params = {}
    for proj in ("query", "key", "value", "out"):
        kernel = tensors[f"{prefix}/{proj}/kernel"]  # [D, D]
        width = kernel.shape[0]
        if proj == "out":
            entry = {"kernel": kernel.reshape(heads, width // heads, width)}  # [H, K, D]
        else:
            entry = {"kernel": kernel.reshape(width, heads, width // heads)}  # [D, H, K]
        if f"{prefix}/{proj}/bias" in tensors:
            bias = tensors[f"{prefix}/{proj}/bias"]
            entry["bias"] = bias if proj == "out" else bias.reshape(heads, width // heads)
        params[proj] = entry
    return params


def _norm_params(tensors: dict, prefix: str) -> dict:
    return {"scale": tensors[f"{prefix}/scale"], "bias": tensors[f"{prefix}/bias"]}


def _mlp_params(tensors: dict, prefix: str) -> dict:
    return {
        fc: {"kernel": tensors[f"{prefix}/{fc}/kernel"], "bias": tensors[f"{prefix}/{fc}/bias"]}
        for fc in ("fc1", "fc2")
    }


def encoder_params(weights: WhisperWeights) -> dict:
    """The `encoder` subtree of ASRModel params (nn.whisper.WhisperEncoder)."""
    t, dims = weights.tensors, weights.dims
    params = {
        "conv1": {"kernel": t["encoder/conv1/kernel"], "bias": t["encoder/conv1/bias"]},
        "conv2": {"kernel": t["encoder/conv2/kernel"], "bias": t["encoder/conv2/bias"]},
        "position_embedding": t["encoder/positions"],
        "final_norm": _norm_params(t, "encoder/final_norm"),
    }
    for i in range(dims.encoder_layers):
        p = f"encoder/layer_{i}"
        params[f"layer_{i}"] = {
            "self_attn_norm": _norm_params(t, f"{p}/attention_norm"),
            "self_attn": _attention_params(t, f"{p}/attention", dims.encoder_heads),
            "mlp_norm": _norm_params(t, f"{p}/mlp_norm"),
            "mlp": _mlp_params(t, f"{p}/mlp"),
        }
    return params


def mask_embedding_row(embedding: np.ndarray, eot_id: int) -> np.ndarray:
    """The [MASK] row appended to Whisper's embedding: the mean of the text-token rows.

    An average token is a neutral start for a token the pre-trained decoder never saw; fine-
    tuning moves it. For an AR decoder the row only adds one output that decoding suppresses.
    """
    return embedding[:eot_id].astype(np.float32).mean(axis=0).astype(embedding.dtype)


def decoder_params(weights: WhisperWeights, eot_id: int) -> dict:
    """A TransformerDecoder subtree from Whisper's decoder, with the [MASK] row appended."""
    t, dims = weights.tensors, weights.dims
    embedding = t["decoder/embedding"]
    embedding = np.concatenate([embedding, mask_embedding_row(embedding, eot_id)[None]], axis=0)
    params = {
        "embed": {"embedding": embedding},
        "position_embedding": t["decoder/positions"],
        "final_norm": _norm_params(t, "decoder/final_norm"),
    }
    for i in range(dims.decoder_layers):
        p = f"decoder/layer_{i}"
        params[f"layer_{i}"] = {
            "self_attn_norm": _norm_params(t, f"{p}/self_attention_norm"),
            "self_attn": _attention_params(t, f"{p}/self_attention", dims.decoder_heads),
            "cross_attn_norm": _norm_params(t, f"{p}/cross_attention_norm"),
            "cross_attn": _attention_params(t, f"{p}/cross_attention", dims.decoder_heads),
            "mlp_norm": _norm_params(t, f"{p}/mlp_norm"),
            "mlp": _mlp_params(t, f"{p}/mlp"),
        }
    return params


def whisper_params(weights: WhisperWeights, config: Any, eot_id: int, dtype=np.float32) -> dict:
    """Flax params for `ASRModel(config)` from Whisper weights, checked against the model.

    The encoder comes from Whisper's encoder; `ar_decoder` and `mdm_decoder` (whichever the
    config has) both start from Whisper's decoder (MDM-ASR: the same weights, bidirectional
    self-attention). Every leaf's path and shape must equal the model's own initialisation;
    a mismatch is an error naming the parameter.
    """
    decoder = decoder_params(weights, eot_id)
    params: dict[str, Any] = {"encoder": encoder_params(weights)}
    if config.ar_decoder is not None:
        params["ar_decoder"] = decoder
    if config.mdm_decoder is not None:
        params["mdm_decoder"] = decoder
    if config.ctc:
        raise WhisperConversionError("a Whisper checkpoint has no CTC head; set ctc=False")
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), params)
    check_params_match_model(params, config)
    return params


def check_params_match_model(params: dict, config: Any) -> None:
    """Raises WhisperConversionError unless `params` has exactly the model's paths and shapes."""
    model = ASRModel(config)
    frames = min(64, 2 * config.encoder.max_frames)
    abstract = jax.eval_shape(
        lambda key: init_params(model, key, num_frames=frames, canvas_length=4),
        jax.random.PRNGKey(0),
    )
    expected = {
        jax.tree_util.keystr(path): leaf.shape
        for path, leaf in jax.tree_util.tree_leaves_with_path(flax.linen.unbox(abstract["params"]))
    }
    got = {
        jax.tree_util.keystr(path): leaf.shape
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }
    problems = [f"missing {name}" for name in sorted(set(expected) - set(got))]
    problems += [f"unexpected {name}" for name in sorted(set(got) - set(expected))]
    problems += [
        f"{name}: shape {got[name]} but the model has {expected[name]}"
        for name in sorted(set(got) & set(expected))
        if tuple(got[name]) != tuple(expected[name])
    ]
    if problems:
        raise WhisperConversionError(
            "converted Whisper parameters do not fit the model: " + "; ".join(problems[:10])
        )


# ---------------------------------------------------------------------------------------------
# Whole conversion: source directory -> checkpoint directory.

# Special tokens faster-whisper / openai-whisper always suppress, by name (absent ones skipped).
_ALWAYS_SUPPRESSED = ("<|transcribe|>", "<|translate|>", "<|startoftranscript|>",
                      "<|startofprev|>", "<|startoflm|>", "<|nospeech|>", "<|nocaptions|>")  # fmt: skip


def suppression_ids(
    weights: WhisperWeights, tokenizer_json: str | Path, tokenizer: WhisperTokenizer
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Token ids greedy/beam decoding must never emit, as faster-whisper does.

    (forbidden, begin_forbidden). forbidden: at every step (the source's list, e.g.
    CTranslate2's config.json `suppress_ids` = openai-whisper's non-speech tokens, plus the
    task/start tokens, plus our [MASK]). begin_forbidden: additionally at the first generated
    step (" " and <|endoftext|>, faster-whisper's `suppress_blank`).
    """
    import tokenizers

    bpe = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    ids = {int(i) for i in weights.config.get("suppress_ids", []) if int(i) >= 0}
    ids.update(i for name in _ALWAYS_SUPPRESSED if (i := bpe.token_to_id(name)) is not None)
    ids.add(tokenizer.mask_id)
    begin = weights.config.get("suppress_ids_begin")
    if begin is None:
        space = bpe.token_to_id("\u0120")  # byte-level BPE's " " (id 220 in Whisper)
        begin = ([] if space is None else [space]) + [tokenizer.eot_id]
    return tuple(sorted(ids)), tuple(sorted(int(i) for i in begin))


def convert_whisper(
    src: str | Path,
    out: str | Path,
    *,
    decoders: tuple[str, ...] = ("ar",),
    language: str = "en",
    full_window: bool = True,
) -> Path:
    """Converts an HF or CTranslate2 Whisper directory into a checkpoint directory.

    decoders: "ar" (Whisper's own causal decoder: zero-shot Whisper, the AR baseline) and/or
    "mdm" (the same weights as a bidirectional MDM-ASR decoder, to be fine-tuned).
    The checkpoint's `decoding` section records the token suppression faster-whisper applies,
    so greedy decoding of the converted model reproduces faster-whisper's transcripts.
    full_window: pad every input to Whisper's 30 s window inside the encoder (what the released
    weights expect); False runs short inputs in short windows (faster, less accurate zero-shot).
    """
    unknown = set(decoders) - {"ar", "mdm"}
    if unknown or not decoders:
        raise WhisperConversionError(
            f"--decoders={','.join(decoders)}: choose 'ar', 'mdm' or 'ar,mdm'"
        )
    src = Path(src)
    kind = detect_source(src)
    weights = LOADERS[kind](src)
    if not (src / "tokenizer.json").is_file():
        raise WhisperConversionError(
            f"{src}: no tokenizer.json; the checkpoint needs Whisper's tokenizer next to the weights"
        )
    tokenizer = WhisperTokenizer(
        src / "tokenizer.json", n_vocab=weights.dims.vocab_size, language=language
    )
    config = whisper_model_config(
        weights.dims.size(),
        tokenizer.prompt_ids,
        tokenizer.eos_id,
        ar_decoder="ar" in decoders,
        mdm_decoder="mdm" in decoders,
        min_frames=WHISPER_FRAMES if full_window else 0,
    )
    params = whisper_params(weights, config, tokenizer.eot_id)
    forbidden, begin_forbidden = suppression_ids(weights, src / "tokenizer.json", tokenizer)
    decoding = DecodingDefaults(
        sampler="ar_greedy" if "ar" in decoders else PAPER_SAMPLER,
        forbidden_ids=forbidden,
        begin_forbidden_ids=begin_forbidden,
        # faster-whisper / openai-whisper stop after half the text context (224 tokens)
        max_len=weights.dims.decoder_positions // 2,
    )
    info = {
        "source": str(src.absolute()),
        "source_format": {"ct2": "ctranslate2", "hf": "huggingface"}[kind],
        "whisper_dims": dataclasses.asdict(weights.dims),
        "ignored_source_tensors": weights.ignored,
    }
    return export_checkpoint(
        out,
        config,
        params,
        FeatureConfig(kind="whisper", num_mels=weights.dims.num_mels),
        tokenizer,
        decoding=decoding,
        info=info,
    )
