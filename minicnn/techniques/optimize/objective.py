"""Objectives: functions ``x -> (loss, dloss/dx)`` that add and scale like numbers.

An objective wraps such a function; ``a + b``, ``a - b``, ``3 * a`` and ``-a``
are objectives too (Lucid's idea), so a technique writes its loss as it reads::

    loss = -class_score(net, 5) + 1e-3 * l2_norm()

Calling an objective returns the loss as a Python float (summed over the batch)
and the gradient as an array shaped like ``x`` on ``x``'s device.
"""


class Objective:
    """A differentiable scalar function of an image batch."""

    def __init__(self, function, name="objective"):
        self.function = function
        self.name = name

    def __call__(self, x):
        loss, grad = self.function(x)
        return float(loss), grad

    def __repr__(self):
        return f"Objective({self.name})"

    def __add__(self, other):
        other = as_objective(other)
        return Objective(lambda x: _sum(self(x), other(x)), f"{self.name} + {other.name}")

    def __sub__(self, other):
        return self + (-1.0) * as_objective(other)

    def __neg__(self):
        return (-1.0) * self

    def __mul__(self, weight):
        weight = float(weight)
        return Objective(lambda x: _scaled(weight, self(x)), f"{weight:g} * {self.name}")

    __rmul__ = __mul__


def _sum(a, b):
    return a[0] + b[0], a[1] + b[1]


def _scaled(weight, value):
    return weight * value[0], weight * value[1]


def as_objective(value, name="objective"):
    """An :class:`Objective` from itself or from a plain function ``x -> (loss, grad)``."""
    if isinstance(value, Objective):
        return value
    if not callable(value):
        raise TypeError(f"an objective is a function x -> (loss, gradient), received "
                        f"{type(value).__name__}")
    return Objective(value, getattr(value, "__name__", name))
