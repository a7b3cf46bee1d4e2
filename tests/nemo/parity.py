"""Side-by-side checks of a NeMo Canary model and its mdm_asr_jax conversion.

Shared by the parity test (tiny random model) and by the command line below, which is the
recipe for checking a real checkpoint on a machine with internet and NeMo installed:

    python tests/nemo/parity.py --nemo=canary-1b-flash.nemo --out=/tmp/canary_ckpt \\
        --audio a.wav b.wav [--lang=en]

It converts the archive (unless --out already holds a conversion), runs both models in float32
on the same audio and prints one JSON line: relative errors of features, encoder output and
teacher-forced log-probabilities (causal, and bidirectional = NeMo with its causal mask
removed), whether greedy AR tokens agree, and both greedy transcripts.

Relative error = max |ours - NeMo| / max |NeMo| over valid frames / positions.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from mdm_asr_jax.audio import load_audio, log_mel_numpy
from mdm_asr_jax.checkpoint import load_checkpoint
from mdm_asr_jax.nn.model import ASRModel


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(ours - reference)) / max(np.max(np.abs(reference)), 1e-12))


def pad_batch(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(c) for c in clips])
    audio = np.zeros((len(clips), lengths.max()), np.float32)
    for i, clip in enumerate(clips):
        audio[i, : len(clip)] = clip
    return audio, lengths


def load_ours(ckpt_dir: str | pathlib.Path):
    """(ASRModel, variables, LoadedCheckpoint) of a converted checkpoint directory."""
    ckpt = load_checkpoint(ckpt_dir)
    params = ckpt.params.get("params", ckpt.params)
    return ASRModel(ckpt.model_config), {"params": params}, ckpt


@torch.no_grad()
def nemo_encode(model, audio: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """NeMo's features [B, M, T] (+ lengths), encoder states [B, S, D] after the projection to
    the decoder width, and the encoder mask [B, S]."""
    feats, feat_len = model.preprocessor(
        input_signal=torch.from_numpy(audio), length=torch.from_numpy(lengths)
    )
    encoded, enc_len = model.encoder(audio_signal=feats, length=feat_len)
    states = model.encoder_decoder_proj(encoded.transpose(1, 2))
    enc_mask = np.arange(states.shape[1])[None, :] < enc_len.numpy()[:, None]
    return {
        "features": feats.numpy(),
        "feature_lengths": feat_len.numpy(),
        "states": states.numpy(),
        "enc_mask": enc_mask,
    }


def feature_error(nemo: dict, audio: np.ndarray, lengths: np.ndarray, feature_config) -> float:
    """Max abs difference of our log-mel (numpy) and NeMo's preprocessor over valid frames."""
    worst = 0.0
    for i in range(len(lengths)):
        mine = log_mel_numpy(audio[i, : lengths[i]], feature_config)  # [T, M]
        reference = nemo["features"][i, :, : nemo["feature_lengths"][i]].T
        if mine.shape != reference.shape:
            raise AssertionError(f"feature shape {mine.shape} != NeMo's {reference.shape}")
        worst = max(worst, float(np.max(np.abs(mine - reference))))
    return worst


def encoder_error(nemo: dict, ours) -> float:
    """Relative error of our encoder output, fed NeMo's features."""
    model, variables, _ = ours
    features = jnp.asarray(nemo["features"].transpose(0, 2, 1))
    mask = jnp.arange(features.shape[1])[None, :] < nemo["feature_lengths"][:, None]
    encoded, enc_mask = model.apply(variables, features, mask, method=ASRModel.encode)
    if not np.array_equal(np.asarray(enc_mask), nemo["enc_mask"]):
        raise AssertionError("encoder masks differ (subsampled lengths disagree)")
    encoded = np.asarray(encoded)
    return max(
        relative_error(encoded[i, valid], nemo["states"][i, valid])
        for i, valid in enumerate(nemo["enc_mask"])
    )


@torch.no_grad()
def nemo_log_probs(model, tokens, token_len, states, enc_mask, bidirectional=False) -> np.ndarray:
    """NeMo decoder + head log-probs [B, L, V_nemo]; `bidirectional` removes the causal mask."""
    decoder = model.transf_decoder._decoder
    old = decoder.diagonal
    decoder.diagonal = None if bidirectional else 0
    try:
        token_mask = torch.from_numpy(np.arange(tokens.shape[1])[None] < token_len[:, None])
        hidden = model.transf_decoder(
            input_ids=torch.from_numpy(np.asarray(tokens, np.int64)),
            decoder_mask=token_mask.long(),
            encoder_embeddings=torch.from_numpy(states),
            encoder_mask=torch.from_numpy(enc_mask).float(),
        )
        return model.log_softmax(hidden_states=hidden).numpy()
    finally:
        decoder.diagonal = old


