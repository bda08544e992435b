"""The convolution's fast paths against its reference formulation, in float64.

Conv2d runs the wide lowering (flat stride phases, contiguous slices per kernel
offset, dx as the flipped-kernel convolution at stride 1 and as the adjoint of
the wide columns otherwise). The reference is the textbook im2col / col2im of
minicnn.layers.conv, written out here as three lines each. Random geometries
cover strides 1-3, paddings from 0 to past the kernel (where the flipped-kernel
path does not apply), ragged sizes and groups of one to all images.
"""
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from minicnn.layers import Conv2d, col2im, im2col
from minicnn.layers.base import SCRATCH_BYTES, scratch
from minicnn.layers.conv import output_size, pad_spatial

from conftest import Device, xp_params


def reference_conv(x, weight, stride, padding):
    """y = W_mat X and the cols X, by im2col: (N, O, Ho, Wo), (N, K, P)."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = output_size(h, kh, stride[0], padding[0]), output_size(w, kw, stride[1], padding[1])
    cols = im2col(pad_spatial(x, padding), (kh, kw), stride, (ho, wo)).reshape(n, c * kh * kw, -1)
    return (weight.reshape(o, -1) @ cols).reshape(n, o, ho, wo), cols


def reference_backward(x, weight, stride, padding, dy):
    """(dx, dW) by col2im of W_mat^T dY and by sum_n dY X^T."""
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    (ph, pw), (ho, wo) = padding, dy.shape[2:]
    _, cols = reference_conv(x, weight, stride, padding)
    dy_mat = dy.reshape(n, o, -1)
    dcols = (weight.reshape(o, -1).T @ dy_mat).reshape(n, c, kh, kw, ho, wo)
    dx = col2im(dcols, (h + 2 * ph, w + 2 * pw), stride)[:, :, ph:ph + h, pw:pw + w]
    dweight = (dy_mat @ cols.transpose(0, 2, 1)).sum(axis=0).reshape(weight.shape)
    return dx, dweight


@st.composite
def conv_cases(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh)), draw(st.integers(0, kw))  # kh: past the flipped path
    h = draw(st.integers(max(1, kh - 2 * ph), 11))
    w = draw(st.integers(max(1, kw - 2 * pw), 11))
    n, c, o = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    group_bytes = draw(st.sampled_from([1, 2000, 4 << 20]))  # one image, a few, all
    return (n, c, h, w), o, (kh, kw), (sh, sw), (ph, pw), group_bytes


def check_against_reference(dev, case, seed):
    shape, o, kernel, stride, padding, group_bytes = case
    rng = np.random.default_rng(seed)
    layer = Conv2d(shape[1], o, kernel, stride, padding, bias=False, dtype=np.float64)
    layer.params["weight"] = rng.standard_normal(layer.params["weight"].shape)
    layer.group_bytes = group_bytes
    x = rng.standard_normal(shape)
    y_ref, _ = reference_conv(x, layer.params["weight"], stride, padding)
    dy = rng.standard_normal(y_ref.shape)
    dx_ref, dweight_ref = reference_backward(x, layer.params["weight"], stride, padding, dy)
    dev.layer(layer)
    y = layer.forward(dev.array(x))
    dx = layer.backward(dev.array(dy))
    for name, ours, ref in (("y", y, y_ref), ("dx", dx, dx_ref),
                            ("dW", layer.grads["weight"], dweight_ref)):
        ours = Device.numpy(ours)
        assert ours.shape == ref.shape, name
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12 * max(1, np.abs(ref).max()),
                                   err_msg=name)


@settings(max_examples=150)
@given(case=conv_cases(), seed=st.integers(0, 2**16))
@example(case=((2, 3, 9, 9), 4, (7, 7), (2, 2), (3, 3), 4 << 20), seed=0)  # ResNet's stem
@example(case=((3, 2, 8, 7), 2, (3, 3), (3, 3), (0, 0), 1), seed=1)  # ragged: unread pixels
@example(case=((2, 2, 5, 5), 3, (3, 3), (1, 1), (3, 3), 2000), seed=2)  # padding past k - 1
def test_conv2d_fast_paths_match_im2col_reference(case, seed):
    check_against_reference(Device("cpu"), case, seed)


@pytest.mark.gpu
@pytest.mark.parametrize("case", [
    ((2, 3, 8, 8), 4, (3, 3), (1, 1), (1, 1), 4 << 20),
    ((3, 2, 9, 7), 3, (3, 3), (2, 2), (1, 1), 1),
    ((1, 2, 9, 9), 2, (7, 7), (2, 2), (3, 3), 4 << 20),
    ((2, 2, 5, 6), 3, (2, 3), (1, 2), (2, 3), 2000),
])
def test_conv2d_fast_paths_match_reference_on_gpu(case):
    check_against_reference(Device("gpu"), case, 0)


@pytest.mark.parametrize("dev", xp_params)
def test_scratch_reuses_one_buffer_per_slot(dev):
    xp = Device(dev).xp
    a = scratch(xp, "test-slot", (3, 4), np.float64)
    b = scratch(xp, "test-slot", (2, 5), np.float64)
    assert b.shape == (2, 5) and b.base is a.base  # the same memory, reshaped
    c = scratch(xp, "test-slot", (100, 100), np.float64)  # grows
    assert c.shape == (100, 100) and c.base is not a.base
    assert scratch(xp, "test-slot", (3,), np.float32).dtype == np.float32
    big = scratch(xp, "test-slot", (SCRATCH_BYTES // 8 + 1,), np.float64)  # not kept
    assert big.base is not c.base
    assert scratch(xp, "test-slot", (7,), np.float64).base is c.base
