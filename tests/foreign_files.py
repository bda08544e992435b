"""Writers for foreign weights files, in the layouts the real files use (test helper).

Nothing here imports minicnn or torch. The naming rules are written from each
framework's own ResNet definition, independently of minicnn.io.mapping, so that
a test converting these files checks minicnn's mapping against a second
reading of the same facts:

* a minimal protobuf encoder for Caffe's NetParameter (``net``, ``layer``, ``blob``);
* :func:`write_keras_layers`: Keras HDF5 weight files, Keras 1 style
  (``res2a_branch2a_W:0`` in the layer group) or Keras 2 style
  (``conv1_conv/kernel:0``, one group deeper);
* :func:`keras1_layout`, :func:`keras_layout`, :func:`caffe_layout`: a
  torchvision-named state dict (NumPy arrays) rearranged as the Keras 1 (Caffe
  names), keras_applications and Caffe ResNet files arrange it.
"""
import re
import string
import struct

import numpy as np


# -- naming -------------------------------------------------------------------------------
def caffe_block_name(depth, stage, index):
    """The Caffe name of block ``index`` (from 0) of stage 2..5: 'res2a', or 'res4b22'
    in ResNet-101/152, whose stages 3 and 4 number their blocks after 'a'."""
    if depth in (101, 152) and stage in (3, 4):
        return f"res{stage}a" if index == 0 else f"res{stage}b{index}"
    return f"res{stage}{string.ascii_lowercase[index]}"


def torchvision_modules(state):
    """Group a torchvision ResNet state dict by module, in its order.

    Yields (kind, position, {param: array}) with kind 'conv', 'bn' or 'fc' and
    position ('stem',), ('fc',) or (stage 2..5, block index, part), part being
    'a', 'b', 'c' for conv1..3 / bn1..3 and '1' for the downsample shortcut.
    """
    modules = {}
    for key, value in state.items():
        module, param = key.rsplit(".", 1)
        if param != "num_batches_tracked":
            modules.setdefault(module, {})[param] = np.asarray(value)
    for module, params in modules.items():
        if module in ("conv1", "bn1", "fc"):
            kind = {"conv1": "conv", "bn1": "bn", "fc": "fc"}[module]
            yield kind, ("fc",) if module == "fc" else ("stem",), params
            continue
        layer, index, child = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", module).groups()
        if child.startswith("downsample"):
            kind, part = ("conv" if child.endswith("0") else "bn"), "1"
        else:
            kind, part = child[:-1], "abc"[int(child[-1]) - 1]
        yield kind, (int(layer) + 1, int(index), part), params


CAFFE_PREFIX = {"conv": "res", "bn": "bn", "scale": "scale"}  # res2a_branch2a, bn2a_branch2a
KERAS_PART = {"1": 0, "a": 1, "b": 2, "c": 3}  # conv2_block1_0_conv is the shortcut


def caffe_layer_name(depth, kind, position):
    """'conv1', 'bn_conv1', 'scale_conv1', 'fc1000', 'res3b1_branch2a', 'bn3b1_branch1', ..."""
    if position in (("fc",), ("stem",)):
        stem = {"conv": "conv1", "bn": "bn_conv1", "scale": "scale_conv1"}
        return "fc1000" if position == ("fc",) else stem[kind]
    stage, index, part = position
    suffix = caffe_block_name(depth, stage, index)[len("res"):]
    return CAFFE_PREFIX[kind] + suffix + "_branch" + ("1" if part == "1" else "2" + part)


def keras_layer_name(kind, position, fc_name="probs"):
    """keras_applications names: conv1_conv, conv1_bn, conv3_block2_1_conv, conv2_block1_0_bn."""
    if position == ("fc",):
        return fc_name
    if position == ("stem",):
        return "conv1_" + kind
    stage, index, part = position
    return f"conv{stage}_block{index + 1}_{KERAS_PART[part]}_{kind}"


# -- Keras ------------------------------------------------------------------------------
def _keras_weights(kind, params, keras1):
    if kind == "bn":
        names = ("gamma", "beta", "running_mean", "running_std") if keras1 else \
            ("gamma", "beta", "moving_mean", "moving_variance")
        # Keras 1's 'running_std' holds the variance, despite its name
        return dict(zip(names, (params[k] for k in ("weight", "bias", "running_mean",
                                                      "running_var"))))
    weight = params["weight"]
    kernel = weight.T if kind == "fc" else weight.transpose(2, 3, 1, 0)  # (kh, kw, in, out)
    bias = params.get("bias", np.zeros(weight.shape[0], weight.dtype))
    return {"W": kernel, "b": bias} if keras1 else {"kernel": kernel, "bias": bias}


def keras1_layout(state, depth):
    """The Keras 1 ResNet-50 file's layers: Caffe names, weightless layers in between."""
    layers, count = {"input_1": None, "zeropadding2d_1": None}, 0
    for kind, position, params in torchvision_modules(state):
        if kind == "fc":
            layers.update({"avg_pool": None, "flatten_1": None})
        layers[caffe_layer_name(depth, kind, position)] = _keras_weights(kind, params, True)
        if kind == "bn":
            count += 1
            layers[f"activation_{count}"] = None
    return layers


