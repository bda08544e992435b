"""Read PyTorch checkpoints (files written by ``torch.save``) without torch.

A checkpoint is a pickle of the saved object (usually a dict of tensors) in
which every tensor's memory, its *storage*, is kept outside the pickle and
referred to by a *persistent id*. Two container layouts exist.

Zip layout (torch >= 1.6, the default)
    A zip archive (stored, not compressed) whose entries share one top-level
    folder whose name varies (``archive/``, or the file's stem)::

        <top>/data.pkl        the object pickle
        <top>/data/<key>      the raw bytes of storage <key>
        <top>/byteorder       b"little" or b"big" (absent in old files: little)
        <top>/version, <top>/.format_version, ...

    Persistent id: ``('storage', storage_type, key, location, numel)``.

Legacy layout (``_use_new_zipfile_serialization=False``, and files from before 1.6)
    Consecutive pickles in one stream: the magic number 0x1950a86a20f9469cfc6c,
    the protocol version 1001, a sys-info dict (``little_endian``, type sizes),
    the object pickle, then a pickled list of storage keys. For each key, in that
    order, follow an 8-byte element count and the storage's raw bytes.

    Persistent id: ``('storage', storage_type, root_key, location, numel,
    view_metadata)``; ``view_metadata`` is None or, in very old files,
    ``(view_key, offset, view_numel)`` naming a slice of the root storage.

``storage_type`` is a global such as ``torch.FloatStorage`` (its name gives
the dtype) or, for dtypes without such a name, ``torch.storage.UntypedStorage``
(counted in bytes). Inside the object pickle a tensor is a call to
``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
requires_grad, backward_hooks[, metadata])`` (older files: ``_rebuild_tensor``
with the first four arguments; untyped storages: ``_rebuild_tensor_v3`` with the
dtype after ``backward_hooks``), where offset and strides count elements.
Parameters wrap a tensor in ``torch._utils._rebuild_parameter``.

Unpickling runs whatever callables the pickle names, so this module unpickles
with an allowlist of globals, each mapped to a stand-in defined here; torch is
never imported and any other global stops the read with UnsafeCheckpointError.
"""
import collections
import pickle
import struct
import zipfile

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .errors import UnsafeCheckpointError, WeightsFormatError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch dtype name -> numpy dtype of the stored elements ("bfloat16" kept as uint16).
_DTYPES = {
    "float32": "float32", "float": "float32", "float64": "float64", "double": "float64",
    "float16": "float16", "half": "float16", "bfloat16": "bfloat16",
    "int64": "int64", "long": "int64", "int32": "int32", "int": "int32",
    "int16": "int16", "short": "int16", "int8": "int8", "uint8": "uint8",
    "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "bool": "bool",
    "complex64": "complex64", "cfloat": "complex64", "complex128": "complex128",
    "cdouble": "complex128",
}
# Legacy storage class name -> torch dtype name.
_STORAGES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}


