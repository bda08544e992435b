"""Moves on the image between optimization steps (CS231n, Lucid, DeepDream):

* jitter: evaluate the objective on the image rolled by a random (dy, dx), and
  roll the gradient back, so no pixel grid alignment can be exploited;
* blur: a Gaussian filter over the rows and columns every k steps, which damps
  the high frequencies that a gradient alone piles up;
* the valid range: pixels 0..255 map through the preprocessing
  ``x = (p scale - mean) / std`` per channel, so each channel of ``x`` lies in
  ``[(0 - mean) / std, (255 scale - mean) / std]``; images are clipped to it, and
  L-BFGS-B takes it as its bounds.
"""
import numpy as np

from ...backend import get_array_module, to_cpu


def roll(x, shift):
    """Roll an NCHW batch by ``shift = (dy, dx)`` pixels (wrapping around)."""
    xp = get_array_module(x)
    return xp.roll(x, shift=tuple(int(s) for s in shift), axis=(2, 3))


def random_shift(rng, jitter):
    """A shift (dy, dx), each uniform in [-jitter, jitter], drawn from ``rng``."""
    if jitter <= 0:
        return (0, 0)
    return tuple(int(v) for v in rng.integers(-jitter, jitter + 1, size=2))


def gaussian_blur(x, sigma):
    """Blur each channel of an NCHW batch with a Gaussian of ``sigma`` pixels
    (scipy.ndimage on NumPy, cupyx.scipy.ndimage on CuPy; edges reflected)."""
    xp = get_array_module(x)
    if xp is np:
        from scipy import ndimage
    else:
        from cupyx.scipy import ndimage
    return ndimage.gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="reflect")


def preprocessing_of(net):
    """The network's preprocessing spec, or a clear error saying how to give one."""
    spec = net.metadata.get("preprocessing")
    if spec is None:
        raise ValueError("the network has no net.metadata['preprocessing'], so the valid pixel "
                         "range is unknown; load a weights file with minicnn.load, or set it, "
                         "e.g. net.metadata['preprocessing'] = "
                         "minicnn.images.DEFAULT_PREPROCESSING")
    return spec


def pixel_range(spec, xp=np, dtype=np.float32):
    """(low, high), each (1, C, 1, 1): the input-space values of pixels 0 and 255."""
    scale = float(spec.get("scale", 1.0))
    mean = np.asarray(spec.get("mean", [0, 0, 0]), np.float64)
    std = np.asarray(spec.get("std", [1, 1, 1]), np.float64)
    low = (0.0 - mean) / std
    high = (255.0 * scale - mean) / std
    shape = (1, len(mean), 1, 1)
    return (xp.asarray(low.reshape(shape), dtype=dtype),
            xp.asarray(high.reshape(shape), dtype=dtype))


def valid_range(net, x):
    """:func:`pixel_range` of ``net``'s preprocessing, on ``x``'s device and dtype."""
    return pixel_range(preprocessing_of(net), get_array_module(x), x.dtype)


def clip_to_range(x, bounds):
    """Clip ``x`` per channel to ``bounds = (low, high)``; None leaves it as it is."""
    if bounds is None:
        return x
    xp = get_array_module(x)
    return xp.minimum(xp.maximum(x, bounds[0]), bounds[1])


def random_image(rng, shape, bounds, xp=np, dtype=np.float32):
    """An image of uniform random pixels in the valid range (drawn on the host from
    ``rng``, so a seed gives the same image on either device)."""
    low, high = (np.asarray(to_cpu(b), np.float64) for b in bounds)
    u = rng.random(shape)
    return xp.asarray(low + u * (high - low), dtype=dtype)
