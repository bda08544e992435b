"""read_caffemodel on NetParameter messages built by the test-side protobuf encoder."""
import numpy as np
import pytest

from foreign_files import key, layer, message, net, text, uint, v1_layer, varint
from minicnn.io import read_caffemodel, CaffeLayer, WeightsFormatError


# -- tests -------------------------------------------------------------------------------
@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
            "b": rng.standard_normal(4).astype(np.float32),
            "fc": rng.standard_normal((5, 6)).astype(np.float32)}


@pytest.mark.parametrize("dims", ["packed", "unpacked"])
@pytest.mark.parametrize("data", ["packed", "unpacked", "double", "double_unpacked"])
def test_current_format(tmp_path, arrays, dims, data):
    path = tmp_path / "net.caffemodel"
    path.write_bytes(net(
        layer("data", "Input"),
        layer("conv1", "Convolution", [arrays["w"], arrays["b"]], dims=dims, data=data),
        layer("relu1", "ReLU"),
        layer("fc", "InnerProduct", [arrays["fc"]], dims=dims, data=data)))
    got = read_caffemodel(path)
    assert [(l.name, l.type, len(l.blobs)) for l in got] == [
        ("conv1", "Convolution", 2), ("fc", "InnerProduct", 1)]
    assert isinstance(got[0], CaffeLayer)
    np.testing.assert_array_equal(got[0].blobs[0], arrays["w"])
    np.testing.assert_array_equal(got[0].blobs[1], arrays["b"])
    np.testing.assert_array_equal(got[1].blobs[0], arrays["fc"])
    assert got[1].blobs[0].dtype == (np.float64 if data.startswith("double") else np.float32)
    assert got[0].blobs[0].flags.writeable


def test_legacy_4d_dims_are_kept(tmp_path, arrays):
    path = tmp_path / "legacy.caffemodel"
    path.write_bytes(net(layer("fc", "InnerProduct", [arrays["fc"], arrays["b"]], dims="legacy")))
    (fc,) = read_caffemodel(path)
    assert fc.blobs[0].shape == (1, 1, 5, 6) and fc.blobs[1].shape == (1, 1, 1, 4)
    np.testing.assert_array_equal(fc.blobs[0].reshape(5, 6), arrays["fc"])


def test_scalar_and_empty_shape(tmp_path):
    path = tmp_path / "bn.caffemodel"
    mean, var = np.arange(3, dtype=np.float32), np.ones(3, np.float32)
    path.write_bytes(net(layer("bn", "BatchNorm", [mean, var, np.array([999.0])])))
    (bn,) = read_caffemodel(path)
    assert [b.shape for b in bn.blobs] == [(3,), (3,), (1,)]
    assert bn.blobs[2][0] == 999.0


def test_v1_layers(tmp_path, arrays):
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(net(v1_layer("data", 5), v1_layer("conv1", 4, [arrays["w"], arrays["b"]]),
                         v1_layer("relu1", 18), v1_layer("fc8", 14, [arrays["fc"]]),
                         v1_layer("odd", 99, [arrays["b"]])))
    got = read_caffemodel(path)
    assert [(l.name, l.type) for l in got] == [("conv1", "Convolution"),
                                               ("fc8", "InnerProduct"), ("odd", "V1LayerType99")]
    np.testing.assert_array_equal(got[0].blobs[0], arrays["w"])
    assert got[0].blobs[1].shape == (1, 1, 1, 4)


def test_varint_edge_cases(tmp_path):
    big = np.zeros((300, 1), np.float32)  # a dim needing a two-byte varint
    path = tmp_path / "big.caffemodel"
    path.write_bytes(uint(7, 2 ** 40) + net(layer("fc", "InnerProduct", [big])) + uint(9, 1))
    assert read_caffemodel(path)[0].blobs[0].shape == (300, 1)


@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.6, 0.999])
def test_truncated(tmp_path, arrays, fraction):
    data = net(layer("conv1", "Convolution", [arrays["w"], arrays["b"]]),
               layer("fc", "InnerProduct", [arrays["fc"]]))
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(WeightsFormatError) as info:
        read_caffemodel(path)
    assert str(path) in str(info.value)


def test_corrupted_inputs(tmp_path, arrays):
    cases = {
        "empty": b"",
        "text": b"name: 'not binary'\n",
        "group": key(3, 3) + b"\x00",
        "size": message(100, text(1, "x") + message(7, message(7, message(1, varint(7)))
                                                     + message(5, b"\0" * 8))),
        "long varint": key(1, 0) + b"\xff" * 11,
    }
    for name, data in cases.items():
        path = tmp_path / "bad.caffemodel"
        path.write_bytes(data)
        with pytest.raises(WeightsFormatError):
            read_caffemodel(path)
