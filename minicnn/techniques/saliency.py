"""The saliency family: what the backward pass says about each input pixel.

Every method returns a *signal* shaped like the batch ``x`` (N, C, H, W), in the
network's input space, for a target ``S`` (a class score, ``"LAYER:CHANNEL"`` or
``"LAYER:CHANNEL:Y:X"``, see :mod:`.targets`); :func:`saliency_map` turns a
signal into an (N, H, W) heat map. All are built on one backward pass,
:func:`.targets.input_gradient`, changing only the ReLU rule or the input:

* vanilla gradient (Simonyan et al. 2014): ``g = dS/dx``;
* guided backprop (Springenberg et al. 2015): ReLUs pass ``dy [x > 0] [dy > 0]``;
* deconvnet (Zeiler & Fergus 2014): ReLUs pass ``dy [dy > 0]``, whatever x was;
* SmoothGrad (Smilkov et al. 2017): ``(1/n) sum_i dS/dx (x + e_i)``,
  ``e_i ~ N(0, sigma^2)``, ``sigma = noise (max(x) - min(x))`` per image;
* integrated gradients (Sundararajan et al. 2017): with baseline x',
  ``(x - x') (1/m) sum_{k=1..m} dS/dx (x' + (k/m)(x - x'))``, the right
  Riemann sum of the path integral, whose total tends to ``S(x) - S(x')``.

The many-pass methods batch their points: ``batch_size`` rows (noisy copies or
path points) go through the network per pass.
"""
import numpy as np
from tqdm.auto import tqdm

from ..backend import get_array_module
from .targets import backprop_target, check_batch, input_gradient, parse_target


def saliency_map(signal):
    """(N, C, H, W) -> (N, H, W): ``M[n, i, j] = max_c |g[n, c, i, j]|`` (Simonyan et al.)."""
    if getattr(signal, "ndim", None) != 4:
        raise ValueError(f"saliency_map takes an (N, C, H, W) signal, received shape "
                         f"{tuple(getattr(signal, 'shape', ()))}; give one image as g[None]")
    xp = get_array_module(signal)
    return xp.abs(signal).max(axis=1)


def vanilla_gradient(net, x, target):
    """``dS/dx``: how the target's score ``S`` changes with each input value."""
    return input_gradient(net, x, target)


def guided_backprop(net, x, target):
    """``dS/dx`` with every ReLU passing ``dy [x > 0] [dy > 0]``: only positive
    evidence flows down, through units that were active (Springenberg et al.)."""
    return input_gradient(net, x, target, relu_mode="guided")


def deconvnet(net, x, target):
    """Zeiler & Fergus's deconvnet projection: every ReLU passes ``dy [dy > 0]``,
    the rectified signal, ignoring which units were active on the way up."""
    return input_gradient(net, x, target, relu_mode="deconv")


def _per_row_target(net, target, n):
    """A function (first, stop, copies) -> the target for ``copies`` stacked copies of
    images first..stop-1: class indices are repeated, a layer target stays itself
    (its strongest position is found anew in every copy)."""
    if isinstance(target, str):
        return lambda first, stop, copies: target
    classes = parse_target(net, target, n).classes
    return lambda first, stop, copies: np.tile(classes[first:stop], copies)


