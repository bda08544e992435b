"""Train the shipped default model: a CIFAR-style ResNet-8 on scikit-learn's digits.

    python weights/train_digits.py            # writes weights/digits_resnet8.h5

The 1,797 8x8 handwritten digits of ``sklearn.datasets.load_digits`` (real
data, bundled with scikit-learn, so this runs offline) are upsampled to 32x32
RGB images, the size at which saliency maps and filters read well. A seeded
stratified split keeps 20 % aside; the script reports held-out accuracy and
refuses to write a model below 98 %. It also writes a few held-out digits as
PNG files to demos/images/ for the README's first command.
"""
import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

import minicnn
from minicnn.datasets import digit_images, digits_split
from minicnn.images import preprocess
from minicnn.io.model_file import save
from minicnn.models import cifar_resnet
from minicnn.train import fit, accuracy

ROOT = Path(__file__).resolve().parents[1]
PREPROCESSING = {"color": "RGB", "scale": 1 / 255, "mean": [0.5, 0.5, 0.5],
                 "std": [0.5, 0.5, 0.5], "resize": None, "crop": None, "input_size": [32, 32]}
LABELS = [str(d) for d in range(10)]


def shift(batch, rng, pixels=2):
    """Augment by a random translation of up to +-2 pixels (background is -1 after normalization)."""
    out = np.full_like(batch, -1.0)
    for i, (dy, dx) in enumerate(rng.integers(-pixels, pixels + 1, size=(len(batch), 2))):
        src = batch[i, :, max(0, -dy):32 - max(0, dy), max(0, -dx):32 - max(0, dx)]
        out[i, :, max(0, dy):max(0, dy) + src.shape[1], max(0, dx):max(0, dx) + src.shape[2]] = src
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "weights" / "digits_resnet8.h5"))
    args = parser.parse_args()

    images, labels = digit_images()
    train_idx, test_idx = digits_split(labels, args.seed)
    x = np.stack([preprocess(im, PREPROCESSING) for im in images])
    rng = np.random.default_rng(args.seed)
    net = cifar_resnet(8, num_classes=10, rng=rng)
    optimizer = minicnn.SGD(net, lr=0.05, momentum=0.9, weight_decay=5e-4)
    schedule = lambda epoch: 0.05 * 0.5 * (1 + np.cos(np.pi * epoch / args.epochs))  # noqa: E731
    start = time.time()
    fit(net, optimizer, x[train_idx], labels[train_idx], epochs=args.epochs, batch_size=64,
        rng=rng, augment=shift, val=(x[test_idx], labels[test_idx]), schedule=schedule)
    held_out = accuracy(net, x[test_idx], labels[test_idx])
    print(f"held-out accuracy {held_out:.4f} on {len(test_idx)} digits "
          f"({time.time() - start:.0f} s of training)")
    if held_out < 0.98:
        raise SystemExit("held-out accuracy is below 98 %: not writing the model")
    save(net, args.out, arch="cifar_resnet8", variant="cifar", num_classes=10, labels=LABELS,
         preprocessing=PREPROCESSING,
         source={"trained_by": "weights/train_digits.py", "seed": args.seed,
                 "epochs": args.epochs, "data": "sklearn.datasets.load_digits",
                 "held_out_accuracy": held_out, "held_out_size": int(len(test_idx))})
    print(f"wrote {args.out}")
    for digit in range(10):
        idx = test_idx[labels[test_idx] == digit][0]
        Image.fromarray(images[idx]).save(ROOT / "demos" / "images" / f"digit_{digit}.png")
    print("wrote demos/images/digit_0.png ... digit_9.png")


if __name__ == "__main__":
    main()
