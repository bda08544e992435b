r"""Winograd minimal filtering F(2x2, 3x3) for stride-1 3x3 convolutions.

Lavin & Gray (2016), "Fast Algorithms for Convolutional Neural Networks".
Cut the padded input ``x_pad`` into 4x4 tiles ``d`` overlapping by 2 (tile
(t, s) starts at row 2t, column 2s); each tile gives a 2x2 block of the output:

.. math::
    Y_{t,s} = A^T \Big[ \sum_c (G\, g_{o,c}\, G^T) \odot (B^T d_{c,t,s}\, B) \Big] A

with ``g_{o,c}`` the 3x3 kernel from input channel c to output channel o and

.. math::
    B^T = \begin{pmatrix} 1 & 0 & -1 & 0 \\ 0 & 1 & 1 & 0 \\
                          0 & -1 & 1 & 0 \\ 0 & 1 & 0 & -1 \end{pmatrix},\quad
    G = \begin{pmatrix} 1 & 0 & 0 \\ \tfrac12 & \tfrac12 & \tfrac12 \\
                        \tfrac12 & -\tfrac12 & \tfrac12 \\ 0 & 0 & 1 \end{pmatrix},\quad
    A^T = \begin{pmatrix} 1 & 1 & 1 & 0 \\ 0 & 1 & -1 & -1 \end{pmatrix}.

At each of the 16 positions (k, l) of a tile the sum over c is a matrix
product: with ``U[kl] = (G g G^T)[:, :, k, l]`` (O, C) and ``V[kl]`` (C, tiles)
the transformed tiles of a group of images, ``M[kl] = U[kl] V[kl]``: batched
``matmul`` of 16 products (O, C) x (C, tiles). A 2x2 output block
then costs 16 C multiply-adds per output channel instead of 4 x 9 C, 2.25x
fewer, paid for by the transforms: a few adds per tile and channel, each an
operation over all tiles at once.

**Where the tiles come from.** Rows 2t .. 2t+3 of ``x_pad`` are rows t and
t+1 of its even rows and of its odd rows, so ``x_pad`` is split once into its
four phases (even/odd rows x even/odd columns), each a (T+1, S+1) grid, and
every row of ``B^T d`` is two phases combined, one of them shifted a row on:
``(B^T d)_0 = d_0 - d_2 = even[t] - even[t+1]``. Laid out flat, a row on is
``S + 1`` places on and a column on is one place on, so each of the 8 + 16
combinations is one contiguous operation over all channels, images and tiles
(NumPy runs long contiguous loops several times faster than many short
ones). The price: the last row and column of each phase grid also come out
as tiles (garbage ones, read across the grid's edge), the products run on
(T+1)(S+1) tiles instead of T S, and the output drops them. On small maps with
many channels (7x7: 16 real tiles of 25) the real tiles are copied out before
the products instead (:data:`COMPACT_ABOVE`).

The input gradient of a stride-1 3x3 layer is the correlation of ``dy`` with
the kernel turned round and its channels swapped (see :mod:`.conv`), so it runs
here too, with that kernel's transform (:func:`transform_kernel`, ``flipped``).
The weight gradient is the same formula's adjoint (:func:`winograd_weight_grad`).

The output transform needs no shifts: every tile's 2x2 block is four sums of
the 16 products of that tile, written to ``y[:, :, 2t + a, 2s + b]``.
"""
import numpy as np

from .base import image_groups, xp_of, scratch, sum_in_order
from .threads import run_in_parallel

TRANSFORM_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
KERNEL_TRANSFORM = np.kron(TRANSFORM_G, TRANSFORM_G)
"""(16, 9): ``vec(G g G^T) = (G kron G) vec(g)``, row-major vectors of the 4x4 and the 3x3."""

ENABLED = True
"""False sends every convolution through the wide lowering (tests/benchmark.py's
``conv`` section times both)."""

