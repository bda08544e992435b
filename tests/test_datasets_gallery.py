"""Data sources (folders, arrays, the model's own digits) and the gallery runner."""
import types

import numpy as np
import pytest
from PIL import Image

import minicnn
from minicnn import gallery
from minicnn.cli import main
from minicnn.datasets import (as_dataset, digit_images, digits_split, from_array, image_folder,
                              model_data)
from minicnn.images import preprocess


@pytest.fixture(scope="module")
def net():
    return minicnn.load()


def test_model_data_is_the_held_out_split_prepared_as_in_training(net):
    data = model_data(net)
    images, labels = digit_images()
    _, test = digits_split(labels, net.metadata["source"]["seed"])
    assert len(data) == len(test) == 360
    np.testing.assert_array_equal(data.labels, labels[test])
    spec = net.metadata["preprocessing"]
    expected = np.stack([preprocess(images[i], spec) for i in test[:5]])
    np.testing.assert_array_equal(data.images(range(5)), expected)
    assert [len(x) for x, _ in data.batches(100)] == [100, 100, 100, 60]
    assert len(model_data(net, "all")) == 1797
    with pytest.raises(ValueError, match="unknown split"):
        model_data(net, "val")


def _write(folder, name, value):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(folder / name)


def test_folder_with_class_subfolders_streams_labelled_batches(tmp_path, net):
    for label, value in (("1", 10), ("3", 200)):
        for i in range(3):
            _write(tmp_path / label, f"{i}.png", value + i)
    data = image_folder(tmp_path, net.metadata["preprocessing"], net.metadata["labels"])
    np.testing.assert_array_equal(data.labels, [1, 1, 1, 3, 3, 3])
    assert data.pixels(4).shape == (32, 32, 3) and data.pixels(4)[0, 0, 0] == 201
    batches = list(data.batches(4))
    assert [x.shape[0] for x, _ in batches] == [4, 2]
    np.testing.assert_array_equal(batches[1][1], [3, 3])
    plain = image_folder(tmp_path, net.metadata["preprocessing"])
    np.testing.assert_array_equal(plain.labels, [0, 0, 0, 1, 1, 1])
    assert plain.classes == ["1", "3"]


def test_folder_errors_say_what_is_wrong(tmp_path, net):
    spec = net.metadata["preprocessing"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder(tmp_path / "missing", spec)
    with pytest.raises(ValueError, match="no image files"):
        image_folder(tmp_path, spec)
    _write(tmp_path / "cat", "0.png", 1)
    with pytest.raises(ValueError, match="'cat' is not one of the model's classes"):
        image_folder(tmp_path, spec, net.metadata["labels"])
    _write(tmp_path, "loose.png", 1)
    with pytest.raises(ValueError, match="both class subfolders and loose"):
        image_folder(tmp_path, spec)
    with pytest.raises(ValueError, match="no data that goes with it"):
        as_dataset(None, minicnn.build("cifar_resnet20"))


def test_an_array_round_trips_through_its_pixels(net):
    spec = net.metadata["preprocessing"]
    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    x = np.stack([preprocess(p, spec) for p in pixels])
    data = from_array(x, spec, labels=[0, 1, 2])
    np.testing.assert_array_equal(data.pixels(2), pixels[2])
    np.testing.assert_allclose(data.images([1]), x[1:2], atol=1e-6)
    np.testing.assert_array_equal(as_dataset(pixels, net).images([0]), x[:1])
    assert len(data.subset([2, 0])) == 2 and list(data.subset([2, 0]).labels) == [2, 0]


def _section(name, fails=False):
    def make(context):
        if fails:
            raise RuntimeError("this section is broken")
        from minicnn.plots import figure
        fig, axes = figure(1, 1)
        axes[0, 0].plot([0, 1], [len(context.data), context.seed])
        context.add(fig, f"{name}.png", f"Figure {name}", "a caption")
    return types.SimpleNamespace(__name__=f"minicnn.cli.{name}", gallery=make)


def test_gallery_writes_every_figure_and_reports_a_failed_section(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gallery, "gallery_sections",
                        lambda: [_section("good"), _section("broken", fails=True),
                                 _section("after")])
    assert main(["gallery", "--out", str(tmp_path / "g"), "--seed", "3"]) == 1
    out = tmp_path / "g"
    assert (out / "good.png").read_bytes()[:4] == b"\x89PNG" and (out / "after.png").exists()
    page = (out / "index.html").read_text()
    assert "Figure good" in page and "Figure after" in page and "seed 3" in page
    assert "broken: failed" in page and "this section is broken" in page
    assert "1 section(s) failed: broken" in capsys.readouterr().out


def test_gallery_only_runs_the_named_sections(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gallery, "gallery_sections",
                        lambda: [_section("good"), _section("broken", fails=True),
                                 _section("after")])
    assert main(["gallery", "--out", str(tmp_path / "g"), "--only", "after"]) == 0
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["after.png", "index.html"]
    assert "seconds per section: after" in capsys.readouterr().out
    assert main(["gallery", "--out", str(tmp_path / "h"), "--only", "nope"]) == 2
    error = capsys.readouterr().err
    assert "unknown gallery section(s) nope" in error and "good, broken, after" in error
    assert not (tmp_path / "h").exists()  # refused before anything was written
