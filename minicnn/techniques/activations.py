"""Activations: what every channel of a layer computes on an image.

A layer's output for a batch is (N, C, H, W): C maps, one per channel, each an
H x W picture of where that channel's pattern occurs. Looking at all of them
for one image, layer after layer, is the idea of Yosinski et al.'s deep
visualization toolbox, done here offline: :func:`activations` gives one
layer's maps, :func:`stage_activations` the maps of several layers from a
single forward pass, and :func:`strongest_channels` picks, per image, the
channels whose maps are largest on average (the ones worth showing first).
"""
from ..backend import get_array_module
from ..layers.base import ShapeError
from .targets import check_batch


def activations(net, x, layer):
    """``layer``'s output for the batch ``x``: (N, C, H, W), or (N, C) for a
    vector layer (``global_pool``, ``fc``). One forward pass that stops there."""
    check_batch(net, x)
    net._require(layer)  # KeyError naming close matches before any work
    return net.forward(x, stop_at=layer, cache=False)


def overview_layers(net):
    """The layers an overview walks through: the stem's last activation
    (``conv1_relu``, or ``pool1`` where there is one) and the stages ``res2``,
    ``res3``, ... (the outputs of each stage of a ResNet)."""
    names = net.names()
    stem = [name for name in ("conv1_relu", "pool1") if name in names][-1:]
    stages = [name for name in names if name in {f"res{i}" for i in range(2, 10)}]
    if not stem + stages:
        raise ValueError("the network has neither conv1_relu nor stages res2, res3, ...; give "
                         "the layers to show by name (net.names() lists them)")
    return stem + stages


def stage_activations(net, x, layers=None):
    """``{layer: its output}`` for ``layers`` (default :func:`overview_layers`),
    in forward order, from one forward pass stopping at the deepest of them."""
    check_batch(net, x)
    layers = overview_layers(net) if layers is None else list(layers)
    if not layers:
        raise ValueError("no layers given: name at least one (net.names() lists them)")
    order = {name: i for i, name in enumerate(net.names())}
    for name in layers:
        net._require(name)
    layers = sorted(layers, key=order.__getitem__)
    _, captured = net.forward(x, stop_at=layers[-1], capture=layers, cache=False)
    return captured


def strongest_channels(maps, count):
    """The ``count`` channels with the largest mean activation in each image,
    strongest first: (N, count) indices into the channels of ``maps`` (N, C, H, W)."""
    if getattr(maps, "ndim", None) != 4:
        raise ShapeError(f"strongest_channels takes maps of shape (N, C, H, W), received "
                         f"{tuple(getattr(maps, 'shape', ()))}")
    if count < 1:
        raise ValueError(f"count must be at least 1, received {count}")
    xp = get_array_module(maps)
    means = maps.mean(axis=(2, 3))
    # a stable sort of the negated means: ties keep the lower channel first
    return xp.argsort(-means, axis=1, kind="stable")[:, :min(count, maps.shape[1])]
