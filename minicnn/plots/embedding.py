"""Figures of a code embedding: the 2-D points coloured by their labels, and the
images themselves tiled on a grid by where their points fell (Karpathy's
t-SNE grids of CNN codes)."""
import numpy as np
from matplotlib import colormaps

from ..backend import to_cpu
from .common import figure, show_image


def embedding_scatter(points, labels=None, classes=None, title=None, note=None, size=6.0):
    """Scatter of (N, 2) points, one colour per label (tab10/tab20), with a legend
    naming ``classes[label]``; ``note`` is written under the axes."""
    points = np.asarray(to_cpu(points), dtype=np.float64)
    fig, axes = figure(1, 1, size, title)
    ax = axes[0, 0]
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, color="0.3", linewidths=0)
    else:
        labels = np.asarray(to_cpu(labels))
        values = np.unique(labels)
        colours = colormaps["tab10" if len(values) <= 10 else "tab20"]
        for index, value in enumerate(values):
            chosen = labels == value
            ax.scatter(points[chosen, 0], points[chosen, 1], s=4, color=colours(index % 20),
                       linewidths=0, label=classes[value] if classes is not None else str(value))
        ax.legend(fontsize=7, markerscale=3, loc="best", framealpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    if note:
        ax.set_xlabel(note, fontsize=8)
    return fig


def image_mosaic(images, cells, rows, cols, background=255):
    """Tile RGB uint8 images (N, h, w, 3) into a (rows * h, cols * w, 3) picture,
    image i at grid cell ``cells[i]`` = (row, col); empty cells are ``background``."""
    images = np.asarray(to_cpu(images))
    cells = np.asarray(to_cpu(cells))
    if images.ndim != 4 or images.shape[3] != 3 or len(cells) != len(images):
        raise ValueError(f"need N RGB images (N, h, w, 3) and N cells, received images "
                         f"{images.shape} and {len(cells)} cells")
    height, width = images.shape[1:3]
    grid = np.full((rows, height, cols, width, 3), background, dtype=images.dtype)
    grid[cells[:, 0], :, cells[:, 1]] = images  # one assignment, image by image
    return grid.reshape(rows * height, cols * width, 3)


def image_grid_figure(images, cells, rows, cols, title=None, note=None, size=8.0):
    """The mosaic of :func:`image_mosaic` as a figure ``size`` inches wide."""
    mosaic = image_mosaic(images, cells, rows, cols)
    fig, axes = figure(1, 1, size, title)
    show_image(axes[0, 0], mosaic)
    if note:
        axes[0, 0].set_xlabel(note, fontsize=8)
    return fig
