"""The engine's fast paths against their readable references.

* ``relu_inplace`` (a row of zeros instead of the scalar 0) against ``maximum(x, 0)``;
* ReLU's and batch norm's ``backward_inplace`` / ``forward_inplace`` against their
  ``backward`` / ``forward`` and, for batch norm, against its equations written out;
* a whole network whose passes overwrite the arrays they own against the same
  network with every array owned by nobody (no layer works in place), bit for bit,
  with captured activations, injected gradients and the caller's arrays untouched.
"""
import numpy as np
import pytest

from minicnn import BatchNorm2d, Network, ReLU, Residual, network
from minicnn.layers import Conv2d, Flatten, GlobalAvgPool2d, Linear, MaxPool2d
from minicnn.layers.activation import ZERO_ROW, relu_inplace

F64 = np.float64


@pytest.mark.parametrize("size", [1, 7, ZERO_ROW - 1, ZERO_ROW, ZERO_ROW + 1, 3 * ZERO_ROW + 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_inplace_matches_maximum(dev, size, dtype):
    rng = np.random.default_rng(size)
    values = rng.standard_normal(size).astype(dtype)
    values[::5] = 0.0
    values[1::7] = -0.0
    if size > 3:
        values[3] = np.nan
    expected = np.maximum(values, 0)
    x = dev.array(values.copy())
    out = relu_inplace(x)
    assert out is x
    np.testing.assert_array_equal(dev.numpy(x), expected)


def test_relu_inplace_on_a_strided_view(dev):
    """A view that is not contiguous goes the plain way, and only it is changed."""
    rng = np.random.default_rng(1)
    base = rng.standard_normal((3, 5, 9, 11))
    x = dev.array(base.copy())
    relu_inplace(x[:, 1:4, ::2, 3:])
    expected = base.copy()
    expected[:, 1:4, ::2, 3:] = np.maximum(base[:, 1:4, ::2, 3:], 0)
    np.testing.assert_array_equal(dev.numpy(x), expected)


@pytest.mark.parametrize("mode", ["normal", "guided", "deconv"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 33, 65), (5, 13)])
def test_relu_inplace_passes_match_the_plain_ones(dev, mode, shape):
    rng = np.random.default_rng(len(shape))
    x = dev.array(rng.standard_normal(shape))
    dout = dev.array(rng.standard_normal(shape))
    plain, inplace = ReLU(mode), ReLU(mode)
    y = plain.forward(x)
    x_before = dev.numpy(x).copy()
    np.testing.assert_array_equal(dev.numpy(x), x_before)  # forward leaves x alone
    expected_dx = dev.numpy(plain.backward(dout))
    dout_before = dev.numpy(dout).copy()
    np.testing.assert_array_equal(dev.numpy(dout), dout_before)  # backward leaves dy alone
    # the rule written out
    passed = x_before > 0
    rule = {"normal": passed, "guided": passed & (dout_before > 0),
            "deconv": dout_before > 0}[mode]
    np.testing.assert_array_equal(expected_dx, dout_before * rule)

    x2 = x.copy()
    assert inplace.forward_inplace(x2) is x2
    np.testing.assert_array_equal(dev.numpy(x2), dev.numpy(y))
    dout2 = dout.copy()
    assert inplace.backward_inplace(dout2) is dout2
    np.testing.assert_array_equal(dev.numpy(dout2), expected_dx)


def bn_reference(bn, x, dout):
    """Batch norm in training mode with its docstring's equations, step by step:
    y, dx, dgamma, dbeta."""
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    var = ((x - mu) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + bn.eps)
    gamma = bn.params["weight"].reshape(1, -1, 1, 1)
    y = gamma * x_hat + bn.params["bias"].reshape(1, -1, 1, 1)
    sum_dy = dout.sum(axis=(0, 2, 3), keepdims=True)
    sum_dy_xhat = (dout * x_hat).sum(axis=(0, 2, 3), keepdims=True)
    dx = gamma / (m * np.sqrt(var + bn.eps)) * (m * dout - sum_dy - x_hat * sum_dy_xhat)
    return y, dx, sum_dy_xhat.ravel(), sum_dy.ravel()


def random_bn(channels, rng, dtype):
    bn = BatchNorm2d(channels, dtype=dtype)
    bn.params["weight"] = rng.uniform(0.5, 1.5, channels).astype(dtype)
    bn.params["bias"] = rng.standard_normal(channels).astype(dtype)
    bn.buffers["running_mean"] = rng.standard_normal(channels).astype(dtype)
    bn.buffers["running_var"] = rng.uniform(0.5, 2.0, channels).astype(dtype)
    return bn


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-11), (np.float32, 2e-4)])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (4, 5, 1, 3), (1, 2, 9, 2), (6, 3, 4, 5)])
def test_batchnorm_training_matches_its_equations(dev, dtype, rtol, shape):
    """Training mode keeps x - mu, not x_hat: same y, dx and parameter gradients as the
    equations in float64 (and within float32 rounding), in place or not."""
    rng = np.random.default_rng(shape[1])
    x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(dtype)  # a mean away from 0
    dout = rng.standard_normal(shape).astype(dtype)
    bn = random_bn(shape[1], rng, dtype)
    y_ref, dx_ref, dgamma_ref, dbeta_ref = bn_reference(
        bn, x.astype(F64), dout.astype(F64))
    for inplace in (False, True):
        layer = dev.layer(random_bn(shape[1], np.random.default_rng(shape[1]), dtype))
        layer.params = {k: dev.array(v) for k, v in bn.params.items()}
        xd, dd = dev.array(x.copy()), dev.array(dout.copy())
        y = layer.forward_inplace(xd) if inplace else layer.forward(xd)
        assert (y is xd) == inplace
        dx = layer.backward_inplace(dd) if inplace else layer.backward(dd)
        np.testing.assert_allclose(dev.numpy(y), y_ref, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(dev.numpy(dx), dx_ref, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(dev.numpy(layer.grads["weight"]), dgamma_ref, rtol=rtol,
                                   atol=rtol * shape[0] * shape[2] * shape[3])
        np.testing.assert_allclose(dev.numpy(layer.grads["bias"]), dbeta_ref, rtol=rtol,
                                   atol=rtol * shape[0] * shape[2] * shape[3])


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (5, 3, 4, 6)])
def test_batchnorm_eval_matches_its_equations_in_place_or_not(dev, shape):
    """Eval mode: y = a x + b, dx = a dy, dgamma = sum dy x_hat, dbeta = sum dy, with
    the running statistics (a batch of 2 broadcasts per channel, of 5 uses rows)."""
    rng = np.random.default_rng(5)
    bn = random_bn(3, rng, F64).eval()
    x, dout = rng.standard_normal(shape), rng.standard_normal(shape)
    std = np.sqrt(bn.buffers["running_var"] + bn.eps).reshape(1, -1, 1, 1)
    x_hat = (x - bn.buffers["running_mean"].reshape(1, -1, 1, 1)) / std
    gamma = bn.params["weight"].reshape(1, -1, 1, 1)
    y_ref = gamma * x_hat + bn.params["bias"].reshape(1, -1, 1, 1)
    bn = dev.layer(bn)
    np.testing.assert_allclose(dev.numpy(bn.forward_inplace(dev.array(x.copy()))), y_ref,
                               rtol=1e-13, atol=1e-13)
    x, dout = dev.array(x), dev.array(dout)
    np.testing.assert_allclose(dev.numpy(bn.forward(x)), y_ref, rtol=1e-13, atol=1e-13)
    expected = dev.numpy(bn.backward(dout))
    np.testing.assert_allclose(expected, gamma / std * dev.numpy(dout), rtol=1e-13)
    grads = {k: dev.numpy(v) for k, v in bn.grads.items()}
    np.testing.assert_allclose(grads["weight"], (dev.numpy(dout) * x_hat).sum(axis=(0, 2, 3)),
                               rtol=1e-12)
    np.testing.assert_allclose(grads["bias"], dev.numpy(dout).sum(axis=(0, 2, 3)), rtol=1e-12)
    bn.grads = {}
    dout2 = dout.copy()
    assert bn.backward_inplace(dout2) is dout2
    np.testing.assert_array_equal(dev.numpy(dout2), expected)
    for key, value in grads.items():
        np.testing.assert_array_equal(dev.numpy(bn.grads[key]), value)


