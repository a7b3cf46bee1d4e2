"""Checkpoint directories: everything needed to decode, with no other input.

Layout of an exported checkpoint directory:
  DIR/config.json      {"format": 1, "model": ModelConfig, "features": FeatureConfig,
                        "tokenizer": tokenizer spec, "decoding": defaults, "info": free-form}
  DIR/tokenizer/...    tokenizer files (paths in the spec are relative to this folder)
  DIR/params/          orbax PyTree checkpoint of the parameters (unboxed)

A training workdir has the same `config.json` and `tokenizer/` at its top and an orbax
CheckpointManager folder `checkpoints/` (see `train.trainer`); `load_checkpoint` accepts either
and, for a workdir, takes the best checkpoint by eval WER, else the latest.

The `decoding` section is a `DecodingDefaults`: the sampler and NFE a checkpoint decodes with
unless told otherwise, and the keyword defaults it passes to `decode()` under `decode()`'s own
names (`canvas_length`, `forbidden_ids`, `begin_forbidden_ids`, `max_len`). Files written
before that naming used `suppress_ids` / `suppress_begin_ids` / `max_new_tokens`; they are read
under the new names.

This module sits at the package root because every part reads or writes the format: the
trainer, eval, transcribe and both converters.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp

from mdm_asr_jax import paths
from mdm_asr_jax.audio import FeatureConfig
from mdm_asr_jax.diffusion.samplers import DEFAULT_NFE, PAPER_SAMPLER
from mdm_asr_jax.nn.config import ModelConfig
from mdm_asr_jax.text import Tokenizer, load_tokenizer

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
PARAMS_DIR = "params"
CHECKPOINTS_DIR = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be used (names the path and the fix)."""


_LEGACY_DECODING_KEYS = {
    "suppress_ids": "forbidden_ids",
    "suppress_begin_ids": "begin_forbidden_ids",
    "max_new_tokens": "max_len",
}


