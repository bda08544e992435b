r"""Adversarial training, and the extra "adversarial" class.

Goodfellow et al. (2015) train on a mix of clean and FGSM images, made against
the current network at every mini-batch:

.. math::
    \tilde L(\theta) = \alpha\, L(\theta, x, y)
                     + (1 - \alpha)\, L\big(\theta,\ \mathrm{FGSM}_\epsilon(x),\ y\big),
    \qquad \alpha = 0.5

The FGSM images are made with the network in eval mode (as it will be
attacked), then the clean and adversarial halves go through one training
forward pass together, weighted by :math:`\alpha` and :math:`1 - \alpha`.

The other idea (the lecture's question: can a network learn to say "this is
adversarial"?) labels adversarial images as one more class:
:func:`with_extra_class` gives a network one more output, initialized from a
trained one.
"""
import numpy as np
from tqdm.auto import tqdm

from ...backend import to_cpu, device_of
from ...layers import softmax, log_softmax
from ...layers.base import as_generator
from ...models.cifar import cifar_resnet
from .attacks import fgsm
from .pixel_space import PixelModel, check_images, check_labels, check_eps


def adversarial_training(net, optimizer, images, labels, eps, alpha=0.5, epochs=1, batch_size=64,
                         rng=0, augment=None, progress=True):
    """Train ``net`` in place on images in [0, 1] with Goodfellow's mixed objective.

    ``augment(images, rng)`` may transform each clean batch first. Returns a list
    of per-epoch dicts: the clean and the adversarial loss, and the accuracy on
    the FGSM images of each batch.
    """
    check_images(images)
    model = PixelModel(net)
    labels = check_labels(net, labels, len(images))
    eps = check_eps(eps)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], received {alpha}")
    rng = as_generator(rng)
    xp = net.array_module()
    history = []
    for epoch in range(epochs):
        order = rng.permutation(len(images))
        totals = np.zeros(3)
        batches = range(0, len(images), batch_size)
        bar = tqdm(batches, desc=f"adversarial epoch {epoch + 1}/{epochs}", disable=not progress,
                   leave=False)
        for start in bar:
            index = order[start:start + batch_size]
            clean, target = images[index], labels[index]
            if augment is not None:
                clean = augment(clean, rng)
            adversarial = fgsm(model, clean, target, eps)  # in eval mode, as it is attacked
            both = xp.concatenate([model.to_input(clean), model.to_input(adversarial)])
            net.train()
            logits = net.forward(both)
            n = len(index)
            rows, y = xp.arange(2 * n), xp.asarray(np.concatenate([target, target]))
            losses = -log_softmax(logits)[rows, y]
            weight = xp.asarray(np.repeat([alpha / n, (1 - alpha) / n], n), dtype=logits.dtype)
            dlogits = softmax(logits)
            dlogits[rows, y] -= 1
            net.backward(dlogits * weight[:, None], input_grad=False)
            optimizer.step()
            fooled = logits[n:].argmax(axis=1) != y[n:]
            totals += [float(losses[:n].sum()), float(losses[n:].sum()),
                       float(n - fooled.sum())]
        net.eval()
        mean = totals / len(images)
        history.append({"epoch": epoch + 1, "clean_loss": mean[0], "adversarial_loss": mean[1],
                        "fgsm_train_accuracy": mean[2]})
    net.eval()
    return history


def with_extra_class(net, rng=0):
    """A copy of a CIFAR-style ResNet with one more output class, the new class's
    weights small and random, every other weight copied."""
    depth = int(str(net.metadata.get("arch", "")).removeprefix("cifar_resnet") or 0)
    if not depth:
        raise ValueError("with_extra_class builds CIFAR-style ResNets; "
                         f"{net.metadata.get('arch')!r} is not one")
    classes = net["fc"].out_features
    bigger = cifar_resnet(depth, num_classes=classes + 1, rng=rng)
    state = {k: to_cpu(v).copy() for k, v in net.state_dict().items()}
    new_weight = bigger["fc"].params["weight"]
    state["fc.weight"] = np.concatenate([state["fc.weight"], 0.01 * new_weight[classes:]])
    state["fc.bias"] = np.concatenate([state["fc.bias"], np.zeros(1, state["fc.bias"].dtype)])
    bigger.load_state_dict(state)
    bigger.metadata.update(net.metadata)
    bigger.metadata.update(num_classes=classes + 1,
                           labels=list(net.metadata.get("labels") or range(classes))
                           + ["adversarial"])
    return bigger.eval().to(device_of(net["fc"].params["weight"]))


EXTRA_CLASS_ROWS = ("clean", "old PGD (made on the original)", "fresh PGD",
                    "fresh PGD at the runner-up")
"""The image sets :func:`extra_class_defence` shows the new network, in order."""


def extra_class_defence(net, images, labels, test_images, test_labels, eps, epochs=5, steps=10,
                        batch_size=64, rng=0, progress=False):
    """The "adversarial class" defence, measured: a copy of ``net`` with one more
    output (:func:`with_extra_class`) is trained on the clean ``images`` (their
    labels) plus PGD images made against ``net`` (the new label); then, on the
    held-out images, where do four kinds of image land? Clean ones; PGD images made
    against the original network; fresh PGD against the new one; and fresh PGD
    targeted at each image's runner-up digit (an attacker who aims away from the
    new class).

    Returns (the new network, {row of :data:`EXTRA_CLASS_ROWS`: {"correct",
    "called adversarial", "fooled"}}), fractions of the held-out images that sum to 1.
    """
    from ...optim import SGD
    from ...train import fit
    from .evaluation import _adversarial, attack_function, predict_classes
    seed = int(as_generator(rng).integers(2**31))
    images, labels = check_images(images), check_labels(net, labels, len(images))
    test_images = check_images(test_images)
    test_labels = check_labels(net, test_labels, len(test_images))
    eps = check_eps(eps)

    def attacked(model, x, y, targeted=False):  # PGD, 128 images at a time
        run = attack_function("pgd", steps=steps, targeted=targeted, rng=seed)
        return _adversarial(run, model, x, y, eps, 128)

    old_train = attacked(net, images, labels)
    bigger = with_extra_class(net, rng=seed)
    model = PixelModel(bigger)
    extra = bigger["fc"].out_features - 1
    inputs = np.concatenate([to_cpu(model.to_input(images)), to_cpu(model.to_input(old_train))])
    targets = np.concatenate([labels, np.full(len(labels), extra)])
    fit(bigger, SGD(bigger, lr=0.01, momentum=0.9, weight_decay=5e-4), inputs, targets,
        epochs=epochs, batch_size=batch_size, rng=seed, progress=progress)
    bigger.eval()
    scores = to_cpu(model.logits(test_images))[:, :extra].copy()
    scores[np.arange(len(test_labels)), test_labels] = -np.inf
    sets = [test_images, attacked(net, test_images, test_labels),
            attacked(bigger, test_images, test_labels),
            attacked(bigger, test_images, scores.argmax(axis=1), targeted=True)]
    outcomes = {}
    for row, x in zip(EXTRA_CLASS_ROWS, sets):
        predicted = to_cpu(predict_classes(bigger, x))
        outcomes[row] = {"correct": float((predicted == test_labels).mean()),
                         "called adversarial": float((predicted == extra).mean()),
                         "fooled": float(((predicted != test_labels) & (predicted != extra))
                                         .mean())}
    return bigger, outcomes
