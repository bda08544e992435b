"""minicnn's ResNet names and shapes, and recognizing a ResNet from foreign names.

minicnn names its ResNets after the original Caffe release:

* ImageNet ResNet-18/34/50/101/152: ``conv1``, ``bn_conv1``, blocks, ``fc``.
  Stage s = 2..5 holds blocks ``res<s>a``, ``res<s>b``, ...; ResNet-101/152 name
  the blocks of stages 3 and 4 ``res<s>a``, ``res<s>b1``, ``res<s>b2``, ....
  A bottleneck block holds ``branch2a`` (1x1), ``branch2b`` (3x3), ``branch2c``
  (1x1) with batch norms ``bn2a``, ``bn2b``, ``bn2c``; a basic block (18/34)
  holds ``branch2a``, ``branch2b`` (3x3) with ``bn2a``, ``bn2b``. The first block
  of a stage whose shape changes (every stage for bottlenecks, stages 3-5 for
  basic blocks) adds the projection shortcut ``branch1`` + ``bn1``.
* CIFAR ResNet-20/32/44/56/110 (6n+2 layers): ``conv1``, ``bn_conv1``, three
  stages ``res2*``, ``res3*``, ``res4*`` of n basic blocks whose shortcut has no
  parameters, and ``fc``.

State-dict keys are ``<layer>.<param>``: convs ``weight`` (out, in, kh, kw) and,
in the Caffe and Keras variants, ``bias``; batch norms ``weight`` (gamma),
``bias`` (beta), ``running_mean``, ``running_var``; ``fc.weight`` (out, in) and
``fc.bias``.

The plans here are written from the architectures, not read off the model
builders, so that the test comparing the two checks both.
"""
import re
from collections import namedtuple

from ..models.resnet import caffe_block_names
from .errors import WeightsFormatError

RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
                 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # the published ones; any 6n + 2 with n <= 26 maps
VARIANTS = ("torchvision", "caffe", "keras")
BN_KEYS = ("weight", "bias", "running_mean", "running_var")

ResNetArch = namedtuple("ResNetArch", ["depth", "block", "convention"])
ResNetArch.__doc__ = ("What infer_resnet_arch found: depth, block ('basic' or 'bottleneck') and "
                      "naming convention ('torchvision', 'cifar', 'caffe' (also Keras 1), "
                      "'keras').")


# -- the naming rule ----------------------------------------------------------
def block_name(depth, stage, index):
    """minicnn/Caffe name of block ``index`` (from 0) of stage ``stage`` (2..5)."""
    return caffe_block_names(depth, stage, index + 1)[index]


def resnet_plan(depth):
    """Yield (our layer, kind, position, weight shape) in forward order.

    kind is 'conv', 'bn' or 'fc'; position is ('stem',), ('fc',) or
    (stage, block index, part) with part in 'a', 'b', 'c' (branch2) or '1'.
    The fc shape is (None, in_features): the class count comes from the weights.
    """
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"ImageNet ResNet depth must be one of {sorted(RESNET_BLOCKS)}, "
                         f"received {depth!r}")
    bottleneck = depth >= 50
    yield "conv1", "conv", ("stem",), (64, 3, 7, 7)
    yield "bn_conv1", "bn", ("stem",), (64,)
    channels = 64
    for stage, count in zip(range(2, 6), RESNET_BLOCKS[depth]):
        mid = 64 * 2 ** (stage - 2)
        out = 4 * mid if bottleneck else mid
        for index in range(count):
            block = block_name(depth, stage, index)
            if bottleneck:
                convs = {"a": (mid, channels, 1, 1), "b": (mid, mid, 3, 3), "c": (out, mid, 1, 1)}
            else:
                convs = {"a": (mid, channels, 3, 3), "b": (out, mid, 3, 3)}
            if index == 0 and (bottleneck or stage > 2):
                convs["1"] = (out, channels, 1, 1)
            for part, shape in convs.items():
                conv, bn = ("branch1", "bn1") if part == "1" else (f"branch2{part}", f"bn2{part}")
                yield f"{block}.{conv}", "conv", (stage, index, part), shape
                yield f"{block}.{bn}", "bn", (stage, index, part), (shape[0],)
            channels = out
    yield "fc", "fc", ("fc",), (None, channels)


