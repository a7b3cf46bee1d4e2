"""Parity of the Canary import with NeMo itself, on a tiny randomly initialised Canary model.

Needs NeMo and PyTorch (`.ci/run_nemo.sh` builds that environment; see the README's recipe for
checking a real checkpoint). The model is built by `tiny_canary.py` with random batch-norm
statistics and norm weights, saved as .nemo, converted with `mdm-asr-convert nemo`'s library
function, and both sides run on the same real recordings (FSDD) in float32:
features, encoder output, teacher-forced decoder log-probabilities (causal, and bidirectional
with NeMo's causal mask removed: the paper's MDM initialisation) to <= 1e-4 relative, and greedy
AR decoding (identical tokens; ours runs the KV-cache step path).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nemo")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from tiny_canary import build_tiny_canary  # noqa: E402

from mdm_asr_jax.audio import FeatureConfig, load_audio, log_mel_numpy  # noqa: E402
from mdm_asr_jax.convert.nemo import (  # noqa: E402
    convert_nemo,
    read_nemo,
    read_torch_zip,
)
from mdm_asr_jax.nn.model import ASRModel  # noqa: E402
from mdm_asr_jax.train.checkpoint import load_checkpoint  # noqa: E402

FSDD = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fsdd"
REL_TOL = 1e-4


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(ours - reference)) / max(np.max(np.abs(reference)), 1e-12))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(NeMo model, checkpoint dir) for the tiny model."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("canary")
    model, nemo_path = build_tiny_canary(root / "nemo", seed=0)
    report = convert_nemo(nemo_path, root / "ckpt")
    assert not report.warnings or all("not used" in w for w in report.warnings), report.warnings
    return model, nemo_path, root / "ckpt"


@pytest.fixture(scope="module")
def audio_batch():
    """Two FSDD recordings at 16 kHz, zero-padded to one length: (audio [2, N], lengths [2])."""
    files = sorted(FSDD.resolve().glob("*.wav"))[:2]
    clips = [load_audio(f) for f in files]
    lengths = np.array([len(c) for c in clips])
    audio = np.zeros((2, lengths.max()), np.float32)
    for i, clip in enumerate(clips):
        audio[i, : len(clip)] = clip
    assert lengths[0] != lengths[1]
    return audio, lengths


@pytest.fixture(scope="module")
def ours(converted):
    _, _, ckpt_dir = converted
    ckpt = load_checkpoint(ckpt_dir)
    params = ckpt.params.get("params", ckpt.params)
    return ASRModel(ckpt.model_config), {"params": params}, ckpt


@pytest.fixture(scope="module")
def nemo_encoded(converted, audio_batch):
    """NeMo's features [B, M, T], feature lengths, encoder states [B, S, D] and mask [B, S]."""
    model, _, _ = converted
    audio, lengths = audio_batch
    with torch.no_grad():
        feats, feat_len = model.preprocessor(
            input_signal=torch.from_numpy(audio), length=torch.from_numpy(lengths)
        )
        encoded, enc_len = model.encoder(audio_signal=feats, length=feat_len)
        states = model.encoder_decoder_proj(encoded.transpose(1, 2))
    enc_mask = np.arange(states.shape[1])[None, :] < enc_len.numpy()[:, None]
    return feats.numpy(), feat_len.numpy(), states.numpy(), enc_mask


def test_torch_free_reader_reads_every_tensor_like_torch_load(converted, tmp_path):
    _, nemo_path, _ = converted
    import tarfile

    with tarfile.open(nemo_path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt"))
        data = tar.extractfile(member).read()
    (tmp_path / "w.ckpt").write_bytes(data)
    reference = torch.load(tmp_path / "w.ckpt", map_location="cpu", weights_only=True)
    ours = read_torch_zip(data)
    assert set(ours) == set(reference)
    for name, tensor in reference.items():
        np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)


