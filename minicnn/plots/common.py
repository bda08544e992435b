"""What every figure shares: a figure without pyplot's global state, images in
the network's input space shown as the photo they came from, atomic saving."""
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..backend import to_cpu
from ..images import denormalize
from ..io.files import atomic_output

DPI = 100


def figure(rows=1, columns=1, cell=2.0, title=None, squeeze=False, **kwargs):
    """A Figure with a grid of axes, ``cell`` inches per axis; returns (fig, axes 2-D)."""
    fig = Figure(figsize=(max(columns * cell, 3.0), rows * cell + (0.4 if title else 0)),
                 dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=squeeze, **kwargs)
    if title:
        fig.suptitle(title)
    return fig, axes


def to_display(x, spec):
    """One image (C, H, W) in the network's input space -> RGB float in [0, 1] (H, W, 3)."""
    return denormalize(to_cpu(x), spec).astype(np.float64) / 255.0


def show_image(ax, image, title=None, **kwargs):
    """Draw an (H, W, 3) or (H, W) image without ticks."""
    image = to_cpu(image)
    ax.imshow(image, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=8)
    return ax


def normalize_unit(a):
    """Scale an array to [0, 1] by its own min and max (a constant array gives 0.5)."""
    a = np.asarray(to_cpu(a), dtype=np.float64)
    low, high = a.min(), a.max()
    return np.full_like(a, 0.5) if high == low else (a - low) / (high - low)


def hide_unused(axes, used):
    """Blank the axes of a grid past the first ``used``."""
    for ax in np.ravel(axes)[used:]:
        ax.axis("off")


def save(fig, path):
    """Write ``fig`` as a PNG at ``path`` (atomically: a failure leaves no file);
    returns the path."""
    path = Path(path)
    if path.parent != Path("") and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path
