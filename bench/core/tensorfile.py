"""Read a file this package wrote with `torch.save` (tensors in plain containers) as numpy
arrays, without importing torch: the report draws every run's reconstructions and starts in
well under a second.

torch's format is a zip archive: `<name>/data.pkl` is a pickle whose tensors are
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` calls and whose storages
are persistent ids `('storage', torch.<Kind>Storage, key, location, numel)`; storage `key`'s
raw bytes are `<name>/data/<key>`, in the order `<name>/byteorder` names. Any other global in
the pickle is refused, as `torch.load(weights_only=True)` refuses it; a file this reader
cannot follow raises UnreadableTensorFile (`load_arrays` then asks torch)."""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.core import store

# torch's storage classes -> numpy dtypes (bfloat16 has none: such a file goes to torch).
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class UnreadableTensorFile(Exception):
    """The file is not a torch zip archive of tensors this reader knows."""


class _StorageKind(str):
    """What the pickle's `torch.FloatStorage` global stands for here: its name."""


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple[int, ...],
                    stride: tuple[int, ...], *_: Any) -> np.ndarray:
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=[s * storage.itemsize for s in stride])
    return view.copy()


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, order: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.order = archive, prefix, order

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageKind(name)
        raise UnreadableTensorFile(f"{module}.{name} in the pickle")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageKind)):
            raise UnreadableTensorFile(f"storage id {pid!r}")
        _, kind, key, _location, numel = pid
        dtype = np.dtype(STORAGE_DTYPES[kind]).newbyteorder(self.order)
        raw = self.archive.read(f"{self.prefix}data/{key}")
        return np.frombuffer(raw, dtype=dtype, count=numel).astype(dtype.newbyteorder("="))


def read_arrays(path: Path) -> Any:
    """The object saved in `path`, its tensors as numpy arrays."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise UnreadableTensorFile(f"{path}: not a torch archive")
            prefix = pickles[0][: -len("data.pkl")]
            names = set(archive.namelist())
            order = (archive.read(prefix + "byteorder").decode().strip()
                     if prefix + "byteorder" in names else "little")
            if order not in ("little", "big"):
                raise UnreadableTensorFile(f"{path}: byte order {order!r}")
            unpickler = _Unpickler(archive.read(pickles[0]), archive, prefix,
                                   "<" if order == "little" else ">")
            return unpickler.load()
    except (zipfile.BadZipFile, KeyError, pickle.UnpicklingError, ValueError, EOFError) as err:
        raise UnreadableTensorFile(f"{path}: {err}") from None


def load_arrays(path: Path) -> Any:
    """`read_arrays`, or torch's own reader (converted to numpy) for a file it cannot follow."""
    try:
        return read_arrays(path)
    except UnreadableTensorFile:
        obj = store.load_torch(path)
        if not isinstance(obj, dict):
            return obj
        return {k: _numpy(v) for k, v in obj.items()}


def _numpy(value: Any) -> Any:
    if not hasattr(value, "numpy"):
        return value
    return (value.float() if str(value.dtype) == "torch.bfloat16" else value).numpy()