class _DType:
    """Stand-in for a ``torch.<dtype>`` global."""

    def __init__(self, name):
        self.name = name
        stored = _DTYPES[name]
        self.numpy = np.dtype("uint16" if stored == "bfloat16" else stored)
        self.bfloat16 = stored == "bfloat16"


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.; ``dtype`` None means untyped bytes."""

    def __init__(self, name, dtype):
        self.name = name
        self.dtype = dtype


class _Storage:
    """A storage named by a persistent id; its bytes are fetched when needed."""

    def __init__(self, key, dtype, numel, byte_offset=0):
        self.key, self.dtype, self.numel, self.byte_offset = key, dtype, numel, byte_offset

    @property
    def itemsize(self):
        return 1 if self.dtype is None else self.dtype.numpy.itemsize


class _Tensor:
    """A tensor recorded by a rebuild call, turned into an array after unpickling."""

    def __init__(self, storage, offset, size, stride, dtype):
        self.storage, self.offset, self.size, self.stride, self.dtype = (
            storage, offset, size, stride, dtype)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise TypeError(f"a tensor's storage is a {type(storage).__name__}, not a storage")
    return _Tensor(storage, storage_offset, size, stride, storage.dtype)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype,
                       metadata=None):
    tensor = _rebuild_tensor(storage, storage_offset, size, stride)
    tensor.dtype = dtype
    return tensor


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    return data


def _allowed_globals():
    """The allowlist: (module, name) -> stand-in, built afresh for every unpickler.

    Fresh objects mean a pickle that sets attributes on a stand-in (the BUILD
    opcode) cannot affect any later read.
    """
    def fresh(function):
        return lambda *args: function(*args)
    table = {("collections", "OrderedDict"): collections.OrderedDict,
             ("torch._utils", "_rebuild_tensor"): fresh(_rebuild_tensor),
             ("torch._utils", "_rebuild_tensor_v2"): fresh(_rebuild_tensor),
             ("torch._utils", "_rebuild_tensor_v3"): fresh(_rebuild_tensor_v3),
             ("torch._utils", "_rebuild_parameter"): fresh(_rebuild_parameter),
             ("torch._utils", "_rebuild_parameter_with_state"): fresh(_rebuild_parameter),
             ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", None)}
    for module in ("builtins", "__builtin__"):
        for name, value in (("set", set), ("frozenset", frozenset), ("complex", complex)):
            table[(module, name)] = value
    for name in _DTYPES:
        table[("torch", name)] = _DType(name)
    for name, dtype in _STORAGES.items():
        table[("torch", name)] = _StorageType(name, _DType(dtype))
    return table


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allowlisted globals and torch storage ids."""

    def __init__(self, file, path, storages=None, legacy=False):
        super().__init__(file)
        self.path, self.storages, self.legacy = path, storages, legacy
        self.allowed = _allowed_globals()

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self.path}: refused to load the global {module}.{name}; this file is not a "
                "plain tensor checkpoint (unpickling it would import or call that object, which "
                "can run arbitrary code), so nothing in it was executed") from None

    def persistent_load(self, pid):
        if self.storages is None:
            raise WeightsFormatError(f"{self.path}: unexpected persistent id {pid!r}")
        if not isinstance(pid, tuple) or not pid:
            raise WeightsFormatError(f"{self.path}: malformed persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage" or len(pid) != (6 if self.legacy else 5):
            raise WeightsFormatError(f"{self.path}: unsupported persistent id {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise WeightsFormatError(f"{self.path}: malformed storage reference {pid!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, numel)
        root = self.storages[key]
        view = pid[5] if self.legacy else None
        if view is None:
            return root
        view_key, offset, view_numel = view
        if not all(isinstance(v, int) and v >= 0 for v in (offset, view_numel)):
            raise WeightsFormatError(f"{self.path}: malformed storage view {view!r}")
        return _Storage(key, root.dtype, view_numel, offset * root.itemsize)


def _array(tensor, data, byteorder, path):
    """Materialize a _Tensor from the bytes of its root storage."""
    storage, dtype = tensor.storage, tensor.dtype
    if not isinstance(dtype, _DType):
        raise WeightsFormatError(f"{path}: tensor with unsupported dtype {dtype!r}")
    size, stride, offset = tuple(tensor.size), tuple(tensor.stride), tensor.offset
    if not all(isinstance(v, int) and v >= 0 for v in size + stride + (offset,)) \
            or len(size) != len(stride):
        raise WeightsFormatError(f"{path}: malformed tensor geometry size={size} "
                                 f"stride={stride} offset={offset}")
    nbytes = storage.numel * storage.itemsize
    raw = data[storage.byte_offset:storage.byte_offset + nbytes]
    if len(raw) < nbytes:
        raise WeightsFormatError(f"{path}: storage {storage.key!r} holds {len(raw)} bytes but "
                                 f"the checkpoint declares {nbytes} (file truncated?)")
    itemsize = dtype.numpy.itemsize
    flat = np.frombuffer(raw, dtype=dtype.numpy.newbyteorder(byteorder),
                         count=len(raw) // itemsize)
    if 0 in size:
        out = np.zeros(size, dtype=dtype.numpy)
    else:
        needed = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
        if needed > flat.size:
            raise WeightsFormatError(
                f"{path}: storage {storage.key!r} has {flat.size} {dtype.name} elements but a "
                f"tensor of size {size} at offset {offset} needs {needed}")
        view = as_strided(flat[offset:], shape=size, strides=[s * itemsize for s in stride],
                          writeable=False)
        out = np.array(view, dtype=dtype.numpy, order="C")
    if dtype.bfloat16:
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def _unwrap(obj):
    """Descend into {'state_dict': ...} / {'model': ...} wrappers."""
    while isinstance(obj, dict):
        inner = next((obj[k] for k in ("state_dict", "model", "model_state_dict")
                      if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    return obj


def _flatten(obj, prefix, out):
    """Collect the _Tensors of nested dicts/lists under dotted names."""
    if isinstance(obj, _Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _flatten(value, f"{prefix}.{i}" if prefix else str(i), out)


def _load_zip(path, f):
    with zipfile.ZipFile(f) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise WeightsFormatError(f"{path}: a zip archive without exactly one "
                                     f"<folder>/data.pkl entry; not a torch.save checkpoint")
        top = pickles[0][:-len("data.pkl")]
        byteorder = "<"
        if top + "byteorder" in names:
            byteorder = "<" if archive.read(top + "byteorder").strip() == b"little" else ">"
        storages = {}
        with archive.open(pickles[0]) as stream:
            obj = _RestrictedUnpickler(stream, path, storages).load()
        cache = {}

        def data(key):
            if key not in cache:
                entry = f"{top}data/{key}"
                if entry not in names:
                    raise WeightsFormatError(f"{path}: storage record {entry!r} is missing")
                cache[key] = archive.read(entry)
            return cache[key]
        return _materialize(obj, path, lambda t: _array(t, data(t.storage.key), byteorder, path))


def _load_legacy(path, f):
    def load(storages=None):
        return _RestrictedUnpickler(f, path, storages, legacy=True).load()
    try:
        magic = load()
    except UnsafeCheckpointError:
        raise
    except Exception as exc:
        raise WeightsFormatError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor "
                                 f"a pickle stream: {type(exc).__name__}: {exc})") from exc
    if magic != LEGACY_MAGIC:
        raise WeightsFormatError(f"{path}: a pickle file without PyTorch's magic number; "
                                 "not a torch.save checkpoint")
    protocol = load()
    if protocol != LEGACY_PROTOCOL:
        raise WeightsFormatError(f"{path}: unsupported legacy protocol version {protocol!r}")
    sys_info = load()
    byteorder = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) \
        else ">"
    storages = {}
    obj = load(storages)
    data = {}
    for key in load():
        key = str(key)
        if key not in storages:
            raise WeightsFormatError(f"{path}: storage {key!r} is listed but no tensor uses it")
        header = f.read(8)
        if len(header) < 8:
            raise WeightsFormatError(f"{path}: file ends before the data of storage {key!r}")
        (count,) = struct.unpack(byteorder + "q", header)
        if count < 0:
            raise WeightsFormatError(f"{path}: storage {key!r} has a negative length")
        nbytes = count * storages[key].itemsize
        data[key] = f.read(nbytes)
        if len(data[key]) < nbytes:
            raise WeightsFormatError(f"{path}: storage {key!r} is cut short: {len(data[key])} "
                                     f"of {nbytes} bytes present (file truncated)")
    return _materialize(obj, path, lambda t: _array(t, data.get(t.storage.key, b""),
                                                    byteorder, path))


def _materialize(obj, path, to_array):
    tensors = {}
    _flatten(_unwrap(obj), "", tensors)
    if not tensors:
        raise WeightsFormatError(f"{path}: the checkpoint holds no tensors")
    state = {}
    for name, tensor in tensors.items():
        if name.startswith("module."):
            name = name[len("module."):]
        if name in state:
            raise WeightsFormatError(f"{path}: two tensors map to the name {name!r}")
        state[name] = to_array(tensor)
    return state


def read_torch_checkpoint(path):
    """Read a ``torch.save`` file of tensors into ``{name: numpy array}``.

    Wrappers ``{'state_dict': ...}``, ``{'model': ...}`` are unwrapped, nested
    dicts and lists are flattened with dotted names, non-tensor values (epoch
    numbers, accuracies) are dropped, and a leading ``module.`` (DataParallel)
    is removed from every name. bfloat16 tensors come back as float32.

    Raises UnsafeCheckpointError if the pickle names any global outside the
    tensor allowlist, WeightsFormatError if the file is truncated or corrupted.
    """
    path = str(path)
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        try:
            if head.startswith(b"PK"):
                return _load_zip(path, f)
            return _load_legacy(path, f)
        except (UnsafeCheckpointError, WeightsFormatError):
            raise
        except Exception as exc:  # corrupted pickles and archives fail in many ways
            raise WeightsFormatError(f"{path}: truncated or corrupted PyTorch checkpoint "
                                     f"({type(exc).__name__}: {exc})") from exc
