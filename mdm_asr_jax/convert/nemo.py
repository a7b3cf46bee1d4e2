"""Import a NeMo Canary model (`.nemo` archive) into an mdm_asr_jax checkpoint directory.

A `.nemo` file is a tar archive holding `model_config.yaml` (the model's OmegaConf config),
`model_weights.ckpt` (a PyTorch state dict) and the tokenizer artifacts the config points to
(`nemo:<file>`; Canary: one SentencePiece model per language plus the special-token model
`spl_tokens`). This module reads all three without PyTorch: the state dict is a zip of a pickle
and raw storages, unpickled here by a restricted reader that only builds tensors (`convert.torch_zip.read_torch_zip`).

Mapping (NeMo state-dict name -> our param path; every tensor is mapped, folded, checked or
reported as unused, and unknown tensors or shape mismatches are errors naming the tensor):
  encoder.pre_encode.conv.{0,2,3,5,6}        -> encoder/subsampling/{conv_0, depthwise_k, pointwise_k}
  encoder.pre_encode.out                     -> encoder/subsampling/project
  encoder.layers.i.{norm_,}feed_forward{1,2} -> encoder/block_i/ffn{1,2}{_norm,}
  encoder.layers.i.self_attn.linear_{q,k,v,out,pos}, pos_bias_{u,v} -> encoder/block_i/attn/...
  encoder.layers.i.conv.{pointwise_conv1, depthwise_conv (+ batch_norm folded), pointwise_conv2}
                                             -> encoder/block_i/conv/{pointwise_in, depthwise, pointwise_out}
  encoder_decoder_proj                       -> encoder/output_proj (canary-180m-flash)
  transf_decoder._embedding.token_embedding  -> {mdm,ar}_decoder/embed (+ a [MASK] row)
  transf_decoder._embedding.layer_norm       -> {mdm,ar}_decoder/embed_norm_layer
  transf_decoder._decoder.layers.i.{layer_norm_1, first_sub_layer, layer_norm_2,
      second_sub_layer, layer_norm_3, third_sub_layer} -> layer_i/{self_attn_norm, self_attn,
      cross_attn_norm, cross_attn, mlp_norm, mlp}
  transf_decoder._decoder.final_layer_norm   -> final_norm
  log_softmax.mlp.layer0                     -> tied to the embedding (checked) + output_bias
The fixed sinusoid table of the decoder and the preprocessor's window / filterbank are buffers:
checked or reported, not copied. The vocabulary keeps NeMo's rounding to a multiple of 8
(filler ids are special), then appends [MASK]: its embedding row starts as the mean token
embedding and its output bias at MASK_LOGIT_BIAS, so AR log-probabilities equal NeMo's.

Legend: D width, H heads, K head dim, V vocabulary, C channels, F mlp width.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np

from mdm_asr_jax.audio import FRAME_SECONDS, FeatureConfig
from mdm_asr_jax.checkpoint import DecodingDefaults, export_checkpoint
from mdm_asr_jax.convert.torch_zip import TorchZipError, read_torch_zip
from mdm_asr_jax.diffusion.samplers import DEFAULT_NFE, PAPER_SAMPLER
from mdm_asr_jax.nn.config import DecoderConfig, EncoderConfig, ModelConfig
from mdm_asr_jax.nn.layers import interleaved_sinusoidal_table
from mdm_asr_jax.nn.model import ASRModel, init_params
from mdm_asr_jax.text import AggregateTokenizer, canary_prompt_tokens

CANVAS_LENGTH = 256  # the paper's MDM canvas (decoding default written into the checkpoint)
MASK_LOGIT_BIAS = -1.0e4  # output bias of the appended [MASK] id (never predicted before training)
NEMO_VOCAB_MULTIPLE = 8  # EncDecMultiTaskModel: vocab_size = 8 * ceil(tokenizer.vocab_size / 8)
BATCH_NORM_EPS = 1e-5  # torch.nn.BatchNorm1d default, which NeMo's ConformerConvolution uses


class NemoConversionError(ValueError):
    """A .nemo archive that cannot be imported (names the file, key or tensor and the fix)."""


# ---------------------------------------------------------------------------------------------
# The .nemo archive
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class NemoArchive:
    """What a .nemo file holds: config, tensors, and the extracted tokenizer models."""

    path: Path
    config: dict[str, Any]
    tensors: dict[str, np.ndarray]
    tokenizer_models: dict[str, Path]  # language -> SentencePiece .model (config order)
    other_files: list[str]  # archive members not used by the import


def _member_name(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def _nemo_ref(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith("nemo:"):
        return value[len("nemo:") :]
    return None


def read_nemo(path: str | Path, extract_dir: str | Path | None = None) -> NemoArchive:
    """Read config, weights and tokenizer models of a `.nemo` file.

    Tokenizer models are extracted into `extract_dir` (a temporary folder if None).
    """
    import yaml  # PyYAML: only needed to read .nemo archives, kept lazy

    path = Path(path)
    if not path.is_file():
        raise NemoConversionError(f"{path} does not exist or is not a file; pass a .nemo archive")
    try:
        tar = tarfile.open(path, "r:*")
    except tarfile.TarError as err:
        raise NemoConversionError(f"{path} is not a .nemo archive (a tar file): {err}") from err
    with tar:
        members = {_member_name(m.name): m for m in tar.getmembers() if m.isfile()}
        if "model_config.yaml" not in members or "model_weights.ckpt" not in members:
            raise NemoConversionError(
                f"{path} lacks model_config.yaml or model_weights.ckpt (members: "
                f"{sorted(members)[:10]}); is it a NeMo model archive?"
            )
        config = yaml.safe_load(tar.extractfile(members["model_config.yaml"]).read())
        extract_dir = Path(extract_dir or tempfile.mkdtemp(prefix="nemo_tokenizers_"))
        extract_dir.mkdir(parents=True, exist_ok=True)
        weights = extract_dir / "model_weights.ckpt"  # on disk: the zip is read lazily
        with tar.extractfile(members["model_weights.ckpt"]) as src, open(weights, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        try:
            tensors = read_torch_zip(weights)
        except TorchZipError as err:
            raise NemoConversionError(f"{path}: model_weights.ckpt: {err}") from None
        weights.unlink()
        tokenizer_cfg = config.get("tokenizer") or {}
        if str(tokenizer_cfg.get("type", "")).lower() != "agg":
            raise NemoConversionError(
                f"{path}: tokenizer.type={tokenizer_cfg.get('type')!r}; only Canary's aggregate "
                "tokenizer (type 'agg') is supported"
            )
        used = {"model_config.yaml", "model_weights.ckpt"}
        models: dict[str, Path] = {}
        for lang, lang_cfg in (tokenizer_cfg.get("langs") or {}).items():
            ref = _nemo_ref(lang_cfg.get("model_path"))
            if ref is None or ref not in members:
                raise NemoConversionError(
                    f"{path}: tokenizer.langs.{lang}.model_path={lang_cfg.get('model_path')!r} "
                    "does not point into the archive"
                )
            target = extract_dir / f"{lang}.model"
            target.write_bytes(tar.extractfile(members[ref]).read())
            models[lang] = target
            used.add(ref)
            for key in ("vocab_path", "spe_tokenizer_vocab"):
                if (other := _nemo_ref(lang_cfg.get(key))) is not None:
                    used.add(other)  # derived from the .model; not needed
    if not models:
        raise NemoConversionError(f"{path}: tokenizer.langs is empty")
    return NemoArchive(path, config, tensors, models, sorted(set(members) - used))


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise NemoConversionError(message)


def encoder_config_from_nemo(config: dict[str, Any]) -> EncoderConfig:
    """EncoderConfig of the FastConformer described by a NeMo model config."""
    enc = config.get("encoder") or {}
    _require(
        str(enc.get("_target_", "")).endswith("ConformerEncoder"),
        f"encoder._target_={enc.get('_target_')!r}; only NeMo's ConformerEncoder is supported",
    )
    checks = {
        "subsampling": ("dw_striding", enc.get("subsampling", "striding")),
        "self_attention_model": ("rel_pos", enc.get("self_attention_model", "rel_pos")),
        "conv_norm_type": ("batch_norm", enc.get("conv_norm_type", "batch_norm")),
        "causal_downsampling": (False, bool(enc.get("causal_downsampling", False))),
        "use_bias": (True, bool(enc.get("use_bias", True))),
        "att_context_style": ("regular", enc.get("att_context_style", "regular")),
        "reduction": (None, enc.get("reduction")),
        "global_tokens": (0, enc.get("global_tokens", 0) or 0),
        "conv_context_size": (None, enc.get("conv_context_size")),
    }
    for key, (want, got) in checks.items():
        _require(
            got == want, f"encoder.{key}={got!r} is not supported (the importer handles {want!r})"
        )
    context = enc.get("att_context_size") or [-1, -1]
    _require(
        list(context) == [-1, -1],
        f"encoder.att_context_size={context}: limited attention context is not supported",
    )
    feat_out = enc.get("feat_out", -1)
    _require(feat_out in (-1, None, enc["d_model"]), f"encoder.feat_out={feat_out} unsupported")
    width = int(enc["d_model"])
    channels = int(enc.get("subsampling_conv_channels", -1))
    defaults = config.get("model_defaults") or {}
    dec_width = int(defaults.get("lm_dec_hidden", width))
    return EncoderConfig(
        kind="fastconformer",
        num_mels=int(enc["feat_in"]),
        width=width,
        num_layers=int(enc["n_layers"]),
        num_heads=int(enc.get("n_heads", 4)),
        mlp_dim=width * int(enc.get("ff_expansion_factor", 4)),
        conv_kernel=int(enc.get("conv_kernel_size", 31)),
        subsampling=int(enc.get("subsampling_factor", 4)),
        subsampling_channels=width if channels == -1 else channels,
        positions="relative",
        activation="swish",
        conv_norm="none",
        xscaling=bool(enc.get("xscaling", True)),
        output_width=dec_width if dec_width != width else 0,
        norm_eps=1e-5,
        dropout=0.0,
        attention_dropout=0.0,
    )


def decoder_config_from_nemo(config: dict[str, Any], bidirectional: bool) -> DecoderConfig:
    """DecoderConfig reproducing NeMo's TransformerDecoderNM of a Canary config."""
    _require(
        not (config.get("transf_encoder") or {}).get("num_layers", 0),
        "transf_encoder.num_layers > 0: an extra Transformer encoder is not supported",
    )
    dec = (config.get("transf_decoder") or {}).get("config_dict") or {}
    _require(bool(dec), "transf_decoder.config_dict is missing")
    _require(bool(dec.get("pre_ln", False)), "transf_decoder.config_dict.pre_ln must be true")
    _require(
        bool((config.get("transf_decoder") or {}).get("pre_ln_final_layer_norm", True)),
        "transf_decoder.pre_ln_final_layer_norm must be true",
    )
    head = config.get("head") or {}
    _require(
        int(head.get("num_layers", 1)) == 1,
        f"head.num_layers={head.get('num_layers')}: only a single-layer token classifier",
    )
    width = int(dec["hidden_size"])
    learned = bool(dec.get("learn_positional_encodings", False))
    return DecoderConfig(
        width=width,
        num_layers=int(dec["num_layers"]),
        num_heads=int(dec["num_attention_heads"]),
        mlp_dim=int(dec["inner_size"]),
        max_length=int(dec.get("max_sequence_length", 512)),
        positions="learned" if learned else "sinusoidal",
        position_scale=1.0 if learned else 1.0 / math.sqrt(width),
        bidirectional=bidirectional,
        embed_norm=True,
        scale_embedding=False,
        tied_output=True,
        output_bias=True,
        activation=str(dec.get("hidden_act", "relu")),
        attention_bias=(True, True, True, True),
        norm_eps=1e-5,
        dropout=0.0,
        attention_dropout=0.0,
    )


