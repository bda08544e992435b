"""Adversarial examples on the real CIFAR-10 ResNets: the measured numbers of the README.

    python demos/adversarial_cifar.py                      # everything (about an hour on 2 cores)
    python demos/adversarial_cifar.py --only robust --images 200

Needs ../shared/data/cifar10 (the akamaster checkpoints and the test JPEGs,
see its README); the checkpoints are converted with minicnn into a temporary
folder. Images: the first N/10 files of each class folder (sorted). Writes
``results.json`` and figures into --out and prints each table.

Sections: ``robust`` (accuracy under FGSM and PGD, eps 0..8/255, ResNet-20 and
-56), ``fooling`` (every class from noise and from real images, p >= 0.996),
``minimal`` (DeepFool and CW-L2 on correctly classified images: success and
median L2), ``multicrop`` (the multi-crop defence, 5 crops x 2 mirrors: clean,
attacked through the single crop, and attacked through the crops themselves),
``transfer`` (the 4 x 4 transfer matrix).
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minicnn.images import load_image  # noqa: E402
from minicnn.io.convert import convert  # noqa: E402
from minicnn.io.model_file import load  # noqa: E402
from minicnn.plots import save  # noqa: E402
from minicnn.plots.adversarial import (  # noqa: E402
    robustness_figure, transfer_figure, attack_figure)
from minicnn.techniques.adversarial import (  # noqa: E402
    robust_accuracy, transfer_matrix, fooling_image, deepfool, carlini_wagner_l2,
    predict_classes, images_from_pixels, MultiCropModel, pgd, PixelModel)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
CHECKPOINTS = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th",
               44: "resnet44-014dd654.th", 56: "resnet56-4bfd9763.th"}
EPS = [0, 1 / 255, 2 / 255, 4 / 255, 8 / 255]


def test_images(count):
    classes = sorted(p.name for p in (DATA / "test").iterdir() if p.is_dir())
    per_class = count // len(classes)
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted((DATA / "test" / name).glob("*.jpg"))[:per_class]
        paths += files
        labels += [label] * len(files)
    return images_from_pixels(np.stack([load_image(p) for p in paths])), np.array(labels), classes


def spread(count, images, labels):
    """``count`` images spread over the whole set (every k-th), so every class is in."""
    step = max(1, len(images) // count)
    return images[::step][:count], labels[::step][:count]


def networks(folder):
    nets = {}
    for depth, name in CHECKPOINTS.items():
        path = Path(folder) / f"cifar_resnet{depth}.h5"
        convert(DATA / name, path)
        nets[f"ResNet-{depth}"] = load(path)
    return nets


def robust(nets, images, labels, args, results):
    curves = {}
    runs = args.robust_run or [f"{name}:{attack}" for name in ("ResNet-20", "ResNet-56")
                               for attack in ("fgsm", "pgd")]
    for name, attack in (run.split(":") for run in runs):
        start = time.time()
        options = {"steps": 10, "rng": args.seed} if attack == "pgd" else {}
        result = robust_accuracy(nets[name], images, labels, attack, eps_list=EPS,
                                 progress=True, **options)
        curves[f"{name} {attack.upper()}"] = result
        print(f"{name} {attack:>4}: " + ", ".join(f"{e * 255:.0f}/255 {a:.1%}"
                                                  for e, a in result.items())
              + f"  ({time.time() - start:.0f} s)", flush=True)
    results["robust"] = {k: {f"{e * 255:.0f}/255": a for e, a in v.items()}
                         for k, v in curves.items()}
    if any(k.startswith("ResNet-20") for k in curves):
        save(robustness_figure({k: v for k, v in curves.items() if k.startswith("ResNet-20")},
                               f"CIFAR-10 ResNet-20, {len(images)} test JPEGs"),
             Path(args.figures) / "adversarial_robustness_cifar.png")


def fooling(nets, images, labels, args, results, classes):
    net = nets["ResNet-20"]
    _, info = fooling_image(net, np.arange(10), "noise", rng=args.seed, max_steps=500)
    noise = {"reached": int(info["reached"].sum()),
             "min_probability": float(info["probability"].min()),
             "max_steps": int(info["steps"].max()), "median_linf": float(np.median(info["linf"]))}
    # one correctly classified image per class, pushed to each of the 9 other classes
    predicted = predict_classes(net, images)
    picks = [int(np.flatnonzero((labels == k) & (predicted == k))[0]) for k in range(10)]
    starts = np.repeat(images[picks], 9, axis=0)
    targets = np.array([t for k in range(10) for t in range(10) if t != k])
    fooled, info_real = fooling_image(net, targets, starts, max_steps=500)
    real = {"reached": int(info_real["reached"].sum()), "runs": len(targets),
            "min_probability": float(info_real["probability"].min()),
            "median_linf": float(np.median(info_real["linf"])),
            "max_linf": float(info_real["linf"].max()),
            "median_l2": float(np.median(info_real["l2"]))}
    results["fooling"] = {"noise": noise, "real": real}
    print(f"from noise: {noise}\nfrom real images: {real}", flush=True)
    show = np.arange(0, 90, 9)[:5]
    probs = PixelModel(net).probabilities(fooled[show])
    fig = attack_figure(starts[show], fooled[show],
                        (labels[np.repeat(picks, 9)][show],
                         PixelModel(net).probabilities(starts[show]).max(axis=1)),
                        (probs.argmax(axis=1), probs.max(axis=1)), classes,
                        "Real CIFAR images pushed to another class (p >= 99.6 %)")
    save(fig, Path(args.figures) / "adversarial_fooling_cifar.png")


def minimal(nets, images, labels, args, results):
    net = nets["ResNet-20"]
    x, y = spread(args.minimal_images, images, labels)
    right = predict_classes(net, x) == y
    x, y = x[right], y[right]
    out = {}

    def batched(attack, *arrays, **options):  # 100 images at a time: bounded memory
        infos = [attack(net, *(a[i:i + 100] for a in arrays), **options)[1]
                 for i in tqdm(range(0, len(x), 100), desc=attack.__name__, unit="batch")]
        return {key: np.concatenate([info[key] for info in infos]) for key in infos[0]}

    start = time.time()
    info = batched(deepfool, x)
    out["deepfool"] = {"images": int(len(x)), "success": int(info["success"].sum()),
                       "median_l2": float(np.median(info["l2"])),
                       "median_linf_255": float(np.median(info["linf"]) * 255),
                       "seconds": time.time() - start}
    start = time.time()
    info = batched(carlini_wagner_l2, x, y, c=1.0, kappa=0.0, steps=100, lr=0.001)
    out["carlini_wagner"] = {"images": int(len(x)), "success": int(info["success"].sum()),
                             "median_l2": float(np.median(info["l2"][info["success"]])),
                             "median_linf_255": float(np.median(info["linf"]) * 255),
                             "seconds": time.time() - start, "c": 1.0, "steps": 100,
                             "lr": 0.001}
    results["minimal"] = out
    print(json.dumps(out, indent=1), flush=True)


def multicrop(nets, images, labels, args, results):
    """Single crop against 5 crops x 2 mirrors (padding 4, as the checkpoints were
    trained): attacked through the single crop, and through the crops themselves."""
    net = nets["ResNet-20"]
    x, y = spread(args.multicrop_images, images, labels)
    defended = MultiCropModel(net, crops=5, flips=True, padding=4)

    def attacked(model, eps):
        return np.concatenate([pgd(model, x[i:i + 50], y[i:i + 50], eps,
                                   steps=args.multicrop_steps, rng=args.seed)
                               for i in range(0, len(x), 50)])

    curves = {"single crop, attacked directly": {}, "10 views, single-crop attack": {},
              "10 views, adaptive attack": {}}
    for eps in [0] + [e / 255 for e in args.multicrop_eps]:
        start = time.time()
        against_single = x if eps == 0 else attacked(net, eps)
        against_crops = x if eps == 0 else attacked(defended, eps)
        row = (float((predict_classes(net, against_single) == y).mean()),
               float((predict_classes(defended, against_single, 50) == y).mean()),
               float((predict_classes(defended, against_crops, 50) == y).mean()))
        for curve, accuracy in zip(curves.values(), row):
            curve[eps] = accuracy
        print(f"{eps * 255:.0f}/255: single {row[0]:.1%}, multi-crop vs single-crop attack "
              f"{row[1]:.1%}, multi-crop vs adaptive {row[2]:.1%}  ({time.time() - start:.0f} s)",
              flush=True)
    results["multicrop"] = {"images": len(x), "seed": args.seed, "views": len(defended.views),
                            "pgd_steps": args.multicrop_steps,
                            **{k: {f"{e * 255:.0f}/255": a for e, a in v.items()}
                               for k, v in curves.items()}}
    save(robustness_figure(curves, f"ResNet-20, PGD {args.multicrop_steps} steps, {len(x)} "
                                   "CIFAR test JPEGs"),
         Path(args.figures) / ("adversarial_multicrop_cifar.png" if args.multicrop_steps == 10
                               else f"adversarial_multicrop_cifar_{args.multicrop_steps}steps.png"))


def transfer(nets, images, labels, args, results):
    x, y = spread(args.transfer_images, images, labels)
    names = list(nets)
    for attack, eps in (("pgd", 8 / 255), ("fgsm", 8 / 255), ("pgd", 2 / 255)):
        start = time.time()
        matrix, counts = transfer_matrix(list(nets.values()), list(nets.values()), x, y, attack,
                                         eps=eps, progress=True, **({"rng": args.seed}
                                                                    if attack == "pgd" else {}))
        key = f"{attack} {eps * 255:.0f}/255"
        results.setdefault("transfer", {})[key] = {"names": names, "matrix": matrix.tolist(),
                                                   "counts": counts.tolist()}
        print(key, f"({time.time() - start:.0f} s)")
        print(np.array2string(matrix, precision=3), flush=True)
        if key == "pgd 2/255":
            save(transfer_figure(matrix, names, title=f"Transfer of PGD, eps 2/255 ({len(x)} "
                                 "CIFAR test images)"),
                 Path(args.figures) / "adversarial_transfer_cifar.png")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append",
                        choices=["robust", "fooling", "minimal", "multicrop", "transfer"])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--robust-run", action="append",
                        choices=[f"ResNet-{d}:{a}" for d in (20, 56) for a in ("fgsm", "pgd")],
                        help="robust section: only these network:attack runs (default all four)")
    parser.add_argument("--minimal-images", type=int, default=100)
    parser.add_argument("--multicrop-images", type=int, default=500)
    parser.add_argument("--multicrop-steps", type=int, default=10,
                        help="PGD steps of both multicrop attacks (default 10)")
    parser.add_argument("--multicrop-eps", type=float, nargs="+", default=[1, 2, 4, 8],
                        help="multicrop eps in grey levels (default 1 2 4 8)")
    parser.add_argument("--transfer-images", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="adversarial-cifar")
    parser.add_argument("--figures", default=None, help="folder for the figures (default --out)")
    args = parser.parse_args()
    if not (DATA / "test").is_dir():
        sys.exit(f"CIFAR-10 data not found at {DATA}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.figures = args.figures or str(out)
    images, labels, classes = test_images(args.images)
    results = {"images": len(images)}
    with tempfile.TemporaryDirectory() as folder:
        nets = networks(folder)
        for name in args.only or ["robust", "fooling", "minimal", "multicrop", "transfer"]:
            start = time.time()
            if name == "fooling":
                fooling(nets, images, labels, args, results, classes)
            else:
                globals()[name](nets, images, labels, args, results)
            results.setdefault("seconds", {})[name] = time.time() - start
            (out / f"results-{'-'.join(args.only or ['all'])}.json").write_text(
                json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
