"""Map foreign ResNet weights onto minicnn's state-dict names.

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
``fc.bias``. Every converter checks that its result has exactly the keys and
shapes of :func:`resnet_state_shapes` / :func:`cifar_state_shapes` and names the
missing or unexpected foreign entry when it does not.

Each converter takes what a reader returned and an optional ``arch``
('resnet50', 'cifar_resnet20', or the depth); without it the depth is inferred
from the foreign names (:func:`infer_resnet_arch`).
"""
import re
from collections import namedtuple

import numpy as np

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


def _resnet_plan(depth):
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


def _cifar_plan(depth):
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
    return _expand(_resnet_plan(depth), variant != "torchvision", num_classes)


def resnet_state_keys(depth, variant="torchvision"):
    """The state-dict keys of an ImageNet ResNet, in forward order."""
    return list(resnet_state_shapes(depth, variant))


def cifar_state_shapes(depth, num_classes=10):
    """``{key: shape}`` of a CIFAR ResNet (bias-free convs) in forward order."""
    return _expand(_cifar_plan(depth), False, num_classes)


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


def _depth(source, arch, wanted, what):
    """Depth from an explicit ``arch`` ('resnet50', 'cifar_resnet20' or an int), else inferred."""
    if arch is None:
        return _infer(source, wanted, what).depth
    if isinstance(arch, int):
        return arch
    match = re.fullmatch(r"(cifar_)?resnet(\d+)", str(arch))
    if not match or bool(match.group(1)) != (wanted == ("cifar",)):
        raise ValueError(f"{arch!r} is not an architecture the {what} mapping handles")
    return int(match.group(2))


# -- the converters ----------------------------------------------------------------
def _take(store, name, source, needed_for):
    if name not in store:
        raise WeightsFormatError(f"{source} weights have no {name!r} (needed for minicnn "
                                 f"{needed_for!r})")
    return store[name]


def _convert(plan, fetch, shapes_for, source, unused):
    """Run ``fetch(kind, position, our layer, shape) -> (foreign name, {key: array})``
    over the plan and check the result against the expected shapes."""
    state, origin = {}, {}
    for layer, kind, position, shape in plan:
        foreign, values = fetch(kind, position, layer, shape)
        for key, value in values.items():
            state[f"{layer}.{key}"] = np.ascontiguousarray(value)
            origin[f"{layer}.{key}"] = foreign
    leftover = unused()
    if leftover:
        raise WeightsFormatError(f"{source} weights hold {len(leftover)} entries that do not "
                                 f"belong to this ResNet: {', '.join(sorted(leftover)[:8])}")
    expected = shapes_for(state["fc.weight"].shape[0])
    if list(state) != list(expected):
        raise WeightsFormatError(f"internal error: converted keys differ from the {source} "
                                 "target network")
    for key, shape in expected.items():
        if state[key].shape != tuple(shape):
            raise WeightsFormatError(f"minicnn {key!r} has shape {tuple(shape)} but {source} "
                                     f"{origin[key]!r} gives {state[key].shape}")
    return state


def _torch_convert(state, plan, names, source, shapes_for):
    used = set()

    def fetch(kind, position, layer, shape):
        prefix = names(kind, position)
        keys = ("weight", "bias") if kind == "fc" else BN_KEYS if kind == "bn" else ("weight",)
        values = {}
        for key in keys:
            values[key] = _take(state, f"{prefix}.{key}", source, f"{layer}.{key}")
            used.add(f"{prefix}.{key}")
        return prefix, values

    def unused():
        return {k for k in state if k not in used and not k.endswith("num_batches_tracked")}
    return _convert(plan, fetch, shapes_for, source, unused)


def torchvision_resnet_to_minicnn(state, arch=None):
    """torchvision ResNet state dict -> minicnn ('torchvision' variant, no conv bias)."""
    depth = _depth(state, arch, ("torchvision",), "torchvision")

    def names(kind, position):
        if position in (("stem",), ("fc",)):
            return {"conv": "conv1", "bn": "bn1", "fc": "fc"}[kind]
        stage, index, part = position
        if part == "1":
            return f"layer{stage - 1}.{index}.downsample.{0 if kind == 'conv' else 1}"
        return f"layer{stage - 1}.{index}.{kind}{'abc'.index(part) + 1}"
    return _torch_convert(state, _resnet_plan(depth), names, "torchvision",
                          lambda n: resnet_state_shapes(depth, "torchvision", n))


