"""Errors a user meets: each must say which layer, what it expected and what it got."""
import sys

import numpy as np
import pytest

import minicnn
from minicnn import (Add, AvgPool2d, BackendError, BatchNorm2d, ChannelPadShortcut, Conv2d,
                     Flatten, GlobalAvgPool2d, Linear, MaxPool2d, Network, ReLU, Residual,
                     ShapeError, SoftmaxCrossEntropy, backend)

F64 = np.float64


def small_net(dtype=F64):
    rng = np.random.default_rng(0)
    return Network([
        ("conv1", Conv2d(3, 4, 3, padding=1, rng=rng, dtype=dtype)),
        ("bn1", BatchNorm2d(4, dtype=dtype)),
        ("relu1", ReLU()),
        ("block1", Residual(branch=[("conv_a", Conv2d(4, 6, 3, 2, 1, rng=rng, dtype=dtype))],
                            shortcut=[("pad", ChannelPadShortcut(4, 6))])),
        ("gap", GlobalAvgPool2d()),
        ("fc", Linear(6, 2, rng=rng, dtype=dtype)),
    ])


def message_of(excinfo):
    return str(excinfo.value)


@pytest.mark.parametrize("shape, expected", [
    ((2, 5, 8, 8), "(N, 3, H, W)"),   # wrong channel count
    ((3, 8, 8), "(N, 3, H, W)"),      # missing batch axis
    ((1, 2, 3, 8, 8), "(N, 3, H, W)"),
])
def test_wrong_input_shape_names_layer_expected_and_received(shape, expected):
    with pytest.raises(ShapeError) as info:
        small_net().forward(np.zeros(shape))
    message = message_of(info)
    assert "'conv1'" in message and "Conv2d" in message
    assert expected in message
    assert str(shape) in message


def test_wrong_shape_inside_a_residual_block_names_the_dotted_layer():
    net = small_net()
    net["block1.conv_a"].params["weight"] = np.zeros((6, 5, 3, 3))  # now expects 5 channels
    net["block1.conv_a"].in_channels = 5
    with pytest.raises(ShapeError) as info:
        net.forward(np.zeros((2, 3, 8, 8)))
    message = message_of(info)
    assert "'block1.conv_a'" in message and "(N, 5, H, W)" in message
    assert "(2, 4, 8, 8)" in message


@pytest.mark.parametrize("layer, shape, expected", [
    (BatchNorm2d(4, dtype=F64), (2, 3, 5, 5), "(N, 4, H, W)"),
    (Linear(6, 2, dtype=F64), (2, 7), "(N, 6)"),
    (Linear(6, 2, dtype=F64), (2, 6, 1, 1), "(N, 6)"),
    (MaxPool2d(2), (4, 4), "(N, C, H, W)"),
    (AvgPool2d(2), (1, 4, 4), "(N, C, H, W)"),
    (GlobalAvgPool2d(), (2, 3), "(N, C, H, W)"),
    (ChannelPadShortcut(4, 8), (2, 3, 4, 4), "(N, 4, H, W)"),
    (Flatten(), (5,), "(N, ...)"),
])
def test_every_layer_reports_its_name_and_both_shapes(layer, shape, expected):
    net = Network([("the_layer", layer)])
    with pytest.raises(ShapeError) as info:
        net.forward(np.zeros(shape))
    message = message_of(info)
    assert "'the_layer'" in message and type(layer).__name__ in message
    assert expected in message and str(shape) in message


def test_unnamed_layer_reports_its_type():
    with pytest.raises(ShapeError, match=r"^Conv2d: expected input of shape \(N, 3, H, W\), "
                                         r"received \(1, 2, 4, 4\)$"):
        Conv2d(3, 2, 3).forward(np.zeros((1, 2, 4, 4), dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_])
def test_non_float_input_is_rejected(dtype):
    with pytest.raises(TypeError) as info:
        small_net().forward(np.zeros((2, 3, 8, 8), dtype=dtype))
    message = message_of(info)
    assert "'conv1'" in message and "floating-point" in message
    assert str(np.dtype(dtype)) in message


def test_int_input_into_parameter_free_layer_is_rejected():
    with pytest.raises(TypeError, match=r"'relu'.*floating-point.*int64"):
        Network([("relu", ReLU())]).forward(np.arange(4).reshape(1, 1, 2, 2))


def test_float32_input_into_float64_network():
    with pytest.raises(TypeError) as info:
        small_net(F64).forward(np.zeros((2, 3, 8, 8), dtype=np.float32))
    message = message_of(info)
    assert "'conv1'" in message and "float32" in message and "float64" in message
    with pytest.raises(TypeError, match=r"'fc'.*float64.*float32"):
        Network([("fc", Linear(2, 2))]).forward(np.zeros((1, 2)))  # float32 layer, float64 x


@pytest.mark.parametrize("layer, shape", [
    (Conv2d(2, 2, 3, dtype=F64), (1, 2, 4, 4)),
    (ReLU(), (1, 2, 4, 4)),
    (MaxPool2d(2), (1, 2, 4, 4)),
    (AvgPool2d(2), (1, 2, 4, 4)),
    (GlobalAvgPool2d(), (1, 2, 4, 4)),
    (BatchNorm2d(2, dtype=F64), (2, 2, 4, 4)),
    (Linear(3, 2, dtype=F64), (2, 3)),
    (Flatten(), (1, 2, 4, 4)),
    (ChannelPadShortcut(2, 4), (1, 2, 4, 4)),
])
def test_backward_before_forward_raises(layer, shape):
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.zeros(shape))
    # After a forward, a gradient of the wrong shape is a ShapeError naming both shapes.
    out = layer.forward(np.ones(shape))
    bad = np.zeros(out.shape[:-1] + (out.shape[-1] + 1,))
    with pytest.raises(ShapeError, match=rf"{tuple(out.shape)}.*{tuple(bad.shape)}".replace(
            "(", r"\(").replace(")", r"\)")):
        layer.backward(bad)
    # Moving or casting the layer drops the cache again.
    layer.to("cpu")
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros(out.shape))


