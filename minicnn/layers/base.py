"""The layer protocol shared by every layer.

A layer is a small object with

* ``forward(x)``: computes the output and keeps what backward needs in ``self.cache``;
* ``backward(dout)``: takes dL/d(output), returns dL/d(input) and stores the
  parameter gradients in ``self.grads`` (same keys as ``self.params``);
* ``params`` / ``grads``: dicts of arrays; ``buffers``: non-trained state such as
  batch-norm running statistics;
* ``training``: switched by ``train()`` and ``eval()``;
* ``param_grads``: when False, backward skips the parameter gradients (used when
  only the gradient on the input image is wanted, which is most visualizations);
* ``input_grad``: when False, a layer that can (Conv2d) skips the gradient on its
  input and returns None (a training step needs none on the images);
* ``fresh_output`` (class attribute): True when forward always returns a new
  array, which a network pass may then let the next layer overwrite
  (``forward_inplace``, see :meth:`minicnn.network.Network.forward`);
* ``inplace_keeps_cache`` (class attribute): True when ``forward_inplace``
  also keeps what backward needs, so a pass that caches may use it too;
* ``keeps_output`` (class attribute): True when the layer's cache holds its own
  output, which a pass that caches must then not let the next layer overwrite;
* ``passes_gradient_through`` (class attribute): True when backward returns
  ``dout`` or a view of it; every other layer's backward returns an array that
  nothing else holds, which the layer below may overwrite (``backward_inplace``,
  see :meth:`minicnn.network.Network.backward`).
"""
import math
import threading

import numpy as np

from ..backend import get_array_module, to_device, device_of
from .threads import get_num_threads


class ShapeError(ValueError):
    """An input does not have the shape a layer expects."""


class Layer:
    fresh_output = False  # layers that never return a view of their input say True
    inplace_keeps_cache = False
    keeps_output = False
    passes_gradient_through = False

    def __init__(self):
        self.name = type(self).__name__
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.cache = None
        self.out_shape = None
        self.training = True
        self.param_grads = True
        self.input_grad = True

    # -- the protocol ---------------------------------------------------
    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    # -- modes and devices ----------------------------------------------
    def train(self):
        self.training = True
        return self

    def eval(self):
        self.training = False
        return self

    def to(self, device):
        """Move parameters, gradients and buffers to ``'cpu'`` or ``'gpu'``."""
        for store in (self.params, self.grads, self.buffers):
            for key in store:
                store[key] = to_device(store[key], device)
        self.cache = None
        return self

    def astype(self, dtype):
        """Cast parameters and buffers to ``dtype`` (float64 for gradient checks)."""
        for store in (self.params, self.buffers):
            for key in store:
                store[key] = store[key].astype(dtype)
        self.grads = {}
        self.cache = None
        return self

    def zero_grad(self):
        self.grads = {}

    # -- input validation -------------------------------------------------
    def _describe(self):
        if self.name == type(self).__name__:
            return self.name
        return f"{type(self).__name__} {self.name!r}"

    def _check_input(self, x, expected):
        """Check ``x`` against an expected shape pattern such as ``('N', 64, 'H', 'W')``.

        Integers must match exactly; strings are free dimensions; ``None`` accepts
        any shape. The dtype must be
        floating and, when the layer has parameters, equal to theirs; the device
        must be the parameters' device.
        """
        shape = getattr(x, "shape", None)
        if shape is None:
            raise TypeError(f"{self._describe()}: expected an array, received {type(x).__name__}")
        if expected is not None and (len(shape) != len(expected) or any(
                isinstance(e, int) and e != s for e, s in zip(expected, shape))):
            pattern = "(" + ", ".join(str(d) for d in expected) + ")"
            raise ShapeError(f"{self._describe()}: expected input of shape {pattern}, "
                             f"received {tuple(shape)}")
        if x.dtype.kind != "f":
            raise TypeError(f"{self._describe()}: expected a floating-point input, received "
                            f"dtype {x.dtype}; convert it with x.astype('float32')")
        for key, p in self.params.items():
            if p.dtype != x.dtype:
                raise TypeError(
                    f"{self._describe()}: input dtype {x.dtype} differs from parameter "
                    f"{key!r} dtype {p.dtype}; convert the input with x.astype('{p.dtype}') "
                    f"or the network with .astype('{x.dtype}')")
            # one array type is one device; only a mixed pair needs a closer look
            if type(p) is not type(x) and device_of(p) != device_of(x):
                raise TypeError(
                    f"{self._describe()}: input is on the {device_of(x).upper()} but parameter "
                    f"{key!r} is on the {device_of(p).upper()}; move one with .to('{device_of(p)}')"
                    f" / minicnn.backend.to_{device_of(p)}(x)")
            break

    def _check_backward(self, dout):
        if self.cache is None:
            raise RuntimeError(f"{self._describe()}: backward called before forward "
                               "(or after the layer was moved or cast); run forward first")
        out_shape = self.out_shape
        if tuple(dout.shape) != tuple(out_shape):
            raise ShapeError(f"{self._describe()}: expected an upstream gradient of shape "
                             f"{tuple(out_shape)} (the forward output), received {tuple(dout.shape)}")

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self):
        return ""