def feature_config_from_nemo(config: dict[str, Any]) -> tuple[Any, list[str]]:
    """FeatureConfig(kind="nemo") of the preprocessor, and warnings for settings we differ on."""
    pre = config.get("preprocessor") or {}
    expected = {
        "window_size": 0.025,
        "window_stride": FRAME_SECONDS,
        "window": "hann",
        "normalize": "per_feature",
        "n_fft": 512,
        "log": True,
        "frame_splicing": 1,
        "pad_to": 0,
        "mag_power": 2.0,
        "log_zero_guard_type": "add",
    }
    warnings = [
        f"preprocessor.{key}={pre[key]!r} differs from the supported {want!r}: features will differ"
        for key, want in expected.items()
        if key in pre and pre[key] != want
    ]
    features = FeatureConfig(
        kind="nemo",
        num_mels=int(pre.get("features", 64)),
        sample_rate=int(pre.get("sample_rate", config.get("sample_rate", 16000))),
        dither=0.0,
        preemphasis=float(pre.get("preemph", 0.97) or 0.0),
    )
    return features, warnings


def _slot_value(value: Any) -> str:
    text = str(value)
    return text[2:-2] if text.startswith("<|") and text.endswith("|>") else text


def prompt_tokens_from_nemo(
    config: dict[str, Any],
    source_lang: str | None = None,
    target_lang: str | None = None,
    pnc: bool | None = None,
) -> tuple[str, ...]:
    """The decoder prompt (special-token strings) for ASR: the config's prompt defaults, with
    the given overrides (source/target language, punctuation and capitalisation)."""
    prompt_format = config.get("prompt_format", "canary")
    slots: dict[str, Any] = {}
    for turn in config.get("prompt_defaults") or []:
        if turn.get("role") == "user":
            slots = dict(turn.get("slots") or {})
    if slots.get("decodercontext"):
        raise NemoConversionError("prompt_defaults with a decoder context are not supported")
    source = source_lang or _slot_value(slots.get("source_lang", "en"))
    target = target_lang or _slot_value(slots.get("target_lang", source))

    def flag(name: str, default: bool) -> bool:
        value = slots.get(name)
        if value is None:
            return default
        return _slot_value(value) in ("yes", "true", "True", "1", name)

    use_pnc = flag("pnc", True) if pnc is None else pnc
    if prompt_format == "canary2":
        return canary_prompt_tokens(
            source,
            target,
            prompt_format="canary2",
            pnc=use_pnc,
            itn=flag("itn", False),
            timestamp=flag("timestamp", False),
            diarize=flag("diarize", False),
            emotion=str(slots.get("emotion", "<|emo:undefined|>")),
        )
    if prompt_format == "canary":
        task = "translate" if source != target else "transcribe"
        return canary_prompt_tokens(source, target, prompt_format="canary", task=task, pnc=use_pnc)
    raise NemoConversionError(
        f"prompt_format={prompt_format!r}; the importer knows 'canary' and 'canary2'"
    )


