"""Numerical gradient checks of every layer's backward pass, in float64.

Each layer is checked on the scalar ``sum(forward(x) * dout)`` for a random
``dout``: the analytic input gradient and every parameter gradient must match
centered differences to a relative error below 1e-7. The same checks run on
CuPy arrays under the ``gpu`` marker. A second group shows that the check is
able to fail: subtly wrong backward passes must be caught.
"""
import numpy as np
import pytest

from minicnn import gradcheck
from minicnn.gradcheck import (TOLERANCE, check_all, check_layer, check_network,
                               check_relu_rule, directional_check, numerical_gradient,
                               rel_error, toy_residual_network)
from minicnn.layers import (Add, AvgPool2d, BatchNorm2d, ChannelPadShortcut, Conv2d, Flatten,
                            GlobalAvgPool2d, Linear, MaxPool2d, ReLU, SoftmaxCrossEntropy)

F64 = np.float64
THRESHOLD = 1e-7


def away_from_zero(rng, shape):
    """Entries of magnitude >= 0.1, so a +-1e-5 step never crosses a ReLU kink."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (0.1 + np.abs(x))


def randomize_params(layer, rng):
    """Move every parameter off its initial value (biases start at 0, BN's gamma at 1),
    so a backward that forgets a factor of gamma or drops the bias is visible."""
    for key in layer.params:
        layer.params[key] = layer.params[key] + 0.3 * rng.standard_normal(
            layer.params[key].shape)
    return layer


def random_eval_bn(channels, rng):
    bn = BatchNorm2d(channels, dtype=F64)
    bn.params["weight"] = rng.uniform(0.5, 1.5, channels)
    bn.params["bias"] = rng.standard_normal(channels)
    bn.buffers["running_mean"] = rng.standard_normal(channels)
    bn.buffers["running_var"] = rng.uniform(0.5, 2.0, channels)
    return bn.eval()


# (id, factory(rng) -> layer, input shape, input kind)
LAYER_CASES = [
    ("conv3x3_s1_p1", lambda r: Conv2d(3, 4, 3, 1, 1, rng=r, dtype=F64), (2, 3, 6, 6)),
    ("conv3x3_s2_p0", lambda r: Conv2d(3, 4, 3, 2, 0, rng=r, dtype=F64), (2, 3, 7, 7)),
    ("conv3x3_s2_p1_even", lambda r: Conv2d(2, 3, 3, 2, 1, rng=r, dtype=F64), (2, 2, 6, 6)),
    ("conv3x3_s3_ragged", lambda r: Conv2d(2, 2, 3, 3, 0, rng=r, dtype=F64), (1, 2, 8, 7)),
    ("conv1x1_s1_nobias", lambda r: Conv2d(4, 3, 1, bias=False, rng=r, dtype=F64), (2, 4, 5, 5)),
    ("conv1x1_s1_bias", lambda r: Conv2d(4, 3, 1, rng=r, dtype=F64), (2, 4, 3, 4)),
    ("conv1x1_s2", lambda r: Conv2d(4, 3, 1, 2, rng=r, dtype=F64), (2, 4, 6, 6)),
    ("conv1x1_s2_odd", lambda r: Conv2d(3, 2, 1, 2, bias=False, rng=r, dtype=F64), (2, 3, 5, 7)),
    ("conv1x1_s1_pad1", lambda r: Conv2d(2, 3, 1, 1, 1, rng=r, dtype=F64), (1, 2, 3, 3)),
    ("conv7x7_s2_p3", lambda r: Conv2d(2, 3, 7, 2, 3, rng=r, dtype=F64), (1, 2, 9, 9)),
    ("conv7x7_s2_p3_nobias", lambda r: Conv2d(2, 2, 7, 2, 3, bias=False, rng=r, dtype=F64),
     (1, 2, 8, 8)),
    ("conv2x3_s21_p10", lambda r: Conv2d(3, 2, (2, 3), (2, 1), (1, 0), rng=r, dtype=F64),
     (1, 3, 6, 5)),
    ("conv5x3_s12_p21_nobias",
     lambda r: Conv2d(2, 3, (5, 3), (1, 2), (2, 1), bias=False, rng=r, dtype=F64), (2, 2, 5, 6)),
    ("relu_normal", lambda r: ReLU("normal"), (2, 3, 4, 4)),
    ("maxpool3_s2_floor", lambda r: MaxPool2d(3, 2), (2, 3, 8, 8)),
    ("maxpool3_s2_ceil", lambda r: MaxPool2d(3, 2, ceil_mode=True), (2, 3, 8, 8)),
    ("maxpool3_s2_p1", lambda r: MaxPool2d(3, 2, 1), (2, 3, 7, 7)),
    ("maxpool3_s2_p1_ceil", lambda r: MaxPool2d(3, 2, 1, ceil_mode=True), (2, 2, 6, 6)),
    # 5 + 2 - 2 = 5: ceil would give 4 windows but the last would start in the
    # right padding, so it is dropped (3 windows), as in PyTorch.
    ("maxpool2_s2_p1_ceil_dropped", lambda r: MaxPool2d(2, 2, 1, ceil_mode=True), (1, 2, 5, 5)),
    ("maxpool2_s2", lambda r: MaxPool2d(2), (2, 3, 6, 6)),
    ("maxpool_2x3_s12", lambda r: MaxPool2d((2, 3), (1, 2), (1, 1)), (1, 2, 5, 6)),
    ("avgpool3_s2_p1", lambda r: AvgPool2d(3, 2, 1), (2, 3, 7, 7)),
    ("avgpool3_s1_p1", lambda r: AvgPool2d(3, 1, 1), (1, 2, 5, 5)),
    ("avgpool2_s2", lambda r: AvgPool2d(2), (2, 3, 6, 6)),
    ("avgpool_3x2_s21_p10", lambda r: AvgPool2d((3, 2), (2, 1), (1, 0)), (2, 2, 6, 5)),
    ("globalavgpool", lambda r: GlobalAvgPool2d(), (2, 3, 4, 5)),
    ("bn_train", lambda r: BatchNorm2d(4, dtype=F64).train(), (3, 4, 3, 3)),
    ("bn_train_m3", lambda r: BatchNorm2d(3, dtype=F64).train(), (3, 3, 1, 1)),
    ("bn_eval", lambda r: random_eval_bn(4, r), (3, 4, 3, 3)),
    ("linear", lambda r: Linear(6, 4, rng=r, dtype=F64), (3, 6)),
    ("linear_nobias", lambda r: Linear(5, 2, bias=False, rng=r, dtype=F64), (4, 5)),
    ("flatten", lambda r: Flatten(), (2, 3, 2, 2)),
    ("channelpad_s2", lambda r: ChannelPadShortcut(4, 8), (2, 4, 6, 6)),
    ("channelpad_s2_odd", lambda r: ChannelPadShortcut(2, 6), (2, 2, 5, 5)),
    ("channelpad_s1", lambda r: ChannelPadShortcut(3, 5, stride=1), (2, 3, 3, 3)),
]


@pytest.mark.parametrize("factory, shape",
                         [pytest.param(f, s, id=i) for i, f, s in LAYER_CASES])
def test_layer_gradients(factory, shape, dev):
    rng = np.random.default_rng(1234)
    layer = factory(rng)
    randomize_params(layer, rng)
    expected_keys = {"x", *layer.params}
    layer = dev.layer(layer)
    x = dev.array(away_from_zero(rng, shape))
    errors = check_layer(layer, x, rng)
    assert set(errors) == expected_keys
    assert set(layer.grads) == set(layer.params)
    for key, err in errors.items():
        assert err < THRESHOLD, f"{key}: relative error {err:.2e}"


@pytest.mark.parametrize("mode", ["normal", "guided", "deconv"])
def test_relu_rules_match_their_surrogate_gradients(mode, dev):
    rng = np.random.default_rng(7)
    x = dev.array(away_from_zero(rng, (2, 3, 4, 4)))
    dout = dev.array(rng.standard_normal((2, 3, 4, 4)))
    assert check_relu_rule(mode, x, dout) < THRESHOLD


def test_add_gradients(dev):
    rng = np.random.default_rng(3)
    a = dev.array(rng.standard_normal((2, 3, 4, 4)))
    b = dev.array(rng.standard_normal((2, 3, 4, 4)))
    dout = dev.array(rng.standard_normal((2, 3, 4, 4)))
    add = Add()
    add.forward(a, b)
    da, db = add.backward(dout)
    f = lambda _: (add.forward(a, b) * dout).sum()  # noqa: E731
    assert rel_error(da, numerical_gradient(f, a)) < THRESHOLD
    assert rel_error(db, numerical_gradient(f, b)) < THRESHOLD


@pytest.mark.parametrize("scale", [0.5, 3.0, 50.0])
def test_softmax_cross_entropy_gradient(scale, dev):
    rng = np.random.default_rng(11)
    logits = dev.array(scale * rng.standard_normal((4, 5)))
    labels = dev.array(np.array([0, 3, 4, 3]))
    loss = SoftmaxCrossEntropy()
    loss.forward(logits, labels)
    analytic = loss.backward()
    numeric = numerical_gradient(lambda z: loss.forward(z, labels), logits)
    assert analytic.shape == logits.shape
    assert rel_error(analytic, numeric) < THRESHOLD


# -- the checks must be able to fail ---------------------------------------------

class FlippedKernelConv(Conv2d):
    """Backpropagates to the input through the spatially flipped kernel: a classic
    mix-up between correlation and convolution that shapes cannot catch."""

    def backward(self, dout):
        weight = self.params["weight"]
        self.params["weight"] = weight[:, :, ::-1, ::-1].copy()
        try:
            dx = super().backward(dout)
        finally:
            self.params["weight"] = weight
        return dx


class BNMissingTerm(BatchNorm2d):
    """Train-mode backward that forgets the variance path (the x_hat * sum(dy x_hat) term)."""

    def backward(self, dout):
        mode, x_hat, inv_std = self.cache
        dx = super().backward(dout)
        if mode != "train":
            return dx
        m = dout.shape[0] * dout.shape[2] * dout.shape[3]
        gamma = self.params["weight"].reshape(1, -1, 1, 1)
        missing = (dout * x_hat).sum(axis=(0, 2, 3)).reshape(1, -1, 1, 1)
        return dx + gamma * inv_std.reshape(1, -1, 1, 1) / m * x_hat * missing


def test_check_catches_flipped_kernel_in_conv_backward():
    rng = np.random.default_rng(0)
    layer = randomize_params(FlippedKernelConv(2, 3, 3, 1, 1, rng=rng, dtype=F64), rng)
    errors = check_layer(layer, rng.standard_normal((2, 2, 5, 5)), rng)
    assert errors["x"] > 1e-3
    # The parameter gradients do not use the flipped kernel: the check localizes the bug.
    assert errors["weight"] < THRESHOLD and errors["bias"] < THRESHOLD


def test_check_catches_missing_term_in_batchnorm_train_backward():
    rng = np.random.default_rng(0)
    layer = randomize_params(BNMissingTerm(3, dtype=F64), rng)
    errors = check_layer(layer, rng.standard_normal((4, 3, 2, 2)), rng)
    assert errors["x"] > 1e-3
    # In eval mode the term does not exist, and the same class passes.
    eval_layer = BNMissingTerm(3, dtype=F64)
    eval_layer.params = random_eval_bn(3, rng).params
    eval_layer.eval()
    assert max(check_layer(eval_layer, rng.standard_normal((4, 3, 2, 2)), rng).values()) < THRESHOLD


def test_check_catches_wrong_avgpool_divisor(monkeypatch):
    def backward(self, dout):  # divides by kh instead of kh * kw
        self._check_backward(dout)
        return self._scatter(dout, lambda group, k, pixels: dout[group] / self.kernel_size[0])

    monkeypatch.setattr(AvgPool2d, "backward", backward)
    rng = np.random.default_rng(0)
    errors = check_layer(AvgPool2d(2), rng.standard_normal((1, 2, 4, 4)), rng)
    assert errors["x"] > 1e-3


def test_check_catches_dropped_linear_weight_transpose(monkeypatch):
    original = Linear.backward

    def backward(self, dout):  # right shapes for a square layer, wrong values
        dx = original(self, dout)
        self.grads["weight"] = self.grads["weight"].T.copy()
        return dx

    monkeypatch.setattr(Linear, "backward", backward)
    rng = np.random.default_rng(0)
    errors = check_layer(Linear(4, 4, rng=rng, dtype=F64), rng.standard_normal((3, 4)), rng)
    assert errors["weight"] > 1e-3
    assert errors["x"] < THRESHOLD


@pytest.mark.parametrize("mode", ["guided", "deconv"])
def test_guided_and_deconv_are_not_gradients(mode):
    """The true-gradient check must reject the visualization rules; each rule also
    fails against the other rule's surrogate."""
    rng = np.random.default_rng(5)
    x = away_from_zero(rng, (2, 3, 4, 4))
    assert max(check_layer(ReLU(mode), x.copy(), rng).values()) > 1e-3
    relu = ReLU(mode)
    relu.forward(x)
    dout = rng.standard_normal(x.shape)
    other = "deconv" if mode == "guided" else "guided"
    reference = ReLU(other)
    reference.forward(x)
    assert rel_error(relu.backward(dout), reference.backward(dout)) > 1e-3


def test_rel_error_basics():
    a = np.array([1.0, 2.0, 3.0])
    assert rel_error(a, a) == 0.0
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error(a, -a) == pytest.approx(1.0)
    assert rel_error(a, 1.01 * a) == pytest.approx(0.01 / 2.01)
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(a, a[:2])


def test_numerical_gradient_of_known_function_and_restores_input():
    x = np.array([[0.5, -1.0], [2.0, 3.0]])
    before = x.copy()
    grad = numerical_gradient(lambda z: (z ** 3).sum() + z[0, 1] * z[1, 0], x)
    expected = 3 * before ** 2 + np.array([[0.0, 2.0], [-1.0, 0.0]])
    np.testing.assert_allclose(grad, expected, rtol=1e-8)
    np.testing.assert_array_equal(x, before)
    with pytest.raises(ValueError, match="C-contiguous"):
        numerical_gradient(lambda z: z.sum(), np.ones((3, 4)).T)


# -- whole-suite and whole-network checks -----------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_check_all_rows_pass(seed):
    rows = check_all(seed=seed)
    names = {row[0] for row in rows}
    assert {"Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "BatchNorm2d", "Linear",
            "Flatten", "ChannelPadShortcut", "ReLU", "residual network"} <= names
    assert [row[1] for row in rows if row[0] == "ReLU"] == ["normal", "guided", "deconv"]
    for name, mode, err, passed in rows:
        limit = 1e-6 if name == "residual network" else TOLERANCE
        assert passed and err < limit, (name, mode, err)


def test_format_table_counts_failures():
    rows = [("A", "x", 1e-12, True), ("B", "y", 0.5, False), ("C", "", 1e-11, True)]
    lines = gradcheck.format_table(rows).splitlines()
    assert lines[-1] == "2 passed, 1 failed"
    assert "FAIL" in next(line for line in lines if line.startswith("B"))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("seed", [0, 3])
def test_toy_residual_network_directional_check(mode, seed, dev):
    rng = np.random.default_rng(seed)
    net = toy_residual_network(rng, dtype=F64)
    for layer, key in net.parameters():  # non-trivial biases and BN affines
        layer.params[key] = layer.params[key] + 0.1 * rng.standard_normal(layer.params[key].shape)
    net = dev.layer(net)
    net.train()
    for _ in range(3):  # non-trivial running statistics for eval mode
        net.forward(dev.array(rng.standard_normal((4, 3, 12, 12))))
    getattr(net, mode)()
    err = check_network(net, dev.array(rng.standard_normal((2, 3, 12, 12))), rng)
    assert err < 1e-6


def test_directional_check_detects_a_wrong_gradient():
    rng = np.random.default_rng(0)
    net = toy_residual_network(rng, dtype=F64)
    x = rng.standard_normal((2, 3, 10, 10))
    out = net.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = net.backward(dout)
    params = net.parameters()
    arrays = [x] + [layer.params[key] for layer, key in params]
    f = lambda: (net.forward(x) * dout).sum()  # noqa: E731
    grads = [dx] + [layer.grads[key] for layer, key in params]
    assert directional_check(f, arrays, grads, rng=1) < 1e-6
    # 10% too much on the input gradient alone, or one parameter's gradient zeroed.
    assert directional_check(f, arrays, [1.1 * dx] + grads[1:], rng=1) > 1e-3
    broken = list(grads)
    broken[1] = np.zeros_like(broken[1])  # conv1.weight
    assert directional_check(f, arrays, broken, rng=1) > 1e-3