@dataclasses.dataclass(frozen=True)
class DecodingDefaults:
    """How a checkpoint decodes unless told otherwise (field names as `decode()` takes them).

    sampler / nfe: the default sampler spec and NFE cap (None: the paper's PBEB at
    `DEFAULT_NFE`). canvas_length: the MDM canvas the model was trained with. forbidden_ids:
    ids never emitted (e.g. Whisper's non-speech tokens). begin_forbidden_ids: ids blocked at
    the first AR step. max_len: the AR length cap (Whisper: 224, as faster-whisper).
    normalizer: the text normaliser the run scored its dev / test WER with (a
    `text.get_normalizer` name, e.g. "basic" for digit recipes); `mdm-asr-eval` scores with it
    unless told otherwise (see `scoring_normalizer`).
    """

    sampler: str | None = None
    nfe: int | None = None
    canvas_length: int | None = None
    forbidden_ids: tuple[int, ...] = ()
    begin_forbidden_ids: tuple[int, ...] = ()
    max_len: int | None = None
    normalizer: str | None = None

    @classmethod
    def from_dict(cls, payload: dict[str, Any] | None) -> DecodingDefaults:
        """From a config.json `decoding` section (current or legacy key names)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in (payload or {}).items():
            name = _LEGACY_DECODING_KEYS.get(key, key)
            if name not in fields:
                raise CheckpointError(f"unknown decoding default {key!r}; known: {sorted(fields)}")
            if value is None:
                continue
            if name.endswith("_ids"):
                value = tuple(int(i) for i in value)
            elif name not in ("sampler", "normalizer"):
                value = int(value)
            values[name] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The set fields, JSON-ready (id tuples as lists)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None or value == ():
                continue
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self, **changes: Any) -> DecodingDefaults:
        return dataclasses.replace(self, **changes)

    @property
    def sampler_or_default(self) -> str:
        return self.sampler or PAPER_SAMPLER

    @property
    def nfe_or_default(self) -> int:
        return int(self.nfe or DEFAULT_NFE)

    def decode_kwargs(self, tokenizer: Tokenizer, eos_id: int) -> dict[str, Any]:
        """`decode` keyword arguments: these defaults, plus the tokenizer's special ids among
        the forbidden ones (EOS excepted)."""
        kwargs: dict[str, Any] = {}
        if self.canvas_length:
            kwargs["canvas_length"] = int(self.canvas_length)
        forbidden = set(self.forbidden_ids) | {int(i) for i in tokenizer.special_ids}
        forbidden.discard(int(eos_id))
        if forbidden:
            kwargs["forbidden_ids"] = tuple(sorted(forbidden))
        if self.begin_forbidden_ids:
            kwargs["begin_forbidden_ids"] = self.begin_forbidden_ids
        if self.max_len:
            kwargs["max_len"] = int(self.max_len)
        return kwargs


class LoadedCheckpoint(NamedTuple):
    model_config: ModelConfig
    feature_config: FeatureConfig
    tokenizer: Tokenizer
    params: Any  # unboxed parameter pytree (numpy / jax arrays)
    decoding: DecodingDefaults
    info: dict[str, Any]
    path: Path


def write_config(
    directory: str | Path,
    model_config: ModelConfig,
    feature_config: FeatureConfig,
    tokenizer: Tokenizer,
    *,
    decoding: DecodingDefaults | None = None,
    info: dict[str, Any] | None = None,
) -> None:
    """Write config.json and the tokenizer files into `directory` (local or gs://, created if
    needed). config.json is replaced atomically; the tokenizer folder is swapped in whole."""
    directory = paths.resolve(directory, "checkpoint directory")
    if tokenizer.vocab_size != model_config.vocab_size:
        raise CheckpointError(
            f"tokenizer vocab_size {tokenizer.vocab_size} != model vocab_size "
            f"{model_config.vocab_size}: build the model config from the tokenizer"
        )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = directory / TOKENIZER_DIR
    # Save to a scratch folder first: the tokenizer may have been loaded from tokenizer_dir.
    with tempfile.TemporaryDirectory(prefix="mdm_asr_tokenizer_") as scratch:
        spec = tokenizer.save(Path(scratch) / TOKENIZER_DIR)
        if paths.is_remote(directory):
            paths.remove_tree(tokenizer_dir)
            paths.copy_tree(Path(scratch) / TOKENIZER_DIR, tokenizer_dir)
        else:
            staging = Path(os.fspath(directory)) / (TOKENIZER_DIR + ".tmp")
            if staging.exists():
                shutil.rmtree(staging)
            shutil.copytree(Path(scratch) / TOKENIZER_DIR, staging)
            if tokenizer_dir.exists():
                shutil.rmtree(os.fspath(tokenizer_dir))
            staging.rename(os.fspath(tokenizer_dir))
    payload = {
        "format": FORMAT_VERSION,
        "model": model_config.to_dict(),
        "features": dataclasses.asdict(feature_config),
        "tokenizer": spec,
        "decoding": (decoding or DecodingDefaults()).to_dict(),
        "info": info or {},
    }
    paths.write_text_atomic(directory / CONFIG_FILE, json.dumps(payload, indent=2, sort_keys=True))


def read_config(
    directory: str | Path,
) -> tuple[ModelConfig, FeatureConfig, Tokenizer, DecodingDefaults, dict]:
    """(model config, feature config, tokenizer, decoding defaults, info) from config.json."""
    directory = paths.resolve(directory, "checkpoint directory")
    path = directory / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(
            f"{directory} has no {CONFIG_FILE}: pass a checkpoint directory written by "
            "mdm-asr-train / mdm-asr-convert, or a training workdir"
        )
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"{path} is not valid JSON ({err}); the checkpoint is damaged"
        ) from err
    if payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format {payload.get('format')!r}; this version reads format {FORMAT_VERSION}"
        )
    model_config = ModelConfig.from_dict(payload["model"])
    feature_config = FeatureConfig(**payload["features"])
    tokenizer = load_tokenizer(paths.local_copy(directory / TOKENIZER_DIR), payload["tokenizer"])
    return (
        model_config,
        feature_config,
        tokenizer,
        DecodingDefaults.from_dict(payload.get("decoding")),
        payload.get("info", {}),
    )


def export_checkpoint(
    directory: str | Path,
    model_config: ModelConfig,
    params: Any,
    feature_config: FeatureConfig,
    tokenizer: Tokenizer,
    *,
    decoding: DecodingDefaults | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write a self-contained checkpoint directory (config, tokenizer, params)."""
    directory = paths.resolve(directory, "checkpoint directory")
    write_config(directory, model_config, feature_config, tokenizer, decoding=decoding, info=info)
    params = jax.tree.map(np.asarray, nn.meta.unbox(params))
    params_dir = directory / PARAMS_DIR
    paths.remove_tree(params_dir)
    # The caller's process writes alone (e.g. process 0 converting a base model on a pod while
    # the others wait at a barrier): orbax's save is otherwise a collective of all processes.
    me = jax.process_index()
    alone = ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"export_p{me}"
    )
    with ocp.StandardCheckpointer(multiprocessing_options=alone) as checkpointer:
        checkpointer.save(params_dir, params)
    return _as_local(directory)


