"""Device placement for inference: params replicated, batches split over local devices.

Eval and transcription are data parallel within a host: each process decodes its own
utterances, its batch split over its local devices (the jitted decode runs SPMD over them, no
cross-host traffic).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from mdm_asr_jax.inference.batching import Batch


def inner_params(params: Any) -> Any:
    """The parameter tree without a {"params": ...} wrapper."""
    if isinstance(params, dict) and set(params) == {"params"}:
        return params["params"]
    return params


def device_name(devices_per_process: int = 1) -> str:
    """e.g. "cpu x1", "NVIDIA H100 80GB HBM3 x8": device kind x devices decoding (all hosts)."""
    kind = jax.local_devices()[0].device_kind
    return f"{kind} x{devices_per_process * jax.process_count()}"


def local_data_mesh(batch_size: int) -> jax.sharding.Mesh | None:
    """A 1-D ("data",) mesh over as many of this process's devices as divide `batch_size`.

    Eval is data parallel within a host: each process decodes its own utterances, and its batch
    is split over its local devices (the jitted decode runs SPMD over them, no cross-host
    traffic). None when only one device would be used.
    """
    devices = jax.local_devices()
    count = math.gcd(batch_size, len(devices))
    if count <= 1:
        return None
    return jax.sharding.Mesh(np.asarray(devices[:count]), ("data",))


def place_params(params: Any, mesh: jax.sharding.Mesh | None) -> Any:
    """Params for local decoding: gathered if sharded across hosts, replicated over `mesh`."""

    def gather(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return multihost_utils.process_allgather(x, tiled=True)
        return x

    params = jax.tree.map(gather, params)
    if mesh is None:
        return jax.device_put(params, jax.local_devices()[0])
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.device_put(params, replicated)


def place_batch(batch: Batch, mesh: jax.sharding.Mesh | None) -> dict[str, Any]:
    """A host batch on device: split along the batch axis over `mesh`, or on one device."""
    if mesh is None:
        return {k: jax.device_put(v, jax.local_devices()[0]) for k, v in batch.items()}
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    return {k: jax.device_put(v, sharding) for k, v in batch.items()}


def sum_across_processes(values: np.ndarray) -> np.ndarray:
    """Sums a small numpy vector over all JAX processes (identity with one process).

    Every process must call this with the same shape (it is a collective).
    """
    values = np.asarray(values)
    if jax.process_count() == 1:
        return values
    gathered = multihost_utils.process_allgather(values)  # [P, ...]
    return np.asarray(gathered).sum(axis=0).astype(values.dtype)
