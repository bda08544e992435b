"""Numerical gradient checks: is a hand-written backward pass right?

* :func:`numerical_gradient` perturbs one entry at a time by +-h (centered
  differences, error O(h^2)); use float64, where h = 1e-5 gives about ten
  correct digits.
* :func:`rel_error` compares two gradients as ``|a - b| / (|a| + |b|)`` in the
  Euclidean norm: about 1e-10 when a formula is right, 1e-2 or more when wrong.
* :func:`directional_check` is the cheap check for a large network: along one
  random direction v, the analytic ``<grad, v>`` must equal the numerical
  ``(f(x + h v) - f(x - h v)) / 2h``: two forward passes instead of one per entry.
* :func:`check_all` runs every layer and backward mode; ``minicnn gradcheck``
  prints it as a table.
"""
import numpy as np

from .backend import get_array_module
from .layers import (Conv2d, ReLU, MaxPool2d, AvgPool2d, GlobalAvgPool2d, BatchNorm2d, Linear,
                     Flatten, ChannelPadShortcut)
from .layers.base import as_generator
from .network import Network, Residual

TOLERANCE = 1e-7
"""A single layer passes when its relative error in float64 is below this."""


def numerical_gradient(f, x, h=1e-5):
    """Centered-difference gradient of the scalar function ``f`` at ``x``.

    ``x`` is perturbed in place one entry at a time and restored; the result has
    the shape of ``x``.
    """
    xp = get_array_module(x)
    grad = xp.zeros(x.shape, dtype=np.float64)
    if not x.flags.c_contiguous:
        raise ValueError("numerical_gradient perturbs x in place and needs a C-contiguous array; "
                         "pass x.copy()")
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
    for i in range(x.size):
        old = flat_x[i].item()
        flat_x[i] = old + h
        f_plus = float(f(x))
        flat_x[i] = old - h
        f_minus = float(f(x))
        flat_x[i] = old
        flat_grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def rel_error(a, b):
    """Normwise relative error ``||a - b|| / (||a|| + ||b||)`` (0 when both are 0)."""
    xp = get_array_module(a, b)
    a, b = xp.asarray(a, dtype=np.float64), xp.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} and {b.shape}")
    scale = float(xp.linalg.norm(a) + xp.linalg.norm(b))
    if scale == 0.0:
        return 0.0
    return float(xp.linalg.norm(a - b)) / scale


def directional_check(f, arrays, grads, rng=None, h=1e-5):
    """Compare analytic and numerical derivatives of ``f`` along a random direction.

    ``arrays`` are the arrays ``f`` reads (perturbed in place, then restored),
    ``grads`` the analytic gradients of ``f`` with respect to each. Returns the
    relative error between ``sum <grad_i, v_i>`` and the centered difference.
    """
    rng = as_generator(rng)
    directions = []
    for a in arrays:
        xp = get_array_module(a)
        v = rng.standard_normal(a.shape)
        directions.append(xp.asarray(v, dtype=a.dtype))
    norm = np.sqrt(sum(float((v * v).sum()) for v in directions))
    directions = [v / norm for v in directions]
    analytic = sum(float((g * v).sum()) for g, v in zip(grads, directions))

    def shifted(step):
        for a, v in zip(arrays, directions):
            a += step * v
        value = float(f())
        for a, v in zip(arrays, directions):
            a -= step * v
        return value

    numerical = (shifted(h) - shifted(-h)) / (2 * h)
    return rel_error(np.array([analytic]), np.array([numerical]))


def check_layer(layer, x, rng=None, upstream=None):
    """Check a layer's input and parameter gradients against numerical ones.

    The scalar checked is ``sum(forward(x) * dout)`` for a random ``dout``;
    returns ``{'x': err, 'weight': err, ...}``.
    """
    rng = as_generator(rng)
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape) if upstream is None else upstream
    dout = get_array_module(x).asarray(dout, dtype=x.dtype)
    dx = layer.backward(dout)
    analytic = {"x": dx, **{k: layer.grads[k] for k in layer.params}}
    f = lambda _: (layer.forward(x) * dout).sum()  # noqa: E731
    errors = {"x": rel_error(dx, numerical_gradient(f, x))}
    for key, p in layer.params.items():
        errors[key] = rel_error(analytic[key], numerical_gradient(f, p))
    return errors


