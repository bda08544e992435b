"""Class models, inversion, the optimizer comparison, DeepDream and neural style with
the real CIFAR-10 ResNet-56.

    python demos/optimize_cifar.py OUT [--docs FOLDER] [--only SECTION ...]

Needs ../shared/data (see its README); the akamaster checkpoint is converted
with minicnn into a temporary folder. Prints every number the README quotes and
writes the figures into OUT (with --docs, palette PNGs for the README too):

* class models of the 10 classes (gradient ascent, 100 steps) and their softmax;
* inversion of three test images from each stage (L-BFGS, 200 iterations), the
  relative code error at the start (the mean image) and at the end;
* L-BFGS against gradient descent and Adam on the inversion of res2, 200
  evaluations each (the best of a grid of learning rates for the two others);
* DeepDream at res2 and res3 on dog.jpg at 128 pixels (the network is fully
  convolutional, so it takes any size);
* neural style on dog.jpg at 96 pixels with a procedural wave texture (made
  here, seeded) as the style, style weight 1e6, for each statistic and with the
  colours kept (whose style loss is measured on the luminance images it works on).

``--only`` runs some of the sections: class, inversion, comparison, dream, style.
"""
import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minicnn.cli.optimize import load_input, softmax  # noqa: E402
from minicnn.images import normalize  # noqa: E402
from minicnn.io.convert import convert  # noqa: E402
from minicnn.io.model_file import load  # noqa: E402
from minicnn.plots import save  # noqa: E402
from minicnn.plots.optimize import (class_model_figure, image_grid, inversion_figure,  # noqa: E402
                                    loss_curves)
from minicnn.techniques import (class_model, code_error, compare_optimizers, dream,  # noqa: E402
                                invert, style_objective, style_transfer)
from minicnn.techniques.style import luminance_image  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = SHARED / "cifar10"
SECTIONS = ["class", "inversion", "comparison", "dream", "style"]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def save_small(fig, path, dpi=80):
    """A 256-colour palette PNG, small enough for the README."""
    from PIL import Image
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(256).save(path, optimize=True)
    return path


def write(fig, name, args):
    save(fig, args.out / name)
    if args.docs:
        save_small(fig, args.docs / name)
    print(f"  wrote {args.out / name}")


def photo(net, name, index):
    from minicnn.images import load_image, preprocess
    path = sorted((DATA / "test" / name).glob("*.jpg"))[index]
    return preprocess(load_image(path), net.metadata["preprocessing"])[None]


