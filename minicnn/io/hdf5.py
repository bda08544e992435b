"""minicnn's own weights format: one self-describing HDF5 file per model.

Layout::

    /                       attributes:
        format              "minicnn-weights"
        format_version      1
        arch                e.g. "resnet50", "cifar_resnet20"
        variant             "caffe" | "torchvision" | "keras" | "cifar"
        num_classes         int
        labels              JSON list of class names (index = class)
        preprocessing       JSON object, see minicnn.images.Preprocessing
        source              JSON object: url, file, sha256, converted_from, ...
    /layers/<layer name>/   one group per layer with arrays, e.g. "res2a.branch2a"
        weight              conv (out, in, kh, kw); linear (out, in); BN gamma
        bias                (out,); BN beta
        running_mean        BN only
        running_var         BN only

Arrays are NCHW-ordered float32, each stored as one chunk with HDF5's
fletcher32 checksum filter, in the HDF5 1.8 file format, whose object headers
and superblock carry checksums too; attributes are fixed-length UTF-8 strings
and numbers, kept in the checksummed object header: damage to the file is
caught when it is read. (Files written before, with variable-length string
attributes and no filter, still load.)

Reading treats the file as hostile (see :mod:`minicnn.io.h5_checks`): only
h5py datasets and JSON strings are read, so loading never executes code;
links, external storage and virtual datasets are refused; every attribute is
validated (architecture a known name, ``num_classes`` a positive integer the
file can hold, JSON of bounded size and depth); datasets are checked against
the network's shapes before they are read; non-finite weights are refused.
"""
import json
import math
import os
import re

import h5py
import numpy as np

from .errors import WeightsFormatError, WeightsMismatchError, check_finite
from .files import atomic_output
from .h5_checks import ByteBudget, HeapGuard, child, damage_reported, members, read_dataset

FORMAT = "minicnn-weights"
FORMAT_VERSION = 1
JSON_ATTRIBUTES = ("labels", "preprocessing", "source")
MAX_CLASSES = 100_000
MAX_JSON_CHARS = 1 << 24
MAX_JSON_DEPTH = 32
MAX_IMAGE_SIDE = 8192
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def write_weights(path, state, metadata):
    """Write a state dict and its metadata; nothing is left behind on failure.

    ``state`` maps ``'<layer>.<key>'`` to arrays, ``metadata`` must hold at least
    ``arch``, ``variant`` and ``num_classes``.
    """
    for required in ("arch", "variant", "num_classes"):
        if required not in metadata:
            raise ValueError(f"weights metadata needs {required!r}; received {sorted(metadata)}")
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w", libver=("v108", "v108")) as f:
            f.attrs["format"] = _fixed(FORMAT)
            f.attrs["format_version"] = FORMAT_VERSION
            for key, value in metadata.items():
                if key in JSON_ATTRIBUTES:
                    f.attrs[key] = _fixed(json.dumps(value))
                elif value is not None:
                    f.attrs[key] = _fixed(value) if isinstance(value, str) else value
            layers = f.create_group("layers")
            for name, array in state.items():
                layer, _, key = name.rpartition(".")
                group = layers.require_group(layer)
                array = np.asarray(array, dtype=np.float32)
                if array.size:  # one chunk per array: checksummed, read in one piece
                    group.create_dataset(key, data=array, chunks=array.shape or None,
                                         fletcher32=array.ndim > 0)
                else:
                    group.create_dataset(key, data=array)
    return path


def _fixed(text):
    """A str as a fixed-length string attribute (stored in the object header, not in
    an unchecksummed global heap as variable-length strings are)."""
    return np.bytes_(text.encode("utf-8"))


