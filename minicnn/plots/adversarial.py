"""Figures of adversarial examples: attacks, fooling images, the linear
explanation, robust accuracy curves and the transfer heat map.

Images come in pixel space, (N, 3, H, W) in [0, 1], as the attacks return them.
A perturbation is shown amplified around grey: 0.5 + delta / (2 max|delta|).
"""
import numpy as np

from ..backend import to_cpu
from .common import figure, show_image, hide_unused


def _rgb(image):
    return np.clip(np.asarray(to_cpu(image), dtype=np.float64).transpose(1, 2, 0), 0, 1)


def amplified(delta):
    """A perturbation (3, H, W) as an RGB picture around grey, and its amplification."""
    delta = np.asarray(to_cpu(delta), dtype=np.float64)
    top = float(np.abs(delta).max())
    if top == 0:
        return np.full(delta.shape[1:] + (3,), 0.5), 1.0
    return 0.5 + delta.transpose(1, 2, 0) / (2 * top), 0.5 / top


def _name(classes, k):
    return classes[k] if classes is not None and k < len(classes) else str(k)


def attack_figure(images, adversarial, before, after, classes=None, title=None, cell=1.8):
    """Rows of original | amplified perturbation | adversarial image.

    ``before`` and ``after``: (labels, probabilities) per image, e.g. from
    ``probs.argmax(1), probs.max(1)`` of the clean and attacked images.
    """
    images, adversarial = to_cpu(images), to_cpu(adversarial)
    fig, axes = figure(len(images), 3, cell, title)
    for i in range(len(images)):
        delta = adversarial[i] - images[i]
        picture, gain = amplified(delta)
        linf = float(np.abs(delta).max())
        show_image(axes[i, 0], _rgb(images[i]),
                   f"{_name(classes, int(before[0][i]))} ({before[1][i]:.1%})")
        show_image(axes[i, 1], picture, f"change x{gain:.0f}, L-inf {linf * 255:.1f}/255")
        show_image(axes[i, 2], _rgb(adversarial[i]),
                   f"{_name(classes, int(after[0][i]))} ({after[1][i]:.1%})")
    return fig


def fooling_figure(images, targets, probabilities, classes=None, starts=None, title=None,
                   columns=5, cell=1.6):
    """A grid of fooling images, each titled with its target and probability; with
    ``starts`` (the images they began from) each fooling image follows its start."""
    images = to_cpu(images)
    panels = []
    for i in range(len(images)):
        if starts is not None:
            panels.append((starts[min(i, len(starts) - 1)], "start"))
        panels.append((images[i], f"{_name(classes, int(targets[i]))} {probabilities[i]:.1%}"))
    rows = -(-len(panels) // columns)
    fig, axes = figure(rows, columns, cell, title)
    for ax, (image, label) in zip(np.ravel(axes), panels):
        show_image(ax, _rgb(image), label)
    hide_unused(axes, len(panels))
    return fig


def linear_figure(example, rows, title="The linear explanation"):
    """The logistic-regression example (original, perturbation, result) and the
    eps needed against the dimension d (log-log), from
    :func:`~minicnn.techniques.adversarial.linear.linear_example` and
    :func:`~minicnn.techniques.adversarial.linear.epsilon_by_dimension`."""
    original, delta, result, before, after, eps = example
    fig, axes = figure(1, 4, 2.2, title)
    gray = dict(cmap="gray", vmin=0, vmax=1)
    show_image(axes[0, 0], original, f"'3': p('8') = {before:.3f}", **gray)
    show_image(axes[0, 1], delta, f"eps sign(w), eps = {eps:.3f}", cmap="gray")
    show_image(axes[0, 2], result, f"p('8') = {after:.3f}", **gray)
    ax = axes[0, 3]
    for prefix, marker in (("digits", "o-"), ("random", "s-")):
        chosen = [r for r in rows if r["source"].startswith(prefix)]
        if chosen:
            ax.loglog([r["d"] for r in chosen], [r["median_eps"] for r in chosen], marker,
                      label=prefix)
    d = np.array([min(r["d"] for r in rows), max(r["d"] for r in rows)], dtype=float)
    start = rows[0]["median_eps"] * rows[0]["d"]
    ax.loglog(d, start / d, "k:", label="1/d")
    ax.set_xlabel("input dimension d", fontsize=8)
    ax.set_ylabel("median eps to p = 0.99", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return fig


def robustness_figure(curves, title="Accuracy under attack"):
    """``curves``: {name: {eps: accuracy}}; eps shown in grey levels (x 255)."""
    fig, axes = figure(1, 1, 4.0, title)
    ax = axes[0, 0]
    for name, result in curves.items():
        eps = sorted(result)
        ax.plot([e * 255 for e in eps], [result[e] for e in eps], "o-", label=name)
    ax.set_xlabel("eps (grey levels of 255)", fontsize=8)
    ax.set_ylabel("accuracy", fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return fig


def transfer_figure(matrix, sources, targets=None, title="Transfer: made on row, shown to column"):
    """Heat map of a transfer matrix, each cell annotated with its fraction."""
    targets = sources if targets is None else targets
    matrix = np.asarray(matrix, dtype=float)
    fig, axes = figure(1, 1, 0.75 * max(4, len(targets)) + 1)
    fig.suptitle(title, fontsize=9)
    ax = axes[0, 0]
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(targets)), targets, fontsize=7, rotation=30)
    ax.set_yticks(range(len(sources)), sources, fontsize=7)
    ax.set_xlabel("shown to", fontsize=8)
    ax.set_ylabel("made on", fontsize=8)
    for (a, b), value in np.ndenumerate(matrix):
        ax.text(b, a, f"{value:.2f}", ha="center", va="center", fontsize=7,
                color="black" if value > 0.6 else "white")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def outcome_figure(outcomes, title="An extra 'adversarial' class"):
    """``outcomes``: {image set: {outcome: fraction}} (each row summing to 1), one
    stacked horizontal bar per image set, each share labelled with its percentage."""
    rows = list(outcomes)
    kinds = list(outcomes[rows[0]])
    colours = ["tab:green", "tab:blue", "tab:red", "tab:grey"]
    fig, axes = figure(1, 1, 3.2)
    fig.set_size_inches(6.5, 3.2)
    fig.suptitle(title, fontsize=9)
    ax = axes[0, 0]
    left = np.zeros(len(rows))
    for kind, colour in zip(kinds, colours):
        widths = np.array([outcomes[row][kind] for row in rows])
        ax.barh(range(len(rows)), widths, left=left, color=colour, label=kind)
        for y, (x, w) in enumerate(zip(left, widths)):
            if w >= 0.08:
                ax.text(x + w / 2, y, f"{w:.0%}", ha="center", va="center", fontsize=7,
                        color="white")
        left += widths
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of the held-out images", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(kinds),
              frameon=False)
    return fig
