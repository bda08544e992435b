"""minicnn's own HDF5 weights format, load(), and the classify command."""
import json

import h5py
import numpy as np
import pytest
from PIL import Image

from minicnn.cli import main
from minicnn.io.errors import WeightsFormatError
from minicnn.io.hdf5 import read_weights, write_weights
from minicnn.io.model_file import load, save, DEFAULT_WEIGHTS
from minicnn.models import cifar_resnet

SPEC = {"color": "RGB", "scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3,
        "resize": None, "crop": None, "input_size": [32, 32]}
LABELS = [f"digit {i}" for i in range(10)]


@pytest.fixture
def saved(tmp_path):
    net = cifar_resnet(8, rng=3)
    for layer in net.layers():               # non-trivial BN statistics
        if "running_var" in layer.buffers:
            layer.buffers["running_var"] = np.full_like(layer.buffers["running_var"], 1.7)
            layer.buffers["running_mean"] = np.full_like(layer.buffers["running_mean"], 0.1)
    path = tmp_path / "net.h5"
    save(net, path, arch="cifar_resnet8", variant="cifar", num_classes=10, labels=LABELS,
         preprocessing=SPEC, source={"trained_by": "test"})
    return net.eval(), path


def test_round_trip_gives_the_same_network(saved):
    net, path = saved
    loaded = load(path)
    assert loaded.metadata["labels"] == LABELS and loaded.metadata["preprocessing"] == SPEC
    assert not any(layer.training for layer in loaded.layers())
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x), net.forward(x))


def test_layout_is_one_group_per_layer(saved):
    _, path = saved
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == b"minicnn-weights"  # fixed-length: in the object header
        assert json.loads(f.attrs["labels"]) == LABELS
        assert f["layers/res2a.branch2a/weight"].shape == (16, 16, 3, 3)
        assert set(f["layers/res2a.bn2a"]) == {"weight", "bias", "running_mean", "running_var"}


def test_missing_layer_names_the_layer(saved, tmp_path):
    _, path = saved
    metadata, state = read_weights(path)
    del state["res3a.bn2b.running_var"]
    broken = tmp_path / "broken.h5"
    write_weights(broken, state, metadata)
    with pytest.raises(KeyError, match="res3a.bn2b.running_var"):
        load(broken)


def test_shape_mismatch_names_layer_and_both_shapes(saved, tmp_path):
    _, path = saved
    metadata, state = read_weights(path)
    state["fc.weight"] = np.zeros((10, 32), np.float32)
    broken = tmp_path / "broken.h5"
    write_weights(broken, state, metadata)
    with pytest.raises(ValueError, match=r"'fc'.*\(10, 64\).*\(10, 32\)"):
        load(broken)


def test_wrong_architecture_is_reported(saved, tmp_path):
    _, path = saved
    metadata, state = read_weights(path)
    metadata["arch"] = "cifar_resnet20"
    broken = tmp_path / "broken.h5"
    write_weights(broken, state, metadata)
    with pytest.raises(KeyError, match="missing"):
        load(broken)


def test_truncated_and_foreign_files(saved, tmp_path):
    _, path = saved
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(WeightsFormatError, match="cut.h5"):
        load(cut)
    foreign = tmp_path / "keras.h5"
    with h5py.File(foreign, "w") as f:
        f.attrs["layer_names"] = [b"conv1"]
    with pytest.raises(WeightsFormatError, match="minicnn weights convert"):
        load(foreign)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nothing.h5")


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_weights(tmp_path / "w.h5", {"conv1.weight": object()},
                      {"arch": "x", "variant": "y", "num_classes": 1})
    assert list(tmp_path.iterdir()) == []


def test_classify_prints_sorted_probabilities(saved, tmp_path, capsys):
    net, path = saved
    rng = np.random.default_rng(1)
    images = []
    for i in range(3):
        images.append(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(images[-1])
    assert main(["classify", *map(str, images), "--weights", str(path), "--top", "4",
                 "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line, image in zip(lines, images):
        result = json.loads(line)
        assert result["path"] == str(image)
        probs = [p for _, p in result["predictions"]]
        assert len(probs) == 4 and probs == sorted(probs, reverse=True)
        assert all(label in LABELS for label, _ in result["predictions"])
    assert main(["classify", str(tmp_path / "none.png"), "--weights", str(path)]) == 2
    assert "none.png" in capsys.readouterr().err


def _training_script():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "weights" / "train_digits.py"
    spec = importlib.util.spec_from_file_location("train_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_model_is_accurate_on_held_out_digits():
    from sklearn.model_selection import train_test_split
    from minicnn.images import preprocess
    from minicnn.train import accuracy
    script = _training_script()
    net = load()
    assert DEFAULT_WEIGHTS.stat().st_size < 2 * 1024 * 1024
    assert net.metadata["preprocessing"] == script.PREPROCESSING
    images, labels = script.digit_images()
    seed = net.metadata["source"]["seed"]
    _, test_idx = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels,
                                   random_state=seed)
    x = np.stack([preprocess(images[i], script.PREPROCESSING) for i in test_idx])
    assert accuracy(net, x, labels[test_idx]) >= 0.98


def test_shipped_digit_images_are_classified(capsys):
    from pathlib import Path
    images = sorted((Path(__file__).parents[1] / "demos" / "images").glob("digit_*.png"))
    assert len(images) == 10
    assert main(["classify", *map(str, images), "--top", "1", "--json"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    predicted = [r["predictions"][0][0] for r in results]
    assert sum(p == image.stem.split("_")[1] for p, image in zip(predicted, images)) >= 9
