"""Resume safety and preemption: changed configs refused, damaged steps skipped, NaN never saved,
SIGTERM saves and the rerun continues with the losses of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from train_fixtures import tiny_train_config, write_corpus

from mdm_asr_jax import checkpoint as ckpt
from mdm_asr_jax.train.config import TrainError
from mdm_asr_jax.train.resume import (
    PREEMPTED_EXIT_CODE,
    check_config_unchanged,
    config_diff,
    restore_latest_good,
)
from mdm_asr_jax.train.trainer import train_and_evaluate


def _saved_workdir(tmp_path: Path, config) -> Path:
    """A workdir whose config.json records `config` (as the trainer writes it)."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    payload = {"format": 1, "info": {"config": json.loads(config.to_json_best_effort())}}
    (workdir / ckpt.CONFIG_FILE).write_text(json.dumps(payload))
    return workdir


def test_changed_config_is_refused_with_a_one_line_diff_before_any_work(tmp_path):
    manifest = tmp_path / "missing.jsonl"  # never read: the check comes first
    workdir = _saved_workdir(tmp_path, tiny_train_config(manifest))
    changed = tiny_train_config(manifest)
    changed.optim.learning_rate = 0.5
    with pytest.raises(TrainError) as err:
        train_and_evaluate(changed, workdir)
    message = str(err.value)
    assert "\n" not in message
    assert "optim.learning_rate: 0.001 -> 0.5" in message
    assert "--config.train.allow_config_change=True" in message
    assert not (workdir / ckpt.CHECKPOINTS_DIR).exists()


def test_intended_changes_pass_the_config_check(tmp_path):
    manifest = tmp_path / "train.jsonl"
    workdir = _saved_workdir(tmp_path, tiny_train_config(manifest, num_steps=4))
    longer = tiny_train_config(manifest, num_steps=40)  # always allowed: train longer
    longer.train.log_every = 10
    longer.eval.nfe = 3
    check_config_unchanged(longer, workdir)
    changed = tiny_train_config(manifest)
    changed.optim.learning_rate = 0.5
    changed.train.allow_config_change = True  # the explicit flag
    check_config_unchanged(changed, workdir)


def test_recipe_filled_manifests_are_not_a_change():
    saved = {"data": {"train_manifest": "work/data/train.jsonl"}, "recipe": "demo"}
    assert config_diff(saved, {"data": {"train_manifest": ""}, "recipe": "demo"}, recipe=True) == {}
    assert config_diff(saved, {"data": {"train_manifest": "b"}, "recipe": "demo"}, recipe=True)


def test_restore_falls_back_to_the_previous_step_and_reports_the_damaged_one(capsys):
    def restore_step(step):
        if step == 30:
            raise ValueError("truncated")
        return f"state@{step}"

    restored, step, failed = restore_latest_good([10, 20, 30], restore_step)
    assert (restored, step, failed) == ("state@20", 20, [30])
    assert "checkpoint step 30 failed to restore" in capsys.readouterr().out
    with pytest.raises(TrainError, match="no saved step restores"):
        restore_latest_good([30], restore_step)
    assert restore_latest_good([], restore_step) == (None, None, [])


@pytest.mark.slow  # compiles a training step several times (> 30 s)
def test_non_finite_loss_stops_the_run_before_a_checkpoint_is_saved(tmp_path):
    manifest = write_corpus(tmp_path / "data")
    config = tiny_train_config(manifest, num_steps=2)
    config.optim.learning_rate = 1e30  # step 1 finite, its update makes step 2's loss NaN
    config.train.log_every = 100  # the save at step 2 comes before any log line
    with pytest.raises(TrainError, match="non-finite loss by step 2"):
        train_and_evaluate(config, tmp_path / "work")
    steps = [p.name for p in (tmp_path / "work" / ckpt.CHECKPOINTS_DIR).iterdir()]
    assert not [s for s in steps if s.isdigit()]


@pytest.mark.slow
def test_damaged_latest_step_resumes_from_the_previous_one(tmp_path, capsys):
    manifest = write_corpus(tmp_path / "data")
    workdir = tmp_path / "work"
    straight = train_and_evaluate(tiny_train_config(manifest, num_steps=4), workdir)
    state_dir = workdir / ckpt.CHECKPOINTS_DIR / "4" / "state"
    for path in state_dir.rglob("*"):
        if path.is_file() and not path.name.startswith("_CHECKPOINT_METADATA"):
            path.write_bytes(b"damaged")
    resumed = train_and_evaluate(tiny_train_config(manifest, num_steps=4), workdir)
    assert "checkpoint step 4 failed to restore" in capsys.readouterr().out
    expected = {h["step"]: h["loss"] for h in straight["history"]}
    got = {h["step"]: h["loss"] for h in resumed["history"]}
    assert sorted(got) == [3, 4]
    for step in (3, 4):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6)


_PREEMPTIBLE = r"""
import json, sys
from pathlib import Path
from train_fixtures import tiny_train_config
from mdm_asr_jax.train.resume import PREEMPTED_EXIT_CODE
from mdm_asr_jax.train.trainer import train_and_evaluate
c = tiny_train_config(Path(sys.argv[1]), num_steps=int(sys.argv[3]))
c.train.checkpoint_every = 1000  # only the preemption save can leave a checkpoint mid-run
results = train_and_evaluate(c, sys.argv[2])
print("RESULT", json.dumps(results.get("history", [])), flush=True)
sys.exit(PREEMPTED_EXIT_CODE if "preempted" in results else 0)
"""


@pytest.mark.slow
def test_sigterm_saves_and_the_rerun_continues_like_an_uninterrupted_run(tmp_path):
    """A real training process gets SIGTERM after its second step line: it finishes the step,
    saves (state and data-iterator position), exits with PREEMPTED_EXIT_CODE; rerunning the same
    command resumes there and its losses equal those of a run never interrupted."""
    manifest = write_corpus(tmp_path / "data")
    workdir = tmp_path / "work"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }

    def command(num_steps: int) -> list[str]:
        return [sys.executable, "-c", _PREEMPTIBLE, str(manifest), str(workdir), str(num_steps)]

    proc = subprocess.Popen(
        command(10_000), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 2/"):
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=600) == PREEMPTED_EXIT_CODE, "".join(lines)[-3000:]
    log = "".join(lines)
    assert "preempted: saved step" in log
    saved = int(log.split("preempted: saved step ")[1].split()[0])
    assert saved >= 2 and str(saved) in os.listdir(workdir / ckpt.CHECKPOINTS_DIR)

    # The rerun (2 more steps; train.num_steps may change on resume) and an uninterrupted run.
    total = saved + 2
    rerun = subprocess.run(command(total), env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"resumed from step {saved}" in rerun.stdout
    resumed = json.loads(rerun.stdout.split("RESULT ")[-1].splitlines()[0])
    shutil.rmtree(workdir)
    straight = subprocess.run(command(total), env=env, capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stdout[-3000:]
    expected = json.loads(straight.stdout.split("RESULT ")[-1].splitlines()[0])
    expected = {h["step"]: h["loss"] for h in expected}
    got = {h["step"]: h["loss"] for h in resumed}
    assert sorted(got) == [saved + 1, saved + 2]
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6)
