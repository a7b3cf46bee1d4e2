"""Trainer options end to end on the tiny corpus: profiler trace, scanned layers from a
loop-layout checkpoint, accumulation and windowed metrics in a real run."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from train_fixtures import tiny_train_config, write_corpus

from mdm_asr_jax.checkpoint import load_checkpoint
from mdm_asr_jax.nn.stack import has_stacked_layers
from mdm_asr_jax.train.profile import ProfileError, parse_profile_steps
from mdm_asr_jax.train.trainer import train_and_evaluate


@pytest.mark.slow  # compiles a training step several times (> 30 s)
def test_profile_steps_writes_a_trace_to_the_workdir(tmp_path):
    manifest = write_corpus(tmp_path / "data")
    config = tiny_train_config(manifest, num_steps=3)
    config.train.profile_steps = "2,3"
    config.optim.grad_accum_steps = 2
    config.train.log_every = 3
    results = train_and_evaluate(config, tmp_path / "work")
    traces = list((tmp_path / "work" / "profile").rglob("*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0
    # logged at step 1 (alone) and step 3: that line sums steps 2 and 3 (8 utterances each)
    assert results["train"]["window_steps"] == 2 and results["train"]["examples"] == 16
    assert np.isfinite(results["train"]["loss"])


@pytest.mark.parametrize("spec", ["5", "3,1", "0,2", "a,b"])
def test_bad_profile_steps_is_refused_before_any_work(tmp_path, spec):
    config = tiny_train_config(tmp_path / "missing.jsonl")
    config.train.profile_steps = spec
    with pytest.raises(ProfileError, match="train.profile_steps"):
        train_and_evaluate(config, tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_profile_steps_parse():
    assert parse_profile_steps("") is None
    assert parse_profile_steps(" 10, 15 ") == (10, 15)


@pytest.mark.slow
def test_scan_layers_run_starts_from_a_loop_layout_checkpoint(tmp_path, capsys):
    manifest = write_corpus(tmp_path / "data")
    train_and_evaluate(tiny_train_config(manifest, num_steps=1), tmp_path / "loop")
    config = tiny_train_config(manifest, num_steps=1)
    config.model.scan_layers = True
    config.model.remat = "full"
    config.model.init_from = str(tmp_path / "loop")
    config.tokenizer.path = str(next((tmp_path / "loop").rglob("*.model")))
    results = train_and_evaluate(config, tmp_path / "scan")
    assert np.isfinite(results["train"]["loss"])
    assert ", 0 mismatches" in capsys.readouterr().out
    loaded = load_checkpoint(tmp_path / "scan")
    assert loaded.model_config.scan_layers and loaded.model_config.remat == "full"
    assert has_stacked_layers(loaded.params)
    source = load_checkpoint(tmp_path / "loop")
    # one step of training moved the copied weights only a little
    moved = jax.tree.map(
        lambda a, b: float(np.max(np.abs(np.asarray(a)[1] - np.asarray(b)))),
        loaded.params["encoder"]["blocks"],
        source.params["encoder"]["block_1"],
    )
    assert max(jax.tree.leaves(moved)) < 0.05
