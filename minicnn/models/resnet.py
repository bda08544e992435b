"""ResNets for ImageNet (He et al., "Deep Residual Learning", 2015) in three flavours.

Every flavour shares one layout and one set of names, those of the original
Caffe models, so that one weights file format serves them all::

    conv1 (7x7/2) - bn_conv1 - conv1_relu - pool1 (3x3/2)
    res2a, res2b, ...   stage 2,  64 base channels, stride 1   (56x56 at 224)
    res3a, ...          stage 3, 128 base channels, stride 2   (28x28)
    res4a, ...          stage 4, 256 base channels, stride 2   (14x14)
    res5a, ...          stage 5, 512 base channels, stride 2   (7x7)
    global_pool - fc

The stage names ``res2`` ... ``res5`` are aliases of each stage's last block
(``res4`` is ``res4f`` in ResNet-50, ``res4b22`` in ResNet-101): the stage's
output, the paper's conv2_x ... conv5_x.

A block is ``relu(branch2(x) + branch1(x))``. The bottleneck's branch2 is
1x1 -> 3x3 -> 1x1 (``branch2a``, ``branch2b``, ``branch2c``, each followed by
``bn2a``...), the basic block's 3x3 -> 3x3; ``branch1``/``bn1`` is the 1x1
projection on the first block of a stage when the shape changes, else the
identity. ResNet-101/152 number the blocks of stages 3 and 4 as Caffe does
(``res4a``, ``res4b1`` ... ``res4b22``).

The variants differ in details that change the numbers, never the names:

=============  ==========  ========  ======================  =================
variant        conv bias   BN eps    pool1                   bottleneck stride
=============  ==========  ========  ======================  =================
caffe          yes         1e-5      3x3/2, pad 0, ceil      first 1x1 (2a)
torchvision    no          1e-5      3x3/2, pad 1, floor     3x3 (2b), "v1.5"
keras          yes         1.001e-5  3x3/2, pad 1, floor     first 1x1 (2a)
=============  ==========  ========  ======================  =================

Keras pads with zeros before its unpadded max pool; after a ReLU every value
is >= 0, so zero padding and PyTorch's -inf padding give the same maxima.
"""
import string
from dataclasses import dataclass

import numpy as np

from ..layers import Conv2d, BatchNorm2d, ReLU, MaxPool2d, GlobalAvgPool2d, Linear
from ..layers.base import as_generator
from ..network import Network, Residual


@dataclass(frozen=True)
class Variant:
    conv_bias: bool
    bn_eps: float
    pool1_padding: int
    pool1_ceil_mode: bool
    stride_on_1x1: bool  # bottleneck: stride on branch2a (else on branch2b)


VARIANTS = {
    "torchvision": Variant(False, 1e-5, 1, False, False),
    "caffe": Variant(True, 1e-5, 0, True, True),
    "keras": Variant(True, 1.001e-5, 1, False, True),
}

DEPTHS = {  # depth: (block kind, blocks per stage 2..5)
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}
BASE_CHANNELS = (64, 128, 256, 512)


class LayerFactory:
    """Makes convolutions and batch norms sharing one generator, dtype and style."""

    def __init__(self, rng, dtype, conv_bias, bn_eps):
        self.rng, self.dtype = as_generator(rng), dtype
        self.conv_bias, self.bn_eps = conv_bias, bn_eps

    def conv(self, cin, cout, kernel, stride=1, padding=0):
        return Conv2d(cin, cout, kernel, stride, padding, bias=self.conv_bias, rng=self.rng,
                      dtype=self.dtype)

    def bn(self, channels):
        return BatchNorm2d(channels, eps=self.bn_eps, dtype=self.dtype)

    def linear(self, fin, fout):
        return Linear(fin, fout, rng=self.rng, dtype=self.dtype)


