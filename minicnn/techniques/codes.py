"""CNN codes and their 2-D map: what the network thinks is similar.

A *code* is the vector a network computes for an image just before its
classifier: the input of the last fully connected layer, the global average
pool in the ResNets (64 numbers in the CIFAR ResNets, 2,048 in ResNet-50).
Images of one class should lie close together in code space, whatever their
pixels look like. Two ways to look at that:

* :func:`embed` maps the codes to 2-D with t-SNE (van der Maaten & Hinton
  2008), which keeps each point's near neighbours near; a scatter coloured by
  the true labels shows the clusters.
* :func:`grid_assignment` snaps the 2-D points to the cells of a grid, one
  image per cell, so the images themselves can be tiled without overlap
  (Karpathy's CNN-code embedding). It is an assignment problem: points p_i
  (scaled to the unit square) to cell centres c_j, minimizing
  ``sum_i ||p_i - c_sigma(i)||^2`` over injective sigma, which scipy's
  ``linear_sum_assignment`` solves exactly.

:func:`knn_accuracy` measures how well a space (codes or their embedding)
keeps the classes apart: leave-one-out k-nearest-neighbour accuracy.
"""
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..backend import get_array_module, to_cpu, to_gpu
from ..datasets import Dataset, as_dataset
from ..layers import Linear
from .targets import check_batch


def code_layer(net):
    """The name of the layer whose output feeds the last top-level Linear layer."""
    children = list(net.children.values())
    for index in range(len(children) - 1, 0, -1):
        if isinstance(children[index], Linear):
            return children[index - 1].name
    raise ValueError("the network has no fully connected classifier after another layer; "
                     "name the code layer with layer= (net.names() lists them)")


def _batches(net, images, batch_size):
    """(count or None, iterator of NCHW batches on the network's device) from a
    Dataset, a folder, None (the model's own data), an array (float NCHW in the
    input space, or uint8 NHWC pixels) or an iterable of batches / (x, labels)."""
    xp = net.array_module()
    move = (lambda a: to_gpu(a)) if xp is not np else to_cpu
    if hasattr(images, "shape") and not (images.ndim == 4 and images.dtype == np.uint8):
        check_batch(net, images)
        return len(images), (move(images[i:i + batch_size])
                             for i in range(0, len(images), batch_size))
    if images is None or isinstance(images, (str, Path, Dataset)) or hasattr(images, "shape"):
        dataset = as_dataset(images, net)
        return len(dataset), (move(x) for x, _ in dataset.batches(batch_size))
    return None, (move(item[0] if isinstance(item, tuple) else item) for item in images)


def codes(net, images, layer=None, batch_size=64, progress=True):
    """The codes of ``images``: ``layer``'s output (default :func:`code_layer`, the
    input of the classifier), one flattened row per image, (N, D), on the
    network's device. ``images``: a Dataset, a folder, an array or an iterable of
    batches (see :func:`_batches`); they go through ``batch_size`` at a time."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, received {batch_size}")
    layer = code_layer(net) if layer is None else layer
    net._require(layer)
    count, batches = _batches(net, images, int(batch_size))
    rows = []
    with tqdm(total=count, desc=f"codes {layer}", unit="image", disable=not progress,
              leave=False) as bar:
        for x in batches:
            check_batch(net, x)
            out = net.forward(x, stop_at=layer, cache=False)
            rows.append(out.reshape(out.shape[0], -1))
            bar.update(out.shape[0])
    if not rows:
        raise ValueError("no images were given")
    return net.array_module().concatenate(rows)


def embed(codes, perplexity=30.0, rng=0):
    """t-SNE of the codes (N, D) -> (N, 2) NumPy float64 points (scikit-learn's
    Barnes-Hut TSNE, PCA initialization). ``rng``: a seed or a Generator."""
    from sklearn.manifold import TSNE
    codes = np.asarray(to_cpu(codes), dtype=np.float64)
    if codes.ndim != 2:
        raise ValueError(f"codes must be an (N, D) array, received shape {codes.shape}")
    if not 0 < perplexity < len(codes):
        raise ValueError(f"perplexity must lie between 0 and the number of points "
                         f"({len(codes)}), received {perplexity}; give more points or a "
                         "smaller perplexity")
    if not isinstance(rng, (int, np.integer)):
        rng = int(np.random.default_rng(rng).integers(2**31 - 1))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=int(rng))
    return tsne.fit_transform(codes)


def grid_cost(points2d, rows, cols):
    """The (N, rows * cols) cost of putting each point in each cell: the squared
    distance between the point, scaled to the unit square (each axis on its own
    min and max), and the cell's centre; cell j is (j // cols, j % cols), row 0
    at the top (the largest y)."""
    points = np.asarray(to_cpu(points2d), dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be an (N, 2) array, received shape {points.shape}")
    if int(rows) < 1 or int(cols) < 1 or len(points) > rows * cols:
        raise ValueError(f"{len(points)} points do not fit a {rows} x {cols} grid; use a "
                         "grid with at least as many cells as points")
    low, high = points.min(axis=0), points.max(axis=0)
    unit = (points - low) / np.where(high > low, high - low, 1.0)
    row, col = np.divmod(np.arange(rows * cols), cols)
    centres = np.stack([(col + 0.5) / cols, 1 - (row + 0.5) / rows], axis=1)
    return ((unit[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)


def grid_assignment(points2d, rows, cols):
    """Each point's (row, col) cell, (N, 2) ints: distinct cells, with the least
    total :func:`grid_cost` (an optimal assignment, ``linear_sum_assignment``)."""
    from scipy.optimize import linear_sum_assignment
    cost = grid_cost(points2d, rows, cols)
    point, cell = linear_sum_assignment(cost)
    order = np.empty(len(point), dtype=np.int64)
    order[point] = cell
    return np.stack(np.divmod(order, cols), axis=1)


def knn_accuracy(points, labels, k=5, chunk=1024):
    """Leave-one-out k-nearest-neighbour accuracy: the fraction of points whose
    label is the majority among their k nearest other points (Euclidean; a tie
    goes to the smallest label, as scikit-learn's classifier does). Distances
    are computed ``chunk`` rows at a time on the points' device."""
    xp = get_array_module(points)
    points = points.astype(xp.float64)
    labels = xp.asarray(labels).astype(xp.int64)
    n = len(points)
    if points.ndim != 2 or labels.shape != (n,):
        raise ValueError(f"points (N, D) and labels (N,) do not match: {points.shape}, "
                         f"{labels.shape}")
    if not 1 <= int(k) < n:
        raise ValueError(f"k must lie between 1 and N - 1 = {n - 1}, received {k}")
    if int(labels.min()) < 0:
        raise ValueError("labels must be non-negative class indices")
    classes = int(labels.max()) + 1
    squared = (points ** 2).sum(axis=1)
    correct = 0
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        distance = squared[start:stop, None] - 2 * points[start:stop] @ points.T + squared[None]
        distance[xp.arange(stop - start), xp.arange(start, stop)] = xp.inf  # leave one out
        nearest = xp.argpartition(distance, k - 1, axis=1)[:, :k]
        votes = xp.zeros((stop - start, classes), dtype=xp.int64)
        for column in range(k):
            votes[xp.arange(stop - start), labels[nearest[:, column]]] += 1
        correct += int((votes.argmax(axis=1) == labels[start:stop]).sum())
    return correct / n
