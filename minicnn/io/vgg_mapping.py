"""Map foreign VGG-16/19 weights (torchvision, Keras, Caffe) onto minicnn's names.

Each converter takes what a reader returned and an optional ``arch`` ('vgg16',
'vgg19' or the depth); without it the depth is inferred by counting the
file's convolutions (:func:`~minicnn.io.vgg_names.infer_vgg_arch`). The
names and shapes come from :mod:`minicnn.io.vgg_names`; as for the ResNets
(:mod:`minicnn.io.mapping`), every converter checks its result and names the
foreign entry that is missing, left over or of the wrong shape.
"""
import re

import numpy as np

from .errors import WeightsFormatError
from .mapping import _gather, _take
from .vgg_names import POOL5_SIZE, foreign_name, vgg_depth, vgg_layers, vgg_state_shapes


def _vgg_convert(depth, fetch, source, unused):
    """Run ``fetch(layer, kind, position) -> {'weight': (foreign name, array), 'bias':
    (...)}`` (arrays in minicnn's layout) over VGG's layers, then check every shape.

    The widths are read from the file (conv<b>_1's outputs and fc6's); every
    other shape follows from them, so a file whose layers do not chain is
    refused here, naming the foreign layer, and one whose widths are not the
    published ones is refused when loaded into the network.
    """
    entries = ((f"{layer}.{key}", foreign, value) for layer, kind, position in vgg_layers(depth)
               for key, (foreign, value) in fetch(layer, kind, position).items())
    state, origin = _gather(entries, source, unused, f"VGG-{depth}")
    def rows(key):  # a 0-d array has none, and fails the check below by name
        return state[key].shape[0] if state[key].ndim else 0
    channels = tuple(rows(f"conv{block}_1.weight") for block in range(1, 6))
    hidden, num_classes = rows("fc6.weight"), rows("fc8.weight")
    for key, shape in vgg_state_shapes(depth, num_classes, channels, hidden).items():
        if state[key].shape != shape:
            raise WeightsFormatError(f"minicnn {key!r} should have shape {shape} but {source} "
                                     f"{origin[key]!r} gives {state[key].shape}")
    return state


def torchvision_vgg_to_minicnn(state, arch=None):
    """torchvision VGG-16/19 state dict (features.0.weight ... classifier.6.bias) -> minicnn.

    The arrays keep their layout: torchvision's convs are (out, in, kh, kw), its
    linear layers (out, in), and its flatten orders pool5 (C, H, W) as minicnn's.
    """
    depth = vgg_depth(state, arch, "torchvision")
    used = set()

    def fetch(layer, kind, position):
        prefix = foreign_name(depth, "torchvision", position)
        found = {}
        for key in ("weight", "bias"):
            name = f"{prefix}.{key}"
            found[key] = name, _take(state, name, "torchvision", f"{layer}.{key}")
            used.add(name)
        return found
    return _vgg_convert(depth, fetch, "torchvision", lambda: set(state) - used)


def keras_vgg_to_minicnn(layers, arch=None):
    """Keras VGG16/VGG19 layers (block1_conv1 ... fc1, fc2, predictions) -> minicnn.

    Reads the ``tf_dim_ordering_tf_kernels`` files: conv kernels (kh, kw, in,
    out) become (out, in, kh, kw), dense kernels (in, out) become (out, in).
    Keras flattens pool5 in (H, W, C) order, so the rows of fc1's kernel are
    permuted to minicnn's (C, H, W). The weight names may be Keras 1's
    (``W_1``, ``b_1``, as in the published files, or ``W``, ``b``) or Keras 2's
    (``kernel``, ``bias``).
    """
    depth = vgg_depth(layers, arch, "keras")
    used = set()

    def pick(weights, wanted, name, layer):
        for short, value in weights.items():
            if re.sub(r"_\d+$", "", short) in wanted:
                return np.asarray(value)
        raise WeightsFormatError(f"Keras layer {name!r} has no {' / '.join(wanted)} weight "
                                 f"(needed for minicnn {layer!r}); it has {sorted(weights)}")

    def fetch(layer, kind, position):
        name = foreign_name(depth, "keras", position)
        weights = _take(layers, name, "Keras", layer)
        used.add(name)
        kernel = pick(weights, ("kernel", "W"), name, layer)
        bias = pick(weights, ("bias", "b"), name, layer)
        if kernel.ndim != (4 if kind == "conv" else 2):
            raise WeightsFormatError(f"Keras layer {name!r} has a kernel of shape {kernel.shape}; "
                                     f"expected {4 if kind == 'conv' else 2} axes for {layer!r}")
        if kind == "conv":
            if kernel.shape[:2] != (3, 3) and kernel.shape[2:] == (3, 3):
                raise WeightsFormatError(f"Keras layer {name!r} has a kernel of shape "
                                         f"{kernel.shape}, (out, in, 3, 3): a th_dim_ordering "
                                         "file; minicnn reads the tf_dim_ordering_tf_kernels ones")
            kernel = kernel.transpose(3, 2, 0, 1)
        else:
            kernel = _fc1_to_fc6(kernel, name) if position == 6 else kernel.T
        return {"weight": (name, kernel), "bias": (name, bias)}
    return _vgg_convert(depth, fetch, "Keras", lambda: set(layers) - used)


def _fc1_to_fc6(kernel, name):
    """Keras fc1's kernel (7 * 7 * C, out), its rows in pool5's (H, W, C) order, as
    minicnn's fc6 weight (out, C * 7 * 7), its columns in (C, H, W) order (one copy)."""
    rows, out = kernel.shape
    if rows % POOL5_SIZE ** 2:
        raise WeightsFormatError(f"Keras layer {name!r} has {rows} inputs, not a multiple of "
                                 f"{POOL5_SIZE} x {POOL5_SIZE} (pool5 at a 224 x 224 input)")
    hwc = kernel.reshape(POOL5_SIZE, POOL5_SIZE, rows // POOL5_SIZE ** 2, out)
    return hwc.transpose(3, 2, 0, 1).reshape(out, rows)


def caffe_vgg_to_minicnn(layers, arch=None):
    """Caffe VGG_ILSVRC_16/19_layers (a list of CaffeLayer) -> minicnn.

    The 2014 caffemodels store V1 layers with legacy 4-d blobs: a conv weight
    (out, in, 3, 3), an InnerProduct weight (1, 1, out, in), biases
    (1, 1, 1, out); each is reshaped to minicnn's shape. Caffe flattens pool5
    (C, H, W), as minicnn does.
    """
    by_name = {layer.name: layer for layer in layers if layer.blobs}
    depth = vgg_depth(by_name, arch, "caffe")
    used = set()

    def fetch(layer, kind, position):
        name = foreign_name(depth, "caffe", position)
        blobs = _take(by_name, name, "Caffe", layer).blobs
        used.add(name)
        if len(blobs) != 2:
            raise WeightsFormatError(f"Caffe layer {name!r} has {len(blobs)} blobs, expected "
                                     f"2 (weight and bias, for minicnn {layer!r})")
        weight, bias = (np.asarray(blob) for blob in blobs)
        if kind == "fc" and weight.ndim == 4 and weight.shape[:2] == (1, 1):  # legacy
            weight = weight.reshape(weight.shape[-2:])
        return {"weight": (name, weight), "bias": (name, bias.ravel())}
    return _vgg_convert(depth, fetch, "Caffe", lambda: set(by_name) - used)
