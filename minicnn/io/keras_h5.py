"""Read the layer weights of a Keras HDF5 file (Keras 1, Keras 2, tf.keras).

Layout written by ``model.save_weights('x.h5')`` (and, under the group
``model_weights``, by ``model.save('x.h5')``)::

    /                          attrs: layer_names = [b'conv1', b'bn_conv1', ...]
    /<layer>/                  attrs: weight_names = [b'<weight name>', ...]
    /<layer>/<weight name>     one dataset per weight, in weight_names order

* Keras 1 (e.g. the original ``resnet50_weights_tf_dim_ordering_tf_kernels.h5``)
  names a weight ``<layer>_<short>:0`` and stores it directly in the layer
  group: ``res2a_branch2a_W:0``, ``bn2a_branch2a_running_std:0``.
* Keras 2 / tf.keras names it ``<layer>/<short>:0``, so the dataset sits one
  group deeper: ``/conv1_conv/conv1_conv/kernel:0``.
* A list attribute too large for one HDF5 attribute (64 KiB) is split into
  ``layer_names0``, ``layer_names1``, ... (likewise ``weight_names<k>``), to be
  concatenated in order.

Short names are what is left of a weight name after removing the path, the
``:<n>`` suffix and the ``<layer>_`` prefix: ``W``, ``b``, ``gamma``, ``beta``,
``running_mean``, ``running_std`` (Keras 1) or ``kernel``, ``bias``,
``moving_mean``, ``moving_variance`` (Keras 2). Arrays are returned as stored:
conv kernels (kh, kw, in, out), dense kernels (in, out).

The file is treated as hostile (see :mod:`minicnn.io.h5_checks`): names are
resolved through hard links only, external storage and virtual datasets are
refused, each dataset must be a float array whose declared size the file can
hold before it is read, and non-finite weights are refused.
"""
import re

import h5py
import numpy as np

from .errors import WeightsFormatError, check_finite
from .h5_checks import ByteBudget, HeapGuard, damage_reported, read_dataset, walk

MAX_DIMS = 8


def _names(group, attr, path, guard):
    """A list-of-strings attribute, joined from its numbered chunks if split."""
    attrs = guard.attrs(group)
    if attr in attrs:
        values = list(np.atleast_1d(attrs[attr]))
    else:
        values, chunk = [], 0
        while f"{attr}{chunk}" in attrs:
            values.extend(np.atleast_1d(attrs[f"{attr}{chunk}"]))
            chunk += 1
        if chunk == 0:
            return None
    names = []
    for value in values:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf8")
            except UnicodeDecodeError:
                raise WeightsFormatError(f"{path}: attribute {attr!r} of {group.name!r} holds "
                                         f"a name that is not UTF-8 text: {value[:40]!r}") from None
        elif not isinstance(value, str):
            raise WeightsFormatError(f"{path}: attribute {attr!r} of {group.name!r} holds "
                                     f"{type(value).__name__} values, not names")
        names.append(value)
    return names


def _short_name(weight_name, layer):
    short = re.sub(r":\d+$", "", weight_name.rsplit("/", 1)[-1])
    if short.startswith(layer + "_") and len(short) > len(layer) + 1:
        short = short[len(layer) + 1:]
    return short


def read_keras_h5(path):
    """Return ``{layer name: {short weight name: array}}`` in the file's layer order.

    Layers without weights (activations, pooling, ...) are left out. Raises
    WeightsFormatError when the file is not HDF5, is not a Keras weights file,
    or lists a weight whose dataset is missing.
    """
    path = str(path)
    open(path, "rb").close()  # a missing file raises FileNotFoundError, not a format error
    try:
        if not h5py.is_hdf5(path):
            raise WeightsFormatError(f"{path}: not an HDF5 file")
        f = h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError) as exc:
        if isinstance(exc, WeightsFormatError):
            raise
        raise WeightsFormatError(f"{path}: cannot open as HDF5 ({exc})") from None
    with damage_reported(path), f:  # closing a damaged file can fail too
        return _read_layers(f, path)


def _read_layers(f, path):
    root, guard = f, HeapGuard(path)
    if _names(f, "layer_names", path, guard) is None:
        wrapped = walk(f, "model_weights", path)
        if isinstance(wrapped, h5py.Group):
            root = wrapped
    layer_names = _names(root, "layer_names", path, guard)
    if layer_names is None:
        hint = (" (it looks like the Keras 3 '.weights.h5' layout, which is not read here)"
                if isinstance(walk(f, "layers", path), h5py.Group) else "")
        raise WeightsFormatError(
            f"{path}: an HDF5 file without a 'layer_names' attribute (at the root or in "
            f"'model_weights'); not a Keras 1/2 weights file{hint}")
    layers, budget = {}, ByteBudget(path)
    for layer in layer_names:
        group = walk(root, layer, path)
        if not isinstance(group, h5py.Group):
            raise WeightsFormatError(f"{path}: layer {layer!r} is listed in layer_names "
                                     "but has no group")
        weight_names = _names(group, "weight_names", path, guard) or []
        weights = {}
        for weight_name in weight_names:
            dataset = walk(group, weight_name, path)
            if dataset is None:
                raise WeightsFormatError(
                    f"{path}: layer {layer!r} lists weight {weight_name!r} but the file "
                    "has no such dataset")
            if not isinstance(dataset, h5py.Dataset):
                raise WeightsFormatError(f"{path}: {layer}/{weight_name} is not a dataset")
            if dataset.ndim > MAX_DIMS:
                raise WeightsFormatError(f"{path}: weight {weight_name!r} of layer {layer!r} "
                                         f"has {dataset.ndim} dimensions")
            short = _short_name(weight_name, layer)
            if short in weights:
                short = weight_name
            label = f"weight {weight_name!r} of layer {layer!r}"
            weights[short] = check_finite(read_dataset(dataset, path, budget, label=label),
                                          path, label)
        if weights:
            layers[layer] = weights
    return layers
