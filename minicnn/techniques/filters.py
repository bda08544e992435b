"""First-layer filters: the one set of weights that can be looked at directly.

The first convolution's filters live in the same space as the image (a filter
of shape (C, kh, kw) is dotted with a C x kh x kw patch of pixels), so each can
be shown as a small colour picture of the pattern it responds to most. Deeper
filters combine the previous layer's channels, not colours; only the first
layer is directly interpretable this way (CS231n, "Visualizing and
Understanding ConvNets").

Each filter is scaled on its own: ``(w - min(w)) / (max(w) - min(w))`` over
all its values, so its pattern fills [0, 1] whatever its norm.
"""
from ..backend import get_array_module
from ..layers import Conv2d


def first_convolution(net):
    """The network's first :class:`~minicnn.layers.Conv2d` in forward order."""
    for layer in net.layers():
        if isinstance(layer, Conv2d):
            return layer
    raise ValueError("the network has no convolution, so it has no first-layer filters")


def first_layer_filters(net):
    """The first convolution's filters as images: (F, kh, kw, C), each in [0, 1].

    ``C`` is the network's input channels in RGB order (a network that takes
    BGR, as the Caffe ResNets do, has its filters' channels reversed so that
    they show in the colours they respond to). A constant filter is 0.5.
    """
    conv = first_convolution(net)
    weight = conv.params["weight"]  # (F, C, kh, kw)
    xp = get_array_module(weight)
    if net.metadata.get("preprocessing", {}).get("color", "RGB") == "BGR":
        weight = weight[:, ::-1]
    flat = weight.reshape(weight.shape[0], -1)
    low = flat.min(axis=1).reshape(-1, 1, 1, 1)
    span = flat.max(axis=1).reshape(-1, 1, 1, 1) - low
    scaled = xp.where(span > 0, (weight - low) / xp.where(span > 0, span, 1), 0.5)
    return xp.ascontiguousarray(scaled.transpose(0, 2, 3, 1))
