"""GrabCut from saliency: the graph cut against brute force, the smoothness weights
against a direct loop over pixel pairs, masks recovered from noisy saliency
blobs on synthetic images, and clear errors on bad input."""
import itertools

import numpy as np
import pytest
from scipy import ndimage

from minicnn.techniques import grabcut
from minicnn.techniques.grabcut import (colour_unary, grabcut_energy, min_cut, seeds,
                                        smoothness)


def brute_force_minimum(unary_fg, unary_bg, edges):
    shape = unary_fg.shape
    return min(grabcut_energy(np.array(labels, dtype=bool).reshape(shape), unary_fg, unary_bg,
                              edges) for labels in itertools.product([False, True],
                                                                     repeat=unary_fg.size))


def test_smoothness_matches_a_loop_over_neighbour_pairs():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 4, 3)).astype(np.uint8)
    colours = image.reshape(-1, 3).astype(float)
    pairs = {}
    for p, q in itertools.combinations(range(12), 2):
        (py, px), (qy, qx) = divmod(p, 4), divmod(q, 4)
        if max(abs(py - qy), abs(px - qx)) == 1:
            pairs[p, q] = (np.hypot(py - qy, px - qx), ((colours[p] - colours[q]) ** 2).sum())
    beta = 1 / (2 * np.mean([d2 for _, d2 in pairs.values()]))
    expected = {pq: 50 / dist * np.exp(-beta * d2) for pq, (dist, d2) in pairs.items()}
    edges = smoothness(image, gamma=50)
    found = {(min(p, q), max(p, q)): w for p, q, w in zip(edges.p, edges.q, edges.weight)}
    assert len(edges.p) == len(found) == len(expected) == 29  # 9 + 8 + 6 + 6 pairs
    assert set(found) == set(expected)
    for pq, weight in expected.items():
        assert found[pq] == pytest.approx(weight, rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_min_cut_reaches_the_brute_force_minimum_with_gmm_unaries(seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (3, 3, 3)).astype(np.uint8)
    colours = image.reshape(-1, 3).astype(float)
    # colour models fitted to two random halves of the pixels, as after an iteration
    side = rng.permutation(9) < 4
    unary_fg = colour_unary(colours, side, components=2, rng=seed).reshape(3, 3)
    unary_bg = colour_unary(colours, ~side, components=2, rng=seed).reshape(3, 3)
    if seed % 2:  # hard constraints: a foreground seed and a background seed
        unary_bg[0, 0] = np.inf
        unary_fg[2, 1] = np.inf
    edges = smoothness(image, gamma=50)
    cut = min_cut(unary_fg, unary_bg, edges)
    best = brute_force_minimum(unary_fg, unary_bg, edges)
    assert grabcut_energy(cut, unary_fg, unary_bg, edges) == pytest.approx(best, rel=1e-7,
                                                                          abs=1e-6)
    if seed % 2:
        assert cut[0, 0] and not cut[2, 1]


def test_min_cut_when_smoothness_dominates_and_when_it_does_not():
    image = np.zeros((3, 3, 3), dtype=np.uint8)  # constant: every pair weighs gamma / dist
    unary_fg = np.zeros((3, 3))
    unary_bg = np.ones((3, 3))  # every pixel prefers the foreground by 1
    unary_bg[1, 1] = -5.0  # but the centre prefers the background by 5
    strong, weak = smoothness(image, gamma=50), smoothness(image, gamma=0.1)
    assert min_cut(unary_fg, unary_bg, strong).all()  # cutting out the centre costs ~283
    expected = np.ones((3, 3), dtype=bool)
    expected[1, 1] = False
    np.testing.assert_array_equal(min_cut(unary_fg, unary_bg, weak), expected)


def synthetic_scene(size, seed, noise=0.1):
    """An object (an ellipse with a bar through it, striped in two colours) on a
    striped background of two other colours, and a noisy saliency blob over it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(0.4, 0.6, 2) * size
    mask = ((yy - cy) / (0.25 * size)) ** 2 + ((xx - cx) / (0.3 * size)) ** 2 < 1
    mask |= (abs(yy - cy - 0.2 * size) < 0.05 * size) & (abs(xx - cx) < 0.42 * size)
    image = np.where(mask[..., None], [200, 60, 40], [40, 120, 60]).astype(float)
    image[mask & ((yy // 6) % 2 == 0)] = [230, 180, 50]
    image[~mask & ((xx // 8) % 2 == 0)] = [90, 100, 150]
    image = np.clip(image + rng.normal(0, 15, image.shape), 0, 255).astype(np.uint8)
    blob = ndimage.gaussian_filter(mask.astype(float), size / 12)
    return image, np.abs(blob + rng.normal(0, noise, mask.shape)), mask


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("seed", range(3))
def test_grabcut_recovers_the_object_from_a_noisy_saliency_blob(seed):
    image, saliency, mask = synthetic_scene(48, seed)
    found = grabcut(image, saliency, rng=seed)
    assert found.dtype == bool and found.shape == mask.shape
    assert iou(found, mask) >= 0.9
    # the colours and edges do the work: no threshold of the saliency alone gets there
    best_threshold = max(iou(saliency > np.quantile(saliency, q), mask)
                         for q in np.linspace(0.05, 0.95, 19))
    assert best_threshold < 0.9
    np.testing.assert_array_equal(grabcut(image, saliency, rng=seed), found)  # seeded


def test_grabcut_keeps_only_the_largest_component():
    image, saliency, mask = synthetic_scene(48, 0)
    image[2:8, 2:8] = [200, 60, 40]  # a small patch of the object's colour, far from it
    saliency[2:8, 2:8] = saliency.max() + 1  # marked as surely foreground
    found = grabcut(image, saliency)
    assert not found[2:8, 2:8].any()
    assert iou(found, mask) >= 0.9


def test_seeds_are_the_quantiles():
    saliency = np.arange(100.0).reshape(10, 10)
    fg, bg = seeds(saliency, 0.95, 0.30)
    assert fg.sum() == 5 and fg.ravel()[95:].all()
    assert bg.sum() == 30 and bg.ravel()[:30].all()


@pytest.mark.parametrize("image, saliency, options, message", [
    (np.zeros((8, 8), np.uint8), np.zeros((8, 8)), {}, "RGB of shape"),
    (np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8)), {}, "RGB of shape"),
    (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8)), {}, "must be uint8"),
    (np.zeros((8, 8, 3), np.uint8), np.zeros((1, 8, 8)), {}, "saliency must be"),
    (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9)), {}, "saliency must be"),
    (np.zeros((8, 8, 3), np.uint8), np.ones((8, 8)), {}, "constant"),
    (np.zeros((8, 8, 3), np.uint8), np.full((8, 8), np.nan), {}, "NaN"),
    (np.zeros((8, 8, 3), np.uint8), np.eye(8), {"fg_quantile": 0.2}, "bg_quantile"),
    (np.zeros((8, 8, 3), np.uint8), np.eye(8), {"iterations": 0}, "iterations"),
])
def test_bad_input_gives_a_clear_error(image, saliency, options, message):
    with pytest.raises(ValueError, match=message):
        grabcut(image, saliency, **options)


def test_grabcut_takes_cupy_arrays_and_returns_the_mask_there(dev):
    image, saliency, mask = synthetic_scene(48, 0)
    found = grabcut(dev.array(image), dev.array(saliency))
    assert type(found) is type(dev.array(mask))
    np.testing.assert_array_equal(dev.numpy(found), grabcut(image, saliency))


def test_segment_command_on_the_shipped_model(tmp_path, capsys):
    from minicnn.cli import main
    out = tmp_path / "cut.png"
    assert main(["segment", "--indices", "0", "1", "--scale", "2", "--out", str(out)]) == 0
    assert out.is_file()
    assert capsys.readouterr().out.count("the mask covers") == 2
    assert main(["segment", "--fg-quantile", "0.2", "--out", str(out)]) == 2
    assert "bg_quantile" in capsys.readouterr().err


def test_segment_object_cuts_the_view_the_network_saw():
    import minicnn
    from minicnn.datasets import as_dataset
    from minicnn.techniques import saliency_map, upsample, vanilla_gradient
    net = minicnn.load()
    data = as_dataset(None, net)
    from minicnn.techniques.grabcut import segment_object
    result = segment_object(net, data.pixels(0), scale=2)
    x = data.images([0])
    assert result.target == int(net.forward(x).argmax())
    expected = upsample(saliency_map(vanilla_gradient(net, x, result.target)), 64)[0]
    np.testing.assert_allclose(result.saliency, expected, rtol=1e-6)
    assert result.image.shape == (64, 64, 3) and result.mask.shape == (64, 64)
    with pytest.raises(ValueError, match="RGB uint8"):
        segment_object(net, data.images([0])[0])