def read_weights(path, expected=None):
    """Return ``(metadata, state)`` from a minicnn weights file.

    ``expected``, if given, is called with the validated metadata and returns
    ``{name: shape}`` of the arrays the file must hold: every dataset is then
    checked against it before it is read. Any problem with the file raises
    WeightsFormatError (WeightsMismatchError for missing or unexpected arrays).
    """
    f = _open(path)
    with f, damage_reported(path, "; download or convert it again"):
        metadata = _metadata(f, path)
        shapes = None
        if expected is not None:
            try:
                shapes = expected(metadata)
            except (KeyError, ValueError) as error:
                if isinstance(error, WeightsFormatError):
                    raise
                raise WeightsFormatError(f"{path}: arch {metadata['arch']!r} with variant "
                                         f"{metadata.get('variant')!r}: {error}") from None
        state = _arrays(f, path, shapes)
    return metadata, state


def _open(path):
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist") from None
    except (OSError, RuntimeError, ValueError) as error:
        raise WeightsFormatError(f"{path}: not a readable HDF5 file ({error}); was it truncated "
                                 "by a failed copy? Download or convert it again") from None


def _arrays(f, path, shapes):
    layers = child(f, "layers", path, "/")
    if not isinstance(layers, h5py.Group):
        raise WeightsFormatError(f"{path}: has no 'layers' group")
    budget, state, unexpected = ByteBudget(path), {}, []
    for layer, group in members(layers, path):
        if not isinstance(group, h5py.Group):
            raise WeightsFormatError(f"{path}: 'layers/{layer}' is a dataset, not a group of "
                                     "arrays")
        for key, dataset in members(group, path):
            name = f"{layer}.{key}"
            if not isinstance(dataset, h5py.Dataset):
                raise WeightsFormatError(f"{path}: 'layers/{layer}/{key}' is a group, not an "
                                         "array")
            if shapes is not None and name not in shapes:
                unexpected.append(name)
                continue
            label = f"layer {layer!r} array {key!r}"
            array = read_dataset(dataset, path, budget,
                                 None if shapes is None else shapes[name], label)
            state[name] = check_finite(array, path, label)
    missing = sorted(set(shapes) - set(state)) if shapes is not None else []
    if missing or unexpected:
        parts = [f"{label} {len(names)}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
                 for label, names in (("missing", missing), ("unexpected", sorted(unexpected)))
                 if names]
        raise WeightsMismatchError(f"{path}: weights do not match the network "
                                   f"({'; '.join(parts)})")
    return state


def _metadata(f, path):
    from ..models import get_builder
    attrs = HeapGuard(path).attrs(f)
    attrs = {key: _attribute(attrs, key, path) for key in attrs.keys()}
    if attrs.get("format") != FORMAT:
        raise WeightsFormatError(
            f"{path}: not a minicnn weights file (no format='{FORMAT}' attribute); "
            "convert foreign files first with: minicnn weights convert SRC DST")
    version = attrs.pop("format_version", 0)
    if not _is_int(version) or version < 0:
        raise WeightsFormatError(f"{path}: attribute 'format_version' is {version!r}, not a "
                                 "non-negative integer")
    if version > FORMAT_VERSION:
        raise WeightsFormatError(f"{path}: format version {version} is newer than this "
                                 f"minicnn reads ({FORMAT_VERSION}); upgrade minicnn")
    del attrs["format"]
    for key in ("arch", "num_classes"):
        if key not in attrs:
            raise WeightsFormatError(f"{path}: the file has no {key!r} attribute")
    arch, variant = attrs["arch"], attrs.get("variant")
    if not isinstance(arch, str):
        raise WeightsFormatError(f"{path}: attribute 'arch' is {arch!r}, not a name")
    try:
        builder = get_builder(arch)
    except ValueError as error:
        raise WeightsFormatError(f"{path}: attribute 'arch': {error}") from None
    if variant is not None and variant not in getattr(builder, "variants", (variant,)):
        raise WeightsFormatError(f"{path}: attribute 'variant' is {variant!r}; {arch} has "
                                 f"variants {', '.join(builder.variants)}")
    _check_classes(attrs["num_classes"], path)
    labels = attrs.get("labels")
    if labels is not None and (not isinstance(labels, list) or len(labels) != attrs["num_classes"]
                               or not all(isinstance(label, str) for label in labels)):
        raise WeightsFormatError(f"{path}: attribute 'labels' is not a list of "
                                 f"{attrs['num_classes']} class names")
    if "preprocessing" in attrs:
        _check_preprocessing(attrs["preprocessing"], path)
    if not isinstance(attrs.get("source", {}), dict):
        raise WeightsFormatError(f"{path}: attribute 'source' is not a JSON object")
    return attrs


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_classes(num_classes, path):
    """Bound num_classes before a network with that many outputs is allocated.

    The classifier's bias alone stores num_classes floats, so the file must be
    at least that big.
    """
    if not _is_int(num_classes) or not 1 <= num_classes <= MAX_CLASSES:
        raise WeightsFormatError(f"{path}: attribute 'num_classes' is {num_classes!r}; it must "
                                 f"be an integer from 1 to {MAX_CLASSES:,}")
    if 4 * num_classes > os.path.getsize(path):
        raise WeightsFormatError(f"{path}: attribute 'num_classes' is {num_classes:,}, more "
                                 "classes than the file has room for")


