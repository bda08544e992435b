"""Figures: each technique's arrays turned into a matplotlib figure (Agg, PNG).

The arithmetic in :mod:`minicnn.techniques` never imports matplotlib and these
functions never compute a gradient: they take the arrays a technique returned
(NumPy or CuPy; they are moved to the host here) and return a
``matplotlib.figure.Figure``, which :func:`save` writes. One module per family
of techniques; the helpers they share are in :mod:`minicnn.plots.common`.
"""
from .common import save, figure, to_display, show_image

__all__ = ["save", "figure", "to_display", "show_image"]
