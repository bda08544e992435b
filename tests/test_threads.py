"""Sharing a layer's groups of images out over threads (minicnn.layers.threads).

The convolutions' fast paths run their groups on several threads with BLAS held
to one; these tests check that the results are the reference formulation's
whatever the thread count (strides, paddings, odd sizes, 1x1 and Winograd
layers), that the shares really run on several threads, that errors come
back and BLAS's own thread count is put back, and that a forked child can
still run a pass.
"""
import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_conv_lowering import reference_backward, reference_conv

import minicnn
from minicnn.layers import BatchNorm2d, Conv2d, ReLU, winograd
from minicnn.layers.base import image_groups
from minicnn.layers.threads import (
    get_num_threads,
    run_in_parallel,
    set_num_threads,
    whole_pass,
)
from minicnn.network import Network, Residual

threadpoolctl = pytest.importorskip("threadpoolctl")


@pytest.fixture
def threads():
    """Set the thread count for one test and put the old one back."""
    before = get_num_threads()
    yield set_num_threads
    set_num_threads(before)


def blas_threads():
    """Thread counts of NumPy's own BLAS (SciPy or PyTorch may have loaded others)."""
    numpy_dir = os.path.dirname(os.path.dirname(np.__file__))
    return [info["num_threads"] for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas" and info["filepath"].startswith(numpy_dir)
            and "numpy" in info["filepath"]]


def test_run_in_parallel_keeps_item_order_and_uses_several_threads(threads):
    threads(3)
    seen = []
    barrier = threading.Barrier(3, timeout=10)

    def work(item):
        if item < 3:  # the first share of every thread meets the others: all run at once
            barrier.wait()
        seen.append(threading.get_ident())
        return item * item

    assert run_in_parallel(work, range(8)) == [k * k for k in range(8)]
    assert len(set(seen)) == 3


def test_one_thread_runs_in_the_calling_thread(threads):
    threads(1)
    here = threading.get_ident()
    assert run_in_parallel(lambda item: threading.get_ident(), range(5)) == [here] * 5


def test_an_error_in_a_share_comes_back_after_every_share_is_done(threads):
    threads(2)
    done = []

    def work(item):  # shares: [0, 2, 4] in this thread, [1, 3, 5] in the other
        if item == 1:
            raise RuntimeError("share failed")
        threading.Event().wait(0.05)  # slow enough that the error arrives first
        done.append(item)

    with pytest.raises(RuntimeError, match="share failed"):
        run_in_parallel(work, range(6))
    assert sorted(done) == [0, 2, 4]  # this thread's share ran to its end; the other stopped


def test_blas_is_held_to_one_thread_inside_and_put_back_after(threads):
    threads(2)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        if not before:  # every check below would hold of an empty list
            pytest.skip("threadpoolctl does not see NumPy's own BLAS library here")
        assert before == [2] * len(before)
        inside = run_in_parallel(lambda item: blas_threads(), range(4))
        assert inside == [[1] * len(before)] * 4
        assert blas_threads() == before
        with whole_pass(8):
            assert blas_threads() == [1] * len(before)
        assert blas_threads() == before
        with whole_pass(1):  # one image: BLAS's own threads do the products
            assert blas_threads() == before


def test_set_num_threads_rejects_nonsense(threads):
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError, match="whole number >= 1"):
            threads(bad)


def test_environment_sets_the_default():
    code = "import minicnn; print(minicnn.get_num_threads())"
    env = dict(os.environ, MINICNN_NUM_THREADS="3", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "3"
    env = {k: v for k, v in os.environ.items() if k != "MINICNN_NUM_THREADS"}
    env["OMP_NUM_THREADS"] = "2"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "2"


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 33])
@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("per_image", [1, 700, 5000])
def test_image_groups_cover_the_batch_evenly_in_a_multiple_of_the_threads(threads, n, count,
                                                                          per_image):
    threads(count)
    groups = image_groups(n, per_image, 4000)
    covered = [k for group in groups for k in range(group.start, group.stop)]
    assert covered == list(range(n))
    sizes = [group.stop - group.start for group in groups]
    assert max(sizes) - min(sizes) <= 1
    assert max(sizes) * per_image <= 4000 or max(sizes) == 1
    assert len(groups) % count == 0 or len(groups) == n  # as many as the batch allows


def _conv_case(rng, shape, o, kernel, stride, padding, group_bytes):
    layer = Conv2d(shape[1], o, kernel, stride, padding, bias=False, dtype=np.float64)
    layer.params["weight"] = rng.standard_normal(layer.params["weight"].shape)
    layer.group_bytes = group_bytes
    return layer, rng.standard_normal(shape)


