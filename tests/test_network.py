"""The container API: stop_at, capture, injected gradients, state dicts, casts, devices."""
import numpy as np
import pytest

from minicnn import BatchNorm2d, ShapeError
from minicnn.gradcheck import numerical_gradient, rel_error, toy_residual_network

F64 = np.float64
SHAPE = (2, 3, 8, 8)


def make_net(seed=0, dtype=F64):
    """The toy residual net with non-trivial biases, BN affines and running stats."""
    rng = np.random.default_rng(seed)
    net = toy_residual_network(rng, dtype=dtype)
    for layer, key in net.parameters():
        layer.params[key] = (layer.params[key]
                             + 0.2 * rng.standard_normal(layer.params[key].shape)).astype(dtype)
    for layer in net.layers():
        if isinstance(layer, BatchNorm2d):
            c = layer.num_features
            layer.buffers["running_mean"] = rng.standard_normal(c).astype(dtype)
            layer.buffers["running_var"] = rng.uniform(0.5, 2.0, c).astype(dtype)
    return net


def by_hand(net, x, upto):
    """Run the toy network's layers one by one, returning every intermediate output."""
    L = net.__getitem__
    acts = {}

    def f(name, *inputs):
        acts[name] = L(name).forward(*inputs)
        return acts[name]

    h = f("pool1", f("relu1", f("bn1", f("conv1", x))))
    a = f("block1.bn_b", f("block1.conv_b", f("block1.relu_a", f("block1.bn_a",
                                                                 f("block1.conv_a", h)))))
    s = f("block1.bn_proj", f("block1.proj", h))
    h = acts["block1"] = f("block1.relu", f("block1.add", a, s))
    a = f("block2.conv_b", f("block2.relu_a", f("block2.conv_a", h)))
    h = acts["block2"] = f("block2.relu", f("block2.add", a, h))
    a = f("block3.conv_b", f("block3.relu_a", f("block3.conv_a", h)))
    s = f("block3.pad", h)
    h = acts["block3"] = f("block3.relu", f("block3.add", a, s))
    f("fc", f("gap", f("pool2", h)))
    assert upto in acts
    return acts


@pytest.fixture
def net():
    return make_net()


@pytest.fixture
def x():
    return np.random.default_rng(42).standard_normal(SHAPE)


def test_names_are_dotted_and_in_forward_order(net):
    names = net.names()
    assert names[:5] == ["conv1", "bn1", "relu1", "pool1", "block1"]
    assert names.index("block1.conv_a") < names.index("block1.proj") < names.index("block1.add")
    assert names.index("block1.add") < names.index("block1.relu") < names.index("block2")
    assert names[-1] == "fc"
    assert net["block1.bn_proj"].name == "block1.bn_proj"


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("stop_at", ["conv1", "pool1", "block1.relu_a", "block1.bn_proj",
                                     "block1.add", "block1", "block3.pad", "gap", "fc"])
def test_stop_at_returns_that_layers_output(net, x, stop_at, mode):
    getattr(net, mode)()
    out = net.forward(x, stop_at=stop_at)
    expected = by_hand(net, x, stop_at)[stop_at]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    assert out.shape == expected.shape


def test_stop_at_does_not_run_later_layers(net, x):
    net.forward(x, stop_at="block1.conv_a")
    assert net["block1.bn_a"].cache is None  # never ran
    assert net["fc"].cache is None


