"""Figures of what the network's features look like: first-layer filters,
activation maps, an overview across the stages, and maximally activating
patches. They take the arrays the techniques return and only draw."""
import math

import numpy as np

from ..backend import to_cpu
from .common import figure, hide_unused, normalize_unit, show_image


def _grid(count, columns):
    columns = max(1, min(columns, count))
    return math.ceil(count / columns), columns


def filter_grid(filters, title="First-layer filters", columns=8):
    """``filters`` (F, kh, kw, 3) in [0, 1] (:func:`first_layer_filters`), one cell each."""
    filters = to_cpu(filters)
    rows, columns = _grid(len(filters), columns)
    fig, axes = figure(rows, columns, cell=0.9, title=title)
    for index, (ax, image) in enumerate(zip(axes.ravel(), filters)):
        show_image(ax, image, title=str(index))
    hide_unused(axes, len(filters))
    return fig


def activation_grid(maps, image=None, title=None, columns=8, limit=64):
    """One image's maps at a layer, (C, H, W): the first ``limit`` channels on one
    colour scale (0 to the largest value), after the image itself when given."""
    maps = to_cpu(maps)[:limit]
    cells = len(maps) + (image is not None)
    rows, columns = _grid(cells, columns)
    fig, axes = figure(rows, columns, cell=1.1, title=title)
    flat = axes.ravel()
    if image is not None:
        show_image(flat[0], image, title="image")
    top = float(maps.max()) if maps.size and maps.max() > 0 else 1.0
    for channel, (ax, channel_map) in enumerate(zip(flat[cells - len(maps):], maps)):
        show_image(ax, channel_map, title=f"{channel}", cmap="viridis", vmin=0, vmax=top)
    hide_unused(axes, cells)
    return fig


def stage_overview(image, stages, strongest, title="Activations across the stages"):
    """One row per layer: its ``strongest`` channels' maps (each on its own scale).

    ``stages`` maps a layer name to one image's maps (C, H, W); ``strongest`` maps
    it to the channel indices to show, strongest first."""
    count = max(len(channels) for channels in strongest.values())
    fig, axes = figure(len(stages), count + 1, cell=1.1, title=title)
    for row, (layer, maps) in zip(axes, stages.items()):
        maps = to_cpu(maps)
        show_image(row[0], image, title=None)
        row[0].set_ylabel(f"{layer}\n{maps.shape[1]}x{maps.shape[2]}", fontsize=8)
        channels = [int(c) for c in to_cpu(strongest[layer])]
        for ax, channel in zip(row[1:], channels):
            show_image(ax, maps[channel], title=f"ch {channel}", cmap="viridis")
        for ax in row[1 + len(channels):]:
            ax.axis("off")
    return fig


def _projection_image(signal, spec):
    """A guided-backprop signal (C, h, w) as RGB in [0, 1]: scaled by its own
    extremes, channels in RGB order."""
    signal = np.asarray(to_cpu(signal), dtype=np.float64).transpose(1, 2, 0)
    if spec.get("color", "RGB") == "BGR":
        signal = signal[:, :, ::-1]
    return normalize_unit(signal)


def top_patches_figure(patches, pixels, projections=None, spec=None, layer="",
                       title=None):
    """For each channel a row of its k patches, best first, cropped from the
    original images (``pixels(i)``: image i as RGB uint8, e.g. ``Dataset.pixels``),
    each followed by its guided-backprop projection when ``projections`` is given
    (:func:`patch_projections`)."""
    k = max(len(records) for records in patches.values())
    per_patch = 2 if projections is not None else 1
    fig, axes = figure(len(patches), k * per_patch + 1, cell=0.9,
                       title=title or f"Maximally activating patches, {layer}")
    for row, (channel, records) in zip(axes, patches.items()):
        row[0].axis("off")
        row[0].text(0.5, 0.5, f"channel\n{channel}", ha="center", va="center", fontsize=8,
                    transform=row[0].transAxes)
        for i, patch in enumerate(records):
            top, left, bottom, right = patch.box
            crop = pixels(patch.image)[top:bottom, left:right]
            ax = row[1 + per_patch * i]
            show_image(ax, crop, title=f"{patch.value:.2f}")
            if projections is not None:
                show_image(row[2 + per_patch * i],
                           _projection_image(projections[channel][i], spec or {}))
        for ax in row[1 + per_patch * len(records):]:
            ax.axis("off")
    return fig