def keras_layout(state, depth, fc_name="probs"):
    """A keras_applications ResNet file's layers: conv2_block1_1_conv, ..., probs."""
    layers = {"input_1": None, "conv1_pad": None}
    for kind, position, params in torchvision_modules(state):
        if kind == "fc":
            layers["avg_pool"] = None
        name = keras_layer_name(kind, position, fc_name)
        layers[name] = _keras_weights(kind, params, False)
        if kind == "bn":
            layers[name[:-2] + "relu"] = None
    return layers


def names_attr(names):
    return np.array([n.encode("utf8") for n in names])


def write_keras_layers(root, layers, style, split=None):
    """Write ``{layer: {short: array}}`` (``None`` = a layer without weights) into ``root``.

    style 'keras1' stores ``<layer>_<short>:0`` in the layer group; 'keras2' stores
    ``<layer>/<short>:0`` one group deeper. ``split`` spreads layer_names (and the
    weight_names of every layer) over that many numbered attributes, as Keras does
    when an attribute would exceed HDF5's 64 KiB header limit.
    """
    def set_names(group, attr, names):
        if split:
            step = -(-len(names) // split)
            for i in range(split):
                group.attrs[f"{attr}{i}"] = names_attr(names[i * step:(i + 1) * step])
        else:
            group.attrs[attr] = names_attr(names)

    set_names(root, "layer_names", list(layers))
    for layer, weights in layers.items():
        group = root.create_group(layer)
        weight_names = []
        for short, value in (weights or {}).items():
            name = f"{layer}_{short}:0" if style == "keras1" else f"{layer}/{short}:0"
            group.create_dataset(name, data=value)
            weight_names.append(name)
        if split and weight_names:
            set_names(group, "weight_names", weight_names)
        else:
            group.attrs["weight_names"] = names_attr(weight_names)


# -- Caffe: a minimal protobuf encoder ------------------------------------------------------
def varint(n):
    n &= (1 << 64) - 1  # negative int64 values take ten bytes
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def uint(field, value):
    return key(field, 0) + varint(value)


def message(field, payload):
    return key(field, 2) + varint(len(payload)) + payload


def text(field, value):
    return message(field, value.encode())


def blob(array, dims="packed", data="packed"):
    """BlobProto. dims: 'packed' / 'unpacked' (BlobShape) or 'legacy' (num/channels/...)."""
    array = np.asarray(array)
    out = b""
    if dims == "legacy":
        shape = (1,) * (4 - array.ndim) + array.shape
        out += b"".join(uint(f, n) for f, n in zip((1, 2, 3, 4), shape))
    elif dims == "packed":
        out += message(7, message(1, b"".join(varint(n) for n in array.shape)))
    else:
        out += message(7, b"".join(uint(1, n) for n in array.shape))
    flat = array.ravel()
    if data == "packed":
        out += message(5, flat.astype("<f4").tobytes())
    elif data == "unpacked":
        out += b"".join(key(5, 5) + struct.pack("<f", v) for v in flat)
    elif data == "double":
        out += message(8, flat.astype("<f8").tobytes())
    else:
        out += b"".join(key(8, 1) + struct.pack("<d", v) for v in flat)
    out += message(6, b"")  # an empty 'diff': an unused field to skip
    return out


def layer(name, kind, blobs=(), **blob_options):
    """LayerParameter (NetParameter field 100) with unused fields mixed in."""
    body = text(1, name) + text(2, kind) + text(3, "bottom") + text(4, name)
    body += message(106, uint(1, 64) + uint(4, 3))  # convolution_param: num_output, kernel
    body += key(12, 5) + struct.pack("<f", 1.0)  # loss_weight: a fixed32 field
    body += b"".join(message(7, blob(b, **blob_options)) for b in blobs)
    return message(100, body)


def v1_layer(name, type_enum, blobs=()):
    """V1LayerParameter (NetParameter field 2): name 4, type enum 5, blobs 6."""
    body = text(2, "bottom") + text(4, name) + uint(5, type_enum)
    body += b"".join(message(6, blob(b, dims="legacy")) for b in blobs)
    body += key(7, 5) + struct.pack("<f", 1.0)  # blobs_lr
    return message(2, body)


def net(*layers):
    return text(1, "TestNet") + text(3, "data") + uint(4, 1) + b"".join(layers)


def caffe_layout(state, depth, factor=1.0):
    """[(name, type, blobs)] as in KaimingHe's ResNet caffemodels.

    BatchNorm holds (mean * factor, variance * factor, [factor]) and the Scale
    layer after it (gamma, beta). As in the released ResNet-50, only conv1 has a
    bias blob.
    """
    layers = [("data", "Input", [])]
    for kind, position, params in torchvision_modules(state):
        name = caffe_layer_name(depth, kind, position)
        if kind == "bn":
            stats = [params["running_mean"] * factor, params["running_var"] * factor,
                     np.array([factor], np.float32)]
            layers.append((name, "BatchNorm", stats))
            layers.append((caffe_layer_name(depth, "scale", position), "Scale",
                           [params["weight"], params["bias"]]))
            layers.append((name.replace("bn", "relu", 1), "ReLU", []))
        elif kind == "fc":
            layers.append(("pool5", "Pooling", []))
            layers.append((name, "InnerProduct", [params["weight"], params["bias"]]))
        else:
            blobs = [params["weight"]]
            if position == ("stem",):
                blobs.append(params["bias"])
            layers.append((name, "Convolution", blobs))
    layers.append(("prob", "Softmax", []))
    return layers


def write_caffemodel(path, layers, dims="packed"):
    """Write [(name, type, blobs)] as a binary NetParameter."""
    path.write_bytes(net(*(layer(name, kind, blobs, dims=dims) for name, kind, blobs in layers)))


# -- VGG ---------------------------------------------------------------------------------
VGG_CONVS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
V1_TYPES = {"Convolution": 4, "Dropout": 6, "InnerProduct": 14, "Pooling": 17, "ReLU": 18,
            "Softmax": 20}  # caffe.proto's V1LayerParameter.LayerType


def vgg_modules(state, depth):
    """Walk a torchvision VGG state dict in order: yields ('conv', (block, index), params)
    for features.* and ('fc', 6 | 7 | 8, params) for classifier.0 / .3 / .6."""
    convs = [(block, index) for block, count in enumerate(VGG_CONVS[depth], start=1)
             for index in range(1, count + 1)]
    modules = {}
    for key, value in state.items():
        module, param = key.rsplit(".", 1)
        modules.setdefault(module, {})[param] = np.asarray(value)
    features = sorted((m for m in modules if m.startswith("features.")),
                      key=lambda m: int(m.split(".")[1]))
    assert len(features) == len(convs), "not a VGG-%d state dict" % depth
    for module, position in zip(features, convs):
        yield "conv", position, modules[module]
    for number, module in zip((6, 7, 8), ("classifier.0", "classifier.3", "classifier.6")):
        yield "fc", number, modules[module]


def vgg_keras_layout(state, depth, style="keras1"):
    """A keras.applications VGG file's layers. 'keras1': the published
    vgg16_weights_tf_dim_ordering_tf_kernels.h5, whose weights are named
    ``block1_conv1_W_1:0`` (write with style 'keras1'); 'keras2': ``kernel``, ``bias``.
    fc1's rows follow Keras' channels-last flatten of pool5: (H, W, C)."""
    short = ("W_1", "b_1") if style == "keras1" else ("kernel", "bias")
    layers = {"input_1": None}
    for kind, position, params in vgg_modules(state, depth):
        weight = params["weight"]
        if kind == "conv":
            block, index = position
            name, kernel = f"block{block}_conv{index}", weight.transpose(2, 3, 1, 0)
        else:
            name = {6: "fc1", 7: "fc2", 8: "predictions"}[position]
            if position == 6:
                out, features = weight.shape
                chw = weight.reshape(out, features // 49, 7, 7)
                kernel = chw.transpose(2, 3, 1, 0).reshape(features, out)
            else:
                kernel = weight.T
        if position == 6:
            layers["flatten"] = None
        layers[name] = dict(zip(short, (kernel, params["bias"])))
        if kind == "conv" and index == VGG_CONVS[depth][block - 1]:
            layers[f"block{block}_pool"] = None
    return layers


def vgg_caffe_layout(state, depth):
    """[(name, type, blobs)] as in VGG_ILSVRC_16_layers.caffemodel: conv1_1, relu1_1, ...,
    pool5, fc6, relu6, drop6, fc7, relu7, drop7, fc8, prob."""
    layers = []
    for kind, position, params in vgg_modules(state, depth):
        blobs = [params["weight"], params["bias"]]
        if kind == "conv":
            block, index = position
            layers += [(f"conv{block}_{index}", "Convolution", blobs),
                       (f"relu{block}_{index}", "ReLU", [])]
            if index == VGG_CONVS[depth][block - 1]:
                layers.append((f"pool{block}", "Pooling", []))
        else:
            layers.append((f"fc{position}", "InnerProduct", blobs))
            if position < 8:
                layers += [(f"relu{position}", "ReLU", []), (f"drop{position}", "Dropout", [])]
    return layers + [("prob", "Softmax", [])]


def write_caffemodel_v1(path, layers):
    """Write [(name, type, blobs)] as the 2014 caffemodels are: V1 ``layers`` (field 2)
    with enum types and legacy 4-d blob shapes ((1, 1, out, in), (1, 1, 1, out))."""
    path.write_bytes(net(*(v1_layer(name, V1_TYPES[kind], blobs) for name, kind, blobs in layers)))
