"""Adversarial training, the extra "adversarial" class, and transfer, on the digits model.

    python demos/adversarial_digits.py            # all three (about half an hour on 2 cores)
    python demos/adversarial_digits.py --only training --epochs 5

The shipped digits ResNet-8 (weights/digits_resnet8.h5) and its data:
scikit-learn's digits as 32x32 images in [0, 1], split as the model was
trained (``minicnn.datasets.digits_split``). Every run is seeded. Writes
``results-*.json`` and figures into --out and prints the tables.

* ``training``: fine-tune the shipped model with Goodfellow's objective
  (alpha = 0.5, FGSM at --train-eps) and, as the control, with alpha = 1 (clean
  only, same epochs and steps); accuracy under FGSM and PGD before and after.
* ``extra``: the shipped model with an 11th class "adversarial", trained on the
  clean training digits and on PGD images made against the shipped model; then
  how the new network classifies clean digits, the old adversarial images, and
  fresh ones made against itself (untargeted, and targeted at the runner-up digit).
* ``transfer``: digits models trained from other seeds; the transfer matrix of
  PGD and FGSM images among them and the shipped one.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import minicnn  # noqa: E402
from minicnn.datasets import digit_images, digits_split  # noqa: E402
from minicnn.models import cifar_resnet  # noqa: E402
from minicnn.plots import save  # noqa: E402
from minicnn.plots.adversarial import robustness_figure, transfer_figure  # noqa: E402
from minicnn.techniques.adversarial import (  # noqa: E402
    adversarial_training, extra_class_defence, robust_accuracy, transfer_matrix,
    predict_classes, images_from_pixels, PixelModel)
from minicnn.train import fit  # noqa: E402

EPS = [0, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 0.1]


def digits():
    pixels, labels = digit_images()
    train, test = digits_split(labels, 0)
    images = images_from_pixels(pixels)
    return images[train], labels[train], images[test], labels[test]


def evaluate(net, images, labels, seed):
    return {"fgsm": robust_accuracy(net, images, labels, "fgsm", EPS),
            "pgd": robust_accuracy(net, images, labels, "pgd", EPS, steps=10, rng=seed)}


def table(name, result):
    for attack, values in result.items():
        print(f"{name:<28} {attack:>4}: " + "  ".join(f"{e * 255:>4.0f}/255 {a:6.1%}"
                                                   for e, a in values.items()), flush=True)


def training(args, results):
    x_train, y_train, x_test, y_test = digits()
    out = {"train_eps": args.train_eps, "epochs": args.epochs,
           "shipped": evaluate(minicnn.load(), x_test, y_test, args.seed)}
    table("shipped model", out["shipped"])
    for name, alpha in (("clean fine-tuning (alpha 1)", 1.0),
                        ("adversarial (alpha 0.5)", 0.5)):
        net = minicnn.load()
        optimizer = minicnn.SGD(net, lr=0.01, momentum=0.9, weight_decay=5e-4)
        start = time.time()
        history = adversarial_training(net, optimizer, x_train, y_train, args.train_eps,
                                       alpha=alpha, epochs=args.epochs, rng=args.seed)
        out[name] = evaluate(net, x_test, y_test, args.seed)
        out[name]["seconds"] = time.time() - start
        out[name]["history"] = history
        table(name, {k: v for k, v in out[name].items() if k in ("fgsm", "pgd")})
        if alpha == 0.5:
            minicnn.save(net, Path(args.out) / "digits_resnet8_adversarial.h5",
                         source={**net.metadata.get("source", {}),
                                 "fine_tuned_by": "demos/adversarial_digits.py",
                                 "train_eps": args.train_eps, "epochs": args.epochs})
    results["training"] = {k: ({a: {f"{e * 255:.1f}/255": acc for e, acc in r.items()}
                                for a, r in v.items() if a in ("fgsm", "pgd")}
                               | {a: v[a] for a in ("seconds", "history") if a in v})
                           if isinstance(v, dict) else v for k, v in out.items()}
    curves = {f"{name} PGD": out[name]["pgd"] for name in
              ("shipped", "clean fine-tuning (alpha 1)", "adversarial (alpha 0.5)")}
    save(robustness_figure(curves, "Digits ResNet-8 under PGD"),
         Path(args.figures) / "adversarial_training_digits.png")


def extra_class(args, results):
    x_train, y_train, x_test, y_test = digits()
    start = time.time()
    _, outcomes = extra_class_defence(minicnn.load(), x_train, y_train, x_test, y_test,
                                      args.train_eps, epochs=args.epochs, rng=args.seed,
                                      progress=True)
    out = {"eps": args.train_eps, "epochs": args.epochs, "seconds": time.time() - start,
           **outcomes}
    results["extra_class"] = out
    print(json.dumps(out, indent=1), flush=True)


def transfer(args, results):
    x_train, y_train, x_test, y_test = digits()
    nets = {"shipped (seed 0)": minicnn.load()}
    spec = nets["shipped (seed 0)"].metadata["preprocessing"]
    inputs = PixelModel(nets["shipped (seed 0)"]).to_input(x_train)
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        net = cifar_resnet(8, num_classes=10, rng=rng)
        net.metadata.update(preprocessing=spec, labels=[str(d) for d in range(10)])
        optimizer = minicnn.SGD(net, lr=0.05, momentum=0.9, weight_decay=5e-4)
        epochs = args.transfer_epochs
        schedule = lambda epoch: 0.05 * 0.5 * (1 + np.cos(np.pi * epoch / epochs))  # noqa: E731
        fit(net, optimizer, inputs, y_train, epochs=epochs, batch_size=64, rng=rng,
            schedule=schedule, progress=False)
        accuracy = float((predict_classes(net, x_test) == y_test).mean())
        print(f"seed {seed}: held-out accuracy {accuracy:.3f}", flush=True)
        nets[f"seed {seed}"] = net
    names = list(nets)
    out = {"names": names, "accuracy": {n: float((predict_classes(net, x_test) == y_test).mean())
                                        for n, net in nets.items()}}
    for attack, eps in (("pgd", 8 / 255), ("fgsm", 8 / 255), ("pgd", 0.1)):
        matrix, counts = transfer_matrix(list(nets.values()), list(nets.values()), x_test, y_test,
                                         attack, eps=eps,
                                         **({"rng": args.seed} if attack == "pgd" else {}))
        key = f"{attack} {eps * 255:.1f}/255"
        out[key] = {"matrix": matrix.tolist(), "counts": counts.tolist()}
        print(key)
        print(np.array2string(matrix, precision=3), flush=True)
        if attack == "pgd":  # the last one drawn, at the larger eps, is kept
            save(transfer_figure(matrix, names, title=f"Digits models, PGD eps {eps * 255:.1f}"
                                 f"/255 ({len(x_test)} held-out digits)"),
                 Path(args.figures) / "adversarial_transfer_digits.png")
    results["transfer"] = out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=["training", "extra", "transfer"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-eps", type=float, default=8 / 255)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--transfer-epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="adversarial-digits")
    parser.add_argument("--figures", default=None, help="folder for the figures (default --out)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    args.figures = args.figures or str(out)
    results = {}
    for name in args.only or ["training", "extra", "transfer"]:
        start = time.time()
        {"training": training, "extra": extra_class, "transfer": transfer}[name](args, results)
        results.setdefault("seconds", {})[name] = time.time() - start
        (out / f"results-{'-'.join(args.only or ['all'])}.json").write_text(
            json.dumps(results, indent=1, default=float))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
