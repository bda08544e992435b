"""Maximally activating patches against a brute-force search over every activation.

The brute force keeps all activations of the set and sorts each channel's
values with ``np.lexsort`` (value descending, then the order poured in), the
rule :func:`top_patches` promises; :func:`top_patches` itself never holds more
than a batch. Exact ties are made on purpose with a network of small integer
weights on integer images (exact float arithmetic, so equal means equal in any
batching). On the real CIFAR-10 test JPEGs with the converted ResNet-56, the
result equals the brute force on a 500-image subset and the peak memory
(tracemalloc) stays within a dozen of one batch's largest activation; the
full 10,000-image run is ``demos/top_patches_cifar.py``.
"""
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import minicnn
from minicnn.backend import to_cpu
from minicnn.datasets import as_dataset, from_pixels, image_folder
from minicnn.layers import Conv2d, ReLU, ShapeError
from minicnn.network import Network
from minicnn.techniques import field_box, input_gradient, patch_projections, top_patches

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def brute_force(net, batches, layer, channels, k):
    """Every activation of every batch kept, then a full sort per channel."""
    outputs = [net.forward(x, stop_at=layer) for x in batches]
    outputs = [to_cpu(o) for o in outputs]
    size = tuple(batches[0].shape[2:])
    acts = np.concatenate(outputs)
    spatial = acts.ndim == 4
    flat = acts.reshape(len(acts), acts.shape[1], -1)
    width = acts.shape[3] if spatial else 1
    result = {}
    for channel in channels:
        values = flat[:, channel].ravel()  # (image, y, x) order
        order = np.lexsort((np.arange(len(values)), -values))[:k]
        records = []
        for index in order:
            image, position = divmod(int(index), flat.shape[2])
            y, x = divmod(position, width)
            box = field_box(net, layer, y, x, size) if spatial else (0, 0) + size
            records.append((image, y if spatial else None, x if spatial else None,
                            float(values[index]), box))
        result[channel] = records
    return result


def as_tuples(patches):
    return {c: [tuple(p) for p in records] for c, records in patches.items()}


def integer_net():
    """Conv (weights -1, 0, 1) -> ReLU -> conv/2: integer sums, exact in float32,
    with many equal values (and many zeros after the ReLU)."""
    rng = np.random.default_rng(0)
    first, second = Conv2d(3, 4, 3, padding=1, bias=False), Conv2d(4, 3, 3, 2, 1, bias=False)
    first.params["weight"] = rng.integers(-1, 2, first.params["weight"].shape).astype(np.float32)
    second.params["weight"] = rng.integers(-1, 2, second.params["weight"].shape).astype(
        np.float32)
    return Network([("conv", first), ("relu", ReLU()), ("down", second)]).eval()


@pytest.mark.parametrize("layer", ["conv", "relu", "down"])
@pytest.mark.parametrize("k", [5, 60])
def test_ties_go_to_the_first_poured_whatever_the_batching(layer, k, dev):
    net = dev.layer(integer_net())
    x = dev.array(np.random.default_rng(1).integers(0, 3, (11, 3, 8, 8)).astype(np.float32))
    expected = brute_force(net, [x], layer, range(3 if layer == "down" else 4), k)
    values = [r[3] for records in expected.values() for r in records]
    assert len(values) > len(set(values))  # the test has ties to break
    for batch_size in (1, 3, 11, 64):
        got = top_patches(net, x, layer, k=k, batch_size=batch_size, progress=False)
        assert as_tuples(got) == expected, batch_size


@pytest.fixture(scope="module")
def digits_net():
    return minicnn.load()


@pytest.mark.parametrize("layer", ["conv1", "res2a.branch2a", "res3", "res4a.add", "fc"])
def test_equals_brute_force_on_the_digits_model(layer, digits_net, dev):
    net = dev.layer(digits_net)
    try:
        x = dev.array(np.random.default_rng(2).standard_normal((10, 3, 32, 32)).astype(np.float32))
        channels = [3, 0, 7]
        batches = [x[i:i + 4] for i in range(0, 10, 4)]  # the same batches, the same floats
        got = top_patches(net, x, layer, channels=channels, k=7, batch_size=4, progress=False)
        assert list(got) == channels
        assert as_tuples(got) == brute_force(net, batches, layer, channels, 7)
    finally:
        net.to("cpu")


