"""Torch-free reader for PyTorch zip archives (`torch.save` and TorchScript).

Format (PyTorch >= 1.6 zip serialization, also used by `torch.jit.save`):
the zip holds `<root>/data.pkl`, a pickle in which every tensor storage is a
persistent id `('storage', storage_type, key, location, numel)` that refers
to the raw bytes in `<root>/data/<key>` (little endian unless
`<root>/byteorder` says otherwise). Tensors are rebuilt by
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.

The unpickler here is restricted: `find_class` resolves only the handful of
names such archives use, each to a numpy-building stand-in; any other global
raises `UnsupportedArchiveError` naming it, so loading never runs code from
the file. TorchScript module objects (`__torch__.*` classes) become
`ScriptObject`s, plain attribute holders.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
import zipfile
from typing import Any, Callable

import numpy as np

# Storage class name -> numpy dtype. bfloat16 comes from ml_dtypes (a JAX
# dependency), looked up lazily so the module imports without it.
_STORAGE_DTYPES: dict[str, Any] = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}

# torch.<dtype name> -> numpy dtype, for UntypedStorage archives and v3 rebuilds.
_TORCH_DTYPES: dict[str, Any] = {
    "float64": np.float64, "double": np.float64,
    "float32": np.float32, "float": np.float32,
    "float16": np.float16, "half": np.float16,
    "bfloat16": "bfloat16",
    "int64": np.int64, "long": np.int64,
    "int32": np.int32, "int": np.int32,
    "int16": np.int16, "short": np.int16,
    "int8": np.int8, "uint8": np.uint8,
    "bool": np.bool_,
}


class UnsupportedArchiveError(ValueError):
    """The file is not a PyTorch zip archive this reader understands."""


def _np_dtype(spec: Any) -> np.dtype:
    if isinstance(spec, str) and spec == "bfloat16":
        import ml_dtypes  # pylint: disable=g-import-not-at-top
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(spec)


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stand-in for `torch.FloatStorage` & co. (and torch dtypes)."""

    name: str
    dtype: Any  # numpy dtype spec, None for UntypedStorage


@dataclasses.dataclass(frozen=True)
class _TorchDtype:
    """Stand-in for a `torch.float32`-style dtype object."""

    name: str

    @property
    def np_dtype(self) -> np.dtype:
        return _np_dtype(_TORCH_DTYPES[self.name])


@dataclasses.dataclass
class _Storage:
    """A flat typed storage: `data` is a 1-D numpy array over the raw bytes."""

    data: np.ndarray


class ScriptObject:
    """A TorchScript module/object from the archive: its pickled attributes.

    `type_name` is the qualified class name (e.g.
    `__torch__.inceptionv3.Conv2dLayer`); `attrs` maps attribute names to
    values (numpy arrays for tensors, nested `ScriptObject`s for submodules,
    Python ints/lists/bools for the rest).
    """

    type_name = "ScriptObject"

    def __init__(self, *args: Any, **kwargs: Any):
        del args, kwargs
        self.attrs: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state = state[1]  # (dict_state, slots_state) form
        if not isinstance(state, dict):
            raise UnsupportedArchiveError(
                f"unexpected state for TorchScript object {self.type_name}: {type(state).__name__}")
        self.attrs = dict(state)

    def __repr__(self) -> str:
        return f"ScriptObject({self.type_name}, attrs={sorted(self.attrs)})"


