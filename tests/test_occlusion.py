"""Occlusion maps against a direct loop in torch on the same weights: one
occluded copy at a time, the square written by slicing, softmax by torch.

Networks: the shipped digits ResNet-8 (float64, 1e-12 relative) on real
digits, and a random-weight CIFAR ResNet-20 in float32 (1e-5 relative). The
layer targets (a channel's strongest activation, one neuron) are checked
against the torch network's stage output.
"""
import numpy as np
import pytest

import minicnn
from minicnn.datasets import as_dataset
from minicnn.layers import ShapeError
from minicnn.techniques import occlusion_map

torch = pytest.importorskip("torch", reason="torch is the oracle: pip install 'minicnn[oracle]'")
from test_models import pair  # noqa: E402
from torch_resnets import TorchCifarResNet, load_minicnn_state  # noqa: E402


def stage(model, depth):
    """The output of torch's layer``depth`` (minicnn's res{depth + 1})."""
    def run(x):
        h = torch.relu(model.bn1(model.conv1(x)))
        for i in range(1, depth + 1):
            h = getattr(model, f"layer{i}")(h)
        return h
    return run


def torch_loop(model, x, size, stride, fill, score):
    """The map by its definition: every position, one occluded image at a time."""
    n, _, height, width = x.shape
    rows, columns = (height - size) // stride + 1, (width - size) // stride + 1
    out = np.empty((n, rows, columns))
    with torch.no_grad():
        for image in range(n):
            for i in range(rows):
                for j in range(columns):
                    occluded = torch.from_numpy(x[image:image + 1].copy())
                    top, left = i * stride, j * stride
                    occluded[:, :, top:top + size, left:left + size] = fill
                    out[image, i, j] = score(model, occluded, image)
    return out


def class_probability(classes):
    return lambda model, x, image: torch.softmax(model(x), dim=1)[0, classes[image]].item()


@pytest.fixture(scope="module")
def digits64():
    net = minicnn.load()
    model = load_minicnn_state(TorchCifarResNet(8), net.state_dict(), 8).eval().double()
    x = as_dataset(None, net).images([0, 5, 9]).astype(np.float64)
    return net.astype(np.float64), model, x


@pytest.mark.parametrize("size, stride, fill", [(8, 4, 0.0), (11, 7, 0.7), (32, 1, -1.0)])
def test_digits_model_matches_the_torch_loop_in_float64(digits64, size, stride, fill):
    net, model, x = digits64
    classes = [7, 0, 3]
    got = occlusion_map(net, x, classes, size, stride, fill=fill, batch_size=10, progress=False)
    expected = torch_loop(model, x, size, stride, fill, class_probability(classes))
    assert got.shape == expected.shape == (3, (32 - size) // stride + 1, (32 - size) // stride + 1)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_layer_targets_match_the_torch_loop(digits64):
    net, model, x = digits64
    run = stage(model, 2)  # res3
    strongest = lambda m, xt, image: run(xt)[0, 5].max().item()  # noqa: E731
    got = occlusion_map(net, x[:2], "res3:5", 10, 6, batch_size=7, progress=False)
    np.testing.assert_allclose(got, torch_loop(model, x[:2], 10, 6, 0.0, strongest), rtol=1e-12)
    neuron = lambda m, xt, image: run(xt)[0, 5, 3, 12].item()  # noqa: E731
    got = occlusion_map(net, x[:1], "res3:5:3:12", 10, 6, progress=False)
    np.testing.assert_allclose(got, torch_loop(model, x[:1], 10, 6, 0.0, neuron), rtol=1e-12,
                               atol=1e-14)


def test_cifar20_float32_one_class_for_the_batch(dev):
    net, model = pair(20, "cifar", seed=6)
    x = np.random.default_rng(6).standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = torch_loop(model, x, 12, 5, 0.0, class_probability([4, 4]))
    net = dev.layer(net)
    got = dev.numpy(occlusion_map(net, dev.array(x), 4, 12, 5, batch_size=16, progress=False))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_bad_input_gives_clear_errors():
    net = minicnn.load()
    x = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(ValueError, match=r"square \(33x33\) is larger than the 32x32 image"):
        occlusion_map(net, x, 0, 33, 1)
    with pytest.raises(ShapeError, match="a 2-D image"):
        occlusion_map(net, np.zeros((32, 32), np.float32), 0, 8, 4)
    with pytest.raises(ShapeError, match="takes 3-channel images.*received 1 channels"):
        occlusion_map(net, np.zeros((1, 1, 32, 32), np.float32), 0, 8, 4)
    with pytest.raises(KeyError, match="unknown layer name 'res9'"):
        occlusion_map(net, x, "res9:0", 8, 4)
    with pytest.raises(ValueError, match="class 10 is out of range; valid: 0 to 9"):
        occlusion_map(net, x, 10, 8, 4)
    with pytest.raises(ValueError, match="channel 64 is out of range; valid: 0 to 31"):
        occlusion_map(net, x, "res3:64", 8, 4, progress=False)
    with pytest.raises(ValueError, match="size and stride must be at least 1"):
        occlusion_map(net, x, 0, 8, 0)
