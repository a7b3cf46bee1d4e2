"""`model.init_from`: copy parameters from a checkpoint directory into the train state."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from mdm_asr_jax import checkpoint as ckpt
from mdm_asr_jax.nn.stack import match_layout


def default_init_map(target: dict[str, Any], source: dict[str, Any]) -> list[tuple[str, str]]:
    """Same names everywhere, except that an MDM decoder missing from the source is initialised
    from its AR decoder: the paper's recipe (a trained AR encoder-decoder, decoder made
    bidirectional, + [MASK]). Both dicts are flat 'a/b/c' parameter names."""
    target_heads = {name.split("/", 1)[0] for name in target}
    source_heads = {name.split("/", 1)[0] for name in source}
    pairs = [(head, head) for head in sorted(target_heads & source_heads)]
    if "mdm_decoder" in target_heads - source_heads and "ar_decoder" in source_heads:
        pairs.append(("mdm_decoder", "ar_decoder"))
    return pairs or [("", "")]


def load_pretrained(state: Any, source: str, mapping: Sequence[Sequence[str]]) -> Any:
    """Copy parameters from a checkpoint directory into subtrees of the state, reporting every
    mismatch. `mapping` is a list of (target prefix, source prefix) pairs, e.g.
    [("encoder", "encoder"), ("mdm_decoder", "ar_decoder")]; empty = same names everywhere."""
    loaded = ckpt.load_checkpoint(source)
    # stacked (model.scan_layers) or per-layer names, whichever the model being trained uses
    src_params = match_layout(loaded.params, like=state.params)
    src = traverse_util.flatten_dict(src_params, sep="/")
    dst = traverse_util.flatten_dict(jax.device_get(state.params), sep="/")
    pairs = [tuple(p) for p in mapping] or default_init_map(dst, src)
    copied, problems = 0, []
    covered: set[str] = set()
    new = dict(dst)
    for target_prefix, source_prefix in pairs:
        for name, value in dst.items():
            if target_prefix and not (
                name == target_prefix or name.startswith(target_prefix + "/")
            ):
                continue
            covered.add(name)
            src_name = source_prefix + name[len(target_prefix) :]
            if src_name not in src:
                problems.append(f"{name}: no {src_name} in {source}")
                continue
            sv = np.asarray(src[src_name])
            if sv.shape != value.shape:
                if (
                    sv.ndim == value.ndim
                    and name.endswith("embedding")
                    and sv.shape[1:] == value.shape[1:]
                    and sv.shape[0] < value.shape[0]
                ):
                    # vocabulary grew (e.g. the [MASK] row): copy the known rows
                    grown = np.array(value)
                    grown[: sv.shape[0]] = sv
                    new[name] = grown
                    copied += 1
                    problems.append(f"{name}: copied {sv.shape[0]} of {value.shape[0]} rows")
                    continue
                problems.append(f"{name}: shape {value.shape} != {src_name} {sv.shape}")
                continue
            new[name] = sv.astype(value.dtype)
            copied += 1
    problems += [
        f"{name}: not covered by init_map, left at its initial value"
        for name in sorted(set(dst) - covered)
    ]
    for p in problems:
        logging.warning("init_from: %s", p)
    print(
        f"init_from {source}: copied {copied} tensors, {len(problems)} mismatches"
        + "".join(f"\n  {p}" for p in problems[:50]),
        flush=True,
    )
    params = traverse_util.unflatten_dict(new, sep="/")
    params = jax.tree.map(
        lambda v, old: jax.device_put(jnp.asarray(v, old.dtype), old.sharding), params, state.params
    )
    return dataclasses.replace(state, params=params)
