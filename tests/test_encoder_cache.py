"""Frozen-encoder training: the encoder-output cache and its guards."""

from __future__ import annotations

import jax
import pytest
from train_fixtures import tiny_train_config, write_corpus

from mdm_asr_jax.train.trainer import TrainError, train_and_evaluate


def _frozen(manifest, cache: bool, num_steps: int = 4):
    c = tiny_train_config(manifest, num_steps=num_steps)
    c.optim.freeze = ("encoder/.*",)
    c.train.cache_encoder = cache
    c.train.checkpoint_every = 100
    return c


@pytest.mark.slow  # compiles a training step several times (> 30 s)
def test_cached_encoder_outputs_train_exactly_like_a_frozen_encoder(tmp_path):
    manifest = write_corpus(tmp_path / "data")  # 16 utterances = 2 batches of 8 per epoch
    plain = train_and_evaluate(_frozen(manifest, cache=False), tmp_path / "plain")
    cached = train_and_evaluate(_frozen(manifest, cache=True), tmp_path / "cached")
    expected = [h["loss"] for h in plain["history"]]
    got = [h["loss"] for h in cached["history"]]
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # Steps 3-4 (the second epoch) read every utterance from the cache.
    assert cached["encoder_cache"] == {"utterances": 16, "encoder_calls": 2}


def test_cache_encoder_needs_a_frozen_encoder_and_no_spec_augment(tmp_path):
    manifest = write_corpus(tmp_path / "data", count=8)
    c = _frozen(manifest, cache=True, num_steps=1)
    c.optim.freeze = ()
    with pytest.raises(TrainError, match="optim.freeze"):
        train_and_evaluate(c, tmp_path / "a")
    c = _frozen(manifest, cache=True, num_steps=1)
    c.objective.spec_augment = True
    with pytest.raises(TrainError, match="spec_augment"):
        train_and_evaluate(c, tmp_path / "b")


@pytest.mark.slow
def test_finetuning_a_converted_whisper_keeps_its_suppression_and_its_frozen_encoder(tmp_path):
    import dataclasses

    import numpy as np
    import whisper_fixtures as fx

    from mdm_asr_jax.checkpoint import load_checkpoint
    from mdm_asr_jax.convert import whisper as cw

    dims = dataclasses.replace(fx.TINY_DIMS, encoder_positions=64)  # 128 frames = the bucket
    src = fx.write_hf_dir(tmp_path / "hf", fx.random_hf_tensors(dims), dims)
    fx.write_tiny_tokenizer(src)
    base_dir = cw.convert_whisper(src, tmp_path / "base", decoders=("ar",))
    c = _frozen(write_corpus(tmp_path / "data"), cache=True, num_steps=3)
    c.model.base_checkpoint = str(base_dir)
    c.model.ar = False
    c.objective.ar_weight = 0.0
    c.model.init_map = (("encoder", "encoder"), ("mdm_decoder", "ar_decoder"))
    c.model.encoder_min_frames = 0
    results = train_and_evaluate(c, tmp_path / "work")
    assert results["encoder_cache"]["utterances"] == 16
    base, tuned = load_checkpoint(base_dir), load_checkpoint(tmp_path / "work")
    assert tuned.model_config.mdm_decoder.bidirectional and tuned.model_config.ar_decoder is None
    assert tuned.model_config.encoder.min_frames == 0
    for key in ("forbidden_ids", "begin_forbidden_ids", "max_len"):
        assert getattr(tuned.decoding, key) == getattr(base.decoding, key)
    for a, b in zip(
        jax.tree.leaves(base.params["encoder"]),
        jax.tree.leaves(tuned.params["encoder"]),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    before = np.asarray(base.params["ar_decoder"]["embed"]["embedding"])
    after = np.asarray(tuned.params["mdm_decoder"]["embed"]["embedding"])
    assert after.shape == before.shape and not np.array_equal(after, before)  # copied, then trained
