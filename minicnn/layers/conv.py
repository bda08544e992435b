r"""2-D convolution, lowered to matrix products.

Shapes: input ``x`` (N, C, H, W), weight ``W`` (O, C, kh, kw), bias ``b`` (O,),
output ``y`` (N, O, Ho, Wo) with ``Ho = (H + 2 p - kh) // s + 1`` (likewise Wo).
Below, ``K = C kh kw`` is the length of a receptive field and ``P = Ho Wo`` the
number of output pixels of one image.

Forward, with ``x_pad`` the input zero-padded by p on each side:

.. math::
    y[n, o, i, j] = b[o] + \sum_{c, u, v} W[o, c, u, v]\, x_{pad}[n, c, s i + u, s j + v]

The reference lowering is im2col (:func:`im2col`): for a group ``B`` of images
it copies every receptive field into a column of ``X_B``, a (K, |B| P) matrix
whose column ``(n, i, j)`` is the field of output pixel (i, j) of image n. With
``W_mat = W.reshape(O, K)`` all the arithmetic is one matrix product per group:

.. math::
    Y_B = W_{mat}\, X_B + b, \qquad Y_B \text{ of shape } (O, |B| P).

Backward, given ``dY_B = dL/dy[B]`` arranged the same way, as (O, |B| P):

.. math::
    dW_{mat} = \sum_B dY_B\, X_B^T, \qquad
    db[o] = \sum_{n, i, j} dy[n, o, i, j], \qquad
    dX_B = W_{mat}^T\, dY_B

and ``dx[B]`` is col2im of ``dX_B`` (:func:`col2im`), the adjoint of im2col:
each column entry is added back onto the input pixel it was copied from.

**The wide lowering the layer runs.** im2col copies rows of Wo pixels, and a
copy of 32 (or 7) floats costs more in loop overhead than in data. Laid out
flat, the padded image makes every kernel offset one contiguous run instead:
with ``x_flat[n, c, r Wp + q] = x_pad[n, c, r, q]`` (stride 1),

.. math::
    x_{pad}[n, c, i + u, j + v] = x_{flat}[n, c, u W_p + v + (i W_p + j)]

so the pixels that offset (u, v) sees for every output pixel form the slice
``x_flat[n, c, u Wp + v : u Wp + v + Ho Wp]``: the *wide* columns ``X~_B``,
(K, |B| Ho Wp), are kh kw slice copies of Ho Wp floats each. The product
``W_mat X~_B`` is y on a grid Wp wide; its columns j >= Wo wrapped around the
row edge and are dropped. With stride s the same holds within each stride
phase of ``x_pad`` (the pixels ``x_pad[a::s, b::s]``, see :meth:`WideGrid.flat_phases`):
offset (u, v) reads phase (u mod s, v mod s) shifted by (u // s, v // s).
For the weight gradient, ``dY_B`` is spread on the same wide grid with zeros in
the wrapped columns, so ``dY~_B X~_B^T = dY_B X_B^T``.

**The input gradient as a convolution.** At stride 1, ``dx`` is the
convolution of ``dy``, zero-padded by ``k - 1 - p``, with the kernel turned
round and its channel axes swapped:

.. math::
    dx[n, c, h, w] = \sum_{o, u, v} W[o, c, k_h-1-u, k_w-1-v]\,
                     dy_{pad}[n, o, h + u, w + v]

which is the forward pass again (one product per group, no col2im and none of
its strided adds). Strided layers (and a padding of k or more) compute
``dX~_B = W_mat^T dY~_B`` and add it back onto the flat phases, one contiguous
slice-add per kernel offset: col2im on the wide layout.

Why groups, rather than the whole batch or one image at a time: ``X_B`` is kh kw
times larger than its images (9x for 3x3), so for the whole batch it would be
written to memory by the copies and read back by the product; a group of a few
MiB (:attr:`Conv2d.group_bytes`) is still in the CPU cache when the product
reads it. The groups are also the unit of work that several threads share
(:mod:`minicnn.layers.threads`): each thread builds its groups' columns and
runs their products, with BLAS held to one thread.
The columns and the product live in :func:`~minicnn.layers.base.scratch`
buffers reused from layer to layer: a fresh array of a few MiB costs a page
fault per 4 KiB the first time it is written, which measured as much as the
copies themselves.

The backward pass rebuilds ``X~_B`` instead of keeping it from the forward
pass: the layer holds only ``x`` between the passes, and when ``param_grads``
is False (only ``dx`` wanted, as in most visualizations) no columns of ``x``
are built at all.

**Winograd for 3x3 at stride 1.** Where the layer is wide enough and the
batch large enough (:func:`~minicnn.layers.winograd.use_winograd`), the
forward pass and the stride-1 input gradient above go through Winograd's
F(2x2, 3x3) instead (:mod:`minicnn.layers.winograd`): the same correlation
with 16 multiplications per 2x2 output block and channel pair instead of 36.
The weight gradient goes through Winograd's F(3x3, 2x2) on larger batches.

A 1x1 convolution without padding needs no columns: every field is one pixel,
so ``y[n]`` viewed as (O, P) is ``W_mat x[n]`` viewed as (O, C) @ (C, P), one
product per image, which ``matmul`` runs over the stacked images straight
into the output.
"""
import numpy as np

