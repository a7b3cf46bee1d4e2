"""Named evaluations (`config.evals`): checked before training, completed from `config.eval`,
and the sets a finished run scored recoverable from its recorded config."""

from __future__ import annotations

import pytest

from mdm_asr_jax.train.defaults import base_config
from mdm_asr_jax.train.evals import (
    default_test_splits,
    named_eval,
    parse_evals,
    recorded_test_sets,
)
from mdm_asr_jax.train.trainer import TrainError, train_and_evaluate


def _config(**entries):
    c = base_config()
    c.data.test_manifest = "t.jsonl"
    c.data.test_fsdd_manifest = "f.jsonl"
    for name, entry in entries.items():
        c.evals[name] = entry
    return c


def test_unset_fields_come_from_the_eval_section():
    c = _config(fsdd=named_eval("test_fsdd", normalizer="basic"))
    c.eval.nfe = 8
    c.eval.final_samplers = ("pbeb", "ar_greedy")
    (spec,) = parse_evals(c)
    assert spec.normalizer == "basic" and spec.nfe == 8
    assert spec.final_samplers == ("pbeb", "ar_greedy") and spec.samplers == (c.eval.sampler,)
    assert spec.final and spec.every == 0
    assert spec.data_source(c.data) == {"manifest": "f.jsonl", "dataset": None}


@pytest.mark.parametrize(
    "entry, field",
    [
        (dict(source="test", samplr="pbeb"), "unknown field"),
        (dict(source="test", sampler="pbeb(lam=x)"), "evals.bad.sampler"),
        (dict(source="test", normalizer="klingon"), "evals.bad.normalizer"),
        (dict(source="test", every=-1), "every"),
        (dict(source="test", nfe=0), "nfe"),
        (dict(source=""), "evals.bad.source"),
        (dict(source="missing/dev.jsonl"), "does not exist"),
    ],
)
def test_a_bad_entry_is_refused_naming_its_field(entry, field):
    with pytest.raises(TrainError, match=field):
        parse_evals(_config(bad=entry))


def test_a_bad_entry_stops_training_before_the_workdir_is_made(tmp_path):
    c = _config(bad=dict(source="test", normalizer="klingon"))
    with pytest.raises(TrainError, match="evals.bad.normalizer"):
        train_and_evaluate(c, tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_sources_resolve_to_splits_datasets_and_paths():
    c = _config(
        a=named_eval("test"),
        b=named_eval("tfds:librispeech/dev_clean", every=100, final=False),
        c=named_eval("gs://bucket/dev.jsonl"),
    )
    a, b, other = parse_evals(c)
    assert a.data_source(c.data) == {"manifest": "t.jsonl", "dataset": None}
    assert b.data_source(c.data) == {"manifest": None, "dataset": "tfds:librispeech/dev_clean"}
    assert other.data_source(c.data) == {"manifest": "gs://bucket/dev.jsonl", "dataset": None}
    with pytest.raises(TrainError, match="not a split of this run"):
        parse_evals(_config(x=named_eval("test_accent")))[0].data_source(c.data)


def test_a_named_eval_takes_over_its_test_split_only():
    c = _config(fsdd=named_eval("test_fsdd", normalizer="basic"))
    assert default_test_splits(c.data, parse_evals(c)) == ["test"]
    assert default_test_splits(c.data, []) == ["test", "test_fsdd"]


def test_recorded_test_sets_give_each_set_its_normaliser():
    c = _config(fsdd=named_eval("test_fsdd", normalizer="basic"))
    c.eval.normalizer = "english"
    recorded = c.to_dict()
    sets = recorded_test_sets(recorded)
    assert sets == {
        "test": ({"manifest": "t.jsonl", "dataset": None}, "english"),
        "fsdd": ({"manifest": "f.jsonl", "dataset": None}, "basic"),
    }
    del recorded["evals"]  # a run recorded before named evals existed
    assert set(recorded_test_sets(recorded)) == {"test", "test_fsdd"}
