r"""Max, average and global average pooling.

Shapes: input (N, C, H, W), output (N, C, Ho, Wo). With kernel k, stride s and
padding p, ``Ho = floor((H + 2p - k) / s) + 1``; in ceil mode (Caffe's only mode,
and PyTorch's ``ceil_mode=True``) the division rounds up, except that the last
window must start inside the input or its left padding. The original ResNet's
pool1 (3x3, stride 2, no padding, ceil) turns 112x112 into 56x56 this way.

Both windowed poolings sweep the kernel offsets, as the convolution's im2col
does, but without building the columns: the pixels at offset (u, v) of every
window, ``window(u, v)``, are one slice of the padded input (a unit-step slice of
one of its stride phases, see :func:`phases`). Writing
``cols[..., u, v, i, j]`` for that pixel of window (i, j):

Max pooling, with ``a[n, c, i, j]`` the offset of the window's maximum (the first
one in row-major order on ties, as in PyTorch):

.. math::
    y[n,c,i,j] = \max_{u,v} cols[n,c,u,v,i,j], \qquad
    dx_{pad}[\text{window}(u, v)] \mathrel{+}= dy \cdot [\,a = (u,v)\,]

The max-pool forward pass is separable: the maximum of each row of every
window first (kw slices along the width), then the maximum of those over the
window's rows (kh slices along the height), kh + kw passes instead of kh kw; it
keeps ``x`` and ``y``. Backward sweeps the kh kw offsets in row-major order and
adds ``dy`` back through window(u, v) where that pixel equals ``y`` and no
earlier offset of its window did (a boolean mask of unclaimed windows), which is
``a``; overlapping windows add up.

Average pooling (padding counts as zeros in the mean, PyTorch's default):

.. math::
    y[n,c,i,j] = \frac{1}{k_h k_w}\sum_{u,v} cols[n,c,u,v,i,j], \qquad
    dx_{pad}[\text{window}(u, v)] \mathrel{+}= \frac{dy}{k_h k_w}

In both, ``dx`` is ``dx_pad`` with the padding cropped.
Global average pooling: ``y[n, c] = mean_{h,w} x[n, c, h, w]``, ``dx = dy / (H W)``
broadcast over every pixel.
"""
import math
from itertools import repeat

import numpy as np

from .base import Layer, image_groups, xp_of, scratch
from .conv import pair


