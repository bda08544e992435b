"""Subcommands ``tsne`` (CNN codes mapped to 2-D) and ``segment`` (GrabCut from
saliency), and their section of ``minicnn gallery``."""
import math
import time
from pathlib import Path

import numpy as np

from .common import add_model_options, load_data, load_model, parse_target_option, write_figure

ORDER = 30


def _grid_side(count, limit):
    return max(1, min(math.ceil(math.sqrt(count)), limit))


def embedding_figures(data, points, note, side, seed=0, title="t-SNE of the CNN codes"):
    """The scatter and, for at most side x side images (a seeded random subset),
    the image grid."""
    from ..plots.embedding import embedding_scatter, image_grid_figure
    from ..techniques import grid_assignment
    scatter = embedding_scatter(points, data.labels, data.classes, title=title, note=note)
    chosen = np.arange(len(points))
    if len(chosen) > side * side:
        chosen = np.sort(np.random.default_rng(seed).choice(len(points), side * side,
                                                            replace=False))
    cells = grid_assignment(points[chosen], side, side)
    images = np.stack([data.pixels(int(i)) for i in chosen])
    grid = image_grid_figure(images, cells, side, side, title=f"{title}: {len(chosen)} images "
                             "on a grid")
    return scatter, grid, len(chosen)


def tsne_measures(net, data, layer=None, perplexity=30.0, seed=0, batch_size=64, progress=True):
    """Codes, their t-SNE points and a line of leave-one-out 5-NN accuracies (in the
    codes, in the map) beside the network's own accuracy on the data."""
    from ..backend import to_cpu
    from ..techniques import codes, embed, knn_accuracy
    from ..techniques.codes import code_layer
    layer = layer or code_layer(net)
    features = to_cpu(codes(net, data, layer=layer, batch_size=batch_size, progress=progress))
    points = embed(features, perplexity=perplexity, rng=seed)
    note = f"{len(points)} images, codes of {layer} ({features.shape[1]}-D), perplexity " \
           f"{perplexity:g}"
    if data.labels is not None:
        predicted = np.concatenate([to_cpu(net.forward(x, cache=False)).argmax(axis=1)
                                    for x, _ in data.batches(batch_size)])
        note += (f"\n5-NN accuracy (leave-one-out): {knn_accuracy(features, data.labels):.1%} "
                 f"in the codes, {knn_accuracy(points, data.labels):.1%} in the 2-D map; "
                 f"the network: {np.mean(predicted == data.labels):.1%}")
    return features, points, note


def _tsne(args):
    net = load_model(args)
    data = load_data(args, net)
    _, points, note = tsne_measures(net, data, args.layer, args.perplexity, args.seed,
                                    args.batch_size)
    print(note)
    scatter, grid, _ = embedding_figures(data, points, note, args.grid, args.seed)
    write_figure(scatter, args.out)
    grid_out = args.grid_out or str(Path(args.out).with_name(Path(args.out).stem + "_grid.png"))
    write_figure(grid, grid_out)
    return 0


def _segment(args):
    from ..images import load_image
    from ..plots.segmentation import segmentation_figure
    from ..techniques.grabcut import seeds, segment_object
    net = load_model(args)
    if args.images:
        photos = [load_image(path) for path in args.images]
        names = [Path(path).name for path in args.images]
    else:
        data = load_data(args, net)
        bad = [i for i in args.indices if not 0 <= i < len(data)]
        if bad:
            raise ValueError(f"--indices: {bad[0]} is out of range; valid: 0 to {len(data) - 1}")
        photos = [data.pixels(i) for i in args.indices]
        names = [f"image {i}" for i in args.indices]
    target = parse_target_option(args.target)
    results = [segment_object(net, photo, target, args.scale, args.seed,
                              fg_quantile=args.fg_quantile, bg_quantile=args.bg_quantile,
                              iterations=args.iterations) for photo in photos]
    labels = net.metadata.get("labels")
    titles = [f"{name}: {labels[r.target] if labels and isinstance(r.target, int) else r.target}"
              for name, r in zip(names, results)]
    for title, result in zip(titles, results):
        print(f"{title}: the mask covers {float(np.mean(result.mask)):.1%} of the pixels")
    fig = segmentation_figure([r.image for r in results], [r.saliency for r in results],
                              [r.mask for r in results],
                              [seeds(r.saliency, args.fg_quantile, args.bg_quantile)
                               for r in results], titles,
                              title="GrabCut from the saliency of the target")
    write_figure(fig, args.out)
    return 0


