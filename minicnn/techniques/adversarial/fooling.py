r"""Fooling images: push an image, or noise, until the network is sure of a class.

The image climbs the log-probability of the target class with signed steps
(the targeted, unbounded form of FGSM's step, each pixel moving at most
``step`` per iteration):

.. math::
    x^{t+1} = \mathrm{clip}_{[0,1]}\big(x^t - \text{step}\cdot
              \mathrm{sign}\,\nabla_x(-\log p_{\text{target}}(x^t))\big)

and each image stops as soon as :math:`p_{\text{target}} \ge` ``confidence``
(99.6 % by default, the lecture's figure for noise pushed to a class). The size
of the change is reported in L-infinity (at most ``steps * step``) and L2.
"""
import numpy as np
from tqdm.auto import tqdm

from ...backend import get_array_module, to_cpu
from ...layers import softmax
from ...layers.base import as_generator
from .pixel_space import pixel_model, as_images, check_labels, check_eps


def _start_images(model, start, count, rng):
    if isinstance(start, str):
        if start != "noise":
            raise ValueError(f"start must be 'noise' or images in [0, 1], received {start!r}")
        xp = model.net.array_module()
        height, width = model.spec.get("input_size") or (32, 32)
        noise = as_generator(rng).uniform(0, 1, size=(count, 3, int(height), int(width)))
        return xp.asarray(noise, dtype=model.dtype)
    if getattr(start, "ndim", 0) == 3:
        start = start[None]
    return as_images(model, start)


def fooling_image(net, target, start="noise", confidence=0.996, max_steps=200, step=1 / 255,
                  rng=0, progress=False):
    """Images that the network assigns to ``target`` with probability >= ``confidence``.

    ``target``: a class index, or one per image. ``start``: ``"noise"`` (uniform
    noise, one image per target) or images in [0, 1], (3, H, W) or (N, 3, H, W).
    Returns ``(images, info)``: images (N, 3, H, W) and a dict of NumPy arrays
    per image: ``steps`` taken, ``probability`` of the target reached,
    ``reached`` (probability >= confidence), ``linf`` and ``l2`` of the change.
    """
    model = pixel_model(net)
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, received {confidence}")
    step = check_eps(step, "step")
    if int(max_steps) < 0:
        raise ValueError(f"max_steps must be >= 0 (0 measures the start only), received "
                         f"{max_steps}")
    count = np.size(target) if np.ndim(target) else 1
    images = _start_images(model, start, count, rng)
    targets = check_labels(model.net, target, len(images), "target")
    xp = get_array_module(images)
    rows, index = xp.arange(len(images)), xp.asarray(targets)
    original = images.copy()
    steps = xp.zeros(len(images), dtype=xp.int64)
    bar = tqdm(range(int(max_steps) + 1), desc="fooling", unit="step", disable=not progress,
               leave=False)
    for iteration in bar:  # each pass measures the images and, when needed, moves them
        _, grad, logits = model.loss_gradient(images, targets)
        probability = softmax(logits)[rows, index]
        active = probability < confidence
        if iteration == int(max_steps) or not bool(active.any()):
            break
        moved = xp.clip(images - step * xp.sign(grad), 0, 1)
        images = xp.where(active[:, None, None, None], moved, images)
        steps += active
    change = (images - original).reshape(len(images), -1)
    info = {"steps": to_cpu(steps), "probability": to_cpu(probability),
            "reached": to_cpu(probability >= confidence),
            "linf": to_cpu(xp.abs(change).max(axis=1)),
            "l2": to_cpu(xp.sqrt((change * change).sum(axis=1)))}
    return images, info