def _check_preprocessing(spec, path):
    def number(value, positive=False):
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value) and (value > 0 or not positive))

    def side(value):
        return _is_int(value) and 1 <= value <= MAX_IMAGE_SIDE
    problems = []
    if not isinstance(spec, dict):
        problems.append("it is not a JSON object")
    else:
        if spec.get("color", "RGB") not in ("RGB", "BGR"):
            problems.append("'color' must be RGB or BGR")
        if not number(spec.get("scale", 1.0), positive=True):
            problems.append("'scale' must be a positive number")
        for key, positive in (("mean", False), ("std", True)):
            values = spec.get(key, [1.0] * 3)
            if not (isinstance(values, list) and len(values) == 3
                    and all(number(v, positive) for v in values)):
                problems.append(f"{key!r} must be three {'positive ' if positive else ''}numbers")
        for key in ("resize", "crop"):
            if spec.get(key) is not None and not side(spec[key]):
                problems.append(f"{key!r} must be null or an integer from 1 to {MAX_IMAGE_SIDE}")
        size = spec.get("input_size", [1, 1])
        if not (isinstance(size, list) and len(size) == 2 and all(map(side, size))):
            problems.append(f"'input_size' must be two integers from 1 to {MAX_IMAGE_SIDE}")
    if problems:
        raise WeightsFormatError(f"{path}: attribute 'preprocessing': {'; '.join(problems)}")


def _attribute(attrs, key, path):
    value = attrs[key]
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufSUO" or value.size > MAX_CLASSES:
            raise WeightsFormatError(f"{path}: attribute {key!r} has an unsupported type")
        value = [_decoded(v, key, path) for v in value.ravel().tolist()]
    else:
        value = _decoded(value, key, path)
    if isinstance(value, np.generic):
        value = value.item()
    if key in JSON_ATTRIBUTES:
        return _json(value, key, path)
    return value


def _decoded(value, key, path):
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise WeightsFormatError(f"{path}: attribute {key!r} is not UTF-8 text") from None
    return value


def _json(text, key, path):
    """Parse a JSON attribute of bounded size and nesting depth."""
    if not isinstance(text, str):
        raise WeightsFormatError(f"{path}: attribute {key!r} is not a JSON string")
    if len(text) > MAX_JSON_CHARS:
        raise WeightsFormatError(f"{path}: attribute {key!r} is {len(text):,} characters of "
                                 "JSON; refused as too long")
    brackets = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8", "replace"), np.uint8)
    steps = (np.isin(brackets, (ord("["), ord("{"))).astype(np.int64)
             - np.isin(brackets, (ord("]"), ord("}"))))
    if steps.size and np.cumsum(steps).max() > MAX_JSON_DEPTH:
        raise WeightsFormatError(f"{path}: attribute {key!r} nests JSON more than "
                                 f"{MAX_JSON_DEPTH} levels deep; refused")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise WeightsFormatError(f"{path}: attribute {key!r} is not valid JSON") from None
