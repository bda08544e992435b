r"""Softmax and the cross-entropy loss on logits.

For logits ``z`` (N, K) and integer labels ``t`` (N,):

.. math::
    p = \mathrm{softmax}(z), \quad L = -\frac{1}{N}\sum_n \log p[n, t_n], \quad
    \frac{\partial L}{\partial z} = \frac{1}{N}(p - \mathrm{onehot}(t))

Softmax subtracts the row maximum first, so large logits do not overflow.
"""
from .base import xp_of, ShapeError


def softmax(z):
    xp = xp_of(z)
    shifted = z - z.max(axis=1, keepdims=True)
    e = xp.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(z):
    xp = xp_of(z)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


class SoftmaxCrossEntropy:
    """Mean cross-entropy of softmax(logits) against integer labels."""

    def __init__(self):
        self.cache = None

    def forward(self, logits, labels):
        xp = xp_of(logits)
        if logits.ndim != 2:
            raise ShapeError(f"SoftmaxCrossEntropy: expected logits of shape (N, K), "
                             f"received {tuple(logits.shape)}")
        labels = xp.asarray(labels)
        if labels.shape != (logits.shape[0],) or labels.dtype.kind not in "iu":
            raise ShapeError(f"SoftmaxCrossEntropy: expected integer labels of shape "
                             f"({logits.shape[0]},), received {labels.dtype} {tuple(labels.shape)}")
        k = logits.shape[1]
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ValueError(f"SoftmaxCrossEntropy: labels must lie in [0, {k}), "
                             f"received values from {int(labels.min())} to {int(labels.max())}")
        rows = xp.arange(logits.shape[0])
        log_p = log_softmax(logits)
        self.cache = (xp.exp(log_p), labels)
        return -log_p[rows, labels].mean()

    def backward(self):
        if self.cache is None:
            raise RuntimeError("SoftmaxCrossEntropy: backward called before forward; "
                               "run forward(logits, labels) first")
        p, labels = self.cache
        xp = xp_of(p)
        d = p.copy()
        d[xp.arange(p.shape[0]), labels] -= 1
        return d / p.shape[0]
