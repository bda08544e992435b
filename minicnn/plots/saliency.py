"""Figures of the saliency family: for each image and method, the signal shown
as an image, its saliency heat map, and the map laid over the photo; and the
completeness gap of integrated gradients against the number of steps.

A signal (C, H, W) is shown around grey, ``0.5 + g / (2 max|g|)`` per image, so
positive and negative evidence both show. A heat map is ``max_c |g|`` (or a
Grad-CAM map) scaled by its 99th percentile and clipped to [0, 1], so that a
few extreme pixels do not leave the rest black (Smilkov et al. clip the same way).
"""
import numpy as np

from ..backend import to_cpu
from .common import figure, show_image

KINDS = {"signal": "signal", "map": "heat map", "overlay": "overlay"}


def signal_picture(signal):
    """(C, H, W) signed -> RGB (H, W, 3) around grey; (H, W) -> itself scaled to [0, 1]."""
    signal = np.asarray(to_cpu(signal), dtype=np.float64)
    top = np.abs(signal).max()
    if signal.ndim == 2:
        return signal / top if top > 0 else signal
    picture = 0.5 + signal / (2 * top) if top > 0 else np.full_like(signal, 0.5)
    picture = picture.transpose(1, 2, 0)
    return picture if picture.shape[2] == 3 else picture.mean(axis=2)


def heat_map(signal, percentile=99.0):
    """(C, H, W) -> ``max_c |g|``; (H, W) stays; scaled by its ``percentile`` and clipped."""
    signal = np.asarray(to_cpu(signal), dtype=np.float64)
    saliency = np.abs(signal).max(axis=0) if signal.ndim == 3 else signal
    scale = np.percentile(saliency, percentile)
    if scale <= 0:
        scale = saliency.max()
    return np.clip(saliency / scale, 0, 1) if scale > 0 else saliency


def _photo(photo):
    photo = np.asarray(to_cpu(photo))
    return photo / 255.0 if photo.dtype == np.uint8 else np.clip(photo, 0, 1)


def saliency_figure(photos, signals, titles=None, notes=None, kinds=("signal", "map", "overlay"),
                    title=None, cell=1.3):
    """Methods side by side: one row per image and kind, the photo first.

    ``photos``: N RGB images (H, W, 3), uint8 or floats in [0, 1], the images the
    network saw. ``signals``: a dict from method name to its (N, C, H, W) signal
    or (N, H, W) map at the photos' size, in column order. ``titles``: one line
    per image (e.g. its label and target). ``notes``: a dict from method name
    to one short line per image (e.g. integrated gradients' completeness gap).
    """
    methods = list(signals)
    kinds = [kind for kind in kinds if kind in KINDS]
    if not kinds:
        raise ValueError(f"kinds: choose from {sorted(KINDS)}")
    count = len(photos)
    fig, axes = figure(count * len(kinds), len(methods) + 1, cell, title)
    for i in range(count):
        photo = _photo(photos[i])
        for k, kind in enumerate(kinds):
            row = axes[i * len(kinds) + k]
            if k == 0:
                show_image(row[0], photo, titles[i] if titles else None)
            else:
                row[0].axis("off")
            for j, method in enumerate(methods):
                signal = to_cpu(signals[method])[i]
                ax = row[j + 1]
                heading = None
                if i == 0 and k == 0:
                    heading = method
                if notes and method in notes and k == len(kinds) - 1:
                    ax.set_xlabel(notes[method][i], fontsize=7)
                if kind == "signal":
                    picture = signal_picture(signal)
                    show_image(ax, picture, heading, **({"cmap": "gray", "vmin": 0, "vmax": 1}
                                                        if picture.ndim == 2 else {}))
                elif kind == "map":
                    show_image(ax, heat_map(signal), heading, cmap="inferno", vmin=0, vmax=1)
                else:
                    show_image(ax, photo, heading)
                    ax.imshow(heat_map(signal), cmap="jet", alpha=0.5, vmin=0, vmax=1,
                              interpolation="bilinear")
                if j == 0:
                    ax.set_ylabel(KINDS[kind], fontsize=7)
    return fig


def completeness_figure(steps, gaps, differences, title="Integrated gradients: completeness"):
    """The gap ``|sum IG - (S(x) - S(x'))|`` of each image against the number of
    steps (log-log), beside ``|S(x) - S(x')|`` for scale. ``gaps``: (len(steps), N)."""
    gaps = np.asarray(to_cpu(gaps), dtype=np.float64)
    differences = np.abs(np.asarray(to_cpu(differences), dtype=np.float64))
    fig, axes = figure(1, 1, 4.0, title)
    ax = axes[0, 0]
    for n in range(gaps.shape[1]):
        line, = ax.plot(steps, np.maximum(gaps[:, n], 1e-12), "o-", ms=3, label=f"image {n}")
        ax.axhline(differences[n], color=line.get_color(), ls=":", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(steps, [str(m) for m in steps])
    ax.minorticks_off()
    ax.set_xlabel("steps m")
    ax.set_ylabel("|sum(IG) - (S(x) - S(x'))|")
    ax.legend(fontsize=7, title="dotted: |S(x) - S(x')|", title_fontsize=7)
    return fig
