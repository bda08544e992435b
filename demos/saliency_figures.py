"""The README's saliency figures: every method on the shipped digits model and on
the real CIFAR-10 ResNet-56, and integrated gradients' completeness gap.

    python demos/saliency_figures.py [--docs docs/figures]

Writes ``saliency_digits.png``, ``saliency_cifar56.png`` (when ../shared/data
has the akamaster checkpoint and the test JPEGs; it is converted with minicnn
into a temporary folder) and ``saliency_completeness_digits.png``, as palette
PNGs small enough for the README, and prints each image's completeness gap.
The target is each image's predicted class.
"""
import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import minicnn  # noqa: E402
from minicnn.cli.saliency import METHODS, saliency_signals  # noqa: E402
from minicnn.datasets import as_dataset, image_folder  # noqa: E402
from minicnn.io.convert import convert  # noqa: E402
from minicnn.io.model_file import load  # noqa: E402
from minicnn.plots.saliency import completeness_figure, saliency_figure  # noqa: E402
from minicnn.techniques import completeness_gap, integrated_gradients  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def save_small(fig, path):
    """A 256-colour palette PNG."""
    from PIL import Image
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(256).save(path, optimize=True)
    print(f"wrote {path} ({Path(path).stat().st_size // 1024} KB)")


def methods_figure(net, data, indices, title, kinds):
    x = data.images(indices)
    predicted = net.forward(x).argmax(axis=1)
    signals, notes = saliency_signals(net, x, predicted, METHODS, progress=False)
    labels = net.metadata["labels"]
    for i, p, line in zip(indices, predicted, notes["integrated-gradients"]):
        print(f"  image {i} (predicted {labels[int(p)]}): integrated gradients' {line}")
    return saliency_figure([data.pixels(i) for i in indices], signals,
                           [f"predicted {labels[int(p)]}" for p in predicted], notes,
                           kinds=kinds, title=title, cell=1.05)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default="docs/figures", help="output folder")
    args = parser.parse_args()
    out = Path(args.docs)
    out.mkdir(parents=True, exist_ok=True)

    net = minicnn.load()
    digits = as_dataset(None, net)
    print("digits (SmoothGrad 50 samples, integrated gradients 50 steps):")
    save_small(methods_figure(net, digits, [0, 1], "Saliency on the shipped digits model",
                              ("signal", "map", "overlay")), out / "saliency_digits.png")

    x = digits.images(range(4))
    predicted = net.forward(x).argmax(axis=1)
    steps = [2, 4, 8, 16, 32, 64, 128]
    gaps = np.stack([completeness_gap(net, x, predicted, integrated_gradients(
        net, x, predicted, steps=m, progress=False)) for m in steps])
    rows = np.arange(len(x))
    differences = net.forward(x)[rows, predicted] - net.forward(np.zeros_like(x))[rows, predicted]
    for m, gap in zip(steps, gaps):
        print(f"  IG completeness gap at {m:>3} steps: mean {gap.mean():.4g}, max {gap.max():.4g}")
    print(f"  |S(x) - S(0)|: mean {np.abs(differences).mean():.4g}")
    save_small(completeness_figure(steps, gaps, differences),
               out / "saliency_completeness_digits.png")

    checkpoint = DATA / "resnet56-4bfd9763.th"
    if not (checkpoint.is_file() and (DATA / "test").is_dir()):
        print(f"no CIFAR-10 data at {DATA}: skipped the ResNet-56 figure")
        return
    with tempfile.TemporaryDirectory() as folder:
        convert(checkpoint, Path(folder) / "resnet56.h5")
        net56 = load(Path(folder) / "resnet56.h5")
    cifar = image_folder(DATA / "test", net56.metadata["preprocessing"],
                         net56.metadata["labels"])
    print("CIFAR-10 ResNet-56:")
    picks = [3000, 5000, 7000]  # a cat, a dog and a horse (the folders in class order)
    save_small(methods_figure(net56, cifar, picks, "Saliency on the CIFAR-10 ResNet-56",
                              ("map", "overlay")), out / "saliency_cifar56.png")


if __name__ == "__main__":
    main()
