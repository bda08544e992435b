"""Subcommands that look at features: ``filters``, ``activations``, ``patches``,
``occlusion``; and their section of ``minicnn gallery``."""
import time

import numpy as np

from .common import add_model_options, load_data, load_model, parse_target_option, write_figure

ORDER = 10


def _images(args, data):
    """The --images indices, checked against the data."""
    bad = [i for i in args.images if not 0 <= i < len(data)]
    if bad:
        raise ValueError(f"--images: index {bad[0]} is out of range; the data ({data.description})"
                         f" has {len(data)} images, valid: 0 to {len(data) - 1}")
    return list(args.images)


def _filters(args):
    from ..plots.features import filter_grid
    from ..techniques import first_layer_filters
    net = load_model(args)
    filters = first_layer_filters(net)
    write_figure(filter_grid(filters, title=f"First-layer filters ({len(filters)}, "
                             f"{filters.shape[1]}x{filters.shape[2]})"), args.out)
    return 0


def _activations(args):
    from ..plots.common import to_display
    from ..plots.features import activation_grid, stage_overview
    from ..techniques import activations, stage_activations, strongest_channels
    net = load_model(args)
    data = load_data(args, net)
    index = _images(args, data)[0]
    x = data.images([index])
    image = to_display(x[0], net.metadata["preprocessing"])
    if args.layer is None:
        stages = {name: maps[0] for name, maps in stage_activations(net, x).items()}
        strongest = {name: strongest_channels(maps[None], args.channels)[0]
                     for name, maps in stages.items()}
        fig = stage_overview(image, stages, strongest, title=f"Image {index}: the {args.channels} "
                             "strongest channels of each stage")
    else:
        maps = activations(net, x, args.layer)
        if maps.ndim != 4:
            raise ValueError(f"layer {args.layer!r} has no maps (output {tuple(maps.shape)}); "
                             "choose a convolutional layer, e.g. res3")
        fig = activation_grid(maps[0], image, title=f"Image {index}, {args.layer}: "
                              f"{maps.shape[1]} channels of {maps.shape[2]}x{maps.shape[3]}")
    write_figure(fig, args.out)
    return 0


def _patches(args):
    from ..plots.features import top_patches_figure
    from ..techniques import patch_projections, top_patches
    net = load_model(args)
    data = load_data(args, net)
    channels = args.channels if args.channels else list(range(8))
    patches = top_patches(net, data, args.layer, channels=channels, k=args.k,
                          batch_size=args.batch_size)
    projections = patch_projections(net, data, args.layer, patches) if args.guided else None
    fig = top_patches_figure(patches, data.pixels, projections, net.metadata["preprocessing"],
                             layer=args.layer)
    write_figure(fig, args.out)
    return 0


def _occlusion(args):
    from ..techniques import occlusion_map
    net = load_model(args)
    data = load_data(args, net)
    indices = _images(args, data)
    x = data.images(indices)
    target = parse_target_option(args.target)
    logits = net.forward(x, cache=False)
    if target is None:  # each image's predicted class
        target = [int(c) for c in logits.argmax(axis=1)]
    maps = occlusion_map(net, x, target, args.size, args.stride, fill=args.fill,
                         batch_size=args.batch_size)
    fig = _occlusion_figure(net, data, indices, x, target, maps, args.size, args.stride, logits)
    write_figure(fig, args.out)
    return 0


def _occlusion_figure(net, data, indices, x, target, maps, size, stride, logits):
    from ..layers import softmax
    from ..plots.common import to_display
    from ..plots.occlusion import occlusion_figure
    labels = net.metadata.get("labels")
    spec = net.metadata["preprocessing"]
    images = [to_display(image, spec) for image in x]
    if isinstance(target, str):
        return occlusion_figure(images, maps, size, stride, [f"image {i}" for i in indices],
                                label=target, title=f"Occlusion: {target}")
    classes = np.broadcast_to(np.asarray(target), (len(indices),))
    probabilities = softmax(logits)
    baselines = [float(probabilities[n, c]) for n, c in enumerate(classes)]
    titles = [f"image {i}: class {labels[c] if labels else c}" for i, c in zip(indices, classes)]
    return occlusion_figure(images, maps, size, stride, titles, baselines,
                            title="Occlusion: probability of the class")