def tricky_network(rng):
    """Every case the ownership rules must get right: a ReLU after a max pool (which
    keeps its output), a residual branch that ends in a ReLU (which keeps its
    output) with an identity shortcut, a projection shortcut, a Flatten (whose
    gradient is a view of the one above), batch norms in both modes."""
    def bn(c, shift=0.0):
        layer = random_bn(c, rng, F64)
        layer.params["bias"] += shift  # below zero: the ReLU after it has work to do
        return layer

    net = Network([
        ("conv1", Conv2d(3, 4, 3, padding=1, rng=rng, dtype=F64)),
        ("pool", MaxPool2d(3, 2, 1)),
        ("relu_pool", ReLU()),
        ("block1", Residual([("bn_a", bn(4, shift=-1.5)), ("relu_a", ReLU())])),
        ("block2", Residual([("conv_a", Conv2d(4, 4, 3, padding=1, rng=rng, dtype=F64)),
                             ("bn_a", bn(4)), ("relu_a", ReLU()),
                             ("conv_b", Conv2d(4, 6, 3, stride=2, padding=1, rng=rng, dtype=F64)),
                             ("bn_b", bn(6))],
                            shortcut=[("proj", Conv2d(4, 6, 1, stride=2, rng=rng, dtype=F64)),
                                      ("bn_proj", bn(6))])),
        ("block3", Residual([("conv_a", Conv2d(6, 6, 3, padding=1, rng=rng, dtype=F64)),
                             ("bn_a", bn(6))], activation=None)),
        ("flat", Flatten()),
        ("fc", Linear(6 * 3 * 3, 5, rng=rng, dtype=F64)),
    ])
    for layer, key in net.parameters():
        layer.params[key] = layer.params[key] + 0.2 * rng.standard_normal(layer.params[key].shape)
    return net


