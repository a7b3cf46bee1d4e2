"""Synthetic Whisper checkpoints (HF safetensors and CTranslate2 model.bin) for tests.

The HF names follow the `openai/whisper-*` safetensors naming; the CTranslate2 file is written
from the same random tensors, with query/key/value (self-attention) and key/value
(cross-attention) fused as CTranslate2 stores them, so both sources describe one model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mdm_asr_jax.convert import ctranslate2 as ct2
from mdm_asr_jax.convert.whisper import WhisperDims

TINY_DIMS = WhisperDims(
    num_mels=80,
    vocab_size=64,
    encoder_positions=20,
    decoder_positions=16,
    width=32,
    encoder_layers=2,
    encoder_heads=4,
    decoder_layers=2,
    decoder_heads=4,
    mlp_dim=128,
)


def random_hf_tensors(dims: WhisperDims = TINY_DIMS, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors under HF WhisperForConditionalGeneration names (torch layouts)."""
    rng = np.random.default_rng(seed)
    d, f = dims.width, dims.mlp_dim

    def rand(*shape):
        return rng.normal(0, 0.2, shape).astype(np.float32)

    t = {
        "model.encoder.conv1.weight": rand(d, dims.num_mels, 3),
        "model.encoder.conv1.bias": rand(d),
        "model.encoder.conv2.weight": rand(d, d, 3),
        "model.encoder.conv2.bias": rand(d),
        "model.encoder.embed_positions.weight": rand(dims.encoder_positions, d),
        "model.encoder.layer_norm.weight": 1 + rand(d),
        "model.encoder.layer_norm.bias": rand(d),
        "model.decoder.embed_tokens.weight": rand(dims.vocab_size, d),
        "model.decoder.embed_positions.weight": rand(dims.decoder_positions, d),
        "model.decoder.layer_norm.weight": 1 + rand(d),
        "model.decoder.layer_norm.bias": rand(d),
    }

    def attention(prefix):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t[f"{prefix}.{proj}.weight"] = rand(d, d)
            if proj != "k_proj":
                t[f"{prefix}.{proj}.bias"] = rand(d)

    def block(prefix, attn_names):
        for attn, norm in attn_names:
            attention(f"{prefix}.{attn}")
            t[f"{prefix}.{norm}.weight"] = 1 + rand(d)
            t[f"{prefix}.{norm}.bias"] = rand(d)
        t[f"{prefix}.fc1.weight"], t[f"{prefix}.fc1.bias"] = rand(f, d), rand(f)
        t[f"{prefix}.fc2.weight"], t[f"{prefix}.fc2.bias"] = rand(d, f), rand(d)
        t[f"{prefix}.final_layer_norm.weight"] = 1 + rand(d)
        t[f"{prefix}.final_layer_norm.bias"] = rand(d)

    for i in range(dims.encoder_layers):
        block(f"model.encoder.layers.{i}", [("self_attn", "self_attn_layer_norm")])
    for i in range(dims.decoder_layers):
        block(
            f"model.decoder.layers.{i}",
            [("self_attn", "self_attn_layer_norm"), ("encoder_attn", "encoder_attn_layer_norm")],
        )
    t["proj_out.weight"] = t["model.decoder.embed_tokens.weight"].copy()
    return t


def hf_config(dims: WhisperDims = TINY_DIMS) -> dict:
    """An HF WhisperConfig-style dict for `dims`."""
    return {
        "model_type": "whisper",
        "num_mel_bins": dims.num_mels,
        "vocab_size": dims.vocab_size,
        "max_source_positions": dims.encoder_positions,
        "max_target_positions": dims.decoder_positions,
        "d_model": dims.width,
        "encoder_layers": dims.encoder_layers,
        "encoder_attention_heads": dims.encoder_heads,
        "decoder_layers": dims.decoder_layers,
        "decoder_attention_heads": dims.decoder_heads,
        "encoder_ffn_dim": dims.mlp_dim,
        "decoder_ffn_dim": dims.mlp_dim,
    }


def write_hf_dir(directory: Path, tensors: dict[str, np.ndarray], dims: WhisperDims = TINY_DIMS):
    """Writes config.json + model.safetensors like an HF `openai/whisper-*` download."""
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf_config(dims)))
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              str(directory / "model.safetensors"))  # fmt: skip
    return directory


