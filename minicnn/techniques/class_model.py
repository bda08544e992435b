"""Class model visualization (Simonyan, Vedaldi & Zisserman 2014) and feature
visualization: the image that a network finds most typical of a class or unit.

Maximize a target's score under an L2 prior, starting from a zero or noise image::

    I* = argmax_I  S(I) - l2 ||I||^2

where S is a class score before the softmax (or ``"LAYER:CHANNEL"``: a hidden
unit, at its strongest position). CS231n's recipe runs gradient ascent with a
fixed step, jitters the image by up to ``jitter`` pixels before each step (undone
after it), blurs it every ``blur_every`` steps and clips it to the valid pixel
range; any optimizer of :func:`.optimize.minimize` can replace the fixed step.
The defaults keep CS231n's ``l2 = 1e-3`` and blur every 10 steps; its step of 25
and jitter of 16 pixels suit 224-pixel images on its own scale, so a step of 1
and a jitter of 4 serve the 32-pixel models here (the CIFAR ResNet-56 reaches a
softmax above 0.99 for every class within 20 steps).
"""
import numpy as np

from .optimize import (as_rng, check_steps, l2_norm, minimize, network_dtype, random_image,
                       target_score, valid_range)
from .targets import input_channels, parse_target

INITS = ("zeros", "noise")


def class_model_objective(net, target, l2=1e-3):
    """The loss :func:`class_model` minimizes: ``x -> (-S(x) + l2 ||x||^2, gradient)``,
    summed over the batch."""
    if isinstance(target, str):
        parse_target(net, target, 1)  # an unknown layer fails here, not at the first step
    return -target_score(net, target) + l2 * l2_norm()


def class_model(net, target, steps=200, l2=1e-3, lr=None, optimizer="gradient", jitter=4,
                blur_every=10, blur_sigma=0.5, init="zeros", shape=None, rng=0, progress=True):
    """The image maximizing ``target``'s score minus ``l2 ||I||^2``; returns
    ``(image, History)``, the image a (N, C, H, W) batch in the network's input space.

    ``target``: a class, N classes (one image each), or ``"LAYER:CHANNEL"``.
    ``init``: 'zeros' (the mean image) or 'noise' (uniform random pixels).
    ``shape``: the batch shape; default (N, C, H, W) from the preprocessing's
    input size. ``lr`` defaults to 1 for 'gradient', 0.05 for 'adam'.
    """
    check_steps(steps)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: use 'zeros' or 'noise'")
    rng = as_rng(rng)
    xp = net.array_module()
    dtype = network_dtype(net)
    if shape is None:
        n = 1 if isinstance(target, str) or np.ndim(target) == 0 else len(target)
        size = net.metadata.get("preprocessing", {}).get("input_size")
        if size is None:
            raise ValueError("class_model: give shape=(N, C, H, W); the network's preprocessing "
                             "names no input_size")
        shape = (n, input_channels(net), *size)
    start = xp.zeros(shape, dtype=dtype)
    bounds = valid_range(net, start)
    if init == "noise":
        start = random_image(rng, shape, bounds, xp, dtype)
    if lr is None:
        lr = {"gradient": 1.0, "adam": 0.05, "normalized": 0.1}.get(optimizer)
    return minimize(class_model_objective(net, target, l2), start, optimizer, steps, lr=lr,
                    bounds=bounds, jitter=jitter if optimizer != "lbfgs" else 0,
                    blur_every=blur_every if optimizer != "lbfgs" else 0, blur_sigma=blur_sigma,
                    rng=rng, progress=progress, desc="class model")
