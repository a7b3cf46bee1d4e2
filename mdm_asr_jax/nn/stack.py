"""Layer stacks: N identical blocks run as a Python loop or as one `nn.scan`, optionally remat'd.

Why: a Python loop unrolls every block into the program, so compile time grows with depth (a
32-block Canary-1b encoder is 32 copies of the block in the HLO), and the backward pass keeps
every block's activations. `ModelConfig.scan_layers=True` traces one block and runs it under
`lax.scan` over parameters stacked on a leading layer axis; `ModelConfig.remat` recomputes each
block's activations in the backward pass (`jax.checkpoint`) under a named policy, trading
compute for memory. Both give the same numbers as the plain loop (tests/test_stack.py).

Parameter layouts (a checkpoint stores the layout its config names):
  loop (default): <module>/block_0, block_1, ... (encoders) or layer_0, ... (Whisper encoder,
    decoders), one parameter tree per block;
  scan: <module>/blocks or <module>/layers, the same tree with every leaf stacked on axis 0,
    [N, ...] (logical axis name "layers").
`stack_layers` / `unstack_layers` convert a parameter tree between the two; the trainer's
`init_from` applies them, so a loop-layout checkpoint (e.g. a converted Canary) fine-tunes
with scan_layers=True, and the result decodes as it is (every decoder method runs under scan).

Per-layer activations that live outside the blocks (the decoder's cross-attention K/V and AR
KV cache): in the loop layout a tuple with one tree per layer; in the scan layout one tree whose
leaves carry the layer axis at position 1, [B, N, ...], so the batch stays leading (beam search
repeats and reorders rows on axis 0).

Legend: B batch, N layers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from mdm_asr_jax.nn.config import REMAT_POLICIES

LAYER_AXIS = 1  # position of the layer axis in scanned per-layer activations [B, N, ...]
_LOOP_NAME = re.compile(r"^(block|layer)_(\d+)$")
_STACKED_NAMES = {"blocks": "block", "layers": "layer"}


class LayoutError(ValueError):
    """A parameter tree whose layer layout cannot be converted (names the tree path)."""


def remat_policy(name: str) -> Callable[..., bool] | None:
    """The `jax.checkpoint` policy of a `ModelConfig.remat` name ("full": save nothing)."""
    if name == "full":
        return None
    if name == "dots_saveable":
        return jax.checkpoint_policies.dots_saveable
    if name == "dots_with_no_batch_dims_saveable":
        return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    raise ValueError(f"model.remat={name!r}; choose one of {REMAT_POLICIES}")


def make_blocks(
    factory: Callable[[str], nn.Module], num_layers: int, prefix: str, scan: bool
) -> nn.Module | list[nn.Module]:
    """One block named `{prefix}s` (scan) or `num_layers` blocks named `{prefix}_{i}` (loop)."""
    if scan:
        return factory(f"{prefix}s")
    return [factory(f"{prefix}_{i}") for i in range(num_layers)]


def run_stack(
    body: Callable[..., tuple[Any, Any]],
    blocks: nn.Module | Sequence[nn.Module],
    carry: Any,
    per_layer: Any = None,
    shared: tuple[Any, ...] = (),
    *,
    num_layers: int,
    remat: str = "none",
) -> tuple[Any, Any]:
    """Apply `body(block, carry, layer_input, *shared) -> (carry, layer_output)` N times.

    `blocks` is one module (scan layout: its parameters are stacked, the loop is `nn.scan`) or
    a list of N modules (loop layout). `per_layer`: inputs that differ per layer, None, a tuple
    of N trees (loop) or one tree with the layer axis at LAYER_AXIS (scan); layer outputs come
    back in the same form (None when the body returns None). `shared` reaches every layer as is.
    `remat` wraps the body in `nn.remat` with that policy ("none": no remat).
    """
    if remat not in REMAT_POLICIES:
        raise ValueError(f"model.remat={remat!r}; choose one of {REMAT_POLICIES}")
    scan = isinstance(blocks, nn.Module)
    if remat != "none":
        # Inside scan the loop already keeps XLA from merging recomputation with the forward.
        body = nn.remat(body, policy=remat_policy(remat), prevent_cse=not scan)
    if scan:
        scanned = nn.scan(
            body,
            variable_axes={"params": 0, "batch_stats": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(LAYER_AXIS,) + (nn.broadcast,) * len(shared),
            out_axes=LAYER_AXIS,
            length=num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        return scanned(blocks, carry, per_layer, *shared)
    if len(blocks) != num_layers:
        raise ValueError(f"{len(blocks)} blocks for num_layers={num_layers}")
    inputs = (None,) * num_layers if per_layer is None else tuple(per_layer)
    outputs = []
    for block, layer_input in zip(blocks, inputs, strict=True):
        carry, out = body(block, carry, layer_input, *shared)
        outputs.append(out)
    if all(out is None for out in outputs):
        return carry, None
    return carry, tuple(outputs)


def stack_layers(tree: Any) -> Any:
    """Loop -> scan layout: every group of sibling `block_i` / `layer_i` subtrees (i = 0..N-1)
    becomes one `blocks` / `layers` subtree with leaves stacked on axis 0 (numpy, host side).
    Anything else is returned as is, so a scan-layout tree is left unchanged."""
    return _stack(tree, ())


def _stack(tree: Any, path: tuple[str, ...]) -> Any:
    if not isinstance(tree, Mapping):
        return tree
    groups: dict[str, dict[int, Any]] = {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        match = _LOOP_NAME.match(str(key))
        if match:
            groups.setdefault(match.group(1), {})[int(match.group(2))] = value
        else:
            out[key] = _stack(value, path + (str(key),))
    for prefix, members in groups.items():
        where = "/".join(path + (f"{prefix}_*",))
        if sorted(members) != list(range(len(members))):
            raise LayoutError(f"{where}: layer indices {sorted(members)} are not 0..N-1")
        if prefix + "s" in out:
            raise LayoutError(f"{where}: both loop and stacked ({prefix}s) layers present")
        layers = [members[i] for i in range(len(members))]
        try:
            out[prefix + "s"] = jax.tree.map(
                lambda *xs: np.stack([np.asarray(x) for x in xs]), *layers
            )
        except ValueError as error:
            raise LayoutError(f"{where}: layers differ in structure or shape ({error})") from None
    return out


def unstack_layers(tree: Any) -> Any:
    """Scan -> loop layout: every `blocks` / `layers` subtree (leaves [N, ...]) becomes N
    subtrees `block_i` / `layer_i`. A loop-layout tree is returned unchanged."""
    if not isinstance(tree, Mapping):
        return tree
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if key in _STACKED_NAMES and isinstance(value, Mapping):
            leaves = jax.tree.leaves(value)
            num_layers = int(np.shape(leaves[0])[0]) if leaves else 0
            for i in range(num_layers):
                out[f"{_STACKED_NAMES[key]}_{i}"] = jax.tree.map(lambda x, i=i: x[i], value)
        else:
            out[key] = unstack_layers(value)
    return out


def has_stacked_layers(tree: Any) -> bool:
    """True when any subtree of `tree` is in the scan layout (`blocks` / `layers`)."""
    if not isinstance(tree, Mapping):
        return False
    return any(
        (key in _STACKED_NAMES and isinstance(value, Mapping)) or has_stacked_layers(value)
        for key, value in tree.items()
    )


def match_layout(tree: Any, like: Any) -> Any:
    """`tree` converted to the layer layout of `like` (stacked if `like` has stacked layers)."""
    return stack_layers(tree) if has_stacked_layers(like) else unstack_layers(tree)
