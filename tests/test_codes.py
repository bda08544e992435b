"""CNN codes and t-SNE: codes against torch's penultimate features (random ResNets,
and the real CIFAR ResNet-56 on 500 real test JPEGs), the t-SNE map's
nearest-neighbour accuracy, leave-one-out k-NN against scikit-learn, and the
grid assignment against brute force."""
import itertools
from pathlib import Path

import numpy as np
import pytest

import minicnn
from minicnn.datasets import as_dataset, image_folder
from minicnn.io.model_file import load
from minicnn.techniques import codes, embed, grid_assignment, knn_accuracy
from minicnn.techniques.codes import code_layer, grid_cost

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
SUBSET = np.arange(0, 10000, 20)  # 500 of the 10,000 test images, 50 per class


def torch_penultimate(model, x):
    """The input of a torch ResNet's classifier: the global average pool's output."""
    import torch.nn.functional as F
    h = F.relu(model.bn1(model.conv1(x)))
    if hasattr(model, "maxpool"):
        h = model.maxpool(h)
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        if hasattr(model, stage):
            h = getattr(model, stage)(h)
    return h.mean(dim=(2, 3))


@pytest.mark.parametrize("arch, depth, size", [("cifar", 20, 32), ("torchvision", 18, 64)])
def test_codes_equal_torch_penultimate_features_on_random_resnets(arch, depth, size):
    torch = pytest.importorskip("torch")
    from torch_resnets import (TorchCifarResNet, TorchResNet, randomize_torch,
                               torch_to_minicnn_name)
    name = f"cifar_resnet{depth}" if arch == "cifar" else f"resnet{depth}"
    net = minicnn.build(name, variant=arch, rng=0).eval()
    model = TorchCifarResNet(depth) if arch == "cifar" else TorchResNet(depth, arch)
    randomize_torch(model, seed=3)
    net.load_state_dict({torch_to_minicnn_name(k, depth): v.numpy()
                         for k, v in model.state_dict().items()
                         if not k.endswith("num_batches_tracked")})
    x = np.random.default_rng(1).standard_normal((5, 3, size, size)).astype(np.float32)
    ours = codes(net, x, batch_size=2, progress=False)
    with torch.no_grad():
        reference = torch_penultimate(model.eval(), torch.from_numpy(x)).numpy()
    assert code_layer(net) == "global_pool" and ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())


def test_every_way_of_giving_images_gives_the_same_codes():
    net = minicnn.load()
    data = as_dataset(None, net).subset(range(10))
    x = data.images(range(10))
    pixels = np.stack([data.pixels(i) for i in range(10)])
    expected = net.forward(x, stop_at="global_pool").reshape(10, -1)
    for source in (x, data, pixels, [x[:4], x[4:]], data.batches(3)):
        np.testing.assert_allclose(codes(net, source, batch_size=4, progress=False), expected,
                                   rtol=1e-5, atol=1e-6)
    conv_codes = codes(net, x, layer="res3", progress=False)
    assert conv_codes.shape == (10, int(np.prod(net.forward(x, stop_at="res3").shape[1:])))


def test_codes_errors_name_the_problem():
    net = minicnn.load()
    x = np.zeros((2, 3, 32, 32), np.float32)
    with pytest.raises(KeyError, match="unknown layer name 'res9'"):
        codes(net, x, layer="res9")
    with pytest.raises(ValueError, match="3-channel"):
        codes(net, np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        codes(net, x, batch_size=0)
    with pytest.raises(ValueError, match="perplexity"):
        embed(np.zeros((10, 4)), perplexity=30)
    with pytest.raises(ValueError, match="do not fit"):
        grid_assignment(np.zeros((7, 2)), 2, 3)
    with pytest.raises(ValueError, match="k must"):
        knn_accuracy(np.zeros((5, 2)), np.zeros(5, int), k=5)


def test_knn_accuracy_equals_scikit_learn_leave_one_out():
    from sklearn.neighbors import KNeighborsClassifier
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 80)
    points = rng.standard_normal((80, 3)) + labels[:, None] * 0.8  # overlapping classes
    for k in (1, 4, 5):
        everyone = np.arange(80)
        hits = [KNeighborsClassifier(k).fit(points[everyone != i], labels[everyone != i])
                .predict(points[i:i + 1])[0] == labels[i] for i in range(80)]
        assert knn_accuracy(points, labels, k=k, chunk=32) == pytest.approx(np.mean(hits))


def test_grid_assignment_is_a_bijection_and_optimal_by_brute_force():
    rng = np.random.default_rng(0)
    points = rng.standard_normal((5, 2))
    cells = grid_assignment(points, 2, 3)
    assert len({tuple(c) for c in cells}) == 5 and cells.min() >= 0
    assert (cells[:, 0] < 2).all() and (cells[:, 1] < 3).all()
    # the cost, written again: points scaled to the unit square, row 0 at the top
    unit = (points - points.min(0)) / (points.max(0) - points.min(0))
    centre = lambda r, c: np.array([(c + 0.5) / 3, 1 - (r + 0.5) / 2])  # noqa: E731
    cost = lambda assignment: sum(((unit[i] - centre(*divmod(j, 3))) ** 2).sum()  # noqa: E731
                                  for i, j in enumerate(assignment))
    best = min(cost(a) for a in itertools.permutations(range(6), 5))
    assert cost(cells[:, 0] * 3 + cells[:, 1]) == pytest.approx(best, rel=1e-12)
    np.testing.assert_allclose(grid_cost(points, 2, 3)[range(5), cells[:, 0] * 3 + cells[:, 1]]
                               .sum(), best, rtol=1e-12)