from .base import Layer, xp_of, kaiming_uniform, image_groups, scratch, sum_in_order
from .threads import run_in_parallel
from .winograd import transform_kernel, use_winograd, winograd_correlate, winograd_weight_grad
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
    """``x`` with zeros around its height and width (``xp.pad`` costs twice as much)."""
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


def dx_is_correlation(kernel, stride, padding):
    """Whether a layer's input gradient is the forward correlation of dy with the
    kernel turned round (stride 1, padding below the kernel size; see above),
    rather than the wide col2im."""
    return stride == (1, 1) and padding[0] < kernel[0] and padding[1] < kernel[1]


class WideGrid:
    """Where the wide lowering puts things, for one kernel, stride and output size.

    Each stride phase of the padded input is a (Hq, Wq) grid with
    ``Hq = Ho + (kh - 1) // sh`` and ``Wq = Wo + (kw - 1) // sw`` (the rows and
    columns some window reads); the wide output is Ho rows of Wq, ``length`` in all.
    """

    def __init__(self, kernel, stride, out_size):
        (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_size
        self.kernel, self.stride, self.out_size = kernel, stride, out_size
        self.hq, self.wq = ho + (kh - 1) // sh, wo + (kw - 1) // sw
        self.length = ho * self.wq
        # offset (u, v): phase (u % sh, v % sw), shifted by u // sh rows and v // sw columns
        self.starts = [((u % sh) * sw + v % sw) * self.hq * self.wq + (u // sh) * self.wq + v // sw
                       for u in range(kh) for v in range(kw)]
        # the last slice reaches (kw - 1) // sw past the last phase: zeros there
        self.flat_size = sh * sw * self.hq * self.wq + (kw - 1) // sw

    def flat_phases(self, x, padding, flat):
        """Fill ``flat`` (N, C, flat_size) from x (N, C, H, W): ``x_pad`` split into its
        stride phases, each phase's (Hq, Wq) grid flattened, phases one after another."""
        flat[...] = 0
        phased = self._phased(flat)
        for phase, pixels in self._phase_pixels(x.shape[2:], padding):
            phased[phase] = x[pixels]
        return flat

    def _phased(self, flat):
        """The flat phases (N, C, flat_size) viewed as (N, C, sh, sw, Hq, Wq)."""
        (sh, sw), hq, wq = self.stride, self.hq, self.wq
        return flat[:, :, :sh * sw * hq * wq].reshape(flat.shape[:2] + (sh, sw, hq, wq))

    def _read_size(self, image_size, padding):
        """(rows, cols): the pixels ``x[:, :, :rows, :cols]`` of an (H, W) image that
        some window reads (a ragged last row or column may be unread)."""
        (h, w), (sh, sw), (ph, pw) = image_size, self.stride, padding
        return max(0, min(h, self.hq * sh - ph)), max(0, min(w, self.wq * sw - pw))

    def _phase_pixels(self, image_size, padding):
        """(index into the phased grid (N, C, sh, sw, Hq, Wq), index into x) pairs,
        one per phase, for the pixels of x[:, :, :rows, :cols] (:meth:`_read_size`):
        padded pixel (a + s i, b + s j) is pixel (i, j) of phase (a, b) and pixel
        (a + s i - ph, b + s j - pw) of x."""
        (sh, sw), (ph, pw) = self.stride, padding
        rows, cols = self._read_size(image_size, padding)
        everything = slice(None)
        for a in range(sh):
            i0 = -((a - ph) // sh)  # the first row of phase a inside x
            r0 = a + sh * i0 - ph
            nr = len(range(r0, rows, sh))
            for b in range(sw):
                j0 = -((b - pw) // sw)
                c0 = b + sw * j0 - pw
                nc = len(range(c0, cols, sw))
                yield ((everything, everything, a, b, slice(i0, i0 + nr), slice(j0, j0 + nc)),
                       (everything, everything, slice(r0, rows, sh), slice(c0, cols, sw)))

    def groups(self, n, channels, itemsize, group_bytes):
        """:func:`image_groups` for this grid: per image, ``length`` columns of the
        (C kh kw) column rows and the (O) product rows; ``channels`` is (C, O)."""
        (kh, kw), (c, o) = self.kernel, channels
        return image_groups(n, (c * kh * kw + o) * self.length * itemsize, group_bytes)

    def image_columns(self, x, padding):
        """``X~_B`` (K, m length) of the images ``x`` (m, C, H, W): :meth:`flat_phases`
        then :meth:`columns`, in the scratch slots "flat" and "columns"."""
        xp = xp_of(x)
        m, c = x.shape[:2]
        (kh, kw) = self.kernel
        x_flat = self.flat_phases(x, padding, scratch(xp, "flat", (m, c, self.flat_size), x.dtype))
        return self.columns(x_flat, scratch(xp, "columns", (c, kh * kw, m, self.length), x.dtype))

    def columns(self, x_flat, out):
        """Fill ``out`` (C, kh kw, m, length) with the wide columns of the m images
        ``x_flat`` (m, C, flat_size); return it as the (K, m length) matrix ``X~_B``."""
        images = x_flat.transpose(1, 0, 2)  # (C, m, flat_size): the slices land in order
        for k, start in enumerate(self.starts):
            out[:, k] = images[:, :, start:start + self.length]
        return out.reshape(-1, out.shape[2] * self.length)

    def narrow(self, wide):
        """The wide product (O, m, Ho, Wq) without its wrapped columns: (m, O, Ho, Wo), a view."""
        return wide[:, :, :, :self.out_size[1]].transpose(1, 0, 2, 3)

    def widen(self, dy, out):
        """The inverse of :meth:`narrow`: ``dy`` (m, O, Ho, Wo) into ``out`` (O, m, Ho, Wq),
        zeros in the wrapped columns; returned as the (O, m length) matrix ``dY~_B``."""
        wo = self.out_size[1]
        out[:, :, :, wo:] = 0
        out[:, :, :, :wo] = dy.transpose(1, 0, 2, 3)
        return out.reshape(out.shape[0], -1)

    def scatter(self, dcols, x_flat):
        """The adjoint of :meth:`columns`: add ``dcols`` (C, kh kw, m, length) back onto
        the flat images ``x_flat`` (m, C, flat_size), one contiguous slice-add per offset."""
        images = x_flat.transpose(1, 0, 2)
        for k, start in enumerate(self.starts):
            images[:, :, start:start + self.length] += dcols[:, k]

    def unflat(self, x_flat, padding, x):
        """The adjoint of :meth:`flat_phases`: fill ``x`` (N, C, H, W) from ``x_flat``
        (N, C, flat_size), the phases put back in place, the padding cropped, unread
        pixels zero."""
        if self._read_size(x.shape[2:], padding) != tuple(x.shape[2:]):
            x[...] = 0
        phased = self._phased(x_flat)
        for phase, pixels in self._phase_pixels(x.shape[2:], padding):
            x[pixels] = phased[phase]


def correlate(x, weight, stride, padding, group_bytes):
    """``y[n, o, i, j] = sum_{c,u,v} weight[o, c, u, v] x_pad[n, c, s i + u, s j + v]``
    through the wide lowering, group by group."""
    xp = xp_of(x)
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho = output_size(h, kh, stride[0], padding[0])
    wo = output_size(w, kw, stride[1], padding[1])
    out = xp.empty((n, o, ho, wo), dtype=x.dtype)
    if use_winograd((kh, kw), stride, (c, o), (ho, wo), n):
        return winograd_correlate(x, transform_kernel(weight), padding, out, group_bytes)
    grid = WideGrid((kh, kw), stride, (ho, wo))
    w_mat = weight.reshape(o, -1)

    def one_group(group):
        m = group.stop - group.start
        cols = grid.image_columns(x[group], padding)
        wide = scratch(xp, "product", (o, m * grid.length), x.dtype)
        xp.matmul(w_mat, cols, out=wide)
        out[group] = grid.narrow(wide.reshape(o, m, ho, grid.wq))

    run_in_parallel(one_group, grid.groups(n, (c, o), x.dtype.itemsize, group_bytes), xp)
    return out


class Conv2d(Layer):
    """Convolution with ``weight`` (O, C, kh, kw) and optional ``bias`` (O,)."""
    fresh_output = True

    group_bytes = 4 << 20
    """Memory one group of images may take for its columns and their product
    together; a group holds as many images as fit, at least one.

    Chosen by measurement on a 2-core AMD EPYC with 32 MiB of L3: 4 MiB keeps a
    group in cache from the copies to the product."""

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

    def _pointwise_groups(self, n, pixels, xp):
        """:func:`image_groups` for a 1x1 layer (per image: its input and output) to
        share out over the threads; on a GPU, one product over the whole batch."""
        if xp is not np:
            return [slice(0, n)]
        itemsize = self.params["weight"].dtype.itemsize
        return image_groups(n, (self.in_channels + self.out_channels) * pixels * itemsize,
                            self.group_bytes)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={'bias' in self.params}")

    def forward(self, x):
        self._check_input(x, ("N", self.in_channels, "H", "W"))
        xp = xp_of(x)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
        if ho < 1 or wo < 1:
            raise ValueError(f"{self._describe()}: input {h}x{w} is smaller than the "
                             f"{kh}x{kw} kernel with padding {self.padding}")
        weight = self.params["weight"]
        if self.is_pointwise:
            # Every field is one pixel: one product (O, C) @ (C, Ho Wo) per image, which
            # matmul runs over the stacked images straight into ``out``, no copies.
            o = self.out_channels
            out = xp.empty((n, o, ho, wo), dtype=x.dtype)
            pixels = x if (sh, sw) == (1, 1) else x[:, :, ::sh, ::sw]
            w_mat = weight.reshape(o, c)

            def one_group(group):
                m = group.stop - group.start
                xp.matmul(w_mat, pixels[group].reshape(m, c, ho * wo),
                          out=out[group].reshape(m, o, ho * wo))

            run_in_parallel(one_group, self._pointwise_groups(n, ho * wo, xp), xp)
        else:
            out = correlate(x, weight, self.stride, self.padding, self.group_bytes)
        if "bias" in self.params:
            out += self.params["bias"][:, None, None]
        self.cache = x  # backward rebuilds the columns from it
        self.out_shape = out.shape
        return out

    def backward(self, dout):
        self._check_backward(dout)
        x = self.cache
        if self.param_grads:
            self.grads["weight"] = self._weight_grad(x, dout)
            if "bias" in self.params:
                self.grads["bias"] = dout.sum(axis=(0, 2, 3))
        if not self.input_grad:  # e.g. the first layer of a training step: dx unwanted
            return None
        return self._input_grad(dout, x.shape)

    def _weight_grad(self, x, dout):
        """``dW_mat = sum_B dY_B X_B^T``, through the wide columns (by Winograd where
        :func:`use_winograd` says)."""
        xp = xp_of(dout)
        n, c = x.shape[:2]
        o = self.out_channels
        if self.is_pointwise:
            sh, sw = self.stride
            pixels = x if (sh, sw) == (1, 1) else x[:, :, ::sh, ::sw]
            p = pixels.shape[2] * pixels.shape[3]

            def one_group(group):  # sum over images of dy[n] (O, P) @ x[n]^T (P, C)
                m = group.stop - group.start
                part = xp.matmul(dout[group].reshape(m, o, p),
                                 pixels[group].reshape(m, c, p).transpose(0, 2, 1))
                return part.sum(axis=0)

            parts = run_in_parallel(one_group, self._pointwise_groups(n, p, xp), xp)
            return sum_in_order(parts).reshape(self.params["weight"].shape)
        ho, wo = dout.shape[2:]
        if use_winograd(self.kernel_size, self.stride, (c, o), (ho, wo), n, weight_grad=True):
            return winograd_weight_grad(x, dout, self.padding, self.group_bytes)
        grid = WideGrid(self.kernel_size, self.stride, (ho, wo))

        def one_group(group):
            m = group.stop - group.start
            cols = grid.image_columns(x[group], self.padding)
            wide = grid.widen(dout[group], scratch(xp, "product", (o, m, ho, grid.wq),
                                                   dout.dtype))
            # X~_B^T is a transposed view: BLAS reads it in place, no copy
            return xp.matmul(wide, cols.T)

        groups = grid.groups(n, (c, o), x.dtype.itemsize, self.group_bytes)
        return sum_in_order(run_in_parallel(one_group, groups, xp)).reshape(
            self.params["weight"].shape)

    def _input_grad(self, dout, x_shape):
        """dx: the flipped-kernel convolution of dy at stride 1 (by Winograd where
        :func:`use_winograd` says), else the wide col2im of ``W_mat^T dY~_B``."""
        xp = xp_of(dout)
        n, c = x_shape[:2]
        o = self.out_channels
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = dout.shape[2:]
        weight = self.params["weight"]
        if self.is_pointwise:
            dx_sub = xp.empty((n, c, ho, wo), dtype=dout.dtype)
            w_t = weight.reshape(o, c).T

            def one_group(group):
                m = group.stop - group.start
                xp.matmul(w_t, dout[group].reshape(m, o, ho * wo),
                          out=dx_sub[group].reshape(m, c, ho * wo))

            run_in_parallel(one_group, self._pointwise_groups(n, ho * wo, xp), xp)
            if (sh, sw) == (1, 1):
                return dx_sub
            dx = xp.zeros(x_shape, dtype=dout.dtype)  # pixels the stride skips get 0
            dx[:, :, ::sh, ::sw] = dx_sub
            return dx
        if dx_is_correlation(self.kernel_size, self.stride, self.padding):
            padding = (kh - 1 - ph, kw - 1 - pw)
            if use_winograd(self.kernel_size, (1, 1), (o, c), x_shape[2:], n):
                return winograd_correlate(
                    dout, transform_kernel(weight, flipped=True), padding,
                    xp.empty(x_shape, dtype=dout.dtype), self.group_bytes)
            flipped = weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (C, O, kh, kw)
            return correlate(dout, xp.ascontiguousarray(flipped), (1, 1), padding,
                             self.group_bytes)
        # Strided: dX~_B = W_mat^T dY~_B, added back onto the flat phases of dx_pad
        # (the wrapped columns of dY~_B are zero, so they add nothing).
        grid = WideGrid(self.kernel_size, self.stride, (ho, wo))
        dx = xp.empty(x_shape, dtype=dout.dtype)
        w_t = weight.reshape(o, -1).T

        def one_group(group):
            m = group.stop - group.start
            wide = grid.widen(dout[group], scratch(xp, "product", (o, m, ho, grid.wq),
                                                   dout.dtype))
            dcols = scratch(xp, "columns", (c * kh * kw, m * grid.length), dout.dtype)
            xp.matmul(w_t, wide, out=dcols)
            dx_flat = scratch(xp, "flat", (m, c, grid.flat_size), dout.dtype)
            dx_flat[...] = 0
            grid.scatter(dcols.reshape(c, kh * kw, m, grid.length), dx_flat)
            grid.unflat(dx_flat, self.padding, dx[group])

        run_in_parallel(one_group, grid.groups(n, (c, o), dout.dtype.itemsize,
                                               self.group_bytes), xp)
        return dx
