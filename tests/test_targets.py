"""The techniques floor: targets, input_gradient, gradients captured at named layers,
the ReLU-mode switch, the datasets and the gallery runner."""
import numpy as np
import pytest

import minicnn
from minicnn.layers import ReLU, ShapeError
from minicnn.techniques import backprop_target, input_gradient, using_relu_mode, check_batch

torch = pytest.importorskip("torch", reason="torch is the oracle: pip install 'minicnn[oracle]'")
from test_models import pair  # noqa: E402


@pytest.fixture(scope="module")
def cifar8():
    net, model = pair(8, "cifar", seed=3)
    return net.astype(np.float64), model.double()


def _x(n=2, seed=0, size=16):
    return np.random.default_rng(seed).standard_normal((n, 3, size, size))


def test_class_target_gradient_matches_autograd(cifar8):
    net, model = cifar8
    x = _x()
    xt = torch.tensor(x, requires_grad=True)
    model(xt)[[0, 1], [3, 7]].sum().backward()
    result = backprop_target(net, x, [3, 7])
    np.testing.assert_allclose(result.input, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.score, model(torch.tensor(x))[[0, 1], [3, 7]].detach(),
                               rtol=1e-10)


def _stage2(model, x):
    h = torch.relu(model.bn1(model.conv1(x)))
    return model.layer2(model.layer1(h))


def test_channel_target_takes_each_images_strongest_position(cifar8):
    net, model = cifar8
    x = _x(3, seed=1)
    xt = torch.tensor(x, requires_grad=True)
    maps = _stage2(model, xt)[:, 5]  # res3 is torch's layer2
    best = maps.reshape(3, -1).max(dim=1).values
    best.sum().backward()
    result = backprop_target(net, x, "res3:5")
    np.testing.assert_allclose(result.score, best.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(result.input, xt.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_neuron_target_and_captured_layer_gradient(cifar8):
    net, model = cifar8
    x = _x(2, seed=2)
    xt = torch.tensor(x, requires_grad=True)
    h = torch.relu(model.bn1(model.conv1(xt)))
    stage2 = model.layer1(h)
    stage2.retain_grad()
    model.layer2(stage2)[:, 4, 3, 2].sum().backward()
    result = backprop_target(net, x, "res3:4:3:2", capture=["res2"])
    np.testing.assert_allclose(result.activations["res2"], stage2.detach().numpy(), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(result.gradients["res2"], stage2.grad.numpy(), rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(result.input, xt.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_backward_capture_gives_zeros_where_no_gradient_arrives(cifar8):
    net, _ = cifar8
    x = _x(1)
    shape = net.forward(x, stop_at="res3").shape
    out = net.forward(x)
    dx, grads = net.backward(inject={"res3": np.ones(shape)}, param_grads=False,
                             capture=["res4", "conv1"])
    assert not grads["res4"].any() and grads["res4"].shape == (1, 64, 4, 4)
    assert grads["conv1"].any() and out.shape == (1, 10)


def test_relu_mode_is_restored_even_when_the_technique_raises(cifar8):
    net, _ = cifar8
    relus = [layer for layer in net.layers() if isinstance(layer, ReLU)]
    relus[0].mode = "deconv"  # a mixed state must come back as it was
    with pytest.raises(ValueError):
        input_gradient(net, _x(1), 99, relu_mode="guided")
    with pytest.raises(RuntimeError):
        with using_relu_mode(net, "guided"):
            assert all(r.mode == "guided" for r in relus)
            raise RuntimeError("inside")
    assert relus[0].mode == "deconv" and all(r.mode == "normal" for r in relus[1:])
    relus[0].mode = "normal"


def test_guided_differs_from_the_gradient(cifar8):
    net, _ = cifar8
    x = _x(1, seed=4)
    assert not np.allclose(input_gradient(net, x, 1), input_gradient(net, x, 1, "guided"))


@pytest.mark.parametrize("target, message", [
    (10, "class 10 is out of range; valid: 0 to 9"),
    (-1, "class -1 is out of range"),
    ([1, 2, 3], "one per image"),
    (1.5, "integers"),
    ("res9:1", "unknown layer name 'res9'"),
    ("res3:32", "channel 32 is out of range; valid: 0 to 31"),
    ("res3:1:8:0", "row Y 8 is out of range; valid: 0 to 7"),
    ("res3:1:0:x", "column X 'x' is not an integer"),
    ("res3", "'LAYER:CHANNEL'"),
    ("fc:2:0:0", "no spatial positions"),
])
def test_bad_targets_name_the_valid_range(cifar8, target, message):
    net, _ = cifar8
    with pytest.raises((ValueError, KeyError), match=message):
        input_gradient(net, _x(2), target)


@pytest.mark.parametrize("shape, message", [
    ((32, 32), "2-D image"), ((3, 32, 32), r"x\[None\]"), ((1, 1, 32, 32), "3-channel"),
    ((0, 3, 32, 32), "empty")])
def test_bad_batches_say_what_to_do(shape, message):
    net = minicnn.load()
    with pytest.raises(ShapeError, match=message):
        check_batch(net, np.zeros(shape, np.float32))


def test_gpu_input_gradient_matches_numpy(dev):
    net = minicnn.load().astype(np.float64)
    x = _x(2, seed=5, size=32)
    expected = input_gradient(net, x, "res3:2", relu_mode="guided")
    got = input_gradient(dev.layer(net), dev.array(x), "res3:2", relu_mode="guided")
    np.testing.assert_allclose(dev.numpy(got), expected, rtol=1e-9, atol=1e-12)


def test_gpu_class_targets_may_live_on_the_device(dev):
    """The predicted classes of a network on the GPU are a CuPy array; they are a valid
    target as they are, giving the gradient of the same classes given as a list."""
    net = minicnn.load().astype(np.float64)
    x = _x(2, seed=6, size=32)
    gpu_net = dev.layer(net)
    try:
        gx = dev.array(x)
        predicted = gpu_net.forward(gx).argmax(axis=1)
        got = input_gradient(gpu_net, gx, predicted)
        classes = [int(c) for c in dev.numpy(predicted)]
    finally:
        net.to("cpu")
    expected = input_gradient(net, x, classes)
    np.testing.assert_allclose(dev.numpy(got), expected, rtol=1e-9, atol=1e-12)
