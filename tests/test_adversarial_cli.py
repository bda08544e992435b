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
    # PGD at 8/255 moves both digits to another class
    for line in printed.splitlines()[:2]:
        before, after = line.split(": ")[1].split(" (")[0].split(" -> ")
        assert before != after, line
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
        "adversarial_training.png", "adversarial_extra_class.png", "adversarial_transfer.png"]
    assert all((tmp_path / name).is_file() for name in names)
    captions = {entry[1]: entry[3] for entry in context.entries}
    assert "10 of 10 classes reach p >= 0.996" in captions["adversarial_fooling.png"]
    assert "fresh PGD at the runner-up: correct" in captions["adversarial_extra_class.png"]
    # the robustness caption carries the measured clean accuracy of the 50 digits
    images = np.stack([context.data.pixels(i) for i in range(50)])
    from minicnn.techniques.adversarial import predict_classes, images_from_pixels
    clean = (predict_classes(net, images_from_pixels(images)) == context.data.labels[:50]).mean()
    assert f"0/255 {clean:.0%}" in captions["adversarial_robustness.png"]
    # the training caption carries the shipped model's measured clean accuracy on 100 digits
    hundred = images_from_pixels(np.stack([context.data.pixels(i) for i in range(100)]))
    clean = (predict_classes(net, hundred) == context.data.labels[:100]).mean()
    assert f"before: 0/255 {clean:.1%}" in captions["adversarial_training.png"]


def test_robustness_and_transfer_print_what_the_library_measures(tmp_path, capsys):
    from minicnn.techniques.adversarial import (robust_accuracy, transfer_matrix,
                                                MultiCropModel, images_from_pixels)
    net = minicnn.load()
    data = as_dataset(None, net)
    images = images_from_pixels(np.stack([data.pixels(i) for i in range(20)]))
    labels = data.labels[:20]
    out = tmp_path / "robustness.png"
    assert main(["robustness", "--attack", "fgsm", "--eps", "0", "8/255", "--limit", "20",
                 "--out", str(out)]) == 0
    curve = robust_accuracy(net, images, labels, "fgsm", (0, 8 / 255))
    expected = "  ".join(f"{e * 255:.0f}/255 {a:.1%}" for e, a in curve.items())
    assert f"fgsm: {expected}" in capsys.readouterr().out and out.is_file()
    out = tmp_path / "transfer.png"
    assert main(["transfer", "--attack", "fgsm", "--eps", "8/255", "--limit", "20",
                 "--out", str(out)]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if ": " in line][:2]
    defended = MultiCropModel(net, crops=5, flips=False, padding=2)
    matrix, _ = transfer_matrix([net, defended], [net, defended], images, labels, "fgsm",
                                eps=8 / 255)
    for line, row in zip(printed, matrix, strict=True):
        np.testing.assert_allclose([float(v) for v in line.split(": ")[1].split()], row,
                                   atol=0.005)
    assert out.is_file()


def test_adversarial_train_prints_the_saved_models_pgd_accuracy(tmp_path, capsys):
    from minicnn.datasets import model_data
    from minicnn.techniques.adversarial import robust_accuracy, images_from_pixels, EPS_LIST
    out, saved = tmp_path / "training.png", tmp_path / "trained.h5"
    assert main(["adversarial", "train", "--limit", "64", "--eval-limit", "20",
                 "--save", str(saved), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    after = printed.split(" after PGD: ")[1].splitlines()[0]
    data = model_data(minicnn.load())  # the held-out split
    images = images_from_pixels(np.stack([data.pixels(i) for i in range(20)]))
    curve = robust_accuracy(minicnn.load(saved), images, data.labels[:20], "pgd", EPS_LIST,
                            steps=10, rng=0)
    assert after == "  ".join(f"{e * 255:.0f}/255 {a:.1%}" for e, a in curve.items())
    before = printed.split("before PGD: ")[1].splitlines()[0]
    assert before != after  # the saved model is the trained one, not the shipped one
    assert out.is_file() and png_size(out)[0] > 100


def test_adversarial_extra_class_prints_each_image_sets_outcome_and_draws_them(tmp_path,
                                                                              capsys):
    out = tmp_path / "extra.png"
    assert main(["adversarial", "extra-class", "--epochs", "1", "--limit", "32",
                 "--eval-limit", "10", "--out", str(out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "called adversarial" in line]
    assert [line.split(":")[0].strip() for line in lines] == [
        "clean", "old PGD (made on the original)", "fresh PGD", "fresh PGD at the runner-up"]
    for line in lines:  # each row's three shares of the 10 held-out images add up to 100 %
        shares = [float(part.split()[-1].rstrip("%")) for part in line.split(": ")[1].split(",")]
        assert sum(shares) == pytest.approx(100.0, abs=0.2)
    assert out.is_file() and png_size(out)[0] > 100


def test_training_data_without_the_models_own_data_halves_the_given_images():
    import minicnn
    from minicnn.cli.adversarial import training_data
    from minicnn.datasets import from_array
    net = minicnn.build("cifar_resnet20", rng=0)  # no data goes with a fresh network
    x = np.zeros((10, 3, 4, 4), np.float32)
    data = from_array(x, minicnn.load().metadata["preprocessing"], np.arange(10))  # label = id
    train, test = training_data(net, data, seed=1)
    seen = sorted([*train.labels, *test.labels])
    assert len(train) == len(test) == 5 and seen == list(range(10))  # disjoint, all used
    assert list(train.labels) != sorted(train.labels)  # shuffled, not the first half
    with pytest.raises(ValueError, match="give a folder of images"):
        training_data(net, None)