def check_relu_rule(mode, x, dout):
    """Check the guided and deconv rules against the gradients they are equal to.

    They are not gradients of the ReLU, but each equals the true gradient of a
    surrogate: guided(dout) is the gradient of ``sum(relu(x) * max(dout, 0))``
    and deconv(dout) that of ``sum(x * max(dout, 0))``.
    """
    relu = ReLU(mode)
    relu.forward(x)
    rule = relu.backward(dout)
    positive = dout * (dout > 0)
    if mode == "guided":
        surrogate = lambda z: (z * (z > 0) * positive).sum()  # noqa: E731
    elif mode == "deconv":
        surrogate = lambda z: (z * positive).sum()  # noqa: E731
    else:
        surrogate = lambda z: (z * (z > 0) * dout).sum()  # noqa: E731
    return rel_error(rule, numerical_gradient(surrogate, x.copy()))


def toy_residual_network(rng=None, dtype=np.float64, num_classes=5):
    """A small residual net that uses every layer: the directional check's subject."""
    rng = as_generator(rng)
    conv = lambda i, o, k, s=1, p=0, b=False: Conv2d(i, o, k, s, p, bias=b, rng=rng, dtype=dtype)  # noqa: E731,E501
    return Network([
        ("conv1", conv(3, 8, 3, 1, 1, True)),
        ("bn1", BatchNorm2d(8, dtype=dtype)),
        ("relu1", ReLU()),
        ("pool1", MaxPool2d(3, 2, ceil_mode=True)),
        ("block1", Residual(
            branch=[("conv_a", conv(8, 16, 3, 2, 1)), ("bn_a", BatchNorm2d(16, dtype=dtype)),
                    ("relu_a", ReLU()), ("conv_b", conv(16, 16, 3, 1, 1)),
                    ("bn_b", BatchNorm2d(16, dtype=dtype))],
            shortcut=[("proj", conv(8, 16, 1, 2)), ("bn_proj", BatchNorm2d(16, dtype=dtype))])),
        ("block2", Residual(
            branch=[("conv_a", conv(16, 16, 3, 1, 1)), ("relu_a", ReLU()),
                    ("conv_b", conv(16, 16, 3, 1, 1))])),
        ("block3", Residual(
            branch=[("conv_a", conv(16, 24, 3, 1, 1)), ("relu_a", ReLU()),
                    ("conv_b", conv(24, 24, 1))],
            shortcut=[("pad", ChannelPadShortcut(16, 24, stride=1))])),
        ("pool2", AvgPool2d(2, 1)),
        ("gap", GlobalAvgPool2d()),
        ("fc", Linear(24, num_classes, rng=rng, dtype=dtype)),
    ])


def check_network(net, x, rng=None, h=1e-5):
    """Directional check of a whole network on input and every parameter."""
    rng = as_generator(rng)
    out = net.forward(x)
    dout = get_array_module(x).asarray(rng.standard_normal(out.shape), dtype=x.dtype)
    dx = net.backward(dout)
    params = net.parameters()
    arrays = [x] + [layer.params[key] for layer, key in params]
    grads = [dx] + [layer.grads[key] for layer, key in params]
    return directional_check(lambda: (net.forward(x) * dout).sum(), arrays, grads, rng, h)


