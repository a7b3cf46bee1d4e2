"""Train metrics over a logging window: statistics summed over the window, divided once.

Each train step reports per-batch ratios (e.g. loss = loss sum / target tokens of the batch).
Logging the last step's value shows one batch's noise, and a plain mean of per-step values
weights a batch of 2 real utterances like one of 64. The window keeps, for every metric, the
sum of value x real examples and the sum of real examples over all steps since the last log,
on the device (no host sync per step), and divides once when logged, as `eval.metrics` does
with word-error counts. `finite` is the window's minimum, so a non-finite loss at any step of
the window stops the run, not only one on a logged step.

The step's metrics must contain `examples` (real utterances in the batch) and `finite`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

_SPECIAL = ("examples", "finite")


@jax.jit
def _start(metrics: dict[str, Array]) -> dict[str, Array]:
    weight = jnp.asarray(metrics["examples"], jnp.float32)
    sums = {
        k: jnp.asarray(v, jnp.float32) * weight for k, v in metrics.items() if k not in _SPECIAL
    }
    return {**sums, "examples": weight, "finite": jnp.asarray(metrics["finite"], jnp.float32)}


@jax.jit
def _add(sums: dict[str, Array], metrics: dict[str, Array]) -> dict[str, Array]:
    step = _start(metrics)
    out = {k: sums[k] + step[k] for k in step if k != "finite"}
    out["finite"] = jnp.minimum(sums["finite"], step["finite"])
    return out


class MetricWindow:
    """Sums of a logging window's train metrics; `result()` divides and starts a new window."""

    def __init__(self) -> None:
        self._sums: dict[str, Array] | None = None
        self.steps = 0

    def add(self, metrics: dict[str, Array]) -> None:
        missing = [k for k in _SPECIAL if k not in metrics]
        if missing:
            raise KeyError(f"train metrics lack {missing}; the train step must report them")
        self._sums = _start(metrics) if self._sums is None else _add(self._sums, metrics)
        self.steps += 1

    def finite(self) -> float:
        """The window's `finite` so far (1.0: every loss finite), without ending the window."""
        if self._sums is None:
            raise ValueError("no train step in the window")
        return float(jax.device_get(self._sums["finite"]))

    def result(self) -> dict[str, Any]:
        """{metric: window sum / window examples}, `finite` (min), `examples` and `steps`
        (summed over the window); then the window is empty again."""
        if self._sums is None:
            raise ValueError("no train step in the window")
        sums = {k: float(v) for k, v in jax.device_get(self._sums).items()}
        weight = max(sums["examples"], 1.0)
        out: dict[str, Any] = {k: v / weight for k, v in sums.items() if k not in _SPECIAL}
        out.update(finite=sums["finite"], examples=sums["examples"], window_steps=self.steps)
        self._sums, self.steps = None, 0
        return out
