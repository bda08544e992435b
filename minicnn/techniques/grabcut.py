"""GrabCut from a saliency map: cut out the object the network looked at.

Simonyan, Vedaldi & Zisserman (2014, section 6) turn a class saliency map into
an object mask with GrabCut (Rother, Kolmogorov & Blake 2004): pixels whose
saliency is above its 95 % quantile are foreground seeds, those below its
30 % quantile background seeds; a Gaussian mixture of colours is fitted to
each (5 components), and the labelling L (True = foreground) minimizing

    E(L) = sum_p U_{L_p}(p) + sum_{(p,q) in N8} V_pq [L_p != L_q]

is found by a minimum s-t cut (Boykov & Jolly 2001), where

* ``U_fg(p) = -log p(z_p | foreground GMM)``, ``U_bg`` likewise, and a seed
  costs infinity with the other label (a hard constraint);
* ``V_pq = gamma / dist(p, q) * exp(-beta ||z_p - z_q||^2)`` over the 8
  neighbours (dist 1, or sqrt 2 on the diagonals), ``gamma = 50``,
  ``beta = 1 / (2 <||z_p - z_q||^2>)``, the mean over all neighbour pairs,
  so the boundary prefers to run along colour edges.

The colour models are then re-fitted to the cut's two sides and the cut
repeated (``iterations`` times, or until it stops changing); finally, as the
paper does, only the largest 8-connected foreground component is kept.

The cut: pixel p is a node with an edge source -> p of capacity ``U_bg(p)``
(paid when p ends on the sink side, the background) and p -> sink of capacity
``U_fg(p)``, and edges p <-> q of capacity V_pq. scipy's ``maximum_flow``
takes integer capacities, so all of them are multiplied by
``2**30 / (their sum)`` and rounded: each cut edge is then off by at most half
a unit, a relative error of ~1e-9 of the total energy. Hard constraints get a
capacity larger than every finite cut. The foreground is the set of nodes
still reachable from the source in the residual graph of a maximum flow.

The graph cut runs on the CPU (scipy); CuPy inputs are moved to the host and
the mask is returned on the saliency map's device. :func:`segment_object` is
the whole pipeline on a photo: a network's saliency map of its predicted class,
upsampled to a working resolution, then GrabCut.
"""
import warnings
from collections import namedtuple

import numpy as np

from ..backend import get_array_module, to_cpu

Edges = namedtuple("Edges", "p q weight")
Edges.__doc__ = """The smoothness term's graph: pixel pairs ``p``, ``q`` (flat indices,
each unordered pair once) and their weights V_pq."""

NEIGHBOUR_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))  # each of the 8 neighbours once per pair
CAPACITY_RANGE = 2 ** 30  # the scaled finite capacities sum to this (int32 holds twice it)
COLOUR_REGULARIZATION = 1.0  # added to each GMM covariance's diagonal: 1 grey level squared


def _check(image, saliency):
    shape = tuple(getattr(image, "shape", ()))
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"image must be RGB of shape (H, W, 3), received shape {shape}; "
                         "a grayscale image (H, W) becomes RGB with "
                         "numpy.repeat(image[:, :, None], 3, axis=2)")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (0..255), received {image.dtype}; a float image "
                         "in [0, 1] converts with (image * 255).round().astype(numpy.uint8)")
    if tuple(getattr(saliency, "shape", ())) != shape[:2]:
        raise ValueError(f"saliency must be (H, W) = {shape[:2]} like the image, received "
                         f"shape {tuple(getattr(saliency, 'shape', ()))}; take one image's "
                         "map from saliency_map(...)[n] and upsample it to the image's size")
    if min(shape[:2]) < 2:
        raise ValueError(f"the image is too small to segment: {shape[:2]}")


def neighbour_pairs(height, width):
    """Every 8-neighbour pair of an (height, width) grid once: (p, q, distance)."""
    index = np.arange(height * width).reshape(height, width)
    p, q, distance = [], [], []
    for dy, dx in NEIGHBOUR_OFFSETS:
        left, right = max(0, -dx), width - max(0, dx)
        p.append(index[:height - dy, left:right].ravel())
        q.append(index[dy:, left + dx:right + dx].ravel())
        distance.append(np.full(p[-1].size, np.hypot(dy, dx)))
    return np.concatenate(p), np.concatenate(q), np.concatenate(distance)


