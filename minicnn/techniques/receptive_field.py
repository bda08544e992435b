"""Receptive fields: which input pixels a neuron of a layer can see.

Along each axis a layer's output position ``i`` sees the input interval
``[offset + i * jump, offset + i * jump + size)``. A layer with kernel k,
stride s and padding p turns the geometry (size, jump, offset) of its input
into

    size' = size + (k - 1) * jump,   jump' = jump * s,   offset' = offset - p * jump

(the classic recurrence; element-wise layers keep it, the option-A shortcut
only multiplies the jump). A residual block's output sees what either path
sees, so its field is the union of the branch's and the shortcut's: they share
the jump, and the union runs from the smaller offset to the larger end. The
offset is negative where the field starts in the padding.
"""
from collections import namedtuple

from ..layers import Conv2d, ChannelPadShortcut, GlobalAvgPool2d, Linear, Flatten
from ..layers.pooling import _WindowPool, pooled_size
from ..network import Residual, Container

ReceptiveField = namedtuple("ReceptiveField", "size jump offset")
ReceptiveField.__doc__ = """Per axis (rows, columns): the field's ``size``, its ``jump``
(stride between neighbouring neurons' fields, in input pixels) and the ``offset``
of the first neuron's field (its top or left input coordinate)."""


class _Global(Exception):
    """Raised on reaching a layer whose output sees the whole image."""


def _step(module, geometry):
    """Geometry after one leaf layer: a tuple per axis of (size, jump, offset, length)."""
    if isinstance(module, (GlobalAvgPool2d, Linear, Flatten)):
        raise _Global(module.name)
    if isinstance(module, ChannelPadShortcut):
        s = module.stride
        return tuple((size, jump * s, offset, None if n is None else -(-n // s))
                     for size, jump, offset, n in geometry)
    if isinstance(module, (Conv2d, _WindowPool)):
        ceil = getattr(module, "ceil_mode", False)
        out = []
        for (size, jump, offset, n), k, s, p in zip(geometry, module.kernel_size, module.stride,
                                                   module.padding):
            length = None if n is None else pooled_size(n, k, s, p, ceil)
            out.append((size + (k - 1) * jump, jump * s, offset - p * jump, length))
        return tuple(out)
    return geometry  # batch norm, ReLU, add: position by position


def _walk(module, geometry, found):
    """Geometry after ``module``; records each named module's in ``found``."""
    if isinstance(module, Residual):
        main, short = geometry, geometry
        for child in module.branch:
            main = _walk(child, main, found)
        for child in module.shortcut:
            short = _walk(child, short, found)
        union = []
        for (s1, j1, o1, n1), (s2, j2, o2, n2) in zip(main, short):
            if j1 != j2 or n1 != n2:
                raise ValueError(f"{module.name}: the branch and the shortcut have different "
                                 f"strides ({j1} vs {j2}); their fields do not line up")
            offset = min(o1, o2)
            union.append((max(o1 + s1, o2 + s2) - offset, j1, offset, n1))
        geometry = tuple(union)
        found[module.sum.name] = geometry
        if module.activation is not None:
            found[module.activation.name] = geometry
    elif isinstance(module, Container):
        for child in module.children.values():
            geometry = _walk(child, geometry, found)
    else:
        geometry = _step(module, geometry)
    found[module.name] = geometry
    return geometry


def _geometry(net, layer, image_size=None):
    target = net._require(layer)
    heights = (image_size[0], image_size[1]) if image_size is not None else (None, None)
    found = {}
    try:
        _walk(net, tuple((1, 1, 0, n) for n in heights), found)
    except _Global as stop:
        if target not in found:
            raise ValueError(f"layer {layer!r} lies at or after {stop.args[0]!r}, whose output "
                             "sees the whole image: it has no local receptive field") from None
    return found[target]


def receptive_field(net, layer):
    """The receptive field of ``layer``'s neurons: size, jump and offset per axis."""
    geometry = _geometry(net, layer)
    return ReceptiveField(*(tuple(axis[i] for axis in geometry) for i in range(3)))


def layer_size(net, layer, image_size):
    """(rows, columns) of ``layer``'s output for an input of ``image_size`` (H, W)."""
    return tuple(axis[3] for axis in _geometry(net, layer, image_size))


def field_box(net, layer, y, x, image_size):
    """The input box (top, left, bottom, right) that neuron (y, x) of ``layer`` sees
    in an image of ``image_size`` (H, W): bottom and right exclusive, clipped to the image."""
    geometry = _geometry(net, layer, image_size)
    box = []
    for position, (size, jump, offset, length), limit, axis in zip(
            (y, x), geometry, image_size, ("row y", "column x")):
        if not 0 <= position < length:
            raise ValueError(f"{axis} = {position} lies outside layer {layer!r}, whose output is "
                             f"{length} positions long for a {image_size[0]}x{image_size[1]} "
                             f"image; valid: 0 to {length - 1}")
        start = offset + position * jump
        box.append((max(start, 0), min(start + size, limit)))
    (top, bottom), (left, right) = box
    return top, left, bottom, right
