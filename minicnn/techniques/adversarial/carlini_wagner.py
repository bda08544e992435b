r"""Carlini & Wagner's L2 attack (2017): the smallest change, found by Adam.

The image is written through a change of variables that keeps it in [0, 1]
without clipping, :math:`x = \tfrac12(\tanh w + 1)`, and Adam minimizes, per
image,

.. math::
    \|x - x_0\|_2^2 + c\,\max\big(z_y(x) - \max_{i \ne y} z_i(x),\; -\kappa\big)

(``y`` the true label, ``z`` the logits, :math:`\kappa` the margin by which the
wrong class must win). Its gradient on :math:`w`:

.. math::
    \frac{\partial}{\partial w} = \Big(2(x - x_0) + c\,[\text{margin} > -\kappa]\,
    \nabla_x(z_y - z_{j^*})\Big)\cdot\frac{1 - \tanh^2 w}{2}

with :math:`j^*` the strongest other class. The attack keeps, per image, the
misclassified iterate with the smallest L2 change; an image never
misclassified comes back unchanged with ``success`` False.
"""
import numpy as np
from tqdm.auto import tqdm

from ...backend import get_array_module, to_cpu
from ..optimize import Adam
from .pixel_space import pixel_model, as_images, check_labels

SQUASH = 1 - 1e-6
"""atanh(+-1) is infinite: pixels at 0 or 1 start a hair inside."""


def carlini_wagner_l2(net, images, labels, c=1.0, kappa=0.0, steps=100, lr=0.01,
                      progress=False):
    """CW-L2 adversarial images (N, 3, H, W) in [0, 1] and a dict of per-image NumPy
    arrays: ``success``, ``l2`` and ``linf`` of the change (0 where it failed)."""
    model = pixel_model(net)
    images = as_images(model, images)
    labels = check_labels(model.net, labels, len(images))
    if np.any(np.asarray(c) <= 0) or kappa < 0 or lr <= 0 or int(steps) < 1:
        raise ValueError(f"need c > 0, kappa >= 0, lr > 0 and steps >= 1; received c={c}, "
                         f"kappa={kappa}, lr={lr}, steps={steps}")
    xp = get_array_module(images)
    n = len(images)
    rows, label = xp.arange(n), xp.asarray(labels)
    c = xp.asarray(c, dtype=images.dtype).reshape(-1, 1, 1, 1) if np.ndim(c) else float(c)
    w = xp.arctanh((2 * images - 1) * SQUASH)
    optimizer = Adam(lr=lr, beta1=0.9, beta2=0.999, eps=1e-8)
    best, best_l2 = images.copy(), xp.full(n, xp.inf, dtype=images.dtype)
    for _ in tqdm(range(int(steps)), desc="carlini-wagner", unit="step", disable=not progress,
                  leave=False):
        squashed = xp.tanh(w)
        x = (squashed + 1) / 2
        logits = model.forward(x)
        others = logits.copy()
        others[rows, label] = -xp.inf
        strongest = others.argmax(axis=1)
        margin = logits[rows, label] - logits[rows, strongest]
        l2 = ((x - images) ** 2).reshape(n, -1).sum(axis=1)
        better = (margin < 0) & (l2 < best_l2)
        best = xp.where(better[:, None, None, None], x, best)
        best_l2 = xp.where(better, l2, best_l2)
        seed = xp.zeros_like(logits)
        pushing = margin > -kappa
        seed[rows, label] = pushing
        seed[rows, strongest] -= pushing
        grad_x = 2 * (x - images) + c * model.backward(seed)
        w = optimizer.step(w, grad_x * (1 - squashed * squashed) / 2)
    success = xp.isfinite(best_l2)
    change = (best - images).reshape(n, -1)
    info = {"success": to_cpu(success), "l2": to_cpu(xp.sqrt((change * change).sum(axis=1))),
            "linf": to_cpu(xp.abs(change).max(axis=1))}
    return best, {key: np.asarray(value) for key, value in info.items()}