def xp_of(*arrays):
    """Shorthand used by the layers: the array module of the given arrays."""
    return get_array_module(*arrays)


_scratch = threading.local()

SCRATCH_BYTES = 4 << 20
"""Largest buffer :func:`scratch` keeps; a larger one is a fresh array each time, so
that the memory a network holds between passes stays small. The columns of a
group of images (``Conv2d.group_bytes``) fit."""


def scratch(xp, slot, shape, dtype):
    """An uninitialized (shape) array of module ``xp`` for temporaries inside one layer call.

    Each ``slot`` name holds one buffer per thread, array module and dtype, grown
    to the largest size asked and handed out again on the next call, so the
    caller must be done with it before the next request for that slot. Why:
    NumPy takes arrays of more than a few hundred KiB fresh from the operating
    system, and writing one pays a page fault per 4 KiB; on the CIFAR ResNets
    those faults took as long as the convolutions' arithmetic.
    """
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    if size * dtype.itemsize > SCRATCH_BYTES:
        return xp.empty(shape, dtype=dtype)
    key = (slot, xp.__name__, dtype.str)
    buffers = _scratch.__dict__
    buffer = buffers.get(key)
    if buffer is None or buffer.size < size:
        buffer = buffers[key] = xp.empty(size, dtype=dtype)
    return buffer[:size].reshape(shape)


def image_groups(n, per_image_bytes, group_bytes):
    """Slices of a batch of n whose temporaries take at most about ``group_bytes``
    (at least one image), as even in size as can be, and as many as there are
    threads (:func:`~.threads.get_num_threads`) or a multiple of that, where the
    batch allows, so that :func:`~.threads.run_in_parallel` keeps every thread busy."""
    size = min(n, max(1, group_bytes // per_image_bytes))
    count = -(-n // size)
    threads = get_num_threads()
    count = min(n, -(-count // threads) * threads)
    bounds = [n * k // count for k in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


def sum_in_order(parts):
    """The sum of a list of arrays, added up first to last: the same rounding every
    time for the same parts (``sum`` would start from the int 0)."""
    total = parts[0].copy()
    for part in parts[1:]:
        total += part
    return total


def as_generator(rng):
    """A ``numpy.random.Generator`` from a seed, a Generator or None (seed 0)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else rng)


def kaiming_uniform(shape, fan_in, rng, dtype):
    """He initialization for ReLU nets: uniform in +-sqrt(6 / fan_in)."""
    bound = np.sqrt(6.0 / fan_in)
    return as_generator(rng).uniform(-bound, bound, size=shape).astype(dtype)
