"""ResNet architectures: names, shapes, parameter counts, and torch as the oracle."""
import time

import numpy as np
import pytest

from minicnn import BatchNorm2d, ChannelPadShortcut, Conv2d, Linear, Residual
from minicnn.models import ARCHITECTURES, build, cifar_resnet, resnet

torch = pytest.importorskip("torch", reason="torch is the oracle: pip install 'minicnn[oracle]'")
from torch_resnets import (TorchCifarResNet, TorchResNet, assert_close,  # noqa: E402
                           load_minicnn_state)

VARIANTS = ("caffe", "torchvision", "keras")
COUNTS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
          152: [3, 8, 36, 3]}


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


@pytest.mark.parametrize("variant", VARIANTS)
def test_pool1_and_res3a_shapes_at_224(variant):
    net, x = resnet(50, variant).eval(), image((2, 3, 224, 224))
    assert net.forward(x, stop_at="pool1").shape == (2, 64, 56, 56)  # caffe: by ceil mode
    assert net.forward(x, stop_at="res3a").shape == (2, 512, 28, 28)


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


def test_block_names():
    names50 = resnet(50).names()
    assert "res5c.branch2c" in names50 and "res2a.branch1" in names50
    assert "res3b.branch1" not in names50 and "res2a.branch2b_relu" in names50
    names101 = set(resnet(101).names())
    assert {"res3a", "res3b3", "res4b1", "res4b22", "res4b22.bn2c"} <= names101
    assert not {"res3b", "res3b4", "res4b23"} & names101
    top18 = [n for n in resnet(18).names() if "." not in n]
    assert top18 == ["conv1", "bn_conv1", "conv1_relu", "pool1", "res2a", "res2b", "res3a",
                     "res3b", "res4a", "res4b", "res5a", "res5b", "global_pool", "fc"]
    children = ["branch2a", "bn2a", "branch2a_relu", "branch2b", "bn2b", "add", "relu"]
    expected = [f"res2a.{n}" for n in children] + ["res2b", "res2b.branch2a"]
    assert resnet(18).names()[5:14] == expected
    keys = resnet(101, "caffe").state_dict()
    assert {"res4b22.branch2a.weight", "res4b22.bn2c.running_var", "conv1.bias",
            "fc.weight", "res2a.branch1.bias"} <= set(keys)


def test_resnet152_is_fast_float32_and_named():
    start = time.perf_counter()
    net = resnet(152)
    assert time.perf_counter() - start < 2.0
    names = set(net.names())
    assert {"res3b7", "res4b35", "res5c"} <= names and not {"res3b8", "res4b36"} & names
    assert {v.dtype for v in net.state_dict().values()} == {np.dtype(np.float32)}


def expected_parameters(depth, conv_bias):
    """Parameter count from the architecture, conv by conv."""
    total = 0

    def conv(cin, cout, k):
        nonlocal total
        total += cin * cout * k * k + (cout if conv_bias else 0) + 2 * cout  # + its BN
    conv(3, 64, 7)
    cin, bottleneck = 64, depth >= 50
    for stage, (planes, count) in enumerate(zip([64, 128, 256, 512], COUNTS[depth])):
        cout = 4 * planes if bottleneck else planes
        for i in range(count):
            if bottleneck:
                conv(cin, planes, 1), conv(planes, planes, 3), conv(planes, cout, 1)
            else:
                conv(cin, planes, 3), conv(planes, planes, 3)
            if i == 0 and (stage > 0 or bottleneck):
                conv(cin, cout, 1)
            cin = cout
    return total + cin * 1000 + 1000


