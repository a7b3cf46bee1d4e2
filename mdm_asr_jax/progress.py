"""Progress bars with an ETA for the long host-side loops, drawn the same way everywhere.

Featurising an eval set, decoding it, transcribing files, scanning a TFDS split and
synthesising a corpus can each take minutes; without a bar they look hung. Every such loop
wraps its iterable in `progress(...)` (a `tqdm` bar on stderr). Bars are drawn only when stderr
is a terminal, so logs, pipes, notebooks driven by nbclient and tests stay clean; `set_quiet(True)`
(the CLIs' `--quiet`) or the environment variable `MDM_ASR_QUIET=1` turns them off everywhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

_QUIET: bool | None = None  # None: decided by MDM_ASR_QUIET and whether stderr is a terminal


def set_quiet(quiet: bool | None) -> None:
    """Turns every progress bar off (True), back to automatic (None), or on even when stderr is
    not a terminal (False; tests and notebooks that want the bars)."""
    global _QUIET
    _QUIET = quiet


def bars_enabled() -> bool:
    """Whether `progress` draws: not quiet, and stderr is a terminal (unless forced on)."""
    if _QUIET is not None:
        return not _QUIET
    if os.environ.get("MDM_ASR_QUIET", "") not in ("", "0"):
        return False
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def progress(
    iterable: Iterable[T] | None = None,
    *,
    desc: str,
    total: float | None = None,
    unit: str = "it",
    **kwargs: Any,
) -> tqdm:
    """`iterable` wrapped in a progress bar with rate and ETA (or, without an iterable, a bar to
    `.update(n)` by hand). `total` defaults to `len(iterable)` where it has one.

    The bar goes to stderr, is left on screen when done, and is a pass-through when bars are
    off (see the module docstring), so callers never test for that themselves.
    """
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        disable=not bars_enabled(),
        file=sys.stderr,
        dynamic_ncols=True,
        **kwargs,
    )
