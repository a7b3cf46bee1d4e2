"""Eval scoring: the normaliser the checkpoint records, over-long utterances split at pauses and
scored, empty references scored as insertions, and the reason for every skipped line.

Tiny random checkpoints (2 layers, width 32); the WER checks use the thin stand-in decode of
test_eval (the real jitted encoder, chosen ids), so the expected counts are known exactly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
from test_eval import DIGITS, _run_cli, _speech_like, make_stand_in, random_params
from tiny import tiny_model_config

from mdm_asr_jax.audio import FeatureConfig, write_wav
from mdm_asr_jax.checkpoint import DecodingDefaults, export_checkpoint, load_checkpoint
from mdm_asr_jax.eval import evaluate as ev
from mdm_asr_jax.inference.batching import eval_frame_buckets
from mdm_asr_jax.inference.eval_set import PIECE_INDEX_BASE, load_eval_set
from mdm_asr_jax.nn.config import encoder_config
from mdm_asr_jax.text import SentencePieceTokenizer

RATE = 16000


def _tokenizer(directory: Path) -> SentencePieceTokenizer:
    text = [" ".join(DIGITS[(i + j) % 10] for j in range(1 + i % 4)) for i in range(60)]
    return SentencePieceTokenizer.train(
        text, directory / "spm", vocab_size=24, model_type="word", hard_vocab_limit=False
    )


def _export(directory: Path, *, decoding=None, info=None, max_frames: int | None = None) -> Path:
    """A tiny digits checkpoint; `max_frames` (encoder positions x subsampling) bounds its input."""
    tokenizer = _tokenizer(directory)
    config = tiny_model_config(vocab_size=tokenizer.vocab_size, ar=False, ctc=True)
    if max_frames is not None:
        encoder = encoder_config(
            "test", dropout=0.0, positions="learned", max_frames=max_frames // 4
        )
        config = dataclasses.replace(config, encoder=encoder).validate()
    return export_checkpoint(
        directory / "ckpt",
        config,
        random_params(config),
        FeatureConfig(),
        tokenizer,
        decoding=decoding,
        info=info,
    )


def _manifest(folder: Path, lines: list[dict]) -> Path:
    path = folder / "test.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


# ---------------------------------------------------------------------------------------------
# The normaliser the checkpoint records.


@pytest.fixture(scope="module")
def digits_manifest(tmp_path_factory) -> Path:
    """References written with digits ("7 3"): `basic` spells them out, `english` merges them."""
    folder = tmp_path_factory.mktemp("digits")
    write_wav(folder / "a.wav", _speech_like("7_george_0"))
    return _manifest(folder, [{"audio": "a.wav", "text": "7 3"}])


def _digits_stand_in(checkpoint):
    tok = checkpoint.tokenizer
    return make_stand_in({0: tok.encode("seven three")}, checkpoint.model_config.eos_id)


def test_a_digits_checkpoint_recorded_with_basic_is_scored_with_basic_by_default(
    tmp_path, digits_manifest, capsys
):
    directory = _export(tmp_path, decoding=DecodingDefaults(normalizer="basic"))
    checkpoint = load_checkpoint(directory)
    assert checkpoint.decoding.normalizer == "basic"
    decode = _digits_stand_in(checkpoint)
    (result,) = ev.evaluate_sweep(
        checkpoint, manifest=digits_manifest, samplers=["ctc_greedy"], decode_fn=decode
    )
    assert (result["normalizer"], result["normalizer_source"]) == ("basic", "checkpoint")
    assert result["word_errors"] == 0 and result["words"] == 2
    # An explicit normaliser still wins (and here gives the meaningless digit-run WER).
    (english,) = ev.evaluate_sweep(
        checkpoint,
        manifest=digits_manifest,
        samplers=["ctc_greedy"],
        decode_fn=decode,
        normalizer="english",
    )
    assert (english["normalizer"], english["normalizer_source"]) == ("english", "flag")
    assert english["word_errors"] > 0
    # The CLI without --normalizer: its JSON line says which normaliser and where it came from.
    _run_cli(
        [
            f"--checkpoint={directory}",
            f"--manifest={digits_manifest}",
            "--sampler=ctc_greedy",
            "--batch_size=2",
        ]
    )
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert (line["normalizer"], line["normalizer_source"]) == ("basic", "checkpoint")


def test_older_checkpoints_fall_back_to_training_config_then_default_with_a_warning(
    tmp_path, caplog
):
    from_config = load_checkpoint(
        _export(tmp_path / "a", info={"config": {"eval": {"normalizer": "basic"}}})
    )
    assert ev.resolve_normalizer(None, from_config) == ("basic", "training config")
    bare = load_checkpoint(_export(tmp_path / "b"))
    with caplog.at_level(logging.WARNING):
        assert ev.resolve_normalizer(None, bare) == ("english", "default")
    warnings = [r for r in caplog.records if "records no normaliser" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert ev.resolve_normalizer("none", bare) == ("none", "flag")


def test_training_writes_the_eval_normaliser_into_the_checkpoint_config(tmp_path):
    from train_fixtures import tiny_train_config, write_corpus

    from mdm_asr_jax.checkpoint import read_config
    from mdm_asr_jax.train.trainer import build_setup

    config = tiny_train_config(write_corpus(tmp_path / "data"))
    config.eval.normalizer = "basic"
    build_setup(config, tmp_path / "work", config.data)
    assert read_config(tmp_path / "work")[3].normalizer == "basic"


# ---------------------------------------------------------------------------------------------
# Over-long utterances, empty references, bad audio.


def _long_speech(seconds: float, gaps_at: list[float], seed: int = 0) -> np.ndarray:
    """Noise 'speech' with 0.3 s silent gaps starting at `gaps_at` seconds."""
    rng = np.random.default_rng(seed)
    audio = (0.3 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
    for start in gaps_at:
        audio[int(start * RATE) : int((start + 0.3) * RATE)] = 0.0
    return audio


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """(checkpoint whose encoder takes at most 4 s, manifest) with: a short utterance (line 1),
    a 9.5 s one (line 2), an empty reference (line 3), NaN audio (line 4), a missing file
    (line 5) and a bad JSON line (line 6)."""
    folder = tmp_path_factory.mktemp("limited")
    checkpoint = load_checkpoint(_export(folder, max_frames=400))
    write_wav(folder / "short.wav", _speech_like("1_jackson_0"))
    write_wav(folder / "long.wav", _long_speech(9.5, [3.2, 6.6]))
    write_wav(folder / "silence.wav", np.zeros(RATE // 2, np.float32))
    nan = _long_speech(1.0, [])
    nan[100:200] = np.nan
    sf.write(folder / "nan.wav", nan, RATE, subtype="FLOAT")
    lines = [
        json.dumps({"audio": "short.wav", "text": "one"}),
        json.dumps({"audio": "long.wav", "text": "one two three four"}),
        json.dumps({"audio": "silence.wav", "text": ""}),
        json.dumps({"audio": "nan.wav", "text": "five"}),
        json.dumps({"audio": "missing.wav", "text": "six"}),
        "{not json",
    ]
    manifest = folder / "test.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return checkpoint, manifest


def test_an_over_long_utterance_is_split_at_pauses_and_scored_not_skipped(limited):
    checkpoint, manifest = limited
    limit = eval_frame_buckets(checkpoint.model_config)[-1]
    assert limit == 400
    eval_set = load_eval_set(checkpoint, manifest=manifest, batch_size=2)
    assert set(eval_set.refs) == {0, 1, 2} and eval_set.num_utterances == 3
    pieces = eval_set.pieces[1]
    assert len(pieces) == 3 and all(p >= PIECE_INDEX_BASE for p in pieces)
    assert all(b["features"].shape[1] <= limit for b in eval_set.batches)
    piece_seconds = {
        int(i): float(s)
        for b in eval_set.batches
        for i, s, m in zip(b["index"], b["seconds"], b["example_mask"], strict=True)
        if m and i >= PIECE_INDEX_BASE
    }
    assert sum(piece_seconds.values()) == pytest.approx(9.5, abs=1e-3)
    # Cuts in the pauses: the first two pieces end inside the gaps at 3.2 s and 6.6 s.
    ends = np.cumsum([piece_seconds[p] for p in pieces])
    assert 3.2 <= ends[0] <= 3.5 and 6.6 <= ends[1] <= 6.9
    tok = checkpoint.tokenizer
    hyp = {0: "one", 2: "two three"}
    hyp.update({p: w for p, w in zip(pieces, ["one", "two", "three"], strict=True)})
    decode = make_stand_in(
        {i: tok.encode(t) for i, t in hyp.items()}, checkpoint.model_config.eos_id
    )
    result = ev.Evaluator(checkpoint, eval_set, normalizer="none", decode_fn=decode).run(
        "ctc_greedy"
    )
    refs, hyps = ["one", "one two three four", ""], ["one", "one two three", "two three"]
    out = jiwer.process_words(refs, hyps)
    assert result["n"] == 3
    assert result["words"] == out.substitutions + out.deletions + out.hits == 5
    assert result["word_errors"] == out.substitutions + out.deletions + out.insertions == 3
    short_seconds = _speech_like("1_jackson_0").shape[0] / RATE
    assert result["audio_seconds"] == pytest.approx(short_seconds + 9.5 + 0.5, rel=1e-3)


def test_real_decode_runs_split_pieces_and_writes_one_hypothesis_per_utterance(limited, tmp_path):
    checkpoint, manifest = limited
    hyps = tmp_path / "hyps.jsonl"
    (result,) = ev.evaluate_sweep(
        checkpoint, manifest=manifest, samplers=["ctc_greedy"], batch_size=2, hyps=hyps
    )
    rows = [json.loads(x) for x in hyps.read_text().splitlines()]
    assert result["n"] == 3 and [r["audio"] for r in rows] == [
        "short.wav",
        "long.wav",
        "silence.wav",
    ]
    assert rows[1]["pieces"] == 3 and rows[1]["ref"] == "one two three four"
    assert rows[2]["ref"] == ""


def test_every_skipped_line_carries_line_path_and_a_non_empty_reason(limited):
    checkpoint, manifest = limited
    eval_set = load_eval_set(checkpoint, manifest=manifest, batch_size=2)
    items = {i["line"]: i for i in ev.skipped_summary(eval_set.report)["items"]}
    assert set(items) == {4, 5, 6}
    assert (items[4]["audio"], items[4]["reason"]) == ("nan.wav", "non-finite audio")
    assert "NaN" in items[4]["detail"]
    assert (items[5]["audio"], items[5]["reason"]) == ("missing.wav", "missing audio file")
    assert (items[6]["audio"], items[6]["reason"]) == ("", "bad JSON")
    assert all(i["reason"] and i["detail"] and i["source"] == str(manifest) for i in items.values())


def test_nan_audio_in_an_over_long_utterance_is_reported_with_its_reason(tmp_path):
    checkpoint = load_checkpoint(_export(tmp_path, max_frames=400))
    audio = _long_speech(6.0, [3.0])
    audio[5] = np.inf
    sf.write(tmp_path / "bad.wav", audio, RATE, subtype="FLOAT")
    write_wav(tmp_path / "ok.wav", _speech_like("2_lucas_1"))
    manifest = _manifest(
        tmp_path, [{"audio": "ok.wav", "text": "two"}, {"audio": "bad.wav", "text": "x"}]
    )
    eval_set = load_eval_set(checkpoint, manifest=manifest, batch_size=2)
    (item,) = ev.skipped_summary(eval_set.report)["items"]
    assert (item["line"], item["audio"], item["reason"]) == (2, "bad.wav", "non-finite audio")
    assert item["detail"] and eval_set.pieces == {}