def cifar_plan(depth):
    if not isinstance(depth, int) or (depth - 2) % 6 or not 8 <= depth <= 158:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 for n = 1..26 (20, 32, 44, 56, "
                         f"110, ...), received {depth!r}")
    yield "conv1", "conv", ("stem",), (16, 3, 3, 3)
    yield "bn_conv1", "bn", ("stem",), (16,)
    channels = 16
    for stage, width in zip((2, 3, 4), (16, 32, 64)):
        for index in range((depth - 2) // 6):
            block = block_name(0, stage, index)
            for part, shape in (("a", (width, channels, 3, 3)), ("b", (width, width, 3, 3))):
                yield f"{block}.branch2{part}", "conv", (stage, index, part), shape
                yield f"{block}.bn2{part}", "bn", (stage, index, part), (width,)
            channels = width
    yield "fc", "fc", ("fc",), (None, channels)


def _expand(plan, conv_bias, num_classes):
    shapes = {}
    for layer, kind, _, shape in plan:
        if kind == "bn":
            shapes.update({f"{layer}.{key}": shape for key in BN_KEYS})
        elif kind == "fc":
            shapes[f"{layer}.weight"] = (num_classes, shape[1])
            shapes[f"{layer}.bias"] = (num_classes,)
        else:
            shapes[f"{layer}.weight"] = shape
            if conv_bias:
                shapes[f"{layer}.bias"] = shape[:1]
    return shapes


def resnet_state_shapes(depth, variant="torchvision", num_classes=1000):
    """``{key: shape}`` of an ImageNet ResNet in forward order.

    ``variant`` 'torchvision' has bias-free convs; 'caffe' and 'keras' give
    every conv a bias.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, received {variant!r}")
    return _expand(resnet_plan(depth), variant != "torchvision", num_classes)


def resnet_state_keys(depth, variant="torchvision"):
    """The state-dict keys of an ImageNet ResNet, in forward order."""
    return list(resnet_state_shapes(depth, variant))


def cifar_state_shapes(depth, num_classes=10):
    """``{key: shape}`` of a CIFAR ResNet (bias-free convs) in forward order."""
    return _expand(cifar_plan(depth), False, num_classes)


def cifar_state_keys(depth):
    """The state-dict keys of a CIFAR ResNet, in forward order."""
    return list(cifar_state_shapes(depth))


# -- recognizing an architecture ------------------------------------------------
_PATTERNS = {  # convention -> regex giving (stage, block, part)
    "torch": r"^layer([1-4])\.(\d+)\.(conv[123]|bn[123]|downsample)\.",
    "caffe": r"^(?:res|bn|scale)([2-5])([a-z]|b\d+)_branch(1|2[abc])$",
    "keras": r"^conv([2-5])_block(\d+)_([0-3])_(?:conv|bn)$",
}


def _names(source):
    if isinstance(source, dict):
        return [str(k) for k in source]
    return [getattr(item, "name", item) for item in source]


def infer_resnet_arch(source):
    """Recognize a ResNet from the names in ``source``.

    ``source`` is a torch state dict, a Keras layer dict, a list of CaffeLayer,
    or any iterable of names. Returns ResNetArch(depth, block, convention);
    raises WeightsFormatError when the names fit no known ResNet.
    """
    names = _names(source)
    for convention, pattern in _PATTERNS.items():
        found = [m.groups() for m in map(re.compile(pattern).match, names) if m]
        if found:
            break
    else:
        raise WeightsFormatError("no ResNet block names found (expected names like "
                                 "'layer1.0.conv1.weight', 'res2a_branch2a' or "
                                 "'conv2_block1_1_conv')")
    if any("preact" in n or "post_bn" in n for n in names):
        raise WeightsFormatError("these are pre-activation ResNetV2 weights, which minicnn "
                                 "does not map")
    blocks = {}
    for stage, block, part in found:
        stage = int(stage) + (1 if convention == "torch" else 0)
        blocks.setdefault(stage, set()).add(block)
    parts = {part for _, _, part in found}
    bottleneck = bool(parts & {"conv3", "bn3", "2c", "3"})
    counts = tuple(len(blocks.get(stage, ())) for stage in range(2, 6))
    kind = "bottleneck" if bottleneck else "basic"
    if convention == "torch" and counts[3] == 0 and not bottleneck:
        n = counts[0]
        if counts[:3] == (n, n, n) and 1 <= n <= 26:
            return ResNetArch(6 * n + 2, "basic", "cifar")
        raise WeightsFormatError(f"CIFAR ResNet with blocks per stage {counts[:3]}: expected "
                                 "n, n, n blocks (depth 6n + 2, n <= 26)")
    for depth, expected in RESNET_BLOCKS.items():
        if counts == expected and bottleneck == (depth >= 50):
            convention = "torchvision" if convention == "torch" else convention
            return ResNetArch(depth, kind, convention)
    raise WeightsFormatError(f"no ResNet has {kind} blocks per stage {counts}; known: "
                             + ", ".join(f"{d}: {b}" for d, b in RESNET_BLOCKS.items()))


def arch_name(arch):
    """minicnn's architecture name for a ResNetArch: 'resnet50', 'cifar_resnet20'."""
    return f"{'cifar_' if arch.convention == 'cifar' else ''}resnet{arch.depth}"


def _infer(source, wanted, what):
    arch = infer_resnet_arch(source)
    if arch.convention not in wanted:
        raise WeightsFormatError(f"these are {arch.convention}-style names, not {what} ones")
    return arch


def infer_torch_arch(state):
    """'resnet<depth>' (torchvision names) or 'cifar_resnet<depth>' for a torch state dict."""
    return arch_name(_infer(state, ("torchvision", "cifar"), "PyTorch ResNet"))


def infer_keras_arch(layers):
    """'resnet<depth>' for Keras layers named the Caffe way or the tf.keras way."""
    return arch_name(_infer(layers, ("caffe", "keras"), "Keras ResNet"))


def infer_caffe_arch(layers):
    """'resnet<depth>' for a list of CaffeLayer."""
    return arch_name(_infer(layers, ("caffe",), "Caffe ResNet"))


def is_keras1(layers):
    """True for Keras layers with Caffe names (conv1, res2a_branch2a: the Keras 1 ResNet-50),
    False for tf.keras names (conv1_conv, conv2_block1_1_conv)."""
    return _infer(layers, ("caffe", "keras"), "Keras ResNet").convention == "caffe"


def depth_of(source, arch, wanted, what):
    """Depth from an explicit ``arch`` ('resnet50', 'cifar_resnet20' or an int), else inferred."""
    if arch is None:
        return _infer(source, wanted, what).depth
    if isinstance(arch, int):
        return arch
    match = re.fullmatch(r"(cifar_)?resnet(\d+)", str(arch))
    if not match or bool(match.group(1)) != (wanted == ("cifar",)):
        raise ValueError(f"{arch!r} is not an architecture the {what} mapping handles")
    return int(match.group(2))