def smoothness(image, gamma=50.0):
    """Rother et al.'s pairwise weights V_pq for an RGB image (H, W, 3) (see the module
    doc); a constant image (every difference 0) gets beta = 0."""
    colours = np.asarray(to_cpu(image), dtype=np.float64).reshape(-1, 3)
    p, q, distance = neighbour_pairs(*image.shape[:2])
    squared = ((colours[p] - colours[q]) ** 2).sum(axis=1)
    mean = squared.mean()
    beta = 1.0 / (2.0 * mean) if mean > 0 else 0.0
    return Edges(p, q, gamma / distance * np.exp(-beta * squared))


def grabcut_energy(labels, unary_fg, unary_bg, edges):
    """E(L) for a labelling ``labels`` (H, W) bool (True = foreground), unaries
    (H, W) (``inf`` forbids a label) and :class:`Edges`."""
    labels = np.asarray(labels, dtype=bool).ravel()
    data = np.where(labels, np.ravel(unary_fg), np.ravel(unary_bg)).sum()
    return data + edges.weight[labels[edges.p] != labels[edges.q]].sum()


def min_cut(unary_fg, unary_bg, edges):
    """The labelling (H, W) bool minimizing :func:`grabcut_energy`, by a maximum
    flow on integer capacities (see the module doc)."""
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow
    shape = np.shape(unary_fg)
    fg_cost = np.asarray(unary_fg, dtype=np.float64).ravel()
    bg_cost = np.asarray(unary_bg, dtype=np.float64).ravel()
    only_fg, only_bg = np.isposinf(bg_cost), np.isposinf(fg_cost)
    if (only_fg & only_bg).any() or np.isnan(fg_cost).any() or np.isnan(bg_cost).any():
        raise ValueError("a pixel forbids both labels, or a unary is NaN")
    # a constant per pixel does not move the minimum: make the cheaper label cost 0
    finite = ~(only_fg | only_bg)
    low = np.minimum(fg_cost, bg_cost)
    fg_cost = np.where(finite, fg_cost - low, np.where(only_fg, 0.0, np.inf))
    bg_cost = np.where(finite, bg_cost - low, np.where(only_bg, 0.0, np.inf))
    total = fg_cost[~only_bg].sum() + bg_cost[~only_fg].sum() + edges.weight.sum()
    scale = CAPACITY_RANGE / total if total > 0 else 1.0
    n = fg_cost.size
    # more than any finite cut: the scaled sum plus half a unit of rounding per term
    hard = CAPACITY_RANGE + 2 * n + edges.weight.size + 1

    def capacity(cost):
        return np.where(np.isinf(cost), hard, np.rint(cost * scale)).astype(np.int32)

    source, sink = n, n + 1
    pixels = np.arange(n)
    link = np.rint(edges.weight * scale).astype(np.int32)
    rows = np.concatenate([np.full(n, source), pixels, edges.p, edges.q])
    cols = np.concatenate([pixels, np.full(n, sink), edges.q, edges.p])
    data = np.concatenate([capacity(bg_cost), capacity(fg_cost), link, link])
    keep = data > 0
    graph = csr_array((data[keep], (rows[keep], cols[keep])), shape=(n + 2, n + 2))
    flow = maximum_flow(graph, source, sink).flow
    residual = (graph - flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reachable = breadth_first_order(residual, source, directed=True, return_predecessors=False)
    side = np.zeros(n + 2, dtype=bool)
    side[reachable] = True
    return side[:n].reshape(shape)


def colour_unary(colours, fitted_on, components=5, rng=0):
    """``-log p(z | GMM)`` for every colour (M, 3), the mixture of ``components``
    full-covariance Gaussians fitted (scikit-learn, seeded by ``rng``) to the
    colours ``colours[fitted_on]`` (a boolean mask or indices)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture
    sample = colours[fitted_on]
    if len(sample) == 0:
        raise ValueError("no pixels to fit a colour model to")
    seed = int(np.random.default_rng(rng).integers(2 ** 31 - 1))
    model = GaussianMixture(n_components=min(components, len(sample)), covariance_type="full",
                            reg_covar=COLOUR_REGULARIZATION, random_state=seed)
    with warnings.catch_warnings():
        # a flat-coloured region has fewer distinct colours than components; k-means
        # says so, and the regularized covariances keep every Gaussian proper anyway
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(sample)
    return -model.score_samples(colours)


def largest_component(mask):
    """The largest 8-connected component of a boolean mask (all False if empty)."""
    from scipy import ndimage
    components, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(components.ravel())[1:]
    return components == 1 + int(np.argmax(sizes))


def seeds(saliency, fg_quantile=0.95, bg_quantile=0.30):
    """(foreground seeds, background seeds), (H, W) bool: saliency at or above its
    ``fg_quantile`` quantile, and at or below its ``bg_quantile`` quantile."""
    if not 0 < bg_quantile < fg_quantile < 1:
        raise ValueError(f"need 0 < bg_quantile < fg_quantile < 1, received "
                         f"bg_quantile={bg_quantile}, fg_quantile={fg_quantile}")
    saliency = np.asarray(to_cpu(saliency), dtype=np.float64)
    if not np.isfinite(saliency).all():
        raise ValueError("the saliency map contains NaN or infinity")
    high, low = np.quantile(saliency, [fg_quantile, bg_quantile])
    if high <= low:
        raise ValueError("the saliency map is (nearly) constant: its foreground and background "
                         "quantiles coincide, so it marks no object")
    return saliency >= high, saliency <= low


def grabcut(image, saliency, fg_quantile=0.95, bg_quantile=0.30, iterations=5, components=5,
            gamma=50.0, rng=0):
    """The object mask (H, W) bool that GrabCut finds from a saliency map.

    ``image``: RGB uint8 (H, W, 3); ``saliency``: (H, W), e.g. one image's
    ``saliency_map(vanilla_gradient(net, x, target))`` upsampled to the photo.
    ``rng``: a seed or a Generator for the mixtures' k-means initialization.
    """
    _check(image, saliency)
    if int(iterations) < 1 or gamma <= 0:
        raise ValueError(f"iterations must be at least 1 and gamma positive, received "
                         f"iterations={iterations}, gamma={gamma}")
    xp = get_array_module(saliency)
    rng = np.random.default_rng(rng)
    pixels = np.asarray(to_cpu(image))
    colours = pixels.reshape(-1, 3).astype(np.float64)
    fg_seed, bg_seed = seeds(saliency, fg_quantile, bg_quantile)
    edges = smoothness(pixels, gamma)
    fg_fit, bg_fit = fg_seed.ravel(), bg_seed.ravel()
    labels = None
    for _ in range(int(iterations)):
        unary_fg = colour_unary(colours, fg_fit, components, rng)
        unary_bg = colour_unary(colours, bg_fit, components, rng)
        unary_fg[bg_seed.ravel()] = np.inf
        unary_bg[fg_seed.ravel()] = np.inf
        cut = min_cut(unary_fg.reshape(fg_seed.shape), unary_bg.reshape(fg_seed.shape), edges)
        if labels is not None and (cut == labels).all():
            break
        labels = cut
        fg_fit, bg_fit = labels.ravel(), ~labels.ravel()
    return xp.asarray(largest_component(labels))


Segmentation = namedtuple("Segmentation", "image saliency mask target")
Segmentation.__doc__ = """What :func:`segment_object` returns: the view of the photo that
was cut (RGB uint8), the upsampled saliency map there, the mask, and the target."""


def segment_object(net, photo, target=None, scale=4, rng=0, **options):
    """Simonyan et al.'s pipeline on one photo (RGB uint8 (H, W, 3), any size).

    The network sees the photo fitted to its input, as its preprocessing says.
    The saliency map ``max_c |dS/dx|`` of ``target`` (default: the predicted
    class) is upsampled bilinearly ``scale`` times onto the same view of the
    photo at ``scale`` times the input's resolution, where :func:`grabcut` cuts
    the object out (``options`` go to it).
    """
    from ..backend import to_gpu
    from ..images import fit_to_input, normalize
    from .grad_cam import upsample
    from .saliency import saliency_map, vanilla_gradient
    photo = np.asarray(to_cpu(photo))
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise ValueError(f"photo must be RGB uint8 (H, W, 3), received {photo.dtype} "
                         f"{photo.shape}; minicnn.images.load_image reads a file that way")
    if int(scale) < 1:
        raise ValueError(f"scale must be a positive integer, received {scale}")
    spec = net.metadata["preprocessing"]
    x = normalize(fit_to_input(photo, spec), spec)[None]
    if net.array_module() is not np:
        x = to_gpu(x)
    if target is None:
        target = int(net.forward(x, cache=False).argmax(axis=1)[0])
    saliency = saliency_map(vanilla_gradient(net, x, target))
    size = tuple(int(side) * int(scale) for side in spec["input_size"])
    view_spec = dict(spec, input_size=list(size),
                     **{key: int(spec[key]) * int(scale) for key in ("resize", "crop")
                        if spec.get(key)})
    view = fit_to_input(photo, view_spec)
    saliency = upsample(saliency, size)[0]
    return Segmentation(view, saliency, grabcut(view, saliency, rng=rng, **options), target)