def register(sub):
    p = sub.add_parser("tsne", help="t-SNE map of the CNN codes, as a scatter and image grid",
                       description="Compute every image's code (the input of the classifier "
                                   "by default), map the codes to 2-D with t-SNE, and draw "
                                   "them coloured by label and as images on a grid.")
    add_model_options(p, layer=True, out="tsne.png")
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30)")
    p.add_argument("--grid", type=int, default=20, metavar="SIDE",
                   help="cells per side of the image grid (default 20)")
    p.add_argument("--grid-out", metavar="PNG",
                   help="where to write the image grid (default: --out with _grid)")
    p.set_defaults(func=_tsne)

    p = sub.add_parser("segment", help="GrabCut of the object from a saliency map",
                       description="Cut out the object of each image with GrabCut, seeded from "
                                   "the vanilla-gradient saliency map of the target (Simonyan "
                                   "et al. 2014, section 6).")
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files (default: images of the model's own data)")
    add_model_options(p, target=True, out="segment.png")
    p.add_argument("--indices", type=int, nargs="+", default=[0, 1, 2, 3], metavar="I",
                   help="without IMAGE: indices into the data (default 0 1 2 3)")
    p.add_argument("--scale", type=int, default=4,
                   help="cut at this many times the network's input resolution (default 4)")
    p.add_argument("--fg-quantile", type=float, default=0.95,
                   help="foreground seeds: saliency above this quantile (default 0.95)")
    p.add_argument("--bg-quantile", type=float, default=0.30,
                   help="background seeds: saliency below this quantile (default 0.30)")
    p.add_argument("--iterations", type=int, default=5, help="GrabCut iterations (default 5)")
    p.set_defaults(func=_segment)


def gallery(context):
    from ..plots.segmentation import segmentation_figure
    from ..techniques.grabcut import seeds, segment_object
    net, data = context.net, context.data
    start = time.perf_counter()
    _, points, note = tsne_measures(net, data, seed=context.seed, progress=False)
    seconds = time.perf_counter() - start
    side = _grid_side(len(points), 20)
    scatter, grid, shown = embedding_figures(data, points, note, side, context.seed)
    summary = note.replace("\n", "; ")
    context.add(scatter, "tsne.png", "t-SNE of the CNN codes",
                f"Each image's code (the input of the classifier) mapped to 2-D by t-SNE, "
                f"coloured by its true label ({seconds:.1f} s). {summary}.")
    context.add(grid, "tsne_grid.png", "The t-SNE map as an image grid",
                f"{shown} images of the map snapped to a {side}x{side} grid, one per cell, by an "
                "optimal assignment of points to cells (scipy's linear_sum_assignment).")

    count = min(4, len(data))
    start = time.perf_counter()
    results = [segment_object(net, data.pixels(i), scale=3, rng=context.seed)
               for i in range(count)]
    seconds = time.perf_counter() - start
    labels = net.metadata.get("labels")
    titles = [f"image {i}: {labels[r.target] if labels else r.target}"
              for i, r in enumerate(results)]
    fig = segmentation_figure([r.image for r in results], [r.saliency for r in results],
                              [r.mask for r in results], [seeds(r.saliency) for r in results],
                              titles, title="GrabCut from saliency")
    side = results[0].image.shape[0]
    context.add(fig, "grabcut.png", "GrabCut from saliency",
                f"The vanilla-gradient saliency of the predicted class, upsampled 3x to "
                f"{side}x{side}, seeds GrabCut: foreground above its 95 % quantile (red), "
                f"background below its 30 % quantile (blue); colour GMMs and a min cut, 5 "
                f"iterations, largest component kept ({seconds:.1f} s for {count} images). "
                "On these grey digits the gradient marks ink and paper alike, so the colour "
                "models barely differ and the cut follows the saliency blob; on colour photos "
                "(demos/grabcut_photos.py) the colours do the work.")
