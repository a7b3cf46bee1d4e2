"""The extension-point registries: encoder kinds and sampler rules each live in one table."""

from __future__ import annotations

import dataclasses

import pytest
from tiny import tiny_model_config

from mdm_asr_jax.diffusion import samplers
from mdm_asr_jax.inference.batching import frame_bucket, max_frames
from mdm_asr_jax.nn.config import ENCODER_KINDS, ConfigError
from mdm_asr_jax.nn.encoders import ENCODERS, encoder_kind, finetune_config


def test_every_configurable_encoder_kind_has_a_registry_row():
    assert set(ENCODERS) == set(ENCODER_KINDS)


def test_frame_limits_come_from_the_encoder_row():
    config = tiny_model_config()
    whisper = dataclasses.replace(
        config, encoder=dataclasses.replace(config.encoder, kind="whisper")
    )
    assert max_frames(whisper) == 3000 and frame_bucket(700, whisper) == 1000
    assert encoder_kind(whisper.encoder).window_seconds == 30.0
    assert frame_bucket(700, config) != frame_bucket(700, whisper)


def test_unknown_encoder_kind_names_the_registered_ones():
    config = tiny_model_config()
    bogus = dataclasses.replace(config.encoder, kind="bogus")
    with pytest.raises(ConfigError, match="registered"):
        encoder_kind(bogus)


def test_one_finetune_builder_keeps_the_heads_it_is_asked_for():
    base = tiny_model_config(ar=True)
    tuned = finetune_config(base, mdm=True, ar=False, dropout=0.2, max_length=64)
    assert tuned.ar_decoder is None and tuned.mdm_decoder.bidirectional
    assert tuned.mdm_decoder.max_length == max(base.ar_decoder.max_length, 64)  # conformer: grow
    with pytest.raises(ConfigError, match="at least one head"):
        finetune_config(base, mdm=False, ar=False)


def test_sampler_rows_keep_the_spec_string_contract():
    for spec in ("pbeb(lam=0.2,gamma=0.05)", "eb(gamma=0.05)", "topk(schedule=linear)", "dfm",
                 "random", "ar_greedy", "ar_beam(size=4)", "ctc_greedy"):  # fmt: skip
        config = samplers.parse_sampler(spec)
        assert samplers.parse_sampler(config.spec) == config
    assert (
        samplers.parse_sampler(samplers.PAPER_SAMPLER).spec
        == "pbeb(lam=0.2,gamma=0.05,temperature=0)"
    )
    assert set(samplers.mdm_sampler_names()) == {
        "random",
        "dfm",
        "topk",
        "eb",
        "pbeb",
        "pbeb_apart",
    }
