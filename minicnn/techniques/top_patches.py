"""Maximally activating patches: the image regions a channel responds to most.

Pour images through the network to ``layer`` and keep, for each channel c, the
k largest activations ``A[n, c, y, x]`` over every image n and position (y, x).
Each one is a neuron that fired strongly on a part of an image: the part is
the neuron's receptive field, :func:`.receptive_field.field_box`. Shown side
by side, the k patches say what the channel detects (Girshick et al. 2014;
Zeiler & Fergus 2014 show them beside their deconvnet projections, which
:func:`patch_projections` computes with guided backprop).

Memory stays bounded by a running top-k: each batch's activations become a
(channels, batch * positions) table, from which the batch's k best per channel
are picked and merged with the k kept so far; nothing else survives the batch.

Ties are broken the same way however the images are batched: among equal
values the earlier one wins, in the order (image, y, x) in which they were
poured in. A selection with ``argpartition`` would pick among ties at the k-th
value arbitrarily, so :func:`_largest` finds the k-th largest value with
``partition`` (linear time, as ``argpartition``) and then keeps every value
above it and the earliest of those equal to it.
"""
from collections import namedtuple
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..backend import get_array_module, to_cpu, to_gpu
from ..datasets import Dataset, as_dataset
from ..layers.base import ShapeError
from .receptive_field import field_box
from .targets import check_batch, input_gradient

Patch = namedtuple("Patch", "image y x value box")
Patch.__doc__ = """One of a channel's strongest activations: ``image`` (its index in the
order the images were poured in), the position ``y``, ``x`` in the layer's output
(None for a layer without positions), the activation ``value``, and ``box``, the
input region (top, left, bottom, right) the neuron sees (bottom, right exclusive)."""


def _largest(values, k):
    """Column indices (rows, k) of the k largest values of each row, in increasing
    column order; among equal values the leftmost are kept."""
    xp = get_array_module(values)
    n = values.shape[1]
    if n <= k:
        return xp.broadcast_to(xp.arange(n), values.shape)
    threshold = xp.partition(values, n - k, axis=1)[:, n - k:n - k + 1]  # each row's k-th largest
    if bool(xp.isnan(threshold).any()):
        raise ValueError("the activations contain NaN; check the input images and weights")
    above = values > threshold
    tied = values == threshold
    room = k - above.sum(axis=1, keepdims=True)
    keep = above | (tied & (xp.cumsum(tied, axis=1, dtype=xp.int32) <= room))
    _, columns = xp.nonzero(keep)  # row-major order: k per row, left to right
    return columns.reshape(values.shape[0], k)


def _on_device(x, xp):
    return to_gpu(x) if xp is not np else to_cpu(x)


