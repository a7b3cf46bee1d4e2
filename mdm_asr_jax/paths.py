"""Paths: one type (etils `epath.Path`) for local folders and Cloud Storage buckets.

A training workdir, a checkpoint, a tokenizer folder, a manifest or an audio file may be a local
path or a `gs://bucket/...` URI; `resolve` turns either into an `epath.Path` (local paths made
absolute) and refuses any other scheme with a message naming the input. Never `pathlib.Path` on
a user path: `Path("gs://b/run").absolute()` is `<cwd>/gs:/b/run`, a local folder that vanishes
with the VM.

How `gs://` is reached: epath sends it to tf.io.gfile when TensorFlow is importable, else to
fsspec's `gcsfs`. Orbax checkpoints go through epath for folders and tensorstore's `gcs` driver
for array data. Tests point all three at a local GCS emulator (`tests/gcs_emulator.py`):
`EPATH_USE_TF=0` + `STORAGE_EMULATOR_HOST` (gcsfs, google-cloud-storage) and
`TENSORSTORE_GCS_HTTP_URL` (tensorstore); tf.io.gfile has no emulator endpoint setting.

Side files (config.json, best.json, compute.json) are written by `write_text_atomic`: a local
file through a temporary sibling and `os.replace`; a Cloud Storage object is replaced whole by
one upload, which readers see either before or after, never half-written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from etils import epath

__all__ = [
    "SUPPORTED_SCHEMES",
    "PathError",
    "copy_tree",
    "is_remote",
    "local_copy",
    "remove_tree",
    "resolve",
    "write_text_atomic",
]

SUPPORTED_SCHEMES = ("gs",)


class PathError(ValueError):
    """A path whose scheme this project cannot read or write (names the input and the fix)."""


def _scheme(value: str) -> str | None:
    head, sep, _ = value.partition("://")
    return head.lower() if sep and head.isidentifier() else None


def resolve(value: str | os.PathLike, what: str = "path") -> epath.Path:
    """`value` as an epath.Path: `gs://...` as is, a local path made absolute. `what` names the
    input in the error for other schemes (e.g. "--workdir")."""
    text = os.fspath(value)
    scheme = _scheme(text)
    if scheme is None:
        return epath.Path(os.path.abspath(os.path.expanduser(text)))
    if scheme not in SUPPORTED_SCHEMES:
        raise PathError(
            f"{what}={text} uses the scheme {scheme}://, which is not supported: use a local "
            "path or gs://BUCKET/... (Cloud Storage)"
        )
    return epath.Path(text)


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` names a Cloud Storage object or folder."""
    return _scheme(os.fspath(path)) is not None


def write_text_atomic(path: epath.Path, text: str) -> None:
    """Replace `path`'s content with `text` so a reader never sees a partial file."""
    if is_remote(path):
        path.write_text(text)  # one object upload: all or nothing
        return
    local = Path(os.fspath(path))
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, local)


def copy_tree(source: str | os.PathLike, target: epath.Path) -> None:
    """Copy the files under the local folder `source` to `target` (local or gs://)."""
    source = Path(source)
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        dest = target / file.relative_to(source).as_posix()
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(file.read_bytes())


def local_copy(path: str | os.PathLike) -> Path:
    """A local path with `path`'s content: `path` itself when local, else a download (file or
    folder) into a fresh temporary folder, for readers that need a real file (SentencePiece)."""
    if not is_remote(path):
        return Path(os.fspath(path))
    source = epath.Path(os.fspath(path))
    target = Path(tempfile.mkdtemp(prefix="mdm_asr_")) / source.name
    _download(source, target)
    return target


def _download(source: epath.Path, target: Path) -> None:
    # Walk with iterdir: epath refuses recursive glob on gs://.
    if not source.is_dir():
        target.write_bytes(source.read_bytes())
        return
    target.mkdir(parents=True, exist_ok=True)
    for child in source.iterdir():
        _download(child, target / child.name)


def remove_tree(path: epath.Path) -> None:
    """Delete a folder (local or gs://) if it exists."""
    if not path.exists():
        return
    if is_remote(path):
        path.rmtree()
    else:
        shutil.rmtree(os.fspath(path))
