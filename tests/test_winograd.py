"""Winograd F(2x2, 3x3) against the textbook convolution.

The reference is im2col followed by one matrix product (minicnn.layers.conv's
readable formulation, written out below), in float64, where Winograd must agree
to 1e-12 relative on random geometries: odd and even sizes, batches of 1-5,
1-40 channels, padding 0-2, with and without the copy that drops the garbage
tiles, and image groups of one to all. The input gradient (the flipped-kernel
correlation) and the weight gradient (F(3x3, 2x2)) are checked through
Conv2d.backward against col2im and the columns' product. In float32,
Winograd stays within 1e-5 of float64 on ResNet-like layers and on the real
CIFAR ResNet-56.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from minicnn.layers import Conv2d, col2im, conv, im2col, winograd
from minicnn.layers.conv import output_size, pad_spatial
from minicnn.layers.winograd import transform_kernel, use_winograd, winograd_correlate

from conftest import CIFAR_DATA, Device


def reference_correlate(x, weight, padding):
    """y = W_mat X by im2col, stride 1: (N, O, Ho, Wo)."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = output_size(h, kh, 1, padding[0]), output_size(w, kw, 1, padding[1])
    cols = im2col(pad_spatial(x, padding), (kh, kw), (1, 1), (ho, wo)).reshape(n, c * kh * kw, -1)
    return (weight.reshape(o, -1) @ cols).reshape(n, o, ho, wo)


def reference_input_grad(weight, padding, dy, x_shape):
    """dx by col2im of W_mat^T dY, stride 1."""
    n, c, h, w = x_shape
    o, _, kh, kw = weight.shape
    ph, pw = padding
    dcols = (weight.reshape(o, -1).T @ dy.reshape(n, o, -1)).reshape(n, c, kh, kw, *dy.shape[2:])
    return col2im(dcols, (h + 2 * ph, w + 2 * pw), (1, 1))[:, :, ph:ph + h, pw:pw + w]


def reference_weight_grad(x, padding, dy):
    """dW = sum_n dY X^T, with X the im2col columns, stride 1."""
    n, c = x.shape[:2]
    o = dy.shape[1]
    cols = im2col(pad_spatial(x, padding), (3, 3), (1, 1), dy.shape[2:]).reshape(n, c * 9, -1)
    return (dy.reshape(n, o, -1) @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(o, c, 3, 3)


def relative_error(ours, ref):
    return float(np.abs(Device.numpy(ours) - ref).max() / max(np.abs(ref).max(), 1e-300))


@pytest.fixture
def always_winograd(monkeypatch):
    """Conv2d takes Winograd for every stride-1 3x3 layer, whatever the size rule says."""
    monkeypatch.setattr(conv, "use_winograd",
                        lambda kernel, stride, *_, **__: kernel == (3, 3) and stride == (1, 1))


@st.composite
def geometries(draw):
    n, c, o = draw(st.integers(1, 5)), draw(st.integers(1, 40)), draw(st.integers(1, 40))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, 3 - 2 * ph), 13))
    w = draw(st.integers(max(1, 3 - 2 * pw), 13))
    compact = draw(st.booleans())  # drop the garbage tiles before the products, or not
    group_bytes = draw(st.sampled_from([1, 20000, 4 << 20]))  # one image, a few, all
    return (n, c, h, w), o, (ph, pw), compact, group_bytes


def check_correlate(dev, geometry, seed):
    shape, o, padding, compact, group_bytes = geometry
    rng = np.random.default_rng(seed)
    x, weight = rng.standard_normal(shape), rng.standard_normal((o, shape[1], 3, 3))
    ref = reference_correlate(x, weight, padding)
    x_dev, weight_dev = dev.array(x), dev.array(weight)
    out = dev.xp.full(ref.shape, np.nan)  # every output pixel must be written
    saved = winograd.COMPACT_ABOVE
    winograd.COMPACT_ABOVE = -1 if compact else np.inf
    try:
        winograd_correlate(x_dev, transform_kernel(weight_dev), padding, out, group_bytes)
    finally:
        winograd.COMPACT_ABOVE = saved
    assert relative_error(out, ref) < 1e-12


@settings(max_examples=120)
@given(geometry=geometries(), seed=st.integers(0, 2**16))
@example(geometry=((2, 3, 1, 1), 2, (1, 1), False, 1), seed=0)     # one pixel: one tile
@example(geometry=((1, 2, 3, 3), 3, (0, 0), True, 1), seed=1)      # no padding, one output
@example(geometry=((3, 5, 7, 8), 4, (2, 1), False, 20000), seed=2)  # ragged last tile row
def test_winograd_matches_im2col_in_float64(geometry, seed):
    check_correlate(Device("cpu"), geometry, seed)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 4), c=st.integers(1, 12), o=st.integers(1, 12),
       h=st.integers(1, 11), w=st.integers(1, 11), padding=st.integers(0, 2),
       group_bytes=st.sampled_from([1, 4 << 20]), seed=st.integers(0, 2**16))
