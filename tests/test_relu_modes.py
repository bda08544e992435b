"""The three ReLU backward rules on hand-computed arrays, and the network-wide switch.

Rules (see minicnn.layers.activation):
    normal  dx = dy [x > 0]
    guided  dx = dy [x > 0] [dy > 0]
    deconv  dx = dy [dy > 0]
Every expected array below is written out by hand from these definitions.
"""
import numpy as np
import pytest

from minicnn import Network, ReLU, Residual
from minicnn.gradcheck import toy_residual_network
from minicnn.layers import RELU_MODES


def run(mode, x, dout):
    relu = ReLU(mode)
    y = relu.forward(np.asarray(x, dtype=np.float64))
    return y, relu.backward(np.asarray(dout, dtype=np.float64))


def test_modes_on_the_2x2_example():
    x = [[-1.0, 2.0], [3.0, -4.0]]
    dout = [[5.0, -6.0], [-7.0, 8.0]]
    y, normal = run("normal", x, dout)
    np.testing.assert_array_equal(y, [[0, 2], [3, 0]])
    np.testing.assert_array_equal(normal, [[0, -6], [-7, 0]])
    np.testing.assert_array_equal(run("guided", x, dout)[1], [[0, 0], [0, 0]])
    np.testing.assert_array_equal(run("deconv", x, dout)[1], [[5, 0], [0, 8]])


def test_modes_on_a_2x3_example():
    x = [[1.5, -2.0, 0.5], [-0.5, 3.0, -1.0]]
    dout = [[2.0, 4.0, -1.0], [-3.0, 0.5, 6.0]]
    # x > 0:    [[1, 0, 1], [0, 1, 0]]
    # dout > 0: [[1, 1, 0], [0, 1, 1]]
    y, normal = run("normal", x, dout)
    np.testing.assert_array_equal(y, [[1.5, 0, 0.5], [0, 3.0, 0]])
    np.testing.assert_array_equal(normal, [[2.0, 0, -1.0], [0, 0.5, 0]])
    np.testing.assert_array_equal(run("guided", x, dout)[1], [[2.0, 0, 0], [0, 0.5, 0]])
    np.testing.assert_array_equal(run("deconv", x, dout)[1], [[2.0, 4.0, 0], [0, 0.5, 6.0]])
    # The forward pass is the same in every mode.
    for mode in RELU_MODES:
        np.testing.assert_array_equal(run(mode, x, dout)[0], y)


def test_zero_is_not_positive():
    """x = 0 passes no gradient (strict x > 0); dy = 0 is not a positive signal."""
    x = [0.0, 1.0, 0.0, -1.0]
    dout = [1.0, 0.0, -1.0, 2.0]
    np.testing.assert_array_equal(run("normal", x, dout)[1], [0, 0, 0, 0])
    np.testing.assert_array_equal(run("guided", x, dout)[1], [0, 0, 0, 0])
    np.testing.assert_array_equal(run("deconv", x, dout)[1], [1, 0, 0, 2])


def test_modes_on_nchw_input_keep_shape_and_dtype():
    x = np.array([[[[-1.0, 2.0], [0.5, -3.0]]], [[[4.0, -0.1], [-2.0, 1.0]]]], dtype=np.float32)
    dout = np.array([[[[1.0, 1.0], [-1.0, -1.0]]], [[[-2.0, 3.0], [2.0, 0.5]]]],
                    dtype=np.float32)
    expected = {
        "normal": [[[[0, 1], [-1, 0]]], [[[-2, 0], [0, 0.5]]]],
        "guided": [[[[0, 1], [0, 0]]], [[[0, 0], [0, 0.5]]]],
        "deconv": [[[[1, 1], [0, 0]]], [[[0, 3], [2, 0.5]]]],
    }
    for mode, want in expected.items():
        relu = ReLU(mode)
        relu.forward(x)
        dx = relu.backward(dout)
        assert dx.shape == x.shape and dx.dtype == np.float32
        np.testing.assert_array_equal(dx, np.array(want, dtype=np.float32))


def relu_only_network():
    """relu1 -> block(branch: relu_a; identity shortcut; activation relu)."""
    return Network([("relu1", ReLU()),
                    ("block", Residual(branch=[("relu_a", ReLU())]))])


# x = [-1, 2, 3], dout = [4, -5, 6]. Forward: r1 = [0, 2, 3], a = [0, 2, 3],
# s = a + r1 = [0, 4, 6], y = relu(s) = [0, 4, 6]. Backward by hand:
#   normal: ds = [0,-5,6]; da = ds[r1>0] = [0,-5,6]; dr1 = da + ds = [0,-10,12]; dx = [0,-10,12]
#   guided: ds = [0, 0,6]; da = [0,0,6];  dr1 = [0,0,12];  dx = [0,0,12]
#   deconv: ds = [4, 0,6]; da = [4,0,6];  dr1 = [8,0,12];  dx = [8,0,12]
NETWORK_EXPECTED = {"normal": [0.0, -10.0, 12.0], "guided": [0.0, 0.0, 12.0],
                    "deconv": [8.0, 0.0, 12.0]}


@pytest.mark.parametrize("mode", RELU_MODES)
def test_set_relu_mode_reaches_relus_inside_residual_blocks(mode):
    net = relu_only_network()
    assert net.set_relu_mode(mode) is net
    assert {layer.name: layer.mode for layer in net.layers() if isinstance(layer, ReLU)} == {
        "relu1": mode, "block.relu_a": mode, "block.relu": mode}
    x = np.array([-1.0, 2.0, 3.0]).reshape(1, 1, 1, 3)
    y = net.forward(x)
    np.testing.assert_array_equal(y.ravel(), [0.0, 4.0, 6.0])
    dx = net.backward(np.array([4.0, -5.0, 6.0]).reshape(1, 1, 1, 3))
    np.testing.assert_array_equal(dx.ravel(), NETWORK_EXPECTED[mode])


def test_set_relu_mode_switches_every_relu_of_the_toy_network_and_back():
    net = toy_residual_network(0)
    relus = [layer for layer in net.layers() if isinstance(layer, ReLU)]
    assert {r.name for r in relus} == {"relu1", "block1.relu_a", "block1.relu", "block2.relu_a",
                                       "block2.relu", "block3.relu_a", "block3.relu"}
    for mode in ("guided", "deconv", "normal"):
        net.set_relu_mode(mode)
        assert all(r.mode == mode for r in relus)


def test_unknown_mode_is_rejected_clearly_and_changes_nothing():
    net = relu_only_network().set_relu_mode("guided")
    with pytest.raises(ValueError) as info:
        net.set_relu_mode("backprop")
    message = str(info.value)
    assert "'backprop'" in message
    assert all(mode in message for mode in RELU_MODES)
    assert all(layer.mode == "guided" for layer in net.layers() if isinstance(layer, ReLU))
    with pytest.raises(ValueError, match="unknown ReLU backward mode 'Guided'"):
        ReLU("Guided")