# ---------------------------------------------------------------------------------------------
# Tensors -> params
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ConversionReport:
    """Where every NeMo tensor went."""

    mapped: dict[str, str] = dataclasses.field(default_factory=dict)  # nemo name -> our path
    unused: dict[str, str] = dataclasses.field(default_factory=dict)  # nemo name -> why
    warnings: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Mapper:
    """Collects our params from NeMo tensors, recording the source of each."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.tensors = tensors
        self.params: dict[str, np.ndarray] = {}
        self.report = ConversionReport()

    def get(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise NemoConversionError(
                f"tensor {name!r} is missing from model_weights.ckpt; the archive does not match "
                "its config"
            )
        return np.asarray(self.tensors[name], np.float32)

    def put(self, path: str, value: np.ndarray, *sources: str) -> None:
        self.params[path] = np.ascontiguousarray(value, np.float32)
        for source in sources:
            self.report.mapped[source] = path

    def unused(self, name: str, why: str) -> None:
        if name in self.tensors:
            self.report.unused[name] = why

    # -- layer kinds --------------------------------------------------------------------------
    def linear(self, src: str, dst: str, bias: bool = True) -> None:
        self.put(f"{dst}/kernel", self.get(f"{src}.weight").T, f"{src}.weight")
        if bias:
            self.put(f"{dst}/bias", self.get(f"{src}.bias"), f"{src}.bias")

    def norm(self, src: str, dst: str) -> None:
        self.put(f"{dst}/scale", self.get(f"{src}.weight"), f"{src}.weight")
        self.put(f"{dst}/bias", self.get(f"{src}.bias"), f"{src}.bias")

    def heads_in(self, src: str, dst: str, heads: int) -> None:
        """Linear D -> D as a [D, H, K] kernel (query/key/value/pos projections)."""
        weight = self.get(f"{src}.weight")
        width = weight.shape[1]
        self.put(f"{dst}/kernel", weight.T.reshape(width, heads, -1), f"{src}.weight")
        if f"{src}.bias" in self.tensors:
            self.put(f"{dst}/bias", self.get(f"{src}.bias").reshape(heads, -1), f"{src}.bias")

    def heads_out(self, src: str, dst: str, heads: int) -> None:
        weight = self.get(f"{src}.weight")
        self.put(f"{dst}/kernel", weight.T.reshape(heads, -1, weight.shape[0]), f"{src}.weight")
        self.put(f"{dst}/bias", self.get(f"{src}.bias"), f"{src}.bias")

    def conv2d(self, src: str, dst: str) -> None:
        """torch [out, in/groups, kh, kw] -> flax [kh, kw, in/groups, out]."""
        weight = self.get(f"{src}.weight")
        self.put(f"{dst}/kernel", weight.transpose(2, 3, 1, 0), f"{src}.weight")
        self.put(f"{dst}/bias", self.get(f"{src}.bias"), f"{src}.bias")

    def pointwise1d(self, src: str, dst: str) -> None:
        """torch Conv1d kernel 1 [out, in, 1] -> Dense kernel [in, out]."""
        weight = self.get(f"{src}.weight")
        self.put(f"{dst}/kernel", weight[:, :, 0].T, f"{src}.weight")
        self.put(f"{dst}/bias", self.get(f"{src}.bias"), f"{src}.bias")

    def depthwise_batch_norm(self, conv: str, norm: str, dst: str) -> None:
        """Depthwise Conv1d [D, 1, k] followed by BatchNorm1d in eval -> one depthwise conv."""
        weight, bias = self.get(f"{conv}.weight"), self.get(f"{conv}.bias")
        mean, var = self.get(f"{norm}.running_mean"), self.get(f"{norm}.running_var")
        gamma, beta = self.get(f"{norm}.weight"), self.get(f"{norm}.bias")
        scale = gamma / np.sqrt(var + BATCH_NORM_EPS)  # [D]
        kernel = weight.transpose(2, 1, 0) * scale[None, None, :]  # [k, 1, D]
        folded_bias = (bias - mean) * scale + beta
        sources = [f"{conv}.{n}" for n in ("weight", "bias")]
        sources += [f"{norm}.{n}" for n in ("running_mean", "running_var", "weight", "bias")]
        self.put(f"{dst}/kernel", kernel, *sources)
        self.put(f"{dst}/bias", folded_bias)
        self.unused(f"{norm}.num_batches_tracked", "batch-norm step counter (training only)")


def _encoder_params(m: _Mapper, cfg: EncoderConfig) -> None:
    src, dst = "encoder.pre_encode", "encoder/subsampling"
    m.conv2d(f"{src}.conv.0", f"{dst}/conv_0")
    stages = int(round(math.log2(cfg.subsampling)))
    for stage in range(1, stages):
        m.conv2d(f"{src}.conv.{2 + 3 * (stage - 1)}", f"{dst}/depthwise_{stage}")
        m.conv2d(f"{src}.conv.{3 + 3 * (stage - 1)}", f"{dst}/pointwise_{stage}")
    m.linear(f"{src}.out", f"{dst}/project")
    shared_u = m.tensors.get("encoder.pos_bias_u")  # untie_biases=False: one pair for all layers
    shared_v = m.tensors.get("encoder.pos_bias_v")
    for i in range(cfg.num_layers):
        src, dst = f"encoder.layers.{i}", f"encoder/block_{i}"
        for k in (1, 2):
            m.norm(f"{src}.norm_feed_forward{k}", f"{dst}/ffn{k}_norm")
            m.linear(f"{src}.feed_forward{k}.linear1", f"{dst}/ffn{k}/fc1")
            m.linear(f"{src}.feed_forward{k}.linear2", f"{dst}/ffn{k}/fc2")
        m.norm(f"{src}.norm_self_att", f"{dst}/attn_norm")
        for name, ours in (("q", "query"), ("k", "key"), ("v", "value")):
            m.heads_in(f"{src}.self_attn.linear_{name}", f"{dst}/attn/{ours}", cfg.num_heads)
        m.heads_out(f"{src}.self_attn.linear_out", f"{dst}/attn/out", cfg.num_heads)
        m.heads_in(f"{src}.self_attn.linear_pos", f"{dst}/attn/pos_proj", cfg.num_heads)
        for bias, shared in (("pos_bias_u", shared_u), ("pos_bias_v", shared_v)):
            name = f"{src}.self_attn.{bias}"
            if name in m.tensors:
                m.put(f"{dst}/attn/{bias}", m.get(name), name)
            elif shared is not None:
                m.put(f"{dst}/attn/{bias}", np.asarray(shared, np.float32), f"encoder.{bias}")
            else:
                m.get(name)  # raises: missing
        m.norm(f"{src}.norm_conv", f"{dst}/conv/norm")
        m.pointwise1d(f"{src}.conv.pointwise_conv1", f"{dst}/conv/pointwise_in")
        m.depthwise_batch_norm(
            f"{src}.conv.depthwise_conv", f"{src}.conv.batch_norm", f"{dst}/conv/depthwise"
        )
        m.pointwise1d(f"{src}.conv.pointwise_conv2", f"{dst}/conv/pointwise_out")
        m.norm(f"{src}.norm_out", f"{dst}/out_norm")
    if cfg.output_width:
        m.linear("encoder_decoder_proj", "encoder/output_proj")


def _decoder_params(
    m: _Mapper, cfg: DecoderConfig, dst: str, vocab_size: int, piece_count: int
) -> None:
    """One decoder's params (called once per head: mdm and/or ar share the NeMo weights)."""
    src = "transf_decoder"
    embedding = m.get(f"{src}._embedding.token_embedding.weight")  # [V_nemo, D]
    nemo_vocab = embedding.shape[0]
    if vocab_size != nemo_vocab + 1:
        raise NemoConversionError(
            f"tensor {src}._embedding.token_embedding.weight has {nemo_vocab} rows but the "
            f"tokenizer gives {vocab_size - 1} ids before [MASK]; tokenizer and weights disagree"
        )
    mask_row = embedding[:piece_count].mean(axis=0, keepdims=True)
    m.put(
        f"{dst}/embed/embedding",
        np.concatenate([embedding, mask_row], axis=0),
        f"{src}._embedding.token_embedding.weight",
    )
    positions = f"{src}._embedding.position_embedding"
    if cfg.positions == "learned":
        m.put(f"{dst}/position_embedding", m.get(f"{positions}.weight"), f"{positions}.weight")
    elif f"{positions}.pos_enc" in m.tensors:
        table = m.get(f"{positions}.pos_enc")
        ours = interleaved_sinusoidal_table(table.shape[0], table.shape[1]) * cfg.position_scale
        if not np.allclose(table, ours, atol=1e-5):
            raise NemoConversionError(
                f"buffer {positions}.pos_enc is not NeMo's fixed sinusoid table / sqrt(D)"
            )
        m.report.unused[f"{positions}.pos_enc"] = "fixed sinusoid table (checked, recomputed)"
    m.norm(f"{src}._embedding.layer_norm", f"{dst}/embed_norm_layer")
    m.unused(
        f"{src}._embedding.token_type_embedding.weight",
        "token-type embedding (NeMo's decoder never passes token types)",
    )
    for i in range(cfg.num_layers):
        layer, ours = f"{src}._decoder.layers.{i}", f"{dst}/layer_{i}"
        parts = (
            ("layer_norm_1", "first_sub_layer", "self_attn"),
            ("layer_norm_2", "second_sub_layer", "cross_attn"),
        )
        for norm, sub, attn in parts:
            m.norm(f"{layer}.{norm}", f"{ours}/{attn}_norm")
            for name, proj in (("query_net", "query"), ("key_net", "key"), ("value_net", "value")):
                m.heads_in(f"{layer}.{sub}.{name}", f"{ours}/{attn}/{proj}", cfg.num_heads)
            m.heads_out(f"{layer}.{sub}.out_projection", f"{ours}/{attn}/out", cfg.num_heads)
        m.norm(f"{layer}.layer_norm_3", f"{ours}/mlp_norm")
        m.linear(f"{layer}.third_sub_layer.dense_in", f"{ours}/mlp/fc1")
        m.linear(f"{layer}.third_sub_layer.dense_out", f"{ours}/mlp/fc2")
    m.norm(f"{src}._decoder.final_layer_norm", f"{dst}/final_norm")
    head = m.get("log_softmax.mlp.layer0.weight")
    if head.shape != embedding.shape or not np.array_equal(head, embedding):
        raise NemoConversionError(
            "tensor log_softmax.mlp.layer0.weight is not tied to the token embedding; untied "
            "Canary heads are not supported"
        )
    m.report.mapped["log_softmax.mlp.layer0.weight"] = f"{dst}/embed/embedding (tied, checked)"
    bias = m.get("log_softmax.mlp.layer0.bias")
    m.put(
        f"{dst}/output_bias",
        np.concatenate([bias, [MASK_LOGIT_BIAS]]),
        "log_softmax.mlp.layer0.bias",
    )


