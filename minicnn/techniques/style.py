"""Neural style transfer (Gatys, Ecker & Bethge 2016): an image with one image's
content and another's style.

With F^l the features of the image at layer l as a (C, M = H W) matrix, P those
of the content image and S those of the style image::

    content loss   L_c = (1/2) sum (F - P)^2                     dL_c/dF = F - P
    Gram matrix    G = F F^T  (C x C);  A the style image's
    style loss     E_l = sum (G - A)^2 / (4 C^2 M^2)             dE_l/dF = (G - A) F / (C^2 M^2)
    total          content_weight L_c + style_weight sum_l w_l E_l + tv_weight TV(x)

with the layer weights w_l = 1/L for a list of L layers, or given as a dict.
Any statistic of the features that ignores where things are serves as a style
(``statistic=``):

* ``"mean"``: the channel means mu = F 1 / M; ``E = sum (mu - a)^2 / C``,
  ``dE/dF = 2 (mu - a) / (C M)`` on every position;
* ``"mean_std"``: means and standard deviations (batch norm's statistics),
  ``sigma = sqrt(var + 1e-5)``; ``E = (sum (mu - a)^2 + sum (sigma - s)^2) / C``,
  ``dE/dF = 2 (mu - a) / (C M) + 2 (sigma - s) (F - mu) / (C M sigma)``.

Several style images blend: their statistics are averaged with ``style_blend``
weights. ``preserve_colors`` transfers on luminance only (Gatys et al., 2017):
both images become gray images of their luminance Y (the style's Y matched to the
content's mean and deviation), and the result's Y joins the content's colour
channels I and Q (YIQ).
"""
import warnings

import numpy as np

from ..backend import get_array_module
from .dream import zoom
from .optimize import (activation_objective, as_rng, check_steps, clip_to_range, deepest,
                       minimize, network_dtype, preprocessing_of, random_image, total_variation,
                       valid_range)
from .targets import check_batch

STATISTICS = ("gram", "mean", "mean_std")
INITS = ("content", "noise")
STD_EPSILON = 1e-5


def gram_matrix(features):
    """``G = F F^T`` per image: (N, C, H, W) -> (N, C, C)."""
    xp = get_array_module(features)
    flat = features.reshape(features.shape[0], features.shape[1], -1)
    return xp.matmul(flat, flat.transpose(0, 2, 1))


def _check_statistic(statistic):
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}: use one of "
                         f"{', '.join(map(repr, STATISTICS))}")


def style_statistic(features, statistic="gram"):
    """The style statistic of (N, C, H, W) features: the Gram matrices (N, C, C),
    the means (N, C), or means and standard deviations stacked (N, 2, C)."""
    _check_statistic(statistic)
    if statistic == "gram":
        return gram_matrix(features)
    flat = features.reshape(features.shape[0], features.shape[1], -1)
    mean = flat.mean(axis=2)
    if statistic == "mean":
        return mean
    xp = get_array_module(features)
    std = xp.sqrt(flat.var(axis=2) + STD_EPSILON)
    return xp.stack([mean, std], axis=1)


def style_loss(features, target, statistic="gram"):
    """``(E, dE/dF)`` for features (N, C, H, W) against a target statistic (as
    :func:`style_statistic` returns, for one image or N); E summed over images."""
    n, c = features.shape[:2]
    m = features.shape[2] * features.shape[3]
    flat = features.reshape(n, c, m)
    difference = style_statistic(features, statistic) - target
    xp = get_array_module(features)
    if statistic == "gram":
        loss = float((difference * difference).sum()) / (4 * c * c * m * m)
        return loss, (xp.matmul(difference, flat) / (c * c * m * m)).reshape(features.shape)
    loss = float((difference * difference).sum()) / c
    if statistic == "mean":
        grad = xp.broadcast_to(2 * difference[:, :, None] / (c * m), flat.shape)
        return loss, grad.reshape(features.shape)
    mean = flat.mean(axis=2, keepdims=True)
    std = xp.sqrt(flat.var(axis=2, keepdims=True) + STD_EPSILON)
    grad = (2 * difference[:, 0, :, None] / (c * m)
            + 2 * difference[:, 1, :, None] * (flat - mean) / (c * m * std))
    return loss, grad.reshape(features.shape)