def _cases(rng):
    """(name, detail, layer factory, input shape) for every single-layer check."""
    f64 = np.float64
    conv = lambda *a, **k: (lambda: Conv2d(*a, rng=rng, dtype=f64, **k))  # noqa: E731
    bn = lambda train: (lambda: BatchNorm2d(4, dtype=f64).train() if train else _eval_bn(rng))  # noqa: E731,E501
    return [
        ("Conv2d", "3x3 stride 1 pad 1", conv(3, 4, 3, 1, 1), (2, 3, 6, 6)),
        ("Conv2d", "3x3 stride 2 pad 0", conv(3, 4, 3, 2, 0), (2, 3, 7, 7)),
        ("Conv2d", "7x7 stride 2 pad 3", conv(2, 3, 7, 2, 3), (1, 2, 9, 9)),
        ("Conv2d", "1x1 stride 1, no bias", conv(4, 3, 1, bias=False), (2, 4, 5, 5)),
        ("Conv2d", "1x1 stride 2", conv(4, 3, 1, 2), (2, 4, 5, 5)),
        ("Conv2d", "2x3 kernel, stride (2,1)", conv(3, 2, (2, 3), (2, 1), (1, 0)), (1, 3, 6, 5)),
        ("MaxPool2d", "3x3 stride 2 floor", lambda: MaxPool2d(3, 2), (2, 3, 8, 8)),
        ("MaxPool2d", "3x3 stride 2 ceil", lambda: MaxPool2d(3, 2, ceil_mode=True), (2, 3, 8, 8)),
        ("MaxPool2d", "3x3 stride 2 pad 1", lambda: MaxPool2d(3, 2, 1), (2, 3, 7, 7)),
        ("MaxPool2d", "2x2 stride 2", lambda: MaxPool2d(2), (2, 3, 6, 6)),
        ("AvgPool2d", "3x3 stride 2 pad 1", lambda: AvgPool2d(3, 2, 1), (2, 3, 7, 7)),
        ("AvgPool2d", "2x2 stride 2", lambda: AvgPool2d(2), (2, 3, 6, 6)),
        ("GlobalAvgPool2d", "", GlobalAvgPool2d, (2, 3, 4, 5)),
        ("BatchNorm2d", "train", bn(True), (3, 4, 3, 3)),
        ("BatchNorm2d", "eval", bn(False), (3, 4, 3, 3)),
        ("Linear", "", lambda: Linear(6, 4, rng=rng, dtype=f64), (3, 6)),
        ("Flatten", "", Flatten, (2, 3, 2, 2)),
        ("ChannelPadShortcut", "stride 2", lambda: ChannelPadShortcut(4, 8), (2, 4, 6, 6)),
    ]


def _eval_bn(rng):
    bn = BatchNorm2d(4, dtype=np.float64)
    bn.params["weight"] = rng.uniform(0.5, 1.5, 4)
    bn.params["bias"] = rng.standard_normal(4)
    bn.buffers["running_mean"] = rng.standard_normal(4)
    bn.buffers["running_var"] = rng.uniform(0.5, 2.0, 4)
    return bn.eval()


def _away_from_zero(rng, shape):
    """Inputs whose magnitude is at least 0.1, so +-h never crosses a ReLU kink."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (0.1 + np.abs(x))


def check_all(seed=0):
    """Run every check; returns rows ``(layer, mode, rel_error, passed)``."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, detail, make, shape in _cases(rng):
        layer = make()
        for key in layer.params:  # move biases and BN's affine away from 0 and 1
            layer.params[key] = layer.params[key] + 0.1 * rng.standard_normal(
                layer.params[key].shape)
        errors = check_layer(layer, rng.standard_normal(shape), rng)
        worst = max(errors.values())
        rows.append((name, detail, worst, worst < TOLERANCE))
    for mode in ("normal", "guided", "deconv"):
        x = _away_from_zero(rng, (2, 3, 4, 4))
        err = check_relu_rule(mode, x, rng.standard_normal(x.shape))
        rows.append(("ReLU", mode, err, err < TOLERANCE))
    net = toy_residual_network(rng)
    for train in (True, False):
        (net.train() if train else net.eval())
        err = check_network(net, rng.standard_normal((2, 3, 12, 12)), rng)
        rows.append(("residual network", "directional, " + ("train" if train else "eval"),
                     err, err < 1e-6))
    return rows


def format_table(rows):
    lines = [f"{'layer':<20} {'mode':<28} {'rel. error':>10}  result",
             "-" * 68]
    for name, mode, err, passed in rows:
        lines.append(f"{name:<20} {mode:<28} {err:>10.2e}  {'pass' if passed else 'FAIL'}")
    failed = sum(not r[3] for r in rows)
    lines.append("-" * 68)
    lines.append(f"{len(rows) - failed} passed, {failed} failed")
    return "\n".join(lines)
