r"""2-D convolution, lowered to matrix products (im2col).

Shapes: input ``x`` (N, C, H, W), weight ``W`` (O, C, kh, kw), bias ``b`` (O,),
output ``y`` (N, O, Ho, Wo) with ``Ho = (H + 2 p - kh) // s + 1`` (likewise Wo).
Below, ``K = C kh kw`` is the length of a receptive field and ``P = Ho Wo`` the
number of output pixels of one image.

Forward, with ``x_pad`` the input zero-padded by p on each side:

.. math::
    y[n, o, i, j] = b[o] + \sum_{c, u, v} W[o, c, u, v]\, x_{pad}[n, c, s i + u, s j + v]

im2col copies every receptive field into a column. For a group ``B`` of images
(a slice of the batch) it builds ``X_B``, a (K, |B| P) matrix whose column
``(n, i, j)`` is the field of output pixel (i, j) of image n. With
``W_mat = W.reshape(O, K)`` all the arithmetic is in one matrix product per group:

.. math::
    Y_B = W_{mat}\, X_B + b, \qquad Y_B \text{ of shape } (O, |B| P),

and ``y[B]`` is ``Y_B`` reshaped to (O, |B|, Ho, Wo) with its first two axes swapped.

Backward, given ``dY_B = dL/dy[B]`` arranged the same way, as (O, |B| P):

.. math::
    dW_{mat} = \sum_B dY_B\, X_B^T, \qquad
    db[o] = \sum_{n, i, j} dy[n, o, i, j], \qquad
    dX_B = W_{mat}^T\, dY_B

and ``dx[B]`` is col2im of ``dX_B``, the adjoint of im2col: each column entry is
added back onto the input pixel it was copied from, then the padding is cropped.

Why groups, rather than the whole batch or one image at a time: ``X_B`` is kh kw
times larger than its images (9x for 3x3), so for the whole batch it would be
written to memory by im2col and read back by the product; a group of a few MiB
(:attr:`Conv2d.group_bytes`) is still in the CPU cache when the product reads
it. Images are still put side by side when they are small (ResNet's 7x7 maps):
the product, above all ``dY_B X_B^T``, whose sum runs over the |B| P columns,
gets wider and the per-group Python overhead is spread over more work.

The backward pass rebuilds ``X_B`` instead of keeping it from the forward pass:
one more im2col per group, but the layer holds only ``x`` between the passes,
and when ``param_grads`` is False (only ``dx`` wanted, as in most
visualizations) no ``X_B`` is built at all.

A 1x1 convolution without padding needs no im2col: every field is one pixel,
so the input (after taking every s-th pixel) is ``X_B`` with its (B, C) axes
swapped. The forward pass skips the groups for it: ``y[n]`` viewed as (O, P) is
``W_mat x[n]`` viewed as (O, C) @ (C, P), one product per image, which
``matmul`` runs over the stacked images straight into the output.
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


def im2col(x_pad, kernel, stride, out_size, out=None):
    """Gather receptive fields: (N, C, Hp, Wp) -> (N, C, kh, kw, Ho, Wo).

    One strided slice per kernel offset (u, v): ``cols[:, :, u, v]`` holds the
    pixels that offset sees in every output position. ``out``, if given, is the
    (N, C, kh, kw, Ho, Wo) array to fill; it may be a transposed view of a
    buffer laid out the way the caller's matrix product wants it.
    """
    xp = xp_of(x_pad)
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_size
    n, c = x_pad.shape[:2]
    cols = xp.empty((n, c, kh, kw, ho, wo), dtype=x_pad.dtype) if out is None else out
    for u in range(kh):
        for v in range(kw):
            cols[:, :, u, v] = x_pad[:, :, u:u + sh * (ho - 1) + 1:sh, v:v + sw * (wo - 1) + 1:sw]
    return cols


def col2im(cols, padded_size, stride):
    """Adjoint of :func:`im2col`: (N, C, kh, kw, Ho, Wo) -> (N, C, Hp, Wp).

    Overlapping fields add up. Each kernel offset is one strided slice-add, so
    no scatter-add (``np.add.at``) is needed and the same code runs on CuPy.
    ``cols`` may be any view, e.g. a transposed one.
    """
    xp = xp_of(cols)
    n, c, kh, kw, ho, wo = cols.shape
    (hp, wp), (sh, sw) = padded_size, stride
    x_pad = xp.zeros((n, c, hp, wp), dtype=cols.dtype)
    for u in range(kh):
        for v in range(kw):
            x_pad[:, :, u:u + sh * (ho - 1) + 1:sh, v:v + sw * (wo - 1) + 1:sw] += cols[:, :, u, v]
    return x_pad


def pad_spatial(x, padding):
    """``x`` with zeros around its height and width (``xp.pad`` costs twice as much
    on the small per-group batches the convolution pads)."""
    (ph, pw) = padding
    if ph == 0 and pw == 0:
        return x
    xp = xp_of(x)
    n, c, h, w = x.shape
    out = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def output_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


class Conv2d(Layer):
    """Convolution with ``weight`` (O, C, kh, kw) and optional ``bias`` (O,)."""
    fresh_output = True

    group_bytes = 4 << 20
    """Memory one group of images may take for its column matrix ``X_B`` and its
    product ``Y_B`` together; a group holds as many images as fit, at least one.

    Chosen by measurement on a 2-core AMD EPYC with 32 MiB of L3: 4 MiB keeps a
    group in cache from im2col to the product, puts the 7x7 maps of ResNet's
    last stage four images to a group, and leaves most of its 56x56 layers one
    image per group, where the output needs no rearranging (see :meth:`forward`)."""

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

    def _groups(self, x, out_size):
        """Slices of the batch whose ``X_B`` and ``Y_B`` take about ``group_bytes``."""
        (kh, kw), (ho, wo) = self.kernel_size, out_size
        per_image = (self.in_channels * kh * kw + self.out_channels) * ho * wo * x.dtype.itemsize
        n = x.shape[0]
        size = min(n, max(1, self.group_bytes // per_image))
        return [slice(start, min(start + size, n)) for start in range(0, n, size)]

    def _columns(self, x, out_size):
        """im2col of the images ``x`` (m, C, H, W): ``X_B`` of shape (C kh kw, m Ho Wo)."""
        xp = xp_of(x)
        m, c = x.shape[:2]
        (kh, kw), (sh, sw), (ho, wo) = self.kernel_size, self.stride, out_size
        if self.is_pointwise:  # a view for one image at stride 1, else one copy
            x = x[:, :, ::sh, ::sw]
            return x.transpose(1, 0, 2, 3).reshape(c, m * ho * wo)
        x_pad = pad_spatial(x, self.padding)
        # Allocated in the order (C, kh, kw, m, Ho, Wo), so that the reshape to
        # (K, m P) is free; im2col fills it through a transposed view.
        cols = xp.empty((c, kh, kw, m, ho, wo), dtype=x.dtype)
        im2col(x_pad, self.kernel_size, self.stride, out_size, out=cols.transpose(3, 0, 1, 2, 4, 5))
        return cols.reshape(c * kh * kw, m * ho * wo)

    def _input_grad(self, dcols, x_shape, out_size):
        """Adjoint of :meth:`_columns`: ``dX_B`` (C kh kw, m Ho Wo) -> dx (m, C, H, W)."""
        xp = xp_of(dcols)
        m, c, h, w = x_shape
        (kh, kw), (sh, sw), (ph, pw), (ho, wo) = (self.kernel_size, self.stride, self.padding,
                                                  out_size)
        if self.is_pointwise:
            dx_sub = dcols.reshape(c, m, ho, wo).transpose(1, 0, 2, 3)
            if (sh, sw) == (1, 1):
                return dx_sub
            dx = xp.zeros(x_shape, dtype=dcols.dtype)  # pixels the stride skips get 0
            dx[:, :, ::sh, ::sw] = dx_sub
            return dx
        # The transposed view turns (C, kh, kw, m, Ho, Wo) back into im2col's order.
        dcols = dcols.reshape(c, kh, kw, m, ho, wo).transpose(3, 0, 1, 2, 4, 5)
        dx_pad = col2im(dcols, (h + 2 * ph, w + 2 * pw), (sh, sw))
        return dx_pad[:, :, ph:ph + h, pw:pw + w]

    def forward(self, x):
        self._check_input(x, ("N", self.in_channels, "H", "W"))
        xp = xp_of(x)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
        if ho < 1 or wo < 1:
            raise ValueError(f"{self._describe()}: input {h}x{w} is smaller than the "
                             f"{kh}x{kw} kernel with padding {self.padding}")
        weight = self.params["weight"].reshape(self.out_channels, -1)
        out = xp.empty((n, self.out_channels, ho, wo), dtype=x.dtype)
        if self.is_pointwise:
            # Every field is one pixel: one product (O, C) @ (C, Ho Wo) per image, which
            # matmul runs over the stacked images straight into ``out``, no copies.
            pixels = x if (sh, sw) == (1, 1) else x[:, :, ::sh, ::sw]
            xp.matmul(weight, pixels.reshape(n, c, ho * wo),
                      out=out.reshape(n, self.out_channels, ho * wo))
        else:
            for group in self._groups(x, (ho, wo)):
                cols = self._columns(x[group], (ho, wo))
                if group.stop - group.start == 1:
                    # one image: out[n] viewed as (O, P) is Y_B's layout: write there
                    xp.matmul(weight, cols, out=out[group].reshape(self.out_channels, -1))
                else:
                    y = weight @ cols  # (O, m P)
                    out[group] = y.reshape(self.out_channels, -1, ho, wo).transpose(1, 0, 2, 3)
        if "bias" in self.params:
            out += self.params["bias"][:, None, None]
        self.cache = x  # backward rebuilds X_B from it
        self.out_shape = out.shape
        return out

    def backward(self, dout):
        self._check_backward(dout)
        x = self.cache
        xp = xp_of(dout)
        ho, wo = self.out_shape[2:]
        weight = self.params["weight"].reshape(self.out_channels, -1)
        groups = self._groups(x, (ho, wo))
        # One group (a single image, or small ones) returns its dx as is; several
        # fill one array, so that each group's temporaries are freed and reused.
        dtype = xp.result_type(weight.dtype, dout.dtype)
        dx = None if len(groups) == 1 else xp.empty(x.shape, dtype=dtype)
        dweight = None
        for group in groups:
            # dY_B as (O, m P), the layout of the forward product
            dy = dout[group].transpose(1, 0, 2, 3).reshape(self.out_channels, -1)
            if self.param_grads:
                # X_B^T is a transposed view: BLAS reads it in place, no copy
                part = dy @ self._columns(x[group], (ho, wo)).T
                dweight = part if dweight is None else dweight + part
            dx_group = self._input_grad(weight.T @ dy, x[group].shape, (ho, wo))
            if dx is None:
                dx = dx_group
            else:
                dx[group] = dx_group
        if self.param_grads:
            self.grads["weight"] = dweight.reshape(self.params["weight"].shape)
            if "bias" in self.params:
                self.grads["bias"] = dout.sum(axis=(0, 2, 3))
        return dx
