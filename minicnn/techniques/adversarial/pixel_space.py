r"""A network plus its preprocessing, seen from pixel space.

Attacks perturb *images*: RGB in [0, 1], (N, 3, H, W), before the weights
file's preprocessing, so that ``eps = 8/255`` means eight grey levels for every
model. The preprocessing is affine per channel,

.. math::
    x_c = \frac{255\,s\,p_{\pi(c)} - m_c}{\sigma_c}

(``s`` the file's scale, ``m`` its mean, ``sigma`` its std, ``pi`` the channel
order: the identity for RGB, reversed for BGR), so its backward pass is

.. math::
    \frac{\partial L}{\partial p_{\pi(c)}} = \frac{255\,s}{\sigma_c}\frac{\partial L}{\partial x_c}.

:class:`PixelModel` applies it inside, runs the network in eval mode and in the
network's dtype (float64 weights and float64 images give float64 results), and
returns gradients on the images. The cross-entropy gradient on the logits is
``softmax(z) - onehot(y)`` per image (no 1/N, so a batch's images do not
influence each other's step).
"""
from contextlib import contextmanager

import numpy as np

from ...backend import get_array_module
from ...layers import softmax, log_softmax
from ..optimize import network_dtype
from ..targets import check_batch, _num_classes


def check_images(images, what="images"):
    """Refuse what is not a float batch (N, 3, H, W) in [0, 1], saying how to convert."""
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) == 4 and shape[1] != 3 and shape[3] == 3:
        raise ValueError(f"{what}: expected (N, 3, H, W), received {shape}, which looks like "
                         "(N, H, W, 3); transpose with images.transpose(0, 3, 1, 2)")
    if len(shape) != 4 or shape[1] != 3:
        hint = " (one image: add a batch axis with image[None])" if len(shape) == 3 else ""
        raise ValueError(f"{what}: expected a batch of RGB images (N, 3, H, W), received shape "
                         f"{shape}{hint}")
    if shape[0] == 0:
        raise ValueError(f"{what}: the batch is empty (N = 0)")
    xp = get_array_module(images)
    if images.dtype.kind != "f":
        raise ValueError(f"{what}: expected floats in [0, 1], received {images.dtype}; from uint8 "
                         "pixels divide by 255: images.astype(np.float32) / 255")
    low, high = float(images.min()), float(images.max())
    if not (0.0 <= low and high <= 1.0) or not bool(xp.isfinite(images).all()):
        raise ValueError(f"{what}: pixel values must lie in [0, 1], received values from {low:g} "
                         f"to {high:g}; from 0..255 pixels divide by 255, from the network's "
                         "input space use PixelModel(net).to_images(x)")
    return images


def check_eps(eps, what="eps"):
    eps = float(eps)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"{what} = {eps:g} is outside [0, 1]: it is a change of pixel values in "
                         "[0, 1] (8 grey levels is 8/255)")
    return eps


def check_labels(net, labels, n, what="labels"):
    """Labels as an int64 array of length ``n`` within the network's classes."""
    labels = np.asarray(labels.get() if hasattr(labels, "get") else labels)
    if labels.ndim == 0:
        labels = np.full(n, labels)
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"{what}: expected one class per image ({n}), received shape "
                         f"{labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what}: class indices must be integers, received {labels.dtype}")
    classes = _num_classes(net)
    bad = labels[(labels < 0) | (labels >= classes)]
    if bad.size:
        raise ValueError(f"{what}: class {int(bad[0])} is out of range; valid: 0 to {classes - 1}")
    return labels.astype(np.int64)


@contextmanager
def evaluating(net):
    """Run a block with every layer in eval mode; restore each layer's mode after."""
    layers = list(net.layers())
    saved = [layer.training for layer in layers]
    net.eval()
    try:
        yield net
    finally:
        for layer, training in zip(layers, saved):
            layer.training = training


def images_from_pixels(pixels, dtype=np.float32):
    """RGB uint8 (N, H, W, 3) -> images in [0, 1], (N, 3, H, W)."""
    xp = get_array_module(pixels)
    return xp.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(dtype) / 255


class PixelModel:
    """``net`` with its preprocessing (``spec``, default the weights file's) in front.

    ``logits(images)``, ``loss_gradient(images, labels)`` and
    ``logit_gradient(images, dlogits)`` take images in [0, 1]; ``to_input`` and
    ``to_images`` convert between images and the network's input space.
    """

    def __init__(self, net, spec=None):
        self.net = net
        self.spec = dict(spec if spec is not None else net.metadata.get("preprocessing") or {})
        self.dtype = network_dtype(net)
        xp = net.array_module()
        scale = 255.0 * float(self.spec.get("scale", 1.0))
        mean = np.asarray(self.spec.get("mean", [0, 0, 0]), np.float64)
        std = np.asarray(self.spec.get("std", [1, 1, 1]), np.float64)
        self.bgr = self.spec.get("color", "RGB") == "BGR"
        # x = images[order] * gain - offset, per channel of the network's order
        self.gain = xp.asarray((scale / std)[None, :, None, None], self.dtype)
        self.offset = xp.asarray((mean / std)[None, :, None, None], self.dtype)
        self.num_classes = _num_classes(net)

    def _order(self, a):
        return a[:, ::-1] if self.bgr else a

    def to_input(self, images):
        """Images in [0, 1] -> the network's input (its dtype and device)."""
        xp = self.net.array_module()
        images = xp.asarray(images, dtype=self.dtype)
        return xp.ascontiguousarray(self._order(images) * self.gain - self.offset)

    def to_images(self, x):
        """The network's input -> images in [0, 1] (unclipped: the exact inverse)."""
        xp = get_array_module(x)
        return xp.ascontiguousarray(self._order((x + self.offset) / self.gain))

    def logits(self, images):
        check_batch(self.net, images)
        with evaluating(self.net):
            return self.net.forward(self.to_input(images), cache=False)

    def probabilities(self, images):
        return softmax(self.logits(images))

    def forward(self, images):
        """Logits, keeping the pass for :meth:`backward`."""
        check_batch(self.net, images)
        with evaluating(self.net):
            return self.net.forward(self.to_input(images))

    def backward(self, dlogits):
        """d L / d images for d L / d logits of the last :meth:`forward`."""
        with evaluating(self.net):
            dx = self.net.backward(dlogits, param_grads=False)
        return self._order(dx * self.gain)

    def logit_gradient(self, images, dlogits):
        """(logits, d (dlogits . logits) / d images) in one forward and one backward."""
        logits = self.forward(images)
        return logits, self.backward(dlogits)

    def loss_gradient(self, images, labels):
        """Per-image cross-entropy of ``labels`` and its gradient on the images:
        (losses (N,), gradient shaped like images, logits)."""
        logits = self.forward(images)
        xp = get_array_module(logits)
        rows, labels = xp.arange(len(logits)), xp.asarray(labels)
        losses = -log_softmax(logits)[rows, labels]
        dlogits = softmax(logits)
        dlogits[rows, labels] -= 1
        return losses, self.backward(dlogits), logits


def pixel_model(model):
    """A :class:`PixelModel` of a network, or the model itself when it already is one
    (a :class:`PixelModel` or a subclass such as the multi-crop model)."""
    return model if isinstance(model, PixelModel) else PixelModel(model)


def as_images(model, images):
    """Checked images on the model's device, in its dtype."""
    check_images(images)
    xp = model.net.array_module()
    return xp.asarray(images, dtype=model.dtype)
