r"""Max, average and global average pooling.

Shapes: input (N, C, H, W), output (N, C, Ho, Wo). With kernel k, stride s and
padding p, ``Ho = floor((H + 2p - k) / s) + 1``; in ceil mode (Caffe's only mode,
and PyTorch's ``ceil_mode=True``) the division rounds up, except that the last
window must start inside the input or its left padding. The original ResNet's
pool1 (3x3, stride 2, no padding, ceil) turns 112x112 into 56x56 this way.

Both windowed poolings reuse the convolution's im2col: ``cols[n, c, u, v, i, j]``
is the pixel at offset (u, v) of window (i, j).

Max pooling, with ``a[n, c, i, j]`` the offset of the window's maximum (the first
one in row-major order on ties, as in PyTorch):

.. math::
    y[n,c,i,j] = \max_{u,v} cols[n,c,u,v,i,j], \qquad
    dcols[n,c,u,v,i,j] = dy[n,c,i,j]\,[\,(u,v) = a[n,c,i,j]\,]

Average pooling (padding counts as zeros in the mean, PyTorch's default):

.. math::
    y[n,c,i,j] = \frac{1}{k_h k_w}\sum_{u,v} cols[n,c,u,v,i,j], \qquad
    dcols[n,c,u,v,i,j] = \frac{dy[n,c,i,j]}{k_h k_w}

In both, ``dx`` is col2im of ``dcols`` with the padding cropped.
Global average pooling: ``y[n, c] = mean_{h,w} x[n, c, h, w]``, ``dx = dy / (H W)``
broadcast over every pixel.
"""
import math

import numpy as np

from .base import Layer, xp_of
from .conv import pair, im2col, col2im


def pooled_size(size, kernel, stride, padding, ceil_mode):
    """Output length of a pooling window sweep along one axis."""
    span = size + 2 * padding - kernel
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


class _WindowPool(Layer):
    """What max and average pooling share: geometry, padding, im2col."""

    pad_value = 0.0
    ceil_mode = False

    def _setup(self, kernel_size, stride, padding):
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(self.kernel_size if stride is None else stride, "stride")
        self.padding = pair(padding, "padding")
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{type(self).__name__}: padding {self.padding} must be at most half "
                             f"the kernel size {self.kernel_size}")

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"ceil_mode={self.ceil_mode}")

    def _columns(self, x):
        """Pad (with the extra bottom/right rows ceil mode needs) and gather windows."""
        self._check_input(x, ("N", "C", "H", "W"))
        xp = xp_of(x)
        h, w = x.shape[2:]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho = pooled_size(h, kh, sh, ph, self.ceil_mode)
        wo = pooled_size(w, kw, sw, pw, self.ceil_mode)
        if ho < 1 or wo < 1:
            raise ValueError(f"{self._describe()}: input {h}x{w} is smaller than the "
                             f"{kh}x{kw} window")
        extra_h = max(0, (ho - 1) * sh + kh - (h + 2 * ph))
        extra_w = max(0, (wo - 1) * sw + kw - (w + 2 * pw))
        x_pad = x
        if ph or pw or extra_h or extra_w:
            x_pad = xp.pad(x, ((0, 0), (0, 0), (ph, ph + extra_h), (pw, pw + extra_w)),
                           mode="constant", constant_values=self.pad_value)
        cols = im2col(x_pad, self.kernel_size, self.stride, (ho, wo))
        self.geometry = (x.shape, x_pad.shape[2:])
        return cols

    def _to_input(self, dcols):
        """col2im, then crop the padding."""
        x_shape, padded = self.geometry
        dx_pad = col2im(dcols, padded, self.stride)
        (ph, pw), (h, w) = self.padding, x_shape[2:]
        return dx_pad[:, :, ph:ph + h, pw:pw + w]


class MaxPool2d(_WindowPool):
    pad_value = -np.inf

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self._setup(kernel_size, stride, padding)
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x):
        cols = self._columns(x)
        n, c, kh, kw, ho, wo = cols.shape
        cols = cols.reshape(n, c, kh * kw, ho, wo)
        xp = xp_of(x)
        argmax = cols.argmax(axis=2)
        out = xp.take_along_axis(cols, argmax[:, :, None], axis=2)[:, :, 0]
        self.cache = argmax
        self.out_shape = out.shape
        return out

    def backward(self, dout):
        self._check_backward(dout)
        xp = xp_of(dout)
        kh, kw = self.kernel_size
        offsets = xp.arange(kh * kw).reshape(1, 1, kh * kw, 1, 1)
        dcols = (offsets == self.cache[:, :, None]) * dout[:, :, None]
        n, c, _, ho, wo = dcols.shape
        return self._to_input(dcols.reshape(n, c, kh, kw, ho, wo))


class AvgPool2d(_WindowPool):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self._setup(kernel_size, stride, padding)

    def forward(self, x):
        cols = self._columns(x)
        out = cols.mean(axis=(2, 3))
        self.cache = True
        self.out_shape = out.shape
        return out

    def backward(self, dout):
        self._check_backward(dout)
        xp = xp_of(dout)
        kh, kw = self.kernel_size
        n, c, ho, wo = dout.shape
        dcols = xp.broadcast_to((dout / (kh * kw))[:, :, None, None], (n, c, kh, kw, ho, wo))
        return self._to_input(dcols)


class GlobalAvgPool2d(Layer):
    """Mean over all pixels: (N, C, H, W) -> (N, C)."""

    def forward(self, x):
        self._check_input(x, ("N", "C", "H", "W"))
        self.cache = x.shape
        out = x.mean(axis=(2, 3))
        self.out_shape = out.shape
        return out

    def backward(self, dout):
        self._check_backward(dout)
        xp = xp_of(dout)
        n, c, h, w = self.cache
        return xp.broadcast_to((dout / (h * w))[:, :, None, None], (n, c, h, w)).copy()
