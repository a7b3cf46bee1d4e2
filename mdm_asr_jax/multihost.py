"""Multi-host coordination: process 0 writes shared files, then every process meets at a barrier.

On a pod every host runs the same command against one workdir (a bucket or a shared mount).
Work that writes into it once (base-checkpoint conversion, data recipes, SentencePiece training,
config.json) runs on process 0; `barrier` (jax's `sync_global_devices`) then holds every process
until it is done, so no host reads a half-written folder. With one process both are no-ops.
"""

from __future__ import annotations

import jax
from jax.experimental import multihost_utils

__all__ = ["barrier", "is_leader"]


def is_leader() -> bool:
    """Whether this process writes the shared files (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (a no-op on one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