def content_loss(features, target):
    """``((1/2) sum (F - P)^2, F - P)``."""
    difference = features - target
    return 0.5 * float((difference * difference).sum()), difference


def layer_weights(style_layers):
    """``{layer: weight}`` from a list (1/L each) or a dict (as given)."""
    if isinstance(style_layers, str):
        style_layers = [style_layers]
    if isinstance(style_layers, dict):
        weights = {name: float(w) for name, w in style_layers.items()}
    else:
        weights = {name: 1.0 / len(style_layers) for name in style_layers}
    if not weights:
        raise ValueError("style_layers is empty: name at least one layer")
    return weights


def _fit_style(style, content):
    """Resize a style image to the content's size, saying so."""
    if style.shape[2:] != content.shape[2:]:
        warnings.warn(f"style image of size {tuple(style.shape[2:])} resized to the content's "
                      f"{tuple(content.shape[2:])}", stacklevel=3)
        style = zoom(style, content.shape[2] / style.shape[2], content.shape[3] / style.shape[3])
    return style


def _styles(style, style_blend):
    styles = list(style) if isinstance(style, (list, tuple)) else [style]
    if style_blend is None:
        style_blend = [1.0] * len(styles)
    if len(style_blend) != len(styles) or sum(style_blend) <= 0:
        raise ValueError(f"style_blend: give one positive weight per style image ({len(styles)}), "
                         f"received {style_blend}")
    total = float(sum(style_blend))
    return styles, [w / total for w in style_blend]


