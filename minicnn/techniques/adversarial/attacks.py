r"""Gradient-sign attacks in pixel space: FGSM and PGD.

Fast gradient sign method (Goodfellow et al., 2015), the L-infinity step of
size :math:`\epsilon` that raises the loss most to first order:

.. math::
    x' = \mathrm{clip}_{[0,1]}\big(x + \epsilon\,\mathrm{sign}\,\nabla_x L(x, y)\big)

Projected gradient descent (Madry et al., 2018): from a random point of the
:math:`\epsilon`-ball (``random_start``), ``steps`` signed steps of size
:math:`\alpha`, each followed by the projection back onto the ball and [0, 1]:

.. math::
    x^{t+1} = \mathrm{clip}_{[0,1]}\,\mathrm{clip}_{[x-\epsilon,\,x+\epsilon]}
              \big(x^t + \alpha\,\mathrm{sign}\,\nabla_x L(x^t, y)\big)

With ``random_start=False``, one step and :math:`\alpha = \epsilon` it is FGSM.
``targeted=True`` makes ``labels`` the classes to reach and descends their loss
(the sign flips). ``net`` may be a network (its weights file's preprocessing is
applied) or a :class:`~.pixel_space.PixelModel` such as the multi-crop model.
"""
from tqdm.auto import tqdm

from ...backend import get_array_module
from ...layers.base import as_generator
from .pixel_space import pixel_model, as_images, check_eps, check_labels


def _prepare(net, images, labels, eps):
    model = pixel_model(net)
    images = as_images(model, images)
    labels = check_labels(model.net, labels, len(images))
    return model, images, labels, check_eps(eps)


def fgsm(net, images, labels, eps, targeted=False):
    """FGSM adversarial images (N, 3, H, W) in [0, 1], in the network's dtype."""
    model, images, labels, eps = _prepare(net, images, labels, eps)
    xp = get_array_module(images)
    _, grad, _ = model.loss_gradient(images, labels)
    step = -eps if targeted else eps
    return xp.clip(images + step * xp.sign(grad), 0, 1)


def pgd(net, images, labels, eps, alpha=None, steps=10, random_start=True, targeted=False, rng=0,
        progress=False):
    """PGD adversarial images within ``eps`` (L-infinity) of ``images`` and in [0, 1].

    ``alpha`` defaults to ``2.5 * eps / steps`` (Madry et al.'s ratio); ``rng``
    (a seed or Generator) draws the random start.
    """
    model, images, labels, eps = _prepare(net, images, labels, eps)
    if int(steps) < 1:
        raise ValueError(f"steps must be at least 1, received {steps}")
    alpha = check_eps(2.5 * eps / steps if alpha is None else alpha, "alpha")
    xp = get_array_module(images)
    low, high = xp.clip(images - eps, 0, 1), xp.clip(images + eps, 0, 1)
    adversarial = images
    if random_start:
        noise = as_generator(rng).uniform(-eps, eps, size=images.shape)
        adversarial = xp.clip(images + xp.asarray(noise, dtype=images.dtype), 0, 1)
    step = -alpha if targeted else alpha
    for _ in tqdm(range(int(steps)), desc="pgd", unit="step", disable=not progress, leave=False):
        _, grad, _ = model.loss_gradient(adversarial, labels)
        adversarial = xp.minimum(xp.maximum(adversarial + step * xp.sign(grad), low), high)
    return adversarial
