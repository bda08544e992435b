"""Occlusion: how much the network's answer depends on each region of the image.

Zeiler & Fergus (2014, section 4.2) slide a grey square over the image and
watch the probability of the correct class: where it drops, the network was
looking. With a ``size`` x ``size`` square of value ``fill`` whose top-left
corner is at (i s, j s), s the ``stride``,

    M[n, i, j] = softmax(f(x_n with the square at (i s, j s)))[t_n]

for every i, j at which the square lies inside the image: an
(N, (H - size) // s + 1, (W - size) // s + 1) map. ``fill`` is in the
network's input space, so 0 is the dataset's mean colour (their grey square).

The target ``t`` is a class (an int, or one per image). A layer target
(``"LAYER:CHANNEL"`` or ``"LAYER:CHANNEL:Y:X"``, as in :mod:`.targets`) maps the
activation instead, as their figure 7 does for a feature map: the channel's
strongest activation in each occluded image, or the one neuron's.

The occluded copies of every image, one per position, go through the network
``batch_size`` at a time; each is built from the image and a mask, with no loop
over positions.
"""
from tqdm.auto import tqdm

from ..backend import get_array_module
from .targets import _seed, check_batch, parse_target


def _class_probability(logits, classes):
    """``softmax(logits)[row, classes[row]]``, with the largest logit subtracted
    first so that exp cannot overflow."""
    xp = get_array_module(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    rows = xp.arange(len(logits))
    return xp.exp(shifted[rows, classes]) / xp.exp(shifted).sum(axis=1)


def occlusion_map(net, x, target, size, stride, fill=0.0, batch_size=64, progress=True):
    """The target's softmax probability (or activation) with a ``size`` x ``size``
    square of ``fill`` at every position: (N, rows, columns), see the module doc."""
    check_batch(net, x)
    n, _, height, width = x.shape
    size, stride = int(size), int(stride)
    if size < 1 or stride < 1:
        raise ValueError(f"the occluding square's size and stride must be at least 1, received "
                         f"size {size} and stride {stride}")
    if size > min(height, width):
        raise ValueError(f"the occluding square ({size}x{size}) is larger than the "
                         f"{height}x{width} image; use a size of at most {min(height, width)}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, received {batch_size}")
    parsed = parse_target(net, target, n)
    xp = get_array_module(x)
    rows, columns = (height - size) // stride + 1, (width - size) // stride + 1
    positions = rows * columns
    pixel_rows, pixel_columns = xp.arange(height), xp.arange(width)
    result = xp.empty(n * positions, dtype=x.dtype)
    with tqdm(total=n * positions, desc="occlusion", unit="position", disable=not progress,
              leave=False) as bar:
        for start in range(0, n * positions, batch_size):
            index = xp.arange(start, min(start + batch_size, n * positions))
            image, position = index // positions, index % positions
            top = (position // columns * stride)[:, None]
            left = (position % columns * stride)[:, None]
            covered_rows = (pixel_rows >= top) & (pixel_rows < top + size)  # (B, H)
            covered_columns = (pixel_columns >= left) & (pixel_columns < left + size)  # (B, W)
            square = covered_rows[:, None, :, None] & covered_columns[:, None, None, :]
            occluded = xp.where(square, x.dtype.type(fill), x[image])
            result[index] = _score(net, occluded, parsed, image, target)
            bar.update(len(index))
    return result.reshape(n, rows, columns)


def _score(net, occluded, parsed, image, target):
    """The target's value on each occluded copy; ``image`` says whose copy it is."""
    if parsed.layer is None:
        logits = net.forward(occluded, cache=False)
        classes = get_array_module(logits).asarray(parsed.classes)[image]
        return _class_probability(logits, classes)
    out = net.forward(occluded, stop_at=parsed.layer, cache=False)
    # the gradient techniques' own rule picks the neuron (and checks the channel,
    # row and column against the layer), so occlusion and saliency explain the same number
    _, value = _seed(parsed, out, target)
    return value