def block_names(stage, count, numbered=False):
    """'res2a', 'res2b', ...; numbered: 'res4a', 'res4b1', 'res4b2', ..."""
    if numbered:
        return [f"res{stage}a"] + [f"res{stage}b{i}" for i in range(1, count)]
    if count > 26:
        raise ValueError(f"stage {stage} has {count} blocks; letter names allow at most 26")
    return [f"res{stage}{letter}" for letter in string.ascii_lowercase[:count]]


def caffe_block_names(depth, stage, count):
    """The release's names: letters, but ResNet-101/152 number stages 3 and 4 ('res4b22')."""
    return block_names(stage, count, numbered=depth in (101, 152) and stage in (3, 4))


def basic_block(make, cin, planes, stride):
    """3x3 (stride) -> 3x3, both with BN; projected shortcut when the shape changes."""
    return Residual([
        ("branch2a", make.conv(cin, planes, 3, stride, 1)), ("bn2a", make.bn(planes)),
        ("branch2a_relu", ReLU()),
        ("branch2b", make.conv(planes, planes, 3, 1, 1)), ("bn2b", make.bn(planes)),
    ], projection(make, cin, planes, stride))


def bottleneck_block(make, cin, planes, stride, stride_on_1x1):
    """1x1 -> 3x3 -> 1x1 (4 planes); the stride sits on the first 1x1 or the 3x3."""
    s1, s3 = (stride, 1) if stride_on_1x1 else (1, stride)
    cout = 4 * planes
    return Residual([
        ("branch2a", make.conv(cin, planes, 1, s1)), ("bn2a", make.bn(planes)),
        ("branch2a_relu", ReLU()),
        ("branch2b", make.conv(planes, planes, 3, s3, 1)), ("bn2b", make.bn(planes)),
        ("branch2b_relu", ReLU()),
        ("branch2c", make.conv(planes, cout, 1)), ("bn2c", make.bn(cout)),
    ], projection(make, cin, cout, stride))


def projection(make, cin, cout, stride):
    """The 1x1 conv + BN shortcut, or the identity (``[]``) when the shape is kept."""
    if (cin, stride) == (cout, 1):
        return []
    return [("branch1", make.conv(cin, cout, 1, stride)), ("bn1", make.bn(cout))]


def resnet(depth, variant="torchvision", num_classes=1000, rng=None, dtype=np.float32):
    """An ImageNet ResNet-``depth`` (18, 34, 50, 101, 152), He-initialized.

    ``rng`` is a seed or a ``numpy.random.Generator``; one generator initializes
    every layer in forward order, so a seed gives the same network every time.
    """
    if depth not in DEPTHS:
        raise ValueError(f"unknown ResNet depth {depth!r}: use one of {sorted(DEPTHS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown ResNet variant {variant!r}: use one of {', '.join(VARIANTS)}")
    v = VARIANTS[variant]
    kind, counts = DEPTHS[depth]
    expansion = EXPANSION[kind]
    make = LayerFactory(rng, dtype, v.conv_bias, v.bn_eps)
    layers = [
        ("conv1", make.conv(3, 64, 7, 2, 3)), ("bn_conv1", make.bn(64)), ("conv1_relu", ReLU()),
        ("pool1", MaxPool2d(3, 2, padding=v.pool1_padding, ceil_mode=v.pool1_ceil_mode)),
    ]
    cin, stages = 64, {}
    for stage, planes, count in zip((2, 3, 4, 5), BASE_CHANNELS, counts):
        for i, name in enumerate(caffe_block_names(depth, stage, count)):
            stride = 2 if stage > 2 and i == 0 else 1
            if kind == "basic":
                block = basic_block(make, cin, planes, stride)
            else:
                block = bottleneck_block(make, cin, planes, stride, v.stride_on_1x1)
            layers.append((name, block))
            cin = expansion * planes
        stages[f"res{stage}"] = name  # a stage's output is its last block's
    layers += [("global_pool", GlobalAvgPool2d()), ("fc", make.linear(cin, num_classes))]
    return Network(layers, metadata={"arch": f"resnet{depth}", "variant": variant,
                                     "num_classes": num_classes}, aliases=stages)
