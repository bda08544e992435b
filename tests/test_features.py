"""First-layer filters and activations against direct computations."""
import numpy as np
import pytest

import minicnn
from minicnn.layers import ShapeError
from minicnn.techniques import (activations, first_layer_filters, overview_layers,
                                stage_activations, strongest_channels)


@pytest.fixture(scope="module")
def digits():
    return minicnn.load()


def test_filters_are_the_first_convolution_each_scaled_on_its_own(digits, dev):
    net = dev.layer(digits)
    try:
        filters = dev.numpy(first_layer_filters(net))
        weight = dev.numpy(net["conv1"].params["weight"])
    finally:
        net.to("cpu")
    assert filters.shape == (16, 3, 3, 3)
    for got, w in zip(filters, weight):
        expected = ((w - w.min()) / (w.max() - w.min())).transpose(1, 2, 0)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
        assert got.min() == 0 and got.max() == pytest.approx(1, abs=1e-6)


def test_filters_show_bgr_networks_in_rgb_and_constant_filters_in_grey():
    net = minicnn.build("resnet18", variant="caffe", rng=0)
    net.metadata["preprocessing"] = {"color": "BGR"}
    weight = net["conv1"].params["weight"]
    weight[5] = 0.25
    filters = first_layer_filters(net)
    assert filters.shape == (64, 7, 7, 3)
    w = weight[3, ::-1]  # blue, green, red -> red, green, blue
    np.testing.assert_allclose(filters[3], ((w - w.min()) / (w.max() - w.min())).transpose(1, 2, 0),
                               rtol=1e-6)
    np.testing.assert_array_equal(filters[5], 0.5)


@pytest.mark.parametrize("layer", ["conv1", "res2a.bn2a", "res3", "res4a.add", "global_pool",
                                   "fc"])
def test_activations_equal_what_forward_captures(digits, layer, dev):
    net = dev.layer(digits)
    try:
        x = dev.array(np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32))
        _, captured = net.forward(x, capture=[layer])
        np.testing.assert_array_equal(dev.numpy(activations(net, x, layer)),
                                      dev.numpy(captured[layer]))
    finally:
        net.to("cpu")


def test_stage_activations_and_strongest_channels(digits):
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert overview_layers(digits) == ["conv1_relu", "res2", "res3", "res4"]
    assert overview_layers(minicnn.build("resnet18")) == ["pool1", "res2", "res3", "res4", "res5"]
    stages = stage_activations(digits, x, ["res3", "conv1"])  # any order in, forward order out
    assert list(stages) == ["conv1", "res3"]
    _, captured = digits.forward(x, capture=["conv1", "res3"])
    for name in stages:
        np.testing.assert_array_equal(stages[name], captured[name])
    maps = stages["res3"]
    maps[1, 7] = maps[1, 2]  # a tie: the lower channel comes first
    top = strongest_channels(maps, 5)
    for image in range(2):
        means = [float(maps[image, c].mean()) for c in range(maps.shape[1])]
        assert list(top[image]) == sorted(range(len(means)), key=lambda c: (-means[c], c))[:5]


def test_bad_input_gives_clear_errors(digits):
    with pytest.raises(KeyError, match="unknown layer name 'res5'"):
        activations(digits, np.zeros((1, 3, 32, 32), np.float32), "res5")
    with pytest.raises(ShapeError, match="a 2-D image"):
        activations(digits, np.zeros((32, 32), np.float32), "res2")
    with pytest.raises(ShapeError, match="received 4 channels"):
        stage_activations(digits, np.zeros((1, 4, 32, 32), np.float32))
    with pytest.raises(ShapeError, match=r"\(N, C, H, W\)"):
        strongest_channels(np.zeros((16, 8, 8)), 3)


def test_stage_activations_equal_torch_stage_outputs():
    """Every overview layer of a random CIFAR ResNet-8 against the torch model holding
    the same weights (stem ReLU, then torch's layer1, layer2, layer3), in float64."""
    torch = pytest.importorskip("torch", reason="torch is the oracle")
    from test_models import pair
    net, model = pair(8, "cifar", seed=4)
    net, model = net.astype(np.float64), model.double()
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 16))
    stages = stage_activations(net, x)
    assert list(stages) == ["conv1_relu", "res2", "res3", "res4"]
    with torch.no_grad():
        h = torch.relu(model.bn1(model.conv1(torch.from_numpy(x))))
        expected = {"conv1_relu": h}
        for name, stage in zip(["res2", "res3", "res4"], [model.layer1, model.layer2,
                                                          model.layer3]):
            h = expected[name] = stage(h)
    for name, maps in stages.items():
        np.testing.assert_allclose(maps, expected[name].numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
        np.testing.assert_array_equal(activations(net, x, name), maps)
