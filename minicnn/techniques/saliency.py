"""The saliency family: gradients of a target with respect to the image.

Each method returns a signal shaped like the batch ``x`` (N, C, H, W), in the
network's input space; :func:`saliency_map` turns it into a heat map.

* vanilla gradient (Simonyan et al. 2014): ``g = d S / d x``;
"""
from ..backend import get_array_module
from .targets import input_gradient


def saliency_map(signal):
    """(N, C, H, W) -> (N, H, W): ``M[n, i, j] = max_c |g[n, c, i, j]|`` (Simonyan et al.)."""
    if getattr(signal, "ndim", None) != 4:
        raise ValueError(f"saliency_map takes an (N, C, H, W) signal, received shape "
                         f"{tuple(getattr(signal, 'shape', ()))}; give one image as g[None]")
    xp = get_array_module(signal)
    return xp.abs(signal).max(axis=1)


def vanilla_gradient(net, x, target):
    """``d S / d x``: how the target's score ``S`` changes with each input value."""
    return input_gradient(net, x, target)
