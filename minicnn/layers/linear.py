r"""Fully connected layer and flattening.

Linear: input (N, I), weight ``W`` (O, I), bias ``b`` (O,), output (N, O):

.. math::
    y = x W^T + b, \qquad dx = dy\, W, \qquad dW = dy^T x, \qquad db = \sum_n dy[n]

Flatten: (N, C, H, W) -> (N, C H W); its backward reshapes the gradient back.
"""
import numpy as np

from .base import Layer, ShapeError, kaiming_uniform
from ..backend import DEFAULT_DTYPE


class Linear(Layer):
    fresh_output = True

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=DEFAULT_DTYPE):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.params["weight"] = kaiming_uniform((self.out_features, self.in_features),
                                                self.in_features, rng, dtype)
        if bias:
            self.params["bias"] = np.zeros(self.out_features, dtype=dtype)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={'bias' in self.params}"

    def forward(self, x):
        self._check_input(x, ("N", self.in_features))
        out = x @ self.params["weight"].T
        if "bias" in self.params:
            out += self.params["bias"]
        self.cache = x
        self.out_shape = out.shape
        return out

    def backward(self, dout):
        self._check_backward(dout)
        x = self.cache
        if self.param_grads:
            self.grads["weight"] = dout.T @ x
            if "bias" in self.params:
                self.grads["bias"] = dout.sum(axis=0)
        return dout @ self.params["weight"]


class Flatten(Layer):
    passes_gradient_through = True  # backward returns a view of dout
    def forward(self, x):
        self._check_input(x, None)
        if x.ndim < 2:
            raise ShapeError(f"{self._describe()}: expected input of shape (N, ...) with at least "
                             f"two axes, received {tuple(x.shape)}")
        self.cache = x.shape
        out = x.reshape(x.shape[0], -1)
        self.out_shape = out.shape
        return out

    def backward(self, dout):
        self._check_backward(dout)
        return dout.reshape(self.cache)
