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
"""
from .base import Layer, xp_of

RELU_MODES = ("normal", "guided", "deconv")


def check_relu_mode(mode):
    if mode not in RELU_MODES:
        raise ValueError(f"unknown ReLU backward mode {mode!r}: use one of {', '.join(RELU_MODES)}")
    return mode


class ReLU(Layer):
    fresh_output = True

    def __init__(self, mode="normal"):
        super().__init__()
        self.mode = check_relu_mode(mode)

    def extra_repr(self):
        return f"mode={self.mode!r}"

    def forward(self, x):
        self._check_input(x, None)
        xp = xp_of(x)
        out = xp.maximum(x, 0)
        self.cache = out
        self.out_shape = x.shape
        return out

    def forward_inplace(self, x):
        """Inference only (nothing kept for backward): overwrite ``x`` with the output."""
        self._check_input(x, None)
        self.out_shape = x.shape
        return xp_of(x).maximum(x, 0, out=x)

    def backward(self, dout):
        self._check_backward(dout)
        passed = self.cache > 0  # where x > 0
        if self.mode == "normal":
            return dout * passed
        if self.mode == "guided":
            return dout * (passed & (dout > 0))
        return dout * (dout > 0)
