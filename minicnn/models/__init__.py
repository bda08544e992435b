"""Model architectures, by name.

>>> net = build("resnet50", variant="caffe")          # ImageNet, 1000 classes
>>> net = build("cifar_resnet20", rng=0)              # CIFAR-10, 10 classes
>>> net = build("vgg19", variant="caffe")             # ImageNet VGG-19, Caffe's names

``ARCHITECTURES`` maps each name to a builder ``f(variant, num_classes, rng,
dtype)``; ``cifar_resnetN`` is accepted for any N = 6n + 2. Every network has
``net.metadata = {'arch', 'variant', 'num_classes'}``.
"""
import difflib
import re

import numpy as np

from .resnet import resnet, VARIANTS, DEPTHS
from .cifar import cifar_resnet, CIFAR_VARIANT
from .vgg import vgg, VARIANTS as VGG_VARIANTS, CONVS_PER_BLOCK as VGG_DEPTHS

IMAGENET_VARIANTS = tuple(VARIANTS)  # the first one is the default
CIFAR_DEPTHS = (20, 32, 44, 56, 110)


def _imagenet(depth):
    def builder(variant=None, num_classes=None, rng=None, dtype=np.float32):
        variant = IMAGENET_VARIANTS[0] if variant is None else variant
        if variant not in IMAGENET_VARIANTS:
            raise ValueError(f"unknown variant {variant!r} for resnet{depth}: use one of "
                             f"{', '.join(IMAGENET_VARIANTS)}")
        return resnet(depth, variant, 1000 if num_classes is None else num_classes, rng, dtype)
    builder.variants = IMAGENET_VARIANTS
    return builder


def _cifar(depth):
    def builder(variant=None, num_classes=None, rng=None, dtype=np.float32):
        if variant not in (None, CIFAR_VARIANT):
            raise ValueError(f"unknown variant {variant!r} for cifar_resnet{depth}: use "
                             f"{CIFAR_VARIANT!r} (or None)")
        return cifar_resnet(depth, 10 if num_classes is None else num_classes, rng, dtype)
    builder.variants = (CIFAR_VARIANT,)
    return builder


def _vgg(depth):
    def builder(variant=None, num_classes=None, rng=None, dtype=np.float32):
        variant = VGG_VARIANTS[0] if variant is None else variant
        return vgg(depth, variant, 1000 if num_classes is None else num_classes, rng, dtype)
    builder.variants = VGG_VARIANTS
    return builder


ARCHITECTURES = {f"resnet{d}": _imagenet(d) for d in DEPTHS}
ARCHITECTURES.update({f"cifar_resnet{d}": _cifar(d) for d in CIFAR_DEPTHS})
ARCHITECTURES.update({f"vgg{d}": _vgg(d) for d in VGG_DEPTHS})


def get_builder(arch):
    """The builder for ``arch``; ``cifar_resnetN`` works for any N = 6n + 2."""
    if arch in ARCHITECTURES:
        return ARCHITECTURES[arch]
    match = re.fullmatch(r"cifar_resnet(\d+)", str(arch))
    if match:  # cifar_resnet() says what is wrong with a depth that is not 6n + 2
        return _cifar(int(match.group(1)))
    close = difflib.get_close_matches(str(arch), list(ARCHITECTURES), n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    raise ValueError(f"unknown architecture {arch!r}{hint}: use one of "
                     f"{', '.join(ARCHITECTURES)}, or cifar_resnetN for any N = 6n + 2 <= 158; "
                     f"ImageNet variants: {', '.join(IMAGENET_VARIANTS)}")


def build(arch, variant=None, num_classes=None, rng=None, dtype=np.float32):
    """Build a freshly initialized network by name (see ``ARCHITECTURES``)."""
    return get_builder(arch)(variant=variant, num_classes=num_classes, rng=rng, dtype=dtype)


__all__ = ["ARCHITECTURES", "IMAGENET_VARIANTS", "CIFAR_VARIANT", "build", "get_builder",
           "resnet", "cifar_resnet", "vgg"]
