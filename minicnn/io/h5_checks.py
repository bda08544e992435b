"""Reading an HDF5 file that may be hostile: nothing from outside it, nothing unbounded.

HDF5 can make a dataset's bytes come from elsewhere: *external storage* (raw
bytes of any file, e.g. ``/etc/passwd`` or ``/dev/urandom``), *virtual datasets*
(mapped from other HDF5 files), *external links* and *soft links* (names that
resolve into another file, or anywhere in this one). A weights file needs none
of these, so every name is resolved one hard link at a time and every dataset
is checked before a byte of it is read:

* its layout is contiguous, chunked or compact, with no external files;
* its filters are ones HDF5 ships (deflate, shuffle, fletcher32) or h5py's lzf,
  so no filter plugin is ever looked up;
* its dtype is a plain float and its shape is the expected one (when known);
* its size fits the budget the caller keeps (:class:`ByteBudget`), a small
  multiple of the file's size: declared sizes are bounded before anything is
  allocated, so a dataset that claims a gigabyte (unallocated space reads as
  fill values; deflated zeros shrink a thousandfold) is refused unread.

Variable-length attributes keep their values in *global heap collections*,
which carry no checksum, and HDF5 (2.0 included) loops forever on a collection
holding a zero-size object before its end. :class:`HeapGuard` walks every
collection of such a file the way HDF5 will, before any variable-length value
is read. (minicnn writes fixed-length attributes, so its files need no walk.)
"""
import mmap
import os
from contextlib import contextmanager

import h5py
import numpy as np

from .errors import WeightsFormatError


@contextmanager
def damage_reported(path, advice=""):
    """Turn the many ways h5py and HDF5 report a damaged file into one WeightsFormatError
    (``advice`` is appended to its message); a WeightsFormatError passes unchanged."""
    try:
        yield
    except WeightsFormatError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError,
            IndexError) as error:
        raise WeightsFormatError(f"{path}: corrupted HDF5 file ({type(error).__name__}: "
                                 f"{error}){advice}") from None

ALLOWED_FILTERS = {h5py.h5z.FILTER_DEFLATE: "deflate", h5py.h5z.FILTER_SHUFFLE: "shuffle",
                   h5py.h5z.FILTER_FLETCHER32: "fletcher32", 32000: "lzf"}
LAYOUTS = {h5py.h5d.COMPACT: "compact", h5py.h5d.CONTIGUOUS: "contiguous",
           h5py.h5d.CHUNKED: "chunked", h5py.h5d.VIRTUAL: "virtual"}
FLOAT_DTYPES = (np.dtype("<f2"), np.dtype("<f4"), np.dtype("<f8"),
                np.dtype(">f2"), np.dtype(">f4"), np.dtype(">f8"))


class ByteBudget:
    """How many bytes the datasets of one file may materialize in all.

    ``factor`` times the file's size plus ``slack``: an uncompressed file holds
    at least the bytes of its arrays, so valid files stay well inside it.
    """

    def __init__(self, path, factor=2, slack=1 << 20):
        self.path = path
        self.left = factor * os.path.getsize(path) + slack

    def take(self, nbytes, what):
        if nbytes > self.left:
            raise WeightsFormatError(
                f"{self.path}: {what} declares {nbytes:,} bytes, more than the file "
                f"({os.path.getsize(self.path):,} bytes) can hold; refused before reading "
                "(crafted or corrupted file)")
        self.left -= nbytes


GCOL = b"GCOL\x01\x00\x00\x00"  # signature, version 1, reserved


class HeapGuard:
    """Checks a file's global heap collections once, before the first variable-length
    attribute of it is read."""

    def __init__(self, path):
        self.path, self.checked = path, False

    def attrs(self, obj):
        """``obj.attrs``, after the global heaps were checked if any of them is variable-length."""
        attrs = obj.attrs
        if not self.checked and any(attrs.get_id(key).dtype.hasobject for key in attrs.keys()):
            self.check()
        return attrs

    def check(self):
        self.checked = True
        with open(self.path, "rb") as f:
            if os.fstat(f.fileno()).st_size < len(GCOL):
                return
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                start = data.find(GCOL)
                while start >= 0:
                    self._collection(data, start)
                    start = data.find(GCOL, start + 1)

    def _collection(self, data, start):
        """Walk one collection's objects as HDF5 does; each must move the walk forward
        and stay inside the collection."""
        end = start + int.from_bytes(data[start + 8:start + 16], "little")
        position = start + 16
        while position + 16 <= min(end, len(data)):
            index = int.from_bytes(data[position:position + 2], "little")
            size = int.from_bytes(data[position + 8:position + 16], "little")
            step = 16 + (size + 7) // 8 * 8 if index else size
            if step == 0 or position + step > end:
                raise WeightsFormatError(
                    f"{self.path}: corrupted HDF5 global heap at byte {start} (object {index} "
                    f"of {size:,} bytes at byte {position}); refused, as HDF5 would loop or "
                    "read outside the heap")
            position += step