def phases(x_pad, stride, fill=0.0):
    """Split a padded batch into its stride phases: (N, C, Hp, Wp) -> (N, C, sh, sw, Hq, Wq).

    Phase (a, b) is ``x_pad[:, :, a::sh, b::sw]`` (the bottom/right edge padded
    with ``fill`` up to a multiple of the stride). Why: NumPy's arithmetic on a
    slice with a step runs element by element, on a unit-step slice with vector
    instructions: one comparison of two stride-2 windows of ResNet's pool1 input
    at batch 8 took 4 ms, of two unit-step slices 0.25-1.3 ms. Copies, like the
    convolution's im2col, suffer far less, so the convolution does without. After this one
    rearranging copy, the pixels at kernel offset (u, v) of every window form a
    plain slice of one phase (:func:`window`). At stride 1 there is one phase and
    no copy.
    """
    (sh, sw) = stride
    if (sh, sw) == (1, 1):
        return x_pad[:, :, None, None]
    xp = xp_of(x_pad)
    n, c, hp, wp = x_pad.shape
    hq, wq = -(-hp // sh), -(-wp // sw)
    if (hq * sh, wq * sw) != (hp, wp):
        x_pad = xp.pad(x_pad, ((0, 0), (0, 0), (0, hq * sh - hp), (0, wq * sw - wp)),
                       mode="constant", constant_values=fill)
    return xp.ascontiguousarray(x_pad.reshape(n, c, hq, sh, wq, sw).transpose(0, 1, 3, 5, 2, 4))


def window(phased, offset, stride, out_size):
    """The pixels at kernel offset (u, v) of every window: (N, C, Ho, Wo), a view.

    Window (i, j) starts at padded pixel (s i, s j), so its pixel at offset (u, v)
    is padded pixel (s i + u, s j + v): phase (u % s, v % s), row i + u // s,
    column j + v // s.
    """
    (u, v), (sh, sw), (ho, wo) = offset, stride, out_size
    return phased[:, :, u % sh, v % sw, u // sh:u // sh + ho, v // sw:v // sw + wo]


def phased_zeros(padded_shape, stride, like):
    """Zeros laid out as :func:`phases` lays out an (N, C, Hp, Wp) batch, like ``like``,
    in a :func:`~minicnn.layers.base.scratch` buffer (:func:`unphase` copies them out)."""
    xp = xp_of(like)
    (n, c, hp, wp), (sh, sw) = padded_shape, stride
    zeros = scratch(xp, "pool_gradient", (n, c, sh, sw, -(-hp // sh), -(-wp // sw)),
                    like.dtype)
    zeros[...] = 0
    return zeros


def unphase(phased, out):
    """Inverse of :func:`phases`: (N, C, sh, sw, Hq, Wq) into ``out`` (N, C, Hp, Wp).

    One strided copy per phase, ``out[:, :, a::sh, b::sw] = phase (a, b)``: 6x
    faster than one copy of the transposed phases, whose innermost axis would
    be the sw pixels of a row that lie in different phases."""
    sh, sw = phased.shape[2:4]
    for a in range(sh):
        for b in range(sw):
            target = out[:, :, a::sh, b::sw]
            target[...] = phased[:, :, a, b, :target.shape[2], :target.shape[3]]
    return out


def pooled_size(size, kernel, stride, padding, ceil_mode):
    """Output length of a pooling window sweep along one axis."""
    span = size + 2 * padding - kernel
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


class _WindowPool(Layer):
    """What max and average pooling share: geometry, padding, the sweep over offsets."""
    fresh_output = True

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

    group_bytes = 4 << 20
    """Backward runs a group of images at a time whose phased gradient takes about
    this much memory: it stays in the CPU cache across the kh kw slice-adds
    (at batch 8, ResNet-50's pool1 backward took half as long as in one piece)."""

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
        return x_pad, (ho, wo)

    def _start(self, x):
        """Forward's first step: pad ``x`` and set ``geometry`` (x shape, padded shape,
        output size) for the windows and for backward; return x_pad, (Ho, Wo)."""
        x_pad, out_size = self._pad(x)
        self.geometry = (x.shape, x_pad.shape, out_size)
        return x_pad, out_size

    def _windows(self, phased):
        """(offset k = u kw + v, window(u, v)) for every kernel offset, as views of ``phased``."""
        kh, kw = self.kernel_size
        for u in range(kh):
            for v in range(kw):
                yield u * kw + v, window(phased, (u, v), self.stride, self.geometry[2])

    def _phased(self, x):
        x_pad, _ = self._pad(x)
        return phases(x_pad, self.stride, self.pad_value)

    def _scatter(self, dout, share, x=None):
        """dx: ``share(group, k, pixels)`` added back through every window(u, v) of a
        group of images (a slice of the batch), padding cropped.

        ``pixels`` is window(u, v) of ``x[group]`` (padded the forward way) when
        ``x`` is given.
        """
        xp = xp_of(dout)
        x_shape, padded_shape, _ = self.geometry
        (n, c), (sh, sw), (hp, wp) = x_shape[:2], self.stride, padded_shape[2:]
        dx_pad = xp.empty(padded_shape, dtype=dout.dtype)
        per_image = c * sh * sw * -(-hp // sh) * -(-wp // sw) * dout.dtype.itemsize
        for group in image_groups(n, per_image, self.group_bytes):
            seen = (self._windows(self._phased(x[group])) if x is not None
                    else repeat((None, None)))
            grads = phased_zeros((group.stop - group.start,) + padded_shape[1:], self.stride,
                                 dout)
            for (k, target), (_, pixels) in zip(self._windows(grads), seen):
                target += share(group, k, pixels)
            unphase(grads, dx_pad[group])
        (ph, pw), (h, w) = self.padding, x_shape[2:]
        return dx_pad[:, :, ph:ph + h, pw:pw + w]


class MaxPool2d(_WindowPool):
    pad_value = -np.inf
    keeps_output = True

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        self._setup(kernel_size, stride, padding)
        self.ceil_mode = bool(ceil_mode)

    def forward(self, x):
        x_pad, (ho, wo) = self._start(x)
        xp = xp_of(x)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        # A window's maximum is the maximum over its rows of each row's maximum:
        # kw + kh passes over the data instead of kh kw, and only the first kw
        # read with a step along the rows (see phases() for why that matters).
        rows = None  # rows[..., r, j]: the maximum of row r of the windows in column j
        for v in range(kw):
            pixels = x_pad[:, :, :, v:v + sw * (wo - 1) + 1:sw]
            rows = pixels.copy() if rows is None else xp.maximum(rows, pixels, out=rows)
        out = None
        for u in range(kh):
            pixels = rows[:, :, u:u + sh * (ho - 1) + 1:sh]
            out = pixels.copy() if out is None else xp.maximum(out, pixels, out=out)
        self.cache = (x, out)  # the next layer holds ``out`` anyway
        self.out_shape = out.shape
        return out

    def backward(self, dout):
        self._check_backward(dout)
        x, out = self.cache
        xp = xp_of(dout)
        unclaimed = None  # windows of the group whose maximum is still to find

        def share(group, k, pixels):  # dy goes to the first offset that holds the maximum
            nonlocal unclaimed
            if k == 0:
                unclaimed = xp.ones(out[group].shape, dtype=bool)
            hit = pixels == out[group]
            hit &= unclaimed
            xp.logical_xor(unclaimed, hit, out=unclaimed)
            return dout[group] * hit
        return self._scatter(dout, share, x)


class AvgPool2d(_WindowPool):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self._setup(kernel_size, stride, padding)

    def forward(self, x):
        x_pad, _ = self._start(x)
        out = None
        for _, pixels in self._windows(phases(x_pad, self.stride, self.pad_value)):
            if out is None:
                out = pixels.copy()
            else:
                out += pixels
        out /= self.kernel_size[0] * self.kernel_size[1]
        self.cache = True
        self.out_shape = out.shape
        return out

    def backward(self, dout):
        self._check_backward(dout)
        kh, kw = self.kernel_size
        share = dout / (kh * kw)
        return self._scatter(dout, lambda group, k, pixels: share[group])


class GlobalAvgPool2d(Layer):
    """Mean over all pixels: (N, C, H, W) -> (N, C)."""
    fresh_output = True

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
