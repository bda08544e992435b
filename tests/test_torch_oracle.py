"""PyTorch as an oracle: forward and backward of every layer, and the optimizers.

Everything is compared in float64 on random shapes drawn by hypothesis
(derandomized, so CI sees the same examples every run). PyTorch is only a
reference here; minicnn itself never imports it.
"""
import numpy as np
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
F = torch.nn.functional
# The shapes are tiny: one thread is several times faster than the default pool,
# which oversubscribes small CI runners.
torch.set_num_threads(1)

from minicnn import SGD, Adam, Network  # noqa: E402
from minicnn.layers import (AvgPool2d, BatchNorm2d, Conv2d, Flatten, GlobalAvgPool2d,  # noqa: E402
                            Linear, MaxPool2d, ReLU, SoftmaxCrossEntropy, softmax)

F64 = np.float64
RTOL = 1e-6
SEEDS = st.integers(0, 2 ** 32 - 1)


def assert_close(actual, expected, what=""):
    """rtol 1e-6, with an absolute floor scaled to the reference's magnitude so that
    entries that cancel to ~0 are not judged relative to themselves."""
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == np.float64, f"{what}: dtype {actual.dtype}"
    atol = 1e-9 * max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=atol, err_msg=what)


def tensor(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=grad)


def assert_backward_matches(layer, yt, xt, rng, what="", **params):
    """Send one random upstream gradient down both engines and compare dx and the
    gradient of every named parameter tensor (``None``: the layer must have none)."""
    g = rng.standard_normal(tuple(yt.shape))
    yt.backward(tensor(g))
    assert_close(layer.backward(g), xt.grad, f"dx{what}")
    for key, reference in params.items():
        if reference is None:
            assert key not in layer.grads, f"d{key}{what}: no such parameter"
        else:
            assert_close(layer.grads[key], reference.grad, f"d{key}{what}")


def torch_raises(fn):
    try:
        fn()
    except (RuntimeError, ValueError):
        return True
    return False