def image_batches(net, images, batch_size):
    """``images`` as (count or None, an iterator of NCHW batches on the network's device).

    ``images``: a :class:`~minicnn.datasets.Dataset`, a folder, None (the model's
    own data), an array (float NCHW in the input space, or uint8 NHWC pixels), or
    an iterable of batches (arrays, or ``(x, labels)`` pairs as ``Dataset.batches``
    yields)."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, received {batch_size}")
    xp = net.array_module()
    if hasattr(images, "shape") and not (images.ndim == 4 and images.dtype == np.uint8):
        check_batch(net, images)
        return len(images), (_on_device(images[i:i + batch_size], xp)
                             for i in range(0, len(images), batch_size))
    if images is None or isinstance(images, (str, Path, Dataset)) or hasattr(images, "shape"):
        dataset = as_dataset(images, net)
        return len(dataset), (_on_device(x, xp) for x, _ in dataset.batches(batch_size))

    def unpack():
        for item in images:
            yield _on_device(item[0] if isinstance(item, tuple) else item, xp)
    return None, unpack()


def _channels(channels, count, layer):
    if channels is None:
        return list(range(count))
    channels = [int(c) for c in np.atleast_1d(channels)]
    if not channels:
        raise ValueError(f"no channels given for layer {layer!r}; give at least one of 0 to "
                         f"{count - 1}, or None for all")
    bad = [c for c in channels if not 0 <= c < count]
    if bad:
        raise ValueError(f"channel {bad[0]} is not valid for layer {layer!r}; valid: 0 to "
                         f"{count - 1}")
    return channels


def top_patches(net, images, layer, channels=None, k=9, batch_size=64, progress=True):
    """The ``k`` strongest activations of each channel of ``layer`` over ``images``.

    Returns ``{channel: [Patch, ...]}``, best first (value descending; ties in
    the order poured in). ``channels``: an int or a list (default: all).
    ``images``: anything :func:`image_batches` takes; batches go through the
    network ``batch_size`` images at a time when the source is batched here.
    """
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, received {k}")
    net._require(layer)
    count, batches = image_batches(net, images, batch_size)
    kept_values = kept_keys = None  # (channels, <= k): the best so far, keys in poured order
    chosen = layout = None  # layout: (output shape per image, input image size)
    seen = 0
    with tqdm(total=count, desc=f"top patches {layer}", unit="image", disable=not progress,
              leave=False) as bar:
        for x in batches:
            check_batch(net, x)
            out = net.forward(x, stop_at=layer, cache=False)
            if layout is None:
                layout = (out.shape[1:], tuple(x.shape[2:]))
                chosen = _channels(channels, out.shape[1], layer)
            elif (out.shape[1:], tuple(x.shape[2:])) != layout:
                raise ShapeError(f"images of size {tuple(x.shape[2:])} after images of size "
                                 f"{layout[1]}: give top_patches images of one size")
            xp = get_array_module(out)
            picked = out if chosen == list(range(out.shape[1])) else out[:, chosen]  # all: no copy
            table = picked.reshape(len(x), len(chosen), -1)
            table = table.transpose(1, 0, 2).reshape(len(chosen), -1)  # (channels, n * positions)
            columns = _largest(table, k)
            values = xp.take_along_axis(table, columns, axis=1)
            keys = columns + seen * (table.shape[1] // len(x))  # flat (image, y, x) index
            if kept_values is not None:  # earlier keys first: the merge keeps the poured order
                values = xp.concatenate([kept_values, values], axis=1)
                keys = xp.concatenate([kept_keys, keys], axis=1)
                columns = _largest(values, k)
                values = xp.take_along_axis(values, columns, axis=1)
                keys = xp.take_along_axis(keys, columns, axis=1)
            kept_values, kept_keys = values, keys
            seen += len(x)
            bar.update(len(x))
    if layout is None:
        raise ValueError("no images were poured in: the source is empty")
    return _records(net, layer, chosen, to_cpu(kept_values), to_cpu(kept_keys), layout)


def _records(net, layer, channels, values, keys, layout):
    """Sort each channel's kept activations best first and turn them into Patches."""
    shape, image_size = layout
    spatial = len(shape) == 3
    height, width = (shape[1], shape[2]) if spatial else (1, 1)
    boxes = {}
    result = {}
    for row, channel in enumerate(channels):
        order = np.lexsort((keys[row], -values[row]))  # value descending, then poured order
        patches = []
        for key, value in zip(keys[row][order], values[row][order]):
            image, position = divmod(int(key), height * width)
            if spatial:
                y, x = divmod(position, width)
                if (y, x) not in boxes:
                    boxes[y, x] = field_box(net, layer, y, x, image_size)
                patches.append(Patch(image, y, x, float(value), boxes[y, x]))
            else:  # global_pool, fc: a neuron that sees the whole image
                patches.append(Patch(image, None, None, float(value), (0, 0) + image_size))
        result[channel] = patches
    return result


def patch_projections(net, images, layer, patches, progress=True):
    """Guided-backprop projections of each patch's neuron, cropped to its box.

    ``patches`` as :func:`top_patches` returns them; ``images`` a Dataset or an
    NCHW array in the input space holding the images they index. For each
    patch, ``input_gradient(net, x, "LAYER:C:Y:X", relu_mode="guided")`` on its
    image, then ``[:, top:bottom, left:right]``: ``{channel: [(C, h, w), ...]}``
    in the patches' order, on the network's device.
    """
    xp = net.array_module()
    if isinstance(images, Dataset):
        image = lambda i: _on_device(images.images([i]), xp)  # noqa: E731
    else:
        image = lambda i: _on_device(images[i:i + 1], xp)  # noqa: E731
    total = sum(len(p) for p in patches.values())
    result = {}
    with tqdm(total=total, desc="projections", unit="patch", disable=not progress,
              leave=False) as bar:
        for channel, records in patches.items():
            crops = []
            for patch in records:
                target = (f"{layer}:{channel}" if patch.y is None
                          else f"{layer}:{channel}:{patch.y}:{patch.x}")
                signal = input_gradient(net, image(patch.image), target, relu_mode="guided")[0]
                top, left, bottom, right = patch.box
                crops.append(signal[:, top:bottom, left:right])
                bar.update(1)
            result[channel] = crops
    return result
