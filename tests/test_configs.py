"""The shipped config files load with every documented argument and are self-consistent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mdm_asr_jax.train.defaults import base_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CASES = [
    ("demo", ""),
    ("demo", "runlocal"),
    ("demo", "ar"),
    ("demo", "from_ar=ar_workdir"),
    ("digits", ""),
    ("digits", "speaker=jackson,runlocal"),
    ("digits", "ar"),
    ("digits", "from_ar=ar_workdir"),
    ("whisper_synth", "mdm"),
    ("whisper_synth", "ar"),
    ("whisper_synth", "mdm,runlocal"),
]


def load(name: str, arg: str):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _keys(c, prefix=""):
    out = set()
    for k, v in c.items():
        out |= _keys(v, f"{prefix}{k}.") if hasattr(v, "items") else {prefix + k}
    return out


@pytest.mark.parametrize("name,arg", CASES)
def test_config_sets_only_known_keys_and_every_admitted_utterance_fits_a_bucket(name, arg):
    c = load(name, arg)
    assert _keys(c) == _keys(base_config())
    # Utterances up to data.max_seconds (10 ms frames) must fit the largest frame bucket.
    assert c.data.max_seconds * 100 <= max(c.data.frame_buckets)
    assert c.eval.final_samplers and c.train.num_steps > 0


def test_whisper_synth_trains_mdm_and_ar_on_identical_data_and_budget():
    mdm, ar = load("whisper_synth", "mdm"), load("whisper_synth", "ar")
    for section in ("recipe_options", "data", "optim", "train"):
        assert mdm[section].to_dict() == ar[section].to_dict(), section
    assert mdm.model.mdm and not mdm.model.ar and ar.model.ar and not ar.model.mdm


@pytest.mark.parametrize("name,arg", [("demo", "bogus"), ("whisper_synth", "ctc")])
def test_config_rejects_unknown_arguments(name, arg):
    with pytest.raises(ValueError, match=name):
        load(name, arg)
