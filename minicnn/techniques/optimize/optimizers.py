"""Step rules that move an image against a gradient, on NumPy or CuPy arrays.

Every rule *descends*: ``step(x, g)`` returns the image after one move against
``g = dL/dx``. A technique that ascends a score minimizes its negative.

* :class:`GradientStep`: ``x - lr g``, the fixed step of Simonyan et al. and CS231n.
* :class:`NormalizedStep`: ``x - (step_size / mean|g|) g``, DeepDream's step, whose
  size does not depend on the gradient's scale.
* :class:`Adam` (Kingma & Ba 2015): per-pixel steps from running moments,
  ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
  ``x - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``.

L-BFGS is not a step rule: scipy drives it (:mod:`.loop`).
"""
from ...backend import get_array_module


class GradientStep:
    """Fixed step: ``x - lr g``."""

    def __init__(self, lr=1.0):
        self.lr = float(lr)

    def step(self, x, grad):
        return x - self.lr * grad

    def reset(self):
        return self


class NormalizedStep:
    """DeepDream's step: ``x - step_size g / mean|g|`` (Mordvintsev et al. 2015)."""

    def __init__(self, step_size=1.5):
        self.step_size = float(step_size)

    def step(self, x, grad):
        xp = get_array_module(grad)
        scale = xp.abs(grad).mean()
        # a zero gradient (a dead layer) leaves the image as it is instead of dividing by 0
        return x - self.step_size * grad / xp.where(scale > 0, scale, 1)

    def reset(self):
        return self


class Adam:
    """Adam (Kingma & Ba 2015) on an array of any shape; ``step(x, grad)`` returns
    the updated ``x`` (a descent step). The moments live on ``x``'s device and
    start anew when ``x`` changes shape or after :meth:`reset`."""

    def __init__(self, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8):
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam: beta1 and beta2 must lie in [0, 1), received {beta1}, {beta2}")
        self.lr, self.beta1, self.beta2, self.eps = float(lr), beta1, beta2, eps
        self.reset()

    def reset(self):
        self.m = self.v = None
        self.t = 0
        return self

    def step(self, x, grad):
        xp = get_array_module(x, grad)
        if self.m is None or self.m.shape != grad.shape:
            self.m, self.v, self.t = xp.zeros_like(grad), xp.zeros_like(grad), 0
        self.t += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad * grad
        m_hat = self.m / (1 - self.beta1 ** self.t)
        v_hat = self.v / (1 - self.beta2 ** self.t)
        return x - self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)


STEP_RULES = {"gradient": GradientStep, "normalized": NormalizedStep, "adam": Adam}


def make_optimizer(name, lr=None):
    """A step rule by name ('gradient', 'normalized', 'adam') with learning rate ``lr``
    (its default when None), or an object with ``step(x, grad)`` given as is."""
    if hasattr(name, "step"):
        return name
    if name not in STEP_RULES:
        raise ValueError(f"unknown optimizer {name!r}: use one of "
                         f"{', '.join(map(repr, [*STEP_RULES, 'lbfgs']))}")
    return STEP_RULES[name]() if lr is None else STEP_RULES[name](lr)
