r"""ReLU, with the three backward rules that visualization papers use.

Forward: ``y = max(x, 0)``.

Backward, given the upstream gradient ``dy``:

=========  =================================  ==========================================
mode       rule                                used by
=========  =================================  ==========================================
normal     ``dx = dy [x > 0]``                 the true gradient (saliency maps)
guided     ``dx = dy [x > 0] [dy > 0]``        guided backpropagation (Springenberg 2015)
deconv     ``dx = dy [dy > 0]``                the deconvnet (Zeiler & Fergus 2014)
=========  =================================  ==========================================

Only ``normal`` is a gradient. ``guided`` keeps what the true gradient keeps but
also drops negative signals coming down; ``deconv`` ignores the forward pass
and rectifies the signal coming down, as the deconvnet's unpooling path does.

The layer keeps its output ``y`` for backward: ``y > 0`` exactly where ``x > 0``,
and the next layer usually holds on to ``y`` anyway, so this costs no memory.
Inside a network, where nothing else holds ``x`` the layer overwrites it with
``y`` (``forward_inplace``), and where nothing else holds ``dy`` it overwrites
that with ``dx`` (``backward_inplace``): the same equations, no new arrays.
"""
import numpy as np

from .base import Layer, xp_of

RELU_MODES = ("normal", "guided", "deconv")

ZERO_ROW = 4096
"""Length of the rows of zeros :func:`relu_inplace` compares NumPy arrays with."""

_zero_rows = {}


def check_relu_mode(mode):
    if mode not in RELU_MODES:
        raise ValueError(f"unknown ReLU backward mode {mode!r}: use one of {', '.join(RELU_MODES)}")
    return mode


def relu_inplace(x):
    """``x = max(x, 0)`` in place; returns ``x``.

    Why not ``maximum(x, 0, out=x)``: NumPy (2.4) runs ``maximum`` against a
    scalar without its vector instructions, and against an array of zeros with
    them, 2-2.5x faster. So a contiguous NumPy ``x`` is compared row by row
    with one cached row of :data:`ZERO_ROW` zeros (broadcast, never copied).
    """
    xp = xp_of(x)
    if xp is not np or not x.flags.c_contiguous:
        return xp.maximum(x, 0, out=x)
    zeros = _zero_rows.get(x.dtype.str)
    if zeros is None:
        zeros = _zero_rows[x.dtype.str] = np.zeros(ZERO_ROW, dtype=x.dtype)
    flat = x.reshape(-1)
    whole = flat.size - flat.size % ZERO_ROW
    rows = flat[:whole].reshape(-1, ZERO_ROW)
    np.maximum(rows, zeros, out=rows)
    np.maximum(flat[whole:], zeros[:flat.size - whole], out=flat[whole:])
    return x


class ReLU(Layer):
    fresh_output = True
    keeps_output = True
    inplace_keeps_cache = True

    def __init__(self, mode="normal"):
        super().__init__()
        self.mode = check_relu_mode(mode)

    def extra_repr(self):
        return f"mode={self.mode!r}"

    def forward(self, x):
        self._check_input(x, None)
        return self.forward_inplace(x.copy())

    def forward_inplace(self, x):
        """:meth:`forward`, overwriting ``x`` with the output (which backward keeps)."""
        self._check_input(x, None)
        out = relu_inplace(x)
        self.cache = out
        self.out_shape = x.shape
        return out

    def backward(self, dout):
        self._check_backward(dout)
        return self._rule(dout, None)

    def backward_inplace(self, dout):
        """:meth:`backward`, overwriting ``dout`` with the result."""
        self._check_backward(dout)
        return self._rule(dout, dout)

    def _rule(self, dout, out):
        """``dx = dout * mask`` for this mode's mask, written to ``out`` (None: a new array)."""
        xp = xp_of(dout)
        if self.mode == "deconv":
            mask = dout > 0
        else:
            mask = self.cache > 0  # where x > 0
            if self.mode == "guided":
                mask &= dout > 0
        return xp.multiply(dout, mask, out=out)