def child(group, name, path, where):
    """``group[name]`` reached through a hard link only; None if there is no such name.

    Soft, external and user-defined links are refused, naming the link and its target.
    """
    try:
        link = group.get(name, getlink=True)
    except (KeyError, ValueError, TypeError, UnicodeError):
        return None
    if link is None:
        return None
    full = f"{where}/{name}".replace("//", "/")
    if isinstance(link, h5py.SoftLink):
        raise WeightsFormatError(f"{path}: {full!r} is a soft link to {link.path!r}; weights "
                                 "files must hold their arrays directly (links are refused)")
    if isinstance(link, h5py.ExternalLink):
        raise WeightsFormatError(
            f"{path}: {full!r} is an external link to {link.path!r} in {link.filename!r}; "
            "weights are never read from outside the file (external links are refused)")
    if not isinstance(link, h5py.HardLink):
        raise WeightsFormatError(f"{path}: {full!r} is a {type(link).__name__}, not a plain "
                                 "group or dataset; refused")
    return group[name]


def walk(group, relative, path):
    """Resolve a ``/``-separated name below ``group`` one hard link at a time."""
    node, where = group, group.name
    for part in relative.split("/"):
        if part in ("", "."):
            continue
        if not isinstance(node, h5py.Group):
            raise WeightsFormatError(f"{path}: {where!r} is a dataset, not a group")
        node = child(node, part, path, where)
        if node is None:
            return None
        where = f"{where}/{part}".replace("//", "/")
    return node


def members(group, path):
    """The (name, object) pairs of a group, each reached through a hard link."""
    return [(name, child(group, name, path, group.name)) for name in group.keys()]


def read_dataset(dataset, path, budget, shape=None, label=None):
    """Check a dataset's storage, filters, dtype, shape and size, then read it.

    ``label`` names the dataset in messages (default: its HDF5 path).
    """
    name = label or f"dataset {dataset.name!r}"
    plist = dataset.id.get_create_plist()
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise WeightsFormatError(f"{path}: {name} is a virtual dataset (its data "
                                 "would come from other files); refused")
    if layout not in LAYOUTS:
        raise WeightsFormatError(f"{path}: {name} has an unknown layout {layout}")
    if plist.get_external_count():
        target = plist.get_external(0)[0].decode("utf-8", "replace")
        raise WeightsFormatError(
            f"{path}: {name} keeps its data in the external file {target!r}; weights "
            "are never read from outside the file (external storage is refused)")
    for index in range(plist.get_nfilters()):
        code = plist.get_filter(index)[0]
        if code not in ALLOWED_FILTERS:
            raise WeightsFormatError(f"{path}: {name} uses HDF5 filter {code}, which "
                                     "minicnn does not read (deflate, shuffle, fletcher32, lzf)")
    dtype = dataset.dtype
    if dataset.shape is None:
        raise WeightsFormatError(f"{path}: {name} has no dataspace (an empty dataset)")
    if dtype not in FLOAT_DTYPES:
        raise WeightsFormatError(f"{path}: {name} has dtype {dtype}; weights are "
                                 "16-, 32- or 64-bit floats")
    if shape is not None and tuple(dataset.shape) != tuple(shape):
        raise WeightsFormatError(
            f"{path}: {name}: the network expects shape {tuple(shape)} but the file "
            f"holds {tuple(dataset.shape)}")
    budget.take(int(np.prod(dataset.shape, dtype=object)) * dtype.itemsize, name)
    array = np.asarray(dataset[()])
    return array if array.dtype.isnative else array.astype(dtype.newbyteorder("="))
