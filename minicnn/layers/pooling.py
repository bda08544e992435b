r"""Max, average and global average pooling.

Shapes: input (N, C, H, W), output (N, C, Ho, Wo). With kernel k, stride s and
padding p, ``Ho = floor((H + 2p - k) / s) + 1``; in ceil mode (Caffe's only mode,
and PyTorch's ``ceil_mode=True``) the division rounds up, except that the last
window must start inside the input or its left padding. The original ResNet's
pool1 (3x3, stride 2, no padding, ceil) turns 112x112 into 56x56 this way.

Both windowed poolings sweep the kernel offsets, as the convolution's im2col
does, but without building the columns: for the offset (u, v) one strided slice
of the padded input, ``window(u, v) = x_pad[:, :, u::s, v::s]`` (cut to Ho x Wo),
holds the pixel at that offset of every window at once. Writing ``cols[..., u, v,
i, j]`` for that pixel of window (i, j):

Max pooling, with ``a[n, c, i, j]`` the offset of the window's maximum (the first
one in row-major order on ties, as in PyTorch):

.. math::
    y[n,c,i,j] = \max_{u,v} cols[n,c,u,v,i,j], \qquad
    dx_{pad}[\text{window}(u, v)] \mathrel{+}= dy \cdot [\,a = (u,v)\,]

The forward pass is separable: the maximum of each row of every window first
(kw strided slices along the width), then the maximum of those over the
window's rows (kh slices along the height), kh + kw passes instead of kh kw.
It keeps only ``x``. Backward sweeps the kh kw offsets once, keeping a running
maximum and recording in ``a`` (one byte per output value) the offset where a
value strictly beats it; then it adds ``dy`` back through the same slices,
offset by offset, so overlapping windows add up.

Average pooling (padding counts as zeros in the mean, PyTorch's default):

.. math::
    y[n,c,i,j] = \frac{1}{k_h k_w}\sum_{u,v} cols[n,c,u,v,i,j], \qquad
    dx_{pad}[\text{window}(u, v)] \mathrel{+}= \frac{dy}{k_h k_w}

In both, ``dx`` is ``dx_pad`` with the padding cropped.
Global average pooling: ``y[n, c] = mean_{h,w} x[n, c, h, w]``, ``dx = dy / (H W)``
broadcast over every pixel.
"""
import math

import numpy as np

from .base import Layer, xp_of
from .conv import pair


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

    def _pad(self, x):
        """Pad (with the extra bottom/right rows ceil mode needs); return x_pad, (Ho, Wo)."""
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
        self.geometry = (x.shape, x_pad.shape, (ho, wo))
        return x_pad, (ho, wo)

    def _windows(self):
        """(offset k = u kw + v, index of window(u, v) in x_pad) for every kernel offset."""
        (kh, kw), (sh, sw), (ho, wo) = self.kernel_size, self.stride, self.geometry[2]
        for u in range(kh):
            for v in range(kw):
                yield u * kw + v, (slice(None), slice(None),
                                   slice(u, u + sh * (ho - 1) + 1, sh),
                                   slice(v, v + sw * (wo - 1) + 1, sw))

    def _scatter(self, dout, weight_of):
        """dx: ``dout * weight_of(k)`` added back through every window(u, v), padding cropped."""
        xp = xp_of(dout)
        x_shape, padded_shape, _ = self.geometry
        dx_pad = xp.zeros(padded_shape, dtype=dout.dtype)
        for k, window in self._windows():
            dx_pad[window] += weight_of(k)
        (ph, pw), (h, w) = self.padding, x_shape[2:]
        return dx_pad[:, :, ph:ph + h, pw:pw + w]


class MaxPool2d(_WindowPool):
    pad_value = -np.inf

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self._setup(kernel_size, stride, padding)
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x):
        x_pad, (ho, wo) = self._pad(x)
        xp = xp_of(x)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        # A window's maximum is the maximum over its rows of each row's maximum:
        # kw + kh passes over the data instead of kh kw.
        rows = None  # rows[..., r, j]: max of row r of the windows in column j
        for v in range(kw):
            pixels = x_pad[:, :, :, v:v + sw * (wo - 1) + 1:sw]
            rows = pixels.copy() if rows is None else xp.maximum(rows, pixels, out=rows)
        out = None
        for u in range(kh):
            pixels = rows[:, :, u:u + sh * (ho - 1) + 1:sh]
            out = pixels.copy() if out is None else xp.maximum(out, pixels, out=out)
        self.cache = x  # backward finds where each maximum came from
        self.out_shape = out.shape
        return out

    def argmax(self, x):
        """``a``: the offset k = u kw + v of each window's maximum, first one on ties."""
        x_pad, _ = self._pad(x)
        xp = xp_of(x)
        kh, kw = self.kernel_size
        best = argmax = None
        for k, window in self._windows():
            pixels = x_pad[window]
            if best is None:
                best = pixels.copy()
                argmax = xp.zeros(best.shape, dtype=np.min_scalar_type(kh * kw - 1))
                continue
            argmax[pixels > best] = k  # strictly greater: on ties the first offset keeps it
            xp.maximum(best, pixels, out=best)
        return argmax

    def backward(self, dout):
        self._check_backward(dout)
        argmax = self.argmax(self.cache)
        return self._scatter(dout, lambda k: dout * (argmax == k))


class AvgPool2d(_WindowPool):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self._setup(kernel_size, stride, padding)

    def forward(self, x):
        x_pad, _ = self._pad(x)
        out = None
        for _, window in self._windows():
            if out is None:
                out = x_pad[window].copy()
            else:
                out += x_pad[window]
        out /= self.kernel_size[0] * self.kernel_size[1]
        self.cache = True
        self.out_shape = out.shape
        return out

    def backward(self, dout):
        self._check_backward(dout)
        kh, kw = self.kernel_size
        share = dout / (kh * kw)
        return self._scatter(dout, lambda k: share)


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
