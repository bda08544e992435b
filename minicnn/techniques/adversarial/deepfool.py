r"""DeepFool (Moosavi-Dezfooli et al., 2016): the nearest decision boundary, step by step.

Around the current image the network is replaced by its linearization. For the
original class :math:`k_0` and each candidate class :math:`k`, with
:math:`f_k = z_k - z_{k_0}` and :math:`w_k = \nabla_x f_k`, the linearized
boundary with class :math:`k` lies at L2 distance :math:`|f_k| / \|w_k\|_2`. The
step goes to the nearest one:

.. math::
    \hat k = \arg\min_k \frac{|f_k|}{\|w_k\|_2}, \qquad
    r = \frac{|f_{\hat k}|}{\|w_{\hat k}\|_2^2}\, w_{\hat k}

The steps add up to :math:`r_{\text{total}}`, and the image tried is
:math:`\mathrm{clip}_{[0,1]}(x + (1 + \text{overshoot})\, r_{\text{total}})`, until
its class changes. Pixels at 0 or 1 that the step would push out of [0, 1]
are left out of :math:`w_k` (the linearization of the network on the box), so
that the steps are not spent on changes the clipping undoes. For an affine
classifier and an image inside the box the linearization is exact and one
step lands on the closed-form minimal L2 perturbation (times 1 + overshoot).
The candidates are the ``candidates`` classes with the largest original
scores (all of them for ten classes), as in the paper.

Where the network curves away, a step reaches less than it predicts, and the
remaining gap, and with it the next step, can shrink to float rounding, where
a step no longer moves the image (in float32 one of 804 correctly classified
CIFAR test images stalled so for 50 steps with ResNet-20). So from the second
step on each step goes ``MIN_STEP`` further in L2 than the linearization asks,
:math:`r = (|f_{\hat k}| / \|w_{\hat k}\|_2 + 10^{-4})\, w_{\hat k} / \|w_{\hat k}\|_2`
(the constant of the authors' code); the first step stays the exact linear one.
"""
import numpy as np
from tqdm.auto import tqdm

from ...backend import get_array_module, to_cpu
from .pixel_space import pixel_model, as_images

MIN_STEP = 1e-4
"""L2 length added to every step after the first, so that a curved boundary is crossed."""


def deepfool(net, images, overshoot=0.02, steps=50, candidates=10, progress=False):
    """DeepFool adversarial images (N, 3, H, W) in [0, 1] and a dict of per-image
    NumPy arrays: ``steps``, ``success`` (the class changed), ``l2`` and ``linf``
    of the change, ``original`` and ``adversarial`` classes."""
    model = pixel_model(net)
    images = as_images(model, images)
    if overshoot < 0:
        raise ValueError(f"overshoot must be >= 0, received {overshoot}")
    if int(steps) < 1 or int(candidates) < 2:
        raise ValueError(f"need steps >= 1 and candidates >= 2 (the original class and at least "
                         f"one other), received steps={steps}, candidates={candidates}")
    xp = get_array_module(images)
    n = len(images)
    rows = xp.arange(n)
    logits = model.forward(images)
    original = logits.argmax(axis=1)
    count = min(int(candidates), model.num_classes)
    others = xp.argsort(-logits, axis=1)[:, 1:count]  # (N, count - 1), the runners-up
    total = xp.zeros_like(images)
    adversarial = images
    taken = xp.zeros(n, dtype=xp.int64)
    active = xp.ones(n, dtype=bool)
    for step in tqdm(range(int(steps)), desc="deepfool", unit="step", disable=not progress,
                     leave=False):
        push = 0.0 if step == 0 else MIN_STEP
        best_ratio = xp.full(n, xp.inf, dtype=images.dtype)
        best_step = xp.zeros_like(images)
        for j in range(others.shape[1]):
            # one backward pass (of the last forward, on the current images) gives
            # w_k = grad(z_k - z_k0) for every image at once
            seed = xp.zeros_like(logits)
            seed[rows, others[:, j]] = 1
            seed[rows, original] -= 1
            w = model.backward(seed)
            # a pixel at 0 cannot go down nor one at 1 up: the box's linearization
            w = xp.where(((adversarial <= 0) & (w < 0)) | ((adversarial >= 1) & (w > 0)), 0, w)
            f = logits[rows, others[:, j]] - logits[rows, original]
            norm2 = (w * w).reshape(n, -1).sum(axis=1)
            ratio = xp.abs(f) / xp.sqrt(norm2)
            closer = ratio < best_ratio
            best_ratio = xp.where(closer, ratio, best_ratio)
            factor = ((ratio + push) / xp.sqrt(norm2))[:, None, None, None]
            best_step = xp.where(closer[:, None, None, None], factor * w, best_step)
        total = total + xp.where(active[:, None, None, None], best_step, 0)
        taken += active
        adversarial = xp.clip(images + (1 + overshoot) * total, 0, 1)
        logits = model.forward(adversarial)
        active = active & (logits.argmax(axis=1) == original)
        if not bool(active.any()):
            break
    change = (adversarial - images).reshape(n, -1)
    label = logits.argmax(axis=1)
    info = {"steps": to_cpu(taken), "success": to_cpu(label != original),
            "l2": to_cpu(xp.sqrt((change * change).sum(axis=1))),
            "linf": to_cpu(xp.abs(change).max(axis=1)),
            "original": to_cpu(original), "adversarial": to_cpu(label)}
    return adversarial, {key: np.asarray(value) for key, value in info.items()}