def nemo_params(
    archive: NemoArchive, model_config: ModelConfig, piece_count: int
) -> tuple[dict[str, Any], ConversionReport]:
    """Nested param dict for `ASRModel(model_config)` from the archive's tensors.

    Every tensor of the state dict ends up mapped or listed as unused with a reason; an
    unknown tensor (e.g. adapters) is an error naming it.
    """
    m = _Mapper(archive.tensors)
    _encoder_params(m, model_config.encoder)
    for head in ("mdm_decoder", "ar_decoder"):
        dec = getattr(model_config, head)
        if dec is not None:
            _decoder_params(m, dec, head, model_config.vocab_size, piece_count)
    for name in archive.tensors:
        if name.startswith("preprocessor."):
            m.report.unused.setdefault(
                name, "preprocessor buffer (log-mel computed by mdm_asr_jax.audio)"
            )
    unknown = sorted(set(archive.tensors) - set(m.report.mapped) - set(m.report.unused))
    if unknown:
        raise NemoConversionError(
            f"{len(unknown)} tensors of {archive.path.name} have no place in the model: "
            f"{unknown[:8]}{' ...' if len(unknown) > 8 else ''} (adapters or an unsupported "
            "architecture)"
        )
    nested: dict[str, Any] = {}
    for path, value in m.params.items():
        node = nested
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return nested, m.report