MIN_CHANNELS = 32
MIN_TILES = 32
MIN_PRODUCTS = 1 << 18
COMPACT_ABOVE = 32
"""Copy the real tiles out before the products when ``O x garbage / all tiles``
exceeds this: measured on one core, the copy paid off for 512 channels at 7x7
(36 % of the tiles garbage; 1.5 vs 2.2 ms) and 256 at 14x14, not for 64 at 8x8."""


def use_winograd(kernel, stride, channels, out_size, images, weight_grad=False):
    """Whether a correlation of this geometry (or with ``weight_grad``, its weight
    gradient) goes through Winograd.

    ``channels`` is (in, out). Measured on one core (AVX2 OpenBLAS) against the
    wide lowering, Winograd wins when

    * both channel counts are at least :data:`MIN_CHANNELS`: the tile transforms
      cost per channel and per tile, the products save per pair of channels;
    * there are at least :data:`MIN_TILES` output blocks in the batch: the kernel
      transform (16 O C values per call) is paid once and saved on every block;
    * in all, at least :data:`MIN_PRODUCTS` (in x out x blocks): a call's fixed
      Python cost (some 40 array operations) is small beside its arithmetic.

    The measurements behind the thresholds (Winograd / wide, forward, float32):
    16 channels at 32x32, 0.96 at batch 16 and 128 (not worth it); 32 at 16x16,
    1.32 at batch 1, 0.93 at 4, 0.84 at 16; 64 at 8x8, 1.55 at batch 1, 1.17 at 2,
    1.00 at 4, 0.77 at 16 and 128; 64 at 56x56, 0.65; 128 at 28x28, 0.61; 256 at
    14x14, 0.68 at batch 1, 0.53 at 8; 512 at 7x7, 1.22 at batch 1, 0.99 at 2, 0.80
    at 4, 0.73 at 8.

    The weight gradient needs twice the blocks: it keeps the garbage tiles and
    ends with a transform of its own (512 at 7x7: 1.35 at batch 2, 0.91 at 8;
    64 at 8x8: 0.99 at batch 4, 0.71 at 64; 64 at 56x56, 0.63).
    """
    if not ENABLED or kernel != (3, 3) or stride != (1, 1) or min(channels) < MIN_CHANNELS:
        return False
    blocks = images * ((out_size[0] + 1) // 2) * ((out_size[1] + 1) // 2)
    return (blocks >= MIN_TILES * (2 if weight_grad else 1)
            and channels[0] * channels[1] * blocks >= MIN_PRODUCTS)


def transform_kernel(weight, flipped=False):
    """``U[kl] = (G g G^T)[kl]`` for every (o, c) of ``weight`` (O, C, 3, 3): (16, O, C).

    With ``flipped``, the kernel of the input gradient instead, ``g'[c, o, u, v] =
    g[o, c, 2-u, 2-v]``: (16, C, O). Turning g round reverses its 9 taps, i.e. the
    columns of ``G kron G``; swapping the channels is a transposed view that BLAS reads
    in place.
    """
    xp = xp_of(weight)
    o, c = weight.shape[:2]
    taps = weight.reshape(o * c, 9).T  # (9, O C), a view
    transform = _constant("flipped" if flipped else "forward", xp, weight.dtype)
    kernel = xp.matmul(transform, taps).reshape(16, o, c)
    return kernel.transpose(0, 2, 1) if flipped else kernel


def split_phases(x, padding, tiles, out):
    """Fill ``out`` (2, 2, C, m, T+1, S+1) with the phases of ``x`` (m, C, H, W)
    zero-padded: ``out[a, b, c, n, t, s] = x_pad[n, c, 2 t + a, 2 s + b]``, zero
    past the edges of x."""
    n, c, h, w = x.shape
    (ph, pw), (t, s) = padding, tiles
    out[...] = 0
    by_channel = x.transpose(1, 0, 2, 3)
    for a in range(2):
        t0 = (ph - a + 1) // 2   # the first phase row that is a row of x,
        r0 = 2 * t0 + a - ph     # which row of x it is,
        rows = len(range(r0, min(h, 2 * t + a - ph + 1), 2))  # and how many there are
        for b in range(2):
            s0 = (pw - b + 1) // 2
            c0 = 2 * s0 + b - pw
            cols = len(range(c0, min(w, 2 * s + b - pw + 1), 2))
            out[a, b, :, :, t0:t0 + rows, s0:s0 + cols] = \
                by_channel[:, :, r0:r0 + 2 * rows:2, c0:c0 + 2 * cols:2]
    return out


def winograd_correlate(x, kernel, padding, out, group_bytes):
    """``out[n, o, i, j] = sum_{c,u,v} g[o, c, u, v] x_pad[n, c, i + u, j + v]`` by
    F(2x2, 3x3), from ``kernel = transform_kernel(g)`` (16, O, C) and ``x`` (N, C, H, W)
    into ``out`` (N, O, Ho, Wo), :func:`~.base.image_groups` of about ``group_bytes`` at
    a time.

    Row k of the tiles' positions at a time (``V[k, :]``, ``M[k, :]``): ``A^T M``
    only needs each ``M[k]`` added into its two rows, so a quarter of V and M is
    ever held, and the products for k = 0 and 1 go straight into ``A^T M``.
    """
    xp = xp_of(x)
    n, c, h, w = x.shape
    o = kernel.shape[1]
    kernel = kernel.reshape(4, 4, o, c)
    ho, wo = out.shape[2:]
    t, s = (ho + 1) // 2, (wo + 1) // 2
    row = s + 1  # one row on, in a flat phase grid
    grid = (t + 1) * row
    # Compacting: copying the real tiles out costs less than the products spend on garbage.
    compact = o * (grid - t * s) > COMPACT_ABOVE * grid
    tile_rows, tile_cols = (t, s) if compact else (t + 1, row)
    # Scratch slots, three of them the wide lowering's, each reused once its array
    # is dead: flat (phases, then A^T M), winograd rows (B^T d), columns (V[k],
    # then A^T M A), product (M[k]), winograd real tiles (V[k] compacted).
    def one_group(group):
        m = group.stop - group.start
        size = c * m * grid  # one flat phase, all channels and images of the group
        count = m * tile_rows * tile_cols  # tiles per channel in the products
        rows = tile_rows_of(x[group], padding, (t, s))  # B^T d

        half = scratch(xp, "flat", (2, 4, o, count), x.dtype)  # A^T M
        for k in range(4):
            tiles = scratch(xp, "columns", (4, size), x.dtype)  # V[k, :] = (B^T d)[k] B
            transform_columns(rows[k], size, tiles)
            if compact:
                real = scratch(xp, "winograd real tiles", (4, c, m, t, s), x.dtype)
                real[...] = tiles.reshape(4, c, m, t + 1, row)[..., :t, :s]
                tiles = real
            tiles = tiles.reshape(4, c, count)
            # The rows of A^T, (1, 1, 1, 0) and (0, 1, -1, -1), say where M[k] goes.
            if k < 2:
                xp.matmul(kernel[k], tiles, out=half[k])
                if k == 1:
                    half[0] += half[1]
                continue
            products = scratch(xp, "product", (4, o, count), x.dtype)
            xp.matmul(kernel[k], tiles, out=products)
            if k == 2:
                half[0] += products
            half[1] -= products

        blocks = scratch(xp, "columns", (2, 2, o, count), x.dtype)  # A^T M A
        for a in range(2):
            xp.add(half[a, 0], half[a, 1], out=blocks[a, 0])
            blocks[a, 0] += half[a, 2]
            xp.subtract(half[a, 1], half[a, 2], out=blocks[a, 1])
            blocks[a, 1] -= half[a, 3]
        blocks = blocks.reshape(2, 2, o, m, tile_rows, tile_cols)
        for a in range(2):
            for b in range(2):  # drop the garbage tiles (and a ragged last row or column)
                target = out[group, :, a::2, b::2]
                rows_ab, cols_ab = target.shape[2:]
                target[...] = blocks[a, b, :, :, :rows_ab, :cols_ab].transpose(1, 0, 2, 3)

    groups = image_groups(n, 8 * (c + o) * grid * x.dtype.itemsize, group_bytes)
    run_in_parallel(one_group, groups, xp)
    return out


def tile_rows_of(x, padding, tiles):
    """``B^T d`` for every tile of the images ``x`` (m, C, H, W) zero-padded, ``tiles``
    (T, S) of them (and the garbage ones): :func:`split_phases` into the scratch slot
    "flat", then :func:`transform_rows` into "winograd rows", returned as (4, 2 size + 1)
    with size = C m (T+1) (S+1)."""
    xp = xp_of(x)
    m, c = x.shape[:2]
    (t, s) = tiles
    row = s + 1  # one row on, in a flat phase grid
    size = c * m * (t + 1) * row  # one flat phase, all channels and images
    # The shifted reads run up to row + 1 places past the last phase, into garbage
    # tiles only; zeros there keep those finite.
    flat = scratch(xp, "flat", (4 * size + row + 1,), x.dtype)
    flat[4 * size:] = 0
    split_phases(x, padding, tiles, flat[:4 * size].reshape(2, 2, c, m, t + 1, row))
    rows = scratch(xp, "winograd rows", (4, 2 * size + 1), x.dtype)
    rows[:, 2 * size:] = 0  # transform_columns reads one place past, likewise
    transform_rows(flat, size, row, rows)
    return rows


def transform_rows(flat, size, row, rows):
    """``B^T d`` for every tile: its rows d0 - d2, d1 + d2, d2 - d1, d1 - d3 from the
    flat phases ``flat`` (4 size, phase (a, b) at (2 a + b) size) into ``rows``
    (4, 2 size), the even and the odd columns of each row one after the other.
    Tile row t's rows 2t + 2, 2t + 3 are phase rows t + 1: ``row`` places on."""
    xp = xp_of(flat)

    def phase(a, b, shift):
        start = (2 * a + b) * size + shift
        return flat[start:start + size]

    for b in range(2):
        part = slice(b * size, (b + 1) * size)
        xp.subtract(phase(0, b, 0), phase(0, b, row), out=rows[0, part])
        xp.add(phase(1, b, 0), phase(0, b, row), out=rows[1, part])
        xp.subtract(phase(0, b, row), phase(1, b, 0), out=rows[2, part])
        xp.subtract(phase(1, b, 0), phase(1, b, row), out=rows[3, part])


def transform_columns(rows_k, size, out):
    """``(B^T d)[k] B``, the same combinations of the columns, from ``rows_k``
    (2 size + 1: even columns, odd columns) into ``out`` (4, size). Tile column s's
    columns 2s + 2, 2s + 3 are phase columns s + 1: one place on."""
    xp = xp_of(rows_k)
    even, odd = rows_k[:size], rows_k[size:2 * size]
    even_on, odd_on = rows_k[1:size + 1], rows_k[size + 1:2 * size + 1]
    xp.subtract(even, even_on, out=out[0])
    xp.add(odd, even_on, out=out[1])
    xp.subtract(even_on, odd, out=out[2])
    xp.subtract(odd, odd_on, out=out[3])


def winograd_weight_grad(x, dy, padding, group_bytes):
    r"""The weight gradient of a stride-1 3x3 correlation by Winograd's F(3x3, 2x2):

    .. math::
        dW_{o,c} = G^T \Big[ \sum_{n,t,s} (A\, dy_{n,o,t,s}\, A^T) \odot
                   (B^T d_{n,c,t,s}\, B) \Big] G

    the adjoint of the forward formula in U (y is linear in ``U = G g G^T``), with
    ``dy_{n,o,t,s}`` the 2x2 block of dy that tile (t, s) produced. The sum over
    the tiles of a group is 16 products (O, tiles) x (tiles, C). ``x`` (N, C, H, W),
    ``dy`` (N, O, Ho, Wo), images in groups of about ``group_bytes``; returns
    (O, C, 3, 3). The garbage tiles of the flat
    layout meet zeros in ``A dy A^T`` and add nothing.
    """
    xp = xp_of(x)
    n, c, h, w = x.shape
    o, (ho, wo) = dy.shape[1], dy.shape[2:]
    t, s = (ho + 1) // 2, (wo + 1) // 2
    row = s + 1
    grid = (t + 1) * row
    def one_group(group):
        summed = xp.zeros((4, 4, o, c), dtype=x.dtype)  # sum over tiles of Dy' V, by position
        m = group.stop - group.start
        size, count = c * m * grid, m * grid
        rows = tile_rows_of(x[group], padding, (t, s))
        # dy's 2x2 blocks on the tiles' grid, zero on the garbage tiles:
        # blocks[a, b, o, n, t, s] = dy[n, o, 2t + a, 2s + b]
        blocks = scratch(xp, "product", (2, 2, o, m, t + 1, row), x.dtype)
        blocks[...] = 0
        for a in range(2):
            for b in range(2):
                part = dy[group, :, a::2, b::2]
                blocks[a, b, :, :, :part.shape[2], :part.shape[3]] = part.transpose(1, 0, 2, 3)
        blocks = blocks.reshape(2, 2, o, count)
        # A dy A^T with A = ((1, 0), (1, 1), (1, -1), (0, -1)), its last row's sign
        # left out here and put back in the end (SIGNS): rows d0, d0 + d1, d0 - d1, d1.
        sums = scratch(xp, "winograd dy", (2, 2, o, count), x.dtype)
        xp.add(blocks[0], blocks[1], out=sums[0])
        xp.subtract(blocks[0], blocks[1], out=sums[1])
        dy_rows = (blocks[0], sums[0], sums[1], blocks[1])  # each (2: column phase, O, count)
        spread = scratch(xp, "winograd dy columns", (4, o, count), x.dtype)
        for k in range(4):
            tiles = scratch(xp, "columns", (4, size), x.dtype)
            transform_columns(rows[k], size, tiles)
            even, odd = dy_rows[k]
            spread[0] = even
            xp.add(even, odd, out=spread[1])
            xp.subtract(even, odd, out=spread[2])
            spread[3] = odd
            summed[k] += xp.matmul(spread, tiles.reshape(4, c, count).transpose(0, 2, 1))
        return summed

    groups = image_groups(n, 8 * (c + o) * grid * x.dtype.itemsize, group_bytes)
    summed = sum_in_order(run_in_parallel(one_group, groups, xp))
    taps = xp.matmul(_constant("adjoint", xp, x.dtype), summed.reshape(16, o * c))
    return xp.ascontiguousarray(taps.reshape(3, 3, o, c).transpose(2, 3, 0, 1))


SIGNS = np.outer([1, 1, 1, -1], [1, 1, 1, -1]).ravel()
"""The sign of row 3 of A, left out of ``A dy A^T`` in :func:`winograd_weight_grad`."""


_CONSTANTS = {}


def _constant(name, xp, dtype):
    """A transform matrix in ``xp``'s memory and ``dtype``, made once per device and
    dtype: copying it to a GPU on every call would wait on the host in every layer.
    ``forward``: ``G kron G`` (16, 9); ``flipped``: its columns reversed (the input
    gradient's kernel); ``adjoint``: the weight gradient's (9, 16), with
    :data:`SIGNS` put back."""
    device = None if xp is np else xp.cuda.runtime.getDevice()
    key = (name, xp.__name__, np.dtype(dtype).str, device)
    if key not in _CONSTANTS:
        matrix = {"forward": KERNEL_TRANSFORM, "flipped": KERNEL_TRANSFORM[:, ::-1],
                  "adjoint": KERNEL_TRANSFORM.T * SIGNS}[name]
        _CONSTANTS[key] = xp.asarray(np.ascontiguousarray(matrix), dtype=dtype)
    return _CONSTANTS[key]