def test_every_nemo_tensor_is_mapped_or_reported(converted):
    _, nemo_path, ckpt_dir = converted
    import json

    report = json.loads((ckpt_dir / "conversion_report.json").read_text())
    archive = read_nemo(nemo_path)
    accounted = set(report["mapped"]) | set(report["unused"])
    assert accounted == set(archive.tensors)
    assert all(
        name.startswith(("preprocessor.", "transf_decoder._embedding.position"))
        or name.endswith("num_batches_tracked")
        for name in report["unused"]
    )


def test_tokenizer_ids_match_nemo(converted, ours):
    model, _, _ = converted
    tokenizer = ours[2].tokenizer
    lines = ["The quick brown fox.", "Il était une fois, dit-elle."]
    for text, lang in zip(lines, ("en", "fr"), strict=True):
        assert tokenizer.encode(text, lang) == model.tokenizer.text_to_ids(text, lang)
        ids = model.tokenizer.text_to_ids(text, lang)
        assert tokenizer.decode(ids) == model.tokenizer.ids_to_text(ids).strip()
    slots = dict(model.prompt.get_default_dialog_slots()[0]["slots"])
    slots["prompt_language"] = "spl_tokens"
    nemo_prompt = model.prompt.encode_dialog([{"role": "user", "slots": slots}])["context_ids"]
    assert tuple(tokenizer.prompt_ids) == tuple(nemo_prompt.tolist())
    assert tokenizer.eos_id == model.tokenizer.eos_id
    assert tokenizer.pad_id == model.tokenizer.pad_id


def test_features_match_nemo_preprocessor(nemo_encoded, audio_batch, ours):
    feats, feat_len, _, _ = nemo_encoded
    audio, lengths = audio_batch
    config = ours[2].feature_config
    assert config == FeatureConfig(kind="nemo", num_mels=128)
    for i in range(2):
        mine = log_mel_numpy(audio[i, : lengths[i]], config)  # [T, M]
        reference = feats[i, :, : feat_len[i]].T
        assert mine.shape == reference.shape
        # NeMo computes the STFT in float32 with torch; per-feature normalisation divides by a
        # small std, so compare with an absolute tolerance on the normalised scale.
        np.testing.assert_allclose(mine, reference, atol=2e-3, rtol=0)


def test_encoder_output_matches_nemo(nemo_encoded, ours):
    feats, feat_len, states, enc_mask = nemo_encoded
    model, variables, _ = ours
    features = jnp.asarray(feats.transpose(0, 2, 1))
    feature_mask = jnp.arange(features.shape[1])[None, :] < feat_len[:, None]
    encoded, mask = model.apply(variables, features, feature_mask, method=ASRModel.encode)
    np.testing.assert_array_equal(np.asarray(mask), enc_mask)
    for i in range(2):
        valid = enc_mask[i]
        err = relative_error(np.asarray(encoded)[i, valid], states[i, valid])
        assert err <= REL_TOL, f"utterance {i}: encoder relative error {err:.2e}"


