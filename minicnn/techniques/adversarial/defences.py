r"""The multi-crop defence: average the softmax over shifted and flipped views.

Each view is the image padded with ``padding`` black pixels, cropped back to
its size at an offset (the centre and the four corners by default), and
optionally mirrored. The prediction is the mean of the views' softmax,

.. math::
    \bar p(x) = \frac1V \sum_v \mathrm{softmax}\big(z(T_v x)\big),

returned as "logits" :math:`\log \bar p` so every attack can use the model as it
uses a network. Each :math:`T_v` is linear (a shift and a flip), so the
gradient goes back through it exactly: for :math:`g = \partial L/\partial\log\bar p`,

.. math::
    u = \frac{g}{V \bar p}, \qquad
    \frac{\partial L}{\partial z_v} = p_v \odot \big(u - \langle u, p_v\rangle\big),
    \qquad \frac{\partial L}{\partial x} = \sum_v T_v^{\top}\,
    \frac{\partial L}{\partial (T_v x)}.

An attack against :class:`MultiCropModel` is the adaptive attack
("expectation over the views", differentiated through): the honest measure of
the defence. An attack made against the single-crop network and then shown
to the multi-crop prediction measures only that the two differ.
"""
from ...backend import get_array_module
from ...layers import softmax
from .pixel_space import PixelModel, as_images


def crop_offsets(padding, crops):
    """(dy, dx) offsets into the padded image: 1 (the centre) or 5 (and the corners),
    or a list of offsets given as they are."""
    if isinstance(crops, int):
        centre, far = padding, 2 * padding
        if crops not in (1, 5):
            raise ValueError(f"crops must be 1, 5 or a list of (dy, dx) offsets, received {crops}")
        return [(centre, centre), (0, 0), (0, far), (far, 0), (far, far)][:crops]
    offsets = [(int(dy), int(dx)) for dy, dx in crops]
    bad = [o for o in offsets if not (0 <= o[0] <= 2 * padding and 0 <= o[1] <= 2 * padding)]
    if bad or not offsets:
        raise ValueError(f"crop offsets must lie in [0, {2 * padding}] (twice the padding), "
                         f"received {offsets}")
    return offsets


class MultiCropModel(PixelModel):
    """A network whose prediction is the mean softmax over crops (and mirrors)."""

    def __init__(self, net, crops=5, flips=True, padding=4, spec=None):
        super().__init__(net, spec)
        if padding < 0:
            raise ValueError(f"padding must be >= 0, received {padding}")
        self.padding = int(padding)
        offsets = crop_offsets(self.padding, crops)
        self.views = [(dy, dx, flip) for dy, dx in offsets for flip in ((False, True) if flips
                                                                        else (False,))]
        self._cache = None

    def _view_batch(self, images):
        """The V views of every image, stacked view by view: (V * N, 3, H, W)."""
        xp = get_array_module(images)
        p = self.padding
        n, c, h, w = images.shape
        padded = xp.zeros((n, c, h + 2 * p, w + 2 * p), dtype=images.dtype)
        padded[:, :, p:p + h, p:p + w] = images
        views = [padded[:, :, dy:dy + h, dx:dx + w] for dy, dx, _ in self.views]
        views = [v[..., ::-1] if flip else v for v, (_, _, flip) in zip(views, self.views)]
        return xp.concatenate(views)

    def _unview(self, grads, shape):
        """Sum each view's image gradient back onto the image (the views' transpose)."""
        xp = get_array_module(grads)
        p, (n, c, h, w) = self.padding, shape
        padded = xp.zeros((n, c, h + 2 * p, w + 2 * p), dtype=grads.dtype)
        for i, (dy, dx, flip) in enumerate(self.views):
            grad = grads[i * n:(i + 1) * n]
            padded[:, :, dy:dy + h, dx:dx + w] += grad[..., ::-1] if flip else grad
        return padded[:, :, p:p + h, p:p + w]

    def _mean_softmax(self, images, keep=True):
        """Each view's softmax (V, N, K) and their mean; ``keep``: for a backward pass."""
        n = len(images)
        views = self._view_batch(images)
        logits = super().forward(views) if keep else super().logits(views)
        probs = softmax(logits).reshape(len(self.views), n, -1)
        return probs, probs.mean(axis=0)

    def forward(self, images):
        """log of the mean softmax (N, K), keeping the pass for :meth:`backward`."""
        xp = get_array_module(images)
        probs, mean = self._mean_softmax(images)
        self._cache = (probs, mean, images.shape)
        return xp.log(mean)

    def logits(self, images):
        return get_array_module(images).log(self._mean_softmax(images, keep=False)[1])

    def backward(self, dlogits):
        probs, mean, shape = self._cache
        u = dlogits / (len(self.views) * mean)
        dz = probs * (u - (u * probs).sum(axis=2, keepdims=True))
        return self._unview(super().backward(dz.reshape(-1, dz.shape[2])), shape)


def multicrop_predict(net, images, crops=5, flips=True, padding=4):
    """Mean softmax (N, K) over the crops (and mirrors) of images in [0, 1]."""
    model = net if isinstance(net, MultiCropModel) else MultiCropModel(net, crops, flips, padding)
    images = as_images(model, images)
    return model._mean_softmax(images, keep=False)[1]