KNOWN_TORCHVISION = {18: 11_689_512, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_parameter_and_layer_counts(depth):
    if depth in KNOWN_TORCHVISION:
        assert expected_parameters(depth, False) == KNOWN_TORCHVISION[depth]
    for variant in VARIANTS if depth <= 50 else ("torchvision",):
        net = resnet(depth, variant)
        assert net.num_parameters() == expected_parameters(depth, variant != "torchvision")
        layers = list(net.layers())
        convs = [m for m in layers if isinstance(m, Conv2d)]
        main_path = [c for c in convs if not c.name.endswith("branch1")]
        assert len(main_path) + 1 == depth
        assert len(convs) - len(main_path) == (4 if depth >= 50 else 3)
        assert sum(isinstance(m, BatchNorm2d) for m in layers) == len(convs)
        assert sum(isinstance(m, Linear) for m in layers) == 1
        assert sum(isinstance(m, Residual) for m in net.modules()) == sum(COUNTS[depth])
        assert all(("bias" in c.params) == (variant != "torchvision") for c in convs)
    if depth <= 50:
        torch_count = sum(p.numel() for p in TorchResNet(depth, "caffe").parameters())
        assert torch_count == expected_parameters(depth, True)


def test_variant_details():
    caffe, tv, keras = (resnet(50, v) for v in VARIANTS)
    assert caffe["res3a.branch2a"].stride == (2, 2) and caffe["res3a.branch2b"].stride == (1, 1)
    assert tv["res3a.branch2a"].stride == (1, 1) and tv["res3a.branch2b"].stride == (2, 2)
    assert keras["res4a.branch2a"].stride == (2, 2) and keras["res4a.branch1"].stride == (2, 2)
    assert caffe["pool1"].ceil_mode and caffe["pool1"].padding == (0, 0)
    assert not tv["pool1"].ceil_mode and tv["pool1"].padding == (1, 1) == keras["pool1"].padding
    assert keras["res2a.bn2a"].eps == 1.001e-5 and tv["bn_conv1"].eps == 1e-5
    r18 = resnet(18, "caffe")
    assert r18["res3a.branch2a"].stride == (2, 2) and "res2a.branch1" not in r18.names()


def test_cifar_resnet20_counts_and_shortcuts():
    net = cifar_resnet(20)
    expected = 3 * 16 * 9 + 2 * 16 + 64 * 10 + 10
    cin = 16
    for planes in (16, 32, 64):
        for _ in range(3):
            expected += (cin + planes) * planes * 9 + 4 * planes
            cin = planes
    assert net.num_parameters() == expected == 269_722
    layers = list(net.layers())
    assert sum(isinstance(m, Conv2d) for m in layers) + 1 == 20
    pads = [m for m in layers if isinstance(m, ChannelPadShortcut)]
    assert [m.name for m in pads] == ["res3a.branch1", "res4a.branch1"]
    assert all("bias" not in m.params for m in layers if isinstance(m, Conv2d))
    assert [n for n in cifar_resnet(8).names() if "." not in n][3:6] == ["res2a", "res3a", "res4a"]
    assert "res4i" in cifar_resnet(56).names() and "res4j" not in cifar_resnet(56).names()


def test_build_registry_metadata_and_reproducibility():
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "cifar_resnet20",
            "cifar_resnet32", "cifar_resnet44", "cifar_resnet56", "cifar_resnet110"} <= set(
        ARCHITECTURES)
    net = build("resnet18", variant="keras", num_classes=7, rng=3)
    assert net.metadata == {"arch": "resnet18", "variant": "keras", "num_classes": 7}
    assert net["fc"].params["weight"].shape == (7, 512)
    assert build("resnet34").metadata["variant"] == "torchvision"
    assert build("cifar_resnet8").metadata == {"arch": "cifar_resnet8", "variant": "cifar",
                                               "num_classes": 10}
    same = build("resnet18", "keras", 7, rng=np.random.default_rng(3)).state_dict()
    other = build("resnet18", "keras", 7, rng=4).state_dict()
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, same[key])
    assert not np.array_equal(net["res5b.branch2b"].params["weight"],
                              other["res5b.branch2b.weight"])
    bn = net["res3a.bn2a"]
    assert (bn.params["weight"] == 1).all() and (bn.params["bias"] == 0).all()
    assert build("cifar_resnet20", dtype=np.float64)["fc"].params["weight"].dtype == np.float64


@pytest.mark.parametrize("call,match", [
    (lambda: build("resnet51"), "did you mean.*resnet50"),
    (lambda: build("vgg16"), "cifar_resnetN"),
    (lambda: build("cifar_resnet21"), "6n \\+ 2"),
    (lambda: build("cifar_resnet164"), "at most 26"),
    (lambda: build("resnet50", variant="pytorch"), "torchvision, caffe, keras"),
    (lambda: build("cifar_resnet20", variant="caffe"), "'cifar'"),
    (lambda: resnet(50, "v2"), "torchvision"),
    (lambda: resnet(20), "18, 34, 50, 101, 152"),
    (lambda: cifar_resnet(21), "6n \\+ 2"),
])
def test_unknown_names_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
