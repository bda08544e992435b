"""read_keras_h5 on files written with h5py in the Keras 1 and Keras 2 layouts."""
import h5py
import numpy as np
import pytest

from foreign_files import names_attr, write_keras_layers as write_layers
from minicnn.io import read_keras_h5, WeightsFormatError


def keras1_layers(rng):
    return {
        "input_1": None,
        "conv1": {"W": rng.standard_normal((7, 7, 3, 64)).astype(np.float32),
                  "b": rng.standard_normal(64).astype(np.float32)},
        "bn_conv1": {k: rng.standard_normal(64).astype(np.float32)
                     for k in ("gamma", "beta", "running_mean", "running_std")},
        "activation_1": None,
        "res2a_branch2a": {"W": rng.standard_normal((1, 1, 64, 64)).astype(np.float32),
                           "b": np.zeros(64, np.float32)},
        "fc1000": {"W": rng.standard_normal((2048, 1000)).astype(np.float32),
                   "b": rng.standard_normal(1000).astype(np.float32)},
    }


def keras2_layers(rng):
    return {
        "conv1_pad": None,
        "conv1_conv": {"kernel": rng.standard_normal((7, 7, 3, 64)).astype(np.float32),
                       "bias": rng.standard_normal(64).astype(np.float32)},
        "conv1_bn": {k: rng.standard_normal(64).astype(np.float32)
                     for k in ("gamma", "beta", "moving_mean", "moving_variance")},
        "conv1_relu": None,
        "conv2_block1_0_conv": {"kernel": rng.standard_normal((1, 1, 64, 256)).astype(np.float32),
                                "bias": rng.standard_normal(256).astype(np.float32)},
        "predictions": {"kernel": rng.standard_normal((2048, 1000)).astype(np.float32),
                        "bias": rng.standard_normal(1000).astype(np.float32)},
    }


def expected(layers):
    return {name: weights for name, weights in layers.items() if weights}


def assert_same(got, want):
    assert list(got) == list(want)
    for layer, weights in want.items():
        assert list(got[layer]) == list(weights), layer
        for short, value in weights.items():
            assert got[layer][short].shape == value.shape
            np.testing.assert_array_equal(got[layer][short], value)


def test_keras1_layout(tmp_path):
    layers = keras1_layers(np.random.default_rng(0))
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    with h5py.File(path, "w") as f:
        write_layers(f, layers, "keras1")
        assert "res2a_branch2a_W:0" in f["res2a_branch2a"]  # stored directly in the layer group
    got = read_keras_h5(path)
    assert_same(got, expected(layers))
    assert list(got["bn_conv1"]) == ["gamma", "beta", "running_mean", "running_std"]
    assert got["conv1"]["W"].shape == (7, 7, 3, 64)  # as stored, not transposed


@pytest.mark.parametrize("full_model", [False, True], ids=["save_weights", "model_weights"])
def test_keras2_layout(tmp_path, full_model):
    layers = keras2_layers(np.random.default_rng(1))
    path = tmp_path / "k2.h5"
    with h5py.File(path, "w") as f:
        root = f
        if full_model:
            f.attrs["model_config"] = b'{"class_name": "Functional"}'
            f.attrs["keras_version"] = b"2.13.1"
            root = f.create_group("model_weights")
            f.create_group("optimizer_weights")
        write_layers(root, layers, "keras2")
        assert "kernel:0" in root["conv1_conv"]["conv1_conv"]  # nested one group deeper
    assert_same(read_keras_h5(path), expected(layers))


@pytest.mark.parametrize("style", ["keras1", "keras2"])
def test_layer_names_split_over_attributes(tmp_path, style):
    rng = np.random.default_rng(2)
    layers = keras1_layers(rng) if style == "keras1" else keras2_layers(rng)
    path = tmp_path / "split.h5"
    with h5py.File(path, "w") as f:
        write_layers(f, layers, style, split=2)
        assert "layer_names" not in f.attrs and "layer_names1" in f.attrs
    assert_same(read_keras_h5(path), expected(layers))


def test_file_order_is_kept(tmp_path):
    order = ["zeta", "alpha", "mid"]
    layers = {name: {"kernel": np.full((2, 2), i, np.float32)} for i, name in enumerate(order)}
    path = tmp_path / "order.h5"
    with h5py.File(path, "w") as f:
        write_layers(f, layers, "keras2")
    got = read_keras_h5(path)
    assert list(got) == order  # HDF5 itself lists groups alphabetically
    assert got["mid"]["kernel"][0, 0] == 2


def test_errors(tmp_path):
    text = tmp_path / "not.h5"
    text.write_text("not hdf5")
    with pytest.raises(WeightsFormatError, match="not an HDF5 file"):
        read_keras_h5(text)

    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightsFormatError, match="layer_names"):
        read_keras_h5(plain)

    missing = tmp_path / "missing.h5"
    with h5py.File(missing, "w") as f:
        write_layers(f, {"dense": {"kernel": np.zeros((2, 3))}}, "keras2")
        f["dense"].attrs["weight_names"] = names_attr(["dense/kernel:0", "dense/bias:0"])
    with pytest.raises(WeightsFormatError, match="'dense/bias:0'"):
        read_keras_h5(missing)

    no_group = tmp_path / "no_group.h5"
    with h5py.File(no_group, "w") as f:
        f.attrs["layer_names"] = names_attr(["ghost"])
    with pytest.raises(WeightsFormatError, match="'ghost'"):
        read_keras_h5(no_group)

    with pytest.raises(FileNotFoundError):
        read_keras_h5(tmp_path / "absent.h5")


def test_truncated_file(tmp_path):
    path = tmp_path / "full.h5"
    with h5py.File(path, "w") as f:
        write_layers(f, keras1_layers(np.random.default_rng(3)), "keras1")
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(WeightsFormatError) as info:
        read_keras_h5(cut)
    assert str(cut) in str(info.value)
