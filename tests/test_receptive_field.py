"""Receptive fields against the backward pass: the pixels a neuron's gradient
reaches are the pixels its field box says it sees.

For one random neuron of every named layer (up to the global pool) of the
shipped digits ResNet-8, a CIFAR ResNet-20 and ResNet-50 in the caffe and
torchvision variants (48 x 48 inputs: small enough to be fast, large enough
that the fields of the stem and of stage 2 do not cover the whole image):

* with the real network, the support of d neuron / d x (the pixels where any
  channel of the gradient is nonzero) lies inside ``field_box``;
* with a test-only network in which every path from the neuron to a pixel of
  its field carries a positive gradient, the support fills the box exactly: a
  field box one pixel too large or too small fails. (A box is a bounding box;
  it has no holes because in these ResNets no stride jumps further than the
  field it strides over is wide.)

One backward pass probes many neurons at once: in eval mode (batch norm with
its running statistics) images of a batch never mix, so a batch of identical
images with neuron i's gradient injected on image i gives neuron i's input
gradient in row i.
"""
import numpy as np
import pytest

import minicnn
from minicnn.layers import AvgPool2d, BatchNorm2d, ChannelPadShortcut, Conv2d, MaxPool2d
from minicnn.techniques import field_box, layer_size, receptive_field

CHUNK = 16  # neurons (and images) per backward pass


def local_layers(net):
    """Every name whose neurons have a local field, in the order their outputs are
    complete: a block after its last child, an alias (res2) right after its block."""
    names = net.names()
    names = names[:names.index("global_pool")]

    def complete(name):  # a block's output exists once its last child has run
        return max(i + 0.5 * (other != name) for i, other in enumerate(names)
                   if other == name or other.startswith(name + "."))
    return sorted(names, key=complete)


def probe(net, size, seed, dev):
    """(layer, channel, y, x, support (H, W) bool) for one random neuron of every
    local layer."""
    rng = np.random.default_rng(seed)
    xp = dev.xp
    dtype = next(net.layers()).params["weight"].dtype
    image = rng.standard_normal((1, 3, size, size)).astype(dtype)
    names = local_layers(net)
    found = []
    for start in range(0, len(names), CHUNK):
        group = names[start:start + CHUNK]
        x = dev.array(np.repeat(image, len(group), axis=0))
        _, outputs = net.forward(x, stop_at=group[-1], capture=group)
        inject, neurons = {}, []
        for row, name in enumerate(group):
            channel, y, x_ = (int(rng.integers(n)) for n in outputs[name].shape[1:])
            if name not in inject:
                inject[name] = xp.zeros(outputs[name].shape, dtype=dtype)
            inject[name][row, channel, y, x_] = 1
            neurons.append((name, channel, y, x_))
        dx = dev.numpy(net.backward(inject=inject, param_grads=False))
        found += [neuron + ((dx[row] != 0).any(axis=0),) for row, neuron in enumerate(neurons)]
    return found


def box_mask(net, name, channel, y, x, size):
    """The field box as a mask; empty for the zero channels that an option-A
    shortcut adds (constants: they see nothing)."""
    mask = np.zeros((size, size), dtype=bool)
    module = net[name]
    if isinstance(module, ChannelPadShortcut) and not (
            module.pad <= channel < module.pad + module.in_channels):
        return mask
    top, left, bottom, right = field_box(net, name, y, x, (size, size))
    mask[top:bottom, left:right] = True
    return mask


def digits():
    return minicnn.load(), 32


def cifar20():
    return minicnn.build("cifar_resnet20", rng=1), 32


def resnet50(variant):
    return lambda: (minicnn.build("resnet50", variant=variant, rng=2), 48)


NETWORKS = {"digits": digits, "cifar20": cifar20, "resnet50-caffe": resnet50("caffe"),
            "resnet50-torchvision": resnet50("torchvision")}


