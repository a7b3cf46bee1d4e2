"""Training progress: a console line and TensorBoard event files (process 0 only)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
from tensorboardX import SummaryWriter


class Writer:
    """Console progress line + TensorBoard event files (process 0 only)."""

    def __init__(self, workdir: Path, num_steps: int):
        self.num_steps = num_steps
        self.enabled = jax.process_index() == 0
        self.tb = SummaryWriter(str(workdir / "tensorboard")) if self.enabled else None

    def scalars(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float) and math.isfinite(v):
                    self.tb.add_scalar(f"{prefix}/{k}", v, step)
            self.tb.flush()

    def progress(self, step: int, values: dict[str, float], steps_per_second: float) -> None:
        if not self.enabled:
            return
        eta = (self.num_steps - step) / max(steps_per_second, 1e-9)
        shown = " ".join(f"{k}={values[k]:.4g}" for k in sorted(values) if k.endswith("loss"))
        print(
            f"step {step}/{self.num_steps} {shown} lr={values.get('learning_rate', 0):.3g} "
            f"{steps_per_second:.2f} steps/s ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}",
            flush=True,
        )

    def eval_line(self, step: int, result: dict) -> None:
        """The eval result's numbers to TensorBoard and a one-line summary to the console."""
        self.scalars(step, {k: v for k, v in result.items() if isinstance(v, int | float)}, "eval")
        if self.enabled:
            shown = {k: result[k] for k in ("wer", "rtfx", "mean_nfe", "sampler") if k in result}
            print(f"eval step {step}: " + json.dumps(shown), flush=True)
