"""A checkpoint's metadata without PyTorch: what the summary card, the checkpoint picker and the sidebar need,
read in milliseconds by a process that has not imported torch (importing torch costs about 2 s).

`read_meta(path)` opens the zip archive torch.save writes (`<archive>/data.pkl` plus `<archive>/data/<n>`
storages), reads only data.pkl, and unpickles it with a restricted unpickler that never imports anything:
torch's tensor rebuild functions and storage types are replaced by small stand-ins, so every tensor becomes a
`TensorStub(shape, dtype)` (enough for parameter counts) and every other value (classes, input_shape,
normalization, preprocessing, data, config, history numbers, metrics, created, model) is the real one. A
pickle that names any global outside cnnlib.io.validate's allowlist is refused with the same CheckpointError
sentence the torch path gives (both read them from cnnlib.io.validate); so are empty, truncated, corrupt and
non-checkpoint files. The dict is validated by the same ckptcheck.validate.

What it cannot tell without building the network: whether the weights fit the architecture and are finite.
cnnlib.io.checkpoint.load_checkpoint / build_model still decide that when the model is loaded.

Results are cached by (path, mtime, size); the returned dicts are shared: do not modify them.
"""
from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
import threading
import zipfile
from typing import Any

from cnnlib.io.validate import (describe, is_plain, read_path, not_zip_sentence, parameter_count, pickle_globals, refusal,  # noqa: F401
                        summary, validate)
from cnnlib.errors import CheckpointError



class NeedsTorch(CheckpointError):
    """A file this reader cannot summarise but torch.load may read (the legacy pre-zip torch.save format):
    use cnnlib.io.checkpoint.load_checkpoint for it."""


# ----------------------------------------------------------------------------- stand-ins

_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2,
             "int8": 1, "uint8": 1, "bool": 1, "complex64": 8, "complex128": 16, "qint8": 1, "quint8": 1,
             "qint32": 4, "quint4x2": 1, "quint2x4": 1, "float8_e5m2": 1, "float8_e4m3fn": 1,
             "float8_e5m2fnuz": 1, "float8_e4m3fnuz": 1, "uint16": 2, "uint32": 4, "uint64": 8}
_STORAGE_DTYPE = {"DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
                  "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
                  "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
                  "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
                  "QInt8Storage": "qint8", "QUInt8Storage": "quint8", "QInt32Storage": "qint32",
                  "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4", "UntypedStorage": "uint8"}


class DType(str):
    """A torch dtype by name ("torch.float32", as str(tensor.dtype) reads)."""


class TensorStub:
    """A tensor's shape and dtype, without its numbers."""
    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype: str = "torch.float32"):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = DType(dtype)

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def dim(self) -> int:
        return len(self.shape)

    def size(self, dim: int | None = None):
        return self.shape if dim is None else self.shape[dim]

    def is_floating_point(self) -> bool:
        return self.dtype in ("torch.float64", "torch.float32", "torch.float16", "torch.bfloat16")

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __eq__(self, other) -> bool:
        return isinstance(other, TensorStub) and (self.shape, self.dtype) == (other.shape, other.dtype)

    def __hash__(self) -> int:
        return hash((self.shape, self.dtype))

    def __repr__(self) -> str:
        return f"TensorStub(shape={self.shape}, dtype={self.dtype})"

    def __reduce__(self):
        return (TensorStub, (self.shape, str(self.dtype)))


class _Storage:
    __slots__ = ("dtype", "numel", "record")

    def __init__(self, dtype: str, numel: int, record: str):
        self.dtype, self.numel, self.record = dtype, numel, record


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = "torch." + _STORAGE_DTYPE[name]