GATYS_VGG_LAYERS = ("relu4_2", ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"])
"""Gatys et al.'s layers in VGG: content conv4_2 (after its ReLU), style the first
ReLU of each block."""


def default_layers(net):
    """(content layer, style layers): in a VGG, Gatys et al.'s; in a ResNet, the
    second-deepest stage, and the first ReLU with every stage (res2, res3, ...)."""
    names = net.names()
    if all(name in names for name in [GATYS_VGG_LAYERS[0], *GATYS_VGG_LAYERS[1]]):
        return GATYS_VGG_LAYERS[0], list(GATYS_VGG_LAYERS[1])
    stages = [name for name in names if name in net.aliases and name.startswith("res")]
    if len(stages) < 2:
        raise ValueError("this network has no stage names res2, res3, ...: give content_layer "
                         "and style_layers explicitly (net.names() lists the layers)")
    first_relu = next(name for name in names if name.endswith("relu"))
    return stages[-2], [first_relu, *stages]


def style_objective(net, content, style, content_layer=None, style_layers=None,
                    content_weight=1.0, style_weight=1e5, tv_weight=0.0, statistic="gram",
                    style_blend=None):
    """The loss :func:`style_transfer` minimizes, ``x -> (loss, gradient)``."""
    _check_statistic(statistic)
    check_batch(net, content)
    defaults = default_layers(net) if content_layer is None or style_layers is None else None
    content_layer = content_layer or defaults[0]
    weights = layer_weights(style_layers if style_layers is not None else defaults[1])
    layers = list(dict.fromkeys([content_layer, *weights]))
    for name in layers:
        net._require(name)
    styles, blend = _styles(style, style_blend)
    targets = {name: 0 for name in weights}
    for image, share in zip(styles, blend):
        check_batch(net, image)
        _, features = net.forward(_fit_style(image, content), stop_at=deepest(net, layers),
                                  capture=list(weights))
        for name in weights:
            targets[name] = targets[name] + share * style_statistic(features[name], statistic)
    _, captured = net.forward(content, stop_at=content_layer, capture=[content_layer])
    content_target = captured[content_layer]

    def loss_and_gradients(features):
        loss_c, grad_c = content_loss(features[content_layer], content_target)
        total = content_weight * loss_c
        grads = {content_layer: content_weight * grad_c}
        for name, weight in weights.items():
            loss_s, grad_s = style_loss(features[name], targets[name], statistic)
            total += style_weight * weight * loss_s
            grads[name] = grads.get(name, 0) + style_weight * weight * grad_s
        return total, grads

    objective = activation_objective(net, layers, loss_and_gradients, f"style({statistic})")
    return objective + tv_weight * total_variation(2.0) if tv_weight else objective


# -- colours: luminance-only transfer in YIQ --------------------------------------
YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _to_rgb(x, spec):
    """Network input space -> RGB pixel values 0..255 (N, 3, H, W), on x's device."""
    xp = get_array_module(x)
    shape = (1, 3, 1, 1)
    mean = xp.asarray(spec.get("mean", [0, 0, 0]), x.dtype).reshape(shape)
    std = xp.asarray(spec.get("std", [1, 1, 1]), x.dtype).reshape(shape)
    pixels = (x * std + mean) / spec.get("scale", 1.0)
    return pixels[:, ::-1] if spec.get("color", "RGB") == "BGR" else pixels


def _from_rgb(pixels, spec):
    xp = get_array_module(pixels)
    shape = (1, 3, 1, 1)
    if spec.get("color", "RGB") == "BGR":
        pixels = pixels[:, ::-1]
    mean = xp.asarray(spec.get("mean", [0, 0, 0]), pixels.dtype).reshape(shape)
    std = xp.asarray(spec.get("std", [1, 1, 1]), pixels.dtype).reshape(shape)
    return xp.ascontiguousarray((pixels * spec.get("scale", 1.0) - mean) / std)


def _yiq(pixels, matrix):
    xp = get_array_module(pixels)
    return xp.einsum("ij,njhw->nihw", xp.asarray(matrix, pixels.dtype), pixels)


def luminance_image(x, spec, match=None):
    """The gray image (Y, Y, Y) of x's luminance Y, in the network's input space; with
    ``match``, Y's mean and deviation are set to ``match``'s luminance's. These are the
    images a ``preserve_colors`` transfer works on (measure its style loss on them)."""
    y = _yiq(_to_rgb(x, spec), YIQ)[:, :1]
    if match is not None:
        reference = _yiq(_to_rgb(match, spec), YIQ)[:, :1]
        y = (y - y.mean()) / (y.std() + 1e-8) * reference.std() + reference.mean()
    xp = get_array_module(x)
    return _from_rgb(xp.concatenate([y, y, y], axis=1), spec)


def _with_colors_of(result, content, spec):
    yiq = _yiq(_to_rgb(content, spec), YIQ)
    luminance = _yiq(_to_rgb(result, spec), YIQ)[:, :1]
    xp = get_array_module(result)
    mixed = xp.concatenate([luminance, yiq[:, 1:]], axis=1)
    return _from_rgb(_yiq(mixed, np.linalg.inv(YIQ)), spec)


def style_transfer(net, content, style, content_layer=None, style_layers=None,
                   content_weight=1.0, style_weight=1e5, tv_weight=0.0, statistic="gram",
                   init="content", optimizer="lbfgs", steps=200, lr=None, style_blend=None,
                   preserve_colors=False, rng=0, progress=True):
    """Gatys et al.'s style transfer; returns ``(image, History)``.

    ``content``: an NCHW batch; ``style``: one (1, C, H, W) image or a list of them
    (blended by ``style_blend`` weights; another size is resized, with a warning).
    Layers default to :func:`default_layers`. ``init``: 'content' or 'noise'.
    ``optimizer``: 'lbfgs' (``steps`` iterations) or a step rule with ``lr``.
    """
    check_steps(steps)
    _check_statistic(statistic)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: use 'content' or 'noise'")
    check_batch(net, content)
    content = content.astype(network_dtype(net), copy=False)
    spec = preprocessing_of(net)
    if preserve_colors:
        styles = style if isinstance(style, (list, tuple)) else [style]
        style = [luminance_image(_fit_style(s, content), spec, match=content) for s in styles]
        original, content = content, luminance_image(content, spec)
    objective = style_objective(net, content, style, content_layer, style_layers, content_weight,
                                style_weight, tv_weight, statistic, style_blend)
    bounds = valid_range(net, content)
    xp = get_array_module(content)
    start = content.copy() if init == "content" else random_image(
        as_rng(rng), content.shape, bounds, xp, content.dtype)
    image, history = minimize(objective, start, optimizer, steps, lr=lr, bounds=bounds, rng=rng,
                              progress=progress, desc=f"style ({statistic})")
    if preserve_colors:
        image = clip_to_range(_with_colors_of(image, original, spec), bounds)
    return image, history
