"""`train.profile_steps`: a jax.profiler trace of a range of train steps, in WORKDIR/profile.

"FIRST,LAST" traces train steps FIRST..LAST (1-based, inclusive; e.g. "10,15": after the
first steps have compiled and the input pipeline has warmed up); "" traces nothing. The trace
(`plugins/profile/<run>/<host>.xplane.pb` and `.trace.json.gz`, one per host on a pod) opens
in TensorBoard's profile plugin, XProf or Perfetto. The spec is checked before any training
work starts; a resumed run traces what is left of the range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax

from mdm_asr_jax import paths

PROFILE_DIR = "profile"


class ProfileError(ValueError):
    """A train.profile_steps value that cannot be used (names the value and the fix)."""


def parse_profile_steps(spec: str) -> tuple[int, int] | None:
    """ "FIRST,LAST" -> (first, last); "" -> None."""
    spec = str(spec).strip()
    if not spec:
        return None
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ProfileError(
            f"train.profile_steps={spec!r}: use 'FIRST,LAST' train steps, e.g. '10,15' ('' = off)"
        )
    first, last = int(parts[0]), int(parts[1])
    if not 1 <= first <= last:
        raise ProfileError(
            f"train.profile_steps={spec!r}: need 1 <= FIRST <= LAST (steps count from 1)"
        )
    return first, last


class StepProfiler:
    """Starts a trace before step FIRST runs and stops it after step LAST has finished."""

    def __init__(self, spec: str, workdir: Path | str):
        self.range = parse_profile_steps(spec)
        self.directory = paths.resolve(workdir, "workdir") / PROFILE_DIR
        self.active = False

    def before_step(self, step: int) -> None:
        """`step`: the number (1-based) of the train step about to run."""
        if self.range is None or self.active:
            return
        first, last = self.range
        if first <= step <= last:
            self.directory.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.directory))
            self.active = True

    def after_step(self, step: int, outputs: Any) -> None:
        """`step`: the number of the step just dispatched; `outputs`: what it returned."""
        if self.active and step >= self.range[1]:
            jax.block_until_ready(outputs)
            self.stop()

    def stop(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
            print(f"profile of train steps {self.range} written to {self.directory}", flush=True)
