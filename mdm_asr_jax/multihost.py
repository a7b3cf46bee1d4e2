"""Multi-host coordination: process 0 writes shared files, then every process meets at a barrier.

On a pod every host runs the same command against one workdir (a bucket or a shared mount).
Work that writes into it once (base-checkpoint conversion, data recipes, SentencePiece training,
config.json) runs on process 0; `barrier` then holds every process until it is done, so no host
reads a half-written folder. With one process both are no-ops.

The barrier is the distributed runtime's coordination-service barrier (what orbax uses), with a
long timeout: the other processes may wait minutes while process 0 converts a 1B model. A
device collective (`multihost_utils.sync_global_devices`) is the fallback when no coordination
client exists; on CPU its gloo connection times out after seconds of waiting, too short here.
"""

from __future__ import annotations

import itertools

import jax
from jax.experimental import multihost_utils

__all__ = ["BARRIER_TIMEOUT_S", "barrier", "is_leader"]

BARRIER_TIMEOUT_S = 3 * 3600
_count = itertools.count()


def is_leader() -> bool:
    """Whether this process writes the shared files (process 0)."""
    return jax.process_index() == 0


def _client():
    try:
        from jax._src import distributed  # the runtime's coordination client (as orbax does)
    except ImportError:
        return None
    return getattr(distributed.global_state, "client", None)


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (a no-op on one process). Every
    process must call the same barriers in the same order."""
    if jax.process_count() == 1:
        return
    client = _client()
    if client is None:
        multihost_utils.sync_global_devices(name)
        return
    client.wait_at_barrier(f"mdm_asr/{next(_count)}/{name}", BARRIER_TIMEOUT_S * 1000)
