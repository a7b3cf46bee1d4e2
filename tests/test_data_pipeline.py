"""The grain input pipeline: bad input reported with line numbers, determinism, exact restore,
static bucket shapes, disjoint process shards, eval padding, batch contents."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np
import pytest

from mdm_asr_jax.audio import FeatureConfig, load_audio, log_mel_numpy, log_mel_reference
from mdm_asr_jax.data import synth
from mdm_asr_jax.data.manifest import ManifestError, read_manifest
from mdm_asr_jax.data.pipeline import DataConfig, DataConfigError, make_pipeline

FEATURES = FeatureConfig(kind="whisper", num_mels=80)
FRAME_BUCKETS = (150, 300)
TOKEN_BUCKETS = (24,)


class CharTokenizer:
    """Tiny stand-in tokenizer: one id per character (pad 0)."""

    pad_id = 0

    def encode(self, text: str) -> list[int]:
        return [4 + (ord(c) % 60) for c in text]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """16 short synthesised utterances + a manifest with a missing file, a corrupt file (with and
    without `seconds`), an empty transcript and a bad JSON line."""
    folder = tmp_path_factory.mktemp("corpus")
    sentences = synth.generate_sentences("mixed", 16, "en", seed=3)
    manifests, problems = synth.build_synth_corpus(
        sentences, str(folder), variants=("m1", "f2"), rate_range=(190, 220), seed=0
    )
    assert not problems
    with open(manifests["train"], encoding="utf-8") as f:
        good = [json.loads(line) for line in f]
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    lines = [json.dumps(r) for r in good[:3]]
    lines.append(json.dumps({"audio": "nowhere.wav", "text": "missing file"}))  # line 4
    lines.append(json.dumps({"audio": "corrupt.wav", "text": "corrupt header"}))  # line 5
    lines.append(json.dumps({"audio": good[3]["audio"], "text": "  "}))  # line 6
    lines.append("{not json")  # line 7
    # line 8: corrupt, but `seconds` given, so only decoding finds out.
    lines.append(json.dumps({"audio": "corrupt.wav", "text": "corrupt data", "seconds": 1.0}))
    lines += [json.dumps(r) for r in good[3:]]  # lines 9..21
    bad_manifest = folder / "with_problems.jsonl"
    bad_manifest.write_text("\n".join(lines) + "\n")
    return {"clean": manifests["train"], "bad": str(bad_manifest), "records": good}


def _config(manifest: str, **overrides) -> DataConfig:
    values = dict(
        source=manifest,
        batch_size=4,
        frame_buckets=FRAME_BUCKETS,
        token_buckets=TOKEN_BUCKETS,
        max_tokens=48,
        seed=7,
    )
    values.update(overrides)
    return DataConfig(**values)


def _pipeline(config: DataConfig, train: bool, process_index: int = 0, process_count: int = 1):
    return make_pipeline(
        config,
        tokenizer=CharTokenizer(),
        feature_config=FEATURES,
        train=train,
        process_index=process_index,
        process_count=process_count,
    )


def _take(iterator, n: int) -> list[dict]:
    return [next(iterator) for _ in range(n)]


def test_manifest_problems_are_reported_with_line_numbers(corpus):
    entries, problems = read_manifest(corpus["bad"])
    reasons = {p.line: p.reason for p in problems}
    assert reasons == {
        4: "missing audio file",
        6: "empty transcript",
        7: "bad JSON",
    }
    assert [e.line for e in entries] == [1, 2, 3, 5, 8] + list(range(9, 22))


def test_strict_manifest_fails_on_first_problem(corpus):
    with pytest.raises(ManifestError, match=r"with_problems.jsonl:4: missing audio file"):
        read_manifest(corpus["bad"], strict=True)


def test_bad_utterances_are_dropped_reported_and_the_rest_flows(corpus):
    pipeline = _pipeline(_config(corpus["bad"]), train=False)
    batches = list(pipeline)
    seen = np.concatenate([b["index"][b["example_mask"]] for b in batches])
    # 0-based indices of the 16 good lines; corrupt line 8 (index 7) fails at load time.
    expected = [0, 1, 2] + list(range(8, 21))
    assert sorted(seen.tolist()) == expected
    reasons = {p.line: p.reason for p in pipeline.report.problems}
    assert reasons == {
        4: "missing audio file",
        5: "unreadable audio",
        6: "empty transcript",
        7: "bad JSON",
        8: "unreadable audio",
    }
    assert pipeline.report.num_dropped == 5
    assert "5 utterances dropped" in pipeline.report.summary()


def test_strict_pipeline_raises_on_bad_line(corpus):
    with pytest.raises(ManifestError, match=":4: missing audio file"):
        _pipeline(_config(corpus["bad"], strict=True), train=True)


def test_same_seed_gives_same_batches_and_other_seed_other_order(corpus):
    first = _take(iter(_pipeline(_config(corpus["clean"]), train=True)), 6)
    again = _take(iter(_pipeline(_config(corpus["clean"]), train=True)), 6)
    other = _take(iter(_pipeline(_config(corpus["clean"], seed=8), train=True)), 6)
    for a, b in zip(first, again, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    order = np.concatenate([b["index"] for b in first])
    assert not np.array_equal(order, np.concatenate([b["index"] for b in other]))


def test_restored_iterator_yields_exactly_the_next_batch(corpus):
    pipeline = _pipeline(_config(corpus["clean"]), train=True)
    assert pipeline.steps_per_epoch < 5
    iterator = iter(pipeline)
    _take(iterator, 5)  # crosses an epoch boundary
    state = json.loads(json.dumps(iterator.get_state()))  # what an orbax checkpoint keeps
    expected = _take(iterator, 2)
    restored = iter(_pipeline(_config(corpus["clean"]), train=True))
    restored.set_state(state)
    for want, got in zip(expected, _take(restored, 2), strict=True):
        for key in want:
            np.testing.assert_array_equal(want[key], got[key])


def test_batch_shapes_come_only_from_the_bucket_set(corpus):
    pipeline = _pipeline(_config(corpus["clean"], batch_size=2), train=True)
    allowed = {(t, tokens) for t in FRAME_BUCKETS for tokens in (24, 48)}
    assert set(pipeline.batch_shapes) <= allowed
    shapes = set()
    for batch in _take(iter(pipeline), 3 * pipeline.steps_per_epoch):
        b = 2
        frames, tokens = batch["features"].shape[1], batch["tokens"].shape[1]
        assert (frames, tokens) in allowed
        assert batch["features"].shape == (b, frames, FEATURES.num_mels)
        assert batch["feature_mask"].shape == (b, frames)
        assert batch["example_mask"].all()  # training batches are full
        shapes.add((frames, tokens))
    assert shapes == set(pipeline.batch_shapes)


def test_process_shards_are_disjoint_and_cover_everything(corpus):
    config = _config(corpus["clean"])
    shards, steps = [], []
    for process in range(2):
        pipeline = _pipeline(config, train=False, process_index=process, process_count=2)
        batches = list(pipeline)
        assert all(b["index"].shape == (2,) for b in batches)  # local batch = 4 / 2
        steps.append([b["features"].shape for b in batches])
        shards.append({int(i) for b in batches for i in b["index"][b["example_mask"]]})
    assert steps[0] == steps[1]  # same bucket shape at every step on both hosts
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(range(16))

    train_shards = []
    for process in range(2):
        batches = _take(iter(_pipeline(config, True, process, 2)), 3)
        train_shards.append({int(i) for b in batches for i in b["index"]})
    assert not train_shards[0] & train_shards[1]


def test_eval_keeps_order_and_pads_the_last_batch(corpus):
    pipeline = _pipeline(_config(corpus["clean"], batch_size=3), train=False)
    batches = list(pipeline)
    masks = np.concatenate([b["example_mask"] for b in batches])
    indices = np.concatenate([b["index"] for b in batches])
    assert masks.sum() == 16
    assert np.all(indices[~masks] == -1)
    for batch in batches:  # manifest order within a bucket
        real = batch["index"][batch["example_mask"]]
        assert np.all(np.diff(real) > 0)
    padded = [b for b in batches if not b["example_mask"].all()]
    assert padded
    for batch in padded:
        empty = ~batch["example_mask"]
        assert not batch["feature_mask"][empty].any()
        assert np.all(batch["token_lengths"][empty] == 0)


def test_batch_holds_the_utterance_features_and_tokens(corpus):
    pipeline = _pipeline(_config(corpus["clean"]), train=False)
    batch = next(iter(pipeline))
    slot = 0
    record = corpus["records"][int(batch["index"][slot])]
    audio = load_audio(os.path.join(os.path.dirname(corpus["clean"]), record["audio"]))
    want = log_mel_numpy(audio, FEATURES)  # [T, M]
    frames = int(batch["feature_mask"][slot].sum())
    assert frames == want.shape[0]
    np.testing.assert_allclose(batch["features"][slot, :frames], want, atol=1e-5)
    reference = log_mel_reference(audio, FEATURES)  # float64: the host path agrees to 1e-4
    np.testing.assert_allclose(batch["features"][slot, :frames], reference, atol=1e-4, rtol=0)
    assert np.all(batch["features"][slot, frames:] == 0)
    ids = CharTokenizer().encode(record["text"])
    assert batch["token_lengths"][slot] == len(ids)
    assert batch["tokens"][slot, : len(ids)].tolist() == ids
    assert np.all(batch["tokens"][slot, len(ids) :] == CharTokenizer.pad_id)
    assert batch["seconds"][slot] == pytest.approx(audio.size / 16000)
    assert batch["tokens"].dtype == np.int32 and batch["features"].dtype == np.float32


def test_too_long_and_too_many_tokens_are_dropped_and_reported(corpus):
    config = _config(corpus["clean"], frame_buckets=(120,), max_tokens=30, token_buckets=())
    pipeline = _pipeline(config, train=False)
    reasons = pipeline.report.counts()
    assert set(reasons) <= {"too long", "too many tokens"}
    assert sum(reasons.values()) == 16 - pipeline.num_utterances > 0
    for batch in pipeline:
        assert batch["features"].shape[1] == 120 and batch["tokens"].shape[1] == 30


def test_config_accepts_config_dict_and_rejects_unknown_keys(corpus):
    config = ml_collections.ConfigDict(
        {"source": corpus["clean"], "batch_size": 4, "frame_buckets": [150, 300]}
    )
    assert DataConfig.from_any(config).frame_buckets == (150, 300)
    with pytest.raises(DataConfigError, match="batch_sizes"):
        DataConfig.from_any({"batch_sizes": 4})
    with pytest.raises(DataConfigError, match="divisible"):
        _pipeline(_config(corpus["clean"], batch_size=3), train=True, process_count=2)


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_and_restore_exactly(corpus):
    base = _take(iter(_pipeline(_config(corpus["clean"]), train=True)), 6)
    config = _config(corpus["clean"], num_workers=2)
    iterator = iter(_pipeline(config, train=True))
    first = _take(iterator, 4)
    state = iterator.get_state()
    rest = _take(iterator, 2)
    iterator.close()
    for want, got in zip(base, first + rest, strict=True):
        for key in want:
            np.testing.assert_array_equal(want[key], got[key])
    restored = iter(_pipeline(config, train=True))
    restored.set_state(state)
    for want, got in zip(rest, _take(restored, 2), strict=True):
        for key in want:
            np.testing.assert_array_equal(want[key], got[key])
    restored.close()


def test_audio_output_gives_the_same_features_on_device(corpus):
    from mdm_asr_jax.data.pipeline import device_features

    on_host = next(iter(_pipeline(_config(corpus["clean"]), train=False)))
    raw = next(iter(_pipeline(_config(corpus["clean"], output="audio"), train=False)))
    assert "features" not in raw and raw["audio"].dtype == np.float32
    assert FEATURES.num_frames(raw["audio"].shape[1]) == raw["feature_mask"].shape[1]
    on_device = device_features(raw, FEATURES)
    assert set(on_device) == set(on_host)
    np.testing.assert_array_equal(on_host["feature_mask"], on_device["feature_mask"])
    np.testing.assert_allclose(on_host["features"], np.asarray(on_device["features"]), atol=2e-3)