def positive_paths(net):
    """The test-only network whose gradient reaches every pixel of every field.

    * convolutions get positive weights and batch norms a positive scale, so no
      two paths cancel and no product of weights is zero (weights of about
      1 / fan-in keep the sums far from overflowing);
    * every ReLU goes to 'deconv' mode, ``dx = dy [dy > 0]``: with positive
      weights every gradient coming down is >= 0, so the ReLU passes it whole,
      whatever its input was (a pass-through ReLU);
    * max pooling sends a window's gradient to its one largest pixel, which
      leaves holes in the support; an average pool with the same window,
      stride, padding and rounding sends it to every pixel of the window.
    The network stays in eval mode, so its images stay independent.
    """
    rng = np.random.default_rng(0)
    for container in [net] + [m for m in net.modules() if hasattr(m, "children")]:
        for key, child in list(container.children.items()):
            if isinstance(child, MaxPool2d):
                average = AvgPool2d(child.kernel_size, child.stride, child.padding)
                average.ceil_mode = child.ceil_mode
                average.name = child.name
                container.children[key] = average
    for layer in net.layers():
        if isinstance(layer, Conv2d):
            weight = layer.params["weight"]
            fan_in = weight[0].size
            layer.params["weight"] = (rng.uniform(0.5, 1.0, weight.shape) / fan_in).astype(
                weight.dtype)
        elif isinstance(layer, BatchNorm2d):
            scale = layer.params["weight"]
            layer.params["weight"] = rng.uniform(0.5, 1.5, scale.shape).astype(scale.dtype)
    return net.set_relu_mode("deconv").eval()


@pytest.mark.parametrize("name", list(NETWORKS))
def test_gradient_support_lies_inside_the_field_box(name, cpu):
    net, size = NETWORKS[name]()
    net.eval()
    probes = probe(net, size, seed=3, dev=cpu)
    assert len(probes) == len(local_layers(net))
    reached = 0
    for layer, channel, y, x, support in probes:
        outside = support & ~box_mask(net, layer, channel, y, x, size)
        assert not outside.any(), (f"{layer} ({y}, {x}): gradient at {np.argwhere(outside)[:3]} "
                                   f"outside the box {field_box(net, layer, y, x, (size, size))}")
        reached += support.any()
    assert reached > len(probes) // 2  # most probed neurons are alive: the check has teeth


@pytest.mark.parametrize("name", list(NETWORKS))
def test_support_fills_the_box_exactly_when_every_path_is_positive(name, cpu):
    net, size = NETWORKS[name]()
    net = positive_paths(net)
    assert not any(isinstance(layer, MaxPool2d) for layer in net.layers())
    for layer, channel, y, x, support in probe(net, size, seed=4, dev=cpu):
        expected = box_mask(net, layer, channel, y, x, size)
        assert np.array_equal(support, expected), (
            f"{layer} ({channel}, {y}, {x}): support rows {np.flatnonzero(support.any(1))}, "
            f"columns {np.flatnonzero(support.any(0))}; expected rows "
            f"{np.flatnonzero(expected.any(1))}, columns {np.flatnonzero(expected.any(0))}")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["digits", "cifar20"])
def test_support_fills_the_box_on_the_gpu(name):
    from conftest import Device
    dev = Device("gpu")
    net, size = NETWORKS[name]()
    net = dev.layer(positive_paths(net))
    for layer, channel, y, x, support in probe(net, size, seed=5, dev=dev):
        assert np.array_equal(support, box_mask(net, layer, channel, y, x, size)), (layer, y, x)


def test_known_fields_of_the_shipped_model():
    net = minicnn.load()
    # conv1 3x3 sees 3 pixels; each 3x3 conv at jump j adds 2j; stride-2 convs double the jump
    assert receptive_field(net, "conv1") == ((3, 3), (1, 1), (-1, -1))
    assert receptive_field(net, "res2") == ((7, 7), (1, 1), (-3, -3))
    # res3a: 3x3/2 at jump 1 (9 pixels, offset -4), then 3x3 at jump 2 (13, offset -6)
    assert receptive_field(net, "res3") == ((13, 13), (2, 2), (-6, -6))
    assert layer_size(net, "res3", (32, 32)) == (16, 16)
    # rows -6 .. 6 clipped to 0 .. 6; columns 24 .. 36 clipped to 24 .. 31
    assert field_box(net, "res3", 0, 15, (32, 32)) == (0, 24, 7, 32)


def test_bad_positions_and_layers_give_clear_errors():
    net = minicnn.load()
    with pytest.raises(ValueError, match=r"row y = 16 lies outside layer 'res3'.*valid: 0 to 15"):
        field_box(net, "res3", 16, 0, (32, 32))
    with pytest.raises(ValueError, match=r"column x = -1 lies outside layer 'res3'"):
        field_box(net, "res3", 0, -1, (32, 32))
    with pytest.raises(ValueError, match="sees the whole image"):
        receptive_field(net, "fc")
    with pytest.raises(KeyError, match="unknown layer name 'res9'"):
        field_box(net, "res9", 0, 0, (32, 32))
