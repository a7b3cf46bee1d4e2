"""Corpus builders: eSpeak NG synthesis (deterministic, requested texts, plausible durations,
held-out sentences and voices, unspeakable text reported) and FSDD connected digits."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile

from mdm_asr_jax.data import fsdd, synth

FSDD_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "fsdd")


def _read(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_synthesis_is_deterministic_and_speaks_the_requested_texts(tmp_path):
    sentences = ["turn on the light", "three one four one five", "set a timer for ten minutes"]
    runs = []
    for name in ("a", "b"):
        manifests, problems = synth.build_synth_corpus(
            sentences, str(tmp_path / name), variants=("m3", "f2"), snr_db_range=(10, 20), seed=5
        )
        assert not problems
        runs.append(manifests["train"])
    first, second = _read(runs[0]), _read(runs[1])
    assert first == second
    assert sorted(r["text"] for r in first) == sorted(sentences)
    for record in first:
        a, rate = soundfile.read(tmp_path / "a" / record["audio"], dtype="int16")
        b, _ = soundfile.read(tmp_path / "b" / record["audio"], dtype="int16")
        assert rate == 16000
        np.testing.assert_array_equal(a, b)
        words = len(record["text"].split())
        # eSpeak at 140-200 wpm: roughly 0.3-0.45 s per word plus a little silence.
        assert 0.15 * words < record["seconds"] < 0.8 * words + 0.5
        assert record["seconds"] == pytest.approx(a.size / 16000, abs=1e-3)
        assert record["voice"] in ("en-us+m3", "en-us+f2")


def test_other_seed_changes_voices_or_prosody(tmp_path):
    sentences = [f"sentence number {w}" for w in synth.DIGIT_WORDS["en"]]
    one, _ = synth.build_synth_corpus(sentences, str(tmp_path / "a"), seed=1)
    two, _ = synth.build_synth_corpus(sentences, str(tmp_path / "b"), seed=2)
    keys = [(r["voice"], r["rate"], r["pitch"]) for r in _read(one["train"])]
    assert keys != [(r["voice"], r["rate"], r["pitch"]) for r in _read(two["train"])]


def test_splits_hold_out_sentences_and_voices(tmp_path):
    sentences = synth.generate_sentences("digits", 20, "en", seed=0)
    manifests, problems = synth.build_synth_corpus(
        sentences,
        str(tmp_path),
        variants=("m1", "m2", "m3", "f1", "f2", "f3"),
        test_voices=2,
        dev_fraction=0.1,
        test_fraction=0.2,
        renditions=2,
        seed=0,
    )
    assert not problems
    split = {name: _read(path) for name, path in manifests.items()}
    assert {name: len(rows) for name, rows in split.items()} == {"test": 8, "dev": 4, "train": 28}
    texts = {name: {r["text"] for r in rows} for name, rows in split.items()}
    voices = {name: {r["voice"] for r in rows} for name, rows in split.items()}
    assert not texts["test"] & (texts["train"] | texts["dev"])
    assert not texts["dev"] & texts["train"]
    assert not voices["test"] & (voices["train"] | voices["dev"])
    with open(tmp_path / "voices.json") as f:
        assert len(json.load(f)["test_voices"]) == 2


def test_unspeakable_text_is_reported_not_dropped_silently(tmp_path):
    manifests, problems = synth.build_synth_corpus(
        ["hello there", "...", "good morning"], str(tmp_path), seed=0
    )
    assert [(p.line, p.reason) for p in problems] == [(2, "no speech produced")]
    assert [r["text"] for r in _read(manifests["train"])] == ["hello there", "good morning"]
    assert (tmp_path / "train_problems.jsonl").exists()


@pytest.mark.parametrize("lang", ["fr", "de", "es"])
def test_other_languages_speak(lang):
    sentence = synth.generate_sentences("commands", 1, lang, seed=0)[0]
    audio = synth.speak(sentence, lang, "f1")
    assert audio.dtype == np.float32 and audio.size > 0.3 * 16000


def test_unknown_voice_and_language_are_clear_errors(tmp_path):
    with pytest.raises(synth.SynthError, match="variants"):
        synth.build_synth_corpus(["hi"], str(tmp_path), variants=("no_such_voice",))
    with pytest.raises(synth.SynthError, match="language"):
        synth.generate_sentences("digits", 3, "xx")


def test_generated_sentences_are_distinct_and_deterministic():
    a = synth.generate_sentences("mixed", 50, "en", seed=4)
    assert a == synth.generate_sentences("mixed", 50, "en", seed=4)
    assert len(set(a)) == 50


@pytest.mark.skipif(not os.path.isdir(FSDD_DIR), reason="FSDD recordings not available")
def test_fsdd_connected_digits_hold_out_a_speaker(tmp_path):
    manifests = fsdd.build_fsdd_corpus(
        FSDD_DIR,
        str(tmp_path),
        num_utterances={"train": 6, "dev": 3, "test": 3},
        test_speakers=["george"],
        seed=0,
    )
    rows = {name: _read(path) for name, path in manifests.items()}
    assert {r["speaker"] for r in rows["test"]} == {"george"}
    assert "george" not in {r["speaker"] for r in rows["train"] + rows["dev"]}
    for record in rows["train"] + rows["dev"] + rows["test"]:
        words = record["text"].split()
        assert 2 <= len(words) <= 7 and set(words) <= set(fsdd.DIGIT_WORDS)
        audio, rate = soundfile.read(tmp_path / record["audio"])
        assert rate == 16000
        # An FSDD digit lasts ~0.3-0.8 s; gaps 0.05-0.4 s.
        assert 0.25 * len(words) < audio.size / rate < 1.3 * len(words) + 0.5
    again = fsdd.build_fsdd_corpus(
        FSDD_DIR, str(tmp_path / "again"), num_utterances={"train": 6}, test_speakers=["george"]
    )
    assert [r["text"] for r in _read(again["train"])] == [r["text"] for r in rows["train"]]


@pytest.mark.slow
def test_synthesis_does_not_depend_on_the_worker_count(tmp_path):
    sentences = synth.generate_sentences("mixed", 12, "en", seed=1)
    one, _ = synth.build_synth_corpus(sentences, str(tmp_path / "one"), seed=3, num_workers=1)
    two, _ = synth.build_synth_corpus(sentences, str(tmp_path / "two"), seed=3, num_workers=2)
    assert _read(one["train"]) == _read(two["train"])
    for record in _read(one["train"]):
        a = (tmp_path / "one" / record["audio"]).read_bytes()
        assert a == (tmp_path / "two" / record["audio"]).read_bytes()


def test_held_out_accents_are_heard_only_in_the_test_accent_split(tmp_path):
    sentences = [f"{w} one two" for w in ("zero", "three", "four", "five", "six", "seven")]
    manifests, problems = synth.build_synth_corpus(
        sentences,
        str(tmp_path),
        variants=("m1", "f2", "m3"),
        accents=("en-us", "en", "en-029"),
        test_accents=("en-029",),
        dev_fraction=0.17,
        test_fraction=0.34,
        seed=2,
    )
    assert not problems
    records = {split: _read(path) for split, path in manifests.items()}
    assert set(records) == {"train", "dev", "test", "test_accent"}
    for split in ("train", "dev", "test"):
        assert all(r["accent"] in ("en-us", "en") for r in records[split]), split
    assert all(r["accent"] == "en-029" for r in records["test_accent"])
    assert all(r["voice"].startswith("en-029+") for r in records["test_accent"])
    # The same held-out sentences as the held-out-voice test set, in the held-out accent.
    assert sorted(r["text"] for r in records["test_accent"]) == sorted(
        r["text"] for r in records["test"]
    )
    with pytest.raises(synth.SynthError, match="Unknown en accents"):
        synth.build_synth_corpus(["hi"], str(tmp_path / "x"), accents=("en-mars",))


def test_silence_and_gain_are_applied_around_the_same_speech(tmp_path):
    def render(name, **extra):
        manifests, problems = synth.build_synth_corpus(
            ["four two"], str(tmp_path / name), variants=("m3",), seed=4, **extra
        )
        assert not problems
        (record,) = _read(manifests["train"])
        audio, rate = soundfile.read(os.path.join(tmp_path, name, record["audio"]))
        return record, audio, rate

    plain, speech, rate = render("plain")
    padded, audio, _ = render("padded", silence_range=(0.25, 0.25), gain_db_range=(-20.0, -20.0))
    lead = int(0.25 * rate)
    assert padded["silence"] == [0.25, 0.25] and padded["gain_db"] == -20.0
    assert audio.size == speech.size + 2 * lead
    assert np.all(audio[:lead] == 0) and np.all(audio[-lead:] == 0)
    # -20 dB is a tenth of the amplitude (up to 16-bit rounding).
    np.testing.assert_allclose(audio[lead:-lead], 0.1 * speech, atol=2 / 32768)