def _restore_params(path: Path) -> Any:
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path)
        tree = getattr(metadata, "item_metadata", metadata)
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
            tree,
            is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"),
        )
        return checkpointer.restore(path, target)


def find_workdir_step(directory: Path, step: int | None = None) -> Path:
    """The item folder of step `step` of a training workdir, by default the best (by eval WER)
    or latest one."""
    manager_dir = directory / CHECKPOINTS_DIR
    steps = sorted((int(p.name), p) for p in manager_dir.iterdir() if p.name.isdigit())
    if not steps:
        raise CheckpointError(
            f"{manager_dir} holds no saved step yet: train longer or wait for a save"
        )
    if step is not None:
        saved = dict(steps)
        if step not in saved:
            raise CheckpointError(
                f"step {step} is not saved in {manager_dir}; the saved steps are "
                f"{', '.join(str(s) for s in saved)}"
            )
        return saved[step]
    best_file = directory / "best.json"
    chosen = steps[-1][1]
    if best_file.exists():
        try:
            candidate = manager_dir / str(int(json.loads(best_file.read_text())["step"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            candidate = None  # a damaged best.json: the latest step
        if candidate is not None and candidate.exists():
            chosen = candidate
    return chosen


def load_checkpoint(directory: str | Path, step: int | None = None) -> LoadedCheckpoint:
    """Load an exported checkpoint directory, or the best/latest step of a training workdir
    (local or gs://); `step` picks a saved step of a workdir instead."""
    directory = paths.resolve(directory, "checkpoint")
    if not directory.exists():
        raise CheckpointError(f"checkpoint {directory} does not exist")
    model_config, feature_config, tokenizer, decoding, info = read_config(directory)
    if (directory / PARAMS_DIR).exists():
        if step is not None:
            raise CheckpointError(
                f"{directory} is an exported checkpoint with one set of weights; a step can only "
                "be chosen in a training workdir"
            )
        params = _restore_params(directory / PARAMS_DIR)
        info = dict(info)
    elif (directory / CHECKPOINTS_DIR).exists():
        step_dir = find_workdir_step(directory, step)
        params_path = step_dir / "params"
        if not params_path.exists():
            raise CheckpointError(f"{step_dir} has no params item; the workdir is damaged")
        params = _restore_params(params_path)
        info = {**info, "step": int(step_dir.name)}
    else:
        raise CheckpointError(
            f"{directory} has a config but neither {PARAMS_DIR}/ nor {CHECKPOINTS_DIR}/: "
            "the checkpoint is incomplete"
        )
    return LoadedCheckpoint(
        model_config, feature_config, tokenizer, params, decoding, info, _as_local(directory)
    )


def _as_local(path: Any) -> Any:
    """A local epath as pathlib.Path (what callers of the local-only API received); gs:// as is."""
    return path if paths.is_remote(path) else Path(os.fspath(path))
