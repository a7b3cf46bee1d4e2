"""Reader (and a small writer, for tests) of CTranslate2 model directories.

A CTranslate2 model directory holds `model.bin` (the weights), `config.json` (model options such
as Whisper's suppressed token ids) and vocabulary files. We read it so Whisper weights shipped in
that format (e.g. faster-whisper models) can be converted to our checkpoints without installing
CTranslate2.

`model.bin` layout (binary version 6, all integers little-endian; a "string" is a uint16 byte
count including a trailing NUL, then the UTF-8 bytes and the NUL):

    uint32  binary version
    string  spec name (e.g. "WhisperSpec")
    uint32  spec revision
    uint32  number of variables, then for each:
              string  name (e.g. "encoder/layer_0/self_attention/linear_0/weight")
              uint8   rank, then rank x uint32 dims
              uint8   dtype id (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16)
              uint32  byte count, then the raw row-major data
    uint32  number of aliases, then for each: string alias, string target variable name

Scalars (rank 0) carry options: int8 booleans (`decoder/pre_norm`), int16 counts
(`encoder/num_heads`); strings are stored as int8 arrays of their bytes.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import BinaryIO

import ml_dtypes
import numpy as np

SUPPORTED_BINARY_VERSIONS = (6,)
DTYPES = (
    np.dtype(np.float32),
    np.dtype(np.int8),
    np.dtype(np.int16),
    np.dtype(np.int32),
    np.dtype(np.float16),
    np.dtype(ml_dtypes.bfloat16),
)


class CTranslate2FormatError(ValueError):
    """A file that is not a readable CTranslate2 model (names the file and what is wrong)."""


@dataclasses.dataclass(frozen=True)
class CTranslate2Model:
    """The content of a CTranslate2 model directory.

    variables: name -> array in its stored dtype (float16 stays float16; the caller casts).
    aliases: alias name -> name of the variable it shares storage with (e.g. a tied output
      projection `decoder/projection/weight` -> `decoder/embeddings/weight`).
    config: the parsed `config.json` ({} when the directory has none).
    """

    spec_name: str
    spec_revision: int
    binary_version: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]
    config: dict

    def get(self, name: str) -> np.ndarray:
        """Returns the variable `name`, following aliases; KeyError names the missing variable."""
        resolved = self.aliases.get(name, name)
        if resolved not in self.variables:
            raise KeyError(f"CTranslate2 model has no variable {name!r}")
        return self.variables[resolved]

    def has(self, name: str) -> bool:
        return self.aliases.get(name, name) in self.variables

    def scalar(self, name: str) -> int:
        """Returns an integer/boolean option stored as a rank-0 variable."""
        return int(np.asarray(self.get(name)).reshape(()))

    def string(self, name: str) -> str:
        """Returns a string option stored as an int8 byte array."""
        return np.asarray(self.get(name)).astype(np.uint8).tobytes().decode("utf-8")


class _Cursor:
    """Sequential little-endian reads over a byte buffer, with errors naming the file."""

    def __init__(self, data: bytes | memoryview, path: str):
        self.data = memoryview(data)
        self.offset = 0
        self.path = path

    def take(self, count: int) -> memoryview:
        if self.offset + count > len(self.data):
            raise CTranslate2FormatError(
                f"{self.path}: truncated at byte {self.offset} (wanted {count} more bytes of "
                f"{len(self.data)}); the file is damaged or not a CTranslate2 model.bin"
            )
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def unpack(self, fmt: str) -> tuple:
        fmt = "<" + fmt
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def uint(self, fmt: str = "I") -> int:
        return self.unpack(fmt)[0]

    def string(self) -> str:
        size = self.uint("H")
        raw = bytes(self.take(size))
        if size == 0 or raw[-1] != 0:
            raise CTranslate2FormatError(
                f"{self.path}: malformed string at byte {self.offset - size}; not a model.bin"
            )
        return raw[:-1].decode("utf-8")


def read_model_bin(path: str | Path) -> CTranslate2Model:
    """Parses a CTranslate2 `model.bin` (see the module docstring for the layout).

    Raises CTranslate2FormatError naming the file for an unknown version, a truncated file, or
    a variable whose byte count disagrees with its shape and dtype.
    """
    path = Path(path)
    if not path.is_file():
        raise CTranslate2FormatError(f"{path}: no such file; pass a CTranslate2 model directory")
    data = path.read_bytes()
    cursor = _Cursor(data, str(path))
    version = cursor.uint()
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise CTranslate2FormatError(
            f"{path}: binary version {version} is not supported (supported: "
            f"{SUPPORTED_BINARY_VERSIONS}); re-save the model with a recent CTranslate2"
        )
    spec_name = cursor.string()
    revision = cursor.uint()
    variables: dict[str, np.ndarray] = {}
    for _ in range(cursor.uint()):
        name = cursor.string()
        rank = cursor.uint("B")
        shape = cursor.unpack("I" * rank) if rank else ()
        type_id = cursor.uint("B")
        if type_id >= len(DTYPES):
            raise CTranslate2FormatError(
                f"{path}: variable {name!r} has unknown dtype id {type_id}"
            )
        dtype = DTYPES[type_id]
        num_bytes = cursor.uint()
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if num_bytes != expected:
            raise CTranslate2FormatError(
                f"{path}: variable {name!r} has {num_bytes} bytes but shape {shape} of {dtype} "
                f"needs {expected}"
            )
        array = np.frombuffer(cursor.take(num_bytes), dtype=dtype).reshape(shape)
        variables[name] = array
    aliases = {}
    for _ in range(cursor.uint()):
        alias = cursor.string()
        aliases[alias] = cursor.string()
    for alias, target in aliases.items():
        if target not in variables:
            raise CTranslate2FormatError(f"{path}: alias {alias!r} points to missing {target!r}")
    if cursor.offset != len(data):
        raise CTranslate2FormatError(
            f"{path}: {len(data) - cursor.offset} unexpected trailing bytes after the aliases"
        )
    return CTranslate2Model(spec_name, revision, version, variables, aliases, {})


def load_ctranslate2_dir(directory: str | Path) -> CTranslate2Model:
    """Reads `model.bin` and (when present) `config.json` from a CTranslate2 model directory."""
    directory = Path(directory)
    if not (directory / "model.bin").is_file():
        raise CTranslate2FormatError(
            f"{directory}: not a CTranslate2 model directory (no model.bin inside)"
        )
    model = read_model_bin(directory / "model.bin")
    config = {}
    if (directory / "config.json").is_file():
        config = json.loads((directory / "config.json").read_text())
    return dataclasses.replace(model, config=config)


def dequantize(model: CTranslate2Model, name: str) -> np.ndarray:
    """Returns variable `name` as a float array, undoing int8/int16 quantisation.

    Quantised CTranslate2 weights store `round(w * scale)` with one scale per output row in
    `<name>_scale`; floating variables are returned unchanged (dtype kept).
    """
    value = model.get(name)
    if value.dtype.kind == "f" or value.dtype == DTYPES[5]:
        return value
    scale_name = name + "_scale"
    if not model.has(scale_name):
        raise CTranslate2FormatError(
            f"variable {name!r} is {value.dtype} but has no {scale_name!r}; cannot dequantize"
        )
    scale = model.get(scale_name).astype(np.float32)
    scale = scale.reshape(scale.shape + (1,) * (value.ndim - scale.ndim))
    return value.astype(np.float32) / scale


def _write_string(handle: BinaryIO, text: str) -> None:
    raw = text.encode("utf-8")
    handle.write(struct.pack("<H", len(raw) + 1))
    handle.write(raw + b"\0")


def write_model_bin(
    path: str | Path,
    spec_name: str,
    spec_revision: int,
    variables: dict[str, np.ndarray],
    aliases: dict[str, str] | None = None,
) -> None:
    """Writes `variables` in the model.bin layout above (used to build synthetic test models)."""
    with open(path, "wb") as handle:
        handle.write(struct.pack("<I", SUPPORTED_BINARY_VERSIONS[-1]))
        _write_string(handle, spec_name)
        handle.write(struct.pack("<I", spec_revision))
        handle.write(struct.pack("<I", len(variables)))
        for name, value in variables.items():
            value = np.ascontiguousarray(value)
            if value.dtype not in DTYPES:
                raise ValueError(f"variable {name!r}: dtype {value.dtype} cannot be stored")
            _write_string(handle, name)
            handle.write(struct.pack("<B", value.ndim))
            for dim in value.shape:
                handle.write(struct.pack("<I", dim))
            handle.write(struct.pack("<B", DTYPES.index(value.dtype)))
            handle.write(struct.pack("<I", value.nbytes))
            handle.write(value.tobytes())
        aliases = aliases or {}
        handle.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            _write_string(handle, alias)
            _write_string(handle, target)