def check_params_against_model(
    params: dict[str, Any], model_config: ModelConfig, report: ConversionReport | None = None
) -> None:
    """Every param the model expects is present with the same shape, and nothing else; a
    mismatch names the param and (with `report`) the NeMo tensor it came from."""
    model = ASRModel(model_config)
    shapes = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
    expected = flax.traverse_util.flatten_dict(flax.linen.meta.unbox(shapes)["params"], sep="/")
    got = flax.traverse_util.flatten_dict(params, sep="/")
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise NemoConversionError(
            f"converted params do not match the model: missing {missing[:6]}, extra {extra[:6]}"
        )
    sources: dict[str, list[str]] = {}
    for source, path in (report.mapped if report else {}).items():
        sources.setdefault(path.split(" ")[0], []).append(source)
    for path, spec in expected.items():
        if tuple(got[path].shape) != tuple(spec.shape):
            origin = ", ".join(sources.get(path, [])) or "?"
            raise NemoConversionError(
                f"tensor {origin} -> param {path}: shape {got[path].shape} does not fit the "
                f"model's {tuple(spec.shape)} (the archive's config and weights disagree)"
            )


# ---------------------------------------------------------------------------------------------
# Whole conversion
# ---------------------------------------------------------------------------------------------


def build_tokenizer(archive: NemoArchive, prompt_tokens: tuple[str, ...]) -> AggregateTokenizer:
    """The Canary aggregate tokenizer of the archive, NeMo's vocabulary rounding included."""
    text_langs = [lang for lang in archive.tokenizer_models if lang != "spl_tokens"]
    return AggregateTokenizer(
        archive.tokenizer_models,
        prompt_tokens=prompt_tokens,
        default_lang=text_langs[0] if text_langs else None,
        vocab_multiple=NEMO_VOCAB_MULTIPLE,
    )


