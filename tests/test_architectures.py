"""ResNet architectures without an oracle: names, shapes, parameter counts, variants.

test_models.py checks the same networks against hand-written torch references;
these tests need no torch.
"""
import numpy as np
import pytest

from minicnn import BatchNorm2d, ChannelPadShortcut, Conv2d, Linear, Residual
from minicnn.models import ARCHITECTURES, build, cifar_resnet, resnet

VARIANTS = ("caffe", "torchvision", "keras")
COUNTS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
          152: [3, 8, 36, 3]}


def image(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pool1_and_res3a_shapes_at_224(variant):
    net, x = resnet(50, variant).eval(), image((2, 3, 224, 224))
    assert net.forward(x, stop_at="pool1").shape == (2, 64, 56, 56)  # caffe: by ceil mode
    assert net.forward(x, stop_at="res3a").shape == (2, 512, 28, 28)


def test_block_names():
    names50 = resnet(50).names()
    assert "res5c.branch2c" in names50 and "res2a.branch1" in names50
    assert "res3b.branch1" not in names50 and "res2a.branch2b_relu" in names50
    names101 = set(resnet(101).names())
    assert {"res3a", "res3b3", "res4b1", "res4b22", "res4b22.bn2c"} <= names101
    assert not {"res3b", "res3b4", "res4b23"} & names101
    top18 = [n for n in resnet(18).names() if "." not in n]
    assert top18 == ["conv1", "bn_conv1", "conv1_relu", "pool1", "res2a", "res2b", "res2",
                     "res3a", "res3b", "res3", "res4a", "res4b", "res4", "res5a", "res5b", "res5",
                     "global_pool", "fc"]
    children = ["branch2a", "bn2a", "branch2a_relu", "branch2b", "bn2b", "add", "relu"]
    expected = [f"res2a.{n}" for n in children] + ["res2b", "res2b.branch2a"]
    assert resnet(18).names()[5:14] == expected
    assert resnet(18).names()[19:22] == ["res2b.relu", "res2", "res3a"]
    keys = resnet(101, "caffe").state_dict()
    assert {"res4b22.branch2a.weight", "res4b22.bn2c.running_var", "conv1.bias",
            "fc.weight", "res2a.branch1.bias"} <= set(keys)


@pytest.mark.parametrize("depth, last", [(18, "res4b"), (50, "res4f"), (101, "res4b22"),
                                         (152, "res4b35")])
def test_stage_names_stand_for_the_last_block(depth, last):
    net = resnet(depth).eval()
    assert net.aliases["res4"] == last and net["res4"] is net[last]
    assert net.aliases["res5"] == ("res5b" if depth == 18 else "res5c")
    x = image((1, 3, 64, 64))
    out, acts = net.forward(x, stop_at="res4", capture=["res3", last])
    np.testing.assert_array_equal(out, acts[last])
    assert out.shape == (1, 256 * (1 if depth == 18 else 4), 4, 4)
    np.testing.assert_array_equal(acts["res3"], net.forward(x, stop_at=net.aliases["res3"]))
    # a gradient injected at a stage name is one injected at its last block, and they add up
    net.forward(x, stop_at="res4")
    g = image(out.shape, seed=2)
    by_alias = net.backward(inject={"res4": g}, param_grads=False)
    np.testing.assert_array_equal(by_alias, net.backward(inject={last: g}, param_grads=False))
    np.testing.assert_allclose(net.backward(inject={"res4": g, last: g}, param_grads=False),
                               2 * by_alias, rtol=1e-5, atol=1e-6)


def test_cifar_stage_names():
    net = cifar_resnet(20)
    assert net.aliases == {"res2": "res2c", "res3": "res3c", "res4": "res4c"}
    with pytest.raises(KeyError, match="did you mean"):
        net.forward(image((1, 3, 32, 32)), stop_at="res5")
    net.add_alias("last_stage", "res4")  # an alias of an alias names the module itself
    assert net.aliases["last_stage"] == "res4c" and net["last_stage"] is net["res4c"]
    with pytest.raises(ValueError, match="new name"):
        net.add_alias("res2a", "res2b")
    with pytest.raises(KeyError):
        net.add_alias("stage9", "res9z")


def test_resnet152_is_float32_and_named():
    net = resnet(152)
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
    assert [n for n in cifar_resnet(8).names() if "." not in n][3:9] == [
        "res2a", "res2", "res3a", "res3", "res4a", "res4"]
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
    (lambda: build("alexnet"), "cifar_resnetN"),
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
