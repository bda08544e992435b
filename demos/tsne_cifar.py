"""t-SNE of the real CIFAR-10 ResNet-56's codes of the 10,000 test JPEGs.

    python demos/tsne_cifar.py OUT [--limit N] [--grid SIDE] [--docs FOLDER]

Needs ../shared/data/cifar10 (see its README); the akamaster checkpoint is
converted with minicnn into a temporary folder. Every test image's code (the
64-D global average pool, the classifier's input) is computed in one pass,
the logits from it by the classifier, and the codes are mapped to 2-D with
t-SNE (perplexity 30, seed 0). Prints the leave-one-out 5-NN accuracy in the
codes and in the map beside the network's own accuracy, and writes into OUT
the scatter (``tsne_cifar.png``), the image grid of SIDE x SIDE images (a
seeded random subset, ``tsne_cifar_grid.png``) and ``tsne_cifar.json``. With
--docs, small versions (palette PNGs under 150 KB: the scatter, and a 16 x 16
grid of 24-pixel thumbnails) go there too.
"""
import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minicnn.datasets import image_folder  # noqa: E402
from minicnn.io.convert import convert  # noqa: E402
from minicnn.io.model_file import load  # noqa: E402
from minicnn.plots import save  # noqa: E402
from minicnn.plots.embedding import embedding_scatter, image_grid_figure, image_mosaic  # noqa: E402
from minicnn.techniques import codes, embed, grid_assignment, knn_accuracy  # noqa: E402
from minicnn.techniques.codes import code_layer  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def save_small(fig, path, dpi):
    """Save ``fig`` as a 256-colour palette PNG (small enough for the README)."""
    from PIL import Image
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(256).save(path, optimize=True)
    return path


def save_small_grid(data, points, path, side=16, thumbnail=24):
    """A side x side grid of a seeded subset, thumbnails of ``thumbnail`` pixels,
    written directly as a palette PNG (no figure around it)."""
    from PIL import Image
    chosen = np.sort(np.random.default_rng(0).choice(len(data), side * side, replace=False))
    images = np.stack([np.asarray(Image.fromarray(data.pixels(int(i))).resize(
        (thumbnail, thumbnail), Image.LANCZOS)) for i in chosen])
    mosaic = image_mosaic(images, grid_assignment(points[chosen], side, side), side, side)
    Image.fromarray(mosaic).quantize(256).save(path, optimize=True)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--limit", type=int, default=10000, help="images (every k-th file)")
    parser.add_argument("--grid", type=int, default=40, help="image grid side (default 40)")
    parser.add_argument("--docs", type=Path, help="also write small figures here")
    parser.add_argument("--batch-size", type=int, default=200)
    args = parser.parse_args()
    if not (DATA / "test").is_dir():
        sys.exit(f"real CIFAR-10 data not found at {DATA}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cifar_resnet56.h5"
        convert(DATA / "resnet56-4bfd9763.th", path)
        net = load(path)
    data = image_folder(DATA / "test", net.metadata["preprocessing"], net.metadata["labels"])
    data = data.subset(np.linspace(0, len(data) - 1, min(args.limit, len(data))).astype(int))
    layer = code_layer(net)
    start = time.perf_counter()
    features = codes(net, data, batch_size=args.batch_size)
    seconds_codes = time.perf_counter() - start
    logits = net[net.names()[-1]].forward(features)  # the classifier on the codes
    network = float(np.mean(logits.argmax(axis=1) == data.labels))
    start = time.perf_counter()
    points = embed(features, perplexity=30, rng=0)
    seconds_tsne = time.perf_counter() - start
    in_codes = knn_accuracy(features, data.labels, k=5)
    in_map = knn_accuracy(points, data.labels, k=5)
    results = {"images": len(data), "layer": layer, "dimensions": int(features.shape[1]),
               "network_accuracy": network, "knn5_codes": in_codes, "knn5_tsne": in_map,
               "seconds_codes": seconds_codes, "seconds_tsne": seconds_tsne}
    print(json.dumps(results, indent=1))
    note = (f"{len(data)} CIFAR-10 test images, ResNet-56 codes ({layer}, "
            f"{features.shape[1]}-D), perplexity 30.\nLeave-one-out 5-NN accuracy: "
            f"{in_codes:.2%} in the codes, {in_map:.2%} in the 2-D map; the network: "
            f"{network:.2%}")
    scatter = embedding_scatter(points, data.labels, data.classes, note=note,
                                title="t-SNE of CIFAR-10 ResNet-56 codes")
    side = args.grid
    chosen = np.sort(np.random.default_rng(0).choice(len(data), min(side * side, len(data)),
                                                     replace=False))
    cells = grid_assignment(points[chosen], side, side)
    images = np.stack([data.pixels(int(i)) for i in chosen])
    grid = image_grid_figure(images, cells, side, side, size=max(8.0, side * 0.32),
                             title=f"{len(chosen)} CIFAR-10 test images on the t-SNE map")
    for fig, name in ((scatter, "tsne_cifar.png"), (grid, "tsne_cifar_grid.png")):
        print("wrote", save(fig, args.out / name))
    (args.out / "tsne_cifar.json").write_text(json.dumps(results, indent=1))
    if args.docs:
        args.docs.mkdir(parents=True, exist_ok=True)
        print("wrote", save_small(scatter, args.docs / "tsne_cifar.png", 70))
        print("wrote", save_small_grid(data, points, args.docs / "tsne_cifar_grid.png"))


if __name__ == "__main__":
    main()
