"""The multiply-add counts behind tests/benchmark.py's "floor" column.

The floor says how close to PyTorch any engine doing minicnn's arithmetic on
this machine's BLAS could come; a wrong count would make it say the wrong thing.
Published counts are the oracle: torchvision lists ResNet-50 at 4.09 GFLOPS
(multiply-adds, as its model table counts them) for one 224x224 image, and the
network-pruning literature counts the CIFAR ResNets at 40.55 M (ResNet-20) and
125.49 M (ResNet-56) multiply-adds a 32x32 image (Li et al., "Pruning Filters for
Efficient ConvNets", 2017, give 1.25E8 for ResNet-56).
"""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark  # noqa: E402  (beside this file; imports torch only when run)

from minicnn.layers import Conv2d, winograd  # noqa: E402
from minicnn.models import cifar_resnet, resnet  # noqa: E402


@pytest.fixture
def direct_only(monkeypatch):
    """Every convolution through the direct lowering: counts are the textbook ones."""
    monkeypatch.setattr(winograd, "ENABLED", False)


@pytest.mark.parametrize("depth, millions", [(20, 40.55), (56, 125.49)])
def test_cifar_resnets_match_published_counts(direct_only, depth, millions):
    net = cifar_resnet(depth, rng=0).eval()
    count = benchmark.pass_multiply_adds(net, np.zeros((1, 3, 32, 32), np.float32))
    assert count / 1e6 == pytest.approx(millions, abs=0.01)


def test_resnet50_matches_torchvision_count(direct_only):
    net = resnet(50, "torchvision", rng=0).eval()
    count = benchmark.pass_multiply_adds(net, np.zeros((2, 3, 224, 224), np.float32))
    assert count / 2 / 1e9 == pytest.approx(4.09, abs=0.005)


def test_backward_counts_each_part_once(direct_only):
    """Direct lowering: each part costs what the forward pass costs, so a training
    step (no input gradient on the first layer, weight gradients everywhere) is three
    forward passes less the first convolution's, and an input-gradient pass two."""
    net = cifar_resnet(20, rng=0).eval()
    x = np.zeros((4, 3, 32, 32), np.float32)
    forward = benchmark.pass_multiply_adds(net, x)
    first = net["conv1"]
    stem = benchmark.conv_multiply_adds(first, x.shape, "forward")
    assert stem == 4 * 16 * 32 * 32 * 3 * 9
    assert benchmark.pass_multiply_adds(net, x, backward=True) == 2 * forward
    assert benchmark.pass_multiply_adds(net, x, backward=True, input_grad=False,
                                        param_grads=True) == 3 * forward - stem


def test_winograd_layers_count_sixteen_products_per_block():
    """Where minicnn picks Winograd, a 2x2 output block costs 16 multiply-adds per
    channel pair instead of 36: 2.25x fewer on even-sized maps; an odd size pays
    for the ragged blocks in full."""
    layer = Conv2d(64, 64, 3, padding=1, bias=False)
    even, odd = (16, 64, 8, 8), (16, 64, 7, 7)
    for part in ("forward", "input", "weight"):
        assert winograd.use_winograd((3, 3), (1, 1), (64, 64), (8, 8), 16,
                                     weight_grad=part == "weight")
        count = benchmark.conv_multiply_adds(layer, even, part)
        assert count * 2.25 == 16 * 64 * 64 * 8 * 8 * 9
        assert benchmark.conv_multiply_adds(layer, odd, part) == 16 * 64 * 64 * 16 * 16
    # too few channels for Winograd: the direct count
    small = Conv2d(16, 16, 3, padding=1, bias=False)
    assert benchmark.conv_multiply_adds(small, (16, 16, 32, 32), "forward") == \
        16 * 16 * 32 * 32 * 16 * 9


def test_counting_leaves_the_network_as_it_was():
    """The probe pass runs in eval mode (no running statistics move) and keeps no
    caches; training-mode layers are put back."""
    net = cifar_resnet(8, rng=0).train()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    benchmark.pass_multiply_adds(net, np.zeros((2, 3, 32, 32), np.float32), backward=True)
    after = net.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all(layer.training for layer in net.layers())
    assert all(layer.cache is None for layer in net.layers())



def test_products_time_only_the_matrix_products():
    """products_ms times numpy.matmul calls (as the layers make them) and nothing
    else, then puts matmul and the thread count back."""
    import time

    from minicnn.layers.threads import get_num_threads, set_num_threads
    matmul = np.matmul
    a = np.ones((256, 256), np.float32)

    def work():
        np.matmul(a, a)  # well under a millisecond
        time.sleep(0.02)  # not a product: counted, it would add 20 ms

    previous = set_num_threads(2)
    try:
        whole = benchmark.products_ms(work, threads=1)
        assert get_num_threads() == 2
    finally:
        set_num_threads(previous)
    assert np.matmul is matmul
    assert 0 < whole < 15