@st.composite
def window_geometry(draw, max_kernel=5):
    """Kernel, stride and padding per axis, with padding <= kernel // 2."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    return (kh, kw), (sh, sw), (ph, pw)


@st.composite
def nchw(draw, max_channels=5, max_size=12):
    return (draw(st.integers(1, 3)), draw(st.integers(1, max_channels)),
            draw(st.integers(1, max_size)), draw(st.integers(1, max_size)))


# -- convolution ------------------------------------------------------------------

@settings(max_examples=250)
@given(shape=nchw(), out_channels=st.integers(1, 5), geometry=window_geometry(),
       bias=st.booleans(), seed=SEEDS)
@example(shape=(1, 2, 2, 3), out_channels=2, geometry=((5, 3), (1, 1), (1, 1)), bias=True,
         seed=0)  # rejected: 2 + 2 < 5
@example(shape=(3, 5, 12, 12), out_channels=5, geometry=((5, 5), (3, 3), (2, 2)), bias=True,
         seed=1)
@example(shape=(2, 3, 7, 5), out_channels=4, geometry=((1, 1), (2, 3), (0, 0)), bias=False,
         seed=2)  # pointwise fast path with strides
def test_conv2d_matches_torch(shape, out_channels, geometry, bias, seed):
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    kernel, stride, padding = geometry
    layer = Conv2d(c, out_channels, kernel, stride, padding, bias=bias, dtype=F64)
    layer.params["weight"] = rng.standard_normal(layer.params["weight"].shape)
    if bias:
        layer.params["bias"] = rng.standard_normal(out_channels)
    x = rng.standard_normal(shape)
    xt = tensor(x, grad=True)
    wt = tensor(layer.params["weight"], grad=True)
    bt = tensor(layer.params["bias"], grad=True) if bias else None
    if torch_raises(lambda: F.conv2d(xt, wt, bt, stride, padding)):
        event("input smaller than the kernel: both reject it")
        with pytest.raises(ValueError, match="smaller than"):
            layer.forward(x)
        return
    yt = F.conv2d(xt, wt, bt, stride, padding)
    y = layer.forward(x)
    assert_close(y, yt, "forward")
    assert_backward_matches(layer, yt, xt, rng, weight=wt, bias=bt)


# -- pooling ----------------------------------------------------------------------

@settings(max_examples=250)
@given(shape=nchw(), geometry=window_geometry(), ceil_mode=st.booleans(), seed=SEEDS)
@example(shape=(1, 1, 5, 5), geometry=((2, 2), (2, 2), (1, 1)), ceil_mode=True, seed=0)
@example(shape=(2, 3, 2, 1), geometry=((3, 4), (1, 1), (0, 0)), ceil_mode=True, seed=0)
def test_max_pool2d_matches_torch(shape, geometry, ceil_mode, seed):
    rng = np.random.default_rng(seed)
    kernel, stride, padding = geometry
    layer = MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    x = rng.standard_normal(shape)
    xt = tensor(x, grad=True)

    def reference():
        return F.max_pool2d(xt, kernel, stride, padding, dilation=1, ceil_mode=ceil_mode)

    if torch_raises(reference):
        event("input smaller than the window: both reject it")
        with pytest.raises(ValueError):
            layer.forward(x)
        return
    yt = reference()
    y = layer.forward(x)
    assert y.shape == tuple(yt.shape)
    assert_close(y, yt, "forward")
    assert_backward_matches(layer, yt, xt, rng)


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", [
    (3, 2, 0, True), (3, 2, 1, False), (2, 1, 1, False), ((2, 3), (1, 2), (1, 1), True)])
def test_max_pool2d_ties_route_the_gradient_like_torch(kernel, stride, padding, ceil_mode):
    """Values from {0, 1, 2}: most windows hold a tied maximum, which must get the
    whole gradient at the first offset in row-major order, as in PyTorch."""
    x = np.random.default_rng(0).integers(0, 3, (2, 3, 9, 8)).astype(np.float64)
    layer = MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    xt = tensor(x, grad=True)
    yt = F.max_pool2d(xt, kernel, stride, padding, ceil_mode=ceil_mode)
    assert_close(layer.forward(x), yt, "forward")
    assert_backward_matches(layer, yt, xt, np.random.default_rng(1))


def test_max_pool2d_ceil_mode_output_rule_matches_torch():
    """Exhaustive on small sizes: minicnn's output size is PyTorch's, including the
    rule that drops a ceil-mode window starting in the right padding."""
    for size in range(1, 10):
        for k in range(1, 5):
            for s in range(1, 4):
                for p in range(0, k // 2 + 1):
                    x = np.zeros((1, 1, size, size))
                    try:
                        expected = F.max_pool2d(torch.zeros(1, 1, size, size), k, s, p,
                                                ceil_mode=True).shape
                    except RuntimeError:
                        with pytest.raises(ValueError):
                            MaxPool2d(k, s, p, ceil_mode=True).forward(x)
                        continue
                    got = MaxPool2d(k, s, p, ceil_mode=True).forward(x).shape
                    assert got == tuple(expected), (size, k, s, p)


@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_pool_padding_over_half_kernel_is_rejected_like_torch(cls):
    fn = F.max_pool2d if cls is MaxPool2d else F.avg_pool2d
    with pytest.raises(RuntimeError):
        fn(torch.zeros(1, 1, 8, 8), 3, 1, 2)
    with pytest.raises(ValueError, match="at most half"):
        cls(3, 1, 2)


@settings(max_examples=200)
@given(shape=nchw(), geometry=window_geometry(), seed=SEEDS)
@example(shape=(1, 2, 7, 7), geometry=((3, 3), (2, 2), (1, 1)), seed=0)
def test_avg_pool2d_matches_torch(shape, geometry, seed):
    rng = np.random.default_rng(seed)
    kernel, stride, padding = geometry
    layer = AvgPool2d(kernel, stride, padding)
    x = rng.standard_normal(shape)
    xt = tensor(x, grad=True)

    def reference():
        return F.avg_pool2d(xt, kernel, stride, padding, ceil_mode=False,
                            count_include_pad=True)

    if torch_raises(reference):
        event("input smaller than the window: both reject it")
        with pytest.raises(ValueError):
            layer.forward(x)
        return
    yt = reference()
    y = layer.forward(x)
    assert_close(y, yt, "forward")
    assert_backward_matches(layer, yt, xt, rng)


def test_avg_pool2d_default_stride_is_kernel():
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 9))
    assert_close(AvgPool2d(3).forward(x), F.avg_pool2d(tensor(x), 3))
    assert_close(MaxPool2d((2, 3)).forward(x), F.max_pool2d(tensor(x), (2, 3)))


@settings(max_examples=30)
@given(shape=nchw(), seed=SEEDS)
def test_global_avg_pool_matches_adaptive_avg_pool(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    layer = GlobalAvgPool2d()
    xt = tensor(x, grad=True)
    yt = F.adaptive_avg_pool2d(xt, 1).flatten(1)
    y = layer.forward(x)
    assert_close(y, yt, "forward")
    assert_backward_matches(layer, yt, xt, rng)


# -- batch normalization ----------------------------------------------------------

@settings(max_examples=120)
@example(shape=(1, 2, 1, 1), momentum=0.1, eps=1e-5, steps=1, seed=0)
@given(shape=nchw(max_size=8), momentum=st.sampled_from([0.1, 0.1, 0.3]),
       eps=st.sampled_from([1e-5, 1e-3]), steps=st.integers(1, 3), seed=SEEDS)
def test_batch_norm_training_matches_torch(shape, momentum, eps, steps, seed):
    rng = np.random.default_rng(seed)
    c = shape[1]
    layer = BatchNorm2d(c, eps=eps, momentum=momentum, dtype=F64).train()
    layer.params["weight"] = rng.uniform(0.5, 2.0, c)
    layer.params["bias"] = rng.standard_normal(c)
    layer.buffers["running_mean"] = rng.standard_normal(c)
    layer.buffers["running_var"] = rng.uniform(0.5, 2.0, c)
    wt, bt = tensor(layer.params["weight"], True), tensor(layer.params["bias"], True)
    rm, rv = tensor(layer.buffers["running_mean"]), tensor(layer.buffers["running_var"])
    for step in range(steps):
        x = rng.standard_normal(shape) * rng.uniform(0.5, 3.0) + rng.uniform(-2, 2)
        xt = tensor(x, grad=True)

        def reference():
            return F.batch_norm(xt, rm, rv, wt, bt, training=True, momentum=momentum, eps=eps)

        if shape[0] * shape[2] * shape[3] == 1:  # one value per channel
            event("one value per channel: both reject it")
            with pytest.raises(ValueError):
                reference()
            with pytest.raises(ValueError, match="more than one value per channel"):
                layer.forward(x)
            return
        yt = reference()
        y = layer.forward(x)
        assert_close(y, yt, f"forward, step {step}")
        assert_close(layer.buffers["running_mean"], rm, f"running_mean, step {step}")
        assert_close(layer.buffers["running_var"], rv, f"running_var, step {step}")
        wt.grad = bt.grad = None
        assert_backward_matches(layer, yt, xt, rng, f", step {step}", weight=wt, bias=bt)


@settings(max_examples=40)
@given(shape=nchw(max_size=6), eps=st.sampled_from([1e-5, 1e-2]), seed=SEEDS)
def test_batch_norm_eval_matches_torch(shape, eps, seed):
    rng = np.random.default_rng(seed)
    c = shape[1]
    layer = BatchNorm2d(c, eps=eps, dtype=F64).eval()
    layer.params["weight"] = rng.uniform(-2.0, 2.0, c)
    layer.params["bias"] = rng.standard_normal(c)
    layer.buffers["running_mean"] = rng.standard_normal(c)
    layer.buffers["running_var"] = rng.uniform(0.1, 3.0, c)
    before = {k: v.copy() for k, v in layer.buffers.items()}
    wt, bt = tensor(layer.params["weight"], True), tensor(layer.params["bias"], True)
    rm, rv = tensor(layer.buffers["running_mean"]), tensor(layer.buffers["running_var"])
    x = rng.standard_normal(shape)
    xt = tensor(x, grad=True)
    yt = F.batch_norm(xt, rm, rv, wt, bt, training=False, eps=eps)
    y = layer.forward(x)
    assert_close(y, yt, "forward")
    for key, value in before.items():  # eval never moves the running statistics
        np.testing.assert_array_equal(layer.buffers[key], value)
    assert_backward_matches(layer, yt, xt, rng, weight=wt, bias=bt)


# -- linear, relu, loss -----------------------------------------------------------

@settings(max_examples=40)
@given(n=st.integers(1, 4), fin=st.integers(1, 12), fout=st.integers(1, 12),
       bias=st.booleans(), seed=SEEDS)
def test_linear_matches_torch(n, fin, fout, bias, seed):
    rng = np.random.default_rng(seed)
    layer = Linear(fin, fout, bias=bias, dtype=F64)
    layer.params["weight"] = rng.standard_normal((fout, fin))
    if bias:
        layer.params["bias"] = rng.standard_normal(fout)
    x = rng.standard_normal((n, fin))
    xt, wt = tensor(x, True), tensor(layer.params["weight"], True)
    bt = tensor(layer.params["bias"], True) if bias else None
    yt = F.linear(xt, wt, bt)
    y = layer.forward(x)
    assert_close(y, yt, "forward")
    assert_backward_matches(layer, yt, xt, rng, weight=wt, bias=bt)


@settings(max_examples=40)
@given(shape=nchw(), with_zeros=st.booleans(), seed=SEEDS)
def test_relu_modes_match_torch(shape, with_zeros, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    if with_zeros:  # exact zeros in x and in the upstream gradient: the kinks
        x, g = np.round(2 * x) / 2, np.round(2 * g) / 2
    xt = tensor(x, grad=True)
    yt = F.relu(xt)
    yt.backward(tensor(g))
    true_grad = xt.grad
    gt = tensor(g)
    expected = {"normal": true_grad, "guided": true_grad * (gt > 0),
                "deconv": gt.clamp(min=0)}
    for mode, reference in expected.items():
        layer = ReLU(mode)
        assert_close(layer.forward(x), yt, f"{mode} forward")
        assert_close(layer.backward(g), reference, f"{mode} backward")


def test_flatten_matches_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    layer = Flatten()
    xt = tensor(x, True)
    yt = torch.flatten(xt, 1)
    y = layer.forward(x)
    assert_close(y, yt)
    g = rng.standard_normal(y.shape)
    yt.backward(tensor(g))
    assert_close(layer.backward(g), xt.grad)


@settings(max_examples=40)
@given(n=st.integers(1, 8), k=st.integers(1, 10),
       scale=st.sampled_from([0.1, 1.0, 10.0, 100.0, 1000.0]), seed=SEEDS)
def test_cross_entropy_matches_torch(n, k, scale, seed):
    rng = np.random.default_rng(seed)
    logits = scale * rng.standard_normal((n, k))
    labels = rng.integers(0, k, n)
    zt = tensor(logits, True)
    lt = F.cross_entropy(zt, torch.tensor(labels))
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(logits, labels)
    assert np.isfinite(loss)
    assert_close(np.asarray(loss), lt, "loss")
    lt.backward()
    assert_close(loss_fn.backward(), zt.grad, "dlogits")
    assert_close(softmax(logits), torch.softmax(tensor(logits), dim=1), "softmax")


# -- optimizers -------------------------------------------------------------------

def small_net(rng):
    net = Network([
        ("conv", Conv2d(2, 3, 3, padding=1, rng=rng, dtype=F64)),
        ("bn", BatchNorm2d(3, dtype=F64)),
        ("flat", Flatten()),
        ("fc", Linear(3 * 2 * 2, 4, rng=rng, dtype=F64)),
    ])
    for layer, key in net.parameters():
        layer.params[key] = rng.standard_normal(layer.params[key].shape)
    return net


def run_optimizers(make_ours, make_theirs, steps, seed):
    rng = np.random.default_rng(seed)
    net = small_net(rng)
    params = net.parameters()
    theirs = [torch.tensor(layer.params[key].copy(), requires_grad=True) for layer, key in params]
    ours_opt, theirs_opt = make_ours(net), make_theirs(theirs)
    for step in range(steps):
        for (layer, key), t in zip(params, theirs):
            g = rng.standard_normal(layer.params[key].shape)
            layer.grads[key] = g
            t.grad = torch.tensor(g.copy())
        ours_opt.step()
        theirs_opt.step()
        for (layer, key), t in zip(params, theirs):
            assert_close(layer.params[key], t, f"{layer.name}.{key} after step {step + 1}")


@settings(max_examples=25)
@given(lr=st.sampled_from([1e-3, 0.05, 0.5]), momentum=st.sampled_from([0.0, 0.5, 0.9]),
       weight_decay=st.sampled_from([0.0, 1e-4, 0.1]), steps=st.integers(1, 5), seed=SEEDS)
def test_sgd_matches_torch(lr, momentum, weight_decay, steps, seed):
    run_optimizers(lambda net: SGD(net, lr=lr, momentum=momentum, weight_decay=weight_decay),
                   lambda ps: torch.optim.SGD(ps, lr=lr, momentum=momentum,
                                              weight_decay=weight_decay),
                   steps, seed)


@settings(max_examples=25)
@given(lr=st.sampled_from([1e-3, 0.01, 0.1]),
       betas=st.sampled_from([(0.9, 0.999), (0.5, 0.9), (0.0, 0.99)]),
       eps=st.sampled_from([1e-8, 1e-3]), weight_decay=st.sampled_from([0.0, 0.01]),
       steps=st.integers(1, 5), seed=SEEDS)
def test_adam_matches_torch(lr, betas, eps, weight_decay, steps, seed):
    run_optimizers(lambda net: Adam(net, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay),
                   lambda ps: torch.optim.Adam(ps, lr=lr, betas=betas, eps=eps,
                                               weight_decay=weight_decay),
                   steps, seed)


def test_optimizer_requires_gradients():
    net = small_net(np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="no gradient"):
        SGD(net).step()
    with pytest.raises(ValueError, match="learning rate"):
        Adam(net, lr=0)