def hf_to_ct2_variables(hf: dict[str, np.ndarray], dims: WhisperDims = TINY_DIMS, dtype=np.float16):
    """The same model as CTranslate2 variables (fused projections, zero key biases)."""
    d = dims.width
    v: dict[str, np.ndarray] = {}

    def cast(x):
        return np.asarray(x, dtype)

    def linear(src, dst):
        v[f"{dst}/weight"], v[f"{dst}/bias"] = cast(hf[f"{src}.weight"]), cast(hf[f"{src}.bias"])

    def norm(src, dst):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = cast(hf[f"{src}.weight"]), cast(hf[f"{src}.bias"])

    def fused(src, dst, projs):
        v[f"{dst}/weight"] = cast(np.concatenate([hf[f"{src}.{p}.weight"] for p in projs]))
        v[f"{dst}/bias"] = cast(np.concatenate(
            [hf.get(f"{src}.{p}.bias", np.zeros(d, np.float32)) for p in projs]))  # fmt: skip

    v["decoder/activation"] = np.array(3, np.int8)
    v["decoder/pre_norm"] = np.array(1, np.int8)
    v["decoder/num_heads"] = np.array(dims.decoder_heads, np.int16)
    v["encoder/num_heads"] = np.array(dims.encoder_heads, np.int16)
    v["decoder/embeddings/weight"] = cast(hf["model.decoder.embed_tokens.weight"])
    v["decoder/position_encodings/encodings"] = cast(hf["model.decoder.embed_positions.weight"])
    v["encoder/position_encodings/encodings"] = cast(hf["model.encoder.embed_positions.weight"])
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    for c in ("conv1", "conv2"):
        linear(f"model.encoder.{c}", f"encoder/{c}")
    for i in range(dims.encoder_layers):
        s, p = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        fused(f"{s}.self_attn", f"{p}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{s}.self_attn.out_proj", f"{p}/self_attention/linear_1")
        norm(f"{s}.self_attn_layer_norm", f"{p}/self_attention/layer_norm")
        linear(f"{s}.fc1", f"{p}/ffn/linear_0")
        linear(f"{s}.fc2", f"{p}/ffn/linear_1")
        norm(f"{s}.final_layer_norm", f"{p}/ffn/layer_norm")
    for i in range(dims.decoder_layers):
        s, p = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        fused(f"{s}.self_attn", f"{p}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{s}.self_attn.out_proj", f"{p}/self_attention/linear_1")
        norm(f"{s}.self_attn_layer_norm", f"{p}/self_attention/layer_norm")
        linear(f"{s}.encoder_attn.q_proj", f"{p}/attention/linear_0")
        fused(f"{s}.encoder_attn", f"{p}/attention/linear_1", ("k_proj", "v_proj"))
        linear(f"{s}.encoder_attn.out_proj", f"{p}/attention/linear_2")
        norm(f"{s}.encoder_attn_layer_norm", f"{p}/attention/layer_norm")
        linear(f"{s}.fc1", f"{p}/ffn/linear_0")
        linear(f"{s}.fc2", f"{p}/ffn/linear_1")
        norm(f"{s}.final_layer_norm", f"{p}/ffn/layer_norm")
    return v


def write_ct2_dir(directory: Path, variables: dict[str, np.ndarray], config: dict | None = None):
    """Writes model.bin (+ config.json) like a CTranslate2 Whisper directory."""
    directory.mkdir(parents=True, exist_ok=True)
    ct2.write_model_bin(directory / "model.bin", "WhisperSpec", 3, variables,
                        {"decoder/projection/weight": "decoder/embeddings/weight"})  # fmt: skip
    (directory / "config.json").write_text(
        json.dumps(config or {"suppress_ids": [1, 2], "suppress_ids_begin": [5, 6]})
    )
    return directory


def write_tiny_tokenizer(directory: Path, vocab_size: int = 50) -> Path:
    """A word-level `tokenizer.json` with Whisper's special tokens after `vocab_size` words.

    Ids: words 0..vocab_size-1, <|endoftext|> = vocab_size, <|startoftranscript|> + 1,
    <|transcribe|> + 2, <|notimestamps|> + 3 (timestamps would follow).
    """
    import tokenizers
    from tokenizers import models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(vocab_size)}
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|transcribe|>", "<|notimestamps|>"]
    for offset, token in enumerate(specials):
        vocab[token] = vocab_size + offset
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(specials)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    return directory / "tokenizer.json"