def cifar_resnet_to_minicnn(state, arch=None):
    """akamaster CIFAR ResNet state dict (``module.`` already stripped) -> minicnn."""
    depth = _depth(state, arch, ("cifar",), "CIFAR ResNet")

    def names(kind, position):
        if position in (("stem",), ("fc",)):
            return {"conv": "conv1", "bn": "bn1", "fc": "linear"}[kind]
        stage, index, part = position
        return f"layer{stage - 1}.{index}.{kind}{'ab'.index(part) + 1}"
    return _torch_convert(state, _cifar_plan(depth), names, "CIFAR ResNet",
                          lambda n: cifar_state_shapes(depth, n))


def _caffe_name(depth, kind, position, fc_name="fc1000"):
    """Caffe (and Keras 1) layer name; kind 'scale' names Caffe's Scale layer."""
    if position == ("fc",):
        return fc_name
    if position == ("stem",):
        return {"conv": "conv1", "bn": "bn_conv1", "scale": "scale_conv1"}[kind]
    stage, index, part = position
    block = block_name(depth, stage, index)  # 'res3b1'
    branch = "branch1" if part == "1" else f"branch2{part}"
    prefix = "res" if kind == "conv" else kind
    return f"{prefix}{block[3:]}_{branch}"  # 'res3b1_branch2a', 'bn3b1_branch2a'


KERAS_FC_NAMES = ("probs", "predictions")  # as keras_applications and tf.keras name it


def _keras_name(kind, position, fc_name="probs"):
    """Keras applications layer name: conv1_conv, conv2_block1_0_conv, probs."""
    if position == ("fc",):
        return fc_name
    suffix = "conv" if kind == "conv" else "bn"
    if position == ("stem",):
        return f"conv1_{suffix}"
    stage, index, part = position
    return f"conv{stage}_block{index + 1}_{'1abc'.index(part)}_{suffix}"


def _keras_convert(layers, depth, names, source):
    used = set()

    def pick(weights, aliases, name, layer):
        for alias in aliases:
            if alias in weights:
                return weights[alias]
        raise WeightsFormatError(f"{source} layer {name!r} has no {' / '.join(aliases)} weight "
                                 f"(needed for minicnn {layer!r}); it has {sorted(weights)}")

    def fetch(kind, position, layer, shape):
        name = names(kind, position)
        weights = _take(layers, name, source, layer)
        used.add(name)
        if kind == "bn":
            return name, {"weight": pick(weights, ("gamma",), name, layer),
                          "bias": pick(weights, ("beta",), name, layer),
                          "running_mean": pick(weights, ("moving_mean", "running_mean"), name,
                                               layer),
                          "running_var": pick(weights, ("moving_variance", "running_std"), name,
                                              layer)}
        kernel = np.asarray(pick(weights, ("kernel", "W"), name, layer))
        if kernel.ndim != (2 if kind == "fc" else 4):
            raise WeightsFormatError(f"{source} layer {name!r} has a kernel of shape "
                                     f"{kernel.shape}; expected {len(shape)} axes for {layer!r}")
        kernel = kernel.T if kind == "fc" else kernel.transpose(3, 2, 0, 1)
        bias = weights.get("bias", weights.get("b", np.zeros(kernel.shape[0], kernel.dtype)))
        return name, {"weight": kernel, "bias": bias}
    return _convert(_resnet_plan(depth), fetch,
                    lambda n: resnet_state_shapes(depth, "keras", n), source,
                    lambda: set(layers) - used)


