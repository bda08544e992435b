"""Foreign ResNet names -> minicnn state-dict keys.

Foreign layouts are generated here from each framework's own architecture rule
(torchvision, akamaster CIFAR, Keras 1 / Caffe names, tf.keras names), not from
minicnn.io.mapping, and the results are checked against hand-written facts and
against networks assembled from minicnn layers.
"""
import os

import numpy as np
import pytest

import minicnn as mc
from foreign_files import caffe_block_name
from minicnn.io import (CaffeLayer, WeightsFormatError, caffe_resnet_to_minicnn,
                        cifar_resnet_to_minicnn, cifar_state_keys, cifar_state_shapes,
                        infer_caffe_arch, infer_keras_arch, infer_resnet_arch, infer_torch_arch,
                        is_keras1, keras1_resnet_to_minicnn, keras_resnet_to_minicnn,
                        read_torch_checkpoint, resnet_state_keys, resnet_state_shapes,
                        torchvision_resnet_to_minicnn)

BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
          152: [3, 8, 36, 3]}
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10")


def architecture(depth):
    """Yield (stage, index, convs) where convs maps 'a'/'b'/'c'/'1' to (out, in, k)."""
    bottleneck, inplanes = depth >= 50, 64
    for stage, (planes, count) in zip(range(2, 6), zip((64, 128, 256, 512), BLOCKS[depth])):
        out = planes * (4 if bottleneck else 1)
        for i in range(count):
            if bottleneck:
                convs = {"a": (planes, inplanes, 1), "b": (planes, planes, 3),
                         "c": (out, planes, 1)}
            else:
                convs = {"a": (planes, inplanes, 3), "b": (planes, planes, 3)}
            if i == 0 and (inplanes != out or stage > 2):
                convs["1"] = (out, inplanes, 1)
            yield stage, i, convs
            inplanes = out


def make(shape, rng):
    if rng is None:
        return np.zeros(shape, np.float16)
    return rng.standard_normal(shape).astype(np.float32)


def torch_bn(state, prefix, n, rng):
    """A torch BatchNorm2d's entries, num_batches_tracked (which converters skip) too."""
    for key in ("weight", "bias", "running_mean", "running_var"):
        state[f"{prefix}.{key}"] = make((n,), rng)
    state[f"{prefix}.num_batches_tracked"] = np.array(100)


def torchvision_state(depth, rng, num_classes=1000):
    state = {"conv1.weight": make((64, 3, 7, 7), rng)}

    def bn(prefix, n):
        torch_bn(state, prefix, n, rng)
    bn("bn1", 64)
    for stage, i, convs in architecture(depth):
        prefix = f"layer{stage - 1}.{i}"
        for part, (o, c, k) in convs.items():
            if part == "1":
                state[f"{prefix}.downsample.0.weight"] = make((o, c, 1, 1), rng)
                bn(f"{prefix}.downsample.1", o)
            else:
                n = "abc".index(part) + 1
                state[f"{prefix}.conv{n}.weight"] = make((o, c, k, k), rng)
                bn(f"{prefix}.bn{n}", o)
    state["fc.weight"] = make((num_classes, 2048 if depth >= 50 else 512), rng)
    state["fc.bias"] = make((num_classes,), rng)
    return state


def cifar_state(depth, rng):
    n = (depth - 2) // 6
    state = {"conv1.weight": make((16, 3, 3, 3), rng)}

    def bn(prefix, c):
        torch_bn(state, prefix, c, rng)
    bn("bn1", 16)
    inplanes = 16
    for layer, planes in zip((1, 2, 3), (16, 32, 64)):
        for i in range(n):
            state[f"layer{layer}.{i}.conv1.weight"] = make((planes, inplanes, 3, 3), rng)
            bn(f"layer{layer}.{i}.bn1", planes)
            state[f"layer{layer}.{i}.conv2.weight"] = make((planes, planes, 3, 3), rng)
            bn(f"layer{layer}.{i}.bn2", planes)
            inplanes = planes
    state["linear.weight"] = make((10, 64), rng)
    state["linear.bias"] = make((10,), rng)
    return state