def _teacher_tokens(model, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Prompt + a transcript per utterance, padded with pad_id: tokens [2, L], lengths [2]."""
    texts = [("seven", "en"), ("zero trois", "fr")]
    rows = [list(tokenizer.prompt_ids) + tokenizer.encode(t, lang) for t, lang in texts]
    length = max(len(r) for r in rows)
    tokens = np.full((2, length), tokenizer.pad_id, np.int64)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    return tokens, np.array([len(r) for r in rows])


def _nemo_log_probs(model, tokens, token_len, states, enc_mask, bidirectional=False):
    decoder = model.transf_decoder._decoder
    old = decoder.diagonal
    decoder.diagonal = None if bidirectional else 0
    try:
        with torch.no_grad():
            token_mask = torch.from_numpy(np.arange(tokens.shape[1])[None] < token_len[:, None])
            hidden = model.transf_decoder(
                input_ids=torch.from_numpy(tokens),
                decoder_mask=token_mask.long(),
                encoder_embeddings=torch.from_numpy(states),
                encoder_mask=torch.from_numpy(enc_mask).float(),
            )
            return model.log_softmax(hidden_states=hidden).numpy()
    finally:
        decoder.diagonal = old


def test_teacher_forced_ar_log_probs_match_nemo(converted, nemo_encoded, ours):
    nemo_model = converted[0]
    _, _, states, enc_mask = nemo_encoded
    model, variables, ckpt = ours
    tokens, token_len = _teacher_tokens(nemo_model, ckpt.tokenizer)
    reference = _nemo_log_probs(nemo_model, tokens, token_len, states, enc_mask)
    logits = model.apply(
        variables,
        jnp.asarray(tokens, jnp.int32),
        jnp.asarray(states),
        jnp.asarray(enc_mask),
        method=ASRModel.ar_logits,
    )
    log_probs = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))
    nemo_vocab = reference.shape[-1]
    assert log_probs.shape[-1] == nemo_vocab + 1  # + [MASK]
    for i in range(2):
        n = token_len[i]
        err = relative_error(log_probs[i, :n, :nemo_vocab], reference[i, :n])
        assert err <= REL_TOL, f"utterance {i}: log-prob relative error {err:.2e}"


def test_bidirectional_decoder_matches_nemo_without_causal_mask(converted, nemo_encoded, ours):
    """The MDM decoder = NeMo's decoder with the causal mask swapped for a full one."""
    nemo_model = converted[0]
    _, _, states, enc_mask = nemo_encoded
    model, variables, ckpt = ours
    tokenizer = ckpt.tokenizer
    prompt = np.array(tokenizer.prompt_ids)
    canvas = np.array([tokenizer.encode("four two", "en")] * 2)
    canvas[:, 1] = tokenizer.mask_id - 1  # a filler id: any id NeMo's vocabulary has
    tokens = np.concatenate([np.broadcast_to(prompt, (2, len(prompt))), canvas], axis=1)
    reference = _nemo_log_probs(
        nemo_model, tokens, np.full(2, tokens.shape[1]), states, enc_mask, bidirectional=True
    )[:, len(prompt) :]
    logits = model.apply(
        variables,
        jnp.asarray(canvas, jnp.int32),
        jnp.asarray(states),
        jnp.asarray(enc_mask),
        method=ASRModel.mdm_logits,
    )
    log_probs = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))
    err = relative_error(log_probs[..., : reference.shape[-1]], reference)
    assert err <= REL_TOL, f"bidirectional log-prob relative error {err:.2e}"


def test_greedy_ar_decoding_matches_nemo(converted, nemo_encoded, ours):
    nemo_model = converted[0]
    _, _, states, enc_mask = nemo_encoded
    model, variables, ckpt = ours
    prompt = list(ckpt.tokenizer.prompt_ids)
    steps = 12
    # NeMo: recompute the causal decoder over the growing prefix, take the argmax.
    reference = np.array([prompt, prompt])
    for _ in range(steps):
        lengths = np.full(2, reference.shape[1])
        log_probs = _nemo_log_probs(nemo_model, reference, lengths, states, enc_mask)
        reference = np.concatenate([reference, log_probs[:, -1].argmax(-1)[:, None]], axis=1)
    # Ours: the KV-cache step path (prompt fed at once, then one token per step).
    cross_kv = model.apply(variables, jnp.asarray(states), method=ASRModel.ar_cross_kv)
    cache = model.apply(variables, 2, len(prompt) + steps, method=ASRModel.ar_init_cache)
    tokens = jnp.asarray([prompt, prompt], jnp.int32)
    logits, cache = model.apply(
        variables, tokens, 0, cache, cross_kv, jnp.asarray(enc_mask), method=ASRModel.ar_step
    )
    out = [tokens]
    position = len(prompt)
    for _ in range(steps):
        nxt = jnp.argmax(logits[:, -1], axis=-1)[:, None].astype(jnp.int32)
        out.append(nxt)
        logits, cache = model.apply(
            variables,
            nxt,
            position,
            cache,
            cross_kv,
            jnp.asarray(enc_mask),
            method=ASRModel.ar_step,
        )
        position += 1
    np.testing.assert_array_equal(np.concatenate([np.asarray(t) for t in out], axis=1), reference)