def _script_class(module: str, name: str) -> type:
    return type(name, (ScriptObject,), {"type_name": f"{module}.{name}"})


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple) -> np.ndarray:
    """A C-contiguous copy of the strided view (offset/stride in elements)."""
    if not isinstance(storage, _Storage):
        raise UnsupportedArchiveError(f"tensor storage is {type(storage).__name__}, not a storage")
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    flat = storage.data
    if len(size) != len(stride):
        raise UnsupportedArchiveError(f"tensor size {size} and stride {stride} differ in rank")
    if any(s == 0 for s in size):
        return np.zeros(size, dtype=flat.dtype)
    if any(s < 0 for s in stride):
        raise UnsupportedArchiveError(f"negative stride {stride} not supported")
    last = int(offset) + sum((n - 1) * st for n, st in zip(size, stride))
    if offset < 0 or last >= flat.size:
        raise UnsupportedArchiveError(
            f"tensor view (offset {offset}, size {size}, stride {stride}) runs past its "
            f"storage of {flat.size} elements")
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[int(offset):], shape=size, strides=tuple(st * item for st in stride), writeable=False)
    return np.array(view, copy=True, order="C")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    del requires_grad, backward_hooks, metadata
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    del requires_grad, backward_hooks, metadata
    if isinstance(dtype, _TorchDtype) and storage.data.dtype != dtype.np_dtype:
        storage = _Storage(storage.data.view(dtype.np_dtype))
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    del requires_grad, backward_hooks, state
    return data


def _build_intlist(values):
    return [int(v) for v in values]


def _build_list(values):
    return list(values)


def _build_tensor_from_id(*args):
    raise UnsupportedArchiveError("TorchScript tensor constants by id are not supported")


# Every global the reader accepts. Anything else is refused by name.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.jit._pickle", "build_intlist"): _build_intlist,
    ("torch.jit._pickle", "build_doublelist"): _build_list,
    ("torch.jit._pickle", "build_boollist"): _build_list,
    ("torch.jit._pickle", "build_tensorlist"): _build_list,
    ("torch.jit._pickle", "build_genericlist"): _build_list,
    ("torch.jit._pickle", "restore_type_tag"): lambda value, type_str: value,
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", None),
    ("torch", "UntypedStorage"): _StorageType("UntypedStorage", None),
}
for _name, _dt in _STORAGE_DTYPES.items():
    _ALLOWED[("torch", _name)] = _StorageType(_name, _dt)
