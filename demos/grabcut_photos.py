"""GrabCut from saliency on two real photos, with the real CIFAR-10 ResNet-56.

    python demos/grabcut_photos.py OUT [--scale 4] [--docs FOLDER]

Needs ../shared/data (see its README): the akamaster ResNet-56 checkpoint,
converted with minicnn into a temporary folder, and imagenet/cat.jpg and
dog.jpg (cat and dog are CIFAR-10 classes). Each photo is cropped to its
centred square; the network sees it resized to 32x32, the vanilla-gradient
saliency map of the photo's class (cat, dog) is upsampled bilinearly to
32 * scale pixels a side, and GrabCut cuts the object out of the photo at that
resolution (seeds: saliency above its 95 % quantile and below its 30 %).
Writes ``grabcut_photos.png`` into OUT (and a palette PNG into --docs).
"""
import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minicnn.images import fit_to_input, load_image, normalize  # noqa: E402
from minicnn.io.convert import convert  # noqa: E402
from minicnn.io.model_file import load  # noqa: E402
from minicnn.plots import save  # noqa: E402
from minicnn.plots.segmentation import segmentation_figure  # noqa: E402
from minicnn.techniques.grabcut import seeds, segment_object  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PHOTOS = {"cat.jpg": "cat", "dog.jpg": "dog"}


def centre_square(photo):
    height, width = photo.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return photo[top:top + side, left:left + side]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--docs", type=Path, help="also write a small figure here")
    args = parser.parse_args()
    if not (DATA / "imagenet" / "cat.jpg").is_file():
        sys.exit(f"the photos were not found in {DATA / 'imagenet'}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cifar_resnet56.h5"
        convert(DATA / "cifar10" / "resnet56-4bfd9763.th", path)
        net = load(path)
    labels = net.metadata["labels"]
    results, titles = [], []
    for name, label in PHOTOS.items():
        photo = centre_square(load_image(DATA / "imagenet" / name))
        start = time.perf_counter()
        result = segment_object(net, photo, target=labels.index(label), scale=args.scale)
        seconds = time.perf_counter() - start
        spec = net.metadata["preprocessing"]
        logits = net.forward(normalize(fit_to_input(photo, spec), spec)[None], cache=False)[0]
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        predicted = labels[int(logits.argmax())]
        print(f"{name}: predicted {predicted} ({probabilities.max():.1%}), p({label}) = "
              f"{probabilities[labels.index(label)]:.1%}; mask {result.mask.mean():.1%} of "
              f"{result.image.shape[0]}x{result.image.shape[1]} pixels, {seconds:.1f} s")
        results.append(result)
        titles.append(f"{name}: saliency of '{label}'")
    fig = segmentation_figure([r.image for r in results], [r.saliency for r in results],
                              [r.mask for r in results], [seeds(r.saliency) for r in results],
                              titles, title="GrabCut from the saliency of CIFAR ResNet-56 "
                              f"(32x32 input, map upsampled {args.scale}x)", cell=2.4)
    print("wrote", save(fig, args.out / "grabcut_photos.png"))
    if args.docs:
        from PIL import Image
        args.docs.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=75)
        buffer.seek(0)
        path = args.docs / "grabcut_photos.png"
        Image.open(buffer).convert("RGB").quantize(256).save(path, optimize=True)
        print("wrote", path)


if __name__ == "__main__":
    main()
