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

The file is treated as hostile, and the work and memory of a read are bounded
by its size:

* pickles are scanned before they are unpickled: a memo index beyond the
  pickle's length (which would make the unpickler allocate a memo table of
  that size) is refused;
* a storage may declare at most the bytes the file can hold (twice its size
  plus 1 MiB, which leaves room for deflated zip entries but not for bombs);
  zip entries must hold exactly the bytes their storage declares and are read
  whole, so their CRCs are checked; a byteorder other than little or big is
  refused;
* each storage is read once and every C-contiguous tensor on it is a view of
  it (shared storages stay shared, as in torch), so repeated references cost
  nothing; other tensors are copied, within the same byte budget; a tensor may
  not span more elements than its storage holds (no stride-0 giants);
* containers are flattened with cycle detection, a depth limit and a limit on
  the entries visited (shared sub-containers cannot multiply the work);
* non-finite floats are refused, naming the tensor.
"""
import collections
import io
import os
import pickle
import pickletools
import struct
import zipfile

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .errors import UnsafeCheckpointError, WeightsFormatError, check_finite

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_DEPTH = 64
MAX_ENTRIES = 100_000
MAX_NAME = 4096
MEMO_OPCODES = ("PUT", "BINPUT", "LONG_BINPUT")

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

    def __init__(self, file, path, storages=None, legacy=False, max_bytes=0):
        super().__init__(file)
        self.path, self.storages, self.legacy = path, storages, legacy
        self.max_bytes = max_bytes
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
            storage = _Storage(key, storage_type.dtype, numel)
            if numel * storage.itemsize > self.max_bytes:
                raise WeightsFormatError(
                    f"{self.path}: storage {key!r} declares {numel * storage.itemsize:,} bytes, "
                    "more than the file can hold; refused before reading (crafted or corrupted)")
            self.storages[key] = storage
        root = self.storages[key]
        view = pid[5] if self.legacy else None
        if view is None:
            return root
        if not isinstance(view, tuple) or len(view) != 3:
            raise WeightsFormatError(f"{self.path}: malformed storage view {view!r}")
        view_key, offset, view_numel = view
        if not all(isinstance(v, int) and v >= 0 for v in (offset, view_numel)) \
                or offset + view_numel > root.numel:
            raise WeightsFormatError(f"{self.path}: malformed storage view {view!r} of a "
                                     f"storage of {root.numel} elements")
        return _Storage(key, root.dtype, view_numel, offset * root.itemsize)


def _unpickle(stream, path, storages=None, legacy=False, max_bytes=0, memo_limit=0):
    """Scan the pickle at the stream's position, then unpickle it with the allowlist.

    The scan refuses memo indices above ``memo_limit``: the unpickler sizes its
    memo table by the largest index, so a ten-byte pickle could otherwise ask
    for gigabytes.
    """
    start = stream.tell()
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name in MEMO_OPCODES and arg > memo_limit:
            raise WeightsFormatError(f"{path}: a pickle memo index of {arg:,} in a file of "
                                     f"{memo_limit:,} bytes (crafted file); refused")
    stream.seek(start)
    return _RestrictedUnpickler(stream, path, storages, legacy, max_bytes).load()


class _StorageArrays:
    """Each storage read once, as a flat writeable array of the dtype its tensors use."""

    def __init__(self, path, read, byteorder):
        self.path, self.read, self.byteorder = path, read, byteorder
        self.flat = {}

    def get(self, storage, dtype, name):
        key = (storage.key, storage.byte_offset, storage.numel, dtype.name)
        if key not in self.flat:
            nbytes = storage.numel * storage.itemsize
            raw = self.read(storage.key)[storage.byte_offset:storage.byte_offset + nbytes]
            if len(raw) < nbytes:
                raise WeightsFormatError(
                    f"{self.path}: storage {storage.key!r} holds {len(raw)} bytes but the "
                    f"checkpoint declares {nbytes} (file truncated?)")
            itemsize = dtype.numpy.itemsize
            flat = np.frombuffer(raw, dtype.numpy.newbyteorder(self.byteorder),
                                 count=len(raw) // itemsize)
            if dtype.bfloat16:
                flat = (flat.astype(np.uint32) << 16).view(np.float32)
            elif not flat.flags.writeable or self.byteorder != "<":
                flat = flat.astype(dtype.numpy)
            self.flat[key] = check_finite(flat, self.path, f"tensor {name!r}")
        return self.flat[key]


def _array(tensor, flat, path, name, budget):
    """The tensor as a C-contiguous array: a view of ``flat`` (its storage) if it is
    contiguous there, else a copy whose bytes are taken from ``budget``."""
    dtype = tensor.dtype
    size, stride, offset = tuple(tensor.size), tuple(tensor.stride), tensor.offset
    if not all(isinstance(v, int) and v >= 0 for v in size + stride + (offset,)) \
            or len(size) != len(stride) or len(size) > 32:
        raise WeightsFormatError(f"{path}: tensor {name!r}: malformed tensor geometry size={size} "
                                 f"stride={stride} offset={offset}")
    if 0 in size:
        return np.zeros(size, dtype=flat.dtype)
    needed = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if needed > flat.size:
        raise WeightsFormatError(
            f"{path}: storage {tensor.storage.key!r} has {flat.size} {dtype.name} elements but a "
            f"tensor of size {size} at offset {offset} needs {needed}")
    numel = int(np.prod(size, dtype=object))
    if numel > flat.size:
        raise WeightsFormatError(
            f"{path}: tensor {name!r} of size {size} and stride {stride} spans {numel:,} "
            f"elements but its storage holds {flat.size:,} (overlapping or stride-0 view); "
            "refused")
    view = as_strided(flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride])
    if view.flags.c_contiguous:
        return view
    if view.nbytes > budget[0]:
        raise WeightsFormatError(f"{path}: copying the strided tensors up to {name!r} needs "
                                 "more bytes than the file holds; refused")
    budget[0] -= view.nbytes
    return np.ascontiguousarray(view)


def _unwrap(obj, path):
    """Descend into {'state_dict': ...} / {'model': ...} wrappers."""
    seen = set()
    while isinstance(obj, dict):
        if id(obj) in seen:
            raise WeightsFormatError(f"{path}: the checkpoint's wrappers ('state_dict', 'model') "
                                     "contain themselves (a reference cycle); refused")
        seen.add(id(obj))
        inner = next((obj[k] for k in ("state_dict", "model", "model_state_dict")
                      if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    return obj


def _flatten(obj, path, max_entries):
    """Collect the _Tensors of nested dicts/lists under dotted names.

    Refuses reference cycles, nesting deeper than MAX_DEPTH, names longer than
    MAX_NAME characters and more than ``max_entries`` visits in all (shared
    sub-containers would otherwise multiply the work).
    """
    out, on_path, visits = {}, set(), [0]

    def visit(node, prefix, depth):
        visits[0] += 1
        if visits[0] > max_entries:
            raise WeightsFormatError(f"{path}: flattening the checkpoint visits more than "
                                     f"{max_entries:,} entries (shared containers repeated); "
                                     "refused")
        if isinstance(node, _Tensor):
            out[prefix] = node
            return
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, (list, tuple)):
            items = list(enumerate(node))
        else:
            return
        if id(node) in on_path:
            raise WeightsFormatError(f"{path}: the container at {prefix or '<top>'!r} contains "
                                     "itself (a reference cycle); refused")
        if depth >= MAX_DEPTH:
            raise WeightsFormatError(f"{path}: containers nested more than {MAX_DEPTH} deep at "
                                     f"{prefix[:80]!r}; refused")
        on_path.add(id(node))
        for key, value in items:
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                continue  # not part of a state dict's names
            name = f"{prefix}.{key}" if prefix else str(key)
            if len(name) > MAX_NAME:
                raise WeightsFormatError(f"{path}: a tensor name longer than {MAX_NAME} "
                                         f"characters ({name[:60]!r}...); refused")
            visit(value, name, depth + 1)
        on_path.discard(id(node))
    visit(obj, "", 0)
    return out


def _entry(archive, name, limit, path):
    """A zip entry read whole (so its CRC is checked), if its size is within ``limit``."""
    info = archive.getinfo(name)
    if info.file_size > limit:
        raise WeightsFormatError(f"{path}: zip entry {name!r} declares {info.file_size:,} "
                                 f"bytes, more than the file can hold; refused before inflating")
    return archive.read(info)


def _load_zip(path, f, max_bytes):
    with zipfile.ZipFile(f) as archive:
        names = set(archive.namelist())
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise WeightsFormatError(f"{path}: a zip archive without exactly one "
                                     f"<folder>/data.pkl entry; not a torch.save checkpoint")
        top = pickles[0][:-len("data.pkl")]
        byteorder = "<"
        if top + "byteorder" in names:
            order = _entry(archive, top + "byteorder", 16, path).strip()
            if order not in (b"little", b"big"):
                raise WeightsFormatError(f"{path}: unknown byte order {order[:16]!r} in "
                                         f"{top}byteorder (expected b'little' or b'big')")
            byteorder = "<" if order == b"little" else ">"
        data = _entry(archive, pickles[0], max_bytes, path)
        storages = {}
        obj = _unpickle(io.BytesIO(data), path, storages, max_bytes=max_bytes,
                        memo_limit=len(data))
        budget, cache = [max_bytes], {}

        def read(key):
            if key not in cache:
                entry = f"{top}data/{key}"
                if entry not in names:
                    raise WeightsFormatError(f"{path}: storage record {entry!r} is missing")
                declared = storages[key].numel * storages[key].itemsize
                size = archive.getinfo(entry).file_size
                if size != declared:
                    raise WeightsFormatError(f"{path}: storage {key!r} holds {size} bytes but "
                                             f"the checkpoint declares {declared}")
                if declared > budget[0]:
                    raise WeightsFormatError(f"{path}: the storages declare more bytes than "
                                             "the file can hold; refused before inflating")
                budget[0] -= declared
                cache[key] = _entry(archive, entry, declared, path)
            return cache[key]
        return _materialize(obj, path, _StorageArrays(path, read, byteorder), len(data),
                            max_bytes)


def _load_legacy(path, f, max_bytes):
    buf = bytearray(os.fstat(f.fileno()).st_size)  # writeable: storages are views of it
    buf = buf[:f.readinto(buf)]
    stream, view = io.BytesIO(buf), memoryview(buf)

    def load(storages=None):
        return _unpickle(stream, path, storages, legacy=True, max_bytes=max_bytes,
                         memo_limit=len(buf))
    try:
        magic = load()
    except UnsafeCheckpointError:
        raise
    except Exception as exc:
        raise WeightsFormatError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor "
                                 f"a pickle stream: {type(exc).__name__}: {exc})") from None
    if magic != LEGACY_MAGIC:
        raise WeightsFormatError(f"{path}: a pickle file without PyTorch's magic number; "
                                 "not a torch.save checkpoint")
    protocol = load()
    if protocol != LEGACY_PROTOCOL:
        raise WeightsFormatError(f"{path}: unsupported legacy protocol version {protocol!r}")
    sys_info = load()
    little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else None
    if little not in (True, False):
        raise WeightsFormatError(f"{path}: unknown byte order in the checkpoint's system "
                                 f"information ({little!r} for 'little_endian')")
    byteorder = "<" if little else ">"
    storages = {}
    obj = load(storages)
    keys = load()
    if not isinstance(keys, (list, tuple)):
        raise WeightsFormatError(f"{path}: the list of storage keys is a {type(keys).__name__}")
    data, pos = {}, stream.tell()
    for key in keys:
        key = str(key)
        if key not in storages:
            raise WeightsFormatError(f"{path}: storage {key!r} is listed but no tensor uses it")
        if key in data:
            raise WeightsFormatError(f"{path}: storage {key!r} is listed twice")
        if pos + 8 > len(buf):
            raise WeightsFormatError(f"{path}: file ends before the data of storage {key!r}")
        (count,) = struct.unpack(byteorder + "q", view[pos:pos + 8])
        if count < 0:
            raise WeightsFormatError(f"{path}: storage {key!r} has a negative length")
        nbytes = count * storages[key].itemsize
        if pos + 8 + nbytes > len(buf):
            raise WeightsFormatError(f"{path}: storage {key!r} is cut short: "
                                     f"{len(buf) - pos - 8} of {nbytes} bytes present "
                                     "(file truncated)")
        data[key], pos = view[pos + 8:pos + 8 + nbytes], pos + 8 + nbytes
    return _materialize(obj, path, _StorageArrays(path, lambda key: data.get(key, b""),
                                                  byteorder), len(buf), max_bytes)


def _materialize(obj, path, storages, pickle_bytes, max_bytes):
    tensors = _flatten(_unwrap(obj, path), path, MAX_ENTRIES + pickle_bytes)
    if not tensors:
        raise WeightsFormatError(f"{path}: the checkpoint holds no tensors")
    state, arrays, budget = {}, {}, [max_bytes]
    for name, tensor in tensors.items():
        if name.startswith("module."):
            name = name[len("module."):]
        if name in state:
            raise WeightsFormatError(f"{path}: two tensors map to the name {name!r}")
        if id(tensor) not in arrays:  # one tensor referenced many times: one array
            if not isinstance(tensor.dtype, _DType):
                raise WeightsFormatError(f"{path}: tensor {name!r} has an unsupported dtype "
                                         f"{tensor.dtype!r}")
            flat = storages.get(tensor.storage, tensor.dtype, name)
            arrays[id(tensor)] = _array(tensor, flat, path, name, budget)
        state[name] = arrays[id(tensor)]
    return state


def read_torch_checkpoint(path):
    """Read a ``torch.save`` file of tensors into ``{name: numpy array}``.

    Wrappers ``{'state_dict': ...}``, ``{'model': ...}`` are unwrapped, nested
    dicts and lists are flattened with dotted names, non-tensor values (epoch
    numbers, accuracies) are dropped, and a leading ``module.`` (DataParallel)
    is removed from every name. bfloat16 tensors come back as float32. Arrays
    are read-only views of their storages (tensors sharing a storage share
    memory, as in torch).

    Raises UnsafeCheckpointError if the pickle names any global outside the
    tensor allowlist, WeightsFormatError if the file is truncated, corrupted
    or crafted (see the module docstring for the bounds).
    """
    path = str(path)
    max_bytes = 2 * os.path.getsize(path) + (1 << 20)
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        try:
            if head.startswith(b"PK"):
                return _load_zip(path, f, max_bytes)
            return _load_legacy(path, f, max_bytes)
        except (UnsafeCheckpointError, WeightsFormatError):
            raise
        except MemoryError:
            raise WeightsFormatError(f"{path}: reading the checkpoint ran out of memory; it "
                                     "declares more data than it holds (crafted?)") from None
        except Exception as exc:  # corrupted pickles and archives fail in many ways
            raise WeightsFormatError(f"{path}: truncated or corrupted PyTorch checkpoint "
                                     f"({type(exc).__name__}: {exc})") from None
