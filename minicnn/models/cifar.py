"""The CIFAR-10 ResNets of He et al. (2015), section 4.2: depth 6n + 2.

::

    conv1 (3x3, 16) - bn_conv1 - conv1_relu           32x32
    res2a ... (n basic blocks, 16 channels)           32x32
    res3a ... (n blocks, 32 channels, first stride 2) 16x16
    res4a ... (n blocks, 64 channels, first stride 2)  8x8
    global_pool - fc

Blocks are the basic 3x3 -> 3x3 ones with the ImageNet names (``branch2a``,
``bn2a``, ``branch2a_relu``, ``branch2b``, ``bn2b``). Where a block halves the
resolution and doubles the channels the shortcut is parameter-free, the paper's
"option A": ``branch1`` keeps every second pixel and zero-pads the channels
(:class:`~minicnn.layers.ChannelPadShortcut`). ResNet-20 has 0.27M parameters.
"""
import numpy as np

from ..layers import ReLU, GlobalAvgPool2d, ChannelPadShortcut
from ..network import Network, Residual
from .resnet import LayerFactory, block_names

CIFAR_VARIANT = "cifar"
CIFAR_CHANNELS = (16, 32, 64)


def cifar_block(make, cin, planes, stride):
    shortcut = []
    if (cin, stride) != (planes, 1):
        shortcut = [("branch1", ChannelPadShortcut(cin, planes, stride=stride))]
    return Residual([
        ("branch2a", make.conv(cin, planes, 3, stride, 1)), ("bn2a", make.bn(planes)),
        ("branch2a_relu", ReLU()),
        ("branch2b", make.conv(planes, planes, 3, 1, 1)), ("bn2b", make.bn(planes)),
    ], shortcut)


def cifar_resnet(depth, num_classes=10, rng=None, dtype=np.float32):
    """A CIFAR ResNet of ``depth = 6 n + 2`` layers (20, 32, 44, 56, 110, 8, ...)."""
    if not isinstance(depth, (int, np.integer)) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...), "
                         f"received {depth!r}")
    n = (int(depth) - 2) // 6
    if n > 26:
        raise ValueError(f"cifar_resnet{depth} has {n} blocks per stage, but blocks are named "
                         "res2a ... res2z: at most 26 (depth <= 158)")
    make = LayerFactory(rng, dtype, conv_bias=False, bn_eps=1e-5)
    layers = [("conv1", make.conv(3, 16, 3, 1, 1)), ("bn_conv1", make.bn(16)),
              ("conv1_relu", ReLU())]
    cin, stages = 16, {}
    for stage, planes in zip((2, 3, 4), CIFAR_CHANNELS):
        for i, name in enumerate(block_names(stage, n)):
            stride = 2 if stage > 2 and i == 0 else 1
            layers.append((name, cifar_block(make, cin, planes, stride)))
            cin = planes
        stages[f"res{stage}"] = name  # a stage's output is its last block's
    layers += [("global_pool", GlobalAvgPool2d()), ("fc", make.linear(cin, num_classes))]
    return Network(layers, metadata={"arch": f"cifar_resnet{depth}", "variant": CIFAR_VARIANT,
                                     "num_classes": num_classes}, aliases=stages)