class _Inert:
    """An allowed torch global with no meaning for metadata (a layout, a qscheme, torch.Tensor): a name,
    and calling it gives another inert name; nothing is ever imported or run."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args, **kwargs):
        return _Inert(self.name + "()")

    def __repr__(self) -> str:
        return f"<{self.name}>"


def _rebuild_tensor(storage, storage_offset, size, stride, *rest):
    return TensorStub(size, storage.dtype if isinstance(storage, _Storage) else "torch.float32")


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, *rest):
    return TensorStub(size, str(dtype))


def _rebuild_parameter(data, *rest):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    return func(*args)


def _rebuild_meta(dtype, size, *rest):
    return TensorStub(size, str(dtype))


def _rebuild_opaque(*args, **kwargs):
    return TensorStub((), "torch.unknown")


def _torch_globals() -> dict[str, Any]:
    g: dict[str, Any] = {
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch._utils._rebuild_meta_tensor_no_storage": _rebuild_meta,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
        "torch.Size": tuple,
        "torch.device": lambda *a: " ".join(map(str, a)),
        "torch.nn.parameter.Parameter": _Inert("torch.nn.parameter.Parameter"),
        "torch.Tensor": _Inert("torch.Tensor"),
        "torch.serialization._get_layout": _Inert("torch.serialization._get_layout"),
    }
    for f in ("_rebuild_qtensor", "_rebuild_sparse_tensor", "_rebuild_wrapper_subclass",
              "_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor"):
        g["torch._utils." + f] = _rebuild_opaque
    for name in _STORAGE_DTYPE:
        g["torch." + name] = _StorageType(name)
        g["torch.storage." + name] = _StorageType(name)
    g["torch.storage.TypedStorage"] = _Inert("torch.storage.TypedStorage")
    for dt in list(_ITEMSIZE) + ["float", "double", "half", "long", "int", "short", "cfloat", "cdouble"]:
        g["torch." + dt] = DType("torch." + dt)
    for qs in ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric",
               "per_channel_affine_float_qparams"):
        g["torch." + qs] = _Inert("torch." + qs)
    for t in ("Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"):
        g[f"torch.{t}Tensor"] = _Inert(f"torch.{t}Tensor")
    return g


_GLOBALS: dict[str, Any] = {
    **_torch_globals(),
    "collections.OrderedDict": collections.OrderedDict, "collections.defaultdict": collections.defaultdict,
    "_codecs.encode": codecs.encode, "builtins.set": set, "builtins.frozenset": frozenset,
    "builtins.bytearray": bytearray, "builtins.slice": slice, "builtins.complex": complex, "builtins.int": int,
    "builtins.float": float, "builtins.bool": bool, "builtins.str": str, "builtins.bytes": bytes,
    "builtins.list": list, "builtins.dict": dict, "builtins.tuple": tuple, "builtins.range": range,
}


class _Corrupt(Exception):
    """A pickle this reader cannot make sense of (the torch path would fail on it too)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


class _Unpickler(pickle.Unpickler):
    """Imports nothing: allowed globals map to stand-ins, storages to _Storage records."""

    def __init__(self, data: bytes, records: dict[str, int]):
        super().__init__(io.BytesIO(data))
        self._records = records

    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if not is_plain(full):
            raise _Corrupt("UnpicklingError")          # not reached: the pre-scan refuses it with its sentence
        if full not in _GLOBALS:
            raise _Corrupt("UnpicklingError")          # allowed by prefix only; torch's unpickler refuses it too
        return _GLOBALS[full]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise _Corrupt("UnpicklingError")
        _, stype, key, _location, numel = pid[:5]
        if not isinstance(stype, _StorageType):
            raise _Corrupt("UnpicklingError")
        size = self._records.get(str(key))
        item = _ITEMSIZE.get(stype.dtype.removeprefix("torch."), 1)
        if size is None or not isinstance(numel, int) or size < numel * item:
            raise _Corrupt("RuntimeError")            # a storage record missing or short
        return _Storage(stype.dtype, numel, str(key))


# ----------------------------------------------------------------------------- sentences (as cnnlib.io.checkpoint)

def _not_zip(data: bytes, name: str) -> CheckpointError:
    """The sentence for a file that is not torch.save's zip archive (a legacy torch.save pickle: NeedsTorch)."""
    sentence = not_zip_sentence(data, name)
    return CheckpointError(sentence) if sentence else NeedsTorch(f"{name} is in PyTorch's legacy format, which "
                                                                 "only torch.load reads")


# ----------------------------------------------------------------------------- reading

def _open(source, what: str) -> tuple[Any, bytes, str]:
    """(what zipfile can open, the first 4 KiB, the name in sentences)."""
    name = describe(source)
    if isinstance(source, (str, os.PathLike)):
        return source, read_path(source, what, 4096), name
    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else source.read()
    return io.BytesIO(data), data[:4096], name


