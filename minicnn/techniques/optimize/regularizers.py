"""Image priors with their gradients: each is a function ``x -> (loss, dloss/dx)``
on an NCHW batch, the loss a Python float summed over the batch.

* L2 (Simonyan et al. 2014): ``R(x) = sum x^2``, ``dR/dx = 2 x``.
* alpha-norm (Mahendran & Vedaldi 2015): ``R(x) = sum |x|^alpha``,
  ``dR/dx = alpha |x|^(alpha-1) sign(x)``; a large alpha (6) keeps pixels in range.
* total variation to the power beta/2 (Mahendran & Vedaldi 2015), per channel,
  over the (H-1) x (W-1) positions that have a right and a lower neighbour::

      d_ij = (x[i, j+1] - x[i, j])^2 + (x[i+1, j] - x[i, j])^2
      TV(x) = sum_ij d_ij^(beta/2)
      dTV/dx[i, j]   = -beta d_ij^(beta/2 - 1) (dx_ij + dy_ij)
      dTV/dx[i, j+1] += beta d_ij^(beta/2 - 1) dx_ij,   likewise dy_ij at x[i+1, j]

  beta = 2 is the squared finite differences; beta < 2 lets edges stay sharp. Where
  ``d_ij = 0`` and beta < 2 the gradient's zero is the subgradient taken.
"""
from ...backend import get_array_module
from .objective import Objective


def l2(x):
    """``(sum x^2, 2 x)``."""
    return float((x * x).sum()), 2 * x


def alpha_norm_value(x, alpha=6.0):
    """``(sum |x|^alpha, alpha |x|^(alpha-1) sign(x))``."""
    if alpha < 1:
        raise ValueError(f"alpha-norm: alpha must be at least 1, received {alpha}")
    xp = get_array_module(x)
    magnitude = xp.abs(x)
    return float((magnitude ** alpha).sum()), alpha * magnitude ** (alpha - 1) * xp.sign(x)


def total_variation_value(x, beta=2.0):
    """``(TV(x)^(beta/2) summed over channels and images, its gradient)``."""
    if beta < 1:
        raise ValueError(f"total variation: beta must be at least 1, received {beta}")
    xp = get_array_module(x)
    right = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    down = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    d = right * right + down * down
    if beta == 2:
        power, slope = d, 2.0  # a scalar: no array of twos to allocate and multiply
    else:
        safe = xp.where(d > 0, d, 1)
        power = safe ** (beta / 2) * (d > 0)
        slope = beta * safe ** (beta / 2 - 1) * (d > 0)
    grad = xp.zeros_like(x)
    grad[:, :, :-1, :-1] -= slope * (right + down)
    grad[:, :, :-1, 1:] += slope * right
    grad[:, :, 1:, :-1] += slope * down
    return float(power.sum()), grad


def l2_norm():
    """The L2 prior as an :class:`Objective`."""
    return Objective(l2, "l2")


def alpha_norm(alpha=6.0):
    """The alpha-norm prior as an :class:`Objective`."""
    if alpha < 1:
        raise ValueError(f"alpha-norm: alpha must be at least 1, received {alpha}")
    return Objective(lambda x: alpha_norm_value(x, alpha), f"alpha_norm({alpha:g})")


def total_variation(beta=2.0):
    """TV^(beta/2) as an :class:`Objective`."""
    if beta < 1:
        raise ValueError(f"total variation: beta must be at least 1, received {beta}")
    return Objective(lambda x: total_variation_value(x, beta), f"tv({beta:g})")