def keras1_layers(depth, rng, num_classes=1000, keras2_names=False):
    """Caffe-named Keras layers: (kh, kw, in, out) kernels, (in, out) dense."""
    w, b, var, mean = ("kernel", "bias", "moving_variance", "moving_mean") if keras2_names \
        else ("W", "b", "running_std", "running_mean")
    layers = {"conv1": {w: make((7, 7, 3, 64), rng), b: make((64,), rng)}}

    def bn(name, c):
        layers[name] = {"gamma": make((c,), rng), "beta": make((c,), rng), mean: make((c,), rng),
                        var: make((c,), rng)}
    bn("bn_conv1", 64)
    for stage, i, convs in architecture(depth):
        block = caffe_block_name(depth, stage, i)
        for part, (o, c, k) in convs.items():
            branch = "branch1" if part == "1" else f"branch2{part}"
            layers[f"{block}_{branch}"] = {w: make((k, k, c, o), rng), b: make((o,), rng)}
            bn(f"bn{block[3:]}_{branch}", o)
    layers["fc1000"] = {w: make((2048 if depth >= 50 else 512, num_classes), rng),
                        b: make((num_classes,), rng)}
    return layers


def keras_layers(depth, rng):
    """tf.keras.applications names: conv{s}_block{k}_{0..3}_{conv,bn}, predictions."""
    layers = {"conv1_conv": {"kernel": make((7, 7, 3, 64), rng), "bias": make((64,), rng)}}

    def bn(name, c):
        layers[name] = {k: make((c,), rng) for k in ("gamma", "beta", "moving_mean",
                                                      "moving_variance")}
    bn("conv1_bn", 64)
    for stage, i, convs in architecture(depth):
        for part, (o, c, k) in convs.items():
            prefix = f"conv{stage}_block{i + 1}_{'1abc'.index(part)}"
            layers[f"{prefix}_conv"] = {"kernel": make((k, k, c, o), rng), "bias": make((o,), rng)}
            bn(f"{prefix}_bn", o)
    layers["predictions"] = {"kernel": make((2048, 1000), rng), "bias": make((1000,), rng)}
    return layers


def caffe_layers(depth, rng, legacy=False, factor=2.0):
    """Caffe ResNet: Convolution (no bias), BatchNorm (mean, var, factor), Scale, InnerProduct."""
    def blob(shape):
        array = make(shape, rng)
        return array.reshape((1,) * (4 - len(shape)) + shape) if legacy else array
    layers = [CaffeLayer("conv1", "Convolution", [blob((64, 3, 7, 7))])]

    def bn(suffix, c):
        stats = [blob((c,)), np.abs(blob((c,))), np.full((1,), factor, np.float32)]
        layers.append(CaffeLayer(f"bn{suffix}", "BatchNorm", stats))
        layers.append(CaffeLayer(f"scale{suffix}", "Scale", [blob((c,)), blob((c,))]))
    bn("_conv1", 64)
    for stage, i, convs in architecture(depth):
        block = caffe_block_name(depth, stage, i)
        for part, (o, c, k) in convs.items():
            branch = "branch1" if part == "1" else f"branch2{part}"
            layers.append(CaffeLayer(f"{block}_{branch}", "Convolution", [blob((o, c, k, k))]))
            bn(f"{block[3:]}_{branch}", o)
    layers.append(CaffeLayer("fc1000", "InnerProduct",
                             [blob((1000, 2048 if depth >= 50 else 512)), blob((1000,))]))
    return layers


