"""DeepDream (Mordvintsev, Olah & Tyka 2015; google/deepdream): boost what a layer
already sees.

One step (:func:`make_step`), as in the notebook::

    roll the image by a random (dy, dx) in [-jitter, jitter]
    forward to the layer;  objective L2: inject the activation itself, a = dL/da
        for L = (1/2) sum a^2  (guided: the guide's best-matching features)
    backward to the image: g = dL/dx
    x <- x + step_size r g / mean|g|;  roll back;  clip to the valid pixel range

where ``r = (high - low) / 255`` per channel turns ``step_size`` into pixel levels
of 0..255, the notebook's unit (1.5 levels), whatever the preprocessing.

:func:`dream` runs the steps over an octave pyramid: the image is shrunk
``octaves - 1`` times by ``octave_scale``; starting from the smallest, each
octave dreams on its base image plus the detail dreamed so far (upscaled), and
hands the new detail, ``dreamed - base``, to the next larger octave.

The guided objective maximizes ``sum_i max_j <a_i, y_j>``: each position i of the
image's features takes the guide's feature y_j that matches it best (the largest
dot product), whose gradient is that y_j.
"""
import numpy as np
from tqdm.auto import tqdm

from ..backend import get_array_module
from .optimize import (History, NormalizedStep, activation_objective, as_rng, check_steps,
                       checked_evaluation, clip_to_range, random_shift, roll, valid_range)
from .targets import check_batch


def dream_objective(net, layer, guide=None):
    """The loss DeepDream minimizes, ``x -> (loss, gradient)``: ``-(1/2) sum a^2`` at
    ``layer``, or with a ``guide`` image (1, C, H, W) ``-sum_i max_j <a_i, y_j>``."""
    net._require(layer)
    if guide is None:
        def l2_activation(activations):
            a = activations[layer]
            return -0.5 * float((a * a).sum()), {layer: -a}
        return activation_objective(net, layer, l2_activation, f"dream({layer})")
    check_batch(net, guide)
    if guide.shape[0] != 1:
        raise ValueError(f"the guide is one image (1, C, H, W), received a batch of "
                         f"{guide.shape[0]}")
    guide_features = net.forward(guide, stop_at=layer)
    guide_features = guide_features.reshape(guide_features.shape[1], -1)  # (C, M')

    def guided(activations):
        a = activations[layer]
        xp = get_array_module(a)
        n, c = a.shape[:2]
        flat = a.reshape(n, c, -1)  # (N, C, M)
        match = xp.matmul(flat.transpose(0, 2, 1), guide_features)  # (N, M, M') dot products
        best = match.argmax(axis=2)  # (N, M): the guide position matching each position
        chosen = guide_features[:, best]  # (C, N, M)
        loss = -float(match.max(axis=2).sum())
        return loss, {layer: -chosen.transpose(1, 0, 2).reshape(a.shape)}
    return activation_objective(net, layer, guided, f"guided dream({layer})")


def _step(objective, image, step_size, shift, bounds, step):
    rolled = roll(image, shift)
    loss, grad = checked_evaluation(objective, rolled, step)
    # step_size counts pixel levels of 0..255 (the notebook's unit): step in pixel units
    levels = (bounds[1] - bounds[0]) / 255
    rolled = NormalizedStep(step_size).step(rolled / levels, grad) * levels
    return clip_to_range(roll(rolled, (-shift[0], -shift[1])), bounds), loss


def make_step(net, image, layer, step_size=1.5, jitter=32, shift=None, rng=0, guide=None):
    """One DeepDream step on ``image`` (NCHW); returns the new image. ``shift``
    (dy, dx) fixes the roll; otherwise it is drawn from ``rng`` within ``jitter``."""
    check_batch(net, image)
    shift = random_shift(as_rng(rng), jitter) if shift is None else shift
    return _step(dream_objective(net, layer, guide), image, step_size, shift,
                 valid_range(net, image), 0)[0]


def zoom(image, factor_y, factor_x):
    """Bilinear rescale of an NCHW batch's rows and columns (scipy.ndimage.zoom or
    cupyx's, order 1)."""
    xp = get_array_module(image)
    if xp is np:
        from scipy import ndimage
    else:
        from cupyx.scipy import ndimage
    return ndimage.zoom(image, (1, 1, factor_y, factor_x), order=1)


def dream(net, image, layer, octaves=4, octave_scale=1.4, steps=10, step_size=1.5, jitter=32,
          guide=None, rng=0, progress=True):
    """DeepDream over an octave pyramid; returns ``(image, History)`` with one loss per
    step of every octave (smallest octave first)."""
    check_batch(net, image)
    check_steps(steps)
    check_steps(octaves, "octaves")
    if octave_scale <= 1:
        raise ValueError(f"octave_scale must exceed 1, received {octave_scale}")
    rng = as_rng(rng)
    objective = dream_objective(net, layer, guide)
    bases = [image]
    for _ in range(octaves - 1):
        bases.append(zoom(bases[-1], 1 / octave_scale, 1 / octave_scale))
    xp = get_array_module(image)
    detail = xp.zeros_like(bases[-1])
    history = History("normalized")
    bar = tqdm(total=steps * octaves, desc=f"dream {layer}", disable=not progress, leave=False)
    for base in reversed(bases):
        if detail.shape != base.shape:
            h, w = base.shape[2:]
            detail = zoom(detail, h / detail.shape[2], w / detail.shape[3])
        x = base + detail
        bounds = valid_range(net, x)
        for _ in range(steps):
            x, loss = _step(objective, x, step_size, random_shift(rng, jitter), bounds,
                            len(history))
            history.record(loss, len(history) + 1)
            bar.update(1)
        detail = x - base
    bar.close()
    return x, history
