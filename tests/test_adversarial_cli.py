"""The adversarial subcommands and their gallery section, on the shipped digits model."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import minicnn
from minicnn.cli import main
from minicnn.datasets import as_dataset
from minicnn.gallery import GalleryContext

DIGITS = Path(__file__).resolve().parents[1] / "demos" / "images"


def png_size(path):
    with Image.open(path) as image:
        return image.size


def test_attack_and_fool_write_figures_and_say_what_happened(tmp_path, capsys):
    out = tmp_path / "attack.png"
    assert main(["attack", str(DIGITS / "digit_3.png"), str(DIGITS / "digit_5.png"),
                 "--method", "pgd", "--eps", "8/255", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "digit_3.png: 3 -> " in printed and f"wrote {out}" in printed
    assert png_size(out)[0] > 100
    out = tmp_path / "fool.png"
    assert main(["fool", "--target", "7", "--from", str(DIGITS / "digit_3.png"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    probability = float(printed.split("probability ")[1].split()[0])
    assert probability >= 0.996 and out.is_file()


@pytest.mark.parametrize("argv, message", [
    (["attack", "IMAGE", "--eps", "2"], "outside [0, 1]"),
    (["attack", "IMAGE", "--label", "12"], "class 12 is out of range"),
    (["attack", "IMAGE", "--eps", "eight"], "not a number or a fraction"),
    (["fool", "--target", "10"], "class 10 is out of range"),
    (["fool", "--target", "seven"], "unknown class 'seven'"),
])
def test_bad_options_are_refused_clearly(argv, message, tmp_path, capsys):
    argv = [str(DIGITS / "digit_3.png") if a == "IMAGE" else a for a in argv]
    assert main(argv + ["--out", str(tmp_path / "x.png")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_gallery_section_makes_every_attack_figure(tmp_path):
    from minicnn.cli import adversarial
    net = minicnn.load()
    context = GalleryContext(net, as_dataset(None, net), tmp_path, seed=0)
    context.section = "adversarial"
    adversarial.gallery(context)
    names = [entry[1] for entry in context.entries]
    assert names == [f"adversarial_{m}.png" for m in ("fgsm", "pgd", "deepfool", "cw")] + [
        "adversarial_fooling.png", "adversarial_linear.png", "adversarial_robustness.png",
        "adversarial_transfer.png"]
    assert all((tmp_path / name).is_file() for name in names)
    captions = {entry[1]: entry[3] for entry in context.entries}
    assert "10 of 10 classes reach p >= 0.996" in captions["adversarial_fooling.png"]
    # the robustness caption carries the measured clean accuracy of the 50 digits
    images = np.stack([context.data.pixels(i) for i in range(50)])
    from minicnn.techniques.adversarial import predict_classes, images_from_pixels
    clean = (predict_classes(net, images_from_pixels(images)) == context.data.labels[:50]).mean()
    assert f"0/255 {clean:.0%}" in captions["adversarial_robustness.png"]