def teacher_tokens(tokenizer, texts: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Prompt + transcript per row, padded with pad_id: tokens [B, L], lengths [B]."""
    rows = [list(tokenizer.prompt_ids) + tokenizer.encode(t, lang) for t, lang in texts]
    tokens = np.full((len(rows), max(len(r) for r in rows)), tokenizer.pad_id, np.int64)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    return tokens, np.array([len(r) for r in rows])


def ar_log_prob_error(model_nemo, nemo: dict, ours, tokens, token_len) -> float:
    model, variables, _ = ours
    reference = nemo_log_probs(model_nemo, tokens, token_len, nemo["states"], nemo["enc_mask"])
    logits = model.apply(
        variables,
        jnp.asarray(tokens, jnp.int32),
        jnp.asarray(nemo["states"]),
        jnp.asarray(nemo["enc_mask"]),
        method=ASRModel.ar_logits,
    )
    log_probs = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))
    vocab = reference.shape[-1]
    if log_probs.shape[-1] != vocab + 1:
        raise AssertionError(f"vocabulary {log_probs.shape[-1]} != NeMo's {vocab} + [MASK]")
    return max(
        relative_error(log_probs[i, :n, :vocab], reference[i, :n]) for i, n in enumerate(token_len)
    )


def mdm_log_prob_error(model_nemo, nemo: dict, ours, canvas: np.ndarray) -> float:
    """Our bidirectional decoder (prompt + canvas) vs NeMo's decoder without the causal mask."""
    model, variables, ckpt = ours
    batch = canvas.shape[0]
    prompt = np.broadcast_to(
        np.array(ckpt.tokenizer.prompt_ids), (batch, len(ckpt.tokenizer.prompt_ids))
    )
    tokens = np.concatenate([prompt, canvas], axis=1)
    reference = nemo_log_probs(
        model_nemo,
        tokens,
        np.full(batch, tokens.shape[1]),
        nemo["states"],
        nemo["enc_mask"],
        bidirectional=True,
    )[:, prompt.shape[1] :]
    logits = model.apply(
        variables,
        jnp.asarray(canvas, jnp.int32),
        jnp.asarray(nemo["states"]),
        jnp.asarray(nemo["enc_mask"]),
        method=ASRModel.mdm_logits,
    )
    log_probs = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))
    return relative_error(log_probs[..., : reference.shape[-1]], reference)


def greedy_both(model_nemo, nemo: dict, ours, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy AR tokens [B, P + steps] from NeMo (recomputing the prefix) and from ours (the
    KV-cache step path, prompt fed at once). No early stop, so both run `steps` tokens."""
    model, variables, ckpt = ours
    prompt = list(ckpt.tokenizer.prompt_ids)
    batch = nemo["states"].shape[0]
    reference = np.array([prompt] * batch)
    for _ in range(steps):
        lengths = np.full(batch, reference.shape[1])
        log_probs = nemo_log_probs(model_nemo, reference, lengths, nemo["states"], nemo["enc_mask"])
        reference = np.concatenate([reference, log_probs[:, -1].argmax(-1)[:, None]], axis=1)
    enc_mask = jnp.asarray(nemo["enc_mask"])
    cross_kv = model.apply(variables, jnp.asarray(nemo["states"]), method=ASRModel.ar_cross_kv)
    cache = model.apply(variables, batch, len(prompt) + steps, method=ASRModel.ar_init_cache)
    tokens = jnp.asarray([prompt] * batch, jnp.int32)
    logits, cache = model.apply(
        variables, tokens, 0, cache, cross_kv, enc_mask, method=ASRModel.ar_step
    )
    out = [np.asarray(tokens)]
    for position in range(len(prompt), len(prompt) + steps):
        nxt = jnp.argmax(logits[:, -1], axis=-1)[:, None].astype(jnp.int32)
        out.append(np.asarray(nxt))
        logits, cache = model.apply(
            variables, nxt, position, cache, cross_kv, enc_mask, method=ASRModel.ar_step
        )
    return np.concatenate(out, axis=1), reference


def main(argv: list[str] | None = None) -> int:
    from nemo.collections.asr.models import EncDecMultiTaskModel

    from mdm_asr_jax.convert.nemo import convert_nemo

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nemo", required=True, help=".nemo archive (e.g. canary-1b-flash)")
    parser.add_argument("--out", required=True, help="checkpoint directory for the conversion")
    parser.add_argument("--audio", nargs="+", required=True, help="audio files (any rate)")
    parser.add_argument("--lang", default="en", help="language of the audio / prompt")
    parser.add_argument("--steps", type=int, default=48, help="greedy tokens to compare")
    args = parser.parse_args(argv)

    torch.set_grad_enabled(False)
    out = pathlib.Path(args.out)
    start = time.perf_counter()
    if not (out / "config.json").exists():
        convert_nemo(args.nemo, out, source_lang=args.lang, target_lang=args.lang)
    convert_seconds = time.perf_counter() - start
    model_nemo = EncDecMultiTaskModel.restore_from(args.nemo, map_location="cpu").eval()
    ours = load_ours(out)
    audio, lengths = pad_batch([load_audio(p) for p in args.audio])
    nemo = nemo_encode(model_nemo, audio, lengths)
    tokenizer = ours[2].tokenizer
    greedy_ours, greedy_nemo = greedy_both(model_nemo, nemo, ours, args.steps)
    prompt_len = len(tokenizer.prompt_ids)
    canvas = greedy_nemo[:, prompt_len:]
    result = {
        "feature_max_abs_error": feature_error(nemo, audio, lengths, ours[2].feature_config),
        "encoder_relative_error": encoder_error(nemo, ours),
        "ar_log_prob_relative_error": ar_log_prob_error(
            model_nemo, nemo, ours, greedy_nemo, np.full(len(lengths), greedy_nemo.shape[1])
        ),
        "mdm_log_prob_relative_error": mdm_log_prob_error(model_nemo, nemo, ours, canvas),
        "greedy_tokens_identical": bool(np.array_equal(greedy_ours, greedy_nemo)),
        "greedy_text_nemo": [tokenizer.decode(row[prompt_len:]) for row in greedy_nemo],
        "greedy_text_ours": [tokenizer.decode(row[prompt_len:]) for row in greedy_ours],
        "convert_seconds": round(convert_seconds, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
