r"""How robust a network is: accuracy under attack, and attacks that transfer.

Robust accuracy at :math:`\epsilon` is the fraction of images whose adversarial
version (made against the network itself, within :math:`\epsilon` in
L-infinity) is still classified correctly; at :math:`\epsilon = 0` it is the
clean accuracy.

Transfer (Szegedy et al., 2014; Papernot et al., 2016): an adversarial image
made against network A is shown to network B. Entry (A, B) of the matrix is
the fraction of the images that both classify correctly whose adversarial
version from A is misclassified by B; the diagonal is the white-box success rate.
"""
import numpy as np
from tqdm.auto import tqdm

from ...backend import to_cpu
from .attacks import fgsm, pgd
from .pixel_space import pixel_model, check_images, check_labels, check_eps

EPS_LIST = (0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)


def attack_function(attack, **options):
    """``attack``: 'fgsm', 'pgd' (``options`` go to :func:`pgd`) or a function
    ``attack(net, images, labels, eps)`` returning adversarial images."""
    if callable(attack):
        return attack
    if attack == "fgsm":
        if options:
            raise ValueError(f"FGSM takes no options; {', '.join(sorted(options))} belong to PGD")
        return lambda net, images, labels, eps: fgsm(net, images, labels, eps)
    if attack == "pgd":
        return lambda net, images, labels, eps: pgd(net, images, labels, eps, **options)
    raise ValueError(f"unknown attack {attack!r}: use 'fgsm', 'pgd' or a function "
                     "attack(net, images, labels, eps)")


def predict_classes(net, images, batch_size=100):
    """Predicted classes (NumPy, N) of images in [0, 1], batch by batch."""
    model = pixel_model(net)
    return np.concatenate([to_cpu(model.logits(images[i:i + batch_size]).argmax(axis=1))
                           for i in range(0, len(images), batch_size)])


def _adversarial(attack, net, images, labels, eps, batch_size):
    return np.concatenate([to_cpu(attack(net, images[i:i + batch_size],
                                         labels[i:i + batch_size], eps))
                           for i in range(0, len(images), batch_size)])


def robust_accuracy(net, images, labels, attack="pgd", eps_list=EPS_LIST, batch_size=100,
                    progress=False, **options):
    """``{eps: accuracy}`` for each ``eps`` of ``eps_list`` (eps 0: clean accuracy)."""
    check_images(images)
    labels = check_labels(pixel_model(net).net, labels, len(images))
    run = attack_function(attack, **options)
    results = {}
    for eps in tqdm(eps_list, desc="robust accuracy", unit="eps", disable=not progress):
        eps = check_eps(eps)
        attacked = images if eps == 0 else _adversarial(run, net, images, labels, eps, batch_size)
        results[eps] = float((predict_classes(net, attacked, batch_size) == labels).mean())
    return results


def transfer_matrix(sources, targets, images, labels, attack="pgd", eps=8 / 255, batch_size=100,
                    progress=False, **options):
    """(len(sources), len(targets)) NumPy array: entry (a, b) is the fraction of the
    images classified correctly by source a and target b whose adversarial version
    made on a fools b. Returns (matrix, counts) with the number of images behind
    each entry."""
    check_images(images)
    eps = check_eps(eps)
    run = attack_function(attack, **options)
    labels = check_labels(pixel_model(sources[0]).net, labels, len(images))
    correct = {}
    for net in list(sources) + list(targets):
        if id(net) not in correct:
            correct[id(net)] = predict_classes(net, images, batch_size) == labels
    matrix = np.zeros((len(sources), len(targets)))
    counts = np.zeros((len(sources), len(targets)), dtype=np.int64)
    for a, source in enumerate(tqdm(sources, desc="transfer", unit="source",
                                    disable=not progress)):
        attacked = _adversarial(run, source, images, labels, eps, batch_size)
        for b, target in enumerate(targets):
            both = correct[id(source)] & correct[id(target)]
            fooled = predict_classes(target, attacked[both], batch_size) != labels[both]
            matrix[a, b] = float(fooled.mean()) if both.any() else np.nan
            counts[a, b] = int(both.sum())
    return matrix, counts
