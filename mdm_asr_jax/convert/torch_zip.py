"""Read a PyTorch zip checkpoint (`torch.save` format) without PyTorch.

A file saved by `torch.save` is a zip of one pickle (`data.pkl`) and raw storages
(`data/0`, `data/1`, ...). `read_torch_zip` unpickles it with a restricted unpickler that only
builds tensors (as numpy arrays) and plain containers, so no code from the file runs and
PyTorch need not be installed. Used by the NeMo converter (`convert.nemo`).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np


class TorchZipError(ValueError):
    """A file that is not a readable PyTorch zip state dict (names the file and the problem)."""


_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "BFloat16Storage": "bfloat16",
}
_TORCH_DTYPES = {
    "float32": np.float32,
    "float": np.float32,
    "float64": np.float64,
    "double": np.float64,
    "float16": np.float16,
    "half": np.float16,
    "bfloat16": "bfloat16",
    "int64": np.int64,
    "long": np.int64,
    "int32": np.int32,
    "int": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
}


def _numpy_dtype(dtype: Any) -> np.dtype:
    if isinstance(dtype, str) and dtype == "bfloat16":
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


class _StorageType:
    def __init__(self, dtype: Any):
        self.dtype = dtype


class _TorchDtype:
    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor(storage, storage_offset, size, stride, *_args):
    itemsize = storage.dtype.itemsize
    if not size:
        return np.array(storage[storage_offset], copy=True)
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view, copy=True)


def _rebuild_parameter(data, *_args):
    return data


class _TensorUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict into numpy arrays; refuses every other global."""

    def __init__(self, file, zip_file: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._zip = zip_file
        self._prefix = prefix
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchDtype(name)
        raise pickle.UnpicklingError(
            f"unexpected object {module}.{name} in the weights pickle (only tensors are read)"
        )

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        if key not in self._storages:
            if isinstance(storage_type, _TorchDtype):  # UntypedStorage + dtype (newer torch)
                dtype = _numpy_dtype(_TORCH_DTYPES[storage_type.name])
            else:
                dtype = _numpy_dtype(storage_type.dtype)
            raw = self._zip.read(f"{self._prefix}data/{key}")
            self._storages[key] = np.frombuffer(raw, dtype=dtype, count=numel)
        return self._storages[key]


def read_torch_zip(
    data: bytes | str | Path, name: str = "model_weights.ckpt"
) -> dict[str, np.ndarray]:
    """A PyTorch state dict saved with `torch.save` (zip format; bytes or a file path) ->
    {name: numpy array}. Reads only tensors (a restricted unpickler), never runs code."""
    try:
        zip_file = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except zipfile.BadZipFile as err:
        raise TorchZipError(
            f"{name} is not a zip-format PyTorch checkpoint (saved by torch < 1.6?); re-save it "
            "with a recent torch: torch.save(torch.load(f), f)"
        ) from err
    pickles = [n for n in zip_file.namelist() if n.endswith("data.pkl")]
    if len(pickles) != 1:
        raise TorchZipError(f"{name} holds {len(pickles)} data.pkl files; expected one")
    prefix = pickles[0][: -len("data.pkl")]
    unpickler = _TensorUnpickler(io.BytesIO(zip_file.read(pickles[0])), zip_file, prefix)
    state = unpickler.load()
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TorchZipError(f"{name} does not hold a state dict (got {type(state)})")
    return {str(k): np.asarray(v) for k, v in state.items()}
