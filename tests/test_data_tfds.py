"""TFDS round trip: manifest (10 utterances) -> TFDS builder (array_record) -> tfds data_source
-> the same grain pipeline, giving the same batches as reading the manifest directly."""

from __future__ import annotations

import numpy as np
import pytest

from mdm_asr_jax.audio import FeatureConfig
from mdm_asr_jax.data import synth
from mdm_asr_jax.data.pipeline import DataConfig, make_pipeline
from mdm_asr_jax.data.sources import SourceError, parse_tfds_spec

pytest.importorskip("tensorflow_datasets")


class CharTokenizer:
    pad_id = 0

    def encode(self, text: str) -> list[int]:
        return [4 + (ord(c) % 60) for c in text]


def test_parse_tfds_spec():
    assert parse_tfds_spec("tfds:librispeech/train_clean100") == ("librispeech", "train_clean100")
    assert parse_tfds_spec("tfds:corpus/cfg:1.0.0/test[:10%]") == ("corpus/cfg:1.0.0", "test[:10%]")
    with pytest.raises(SourceError, match="tfds:NAME/SPLIT"):
        parse_tfds_spec("tfds:librispeech")


def test_manifest_to_tfds_round_trip_gives_the_same_batches(tmp_path):
    from mdm_asr_jax.data.tfds_builder import manifests_to_tfds

    sentences = synth.generate_sentences("digits", 10, "en", seed=2)
    manifests, _ = synth.build_synth_corpus(sentences, str(tmp_path / "wav"), seed=0)
    data_dir = str(tmp_path / "tfds")
    report = manifests_to_tfds("tiny_digits", {"train": manifests["train"]}, data_dir)
    assert report.num_dropped == 0

    features = FeatureConfig(kind="whisper")
    common = dict(batch_size=4, frame_buckets=(400,), max_tokens=64, seed=1)
    direct = DataConfig(source=manifests["train"], **common)
    via_tfds = DataConfig(
        source="tfds:tiny_digits/train",
        tfds_data_dir=data_dir,
        index_cache_dir=str(tmp_path / "cache"),
        **common,
    )
    batches = {}
    for name, config in (("direct", direct), ("tfds", via_tfds)):
        pipeline = make_pipeline(
            config,
            tokenizer=CharTokenizer(),
            feature_config=features,
            train=False,
            process_index=0,
            process_count=1,
        )
        batches[name] = list(pipeline)
    assert len(batches["tfds"]) == 3  # 10 utterances, last batch padded
    for want, got in zip(batches["direct"], batches["tfds"], strict=True):
        np.testing.assert_array_equal(want["index"], got["index"])
        np.testing.assert_array_equal(want["tokens"], got["tokens"])
        np.testing.assert_array_equal(want["feature_mask"], got["feature_mask"])
        # The manifest wavs are 16-bit already, so int16 storage loses nothing.
        np.testing.assert_allclose(want["features"], got["features"], atol=1e-5)
    assert pipeline.describe(0)["text"] == sentences[0]
