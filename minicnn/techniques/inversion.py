"""Feature inversion (Mahendran & Vedaldi 2015): given a CNN code, which image has it?

With the code ``Phi0 = Phi(x0)`` of an image at a layer, find::

    x* = argmin_x  ||Phi(x) - Phi0||^2 / ||Phi0||^2
                   + alpha_weight N_alpha(x) + tv_weight N_TV(x)

per image, where the priors are normalized by the image's size and the valid
range's magnitude ``B = max |bound|`` so their weights do not depend on the
preprocessing (Mahendran & Vedaldi's scaling, with ``V = B / 6.5``)::

    N_alpha(x) = sum |x|^alpha / (H W B^alpha)
    N_TV(x)    = sum d_ij^(beta/2) / (H W V^beta)      (see .optimize.regularizers)

The gradient of the data term on the code is ``2 (Phi(x) - Phi0) / ||Phi0||^2``,
injected at the layer and carried back to the image. L-BFGS-B within the valid
pixel range is the default optimizer: :func:`compare_optimizers` runs it beside
gradient descent and Adam for the same number of evaluations.
"""
import numpy as np

from ..backend import get_array_module
from .optimize import (activation_objective, alpha_norm, as_rng, check_steps, minimize,
                       network_dtype, random_image, total_variation, valid_range)
from .targets import check_batch

INITS = ("zeros", "noise")


def _prior_scales(net, x, alpha, beta):
    low, high = valid_range(net, x)
    xp = get_array_module(x)
    bound = float(xp.maximum(xp.abs(low), xp.abs(high)).max())
    pixels = x.shape[2] * x.shape[3]
    variation = bound / 6.5
    return 1.0 / (pixels * bound ** alpha), 1.0 / (pixels * variation ** beta)


def inversion_objective(net, image, layer, alpha=6.0, alpha_weight=1e-3, beta=2.0,
                        tv_weight=1e-3):
    """The loss :func:`invert` minimizes, ``x -> (loss, gradient)``, for the code of
    ``image`` (an NCHW batch) at ``layer``; the loss is summed over the batch."""
    check_batch(net, image)
    code = net.forward(image, stop_at=layer)
    axes = tuple(range(1, code.ndim))
    norms = (code * code).sum(axis=axes, keepdims=True)  # ||Phi0||^2 per image

    def data_term(activations):
        difference = activations[layer] - code
        loss = float(((difference * difference) / norms).sum())
        return loss, {layer: 2 * difference / norms}

    objective = activation_objective(net, layer, data_term, f"inversion({layer})")
    alpha_scale, tv_scale = _prior_scales(net, image, alpha, beta)
    if alpha_weight:
        objective = objective + (alpha_weight * alpha_scale) * alpha_norm(alpha)
    if tv_weight:
        objective = objective + (tv_weight * tv_scale) * total_variation(beta)
    return objective


def code_error(net, x, image, layer):
    """``||Phi(x) - Phi(image)|| / ||Phi(image)||`` per image, a NumPy array (N,)."""
    from ..backend import to_cpu
    target = net.forward(image, stop_at=layer)
    reached = net.forward(x, stop_at=layer)
    axes = tuple(range(1, target.ndim))
    error = (((reached - target) ** 2).sum(axis=axes) / (target ** 2).sum(axis=axes)) ** 0.5
    return np.asarray(to_cpu(error), np.float64)


def start_image(net, image, init="zeros", rng=0):
    """The start of an inversion: uniform random pixels ('noise') or the mean image
    ('zeros'), shaped like ``image``."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: use 'noise' or 'zeros'")
    xp = get_array_module(image)
    dtype = network_dtype(net)
    if init == "zeros":
        return xp.zeros(image.shape, dtype=dtype)
    return random_image(as_rng(rng), image.shape, valid_range(net, image), xp, dtype)


def invert(net, image, layer, steps=200, optimizer="lbfgs", lr=None, alpha=6.0,
           alpha_weight=1e-3, beta=2.0, tv_weight=1e-3, init="zeros", max_evaluations=None,
           rng=0, progress=True):
    """Reconstruct ``image`` (NCHW) from its code at ``layer``; returns
    ``(reconstruction, History)``. ``steps``: L-BFGS iterations (or steps of the
    'gradient' / 'adam' rules, with ``lr``); ``init``: 'noise' or 'zeros'."""
    check_steps(steps)
    net._require(layer)  # KeyError naming close matches
    objective = inversion_objective(net, image, layer, alpha, alpha_weight, beta, tv_weight)
    start = start_image(net, image, init, rng)
    return minimize(objective, start, optimizer, steps, lr=lr, bounds=valid_range(net, start),
                    max_evaluations=max_evaluations, rng=rng, progress=progress,
                    desc=f"invert {layer}")


def compare_optimizers(net, image, layer, evaluations=100, learning_rates=None, rng=0,
                       progress=True, **objective_options):
    """The same inversion by L-BFGS, gradient descent and Adam, each allowed
    ``evaluations`` objective evaluations from the same start; gradient descent
    and Adam try each of their ``learning_rates`` and keep the lowest final loss.
    Returns ``{name: (image, History, lr)}``."""
    learning_rates = learning_rates or {"gradient": [1.0, 10.0, 100.0],
                                        "adam": [0.01, 0.03, 0.1, 0.3]}
    objective = inversion_objective(net, image, layer, **objective_options)
    start = start_image(net, image, "zeros", rng)
    bounds = valid_range(net, start)
    results = {"lbfgs": (*minimize(objective, start, "lbfgs", evaluations, bounds=bounds,
                                   max_evaluations=evaluations, progress=progress,
                                   desc="L-BFGS"), None)}
    for name, rates in learning_rates.items():
        best = None
        for lr in rates:
            x, history = minimize(objective, start, name, evaluations, lr=lr, bounds=bounds,
                                  rng=rng, progress=progress, desc=f"{name} lr={lr:g}")
            if best is None or history.loss[-1] < best[1].loss[-1]:
                best = (x, history, lr)
        results[name] = best
    return results