def _gradient_sum(net, x, target, points, count, batch_size, progress, desc):
    """``sum_{k < count} dS/dx`` at ``points(k0, k1, first, stop)``, which returns the
    (k1 - k0, stop - first, C, H, W) points of steps k0..k1-1 for images first..stop-1.

    Steps go in order, images in order within a step, so the rows of every pass
    are the row-major order of a (count, N, ...) array of points."""
    check_batch(net, x)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, received {batch_size}")
    if int(count) < 1:
        raise ValueError(f"{desc}: the number of samples or steps must be at least 1, "
                         f"received {count}")
    xp = get_array_module(x)
    n = x.shape[0]
    rows_target = _per_row_target(net, target, n)
    steps_per_pass = max(1, batch_size // n)
    images_per_pass = min(n, batch_size)
    total = xp.zeros_like(x)
    with tqdm(total=count * n, desc=desc, unit="image", disable=not progress, leave=False) as bar:
        for k0 in range(0, count, steps_per_pass):
            k1 = min(count, k0 + steps_per_pass)
            for first in range(0, n, images_per_pass):
                stop = min(n, first + images_per_pass)
                batch = points(k0, k1, first, stop)
                grads = input_gradient(net, batch.reshape((-1,) + x.shape[1:]),
                                       rows_target(first, stop, k1 - k0))
                total[first:stop] += grads.reshape(batch.shape).sum(axis=0)
                bar.update((k1 - k0) * (stop - first))
    return total


def smoothgrad(net, x, target, samples=50, noise=0.15, rng=0, batch_size=64, progress=True):
    """SmoothGrad: the mean vanilla gradient over ``samples`` noisy copies of each image.

    ``sigma_n = noise * (max(x_n) - min(x_n))``; the noise is
    ``sigma * rng.standard_normal((samples, N, C, H, W), dtype=x.dtype)`` drawn on
    the CPU from ``rng`` (a seed or a ``numpy.random.Generator``) in that
    row-major order, a pass's rows at a time (the same numbers as one draw of the
    whole array), then moved to x's device: so a seed gives the same noise on
    NumPy and CuPy, and a test can redraw it.
    """
    xp = get_array_module(x)
    check_batch(net, x)
    if not noise >= 0:
        raise ValueError(f"noise is a fraction of each image's value range, at least 0; "
                         f"received {noise}")
    rng = np.random.default_rng(rng)
    draw_dtype = np.float64 if x.dtype == np.float64 else np.float32
    n = x.shape[0]
    flat = x.reshape(n, -1)
    sigma = (noise * (flat.max(axis=1) - flat.min(axis=1))).reshape(n, 1, 1, 1)

    def noisy(k0, k1, first, stop):
        shape = (k1 - k0, stop - first) + x.shape[1:]
        e = xp.asarray(rng.standard_normal(shape, dtype=draw_dtype)).astype(x.dtype, copy=False)
        return x[first:stop] + sigma[first:stop] * e

    total = _gradient_sum(net, x, target, noisy, samples, batch_size, progress, "smoothgrad")
    return total / samples


def _baseline(x, baseline):
    xp = get_array_module(x)
    if baseline is None:
        return xp.zeros_like(x)
    baseline = xp.asarray(baseline, dtype=x.dtype)
    try:
        return xp.ascontiguousarray(xp.broadcast_to(baseline, x.shape))
    except ValueError:
        raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not fit the batch "
                         f"{tuple(x.shape)}; give one shaped like x, like one image, or a "
                         "scalar") from None


def integrated_gradients(net, x, target, baseline=None, steps=50, batch_size=64, progress=True):
    """Integrated gradients from ``baseline`` x' (zeros, the dataset's mean colour in
    the input space, by default; or an array broadcastable to x):

    ``IG = (x - x') * (1/m) * sum_{k=1..m} dS/dx (x' + (k/m)(x - x'))``, m = ``steps``.
    """
    xp = get_array_module(x)
    check_batch(net, x)
    start = _baseline(x, baseline)
    path = x - start

    def on_path(k0, k1, first, stop):
        alphas = (xp.arange(k0 + 1, k1 + 1, dtype=x.dtype) / x.dtype.type(steps))
        return start[first:stop] + alphas.reshape(-1, 1, 1, 1, 1) * path[first:stop]

    total = _gradient_sum(net, x, target, on_path, steps, batch_size, progress,
                          "integrated gradients")
    return path * (total / x.dtype.type(steps))


def completeness_gap(net, x, target, attributions, baseline=None):
    """``|sum(attributions) - (S(x) - S(x'))|`` per image (N,): how far a set of
    attributions is from the completeness axiom; integrated gradients' gap
    shrinks as its steps grow."""
    start = _baseline(x, baseline)
    if tuple(attributions.shape) != tuple(x.shape):
        raise ValueError(f"attributions of shape {tuple(attributions.shape)} do not match the "
                         f"batch {tuple(x.shape)}")
    difference = (backprop_target(net, x, target).score
                  - backprop_target(net, start, target).score)
    xp = get_array_module(x)
    return xp.abs(attributions.reshape(x.shape[0], -1).sum(axis=1) - difference)
