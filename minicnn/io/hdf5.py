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

Arrays are NCHW-ordered float32. Reading uses h5py datasets and JSON strings
only, so loading a weights file never executes code from it.
"""
import json

import h5py
import numpy as np

from .errors import WeightsFormatError
from .files import atomic_output

FORMAT = "minicnn-weights"
FORMAT_VERSION = 1
JSON_ATTRIBUTES = ("labels", "preprocessing", "source")


def write_weights(path, state, metadata):
    """Write a state dict and its metadata; nothing is left behind on failure.

    ``state`` maps ``'<layer>.<key>'`` to arrays, ``metadata`` must hold at least
    ``arch``, ``variant`` and ``num_classes``.
    """
    for required in ("arch", "variant", "num_classes"):
        if required not in metadata:
            raise ValueError(f"weights metadata needs {required!r}; received {sorted(metadata)}")
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            for key, value in metadata.items():
                if key in JSON_ATTRIBUTES:
                    f.attrs[key] = json.dumps(value)
                elif value is not None:
                    f.attrs[key] = value
            layers = f.create_group("layers")
            for name, array in state.items():
                layer, _, key = name.rpartition(".")
                group = layers.require_group(layer)
                group.create_dataset(key, data=np.asarray(array, dtype=np.float32))
    return path


def _attribute(f, key, path):
    value = f.attrs[key]
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if key in JSON_ATTRIBUTES:
        try:
            return json.loads(value)
        except (TypeError, ValueError):
            raise WeightsFormatError(f"{path}: attribute {key!r} is not valid JSON") from None
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_weights(path):
    """Return ``(metadata, state)`` from a minicnn weights file."""
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist") from None
    except OSError as error:
        raise WeightsFormatError(f"{path}: not a readable HDF5 file ({error}); was it truncated "
                                 "by a failed copy? Download or convert it again") from None
    with f:
        if f.attrs.get("format") not in (FORMAT, FORMAT.encode()):
            raise WeightsFormatError(
                f"{path}: not a minicnn weights file (no format='{FORMAT}' attribute); "
                "convert foreign files first with: minicnn weights convert SRC DST")
        version = int(f.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise WeightsFormatError(f"{path}: format version {version} is newer than this "
                                     f"minicnn reads ({FORMAT_VERSION}); upgrade minicnn")
        metadata = {key: _attribute(f, key, path) for key in f.attrs
                    if key not in ("format", "format_version")}
        if "layers" not in f:
            raise WeightsFormatError(f"{path}: has no 'layers' group")
        state = {}
        try:
            for layer, group in f["layers"].items():
                for key, dataset in group.items():
                    state[f"{layer}.{key}"] = dataset[()]
        except OSError as error:
            raise WeightsFormatError(f"{path}: a dataset could not be read ({error}); the file "
                                     "is corrupted, download or convert it again") from None
    return metadata, state