def test_conv2d_through_winograd_matches_reference(always_winograd, n, c, o, h, w, padding,
                                                   group_bytes, seed):
    """Forward, the input gradient (dy correlated with the flipped, channel-swapped
    kernel) and the weight gradient (F(3x3, 2x2)) through Conv2d with Winograd on."""
    if h + 2 * padding < 3 or w + 2 * padding < 3:
        return  # smaller than the kernel: Conv2d refuses it (tests/test_errors.py)
    rng = np.random.default_rng(seed)
    layer = Conv2d(c, o, 3, 1, padding, bias=False, dtype=np.float64)
    layer.group_bytes = group_bytes  # one image at a time, or all
    x = rng.standard_normal((n, c, h, w))
    y_ref = reference_correlate(x, layer.params["weight"], (padding, padding))
    dy = rng.standard_normal(y_ref.shape)
    dx_ref = reference_input_grad(layer.params["weight"], (padding, padding), dy, x.shape)
    assert relative_error(layer.forward(x), y_ref) < 1e-12
    assert relative_error(layer.backward(dy), dx_ref) < 1e-12
    dweight_ref = reference_weight_grad(x, (padding, padding), dy)
    assert relative_error(layer.grads["weight"], dweight_ref) < 1e-12


@pytest.mark.gpu
@pytest.mark.parametrize("geometry", [
    ((2, 3, 8, 8), 4, (1, 1), False, 4 << 20),
    ((3, 17, 7, 9), 33, (2, 0), True, 20000),
    ((1, 1, 1, 1), 2, (1, 1), False, 1),
])
def test_winograd_matches_im2col_on_gpu(geometry):
    check_correlate(Device("gpu"), geometry, 0)


@pytest.mark.parametrize("dev", [pytest.param("cpu", id="numpy"),
                                 pytest.param("gpu", id="cupy", marks=pytest.mark.gpu)])
def test_float32_winograd_close_to_float64_on_resnet_layers(dev, always_winograd):
    """ResNet-like data: He-initialized weights, post-ReLU (non-negative) inputs, the
    channel counts of ResNet-56's stages and ResNet-50's conv5."""
    dev = Device(dev)
    rng = np.random.default_rng(0)
    for channels, size in ((16, 32), (64, 8), (256, 14)):
        layer = Conv2d(channels, channels, 3, 1, 1, bias=False, rng=rng, dtype=np.float64)
        x = np.abs(rng.standard_normal((2, channels, size, size)))
        dy = rng.standard_normal((2, channels, size, size))
        y64, dx64 = layer.forward(x), layer.backward(dy)
        dweight64 = layer.grads["weight"]
        dev.layer(layer.astype(np.float32))
        y32 = layer.forward(dev.array(x.astype(np.float32)))
        dx32 = layer.backward(dev.array(dy.astype(np.float32)))
        assert relative_error(y32, y64) < 1e-5, (channels, size)
        assert relative_error(dx32, dx64) < 1e-5, (channels, size)
        assert relative_error(layer.grads["weight"], dweight64) < 1e-5, (channels, size)


def test_size_rule_sends_resnet_layers_to_winograd():
    """ResNet-50's 3x3 layers at batch 8, and ResNet-56's wider stages at batch 16, go
    through Winograd; other kernels, strides and thin layers do not."""
    for channels, size in ((64, 56), (128, 28), (256, 14), (512, 7)):
        assert use_winograd((3, 3), (1, 1), (channels, channels), (size, size), 8)
    assert use_winograd((3, 3), (1, 1), (64, 64), (8, 8), 16)
    assert not use_winograd((3, 3), (2, 2), (64, 64), (28, 28), 8)
    assert not use_winograd((7, 7), (1, 1), (64, 64), (28, 28), 8)
    assert not use_winograd((3, 3), (1, 1), (3, 64), (28, 28), 8)
    assert not use_winograd((3, 3), (1, 1), (512, 512), (7, 7), 1)  # kernel transform dominates


def test_real_cifar_resnet56_float32_close_to_float64(cifar_resnet_file):
    """The real CIFAR ResNet-56 on 8 real test images (its 32- and 64-channel stages
    through Winograd at this batch): float32 logits within 1e-5 of float64, relative to
    the largest. The input gradient is held to 1e-2 in norm only: of the 300,000 ReLU
    inputs, one lies within float32 rounding of zero here and switches its mask
    (with the wide lowering in every layer the same pixels pass at 6e-6)."""
    import minicnn
    from minicnn.datasets import image_folder

    folder = CIFAR_DATA / "test"
    if not folder.is_dir():
        pytest.skip(f"CIFAR-10 test images not found at {folder}")
    net = minicnn.load(cifar_resnet_file(56))
    images = image_folder(folder, net.metadata["preprocessing"])
    x = next(images.subset(np.arange(0, 10000, 1250)).batches(8))[0]
    assert use_winograd((3, 3), (1, 1), (64, 64), (8, 8), len(x))
    results = {}
    for dtype in (np.float32, np.float64):
        net.astype(dtype)
        logits = net.forward(x.astype(dtype))
        results[dtype] = logits, net.backward(np.ones_like(logits))
    (logits32, dx32), (logits64, dx64) = results[np.float32], results[np.float64]
    assert relative_error(logits32, logits64) < 1e-5
    assert (logits32.argmax(axis=1) == logits64.argmax(axis=1)).all()
    assert np.linalg.norm(dx32 - dx64) / np.linalg.norm(dx64) < 1e-2