def without_inplace(monkeypatch):
    """Make every pass own nothing, so that no layer works in place: the reference."""
    backward = network._Pass.backward
    monkeypatch.setattr(network._Pass, "owns_output", lambda self, module: False)
    monkeypatch.setattr(network._Pass, "backward",
                        lambda self, module, dout, owned=False:
                        (backward(self, module, dout, False)[0], False))


def run_passes(dev, net, x, inject, mode, relu_mode, param_grads):
    net = dev.layer(net)
    getattr(net, mode)()
    net.set_relu_mode(relu_mode)
    captured = ["conv1", "pool", "block1.bn_a", "block1.add", "block2.relu_a", "block3", "flat"]
    out, acts = net.forward(x, capture=captured)
    inference = net.forward(x, cache=False) if mode == "eval" else None
    net.forward(x)
    dx, grads = net.backward(dev.xp.ones_like(out), inject=inject, param_grads=param_grads,
                             capture=["fc", "block2.relu_a", "block2.add", "block1", "relu_pool"])
    params = {f"{layer.name}.{k}": v.copy() for layer in net.layers()
              for k, v in layer.grads.items()}
    results = {"output": out, "inference": inference, "dx": dx}
    results.update({f"activation {k}": v for k, v in acts.items()})
    results.update({f"gradient {k}": v for k, v in grads.items()})
    results.update({f"parameter gradient {k}": v for k, v in params.items()})
    return {k: dev.numpy(v) for k, v in results.items() if v is not None}


def inputs(dev):
    rng = np.random.default_rng(0)
    x = dev.array(rng.standard_normal((2, 3, 11, 12)))
    inject = {"block2.relu_a": dev.array(rng.standard_normal((2, 4, 6, 6))),
              "block1": dev.array(rng.standard_normal((2, 4, 6, 6)))}
    return x, inject


@pytest.mark.parametrize("mode,relu_mode,param_grads", [
    ("eval", "normal", True), ("eval", "guided", False), ("train", "normal", True),
    ("train", "deconv", True)])