def test_full_forward_matches_by_hand(net, x):
    net.eval()
    np.testing.assert_allclose(net.forward(x), by_hand(net, x, "fc")["fc"], rtol=1e-12)
    np.testing.assert_allclose(net(x), by_hand(net, x, "fc")["fc"], rtol=1e-12)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_forward_without_cache_keeps_nothing_for_backward(net, x, mode):
    getattr(net, mode)()
    expected = by_hand(make_net().eval(), x, "fc") if mode == "eval" else None
    # conv1 feeds a batch norm, bn1 and block1.add a ReLU: working in place, those
    # would overwrite the captured arrays.
    names = ["conv1", "bn1", "block1.add", "block2", "block3.conv_a"]
    x_before = x.copy()
    out, acts = net.forward(x, capture=names, cache=False)
    np.testing.assert_array_equal(x, x_before)  # the caller's input is never overwritten
    if expected is not None:
        np.testing.assert_allclose(out, expected["fc"], rtol=1e-12)
        for name in names:
            np.testing.assert_allclose(acts[name], expected[name], rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(net.forward(x, cache=False), expected["fc"], rtol=1e-12)
    assert all(layer.cache is None for layer in net.layers())
    with pytest.raises(RuntimeError, match="cache=False"):
        net.backward(np.ones_like(out))
    net.forward(x)  # the default keeps the caches again, and backward runs
    assert net.backward(np.ones_like(out), param_grads=False).shape == x.shape


def test_inference_in_place_spares_inputs_that_others_hold():
    """A ReLU first (the caller's x) and first in a residual branch (x is also the
    identity shortcut's): neither may be overwritten by an inference pass."""
    from minicnn import Network, ReLU, Residual
    rng = np.random.default_rng(3)
    bn = BatchNorm2d(3, dtype=F64)
    bn.params["weight"] = rng.uniform(0.5, 2.0, 3)
    bn.buffers["running_mean"] = rng.standard_normal(3)
    block = Residual([("relu_a", ReLU()), ("bn_a", bn)], name="block")
    net = Network([("relu", ReLU()), ("bn", BatchNorm2d(3, dtype=F64)), ("block", block)])
    net.eval()
    x = rng.standard_normal((2, 3, 4, 4))
    before = x.copy()
    expected = net.forward(x)
    np.testing.assert_array_equal(net.forward(x, cache=False), expected)
    np.testing.assert_array_equal(x, before)


def test_capture_returns_named_activations(net, x):
    net.eval()
    names = ["conv1", "block1.add", "block2", "block3.relu_a", "gap"]
    out, acts = net.forward(x, capture=names)
    reference = by_hand(net, x, "fc")
    np.testing.assert_allclose(out, reference["fc"], rtol=1e-12)
    assert set(acts) == set(names)
    for name in names:
        np.testing.assert_allclose(acts[name], reference[name], rtol=1e-12, atol=1e-14)
    out2, acts2 = net.forward(x, stop_at="block2", capture="pool1")  # a str is one name
    assert set(acts2) == {"pool1"}
    np.testing.assert_allclose(out2, reference["block2"], rtol=1e-12)
    np.testing.assert_allclose(acts2["pool1"], reference["pool1"], rtol=1e-12)


def test_capture_after_stop_at_raises(net, x):
    with pytest.raises(ValueError, match=r"block2.*after stop_at='block1'"):
        net.forward(x, stop_at="block1", capture=["conv1", "block2"])


def test_capture_of_the_stop_layer_itself(net, x):
    out, acts = net.forward(x, stop_at="block1.add", capture=["block1.add"])
    np.testing.assert_array_equal(out, acts["block1.add"])


# -- backward ------------------------------------------------------------------

def grads_of(net):
    return {f"{layer.name}.{k}": v.copy() for layer in net.layers() for k, v in layer.grads.items()}


def test_backward_is_linear_in_injected_gradients(net, x):
    net.train()
    out, acts = net.forward(x, capture=["pool1", "block1.add", "block2"])
    rng = np.random.default_rng(1)
    g = {name: rng.standard_normal(a.shape) for name, a in acts.items()}
    dout = rng.standard_normal(out.shape)

    def backward(**kwargs):
        net.zero_grad()
        return net.backward(**kwargs), grads_of(net)

    dx_all, p_all = backward(dout=dout, inject=g)
    pieces = [backward(dout=dout)] + [backward(inject={name: g[name]}) for name in g]
    np.testing.assert_allclose(dx_all, sum(dx for dx, _ in pieces), rtol=1e-10, atol=1e-12)
    for key in p_all:
        total = sum(p[key] for _, p in pieces if key in p)
        np.testing.assert_allclose(p_all[key], total, rtol=1e-10, atol=1e-12, err_msg=key)
    # Parameters above every injection point get no gradient.
    _, only_pool = backward(inject={"pool1": g["pool1"]})
    assert "fc.weight" not in only_pool and "conv1.weight" in only_pool
    # And a gradient injected twice counts twice.
    dx_two, _ = backward(dout=dout, inject={"fc": dout})
    np.testing.assert_allclose(dx_two, 2 * pieces[0][0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["conv1", "pool1", "block1.relu_a", "block1.bn_proj",
                                  "block1.add", "block1", "block3.pad", "block3.relu"])
def test_injection_equals_numerical_gradient(net, name):
    """dL/dx for L = sum(activation(name) * g), injected at ``name``, vs centered differences."""
    net.eval()  # fixed statistics: BN couples the batch only in train mode, checked below
    x = np.random.default_rng(5).standard_normal((1, 3, 6, 6))
    _, acts = net.forward(x, capture=[name])
    g = np.random.default_rng(6).standard_normal(acts[name].shape)
    dx = net.backward(inject={name: g})
    numeric = numerical_gradient(lambda z: (net.forward(z, stop_at=name) * g).sum(), x.copy())
    assert rel_error(dx, numeric) < 1e-7


def test_injection_equals_numerical_gradient_in_train_mode(net):
    net.train()
    x = np.random.default_rng(5).standard_normal((2, 3, 6, 6))
    _, acts = net.forward(x, capture=["block1.add"])
    g = np.random.default_rng(6).standard_normal(acts["block1.add"].shape)
    dx = net.backward(inject={"block1.add": g})
    numeric = numerical_gradient(lambda z: (net.forward(z, stop_at="block1.add") * g).sum(),
                                 x.copy())
    assert rel_error(dx, numeric) < 1e-7


def test_dout_after_stop_at_is_the_stop_layers_gradient(net, x):
    net.eval()
    out = net.forward(x, stop_at="block2")
    g = np.random.default_rng(2).standard_normal(out.shape)
    dx_stop = net.backward(g)
    net.forward(x)
    dx_inject = net.backward(inject={"block2": g})
    np.testing.assert_allclose(dx_stop, dx_inject, rtol=1e-12, atol=1e-14)


def test_param_grads_false_leaves_grads_empty_and_same_dx(x):
    net = make_net()
    out = net.forward(x)
    dout = np.random.default_rng(3).standard_normal(out.shape)
    dx_no_params = net.backward(dout, param_grads=False)
    assert all(layer.grads == {} for layer in net.layers())
    assert all(layer.param_grads for layer in net.layers())  # the flag is restored
    dx = net.backward(dout)
    np.testing.assert_array_equal(dx_no_params, dx)
    assert all(set(layer.grads) == set(layer.params) for layer in net.layers())


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_input_grad_false_skips_the_first_convolutions_dx_and_keeps_every_param_grad(x, mode,
                                                                                    monkeypatch):
    net = make_net()
    getattr(net, mode)()
    first = net["conv1"]
    out = net.forward(x)
    dout = np.random.default_rng(3).standard_normal(out.shape)
    net.backward(dout)
    wanted = {f"{layer.name}.{k}": g.copy() for layer in net.layers() for k, g in layer.grads.items()}
    calls = []
    real = type(first)._input_grad
    monkeypatch.setattr(first, "_input_grad", lambda *a: calls.append(a) or real(first, *a))
    net.forward(x)
    assert net.backward(dout, input_grad=False) is None
    assert calls == []  # the first layer's dx was never computed
    got = {f"{layer.name}.{k}": g for layer in net.layers() for k, g in layer.grads.items()}
    assert got.keys() == wanted.keys()
    for key, expected in wanted.items():
        np.testing.assert_array_equal(got[key], expected, err_msg=key)
    assert first.input_grad  # the flag is restored
    first.input_grad = False  # a caller's own setting survives a pass that wanted dx
    net.forward(x)
    net.backward(dout)
    assert first.input_grad is False
    first.input_grad = True
    dx, grads = net.backward(dout, input_grad=False, capture=["block1"])
    assert dx is None and grads["block1"].shape == net.forward(x, capture=["block1"])[1][
        "block1"].shape


def test_unknown_names_raise_key_error_with_suggestion(net, x):
    with pytest.raises(KeyError, match=r"did you mean 'conv1'"):
        net.forward(x, stop_at="conv_1")
    with pytest.raises(KeyError, match=r"did you mean 'block1.relu_a'"):
        net.forward(x, capture=["block1.relua"])
    with pytest.raises(KeyError, match=r"unknown layer name 'blok2'.*did you mean 'block2'"):
        net["blok2"]
    net.forward(x)
    with pytest.raises(KeyError, match=r"did you mean 'pool2'"):
        net.backward(inject={"pool_2": np.zeros((2, 24, 1, 1))})
    with pytest.raises(KeyError, match="unknown layer name 'zzz'"):
        net["zzz"]


def test_injection_past_stop_at_raises(net, x):
    net.forward(x, stop_at="block1")
    with pytest.raises(ValueError, match=r"'block2'.*stopped at 'block1'"):
        net.backward(inject={"block2": np.zeros((2, 16, 2, 2))})


def test_wrong_gradient_shape_raises_shape_error_naming_layer_and_shapes(net, x):
    _, acts = net.forward(x, capture=["pool1"])
    expected = acts["pool1"].shape
    with pytest.raises(ShapeError) as info:
        net.backward(inject={"pool1": np.zeros((2, 8, 3, 3))})
    message = str(info.value)
    assert "'pool1'" in message and str((2, 8, 3, 3)) in message and str(expected) in message
    with pytest.raises(ShapeError, match=r"'fc'.*\(2, 4\).*\(2, 5\)"):
        net.backward(np.zeros((2, 4)))


def test_backward_needs_a_gradient_and_a_forward(net, x):
    with pytest.raises(RuntimeError, match="before forward"):
        net.backward(np.zeros((2, 5)))
    net.forward(x)
    with pytest.raises(ValueError, match="needs a gradient"):
        net.backward()


# -- state, casts, devices ----------------------------------------------------------

def test_state_dict_round_trip(x):
    a, b = make_net(seed=0), make_net(seed=1)
    state = a.state_dict()
    assert {"conv1.weight", "conv1.bias", "bn1.running_mean", "bn1.running_var",
            "block1.conv_a.weight", "block1.bn_proj.weight", "fc.bias"} <= set(state)
    assert len(state) == sum(len(l.params) + len(l.buffers) for l in a.layers())
    a.eval(), b.eval()
    assert not np.allclose(a.forward(x), b.forward(x))
    b.load_state_dict(state)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    for key, value in b.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    # A copy, not an alias: changing one network later leaves the other alone.
    a["conv1"].params["weight"] += 1.0
    assert not np.array_equal(a["conv1"].params["weight"], b["conv1"].params["weight"])


def test_load_state_dict_casts_to_the_networks_dtype():
    net = make_net(dtype=np.float32)
    state = {k: v.astype(F64) for k, v in make_net(seed=3).state_dict().items()}
    net.load_state_dict(state)
    assert all(v.dtype == np.float32 for v in net.state_dict().values())
    np.testing.assert_allclose(net["fc"].params["weight"], state["fc.weight"], rtol=1e-6)


def test_load_state_dict_shape_mismatch_names_layer_and_shapes(net):
    state = net.state_dict()
    state["block1.conv_a.weight"] = np.zeros((16, 8, 1, 1))
    with pytest.raises(ShapeError) as info:
        net.load_state_dict(state)
    message = str(info.value)
    assert "block1.conv_a" in message and "weight" in message
    assert "(16, 8, 3, 3)" in message and "(16, 8, 1, 1)" in message


def test_load_state_dict_missing_and_unexpected_keys(net):
    state = net.state_dict()
    del state["bn1.running_var"]
    state["conv9.weight"] = np.zeros(3)
    with pytest.raises(KeyError, match=r"missing 1: bn1.running_var.*unexpected 1: conv9.weight"):
        net.load_state_dict(state)
    before = net["fc"].params["weight"].copy()
    partial = {"fc.weight": np.ones_like(before)}
    net.load_state_dict(partial, strict=False)
    np.testing.assert_array_equal(net["fc"].params["weight"], 1.0)
    np.testing.assert_array_equal(net["bn1"].buffers["running_var"],
                                  make_net()["bn1"].buffers["running_var"])


def test_astype_float64(x):
    net32 = make_net(dtype=np.float32)
    net32.eval()
    y32 = net32.forward(x.astype(np.float32))
    assert y32.dtype == np.float32
    net64 = net32.astype(F64)
    assert net64 is net32
    assert all(v.dtype == F64 for v in net64.state_dict().values())
    y64 = net64.forward(x)
    assert y64.dtype == F64
    np.testing.assert_allclose(y64, y32, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="float32"):
        net64.forward(x.astype(np.float32))
    # astype drops the last pass: no backward through stale caches.
    with pytest.raises(RuntimeError, match="before forward"):
        make_net().astype(np.float32).backward(np.zeros((2, 5)))


def test_to_cpu_keeps_numpy_arrays_and_forgets_the_last_pass(net, x):
    net.eval()
    y = net.forward(x)
    assert net.to("cpu") is net
    assert all(type(v) is np.ndarray for v in net.state_dict().values())
    with pytest.raises(RuntimeError, match="before forward"):
        net.backward(np.zeros_like(y))
    np.testing.assert_array_equal(net.forward(x), y)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        net.to("tpu")


@pytest.mark.gpu
def test_to_gpu_and_back_matches_cpu(x):
    from minicnn import backend
    net = make_net()
    net.eval()
    y_cpu = net.forward(x)
    out = net.forward(x, stop_at="block1")
    g = np.random.default_rng(0).standard_normal(out.shape)
    dx_cpu = net.backward(g)
    grads_cpu = grads_of(net)
    net.to("gpu")
    xg = backend.to_gpu(x)
    y_gpu = net.forward(xg)
    assert backend.device_of(y_gpu) == "gpu"
    np.testing.assert_allclose(backend.to_cpu(y_gpu), y_cpu, rtol=1e-10, atol=1e-12)
    net.forward(xg, stop_at="block1")
    dx_gpu = net.backward(backend.to_gpu(g))
    np.testing.assert_allclose(backend.to_cpu(dx_gpu), dx_cpu, rtol=1e-10, atol=1e-12)
    for key, value in grads_of(net).items():
        np.testing.assert_allclose(backend.to_cpu(value), grads_cpu[key], rtol=1e-10,
                                   atol=1e-12)
    with pytest.raises(TypeError, match="GPU"):
        net.forward(x)
    net.to("cpu")
    np.testing.assert_allclose(net.forward(x), y_cpu, rtol=1e-10, atol=1e-12)


def test_minicnn_never_imports_torch():
    """PyTorch is a test oracle only: importing the engine must not pull it in."""
    import subprocess
    import sys
    code = ("import sys, minicnn, minicnn.gradcheck, minicnn.train, minicnn.cli, minicnn.optim; "
            "minicnn.gradcheck.check_all(); "
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
