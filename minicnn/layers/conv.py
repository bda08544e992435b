r"""2-D convolution, lowered to one matrix product (im2col).

Shapes: input ``x`` (N, C, H, W), weight ``W`` (O, C, kh, kw), bias ``b`` (O,),
output ``y`` (N, O, Ho, Wo) with ``Ho = (H + 2 p - kh) // s + 1`` (likewise Wo).

Forward, with ``x_pad`` the input zero-padded by p on each side:

.. math::
    y[n, o, i, j] = b[o] + \sum_{c, u, v} W[o, c, u, v]\, x_{pad}[n, c, s i + u, s j + v]

im2col copies every receptive field into a column, ``X_col[n]`` of shape
(C kh kw, Ho Wo); with ``W_mat = W.reshape(O, C kh kw)`` the forward pass is
``Y[n] = W_mat @ X_col[n] + b``: all the arithmetic is in one matrix product.

Backward, given ``dY = dL/dy`` reshaped to (N, O, Ho Wo):

.. math::
    dW_{mat} = \sum_n dY[n]\, X_{col}[n]^T, \qquad
    db[o] = \sum_{n, i, j} dY[n, o, i, j], \qquad
    dX_{col}[n] = W_{mat}^T\, dY[n]

and ``dx`` is col2im of ``dX_col``, the adjoint of im2col: each column entry is
added back onto the input pixel it was copied from, then the padding is cropped.
A 1x1 convolution without padding needs no lowering: the input itself, reshaped
to (N, C, H W) (after taking every s-th pixel), is already ``X_col``.
"""
import numpy as np

from .base import Layer, xp_of, kaiming_uniform
from ..backend import DEFAULT_DTYPE


def pair(value, what):
    """Accept an int or a pair of ints; return a pair."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{what} must be an int or a pair of ints, received {value!r}")


def im2col(x_pad, kernel, stride, out_size):
    """Gather receptive fields: (N, C, Hp, Wp) -> (N, C, kh, kw, Ho, Wo).

    One strided slice per kernel offset (u, v): ``cols[:, :, u, v]`` holds the
    pixels that offset sees in every output position.
    """
    xp = xp_of(x_pad)
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_size
    n, c = x_pad.shape[:2]
    cols = xp.empty((n, c, kh, kw, ho, wo), dtype=x_pad.dtype)
    for u in range(kh):
        for v in range(kw):
            cols[:, :, u, v] = x_pad[:, :, u:u + sh * (ho - 1) + 1:sh, v:v + sw * (wo - 1) + 1:sw]
    return cols


def col2im(cols, padded_size, stride):
    """Adjoint of :func:`im2col`: (N, C, kh, kw, Ho, Wo) -> (N, C, Hp, Wp).

    Overlapping fields add up. Each kernel offset is one strided slice-add, so
    no scatter-add (``np.add.at``) is needed and the same code runs on CuPy.
    """
    xp = xp_of(cols)
    n, c, kh, kw, ho, wo = cols.shape
    (hp, wp), (sh, sw) = padded_size, stride
    x_pad = xp.zeros((n, c, hp, wp), dtype=cols.dtype)
    for u in range(kh):
        for v in range(kw):
            x_pad[:, :, u:u + sh * (ho - 1) + 1:sh, v:v + sw * (wo - 1) + 1:sw] += cols[:, :, u, v]
    return x_pad


def pad_spatial(x, padding, value=0.0):
    (ph, pw) = padding
    if ph == 0 and pw == 0:
        return x
    xp = xp_of(x)
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="constant", constant_values=value)


def output_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


class Conv2d(Layer):
    """Convolution with ``weight`` (O, C, kh, kw) and optional ``bias`` (O,)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 bias=True, rng=None, dtype=DEFAULT_DTYPE):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"Conv2d: kernel_size and stride must be >= 1 and padding >= 0, "
                             f"received {kernel_size}, {stride}, {padding}")
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        self.params["weight"] = kaiming_uniform((self.out_channels, self.in_channels, kh, kw),
                                                fan_in, rng, dtype)
        if bias:
            self.params["bias"] = np.zeros(self.out_channels, dtype=dtype)

    @property
    def is_pointwise(self):
        return self.kernel_size == (1, 1) and self.padding == (0, 0)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={'bias' in self.params}")

    def forward(self, x):
        self._check_input(x, ("N", self.in_channels, "H", "W"))
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
        if ho < 1 or wo < 1:
            raise ValueError(f"{self._describe()}: input {h}x{w} is smaller than the "
                             f"{kh}x{kw} kernel with padding {self.padding}")
        if self.is_pointwise:
            cols = x[:, :, ::sh, ::sw].reshape(n, c, ho * wo)
        else:
            x_pad = pad_spatial(x, self.padding)
            cols = im2col(x_pad, self.kernel_size, self.stride, (ho, wo)).reshape(n, c * kh * kw, ho * wo)
        weight = self.params["weight"].reshape(self.out_channels, -1)
        out = weight @ cols
        if "bias" in self.params:
            out += self.params["bias"][:, None]
        self.cache = (x.shape, cols)
        out = out.reshape(n, self.out_channels, ho, wo)
        self.out_shape = out.shape
        return out

    def backward(self, dout):
        self._check_backward(dout)
        x_shape, cols = self.cache
        n, c, h, w = x_shape
        xp = xp_of(dout)
        dout = dout.reshape(n, self.out_channels, -1)
        weight = self.params["weight"].reshape(self.out_channels, -1)
        if self.param_grads:
            dweight = xp.tensordot(dout, cols, axes=([0, 2], [0, 2]))
            self.grads["weight"] = dweight.reshape(self.params["weight"].shape)
            if "bias" in self.params:
                self.grads["bias"] = dout.sum(axis=(0, 2))
        dcols = weight.T @ dout
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = self.out_shape[2:]
        if self.is_pointwise:
            dcols = dcols.reshape(n, c, ho, wo)
            if (sh, sw) == (1, 1):
                return dcols
            dx = xp.zeros(x_shape, dtype=dout.dtype)
            dx[:, :, ::sh, ::sw] = dcols
            return dx
        dx_pad = col2im(dcols.reshape(n, c, kh, kw, ho, wo), (h + 2 * ph, w + 2 * pw), (sh, sw))
        return dx_pad[:, :, ph:ph + h, pw:pw + w]