def wave_texture(size, seed=0):
    """Coloured interfering waves: a style image with a clear texture (seeded)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    channels = []
    for _ in range(3):
        fy, fx, phase = rng.uniform(3, 9), rng.uniform(3, 9), rng.uniform(0, 2 * np.pi)
        channels.append(np.sin(2 * np.pi * (fy * y + fx * x + 0.3 * np.sin(6 * np.pi * y))
                               + phase))
    pixels = (np.stack(channels, axis=2) * 0.5 + 0.5) * 255
    return np.clip(pixels, 0, 255).astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--docs", type=Path, help="also write small figures here")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS,
                        help="run only these sections (default: all)")
    args = parser.parse_args()
    if not (DATA / "test").is_dir():
        sys.exit(f"real CIFAR-10 data not found at {DATA}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.docs:
        args.docs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cifar_resnet56.h5"
        convert(DATA / "resnet56-4bfd9763.th", path)
        net = load(path)
    spec = net.metadata["preprocessing"]
    runs = {"class": class_models, "inversion": inversion, "comparison": comparison,
            "dream": dreams, "style": styles}
    for section in args.only:
        runs[section](net, spec, args)


def class_models(net, spec, args):
    print("class models (gradient ascent, lr 1, l2 1e-3, jitter 4, blur every 10, 100 steps):")
    start = time.perf_counter()
    images, _ = class_model(net, list(range(10)), steps=100, progress=False)
    probabilities = softmax(net.forward(images))[np.arange(10), np.arange(10)]
    for name, p in zip(CLASSES, probabilities):
        print(f"  {name:<11} softmax {p:.5f}")
    print(f"  lowest {probabilities.min():.5f}; {time.perf_counter() - start:.1f} s")
    write(class_model_figure(images, CLASSES, probabilities, spec,
                             title="CIFAR ResNet-56 class models"),
          "optimize_class_models_cifar56.png", args)


def inversion(net, spec, args):
    print("inversion from each stage (L-BFGS-B, 200 iterations, from the mean image):")
    for name, index in (("cat", 0), ("ship", 0), ("horse", 1)):
        image = photo(net, name, index)
        recon, errors = {}, {}
        for layer in ("res2", "res3", "res4"):
            begin = code_error(net, 0 * image, image, layer)[0]
            x, history = invert(net, image, layer, steps=200, progress=False)
            recon[layer], errors[layer] = x[0], code_error(net, x, image, layer)[0]
            print(f"  {name:<6} {layer}: code error {begin:.3f} -> {errors[layer]:.4f} in "
                  f"{len(history)} iterations, {history.evaluations[-1]} evaluations")
        if name == "cat":
            write(inversion_figure(image[0], recon, errors, spec,
                                   title="CIFAR ResNet-56: inversion per stage"),
                  "optimize_inversion_cifar56.png", args)


def comparison(net, spec, args):
    print("L-BFGS, gradient descent and Adam on the inversion of res2, 200 evaluations each:")
    image = photo(net, "ship", 0)
    results = compare_optimizers(net, image, "res2", evaluations=200, progress=False)
    labels = {}
    for name, (x, history, lr) in results.items():
        error = code_error(net, x, image, "res2")[0]
        labels[name] = name + ("" if lr is None else f" (lr {lr:g})")
        print(f"  {labels[name]:<18} final loss {history.loss[-1]:.5f}, code error {error:.4f}, "
              f"{history.evaluations[-1]} evaluations")
    write(loss_curves({n: r[1] for n, r in results.items()}, labels=labels,
                      title="Inverting res2 of ResNet-56"),
          "optimize_lbfgs_cifar56.png", args)


def dreams(net, spec, args):
    print("DeepDream on dog.jpg at 128 pixels (3 octaves x 10 steps, step 1.5, jitter 4):")
    dog = load_input(SHARED / "imagenet" / "dog.jpg", net, 128)
    dreamed = [dream(net, dog, layer, octaves=3, steps=10, jitter=4, progress=False)[0][0]
              for layer in ("res2", "res3")]
    write(image_grid([dog[0], *dreamed], ["dog.jpg", "dream res2", "dream res3"], spec,
                     title="CIFAR ResNet-56: DeepDream", cell=2.2),
          "optimize_dream_cifar56.png", args)


def styles(net, spec, args):
    print("neural style on dog.jpg at 96 pixels, wave texture as style (L-BFGS, 200 iterations,"
          " content res3, style conv1_relu + res2..res4, style weight 1e6):")
    content = load_input(SHARED / "imagenet" / "dog.jpg", net, 96)
    style = normalize(wave_texture(96), spec)[None]
    row, titles = [content[0], style[0]], ["content", "style"]
    for statistic, keep in (("gram", False), ("mean", False), ("mean_std", False),
                            ("gram", True)):
        start = time.perf_counter()
        x, history = style_transfer(net, content, style, statistic=statistic, steps=200,
                                    style_weight=1e6, preserve_colors=keep, progress=False)
        if keep:  # the transfer ran on luminance: measure it there
            gray = luminance_image(content, spec)
            measure = style_objective(net, gray, luminance_image(style, spec, match=content),
                                      content_weight=0.0, style_weight=1.0, statistic=statistic)
            before, after = measure(gray)[0], measure(luminance_image(x, spec))[0]
        else:
            measure = style_objective(net, content, style, content_weight=0.0, style_weight=1.0,
                                      statistic=statistic)
            before, after = measure(content)[0], measure(x)[0]
        drop = 1 - after / before
        label = statistic + (", colours kept" if keep else "")
        print(f"  {label:<20} style loss {before:.4g} -> {after:.4g} "
              f"(-{drop:.1%}), {history.evaluations[-1]} evaluations, "
              f"{time.perf_counter() - start:.1f} s")
        row.append(x[0])
        titles.append(f"{label}\n{'luminance ' if keep else ''}style loss -{drop:.0%}")
    write(image_grid(row, titles, spec, title="CIFAR ResNet-56: neural style", cell=1.9),
          "optimize_style_cifar56.png", args)


if __name__ == "__main__":
    main()
