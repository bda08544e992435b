"""The feature subcommands (filters, activations, patches, occlusion) and their
gallery section, on the shipped digits model and its held-out digits."""
import numpy as np
import pytest

import minicnn
from minicnn.cli import inspect as inspect_cli
from minicnn.cli import main
from minicnn.datasets import as_dataset
from minicnn.gallery import GalleryContext


def is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [
    ["filters"],
    ["activations"],
    ["activations", "--layer", "res2", "--images", "3"],
    ["patches", "--limit", "40", "--k", "3", "--channels", "0", "5", "--guided"],
    ["occlusion", "--images", "0", "1", "--size", "16", "--stride", "8"],
    ["occlusion", "--images", "2", "--target", "res3:4", "--size", "8", "--stride", "8"],
])
def test_each_subcommand_writes_its_figure(argv, tmp_path, capsys):
    out = tmp_path / "figure.png"
    assert main(argv + ["--out", str(out)]) == 0
    assert is_png(out)
    assert f"wrote {out}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["occlusion", "--images", "400"], "--images: index 400 is out of range"),
    (["occlusion", "--size", "40"], "larger than the 32x32 image"),
    (["activations", "--layer", "res9"], "unknown layer name 'res9'"),
    (["activations", "--layer", "fc"], "has no maps"),
    (["patches", "--channels", "99", "--limit", "4"], "channel 99 is not valid"),
])
def test_bad_options_name_the_problem(argv, message, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path / "x.png")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_gallery_section_makes_every_figure(tmp_path):
    net = minicnn.load()
    context = GalleryContext(net, as_dataset(None, net).subset(range(30)), tmp_path)
    inspect_cli.gallery(context)
    names = [entry[1] for entry in context.entries]
    assert names == ["filters.png", "activations_overview.png", "activations_grid.png",
                     "top_patches.png", "occlusion.png"]
    assert all(is_png(tmp_path / name) for name in names)
    caption = dict((entry[1], entry[3]) for entry in context.entries)["occlusion.png"]
    assert "13x13 positions" in caption and "lowest values per image" in caption
    lowest = [float(v) for v in caption.split("lowest values per image: ")[1][:-1].split(", ")]
    assert len(lowest) == 4 and all(0 <= v <= 1 for v in lowest)
    assert np.isfinite(lowest).all()
