"""Whisper network on the shared layers: converted weights reproduce a plain numpy Whisper.

The numpy forward below is written from Whisper's architecture directly on the HF tensors
(torch layouts), independently of our flax modules and of the converter's canonical names, so
agreement checks the encoder, the decoder configuration and every weight mapping at once.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest
import whisper_fixtures as fx
from scipy.special import erf

from mdm_asr_jax.convert import whisper as cw
from mdm_asr_jax.nn.model import ASRModel
from mdm_asr_jax.nn.whisper import (
    WhisperEncoder,
    whisper_model_config,
    whisper_window_frames,
)

EOT = 50  # synthetic vocabulary: text ids < 50, specials after


def _ln(x, w, b):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * w + b


def _gelu(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _conv1d(x, w, b, stride):  # x [T, Cin], w [Cout, Cin, 3] -> [T', Cout]
    padded = np.pad(x, ((1, 1), (0, 0)))
    steps = range(0, x.shape[0], stride)
    return np.stack([np.einsum("kc,ock->o", padded[t : t + 3], w) for t in steps]) + b


def _attention(t, prefix, xq, xkv, heads, causal):
    def proj(name, x):
        y = x @ t[f"{prefix}.{name}.weight"].T
        return y + t.get(f"{prefix}.{name}.bias", 0)

    q, k, v = proj("q_proj", xq), proj("k_proj", xkv), proj("v_proj", xkv)
    d = q.shape[-1] // heads
    out = []
    for h in range(heads):
        s = q[:, h * d : (h + 1) * d] @ k[:, h * d : (h + 1) * d].T / math.sqrt(d)
        if causal:
            s = np.where(np.tril(np.ones_like(s, bool)), s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        out.append((p / p.sum(-1, keepdims=True)) @ v[:, h * d : (h + 1) * d])
    return proj("out_proj", np.concatenate(out, -1))


def numpy_whisper(t, dims, mel, tokens):
    """Whisper forward in float64: mel [T, M], tokens [L] -> (encoder out [T', D], logits [L, V])."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    e = "model.encoder"
    x = _gelu(_conv1d(mel, t[f"{e}.conv1.weight"], t[f"{e}.conv1.bias"], 1))
    x = _gelu(_conv1d(x, t[f"{e}.conv2.weight"], t[f"{e}.conv2.bias"], 2))
    x = x + t[f"{e}.embed_positions.weight"][: x.shape[0]]
    for i in range(dims.encoder_layers):
        p = f"{e}.layers.{i}"
        h = _ln(x, t[f"{p}.self_attn_layer_norm.weight"], t[f"{p}.self_attn_layer_norm.bias"])
        x = x + _attention(t, f"{p}.self_attn", h, h, dims.encoder_heads, False)
        h = _ln(x, t[f"{p}.final_layer_norm.weight"], t[f"{p}.final_layer_norm.bias"])
        h = _gelu(h @ t[f"{p}.fc1.weight"].T + t[f"{p}.fc1.bias"])
        x = x + h @ t[f"{p}.fc2.weight"].T + t[f"{p}.fc2.bias"]
    enc = _ln(x, t[f"{e}.layer_norm.weight"], t[f"{e}.layer_norm.bias"])
    d = "model.decoder"
    emb = t[f"{d}.embed_tokens.weight"]
    y = emb[tokens] + t[f"{d}.embed_positions.weight"][: len(tokens)]
    for i in range(dims.decoder_layers):
        p = f"{d}.layers.{i}"
        h = _ln(y, t[f"{p}.self_attn_layer_norm.weight"], t[f"{p}.self_attn_layer_norm.bias"])
        y = y + _attention(t, f"{p}.self_attn", h, h, dims.decoder_heads, True)
        h = _ln(y, t[f"{p}.encoder_attn_layer_norm.weight"], t[f"{p}.encoder_attn_layer_norm.bias"])
        y = y + _attention(t, f"{p}.encoder_attn", h, enc, dims.decoder_heads, False)
        h = _ln(y, t[f"{p}.final_layer_norm.weight"], t[f"{p}.final_layer_norm.bias"])
        h = _gelu(h @ t[f"{p}.fc1.weight"].T + t[f"{p}.fc1.bias"])
        y = y + h @ t[f"{p}.fc2.weight"].T + t[f"{p}.fc2.bias"]
    y = _ln(y, t[f"{d}.layer_norm.weight"], t[f"{d}.layer_norm.bias"])
    return enc, y @ emb.T


@pytest.fixture(scope="module")
def converted():
    hf = fx.random_hf_tensors()
    weights = cw.convert_hf_tensors(hf, fx.TINY_DIMS)
    config = whisper_model_config(weights.dims.size(), (52, 53), EOT, mdm_decoder=True)
    return hf, config, cw.whisper_params(weights, config, EOT)


def test_converted_whisper_matches_a_numpy_reference_forward(converted):
    hf, config, params = converted
    rng = np.random.default_rng(1)
    mel = rng.normal(size=(40, fx.TINY_DIMS.num_mels)).astype(np.float32)  # 0.4 s -> 20 frames
    tokens = np.array([52, 53, 7, 11, 3], np.int32)
    ref_enc, ref_logits = numpy_whisper(hf, fx.TINY_DIMS, mel.astype(np.float64), tokens)
    model = ASRModel(config)
    variables = {"params": params}
    apply = jax.jit(model.apply, static_argnames="method")
    enc, enc_mask = apply(variables, mel[None], np.ones((1, 40), bool), method=model.encode)
    np.testing.assert_allclose(np.asarray(enc[0]), ref_enc, atol=2e-4)
    assert bool(enc_mask.all())
    logits = apply(variables, tokens[None], enc, enc_mask, method=model.ar_logits)
    # Logits over Whisper's rows match; the extra last row is [MASK].
    assert logits.shape[-1] == fx.TINY_DIMS.vocab_size + 1
    np.testing.assert_allclose(np.asarray(logits[0, :, :-1]), ref_logits, atol=5e-4)
    # MDM-ASR decoder: the same weights, bidirectional, so position 0 now sees later tokens.
    mdm = apply(variables, tokens[None, 2:], enc, enc_mask, method=model.mdm_logits)
    assert not np.allclose(np.asarray(mdm[0, 0]), np.asarray(logits[0, 2]), atol=1e-3)


def test_short_windows_use_the_first_positions_and_masking_hides_padding(converted):
    _, config, params = converted
    enc_params = {"params": params["encoder"]}
    mel = np.random.default_rng(3).normal(size=(1, 30, 80)).astype(np.float32)
    mel[:, 20:] = 0.0
    mask = np.arange(30)[None] < 20
    short = dataclasses.replace(config.encoder, min_frames=0)  # run 30 frames as given
    attend = jax.jit(WhisperEncoder(short, attend_padding=True).apply)
    masked = jax.jit(WhisperEncoder(short, attend_padding=False).apply)
    out_all, mask_all = attend(enc_params, mel, mask)
    out_masked, mask_masked = masked(enc_params, mel, mask)
    assert out_all.shape == (1, 15, 32) and bool(mask_all.all())
    assert mask_masked[0].tolist() == [True] * 10 + [False] * 5
    # With padding masked out, valid frames do not depend on how much padding follows
    # (frame 9 of the stride-2 conv reads input frame 19 and 20, so compare frames 0..8).
    shorter, _ = masked(enc_params, mel[:, :22], mask[:, :22])
    np.testing.assert_allclose(out_masked[0, :9], shorter[0, :9], atol=1e-5)
    assert not np.allclose(out_all[0, :9], out_masked[0, :9], atol=1e-3)
    # min_frames (default: the full window) pads short inputs back inside the encoder.
    assert config.encoder.min_frames == 40
    full = jax.jit(WhisperEncoder(config.encoder).apply)
    padded_inside, _ = full(enc_params, mel[:, :20], mask[:, :20])
    padded_outside, _ = attend(enc_params, np.pad(mel[:, :20], ((0, 0), (0, 20), (0, 0))),
                               np.ones((1, 40), bool))  # fmt: skip
    assert padded_inside.shape == (1, 20, 32)
    np.testing.assert_allclose(padded_inside, padded_outside, atol=1e-5)


def test_too_long_input_and_wrong_mel_count_are_clear_errors(converted):
    _, config, params = converted
    encoder = WhisperEncoder(config.encoder)
    with pytest.raises(ValueError, match="at most 40"):
        encoder.apply({"params": params["encoder"]}, np.zeros((1, 42, 80)), np.ones((1, 42), bool))
    with pytest.raises(ValueError, match="num_mels=80"):
        encoder.apply({"params": params["encoder"]}, np.zeros((1, 10, 81)), np.ones((1, 10), bool))
    with pytest.raises(ValueError, match="30 s"):
        whisper_window_frames(3001)
    assert whisper_window_frames(320) == 500 and whisper_window_frames(1001) == 2000


def test_whisper_params_report_a_model_mismatch(converted):
    hf, config, _ = converted
    weights = cw.convert_hf_tensors(hf, fx.TINY_DIMS)
    bigger = whisper_model_config(
        cw.dataclasses.replace(weights.dims.size(), decoder_layers=3), (52, 53), EOT
    )
    with pytest.raises(cw.WhisperConversionError, match="missing .*layer_2"):
        cw.whisper_params(weights, bigger, EOT)


def test_finetune_config_turns_whisper_decoder_into_mdm_and_ar_heads(converted):
    from mdm_asr_jax.nn.encoders import finetune_config

    _, config, _ = converted
    zero_shot = dataclasses.replace(config, mdm_decoder=None)
    tuned = finetune_config(zero_shot, mdm=True, ar=True, dropout=0.1, min_frames=0)
    assert tuned.mdm_decoder.bidirectional and not tuned.ar_decoder.bidirectional
    assert tuned.mdm_decoder.num_layers == config.ar_decoder.num_layers
    assert tuned.encoder.min_frames == 0 and tuned.encoder.dropout == 0.1
    assert (tuned.vocab_size, tuned.prompt_ids) == (config.vocab_size, config.prompt_ids)
    mdm_only = finetune_config(zero_shot, mdm=True, ar=False)
    assert mdm_only.ar_decoder is None and mdm_only.encoder.min_frames == 40
