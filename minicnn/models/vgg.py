"""VGG-16 and VGG-19 (Simonyan & Zisserman, "Very Deep Convolutional Networks", 2014).

Configurations D (16 weight layers) and E (19), named as in the original Caffe
release (VGG_ILSVRC_16_layers, VGG_ILSVRC_19_layers)::

    conv1_1 relu1_1 conv1_2 relu1_2 pool1                  64 channels, 224 -> 112
    conv2_1 ... conv2_2 relu2_2 pool2                      128,          -> 56
    conv3_1 ... conv3_3 (conv3_4) relu3_3 (relu3_4) pool3  256,          -> 28
    conv4_1 ... conv4_3 (conv4_4) ... pool4                512,          -> 14
    conv5_1 ... conv5_3 (conv5_4) ... pool5                512,          -> 7
    flatten fc6 relu6 fc7 relu7 fc8                        25088 -> 4096 -> 4096 -> 1000

Every convolution is 3x3, stride 1, padding 1, with a bias, followed by a ReLU;
every pool is a 2x2 max pool of stride 2. ``flatten`` orders pool5's values
(C, H, W), as Caffe and PyTorch do; fc6 therefore needs a 224 x 224 input
(pool5 of 7 x 7), while the convolutional part takes any size (style transfer
and inversion use it so). Dropout is the identity at inference and is left out.

The three variants (``torchvision``, ``caffe``, ``keras``) share the
architecture exactly; they differ in the preprocessing their weights expect
(RGB in 0-1 with ImageNet mean and std, or BGR 0-255 minus the mean pixel),
which the converted weights file records.
"""
import numpy as np

from ..layers import Conv2d, ReLU, MaxPool2d, Flatten, Linear
from ..layers.base import as_generator
from ..network import Network

VARIANTS = ("torchvision", "caffe", "keras")
CONVS_PER_BLOCK = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
CHANNELS = (64, 128, 256, 512, 512)
HIDDEN = 4096
POOL5_SIZE = 7  # 224 / 2**5


def vgg(depth, variant="torchvision", num_classes=1000, rng=None, dtype=np.float32,
        channels=CHANNELS, hidden=HIDDEN):
    """VGG-``depth`` (16 or 19), He-initialized from ``rng`` (a seed or a Generator).

    ``channels`` (one width per block) and ``hidden`` (fc6 and fc7 outputs)
    default to the published 64-128-256-512-512 and 4096; smaller values give a
    narrow network of the same layout and names (the tests use one).
    """
    if depth not in CONVS_PER_BLOCK:
        raise ValueError(f"unknown VGG depth {depth!r}: use one of {sorted(CONVS_PER_BLOCK)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown VGG variant {variant!r}: use one of {', '.join(VARIANTS)}")
    if len(channels) != len(CHANNELS):
        raise ValueError(f"channels gives the width of each of the 5 blocks, received "
                         f"{tuple(channels)}")
    rng = as_generator(rng)
    layers, cin = [], 3
    for block, (count, width) in enumerate(zip(CONVS_PER_BLOCK[depth], channels), start=1):
        for index in range(1, count + 1):
            layers += [(f"conv{block}_{index}", Conv2d(cin, width, 3, 1, 1, rng=rng, dtype=dtype)),
                       (f"relu{block}_{index}", ReLU())]
            cin = width
        layers.append((f"pool{block}", MaxPool2d(2, 2)))
    layers += [
        ("flatten", Flatten()),
        ("fc6", Linear(cin * POOL5_SIZE ** 2, hidden, rng=rng, dtype=dtype)), ("relu6", ReLU()),
        ("fc7", Linear(hidden, hidden, rng=rng, dtype=dtype)), ("relu7", ReLU()),
        ("fc8", Linear(hidden, num_classes, rng=rng, dtype=dtype)),
    ]
    return Network(layers, metadata={"arch": f"vgg{depth}", "variant": variant,
                                     "num_classes": num_classes})