def test_add_backward_before_forward_and_mismatched_inputs():
    add = Add()
    with pytest.raises(RuntimeError, match="before forward"):
        add.backward(np.zeros((1, 2)))
    with pytest.raises(ShapeError, match=r"\(1, 2, 3, 3\).*\(1, 2, 4, 4\)"):
        add.forward(np.zeros((1, 2, 3, 3)), np.zeros((1, 2, 4, 4)))


def test_network_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="run net.forward"):
        small_net().backward(np.zeros((2, 2)))


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 1, 1, 1)])
def test_batchnorm_train_with_one_value_per_channel(shape):
    c = shape[1]
    net = Network([("bn", BatchNorm2d(c, dtype=F64))])
    with pytest.raises(ValueError) as info:
        net.forward(np.ones(shape))
    message = message_of(info)
    assert "'bn'" in message and "more than one value per channel" in message
    assert str(shape) in message
    net.eval()
    np.testing.assert_allclose(net.forward(np.ones(shape)), np.ones(shape) / np.sqrt(1 + 1e-5))


def test_inputs_too_small_for_the_window():
    with pytest.raises(ValueError, match=r"'conv'.*2x2.*3x3"):
        Network([("conv", Conv2d(1, 1, 3, dtype=F64))]).forward(np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"'pool'.*1x1.*2x2"):
        Network([("pool", MaxPool2d(2))]).forward(np.zeros((1, 1, 1, 1)))


@pytest.mark.parametrize("make, match", [
    (lambda: Conv2d(1, 1, 0), "kernel_size"),
    (lambda: Conv2d(1, 1, 3, stride=0), "stride"),
    (lambda: Conv2d(1, 1, 3, padding=-1), "padding"),
    (lambda: Conv2d(1, 1, (3, 3, 3)), "pair of ints"),
    (lambda: MaxPool2d(3, 1, 2), "at most half"),
    (lambda: AvgPool2d((2, 4), 1, (1, 3)), "at most half"),
    (lambda: ChannelPadShortcut(4, 7), "cannot pad 4 channels evenly to 7"),
    (lambda: ChannelPadShortcut(4, 2), "cannot pad"),
    (lambda: ReLU("leaky"), "unknown ReLU backward mode"),
    (lambda: Residual([], activation="tanh"), "unknown residual activation"),
    (lambda: Network([("a.b", ReLU())]), "contain no dot"),
    (lambda: Network([("a", ReLU()), ("a", ReLU())]), "already has a layer named 'a'"),
])
def test_bad_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_cross_entropy_input_errors():
    loss = SoftmaxCrossEntropy()
    with pytest.raises(ShapeError, match=r"\(N, K\).*\(2, 3, 1\)"):
        loss.forward(np.zeros((2, 3, 1)), np.array([0, 1]))
    with pytest.raises(ShapeError, match=r"integer labels of shape \(2,\).*float64"):
        loss.forward(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ShapeError, match=r"\(2,\).*\(3,\)"):
        loss.forward(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[0, 3\).*from 0 to 3"):
        loss.forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"from -1 to 1"):
        loss.forward(np.zeros((2, 3)), np.array([-1, 1]))


# -- the GPU asked for without CuPy -----------------------------------------------

@pytest.mark.skipif(backend.gpu_available(), reason="a GPU is present: to_gpu succeeds")
def test_to_gpu_without_cupy_says_how_to_install_it():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed (without a device): a different message applies")
    except Exception:
        pass
    with pytest.raises(BackendError, match=r"pip install 'minicnn\[cuda\]'"):
        minicnn.to_gpu(np.zeros(2))
    assert isinstance(BackendError("x"), RuntimeError)


def test_missing_cupy_is_reported_even_on_a_gpu_machine(monkeypatch):
    """Simulate an environment without CuPy: ``import cupy`` raises ImportError."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert backend.gpu_available() is False
    with pytest.raises(BackendError, match=r"CuPy is not installed.*pip install 'minicnn\[cuda\]'"):
        backend.to_gpu(np.zeros(2))
    with pytest.raises(BackendError, match=r"minicnn\[cuda\]"):
        small_net().to("gpu")
    # The CPU path is untouched.
    assert backend.to_gpu(None) is None
    a = np.zeros(2)
    assert backend.to_cpu(a) is a
    assert backend.get_array_module(a) is np


def test_device_mismatch_names_the_layer(monkeypatch):
    """A parameter on the 'GPU' with an input on the CPU (faked: no GPU needed)."""
    class FakeGpuArray(np.ndarray):
        pass

    FakeGpuArray.__module__ = "cupy._core.core"
    layer = Network([("fc", Linear(2, 2, dtype=F64))])["fc"]
    layer.params["weight"] = layer.params["weight"].view(FakeGpuArray)
    with pytest.raises(TypeError, match=r"'fc'.*input is on the CPU.*on the GPU.*to\('gpu'\)"):
        layer.forward(np.zeros((1, 2)))


@pytest.mark.gpu
def test_device_mismatch_on_a_real_gpu():
    net = small_net().to("gpu")
    with pytest.raises(TypeError, match=r"'conv1'.*input is on the CPU.*GPU"):
        net.forward(np.zeros((2, 3, 8, 8)))
