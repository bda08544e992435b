r"""The residual add and the parameter-free "option A" shortcut.

Add: ``y = a + b`` for two inputs of one shape; backward hands ``dy`` to both:
``da = db = dy``. A residual block is ``relu(branch(x) + shortcut(x))``; when the
shortcut is the identity, the gradient on ``x`` is the branch's plus ``dy`` itself,
which is why deep residual nets train. Inside a network, where nothing else holds
the branch's output ``a``, the sum goes into it (``forward_inplace``).

ChannelPadShortcut (the CIFAR ResNets' "option A"): when a block halves the
resolution and doubles the channels, the shortcut keeps every second pixel and
zero-pads the channel axis by ``(out - in) / 2`` on each side:
``y = pad_c(x[:, :, ::s, ::s])``. Its backward takes the middle channels of
``dy`` and puts them back on the kept pixels; the others get zero.
"""
from .base import Layer, ShapeError, xp_of


class Add(Layer):
    fresh_output = True
    inplace_keeps_cache = True  # backward needs nothing from forward

    def forward(self, a, b):
        self._check_pair(a, b)
        return a + b

    def forward_inplace(self, a, b):
        """:meth:`forward`, overwriting ``a`` with the sum."""
        self._check_pair(a, b)
        a += b
        return a

    def _check_pair(self, a, b):
        if a.shape != b.shape:
            raise ShapeError(f"{self._describe()}: the two inputs of a residual add must have one "
                             f"shape, received {tuple(a.shape)} (branch) and {tuple(b.shape)} "
                             "(shortcut)")
        self._check_input(a, None)
        self._check_input(b, None)
        if a.dtype != b.dtype:
            raise TypeError(f"{self._describe()}: the branch is {a.dtype} but the shortcut is "
                            f"{b.dtype}; both inputs of a residual add need one dtype")
        self.cache = True
        self.out_shape = a.shape

    def backward(self, dout):
        self._check_backward(dout)
        return dout, dout


class ChannelPadShortcut(Layer):
    fresh_output = True

    def __init__(self, in_channels, out_channels, stride=2):
        super().__init__()
        if out_channels < in_channels or (out_channels - in_channels) % 2:
            raise ValueError(f"ChannelPadShortcut: cannot pad {in_channels} channels evenly "
                             f"to {out_channels}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.pad = (out_channels - in_channels) // 2

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"

    def forward(self, x):
        self._check_input(x, ("N", self.in_channels, "H", "W"))
        xp = xp_of(x)
        s = self.stride
        kept = x[:, :, ::s, ::s]
        self.cache = x.shape
        # zeros and a slice assignment: a fifth faster than xp.pad's general machinery
        out = xp.zeros((kept.shape[0], self.out_channels) + kept.shape[2:], dtype=x.dtype)
        out[:, self.pad:self.pad + self.in_channels] = kept
        self.out_shape = out.shape
        return out

    def backward(self, dout):
        self._check_backward(dout)
        xp = xp_of(dout)
        s = self.stride
        dx = xp.zeros(self.cache, dtype=dout.dtype)
        dx[:, :, ::s, ::s] = dout[:, self.pad:self.pad + self.in_channels]
        return dx