def _load(source, what: str = "checkpoint") -> Any:
    """The unpickled object, tensors as TensorStubs; CheckpointError with cnnlib.io.checkpoint's sentences."""
    opened, head, name = _open(source, what)
    if not head:
        raise CheckpointError(f"{name} is empty (0 bytes)")
    if head[:4] != b"PK\x03\x04":
        if head[:1] == b"\x80" and not isinstance(opened, io.BytesIO):
            with open(opened, "rb") as f:
                head = f.read()
        elif isinstance(opened, io.BytesIO):
            head = opened.getvalue()
        raise _not_zip(head, name)
    try:
        with zipfile.ZipFile(opened) as z:
            infos = z.infolist()
            pkls = [i.filename for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
            if not pkls:
                raise CheckpointError(f"{name} is a zip archive but not a PyTorch file (it has no data.pkl)")
            data_pkl = z.read(pkls[0])
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, RuntimeError):
        raise CheckpointError(f"{name} is truncated or corrupt: its zip archive is incomplete "
                              "(was the download or copy cut short?)") from None
    prefix = pkls[0][:-len("data.pkl")] + "data/"
    records = {i.filename[len(prefix):]: i.file_size for i in infos if i.filename.startswith(prefix)}
    found = pickle_globals(data_pkl)
    if found is None:
        raise CheckpointError(f"{name} is corrupt: the PyTorch file's object index cannot be read")
    refused = refusal(name, found)
    if refused:
        raise CheckpointError(refused)
    try:
        return _Unpickler(data_pkl, records).load()
    except _Corrupt as e:
        raise CheckpointError(f"{name} is corrupt: PyTorch cannot read it ({e.kind})") from None
    except Exception as e:  # noqa: BLE001 - a damaged pickle: one sentence, as the torch path gives
        if isinstance(e, EOFError) or "truncated" in str(e).lower():
            raise CheckpointError(f"{name} is truncated: it ends before its data does") from None
        raise CheckpointError(f"{name} is corrupt: PyTorch cannot read it (UnpicklingError)") from None


_CACHE: collections.OrderedDict = collections.OrderedDict()   # (path, mtime, size) -> meta or its error
_CACHE_MAX = 128
_LOCK = threading.Lock()


def read_checkpoint(source) -> dict:
    """The whole checkpoint dict with every tensor as a TensorStub (path, bytes or binary file object);
    CheckpointError (NeedsTorch for the legacy format) as cnnlib.io.checkpoint.load_checkpoint would raise.
    Paths are cached by (path, mtime, size)."""
    if not isinstance(source, (str, os.PathLike)):
        return validate(_load(source), describe(source), lambda v: isinstance(v, TensorStub))
    try:
        s = os.stat(source)
        key = (os.path.abspath(source), s.st_mtime_ns, s.st_size)
    except OSError:
        key = None
    if key is not None:
        with _LOCK:
            hit = _CACHE.get(key)
            if hit is not None:
                _CACHE.move_to_end(key)
        if hit is not None:
            if isinstance(hit, CheckpointError):
                raise type(hit)(str(hit))
            return hit
    try:
        out: Any = validate(_load(source), describe(source), lambda v: isinstance(v, TensorStub))
    except CheckpointError as e:
        out = e
    if key is not None:
        with _LOCK:
            _CACHE[key] = out
            while len(_CACHE) > _CACHE_MAX:
                _CACHE.popitem(last=False)
    if isinstance(out, CheckpointError):
        raise type(out)(str(out))
    return out


def read_meta(source) -> dict:
    """What `model.meta` holds for this checkpoint (every key but the weights), plus "state_dict" as
    {name: TensorStub} (shapes for parameter counts). Tensors elsewhere (history's first_layer,
    test_predictions, initial_first_layer) are TensorStubs too."""
    return read_checkpoint(source)


def model_meta(ckpt: dict) -> dict:
    """The checkpoint without its weights: the keys inference.load_model puts in `model.meta`."""
    return {k: v for k, v in ckpt.items() if k != "state_dict"}
