"""Resume safety and preemption: what makes rerunning the same command safe.

- `check_config_unchanged`: a workdir remembers the config it was trained with (config.json,
  `info.config`). A rerun whose config differs is refused, before any data or compile work,
  with a one-line diff, unless every changed key is in `ALWAYS_ALLOWED` (run length, logging,
  evaluation, mesh layout: nothing that changes what the saved state means) or
  `train.allow_config_change=True` says the change is intended.
- `restore_latest_good`: the newest step that restores; a step that fails (truncated files, a
  half-copied bucket) is skipped with a warning and the previous one is tried.
- `PreemptionWatch`: SIGTERM (what Cloud TPU spot / queued-resource VMs and most schedulers
  send before taking the machine) sets a flag; on several processes orbax's
  `reached_preemption` (jax's preemption sync service) makes every host stop at the same step.
  The trainer finishes the step in flight, saves, and returns with `preempted` set; the CLI
  then exits with `PREEMPTED_EXIT_CODE`.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
from absl import logging

from mdm_asr_jax import checkpoint as ckpt
from mdm_asr_jax.train.config import TrainError

__all__ = [
    "ALWAYS_ALLOWED",
    "PREEMPTED_EXIT_CODE",
    "PreemptionWatch",
    "check_config_unchanged",
    "config_diff",
    "restore_latest_good",
]

# EX_TEMPFAIL (sysexits.h): "try again later". Launch scripts rerun the command on this code.
PREEMPTED_EXIT_CODE = 75

# Keys (dotted; a trailing ".*" covers a section) a resumed run may change without
# `train.allow_config_change`: they change how long the run goes, how often it logs, evaluates
# and saves, how it is laid out on devices, or how it decodes; never what the saved state is.
# `train.num_steps` is here so "train longer" is a plain rerun; with a decaying schedule
# (optim.decay != "constant") the remaining steps then follow the new schedule's curve.
ALWAYS_ALLOWED = (
    "train.num_steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.async_checkpointing",
    "train.profile_steps",
    "train.allow_config_change",
    "eval.*",
    "evals.*",
    "mesh.*",
    "data.num_workers",
    "data.eval_batch_size",
    "data.tfds_data_dir",
)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _allowed(key: str) -> bool:
    return any(
        key == rule or (rule.endswith(".*") and key.startswith(rule[:-1]))
        for rule in ALWAYS_ALLOWED
    )


def config_diff(saved: dict[str, Any], new: dict[str, Any], *, recipe: bool) -> dict[str, tuple]:
    """{dotted key: (saved value, new value)} of the keys both configs have and that differ,
    minus `ALWAYS_ALLOWED`. With a data recipe, the recipe fills `data.*_manifest` after this
    check, so an empty new value there is not a change."""
    old_flat, new_flat = _flatten(saved), _flatten(new)
    diff = {}
    for key in sorted(old_flat.keys() & new_flat.keys()):
        old, value = old_flat[key], new_flat[key]
        if old == value or _allowed(key):
            continue
        if recipe and key.startswith("data.") and key.endswith("_manifest") and not value:
            continue
        diff[key] = (old, value)
    return diff


def check_config_unchanged(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """Refuse (TrainError, one line) a config that differs from the one `workdir` was trained
    with in a key outside `ALWAYS_ALLOWED`, unless `train.allow_config_change`."""
    path = workdir / ckpt.CONFIG_FILE
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text()).get("info", {}).get("config")
    except json.JSONDecodeError as err:
        raise TrainError(
            f"{path} is not valid JSON ({err}): restore it from a copy, or delete it to "
            "rewrite it from this config"
        ) from err
    if not saved:
        return
    new = json.loads(config.to_json_best_effort())
    diff = config_diff(saved, new, recipe=bool(config.recipe))
    if not diff:
        return
    changes = ", ".join(f"{k}: {old!r} -> {value!r}" for k, (old, value) in diff.items())
    if config.train.allow_config_change:
        if jax.process_index() == 0:
            print(f"resuming {workdir} with a changed config: {changes}", flush=True)
        return
    raise TrainError(
        f"{workdir} was trained with a different config ({changes}): rerun with the same "
        "config, use a new --workdir, or pass --config.train.allow_config_change=True to "
        "resume with the change"
    )


def restore_latest_good(
    steps: list[int], restore_step: Callable[[int], Any]
) -> tuple[Any, int | None, list[int]]:
    """(restored, step, failed steps): `restore_step` on the newest of `steps` that restores.
    Each failure is logged as a warning and the previous step is tried; when none restores the
    error names them all."""
    failed: list[int] = []
    errors: list[str] = []
    for step in sorted(steps, reverse=True):
        try:
            return restore_step(step), step, failed
        except Exception as err:  # noqa: BLE001 - any failure to read a step means "damaged"
            message = f"checkpoint step {step} failed to restore ({type(err).__name__}: {err})"
            logging.warning("%s; trying the previous step", message)
            if jax.process_index() == 0:
                print(f"warning: {message}; trying the previous step", flush=True)
            failed.append(step)
            errors.append(f"{step}: {type(err).__name__}")
    if failed:
        raise TrainError(
            f"no saved step restores ({', '.join(errors)}): the checkpoints are damaged; "
            "use a new --workdir, or remove the damaged steps to start over"
        )
    return None, None, failed


class PreemptionWatch:
    """Within `with`: SIGTERM sets `requested` (the handler only sets a flag; the loop checks it
    between steps). `should_stop(step, manager)` is True on the step every process stops at:
    the flag on one process, orbax's preemption sync point on several."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.requested = True

    def __enter__(self) -> PreemptionWatch:
        # On several processes jax's sync service owns SIGTERM; replacing its handler would hide
        # the notice from it.
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def should_stop(self, step: int, manager: Any) -> bool:
        if jax.process_count() > 1:
            # jax's preemption sync service (started by jax.distributed.initialize) catches the
            # notice on any host and picks a step all hosts reach.
            return bool(manager.reached_preemption(step))
        return self.requested
