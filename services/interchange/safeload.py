"""Loading pickles and ``torch.save`` files without running their code, and without torch.

A pickle can name any importable callable, so ``pickle.load`` on a file from someone else
runs their code. ``SafeUnpickler`` resolves only plain builtin types, ``OrderedDict``, and
a few data-only stand-ins for classes that circuit tools pickle (ACDC's ``TorchIndex``,
``Edge`` and ``EdgeType``; torch's tensor rebuild functions). Anything else is refused with
the name of the class it asked for.

``torch.save`` files are zip archives holding ``data.pkl`` plus raw storages. The API image
has no torch, so tensors are rebuilt as numpy arrays straight from the storage bytes (the
equivalent of ``torch.load(weights_only=True)``, which is itself a restricted unpickler).
"""

from __future__ import annotations

import builtins
import collections
import io
import pickle
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import InterchangeError

_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "slice", "bool", "int", "float", "complex",
     "str", "bytes", "bytearray", "object"}
)  # fmt: skip

_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",  # widened to float32 in _as_numpy
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class PickledRecord:
    """A data-only stand-in for a pickled instance of a foreign class: its state, no code."""

    class_name = "object"

    args: tuple[Any, ...]
    state: dict[str, Any]

    def __new__(cls, *args: Any) -> PickledRecord:
        # Set here, not in __init__: pickle's NEWOBJ calls __new__ alone, then __setstate__.
        record = super().__new__(cls)
        record.args = args
        record.state = {}
        return record

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = dict(state) if isinstance(state, dict) else {"value": state}

    def __repr__(self) -> str:
        return f"{self.class_name}({self.args or self.state})"


class TorchIndexRecord(PickledRecord):
    """ACDC's ``TorchIndex``: ``hashable_tuple`` such as ``(None, None, 3)``."""

    class_name = "TorchIndex"


class AcdcEdgeRecord(PickledRecord):
    """ACDC's ``Edge``: ``edge_type``, ``present`` and ``effect_size``."""

    class_name = "Edge"


class EdgeTypeRecord(PickledRecord):
    """ACDC's ``EdgeType`` enum member (0 addition, 1 direct computation, 2 placeholder)."""

    class_name = "EdgeType"


_ACDC_STAND_INS: dict[str, type[PickledRecord]] = {
    "TorchIndex": TorchIndexRecord,
    "Edge": AcdcEdgeRecord,
    "EdgeType": EdgeTypeRecord,
}


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _as_numpy(storage: np.ndarray, dtype_name: str) -> np.ndarray:
    if dtype_name == "BFloat16Storage":
        return (storage.astype(np.uint32) << 16).view(np.float32)
    return storage


def _rebuild_tensor(
    storage: tuple[np.ndarray, str],
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *_ignored: Any,
) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2, yielding a numpy copy of the tensor's elements."""
    flat, dtype_name = storage
    values = _as_numpy(flat, dtype_name)
    # as_strided does no bounds checking: a hostile size/stride could read past the storage.
    if any(n < 0 for n in size) or any(st < 0 for st in stride) or len(size) != len(stride):
        raise InterchangeError(f"bad tensor shape {size} / stride {stride}", location="data.pkl")
    last = offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True))
    if offset < 0 or (all(n > 0 for n in size) and last >= len(values)):
        raise InterchangeError("tensor extends past its storage", location="data.pkl")
    if not size:
        return np.array(values[offset])
    item = values.itemsize
    view = np.lib.stride_tricks.as_strided(
        values[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
    )
    return np.array(view)


def _rebuild_parameter(data: np.ndarray, *_ignored: Any) -> np.ndarray:
    return data


_TORCH_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class SafeUnpickler(pickle.Unpickler):
    """Resolves only plain data types and known data-only stand-ins; refuses the rest."""

    def __init__(self, stream: io.BytesIO, storages: Callable[[str], bytes] | None = None):
        super().__init__(stream)
        self._stream = stream
        self._storages = storages
        self._loaded: dict[str, tuple[np.ndarray, str]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _BUILTINS:  # py2 name: protocol 2
            return getattr(builtins, name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("copyreg", "_reconstructor"):
            import copyreg

            return copyreg._reconstructor  # type: ignore[attr-defined]
        if module.split(".")[0] == "acdc" and name in _ACDC_STAND_INS:
            return _ACDC_STAND_INS[name]
        if self._storages is not None:
            if module == "torch" and name in _STORAGE_DTYPES:
                return _StorageType(name)
            if (module, name) in _TORCH_FUNCTIONS:
                return _TORCH_FUNCTIONS[(module, name)]
        raise InterchangeError(
            f"the pickle asks for {module}.{name}; only plain data (dicts, lists, tuples, "
            "numbers, strings), tensors and ACDC's TorchIndex/Edge are loaded, since "
            "unpickling other classes can run arbitrary code",
            location=f"byte {self._stream.tell()}",
        )

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise InterchangeError(
                "the pickle refers to external storage (is it a torch.save file?)",
                location=f"byte {self._stream.tell()}",
            )
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise InterchangeError(f"unknown persistent id {pid!r}", location="data.pkl")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise InterchangeError(f"unknown storage type {storage_type!r}", location="data.pkl")
        if key not in self._loaded:
            raw = self._storages(key)
            self._loaded[key] = (np.frombuffer(raw, dtype=storage_type.dtype), storage_type.name)
        return self._loaded[key]


def safe_unpickle(data: bytes) -> Any:
    """Unpickle plain data; foreign classes raise ``InterchangeError`` naming them."""
    try:
        return SafeUnpickler(io.BytesIO(data)).load()
    except InterchangeError:
        raise
    except Exception as exc:
        raise InterchangeError(f"not a readable pickle: {exc}", location="pickle") from None


def is_torch_zip(data: bytes) -> bool:
    """Whether ``data`` is a zip archive written by ``torch.save`` (it holds a data.pkl)."""
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return any(n.endswith("/data.pkl") for n in archive.namelist())
    except Exception:  # not a readable zip at all: the npz reader will say why
        return False


def safe_torch_load(data: bytes) -> Any:
    """Read a ``torch.save`` archive without torch: tensors come back as numpy arrays."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return _load_archive(archive)
    except InterchangeError:
        raise
    except Exception as exc:  # bad zip, CRC, zlib, EOF, opcodes: all mean a damaged file
        raise InterchangeError(f"damaged torch.save archive: {exc!r}", location="zip") from None


def _load_archive(archive: zipfile.ZipFile) -> Any:
    pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
    if pkl is None:
        raise InterchangeError("no data.pkl in the archive", location="zip")
    prefix = pkl[: -len("data.pkl")]
    order = prefix + "byteorder"
    if order in archive.namelist() and archive.read(order).strip() != b"little":
        raise InterchangeError("big-endian torch files are not supported", location=order)

    def storage(key: str) -> bytes:
        name = f"{prefix}data/{key}"
        if name not in archive.namelist():
            raise InterchangeError("storage missing from the archive", location=name)
        return archive.read(name)

    return SafeUnpickler(io.BytesIO(archive.read(pkl)), storages=storage).load()