def convert_nemo(
    src: str | Path,
    out: str | Path,
    *,
    heads: tuple[str, ...] = ("mdm", "ar"),
    source_lang: str | None = None,
    target_lang: str | None = None,
    pnc: bool | None = None,
    default_lang: str | None = None,
) -> ConversionReport:
    """Convert `src` (.nemo) into the checkpoint directory `out`; returns the report (also saved
    as `out/conversion_report.json`).

    heads: which decoders to create from NeMo's decoder: "mdm" (bidirectional, the paper's
      initialisation) and/or "ar" (causal: NeMo's own decoding).
    source_lang / target_lang / pnc: prompt overrides (default: the model's prompt defaults).
    """
    heads = tuple(heads)
    if not heads or set(heads) - {"mdm", "ar"}:
        raise NemoConversionError(f"heads={heads}; choose one or both of 'mdm' and 'ar'")
    with tempfile.TemporaryDirectory(prefix="nemo_import_") as tmp:
        archive = read_nemo(src, tmp)
        prompt_tokens = prompt_tokens_from_nemo(archive.config, source_lang, target_lang, pnc)
        tokenizer = build_tokenizer(archive, prompt_tokens)
        # Transcripts (encode(text) without a language) use the target language's model when
        # the archive has one per language; else (e.g. one "multilingual" model) the default.
        if default_lang is not None and default_lang not in tokenizer.langs:
            raise NemoConversionError(
                f"default_lang={default_lang!r}; the archive has {tokenizer.langs}"
            )
        text_lang = default_lang or target_lang or source_lang
        if text_lang in tokenizer.langs:
            tokenizer.default_lang = text_lang
        model_config = ModelConfig(
            vocab_size=tokenizer.vocab_size,
            encoder=encoder_config_from_nemo(archive.config),
            mdm_decoder=decoder_config_from_nemo(archive.config, True) if "mdm" in heads else None,
            ar_decoder=decoder_config_from_nemo(archive.config, False) if "ar" in heads else None,
            prompt_ids=tuple(tokenizer.prompt_ids),
            pad_id=tokenizer.pad_id,
            eos_id=tokenizer.eos_id,
        ).validate()
        params, report = nemo_params(archive, model_config, tokenizer.piece_count)
        check_params_against_model(params, model_config, report)
        features, warnings = feature_config_from_nemo(archive.config)
        report.warnings.extend(warnings)
        report.warnings.extend(
            f"archive member {name} not used" for name in archive.other_files if name != "."
        )
        info = {
            "source": f"nemo:{Path(src).name}",
            "prompt_tokens": list(prompt_tokens),
            "nemo_prompt_format": archive.config.get("prompt_format"),
            "mask_logit_bias": MASK_LOGIT_BIAS,
        }
        out = export_checkpoint(
            out,
            model_config,
            params,
            features,
            tokenizer,
            decoding=DecodingDefaults(
                sampler=PAPER_SAMPLER if "mdm" in heads else "ar_greedy",
                nfe=DEFAULT_NFE,
                # the paper's canvas (the decoder's positions allow up to max_length - prompt)
                canvas_length=min(
                    CANVAS_LENGTH,
                    decoder_config_from_nemo(archive.config, True).max_length - len(prompt_tokens),
                ),
                # NeMo's vocabulary-rounding fillers and [MASK]: never text, never targets
                forbidden_ids=tuple(range(tokenizer.piece_count, tokenizer.vocab_size)),
            ),
            info=info,
        )
    (Path(out) / "conversion_report.json").write_text(json.dumps(report.to_dict(), indent=2))
    return report


__all__ = [
    "ConversionReport",
    "NemoArchive",
    "NemoConversionError",
    "convert_nemo",
    "read_nemo",
    "nemo_params",
    "encoder_config_from_nemo",
    "decoder_config_from_nemo",
    "feature_config_from_nemo",
    "prompt_tokens_from_nemo",
]