@settings(max_examples=40, deadline=None)
@given(kernel=st.sampled_from([1, 3, 5]), stride=st.integers(1, 3), pad=st.integers(0, 2),
       n=st.integers(1, 7), c=st.sampled_from([1, 3, 32]), o=st.sampled_from([2, 32]),
       size=st.integers(5, 12), group_bytes=st.sampled_from([1, 30000, 4 << 20]),
       count=st.integers(2, 3), everywhere=st.booleans(), seed=st.integers(0, 2**16))
def test_convolution_on_several_threads_equals_the_reference(kernel, stride, pad, n, c, o, size,
                                                             group_bytes, count, everywhere,
                                                             seed):
    """Forward, dx and dW through the shared-out groups (wide lowering, 1x1 products,
    and Winograd, for every 3x3 stride-1 layer when ``everywhere``) against im2col /
    col2im."""
    before = set_num_threads(count)
    thresholds = winograd.MIN_CHANNELS, winograd.MIN_TILES, winograd.MIN_PRODUCTS
    if everywhere:
        winograd.MIN_CHANNELS, winograd.MIN_TILES, winograd.MIN_PRODUCTS = 1, 1, 0
    try:
        rng = np.random.default_rng(seed)
        pad = min(pad, kernel - 1) if kernel > 1 else 0
        layer, x = _conv_case(rng, (n, c, size, size), o, kernel, stride, pad, group_bytes)
        y_ref, _ = reference_conv(x, layer.params["weight"], layer.stride, layer.padding)
        dy = rng.standard_normal(y_ref.shape)
        dx_ref, dweight_ref = reference_backward(x, layer.params["weight"], layer.stride,
                                                 layer.padding, dy)
        y = layer.forward(x)
        dx = layer.backward(dy)
    finally:
        set_num_threads(before)
        winograd.MIN_CHANNELS, winograd.MIN_TILES, winograd.MIN_PRODUCTS = thresholds
    for ours, ref in ((y, y_ref), (dx, dx_ref), (layer.grads["weight"], dweight_ref)):
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(ref).max()))


def _small_resnet(rng):
    """A stem, a 1x1-shortcut residual block that halves the size, a Winograd-wide block."""
    def conv(c, o, k, stride=1):
        return Conv2d(c, o, k, stride=stride, padding=k // 2, bias=False, rng=rng,
                      dtype=np.float64)

    def bn(c):
        bn = BatchNorm2d(c, dtype=np.float64)
        bn.params["weight"] = rng.uniform(0.5, 1.5, c)
        bn.buffers["running_mean"] = rng.standard_normal(c) * 0.1
        return bn

    block = Residual([("conv1", conv(16, 32, 3, 2)), ("bn1", bn(32)), ("relu1", ReLU()),
                      ("conv2", conv(32, 32, 3)), ("bn2", bn(32))],
                     shortcut=[("conv", conv(16, 32, 1, 2)), ("bn", bn(32))])
    wide = Residual([("conv", conv(32, 32, 3)), ("bn", bn(32))])
    return Network([("conv1", Conv2d(3, 16, 3, padding=1, rng=rng, dtype=np.float64)),
                    ("bn1", bn(16)), ("relu1", ReLU()), ("block", block), ("wide", wide)])


@pytest.mark.parametrize("training", [False, True])
def test_network_pass_on_two_threads_equals_one_thread(threads, training):
    rng = np.random.default_rng(0)
    net = _small_resnet(rng)
    net.train() if training else net.eval()
    x = rng.standard_normal((9, 3, 32, 32))  # 16x16 after the block: Winograd there
    results = []
    for count in (1, 2):
        threads(count)
        y = net.forward(x)
        dy = np.cos(y)
        dx = net.backward(dy)
        grads = {f"{layer.name}.{k}": g.copy() for layer in net.layers()
                 for k, g in layer.grads.items()}
        results.append((y.copy(), dx.copy(), grads))
    (y1, dx1, g1), (y2, dx2, g2) = results
    np.testing.assert_allclose(y2, y1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx2, dx1, rtol=1e-12, atol=1e-12)
    assert g1.keys() == g2.keys() and g1
    for key in g1:
        np.testing.assert_allclose(g2[key], g1[key], rtol=1e-10, atol=1e-10, err_msg=key)


def _child_pass(queue):
    set_num_threads(2)
    rng = np.random.default_rng(1)
    layer, x = _conv_case(rng, (6, 32, 8, 8), 32, 3, 1, 1, 20000)
    queue.put(float(layer.forward(x).sum()))


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_a_forked_child_runs_shared_out_passes(threads):
    threads(2)
    rng = np.random.default_rng(1)
    layer, x = _conv_case(rng, (6, 32, 8, 8), 32, 3, 1, 1, 20000)
    expected = float(layer.forward(x).sum())  # the pool's threads now exist in the parent
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_pass, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in a shared-out convolution")
    assert queue.get(timeout=5) == pytest.approx(expected, rel=1e-12)


def test_package_exports_the_thread_count():
    assert minicnn.set_num_threads is set_num_threads
    assert minicnn.get_num_threads is get_num_threads