def register(sub):
    p = sub.add_parser("filters", help="the first convolution's filters as images",
                       description="Draw the first convolution's filters, each scaled to "
                                   "[0, 1] on its own.")
    add_model_options(p, data=False, out="filters.png")
    p.set_defaults(func=_filters)

    p = sub.add_parser("activations", help="activation maps of a layer, or across the stages",
                       description="Draw every channel's map at --layer for one image, or "
                                   "without --layer the strongest channels of each stage.")
    add_model_options(p, layer=True, out="activations.png")
    p.add_argument("--images", type=int, nargs="+", default=[0], metavar="I",
                   help="index of the image in the data (default 0)")
    p.add_argument("--channels", type=int, default=8, metavar="N",
                   help="channels per stage in the overview (default 8)")
    p.set_defaults(func=_activations)

    p = sub.add_parser("patches", help="maximally activating patches of a layer's channels",
                       description="Pour the data through the network and show, for each "
                                   "channel, the image patches that activate it most.")
    add_model_options(p, layer="res3", out="patches.png")
    p.add_argument("--channels", type=int, nargs="+", metavar="C",
                   help="channels to show (default 0 to 7)")
    p.add_argument("--k", type=int, default=9, help="patches per channel (default 9)")
    p.add_argument("--guided", action="store_true",
                   help="show each patch's guided-backprop projection beside it")
    p.set_defaults(func=_patches)

    p = sub.add_parser("occlusion", help="probability of a class as a grey square slides over",
                       description="Slide a square of --fill (0: the dataset's mean colour) over "
                                   "each image and map the target's softmax probability.")
    add_model_options(p, target=True, out="occlusion.png")
    p.add_argument("--images", type=int, nargs="+", default=[0, 1, 2, 3], metavar="I",
                   help="indices of the images in the data (default 0 1 2 3)")
    p.add_argument("--size", type=int, default=8, help="side of the square in pixels (default 8)")
    p.add_argument("--stride", type=int, default=2, help="step between positions (default 2)")
    p.add_argument("--fill", type=float, default=0.0,
                   help="value of the square in the network's input space (default 0)")
    p.set_defaults(func=_occlusion)


def gallery(context):
    from ..plots.common import to_display
    from ..plots.features import (activation_grid, filter_grid, stage_overview,
                                  top_patches_figure)
    from ..techniques import (activations, first_layer_filters, occlusion_map, patch_projections,
                              receptive_field, stage_activations, strongest_channels, top_patches)
    net, data = context.net, context.data
    spec = net.metadata["preprocessing"]
    filters = first_layer_filters(net)
    context.add(filter_grid(filters), "filters.png", "First-layer filters",
                f"The {len(filters)} filters of the first convolution "
                f"({filters.shape[1]}x{filters.shape[2]}), each scaled to [0, 1] on its own.")

    x = data.images([0])
    image = to_display(x[0], spec)
    stages = {name: maps[0] for name, maps in stage_activations(net, x).items()}
    strongest = {name: strongest_channels(maps[None], 8)[0] for name, maps in stages.items()}
    context.add(stage_overview(image, stages, strongest), "activations_overview.png",
                "Activations across the stages",
                "The 8 channels with the largest mean activation at each stage, for image 0 of "
                f"{data.description}; resolutions " +
                ", ".join(f"{n} {m.shape[1]}x{m.shape[2]}" for n, m in stages.items()) + ".")
    first = next(iter(stages))
    maps = activations(net, x, first)
    context.add(activation_grid(maps[0], image, title=f"{first}: every channel"),
                "activations_grid.png", f"Every channel of {first}",
                f"All {maps.shape[1]} maps of {first} for the same image, on one colour scale.")

    layer = "res3" if "res3" in net.names() else first
    start = time.perf_counter()
    patches = top_patches(net, data, layer, channels=range(6), k=6, progress=False)
    seconds = time.perf_counter() - start
    projections = patch_projections(net, data, layer, patches, progress=False)
    field = receptive_field(net, layer).size
    context.add(top_patches_figure(patches, data.pixels, projections, spec, layer=layer),
                "top_patches.png", f"Maximally activating patches of {layer}",
                f"For channels 0-5 of {layer}, the 6 strongest activations over all "
                f"{len(data)} images ({seconds:.1f} s), each cropped to its receptive field "
                f"({field[0]}x{field[1]} pixels, clipped at the border) beside its guided-backprop "
                "projection; the number is the activation.")

    count = min(4, len(data))
    x = data.images(range(count))
    logits = net.forward(x, cache=False)
    target = [int(c) for c in logits.argmax(axis=1)]
    size, stride = 8, 2
    start = time.perf_counter()
    maps = occlusion_map(net, x, target, size, stride, progress=False)
    seconds = time.perf_counter() - start
    fig = _occlusion_figure(net, data, list(range(count)), x, target, maps, size, stride, logits)
    context.add(fig, "occlusion.png", "Occlusion",
                f"The predicted class's probability as a square of {size}x{size} pixels of the "
                f"mean colour moves by {stride} pixels ({maps.shape[1]}x{maps.shape[2]} positions, "
                f"{seconds:.1f} s for {count} images); lowest values per image: "
                + ", ".join(f"{float(m.min()):.3f}" for m in maps) + ".")