# -- the naming rule -----------------------------------------------------------------
def test_key_counts_and_names():
    assert len(resnet_state_keys(50)) == 320 - 53  # torchvision's 320 less num_batches_tracked
    assert len(resnet_state_keys(50, "caffe")) == 320  # plus a bias on each of the 53 convs
    assert len(resnet_state_keys(18)) == 122 - 20
    keys101 = set(resnet_state_keys(101, "keras"))
    assert {"res3b3.bn2c.running_var", "res4b22.branch2c.bias", "res5c.bn2a.weight",
            "res2a.branch1.weight", "res4a.bn1.running_mean", "conv1.bias"} <= keys101
    assert not any(k.startswith(("res4b23", "res4b.", "res3d", "res4c")) for k in keys101)
    keys152 = set(resnet_state_keys(152))
    assert "res3b7.branch2a.weight" in keys152 and "res4b35.bn2c.bias" in keys152
    assert "res3b8.branch2a.weight" not in keys152 and "conv1.bias" not in keys152
    keys18 = resnet_state_keys(18)
    assert "res2a.branch1.weight" not in keys18 and "res3a.branch1.weight" in keys18
    assert "res5b.branch2b.weight" in keys18 and "res2a.branch2c.weight" not in keys18
    assert keys18[:2] == ["conv1.weight", "bn_conv1.weight"] and keys18[-2:] == ["fc.weight",
                                                                                  "fc.bias"]
    shapes = resnet_state_shapes(50, "caffe", num_classes=7)
    assert shapes["res2a.branch2c.weight"] == (256, 64, 1, 1)
    assert shapes["res3a.branch1.weight"] == (512, 256, 1, 1)
    assert shapes["fc.weight"] == (7, 2048)
    assert len(cifar_state_keys(20)) == 1 + 4 + 9 * 2 * 5 + 2
    assert cifar_state_shapes(56)["res4i.branch2b.weight"] == (64, 64, 3, 3)
    with pytest.raises(ValueError):
        resnet_state_keys(42)
    with pytest.raises(ValueError):
        resnet_state_keys(50, "tensorflow")
    with pytest.raises(ValueError):
        cifar_state_keys(21)


