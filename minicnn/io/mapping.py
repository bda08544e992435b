"""Map foreign ResNet weights onto minicnn's state-dict names.

Each converter takes what a reader returned and an optional ``arch``
('resnet50', 'cifar_resnet20', or the depth); without it the depth is inferred
from the foreign names (:func:`~minicnn.io.resnet_names.infer_resnet_arch`).
The names and shapes it must produce are those of
:mod:`minicnn.io.resnet_names`; every converter checks that its result has
exactly those keys and shapes and names the missing or unexpected foreign
entry when it does not.
"""
import numpy as np

from .errors import WeightsFormatError
from .resnet_names import (BN_KEYS, block_name, cifar_plan, cifar_state_shapes, depth_of,
                           resnet_plan, resnet_state_shapes)


# -- the converters ----------------------------------------------------------------
def _take(store, name, source, needed_for):
    if name not in store:
        raise WeightsFormatError(f"{source} weights have no {name!r} (needed for minicnn "
                                 f"{needed_for!r})")
    return store[name]


def _gather(entries, source, unused, target):
    """Collect ``(our name, foreign name, array)`` entries into ``(state, origin)``
    (contiguous arrays; origin names each one's foreign entry), then refuse the
    file if ``unused()`` names foreign entries that ``target`` has no place for."""
    state, origin = {}, {}
    for name, foreign, value in entries:
        state[name] = np.ascontiguousarray(value)
        origin[name] = foreign
    leftover = unused()
    if leftover:
        raise WeightsFormatError(f"{source} weights hold {len(leftover)} entries that do not "
                                 f"belong to {target}: {', '.join(sorted(leftover)[:8])}")
    return state, origin


def _convert(plan, fetch, shapes_for, source, unused):
    """Run ``fetch(kind, position, our layer, shape) -> (foreign name, {key: array})``
    over the plan and check the result against the expected shapes."""
    def entries():
        for layer, kind, position, shape in plan:
            foreign, values = fetch(kind, position, layer, shape)
            for key, value in values.items():
                yield f"{layer}.{key}", foreign, value
    state, origin = _gather(entries(), source, unused, "this ResNet")
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
    depth = depth_of(state, arch, ("torchvision",), "torchvision")

    def names(kind, position):
        if position in (("stem",), ("fc",)):
            return {"conv": "conv1", "bn": "bn1", "fc": "fc"}[kind]
        stage, index, part = position
        if part == "1":
            return f"layer{stage - 1}.{index}.downsample.{0 if kind == 'conv' else 1}"
        return f"layer{stage - 1}.{index}.{kind}{'abc'.index(part) + 1}"
    return _torch_convert(state, resnet_plan(depth), names, "torchvision",
                          lambda n: resnet_state_shapes(depth, "torchvision", n))


def cifar_resnet_to_minicnn(state, arch=None):
    """akamaster CIFAR ResNet state dict (``module.`` already stripped) -> minicnn."""
    depth = depth_of(state, arch, ("cifar",), "CIFAR ResNet")

    def names(kind, position):
        if position in (("stem",), ("fc",)):
            return {"conv": "conv1", "bn": "bn1", "fc": "linear"}[kind]
        stage, index, part = position
        return f"layer{stage - 1}.{index}.{kind}{'ab'.index(part) + 1}"
    return _torch_convert(state, cifar_plan(depth), names, "CIFAR ResNet",
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
    return _convert(resnet_plan(depth), fetch,
                    lambda n: resnet_state_shapes(depth, "keras", n), source,
                    lambda: set(layers) - used)


def keras1_resnet_to_minicnn(layers, arch=None):
    """Keras layers with Caffe names (Keras 1 ResNet-50) -> minicnn, convs with bias.

    Accepts the Keras 1 weight names (W, b, running_std, which holds the variance)
    and the Keras 2 ones (kernel, bias, moving_variance). Kernels (kh, kw, in,
    out) become (out, in, kh, kw); the dense (in, out) becomes (out, in).
    """
    depth = depth_of(layers, arch, ("caffe",), "Caffe-named Keras")
    return _keras_convert(layers, depth, lambda kind, pos: _caffe_name(depth, kind, pos),
                          "Keras")


def keras_resnet_to_minicnn(layers, arch=None):
    """tf.keras / Keras 2 ResNet layers (conv2_block1_1_conv, ...) -> minicnn ('keras').

    Kernels are transposed as in :func:`keras1_resnet_to_minicnn`. keras_applications
    (whose ResNet code wrote the published files) names the classifier 'probs',
    tf.keras names it 'predictions'; either is accepted.
    """
    depth = depth_of(layers, arch, ("keras",), "tf.keras")
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
    depth = depth_of(by_name, arch, ("caffe",), "Caffe")
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
    return _convert(resnet_plan(depth), fetch,
                    lambda n: resnet_state_shapes(depth, "caffe", n), "Caffe",
                    lambda: set(by_name) - used)
