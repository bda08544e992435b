"""Figures of GrabCut from saliency: for each photo, the photo, its saliency heat
map, the seeds taken from it, and the object mask drawn over the photo."""
import numpy as np

from ..backend import to_cpu
from .common import figure, show_image

FOREGROUND_SEED = np.array([1.0, 0.15, 0.1])
BACKGROUND_SEED = np.array([0.15, 0.35, 1.0])


def _unit(photo):
    photo = np.asarray(to_cpu(photo))
    return photo / 255.0 if photo.dtype == np.uint8 else np.clip(photo, 0, 1)


def seed_picture(photo, foreground, background):
    """The photo in faded grey, foreground seeds red and background seeds blue."""
    grey = 0.35 + 0.4 * _unit(photo).mean(axis=2, keepdims=True).repeat(3, axis=2)
    grey[np.asarray(to_cpu(foreground), dtype=bool)] = FOREGROUND_SEED
    grey[np.asarray(to_cpu(background), dtype=bool)] = BACKGROUND_SEED
    return grey


def mask_picture(photo, mask, dim=0.25):
    """The photo where the mask is True, darkened to ``dim`` elsewhere."""
    mask = np.asarray(to_cpu(mask), dtype=bool)
    return _unit(photo) * np.where(mask, 1.0, dim)[:, :, None]


def segmentation_figure(photos, saliencies, masks, seeds=None, titles=None, title=None,
                        cell=2.0):
    """One row per photo: the photo, the saliency map (scaled by its 99th
    percentile), the seeds (``seeds``: a list of (foreground, background) masks,
    optional) and the mask over the photo with its outline."""
    columns = 4 if seeds is not None else 3
    fig, axes = figure(len(photos), columns, cell, title)
    for i, photo in enumerate(photos):
        row = axes[i]
        first = i == 0
        show_image(row[0], _unit(photo), titles[i] if titles else ("photo" if first else None))
        saliency = np.asarray(to_cpu(saliencies[i]), dtype=np.float64)
        top = np.percentile(saliency, 99)
        show_image(row[1], np.clip(saliency / top, 0, 1) if top > 0 else saliency,
                   "saliency" if first else None, cmap="inferno", vmin=0, vmax=1)
        if seeds is not None:
            show_image(row[2], seed_picture(photo, *seeds[i]),
                       "seeds (red fg, blue bg)" if first else None)
        mask = np.asarray(to_cpu(masks[i]), dtype=bool)
        ax = show_image(row[-1], mask_picture(photo, mask),
                        "GrabCut mask" if first else None)
        if mask.any() and not mask.all():
            ax.contour(mask.astype(float), levels=[0.5], colors="yellow", linewidths=0.8)
        ax.set_xlabel(f"{mask.mean():.0%} of the pixels", fontsize=7)
    return fig
