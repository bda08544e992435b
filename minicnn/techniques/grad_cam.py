"""Grad-CAM (Selvaraju et al. 2017): where, at a layer's resolution, the evidence
for the target lies; and guided Grad-CAM, its product with guided backprop.

For the layer's activations ``A`` (N, K, h, w) and the target's score ``S``:

    alpha_k = (1 / hw) sum_{i,j} dS / dA_k[i, j]      (the channel's weight)
    L = ReLU(sum_k alpha_k A_k)                       (N, h, w)

The map is brought to the image by bilinear interpolation (:func:`upsample`);
guided Grad-CAM multiplies it into the guided-backprop signal, pixel by pixel.
"""
from ..backend import get_array_module
from .saliency import guided_backprop
from .targets import backprop_target


def grad_cam(net, x, target, layer):
    """The Grad-CAM map (N, h, w) of ``target`` at ``layer`` (a name from ``net.names()``,
    e.g. the last stage's alias ``res4`` or ``res5``), at the layer's resolution."""
    try:
        result = backprop_target(net, x, target, capture=[layer])
    except ValueError as error:
        if "stop_at" not in str(error):
            raise
        raise ValueError(f"Grad-CAM at layer {layer!r} cannot explain the target {target!r}: "
                         f"the layer comes after the target's own layer; pick a layer before "
                         "it, or a class target") from None
    activations, gradients = result.activations[layer], result.gradients[layer]
    if activations.ndim != 4:
        raise ValueError(f"Grad-CAM needs a layer with spatial maps (N, K, h, w); layer "
                         f"{layer!r} gives {tuple(activations.shape)}: pick a convolutional "
                         "layer or a stage such as 'res4'")
    xp = get_array_module(activations)
    alpha = gradients.mean(axis=(2, 3))
    weighted = (alpha[:, :, None, None] * activations).sum(axis=1)
    return xp.maximum(weighted, 0)


def _source_positions(xp, size_in, size_out, dtype):
    """For each output index, the two input indices and the weight of the second,
    with pixel centres aligned (``src = (i + 1/2) size_in / size_out - 1/2``, clamped
    at 0), the convention of PIL, OpenCV and torch's ``align_corners=False``."""
    src = (xp.arange(size_out, dtype=dtype) + 0.5) * (size_in / size_out) - 0.5
    src = xp.maximum(src, 0)
    low = xp.minimum(src.astype(xp.int64), size_in - 1)
    high = xp.minimum(low + 1, size_in - 1)
    return low, high, (src - low).astype(dtype)


def upsample(maps, size):
    """Bilinear resize of (N, h, w) maps to ``size`` (an int or (H, W))."""
    if getattr(maps, "ndim", None) != 3:
        raise ValueError(f"upsample takes (N, h, w) maps, received shape "
                         f"{tuple(getattr(maps, 'shape', ()))}")
    height, width = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"upsample: the size must be positive, received {size!r}")
    xp = get_array_module(maps)
    dtype = maps.dtype if maps.dtype.kind == "f" else xp.float64
    maps = maps.astype(dtype, copy=False)
    top, bottom, wy = _source_positions(xp, maps.shape[1], height, dtype)
    left, right, wx = _source_positions(xp, maps.shape[2], width, dtype)
    rows = maps[:, top] * (1 - wy)[:, None] + maps[:, bottom] * wy[:, None]
    return rows[:, :, left] * (1 - wx) + rows[:, :, right] * wx


def guided_grad_cam(net, x, target, layer):
    """Guided backprop times the Grad-CAM map upsampled to the image: (N, C, H, W)."""
    cam = upsample(grad_cam(net, x, target, layer), x.shape[2:])
    return guided_backprop(net, x, target) * cam[:, None]
