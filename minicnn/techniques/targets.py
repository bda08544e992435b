"""What a gradient technique explains, and the one backward pass they all share.

A *target* names a number the network computes for each image:

* an int, or a sequence of N ints (one per image): a class score, the network's
  output before the softmax (Simonyan et al. explain the unnormalized score);
* ``"LAYER:CHANNEL"``: in each image, the channel's strongest activation at that
  layer (the neuron Zeiler & Fergus project down to the pixels);
* ``"LAYER:CHANNEL:Y:X"``: one neuron.

The shared recipe (:func:`backprop_target`): forward to the target's layer, put
a gradient of 1 on the chosen neuron of each image and 0 elsewhere, and run the
backward pass to the image. Every saliency method is this pass, with another
ReLU backward rule or another input.
"""
from collections import namedtuple
from contextlib import contextmanager

import numpy as np

from ..backend import get_array_module, to_cpu
from ..layers import Conv2d, ReLU
from ..layers.base import ShapeError

Target = namedtuple("Target", "layer channel y x classes")
Target.__doc__ = """A parsed target: ``layer`` None means the network's output (class
scores, ``classes`` an int array of N); else ``channel`` and, for one neuron,
``y`` and ``x`` (None for "the strongest position")."""

Backprop = namedtuple("Backprop", "score input activations gradients")
Backprop.__doc__ = """What :func:`backprop_target` returns: ``score`` (N,) the target's
value per image, ``input`` d score / d x shaped like x, and the activations and
gradients (d score / d activation) captured at the requested layers."""


def input_channels(net):
    """Channels the network's first convolution expects."""
    for layer in net.layers():
        if isinstance(layer, Conv2d):
            return layer.in_channels
    raise ValueError("the network has no convolution, so it has no image input")


def check_batch(net, x):
    """Refuse what is not an NCHW batch the network can take, saying how to fix it."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4:
        hint = " (one image: add a batch axis with x[None])" if len(shape) == 3 else ""
        if len(shape) == 2:
            hint = " (a 2-D image: give it channels and a batch axis, x[None, None])"
        raise ShapeError(f"expected an NCHW batch of images (N, C, H, W), received an array of "
                         f"shape {shape}{hint}")
    channels = input_channels(net)
    if shape[1] != channels:
        raise ShapeError(f"the network takes {channels}-channel images (N, {channels}, H, W), "
                         f"received {shape[1]} channels in a batch of shape {shape}; "
                         "preprocess images with minicnn.images.load_batch")
    if shape[0] == 0:
        raise ShapeError("the batch is empty (N = 0)")
    return x


def _index(text, what, size, target):
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"target {target!r}: the {what} {text!r} is not an integer") from None
    if not 0 <= value < size:
        raise ValueError(f"target {target!r}: {what} {value} is out of range; valid: 0 to "
                         f"{size - 1}")
    return value


def parse_target(net, target, n, x_shape=None):
    """Check ``target`` against the network and a batch of ``n`` images.

    ``x_shape`` (the batch's shape) lets a layer target be checked against the
    layer's output size; without it the layer's shape is found by a forward pass
    in :func:`backprop_target`.
    """
    if isinstance(target, str):
        parts = target.split(":")
        if len(parts) not in (2, 4):
            raise ValueError(f"target {target!r}: write a class index, 'LAYER:CHANNEL' or "
                             "'LAYER:CHANNEL:Y:X'")
        layer = parts[0]
        net._require(layer)  # KeyError naming close matches
        return Target(layer, parts[1], *(parts[2:] if len(parts) == 4 else (None, None)), None)
    num_classes = _num_classes(net)
    classes = np.asarray(to_cpu(target))  # a CuPy argmax too: NumPy refuses to convert it
    if classes.ndim == 0:
        classes = np.full(n, classes)
    if classes.ndim != 1 or len(classes) != n:
        raise ValueError(f"target: give one class for the whole batch or one per image; received "
                         f"{classes.shape[0] if classes.ndim == 1 else classes.shape} for "
                         f"{n} images")
    if not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"target: class indices must be integers, received {target!r}")
    bad = classes[(classes < 0) | (classes >= num_classes)]
    if bad.size:
        raise ValueError(f"target: class {int(bad[0])} is out of range; valid: 0 to "
                         f"{num_classes - 1}")
    return Target(None, None, None, None, classes.astype(np.int64))


def _num_classes(net):
    last = list(net.layers())[-1]
    out = getattr(last, "out_features", None)
    return int(out if out is not None else net.metadata["num_classes"])


def _seed(target, out, text):
    """The one-hot gradient on ``out`` (N, C[, H, W]) and the target's value per image."""
    xp = get_array_module(out)
    n = out.shape[0]
    rows = xp.arange(n)
    seed = xp.zeros_like(out)
    if target.layer is None:
        index = (rows, xp.asarray(target.classes))
    else:
        channel = _index(target.channel, "channel", out.shape[1], text)
        if out.ndim == 2:  # a vector layer: the channel is the neuron
            if target.y is not None:
                raise ValueError(f"target {text!r}: layer {target.layer!r} has no spatial "
                                 f"positions (output {tuple(out.shape)}); use 'LAYER:CHANNEL'")
            index = (rows, xp.full(n, channel))
        elif target.y is None:  # the strongest position of the channel in each image
            flat = out[:, channel].reshape(n, -1).argmax(axis=1)
            index = (rows, xp.full(n, channel), flat // out.shape[3], flat % out.shape[3])
        else:
            y = _index(target.y, "row Y", out.shape[2], text)
            x = _index(target.x, "column X", out.shape[3], text)
            index = (rows, xp.full(n, channel), xp.full(n, y), xp.full(n, x))
    seed[index] = 1
    return seed, out[index]


@contextmanager
def using_relu_mode(net, mode):
    """Run a block with every ReLU in ``mode``; restore each ReLU's own mode after,
    even when the block raises."""
    relus = [layer for layer in net.layers() if isinstance(layer, ReLU)]
    saved = [layer.mode for layer in relus]
    net.set_relu_mode(mode)
    try:
        yield net
    finally:
        for layer, previous in zip(relus, saved):
            layer.mode = previous


def backprop_target(net, x, target, relu_mode="normal", capture=()):
    """One forward pass to the target's layer and one backward pass to the image.

    ``capture`` names layers whose activations and gradients (d score / d
    activation) to return too. Returns a :data:`Backprop`.
    """
    check_batch(net, x)
    parsed = parse_target(net, target, x.shape[0])
    if isinstance(capture, str):
        capture = [capture]
    out = net.forward(x, stop_at=parsed.layer, capture=list(capture))
    out, activations = out if capture else (out, {})
    seed, score = _seed(parsed, out, target)
    with using_relu_mode(net, relu_mode):
        result = net.backward(seed, param_grads=False, capture=list(capture))
    dx, gradients = result if capture else (result, {})
    return Backprop(score, dx, activations, gradients)


def input_gradient(net, x, target, relu_mode="normal"):
    """d target / d x for a batch ``x`` (NCHW, the network's input space), shaped
    like ``x``. ``relu_mode``: 'normal' (the gradient), 'guided' or 'deconv'."""
    return backprop_target(net, x, target, relu_mode).input