def test_network_inplace_passes_match_the_reference(dev, monkeypatch, mode, relu_mode,
                                                    param_grads):
    x, inject = inputs(dev)
    kept = {"x": dev.numpy(x).copy(), **{k: dev.numpy(v).copy() for k, v in inject.items()}}
    fast = run_passes(dev, tricky_network(np.random.default_rng(1)), x, inject, mode,
                      relu_mode, param_grads)
    with monkeypatch.context() as patch:
        without_inplace(patch)
        reference = run_passes(dev, tricky_network(np.random.default_rng(1)), x, inject, mode,
                               relu_mode, param_grads)
    # the caller's arrays are never overwritten
    np.testing.assert_array_equal(dev.numpy(x), kept.pop("x"))
    for name, value in kept.items():
        np.testing.assert_array_equal(dev.numpy(inject[name]), value, err_msg=name)
    assert fast.keys() == reference.keys()
    assert any(k.startswith("parameter") for k in fast) == param_grads
    for key in reference:
        np.testing.assert_array_equal(fast[key], reference[key], err_msg=key)


def test_the_comparison_catches_a_wrong_ownership_rule(monkeypatch, cpu):
    """Were a pass to overwrite an output that its layer keeps for backward (block1's
    branch ends in a ReLU, which keeps its output; the residual add would write the
    sum over it), the input gradient would differ from the reference's."""
    x, inject = inputs(cpu)
    with monkeypatch.context() as patch:
        without_inplace(patch)
        reference = run_passes(cpu, tricky_network(np.random.default_rng(1)), x, inject,
                               "eval", "normal", False)
    monkeypatch.setattr(network._Pass, "owns_output", lambda self, module: (
        getattr(module, "fresh_output", False) and module.name not in self.capture))
    broken = run_passes(cpu, tricky_network(np.random.default_rng(1)), x, inject,
                        "eval", "normal", False)
    np.testing.assert_array_equal(broken["output"], reference["output"])
    assert not np.allclose(broken["dx"], reference["dx"])


def test_float32_passes_stay_float32_and_near_float64():
    rng = np.random.default_rng(2)
    net = Network([("conv", Conv2d(3, 4, 3, padding=1, rng=rng, dtype=F64)),
                   ("bn", random_bn(4, rng, F64)), ("relu", ReLU()),
                   ("gap", GlobalAvgPool2d()), ("fc", Linear(4, 3, rng=rng, dtype=F64))]).eval()
    x = rng.standard_normal((3, 3, 9, 9))
    out64 = net.forward(x)
    dx64 = net.backward(np.ones_like(out64), param_grads=False)
    net.astype(np.float32)
    out32 = net.forward(x.astype(np.float32))
    dx32 = net.backward(np.ones_like(out32), param_grads=False)
    assert out32.dtype == dx32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx32, dx64, rtol=1e-4, atol=1e-5)


def max_pool_reference(x, dout, kernel, stride, padding, ceil_mode):
    """Max pooling's backward written out: im2col of the -inf padded input, each
    window's first maximum in row-major order (``argmax``), dy added back there."""
    from minicnn.layers import im2col
    from minicnn.layers.pooling import pooled_size
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    ho = pooled_size(h, kh, sh, ph, ceil_mode)
    wo = pooled_size(w, kw, sw, pw, ceil_mode)
    hp, wp = (ho - 1) * sh + kh, (wo - 1) * sw + kw
    x_pad = np.full((n, c, max(hp, h + 2 * ph), max(wp, w + 2 * pw)), -np.inf)
    x_pad[:, :, ph:ph + h, pw:pw + w] = x
    cols = im2col(x_pad, kernel, stride, (ho, wo)).reshape(n, c, kh * kw, ho, wo)
    first = cols.argmax(axis=2)  # the first maximum on ties
    dx_pad = np.zeros_like(x_pad)
    for k in range(kh * kw):
        u, v = divmod(k, kw)
        dx_pad[:, :, u:u + sh * (ho - 1) + 1:sh, v:v + sw * (wo - 1) + 1:sw] += dout * (first == k)
    return cols.max(axis=2), dx_pad[:, :, ph:ph + h, pw:pw + w]