def test_every_source_gives_the_same_patches(digits_net, tmp_path):
    net = digits_net
    data = as_dataset(None, net).subset(range(12))
    pixels = np.stack([data.pixels(i) for i in range(12)])
    for i, image in enumerate(pixels):  # one class folder, files in the data's order
        (tmp_path / "7").mkdir(exist_ok=True)
        Image.fromarray(image).save(tmp_path / "7" / f"{i:02d}.png")
    x = data.images(range(12))
    args = dict(layer="res3", channels=[1, 4], k=5, progress=False)
    reference = as_tuples(top_patches(net, data, batch_size=5, **args))
    sources = {"array": x, "pixels": pixels, "folder": tmp_path,
               "dataset": from_pixels(pixels, net.metadata["preprocessing"]),
               "batches": (x[i:i + 5] for i in range(0, 12, 5)),
               "labelled batches": data.batches(5)}
    for name, source in sources.items():
        assert as_tuples(top_patches(net, source, batch_size=5, **args)) == reference, name
    assert len(image_folder(tmp_path, net.metadata["preprocessing"])) == 12


def test_projections_are_the_guided_gradient_inside_the_box(digits_net):
    net = digits_net
    data = as_dataset(None, net).subset(range(20))
    patches = top_patches(net, data, "res3", channels=[2], k=3, progress=False)
    projections = patch_projections(net, data, "res3", patches, progress=False)
    for patch, crop in zip(patches[2], projections[2]):
        full = input_gradient(net, data.images([patch.image]), f"res3:2:{patch.y}:{patch.x}",
                              relu_mode="guided")[0]
        top, left, bottom, right = patch.box
        np.testing.assert_array_equal(crop, full[:, top:bottom, left:right])
        outside = full.copy()
        outside[:, top:bottom, left:right] = 0
        assert not outside.any() and crop.any()


def test_bad_input_gives_clear_errors(digits_net):
    net = digits_net
    x = np.zeros((2, 3, 32, 32), np.float32)
    with pytest.raises(KeyError, match="unknown layer name 'res7'"):
        top_patches(net, x, "res7", progress=False)
    with pytest.raises(ValueError, match="channel 16 is not valid for layer 'res2'; valid: 0 to "):
        top_patches(net, x, "res2", channels=[0, 16], progress=False)
    with pytest.raises(ValueError, match="no channels given for layer 'res2'"):
        top_patches(net, x, "res2", channels=[], progress=False)
    with pytest.raises(ValueError, match="k must be at least 1"):
        top_patches(net, x, "res2", k=0, progress=False)
    with pytest.raises(ValueError, match="no images were poured in"):
        top_patches(net, iter([]), "res2", progress=False)
    with pytest.raises(ShapeError, match="images of one size"):
        top_patches(net, [x, np.zeros((1, 3, 40, 40), np.float32)], "res2", progress=False)
    with pytest.raises(ShapeError, match="received 1 channels"):
        top_patches(net, np.zeros((2, 1, 32, 32), np.float32), "res2", progress=False)
    with pytest.raises(ShapeError, match="a 2-D image"):
        top_patches(net, np.zeros((32, 32), np.float32), "res2", progress=False)


# -- the real CIFAR-10 test JPEGs ------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet56(cifar_resnet_file):
    if not (DATA / "test").is_dir():
        pytest.skip(f"real CIFAR-10 data not found at {DATA}")
    return minicnn.load(cifar_resnet_file(56))


def traced_peak(function):
    """(result, peak bytes allocated while ``function`` ran) by tracemalloc."""
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_cifar_subset_equals_brute_force_in_bounded_memory(resnet56):
    net, batch_size, layer = resnet56, 20, "res2"
    data = image_folder(DATA / "test", net.metadata["preprocessing"], net.metadata["labels"])
    subset = data.subset(np.arange(0, 10000, 20))  # 500 images, 50 of each class
    batch = subset.images(range(batch_size))
    # warm up first: the convolution keeps reusable work buffers once allocated
    top_patches(net, batch, layer, progress=False)
    # what seeing one batch costs anyway, and the layer's activations for it
    activation, forward_peak = traced_peak(
        lambda: net.forward(batch, stop_at=layer, cache=False))
    # the selection's temporaries: a transposed table, the partitioned copy,
    # the int32 ranks of the ties and three masks: under 6 activations' worth
    bound = forward_peak + 6 * activation.nbytes
    every_activation = len(subset) * activation.nbytes // batch_size
    assert bound < every_activation / 1.5  # a search that kept them all would break the bound

    got, peak = traced_peak(lambda: top_patches(net, subset, layer, k=9, batch_size=batch_size,
                                                progress=False))
    assert peak < bound, (f"peak {peak / 1e6:.1f} MB over the bound {bound / 1e6:.1f} MB "
                          f"(forward {forward_peak / 1e6:.1f} MB)")
    batches = [x for x, _ in subset.batches(batch_size)]
    assert as_tuples(got) == brute_force(net, batches, layer, range(16), 9)
    assert {p.image for records in got.values() for p in records} <= set(range(500))