def test_points_on_a_grid_land_in_their_own_cells():
    rows, cols = 4, 5
    row, col = np.divmod(np.random.default_rng(0).permutation(rows * cols), cols)
    points = np.stack([col * 2.0, -row * 3.0], axis=1)  # any scale; y grows upwards
    np.testing.assert_array_equal(grid_assignment(points, rows, cols), np.stack([row, col], 1))
    cells = grid_assignment(np.random.default_rng(1).standard_normal((60, 2)), 8, 8)
    assert len({tuple(c) for c in cells}) == 60


@pytest.fixture(scope="module")
def cifar_codes(cifar_resnet_file):
    if not (DATA / "test").is_dir():
        pytest.skip(f"real CIFAR-10 data not found at {DATA}")
    net = load(cifar_resnet_file(56))
    data = image_folder(DATA / "test", net.metadata["preprocessing"],
                        net.metadata["labels"]).subset(SUBSET)
    return net, data, codes(net, data, batch_size=100, progress=False)


def test_resnet56_codes_of_real_images_equal_torch_features(cifar_codes):
    torch = pytest.importorskip("torch")
    from torch_resnets import TorchCifarResNet
    net, data, ours = cifar_codes
    raw = torch.load(DATA / "resnet56-4bfd9763.th", map_location="cpu",
                     weights_only=True)["state_dict"]
    model = TorchCifarResNet(56)
    model.load_state_dict({k.removeprefix("module.").replace("linear.", "fc."): v
                           for k, v in raw.items()})
    with torch.no_grad():
        reference = torch_penultimate(model.eval(), torch.from_numpy(data.images(range(500))))
    assert ours.shape == (500, 64)
    np.testing.assert_allclose(ours, reference.numpy(), rtol=1e-4,
                               atol=1e-4 * float(reference.abs().max()))


def test_tsne_of_resnet56_codes_keeps_the_classes_apart(cifar_codes):
    net, data, ours = cifar_codes
    points = embed(ours, perplexity=30, rng=0)
    assert points.shape == (500, 2)
    np.testing.assert_array_equal(embed(ours, perplexity=30, rng=0), points)  # seeded
    in_codes = knn_accuracy(ours, data.labels, k=5)
    in_map = knn_accuracy(points, data.labels, k=5)
    assert in_codes > 0.6 and in_map > 0.6  # chance: 0.1
    assert in_map > in_codes - 0.1  # the map keeps most of the neighbourhoods
    shuffled = np.random.default_rng(0).permutation(data.labels)
    assert knn_accuracy(points, shuffled, k=5) < 0.2


def test_codes_and_knn_on_the_device(dev):
    net = dev.layer(minicnn.load())
    data = as_dataset(None, net).subset(range(40))
    x = data.images(range(40))
    on_device = codes(net, dev.array(x), batch_size=16, progress=False)
    assert type(on_device) is type(dev.array(x))
    cpu_codes = codes(minicnn.load(), x, progress=False)
    np.testing.assert_allclose(dev.numpy(on_device), cpu_codes, rtol=1e-4, atol=1e-5)
    from_dataset = codes(net, data, batch_size=16, progress=False)
    np.testing.assert_allclose(dev.numpy(from_dataset), cpu_codes, rtol=1e-4, atol=1e-5)
    assert knn_accuracy(on_device, dev.array(data.labels), k=3) == \
        knn_accuracy(cpu_codes, data.labels, k=3)


def test_image_mosaic_puts_each_image_in_its_cell():
    from minicnn.plots.embedding import image_mosaic
    images = np.arange(3 * 2 * 4 * 3, dtype=np.uint8).reshape(3, 2, 4, 3)
    cells = np.array([[1, 2], [0, 0], [1, 0]])
    mosaic = image_mosaic(images, cells, 2, 3)
    assert mosaic.shape == (4, 12, 3)
    for image, (row, col) in zip(images, cells):
        np.testing.assert_array_equal(mosaic[2 * row:2 * row + 2, 4 * col:4 * col + 4], image)
    assert (mosaic[0:2, 4:12] == 255).all()  # the empty cells


def test_tsne_command_writes_both_figures(tmp_path, capsys):
    from minicnn.cli import main
    out = tmp_path / "map.png"
    assert main(["tsne", "--limit", "60", "--perplexity", "10", "--grid", "6",
                 "--out", str(out)]) == 0
    assert out.is_file() and (tmp_path / "map_grid.png").is_file()
    assert "5-NN accuracy" in capsys.readouterr().out
    assert main(["tsne", "--limit", "20", "--out", str(out)]) == 2  # perplexity 30 > 20 images
    assert "perplexity" in capsys.readouterr().err