POOL_CASES = [  # (input shape, kernel, stride, padding, ceil mode)
    ((2, 3, 11, 12), (3, 3), (2, 2), (1, 1), False),
    ((3, 2, 9, 9), (3, 3), (2, 2), (0, 0), True),
    ((1, 4, 13, 10), (2, 3), (1, 2), (1, 1), False),
    ((2, 1, 7, 8), (2, 2), (2, 2), (0, 0), False),
    ((4, 2, 10, 11), (3, 2), (3, 1), (1, 0), True),
]


@pytest.mark.parametrize("shape,kernel,stride,padding,ceil_mode", POOL_CASES)
@pytest.mark.parametrize("group_bytes", [1, 4 << 20])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_max_pool_backward_by_groups_matches_the_reference(dev, shape, kernel, stride, padding,
                                                          ceil_mode, group_bytes, dtype):
    """Ties (small integers) go to the window's first maximum in row-major order, as
    PyTorch does; one image per group or the whole batch in one."""
    rng = np.random.default_rng(shape[2])
    x = rng.integers(-2, 3, shape).astype(dtype)
    layer = MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    layer.group_bytes = group_bytes
    out = layer.forward(dev.array(x))
    dout = rng.standard_normal(out.shape).astype(dtype)
    expected_out, expected_dx = max_pool_reference(x.astype(F64), dout.astype(F64), kernel,
                                                   stride, padding, ceil_mode)
    dx = layer.backward(dev.array(dout))
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dev.numpy(out), expected_out)
    np.testing.assert_allclose(dev.numpy(dx), expected_dx, rtol=1e-6, atol=1e-6)
    # a second backward from the same forward gives the same (the groups restore state)
    np.testing.assert_array_equal(dev.numpy(layer.backward(dev.array(dout))), dev.numpy(dx))


@pytest.mark.parametrize("group_bytes", [1, 4 << 20])
def test_avg_pool_backward_by_groups_matches_the_adjoint(dev, group_bytes):
    """<dx, e> = <dy, pool(e)> for the linear average pool, whatever the grouping."""
    from minicnn.layers import AvgPool2d
    rng = np.random.default_rng(3)
    layer = AvgPool2d(3, 2, 1)
    layer.group_bytes = group_bytes
    x = rng.standard_normal((3, 2, 9, 10))
    dout = rng.standard_normal(layer.forward(dev.array(x)).shape)
    dx = dev.numpy(layer.backward(dev.array(dout)))
    probe = rng.standard_normal(x.shape)
    np.testing.assert_allclose((dx * probe).sum(),
                               (dout * dev.numpy(layer.forward(dev.array(probe)))).sum(),
                               rtol=1e-12)


def test_a_float32_training_step_makes_no_float64():
    """Forward, backward and an SGD step of the digits ResNet-8 in float32: every
    output, gradient, cache, buffer and momentum stays float32 (no temporaries
    promoted by a Python float or a float64 constant)."""
    from minicnn import load
    from minicnn.layers import SoftmaxCrossEntropy
    from minicnn.optim import SGD
    net = load().train()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    loss_fn, optimizer = SoftmaxCrossEntropy(), SGD(net, lr=0.01, momentum=0.9,
                                                   weight_decay=1e-4)
    for _ in range(2):
        logits = net.forward(x)
        loss_fn.forward(logits, np.arange(4))
        dx, grads = net.backward(loss_fn.backward(), capture=["conv1", "res2"])
        optimizer.step()
    arrays = [logits, dx, *grads.values(), *optimizer.state.values()]
    for layer in net.layers():
        arrays += [*layer.params.values(), *layer.grads.values(), *layer.buffers.values()]
        cache = layer.cache if isinstance(layer.cache, tuple) else (layer.cache,)
        arrays += [a for a in cache if hasattr(a, "dtype")]
    assert len(arrays) > 50
    assert {str(a.dtype) for a in arrays} == {"float32"}
