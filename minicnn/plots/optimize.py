"""Figures of the image-optimizing techniques: rows of images in the network's
input space (class models, inversions, dreams, style transfers) and loss curves
against objective evaluations (the optimizer comparison)."""
import numpy as np

from ..backend import to_cpu
from .common import figure, hide_unused, show_image, to_display


def image_grid(images, titles, spec, columns=None, title=None, cell=1.8):
    """One image per cell: ``images`` a list of (C, H, W) arrays (or an NCHW batch) in
    the input space of a network with preprocessing ``spec``."""
    images = [to_cpu(image) for image in images]
    columns = columns or len(images)
    rows = -(-len(images) // columns)
    fig, axes = figure(rows, columns, cell=cell, title=title)
    for ax, image, text in zip(np.ravel(axes), images, titles):
        show_image(ax, to_display(image, spec), text)
    hide_unused(axes, len(images))
    return fig


def class_model_figure(images, labels, probabilities, spec, title="Class models"):
    """One class-model image per class, titled with the class and its softmax."""
    titles = [f"{label}\np = {p:.3f}" for label, p in zip(labels, probabilities)]
    return image_grid(images, titles, spec, columns=min(len(titles), 5), title=title)


def inversion_figure(original, reconstructions, errors, spec, title="Feature inversion"):
    """The original beside its reconstruction from each layer, titled with the
    relative code error ``||Phi(x) - Phi0|| / ||Phi0||``."""
    titles = ["original"] + [f"from {layer}\nerror {errors[layer]:.3f}"
                             for layer in reconstructions]
    return image_grid([original, *reconstructions.values()], titles, spec, title=title)


def loss_curves(histories, title="Loss against objective evaluations", labels=None):
    """Each History's loss against its cumulative evaluations, on a log scale."""
    fig, axes = figure(1, 1, cell=4.2, title=title)
    ax = axes[0, 0]
    for name, history in histories.items():
        ax.plot(history.evaluations, history.loss, label=(labels or {}).get(name, name))
    ax.set_yscale("log")
    ax.set_xlabel("objective evaluations")
    ax.set_ylabel("loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig
