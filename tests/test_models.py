"""ResNet architectures against hand-written torch references (test_architectures.py has
the checks that need no torch)."""
import numpy as np
import pytest

from minicnn import BatchNorm2d, Residual
from minicnn.models import cifar_resnet, resnet

torch = pytest.importorskip("torch", reason="torch is the oracle: pip install 'minicnn[oracle]'")
from torch_resnets import (TorchCifarResNet, TorchResNet, assert_close,  # noqa: E402
                           load_minicnn_state)

VARIANTS = ("caffe", "torchvision", "keras")


def randomize(net, seed=0):
    """Non-trivial BN statistics and biases, with activations kept O(1) through depth."""
    rng = np.random.default_rng(seed)
    last_bns = {m.branch[-1].name for m in net.modules() if isinstance(m, Residual)}
    for layer in net.layers():
        p, b = layer.params, layer.buffers
        if isinstance(layer, BatchNorm2d):
            c = layer.num_features
            low, high = (0.1, 0.3) if layer.name in last_bns else (0.5, 1.5)
            p["weight"] = rng.uniform(low, high, c).astype(np.float32)
            p["bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
            b["running_mean"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
            b["running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        elif "bias" in p:
            p["bias"] = (0.1 * rng.standard_normal(p["bias"].shape)).astype(np.float32)
    return net.eval()


def pair(depth, variant="torchvision", seed=0):
    """A minicnn network with random weights and the torch reference holding the same."""
    if variant == "cifar":
        net, model = randomize(cifar_resnet(depth, rng=seed), seed), TorchCifarResNet(depth)
    else:
        net, model = randomize(resnet(depth, variant, rng=seed), seed), TorchResNet(depth, variant)
    return net, load_minicnn_state(model, net.state_dict(), depth).eval()


def image(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_resnet50_caffe_224_matches_torch_with_every_shape():
    net, model = pair(50, "caffe")
    x = image((1, 3, 224, 224))
    names = [n for n in net.names() if "." not in n]
    logits, acts = net.forward(x, capture=names)
    expected = {"conv1": 112, "bn_conv1": 112, "conv1_relu": 112, "pool1": 56}
    for name in names:
        shape = acts[name].shape
        if name in expected:
            assert shape == (1, 64, expected[name], expected[name]), name
        elif name.startswith("res"):
            stage = int(name[3])
            side = 224 // 2 ** stage
            assert shape == (1, 2 ** (stage + 6), side, side), name
    assert acts["global_pool"].shape == (1, 2048) and logits.shape == (1, 1000)
    assert 0.3 < np.abs(logits).max() < 100  # the randomization keeps the logits O(1)
    with torch.no_grad():
        assert_close(logits, model(torch.from_numpy(x)))


@pytest.mark.parametrize("depth,variant", [(50, "torchvision"), (50, "keras"), (50, "caffe"),
                                           (18, "torchvision"), (18, "caffe"), (18, "keras")])
def test_forward_matches_torch(depth, variant):
    net, model = pair(depth, variant)
    x = image((2, 3, 64, 64))
    with torch.no_grad():
        assert_close(net.forward(x), model(torch.from_numpy(x)))


@pytest.mark.parametrize("depth", [20, 8])
def test_cifar_forward_matches_torch(depth):
    net, model = pair(depth, "cifar")
    x = image((2, 3, 32, 32))
    out, acts = net.forward(x, capture=["res2a", "res3a", "res4a"])
    assert [acts[n].shape for n in ("res2a", "res3a", "res4a")] == [
        (2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
    with torch.no_grad():
        assert_close(out, model(torch.from_numpy(x)))


@pytest.mark.parametrize("depth,variant,size", [(18, "torchvision", 64), (20, "cifar", 32)])
def test_input_gradient_of_a_logit_matches_torch(depth, variant, size):
    # float64 on both sides: in float32 a ReLU input within rounding of 0 can flip
    # between the engines, and the gradient is discontinuous there.
    net, model = pair(depth, variant)
    net, model = net.astype(np.float64), model.double()
    x = image((2, 3, size, size)).astype(np.float64)
    logits = net.forward(x)
    dout = np.zeros_like(logits)
    dout[1, 3] = 1.0
    dx = net.backward(dout, param_grads=False)
    xt = torch.from_numpy(x).requires_grad_(True)
    model(xt)[1, 3].backward()
    assert_close(dx, xt.grad, rtol=1e-9)
    assert np.abs(dx[0]).max() == 0  # the other image does not touch logit [1, 3]


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_parameter_count_matches_the_torch_reference(depth):
    for variant in VARIANTS:
        torch_count = sum(p.numel() for p in TorchResNet(depth, variant).parameters())
        assert resnet(depth, variant).num_parameters() == torch_count
