"""minicnn's VGG names and shapes, the foreign names of the same layers, and
recognizing a VGG from a file's names.

minicnn names VGG's layers as the Caffe release does (see
:mod:`minicnn.models.vgg`): ``conv<block>_<index>`` (3x3, with bias), then
``fc6``, ``fc7``, ``fc8``. State-dict keys are ``<layer>.weight`` (convs
(out, in, 3, 3), fully connected (out, in)) and ``<layer>.bias``.

The same layers in the published files:

* torchvision: ``features.<k>`` for the convs (``features`` holds every conv,
  ReLU and pool in order, so the conv of block b, index i sits at
  k = sum over earlier blocks of (2 n + 1), plus 2 (i - 1)), and
  ``classifier.0``, ``classifier.3``, ``classifier.6`` for fc6, fc7, fc8
  (ReLUs and dropouts in between); ``.weight`` and ``.bias`` in minicnn's layout.
* Keras: ``block<b>_conv<i>``, then ``fc1``, ``fc2``, ``predictions``; conv
  kernels (3, 3, in, out), dense kernels (in, out), and fc1's rows in pool5's
  (H, W, C) order, since Keras flattens channels-last.
* Caffe (VGG_ILSVRC_16_layers, VGG_ILSVRC_19_layers): minicnn's own names.

The tables here are written from the architecture, not read off the model
builder, so that the test comparing the two checks both.
"""
import re

from .errors import WeightsFormatError
from .resnet_names import _names

VGG_CONVS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}  # convolutions per block
VGG_CHANNELS = (64, 128, 256, 512, 512)
VGG_HIDDEN = 4096
POOL5_SIZE = 7  # pool5 is 7 x 7 for the 224 x 224 input the classifier needs
CONVENTIONS = ("torchvision", "keras", "caffe")


def vgg_layers(depth):
    """Yield (minicnn layer, kind 'conv' or 'fc', position) in forward order;
    position is (block, index) for a conv, 6, 7 or 8 for a fully connected layer."""
    if depth not in VGG_CONVS:
        raise ValueError(f"VGG depth must be one of {sorted(VGG_CONVS)}, received {depth!r}")
    for block, count in enumerate(VGG_CONVS[depth], start=1):
        for index in range(1, count + 1):
            yield f"conv{block}_{index}", "conv", (block, index)
    for number in (6, 7, 8):
        yield f"fc{number}", "fc", number


def vgg_state_shapes(depth, num_classes=1000, channels=VGG_CHANNELS, hidden=VGG_HIDDEN):
    """``{key: shape}`` of a VGG in forward order; ``channels`` (per block) and
    ``hidden`` describe a narrower one of the same layout."""
    shapes, cin = {}, 3
    fc_in = {6: channels[-1] * POOL5_SIZE ** 2, 7: hidden, 8: hidden}
    for layer, kind, position in vgg_layers(depth):
        if kind == "conv":
            out = channels[position[0] - 1]
            shapes[f"{layer}.weight"], cin = (out, cin, 3, 3), out
        else:
            out = num_classes if position == 8 else hidden
            shapes[f"{layer}.weight"] = (out, fc_in[position])
        shapes[f"{layer}.bias"] = (out,)
    return shapes


def foreign_name(depth, convention, position):
    """The layer's name in a torchvision ('features.12'), Keras ('block3_conv2') or
    Caffe ('conv3_2') file."""
    if convention == "torchvision":
        if position in (6, 7, 8):
            return f"classifier.{3 * (position - 6)}"
        block, index = position
        earlier = sum(2 * n + 1 for n in VGG_CONVS[depth][:block - 1])
        return f"features.{earlier + 2 * (index - 1)}"
    if convention == "keras":
        if position in (6, 7, 8):
            return {6: "fc1", 7: "fc2", 8: "predictions"}[position]
        return "block{}_conv{}".format(*position)
    if convention == "caffe":
        return f"fc{position}" if position in (6, 7, 8) else "conv{}_{}".format(*position)
    raise ValueError(f"convention must be one of {CONVENTIONS}, received {convention!r}")


# -- recognizing a VGG ------------------------------------------------------------
_CONV_PATTERNS = {  # what names a conv layer, with its (block, index) where the name says it
    "torchvision": r"^features\.(\d+)\.weight$",
    "keras": r"^block([1-5])_conv(\d+)$",
    "caffe": r"^conv([1-5])_(\d+)$",
}


def looks_like_vgg(source):
    """True when the names in ``source`` (a torch state dict, Keras layers, a list of
    CaffeLayer, or names) are VGG's under one of the conventions."""
    names = _names(source)
    return any(re.match(pattern, name) for pattern in _CONV_PATTERNS.values() for name in names)


def wants_vgg(source, arch):
    """Whether a conversion is a VGG one: the ``arch`` asked for, else the names."""
    return str(arch).startswith("vgg") if arch is not None else looks_like_vgg(source)


def infer_vgg_arch(source, convention):
    """'vgg16' or 'vgg19' from the convolutions named in ``source``.

    Raises WeightsFormatError for names of another VGG (11, 13), of a VGG with
    batch norm (torchvision's vgg16_bn), or of no VGG at all.
    """
    names = _names(source)
    found = [m.groups() for m in map(re.compile(_CONV_PATTERNS[convention]).match, names) if m]
    if not found:
        example = foreign_name(16, convention, (1, 1))
        raise WeightsFormatError(f"no VGG convolution names found (expected {convention} names "
                                 f"like {example!r})")
    if convention == "torchvision":
        if any(name.endswith("running_mean") for name in names):
            raise WeightsFormatError("these are the weights of a VGG with batch norm "
                                     "(torchvision's vgg16_bn / vgg19_bn), which minicnn does "
                                     "not build; use vgg16 or vgg19 weights")
        counted = f"{len(found)} convolutions"
        for depth, counts in VGG_CONVS.items():
            if sum(counts) == len(found):
                return f"vgg{depth}"
    else:
        per_block = tuple(sum(1 for block, _ in found if int(block) == b) for b in range(1, 6))
        for depth, counts in VGG_CONVS.items():
            if per_block == counts:
                return f"vgg{depth}"
        counted = f"{sum(per_block)} convolutions ({' + '.join(map(str, per_block))} per block)"
    raise WeightsFormatError(
        f"these weights have {counted}; minicnn builds VGG-16 (13: 2 + 2 + 3 + 3 + 3) "
        "and VGG-19 (16: 2 + 2 + 4 + 4 + 4)")


def vgg_depth(source, arch, convention):
    """16 or 19: from an explicit ``arch`` ('vgg16', 'vgg19' or the int), else inferred."""
    if arch is None:
        arch = infer_vgg_arch(source, convention)
    if isinstance(arch, int):
        depth = arch
    else:
        match = re.fullmatch(r"vgg(\d+)", str(arch))
        depth = int(match.group(1)) if match else None
    if depth not in VGG_CONVS:
        raise ValueError(f"{arch!r} is not an architecture the VGG mapping handles: use "
                         f"{' or '.join(f'vgg{d}' for d in VGG_CONVS)}")
    return depth
