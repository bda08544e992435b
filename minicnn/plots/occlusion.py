"""The occlusion figure: each image beside its occlusion map laid over it."""
from ..backend import to_cpu
from .common import figure, show_image


def map_extent(shape, size, stride):
    """imshow extent (left, right, bottom, top) that puts map cell (i, j) on the
    centre of the square it stands for, ``i stride + (size - 1) / 2`` in the
    image's pixel coordinates, each cell ``stride`` pixels wide."""
    rows, columns = shape
    centre = (size - 1) / 2
    return (centre - stride / 2, centre + (columns - 1) * stride + stride / 2,
            centre + (rows - 1) * stride + stride / 2, centre - stride / 2)


def occlusion_figure(images, maps, size, stride, titles=None, baselines=None,
                     label="probability", title="Occlusion"):
    """``images``: RGB (H, W, 3) per image; ``maps`` (N, rows, columns) from
    :func:`occlusion_map`; ``baselines`` the unoccluded value per image, shown in
    the title. Low values (dark) mark where hiding the image hurts the target."""
    maps = to_cpu(maps)
    fig, axes = figure(2, len(maps), cell=2.2, title=title)
    top = float(max(maps.max(), max(baselines) if baselines is not None else 0))
    bottom = min(0.0, float(maps.min()))
    for n, (image, occlusion_map) in enumerate(zip(images, maps)):
        heading = titles[n] if titles is not None else f"image {n}"
        if baselines is not None:
            heading += f"\n{label} {baselines[n]:.3f}"
        show_image(axes[0, n], image, title=heading)
        show_image(axes[1, n], image)
        shown = axes[1, n].imshow(occlusion_map, cmap="inferno", alpha=0.7, vmin=bottom, vmax=top,
                                  extent=map_extent(occlusion_map.shape, size, stride),
                                  interpolation="nearest")
        axes[1, n].set_xlim(-0.5, image.shape[1] - 0.5)
        axes[1, n].set_ylim(image.shape[0] - 0.5, -0.5)
        axes[1, n].set_title(f"min {occlusion_map.min():.3f}", fontsize=8)
    fig.colorbar(shown, ax=axes[1].tolist(), shrink=0.8, label=f"{label}, {size}x{size} square")
    return fig