def keras1_resnet_to_minicnn(layers, arch=None):
    """Keras layers with Caffe names (Keras 1 ResNet-50) -> minicnn, convs with bias.

    Accepts the Keras 1 weight names (W, b, running_std, which holds the variance)
    and the Keras 2 ones (kernel, bias, moving_variance). Kernels (kh, kw, in,
    out) become (out, in, kh, kw); the dense (in, out) becomes (out, in).
    """
    depth = _depth(layers, arch, ("caffe",), "Caffe-named Keras")
    return _keras_convert(layers, depth, lambda kind, pos: _caffe_name(depth, kind, pos),
                          "Keras")


def keras_resnet_to_minicnn(layers, arch=None):
    """tf.keras / Keras 2 ResNet layers (conv2_block1_1_conv, ...) -> minicnn ('keras').

    Kernels are transposed as in :func:`keras1_resnet_to_minicnn`. keras_applications
    (whose ResNet code wrote the published files) names the classifier 'probs',
    tf.keras names it 'predictions'; either is accepted.
    """
    depth = _depth(layers, arch, ("keras",), "tf.keras")
    found = [name for name in KERAS_FC_NAMES if name in layers]
    if not found:
        raise WeightsFormatError("Keras weights have no classifier layer 'probs' or "
                                 "'predictions' (needed for minicnn 'fc'); a '_notop' file "
                                 "cannot be converted into a classifier")
    return _keras_convert(layers, depth, lambda kind, pos: _keras_name(kind, pos, found[0]),
                          "Keras")


def caffe_resnet_to_minicnn(layers, arch=None):
    """Caffe ResNet layers (a list of CaffeLayer) -> minicnn ('caffe' variant).

    Caffe's BatchNorm layer stores (mean, variance, scale factor): the
    statistics are divided by the factor (a zero factor gives zeros, as in
    Caffe). The following Scale layer stores (gamma, beta). Convs without a
    bias blob get a zero bias. Blobs are reshaped to minicnn's shapes, so
    legacy 4-d blobs such as a (1, 1, out, in) InnerProduct weight fit.
    """
    by_name = {layer.name: layer for layer in layers if layer.blobs}
    depth = _depth(by_name, arch, ("caffe",), "Caffe")
    fc_name = "fc1000"
    products = [name for name, layer in by_name.items() if layer.type == "InnerProduct"]
    if fc_name not in by_name and len(products) == 1:
        fc_name = products[0]
    used = set()

    def blobs(kind, position, layer, count):
        name = _caffe_name(depth, kind, position, fc_name)
        found = _take(by_name, name, "Caffe", layer).blobs
        used.add(name)
        if len(found) < count:
            raise WeightsFormatError(f"Caffe layer {name!r} has {len(found)} blobs, expected "
                                     f"at least {count} (for minicnn {layer!r})")
        return name, [np.asarray(b) for b in found]

    def fit(array, shape, name):
        if array.size != int(np.prod(shape)):
            raise WeightsFormatError(f"Caffe layer {name!r} has a blob of shape {array.shape}, "
                                     f"expected {tuple(shape)}")
        return array.reshape(shape)

    def fetch(kind, position, layer, shape):
        if kind == "bn":
            name, (mean, var, *rest) = blobs("bn", position, layer, 2)
            factor = float(rest[0].ravel()[0]) if rest else 1.0
            factor = 0.0 if factor == 0 else 1.0 / factor
            _, (gamma, *beta) = blobs("scale", position, layer, 1)
            beta = beta[0] if beta else np.zeros(shape, gamma.dtype)
            return name, {"weight": fit(gamma, shape, name), "bias": fit(beta, shape, name),
                          "running_mean": fit(mean * factor, shape, name),
                          "running_var": fit(var * factor, shape, name)}
        name, (weight, *bias) = blobs(kind, position, layer, 1)
        if kind == "fc":
            shape = (weight.size // shape[1], shape[1])
        weight = fit(weight, shape, name)
        bias = fit(bias[0], shape[:1], name) if bias else np.zeros(shape[0], weight.dtype)
        return name, {"weight": weight, "bias": bias}
    return _convert(_resnet_plan(depth), fetch,
                    lambda n: resnet_state_shapes(depth, "caffe", n), "Caffe",
                    lambda: set(by_name) - used)