def resnet_net(depth, conv_bias, num_classes=1000):
    """An ImageNet ResNet assembled from minicnn layers by the documented naming rule."""
    layers = [("conv1", mc.Conv2d(3, 64, 7, 2, 3, bias=conv_bias)),
              ("bn_conv1", mc.BatchNorm2d(64)),
              ("conv1_relu", mc.ReLU()), ("pool1", mc.MaxPool2d(3, 2, 1))]
    for stage, i, convs in architecture(depth):
        stride = 2 if i == 0 and stage > 2 else 1
        branch = []
        for part in [p for p in "abc" if p in convs]:
            o, c, k = convs[part]
            s = stride if (part == "b") == (depth >= 50) else 1  # torchvision stride placement
            branch += [(f"branch2{part}", mc.Conv2d(c, o, k, s, k // 2, bias=conv_bias)),
                       (f"bn2{part}", mc.BatchNorm2d(o))]
            if part != max(convs.keys() - {"1"}):
                branch.append((f"branch2{part}_relu", mc.ReLU()))
        shortcut = []
        if "1" in convs:
            o, c, _ = convs["1"]
            shortcut = [("branch1", mc.Conv2d(c, o, 1, stride, 0, bias=conv_bias)),
                        ("bn1", mc.BatchNorm2d(o))]
        layers.append((caffe_block_name(depth, stage, i), mc.Residual(branch, shortcut)))
    width = 2048 if depth >= 50 else 512
    layers += [("global_pool", mc.GlobalAvgPool2d()), ("fc", mc.Linear(width, num_classes))]
    return mc.Network(layers)


def cifar_net(depth):
    layers = [("conv1", mc.Conv2d(3, 16, 3, 1, 1, bias=False)), ("bn_conv1", mc.BatchNorm2d(16)),
              ("conv1_relu", mc.ReLU())]
    inplanes = 16
    for stage, planes in zip((2, 3, 4), (16, 32, 64)):
        for i in range((depth - 2) // 6):
            stride = 2 if i == 0 and stage > 2 else 1
            branch = [("branch2a", mc.Conv2d(inplanes, planes, 3, stride, 1, bias=False)),
                      ("bn2a", mc.BatchNorm2d(planes)), ("branch2a_relu", mc.ReLU()),
                      ("branch2b", mc.Conv2d(planes, planes, 3, 1, 1, bias=False)),
                      ("bn2b", mc.BatchNorm2d(planes))]
            shortcut = [("shortcut", mc.ChannelPadShortcut(inplanes, planes))] \
                if stride == 2 else []
            layers.append((f"res{stage}{chr(ord('a') + i)}", mc.Residual(branch, shortcut)))
            inplanes = planes
    layers += [("global_pool", mc.GlobalAvgPool2d()), ("fc", mc.Linear(64, 10))]
    return mc.Network(layers)


@pytest.mark.parametrize("depth, variant", [(18, "torchvision"), (34, "caffe"),
                                            (50, "keras"), (101, "torchvision")])
def test_rule_matches_networks_built_from_layers(depth, variant):
    state = resnet_net(depth, variant != "torchvision").state_dict()
    assert list(state) == resnet_state_keys(depth, variant)
    assert {k: v.shape for k, v in state.items()} == resnet_state_shapes(depth, variant)


@pytest.mark.parametrize("depth", [20, 56])
def test_cifar_rule_matches_network(depth):
    state = cifar_net(depth).state_dict()
    assert list(state) == cifar_state_keys(depth)
    assert {k: v.shape for k, v in state.items()} == cifar_state_shapes(depth)


@pytest.mark.parametrize("depth", sorted(BLOCKS))
def test_rule_matches_the_model_builders(depth):
    models = pytest.importorskip("minicnn.models")
    for variant in ("torchvision", "caffe", "keras"):
        state = models.build(f"resnet{depth}", variant).state_dict()
        assert list(state) == resnet_state_keys(depth, variant)
        assert {k: v.shape for k, v in state.items()} == resnet_state_shapes(depth, variant)
    if depth in (18, 34):
        return
    cifar = {50: 20, 101: 56, 152: 110}[depth]
    state = models.build(f"cifar_resnet{cifar}").state_dict()
    assert list(state) == cifar_state_keys(cifar)
    assert {k: v.shape for k, v in state.items()} == cifar_state_shapes(cifar)


# -- inference of the architecture ---------------------------------------------------------
@pytest.mark.parametrize("depth", sorted(BLOCKS))
def test_infer_every_convention(depth):
    block = "bottleneck" if depth >= 50 else "basic"
    assert infer_resnet_arch(torchvision_state(depth, None)) == (depth, block, "torchvision")
    assert infer_resnet_arch(keras1_layers(depth, None)) == (depth, block, "caffe")
    assert infer_resnet_arch(keras_layers(depth, None)) == (depth, block, "keras")
    assert infer_resnet_arch(caffe_layers(depth, None)) == (depth, block, "caffe")


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_infer_cifar(depth):
    assert infer_resnet_arch(cifar_state(depth, None)) == (depth, "basic", "cifar")


def test_arch_name_helpers():
    assert infer_torch_arch(torchvision_state(34, None)) == "resnet34"
    assert infer_torch_arch(cifar_state(44, None)) == "cifar_resnet44"
    assert infer_keras_arch(keras1_layers(50, None)) == "resnet50"
    assert infer_keras_arch(keras_layers(152, None)) == "resnet152"
    assert infer_caffe_arch(caffe_layers(101, None)) == "resnet101"
    assert is_keras1(keras1_layers(50, None)) and not is_keras1(keras_layers(50, None))
    with pytest.raises(WeightsFormatError, match="torchvision-style"):
        infer_keras_arch(torchvision_state(18, None))
    with pytest.raises(WeightsFormatError, match="keras-style"):
        infer_caffe_arch(keras_layers(50, None))
    assert infer_resnet_arch(cifar_state(8, None)) == (8, "basic", "cifar")


def test_explicit_arch():
    source = torchvision_state(50, None)
    assert list(torchvision_resnet_to_minicnn(source, "resnet50")) == resnet_state_keys(50)
    assert list(torchvision_resnet_to_minicnn(source, 50)) == resnet_state_keys(50)
    with pytest.raises(WeightsFormatError, match=r"'layer1\.0\.conv3\.weight'.*res2a\.branch2c"):
        torchvision_resnet_to_minicnn(torchvision_state(34, None), "resnet50")
    with pytest.raises(ValueError, match="cifar_resnet20"):
        torchvision_resnet_to_minicnn(source, "cifar_resnet20")
    state = cifar_resnet_to_minicnn(cifar_state(32, None), "cifar_resnet32")
    assert list(state) == cifar_state_keys(32)
    state = caffe_resnet_to_minicnn(caffe_layers(50, None), "resnet50")
    assert list(state) == resnet_state_keys(50, "caffe")
    state = keras1_resnet_to_minicnn(keras1_layers(50, None), "resnet50")
    assert list(keras_resnet_to_minicnn(keras_layers(50, None), "resnet50")) == list(state)


def test_infer_failures():
    with pytest.raises(WeightsFormatError, match="no ResNet block names"):
        infer_resnet_arch(["features.0.weight", "classifier.weight"])
    state = torchvision_state(50, None)
    for key in [k for k in state if k.startswith("layer3.5.")]:
        del state[key]
    with pytest.raises(WeightsFormatError, match=r"\(3, 4, 5, 3\)"):
        infer_resnet_arch(state)
    with pytest.raises(WeightsFormatError, match="depth 6n"):
        infer_resnet_arch({f"layer{l}.{i}.conv1.weight": 0 for l in (1, 2, 3)
                           for i in range(l + 2)})
    with pytest.raises(WeightsFormatError, match="pre-activation"):
        infer_resnet_arch(["conv2_block1_preact_bn", "conv2_block1_1_conv"])


# -- converters ----------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision(depth):
    source = torchvision_state(depth, np.random.default_rng(depth), num_classes=10)
    state = torchvision_resnet_to_minicnn(source)
    assert list(state) == resnet_state_keys(depth, "torchvision")
    assert state["fc.weight"].shape == (10, 2048 if depth >= 50 else 512)
    np.testing.assert_array_equal(state["res2a.branch2a.weight"], source["layer1.0.conv1.weight"])
    np.testing.assert_array_equal(state["res3a.branch1.weight"],
                                  source["layer2.0.downsample.0.weight"])
    np.testing.assert_array_equal(state["res3a.bn1.running_var"],
                                  source["layer2.0.downsample.1.running_var"])
    np.testing.assert_array_equal(state["res5b.bn2b.bias"], source["layer4.1.bn2.bias"])
    np.testing.assert_array_equal(state["bn_conv1.weight"], source["bn1.weight"])
    np.testing.assert_array_equal(state["fc.bias"], source["fc.bias"])
    if depth == 50:
        np.testing.assert_array_equal(state["res4f.branch2c.weight"],
                                      source["layer3.5.conv3.weight"])
    resnet_net(depth, False, num_classes=10).load_state_dict(state)


def test_torchvision_101_block_names():
    state = torchvision_resnet_to_minicnn(torchvision_state(101, None))
    assert list(state) == resnet_state_keys(101)


def test_torchvision_errors():
    source = torchvision_state(18, None)
    del source["layer3.1.bn2.running_mean"]
    with pytest.raises(WeightsFormatError, match=r"'layer3\.1\.bn2\.running_mean'.*res4b\.bn2b"):
        torchvision_resnet_to_minicnn(source)
    source = torchvision_state(18, None)
    source["layer2.0.conv1.bias"] = np.zeros(128)
    with pytest.raises(WeightsFormatError, match=r"layer2\.0\.conv1\.bias"):
        torchvision_resnet_to_minicnn(source)
    source = torchvision_state(18, None)
    source["layer1.0.conv2.weight"] = np.zeros((64, 64, 1, 1))
    with pytest.raises(WeightsFormatError, match=r"res2a\.branch2b\.weight.*layer1\.0\.conv2"):
        torchvision_resnet_to_minicnn(source)
    with pytest.raises(WeightsFormatError, match="cifar"):
        torchvision_resnet_to_minicnn(cifar_state(20, None))


@pytest.mark.parametrize("depth", [20, 110])
def test_cifar(depth):
    source = cifar_state(depth, np.random.default_rng(1))
    state = cifar_resnet_to_minicnn(source)
    assert list(state) == cifar_state_keys(depth)
    np.testing.assert_array_equal(state["conv1.weight"], source["conv1.weight"])
    np.testing.assert_array_equal(state["bn_conv1.running_mean"], source["bn1.running_mean"])
    np.testing.assert_array_equal(state["res2c.branch2b.weight"], source["layer1.2.conv2.weight"])
    np.testing.assert_array_equal(state["res4a.bn2a.weight"], source["layer3.0.bn1.weight"])
    np.testing.assert_array_equal(state["fc.weight"], source["linear.weight"])
    source["layer2.0.shortcut.0.weight"] = np.zeros((32, 16, 1, 1))  # an option-B shortcut
    with pytest.raises(WeightsFormatError, match="shortcut"):
        cifar_resnet_to_minicnn(source)


@pytest.mark.parametrize("keras2_names", [False, True])
def test_keras1(keras2_names):
    layers = keras1_layers(50, np.random.default_rng(2), keras2_names=keras2_names)
    state = keras1_resnet_to_minicnn(layers)
    assert list(state) == resnet_state_keys(50, "keras")
    w, b, var = ("kernel", "bias", "moving_variance") if keras2_names else ("W", "b", "running_std")
    kernel = layers["res3a_branch2b"][w]  # (kh, kw, in, out)
    ours = state["res3a.branch2b.weight"]  # (out, in, kh, kw)
    assert ours.shape == (128, 128, 3, 3) and ours.flags.c_contiguous
    assert ours[5, 7, 2, 0] == kernel[2, 0, 7, 5] and ours[100, 3, 1, 2] == kernel[1, 2, 3, 100]
    np.testing.assert_array_equal(state["conv1.weight"],
                                  layers["conv1"][w].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(state["res2a.branch1.bias"], layers["res2a_branch1"][b])
    np.testing.assert_array_equal(state["res2a.bn2a.running_var"], layers["bn2a_branch2a"][var])
    np.testing.assert_array_equal(state["res5c.bn2c.weight"], layers["bn5c_branch2c"]["gamma"])
    np.testing.assert_array_equal(state["bn_conv1.bias"], layers["bn_conv1"]["beta"])
    fc = layers["fc1000"][w]  # (in, out)
    assert state["fc.weight"].shape == (1000, 2048)
    assert state["fc.weight"][999, 3] == fc[3, 999]


def test_keras1_end_to_end_through_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    from minicnn.io import read_keras_h5
    layers = keras1_layers(18, np.random.default_rng(3))
    path = tmp_path / "resnet18_keras1.h5"
    with h5py.File(path, "w") as f:
        names = ["input_1"] + list(layers)
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for name, weights in layers.items():
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}_{k}:0".encode() for k in weights])
            for short, value in weights.items():
                group.create_dataset(f"{name}_{short}:0", data=value)
    state = keras1_resnet_to_minicnn(read_keras_h5(path))
    np.testing.assert_array_equal(state["res4b.branch2a.weight"],
                                  layers["res4b_branch2a"]["W"].transpose(3, 2, 0, 1))
    resnet_net(18, True).load_state_dict(state)


@pytest.mark.parametrize("depth", [50, 101])
def test_keras_new_names(depth):
    rng = np.random.default_rng(4) if depth == 50 else None
    layers = keras_layers(depth, rng)
    state = keras_resnet_to_minicnn(layers)
    assert list(state) == resnet_state_keys(depth, "keras")
    if depth == 101:
        assert state["res4b22.branch2c.weight"].shape == (1024, 256, 1, 1)
        assert state["res3b3.bn2a.running_var"].shape == (128,)
        return
    np.testing.assert_array_equal(state["res2a.branch1.weight"],
                                  layers["conv2_block1_0_conv"]["kernel"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(state["res2a.bn1.running_mean"],
                                  layers["conv2_block1_0_bn"]["moving_mean"])
    np.testing.assert_array_equal(state["res4f.branch2b.bias"],
                                  layers["conv4_block6_2_conv"]["bias"])
    np.testing.assert_array_equal(state["res5c.bn2c.running_var"],
                                  layers["conv5_block3_3_bn"]["moving_variance"])
    np.testing.assert_array_equal(state["fc.weight"], layers["predictions"]["kernel"].T)
    np.testing.assert_array_equal(state["bn_conv1.weight"], layers["conv1_bn"]["gamma"])


def test_keras_errors():
    layers = keras_layers(50, None)
    del layers["conv3_block2_2_bn"]
    with pytest.raises(WeightsFormatError, match=r"'conv3_block2_2_bn'.*res3b\.bn2b"):
        keras_resnet_to_minicnn(layers)
    layers = keras_layers(50, None)
    del layers["conv1_bn"]["moving_variance"]
    with pytest.raises(WeightsFormatError, match="conv1_bn.*moving_variance"):
        keras_resnet_to_minicnn(layers)
    layers = keras_layers(50, None)
    layers["extra_dense"] = {"kernel": np.zeros((2, 2))}
    with pytest.raises(WeightsFormatError, match="extra_dense"):
        keras_resnet_to_minicnn(layers)
    with pytest.raises(WeightsFormatError, match="keras-style names"):
        keras1_resnet_to_minicnn(keras_layers(50, None))
    with pytest.raises(WeightsFormatError, match="caffe-style names"):
        keras_resnet_to_minicnn(keras1_layers(50, None))
    layers = keras_layers(50, None)
    layers["conv2_block2_2_conv"]["kernel"] = np.zeros((3, 3, 64))
    with pytest.raises(WeightsFormatError, match=r"'conv2_block2_2_conv'.*\(3, 3, 64\)"):
        keras_resnet_to_minicnn(layers)
    layers = keras_layers(50, None)
    del layers["predictions"]  # a '_notop' file
    with pytest.raises(WeightsFormatError, match="'probs' or 'predictions'.*notop"):
        keras_resnet_to_minicnn(layers)
    layers = keras1_layers(50, None)
    del layers["fc1000"]  # a 'notop' file
    with pytest.raises(WeightsFormatError, match="'fc1000'"):
        keras1_resnet_to_minicnn(layers)


@pytest.mark.parametrize("legacy", [False, True], ids=["shape", "legacy-4d"])
def test_caffe(legacy):
    layers = caffe_layers(50, np.random.default_rng(5), legacy=legacy, factor=2.0)
    by_name = {l.name: l for l in layers}
    state = caffe_resnet_to_minicnn(layers)
    assert list(state) == resnet_state_keys(50, "caffe")
    assert {k: v.shape for k, v in state.items()} == resnet_state_shapes(50, "caffe")
    np.testing.assert_array_equal(state["res2a.branch2a.weight"],
                                  by_name["res2a_branch2a"].blobs[0].reshape(64, 64, 1, 1))
    np.testing.assert_array_equal(state["res2a.branch2a.bias"], np.zeros(64))
    mean, var = by_name["bn3a_branch1"].blobs[:2]
    np.testing.assert_allclose(state["res3a.bn1.running_mean"], mean.ravel() / 2.0)
    np.testing.assert_allclose(state["res3a.bn1.running_var"], var.ravel() / 2.0)
    np.testing.assert_array_equal(state["res3a.bn1.weight"],
                                  by_name["scale3a_branch1"].blobs[0].ravel())
    np.testing.assert_array_equal(state["bn_conv1.bias"], by_name["scale_conv1"].blobs[1].ravel())
    np.testing.assert_array_equal(state["fc.weight"],
                                  by_name["fc1000"].blobs[0].reshape(1000, 2048))


def test_caffe_zero_factor_bias_and_152_names():
    layers = caffe_layers(18, np.random.default_rng(6), factor=0.0)
    conv = next(i for i, l in enumerate(layers) if l.name == "res3a_branch2b")
    bias = np.arange(128, dtype=np.float32)
    layers[conv] = CaffeLayer("res3a_branch2b", "Convolution", layers[conv].blobs + [bias])
    state = caffe_resnet_to_minicnn(layers)
    assert not state["res4a.bn2a.running_mean"].any() and not state["bn_conv1.running_var"].any()
    np.testing.assert_array_equal(state["res3a.branch2b.bias"], bias)
    state = caffe_resnet_to_minicnn(caffe_layers(152, None))
    assert list(state) == resnet_state_keys(152, "caffe")


def test_caffe_errors():
    layers = [l for l in caffe_layers(50, None) if l.name != "scale4c_branch2a"]
    with pytest.raises(WeightsFormatError, match=r"'scale4c_branch2a'.*res4c\.bn2a"):
        caffe_resnet_to_minicnn(layers)
    layers = caffe_layers(50, None)
    layers[0] = CaffeLayer("conv1", "Convolution", [np.zeros((64, 3, 5, 5), np.float32)])
    with pytest.raises(WeightsFormatError, match="'conv1'.*(64, 3, 5, 5)"):
        caffe_resnet_to_minicnn(layers)


# -- the real akamaster checkpoints -------------------------------------------------------
@pytest.mark.parametrize("depth, name", [(20, "resnet20-12fca82f.th"),
                                         (56, "resnet56-4bfd9763.th")])
def test_real_cifar_checkpoints(depth, name):
    path = os.path.join(SHARED, name)
    if not os.path.exists(path):
        pytest.skip(f"{path} is not available (needs the shared reference data)")
    source = read_torch_checkpoint(path)
    assert infer_resnet_arch(source) == (depth, "basic", "cifar")
    state = cifar_resnet_to_minicnn(source)
    assert list(state) == cifar_state_keys(depth)
    assert {k: v.shape for k, v in state.items()} == cifar_state_shapes(depth)
    assert all(v.dtype == np.float32 for v in state.values())
    cifar_net(depth).load_state_dict(state)


def test_real_resnet20_matches_torch():
    torch = pytest.importorskip("torch")
    path = os.path.join(SHARED, "resnet20-12fca82f.th")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not available (needs the shared reference data)")
    import torch.nn.functional as F
    ref = {k[len("module."):]: v for k, v in
           torch.load(path, map_location="cpu", weights_only=True)["state_dict"].items()}

    def bn(x, p):
        return F.batch_norm(x, ref[p + ".running_mean"], ref[p + ".running_var"],
                            ref[p + ".weight"], ref[p + ".bias"], False, 0.0, 1e-5)
    x = np.random.default_rng(7).standard_normal((2, 3, 32, 32)).astype(np.float32)
    h = F.relu(bn(F.conv2d(torch.from_numpy(x), ref["conv1.weight"], padding=1), "bn1"))
    for layer, planes in zip((1, 2, 3), (16, 32, 64)):
        for i in range(3):
            p, stride = f"layer{layer}.{i}", 2 if i == 0 and layer > 1 else 1
            out = F.relu(bn(F.conv2d(h, ref[p + ".conv1.weight"], stride=stride, padding=1),
                            p + ".bn1"))
            out = bn(F.conv2d(out, ref[p + ".conv2.weight"], padding=1), p + ".bn2")
            short = h if stride == 1 else F.pad(h[:, :, ::2, ::2],
                                                (0, 0, 0, 0, planes // 4, planes // 4))
            h = F.relu(out + short)
    logits = F.linear(h.mean((2, 3)), ref["linear.weight"], ref["linear.bias"]).numpy()
    net = cifar_net(20).load_state_dict(cifar_resnet_to_minicnn(read_torch_checkpoint(path)))
    np.testing.assert_allclose(net.eval().forward(x), logits, rtol=1e-4, atol=1e-4)