for _name in _TORCH_DTYPES:
    _ALLOWED.setdefault(("torch", _name), _TorchDtype(_name))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only known torch names; storages come from `load_storage`."""

    def __init__(self, file, load_storage: Callable[[Any, str, int], _Storage], source: str,
                 allow_script_classes: bool):
        super().__init__(file)
        self._load_storage = load_storage
        self._source = source
        self._allow_script = allow_script_classes
        self._script_classes: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if self._allow_script and (module == "__torch__" or module.startswith("__torch__.")):
            if key not in self._script_classes:
                self._script_classes[key] = _script_class(module, name)
            return self._script_classes[key]
        raise UnsupportedArchiveError(
            f"{self._source}: refusing to load global {module}.{name}; only tensors, "
            "state dicts and TorchScript module attributes are supported (a whole pickled "
            "nn.Module or custom class cannot be read without torch)")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsupportedArchiveError(f"{self._source}: unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if isinstance(storage_type, _TorchDtype):  # some writers put the dtype here
            dtype = storage_type.np_dtype
        elif isinstance(storage_type, _StorageType):
            dtype = np.dtype(np.uint8) if storage_type.dtype is None else _np_dtype(storage_type.dtype)
        else:
            raise UnsupportedArchiveError(f"{self._source}: unknown storage type {storage_type!r}")
        return self._load_storage(dtype, str(key), int(numel))


def _archive_root(zf: zipfile.ZipFile, path: str) -> str:
    roots = [n[: -len("data.pkl")] for n in zf.namelist()
             if n.endswith("data.pkl") and n.count("/") == 1]
    if len(roots) != 1:
        raise UnsupportedArchiveError(
            f"{path}: zip file without exactly one '<root>/data.pkl' (found {len(roots)}); "
            "not a PyTorch archive")
    return roots[0]


def _load_pickle(path: str | os.PathLike[str], *, allow_script_classes: bool) -> Any:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        hint = (" It looks like the legacy (pre-1.6, non-zip) torch.save format; re-save it "
                "with a current torch (`torch.save(torch.load(p), p)`) to convert it."
                if head[:1] == b"\x80" else "")
        raise UnsupportedArchiveError(f"{path}: not a zip-format PyTorch archive.{hint}")
    with zipfile.ZipFile(path) as zf:
        root = _archive_root(zf, path)
        names = set(zf.namelist())
        byteorder = "little"
        if root + "byteorder" in names:
            byteorder = zf.read(root + "byteorder").decode().strip()
        cache: dict[str, _Storage] = {}

        def load_storage(dtype: np.dtype, key: str, numel: int) -> _Storage:
            if key not in cache:
                entry = f"{root}data/{key}"
                if entry not in names:
                    raise UnsupportedArchiveError(f"{path}: storage {entry} missing from archive")
                raw = zf.read(entry)
                dt = dtype.newbyteorder("<" if byteorder == "little" else ">")
                if len(raw) % dt.itemsize:
                    raise UnsupportedArchiveError(
                        f"{path}: storage {entry} has {len(raw)} bytes, not a multiple of "
                        f"{dt.itemsize} ({dtype})")
                arr = np.frombuffer(raw, dtype=dt).astype(dtype.newbyteorder("="), copy=False)
                cache[key] = _Storage(arr)
            storage = cache[key]
            if storage.data.dtype != dtype:  # same bytes viewed as another type
                return _Storage(storage.data.view(dtype))
            return storage

        with zf.open(root + "data.pkl") as f:
            unpickler = _RestrictedUnpickler(f, load_storage, path, allow_script_classes)
            try:
                return unpickler.load()
            except UnsupportedArchiveError:
                raise
            except (pickle.UnpicklingError, EOFError, TypeError, AttributeError) as e:
                raise UnsupportedArchiveError(f"{path}: corrupt data.pkl: {e}") from e


def _flatten(obj: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(obj, np.ndarray):
        out[prefix] = obj
    elif isinstance(obj, ScriptObject):
        for k, v in obj.attrs.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(obj, (list, tuple)) and any(
            isinstance(v, (np.ndarray, dict, ScriptObject, list, tuple)) for v in obj):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), out)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Reads a `torch.save`d state dict (zip format) without torch.

    Returns a flat dict name -> numpy array (C-contiguous copies, dtype as
    stored: float32/float64/float16/bfloat16/int*/uint8/bool). Nested dicts
    (e.g. `{'generator': sd, ...}`) are flattened with dots; non-tensor
    values (step counters, strings) are dropped.

    Raises:
      FileNotFoundError: no such file.
      UnsupportedArchiveError: legacy non-zip format, a pickled class other
        than the known tensor/OrderedDict names, or a corrupt archive.
    """
    obj = _load_pickle(path, allow_script_classes=False)
    out: dict[str, np.ndarray] = {}
    _flatten(obj, "", out)
    if not out:
        raise UnsupportedArchiveError(f"{os.fspath(path)}: archive holds no tensors")
    return out


def load_torchscript_module(path: str | os.PathLike[str]) -> ScriptObject:
    """The root module of a TorchScript archive as a `ScriptObject` tree.

    Submodules are nested `ScriptObject`s in `attrs`; tensors are numpy
    arrays; hyper-parameters stored as attributes (stride, padding) are
    Python values. No TorchScript code is executed.
    """
    obj = _load_pickle(path, allow_script_classes=True)
    if not isinstance(obj, ScriptObject):
        raise UnsupportedArchiveError(
            f"{os.fspath(path)}: data.pkl holds {type(obj).__name__}, not a TorchScript module")
    return obj


def load_torchscript_tensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """All tensors of a TorchScript archive, keyed by dotted attribute path.

    Names follow the module attribute tree from the root module, e.g.
    `net.layers.conv.weight` for `root.net.layers.conv.weight`.
    """
    out: dict[str, np.ndarray] = {}
    _flatten(load_torchscript_module(path), "", out)
    return out


def read_archive_text(path: str | os.PathLike[str], member: str) -> str:
    """A text member of the archive (e.g. `code/__torch__/x.py`), root-relative."""
    with zipfile.ZipFile(os.fspath(path)) as zf:
        root = _archive_root(zf, os.fspath(path))
        return zf.read(root + member).decode("utf-8")
