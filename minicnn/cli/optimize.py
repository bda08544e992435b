"""``minicnn class-model``, ``invert``, ``dream`` and ``style``: images made by
optimizing them through the network."""
ORDER = 40


def softmax(logits):
    """:func:`minicnn.layers.softmax` of the logits brought to the host in float64."""
    import numpy as np
    from ..backend import to_cpu
    from ..layers import softmax as layers_softmax
    return layers_softmax(np.asarray(to_cpu(logits), np.float64))


def load_input(path, net, size=None):
    """An image file as a (1, C, size, size) batch in the network's input space (the
    preprocessing's input size when ``size`` is None)."""
    from PIL import Image
    import numpy as np
    from ..images import fit_to_input, load_image, normalize
    spec = net.metadata["preprocessing"]
    pixels = load_image(path)
    if size is None:
        pixels = fit_to_input(pixels, spec)
    else:
        pixels = np.asarray(Image.fromarray(pixels).resize((size, size), Image.BILINEAR))
    return normalize(pixels, spec)[None]


def load_model_or_vgg19(args):
    """The --weights model; without --weights, VGG-19 when its weights were downloaded
    (``minicnn weights download torchvision_vgg19``), as the inversion and style papers
    used, else the shipped digits model."""
    from ..io.download import VGG19_DOWNLOADS, installed
    from ..io.model_file import load
    from .common import load_model
    path = None if args.weights else installed(*VGG19_DOWNLOADS)
    if path is None:
        return load_model(args)
    print(f"using VGG-19 from {path} (give --weights for another model)")
    return load(path)


def _first_image(args, net):
    from .common import load_data
    if args.image is not None:
        return load_input(args.image, net, args.size)
    data = load_data(args, net)
    x = data.images([0])
    if args.size is not None and args.size != x.shape[2]:
        from ..techniques.dream import zoom
        x = zoom(x, args.size / x.shape[2], args.size / x.shape[3])
    return x


def stages(net):
    from ..techniques.style import default_layers
    return default_layers(net)[1][1:]


def class_models(net, targets, steps, seed, size=None, progress=True):
    """One class-model image per target; returns (images, softmax of each's class or
    None for unit targets)."""
    import numpy as np
    from ..techniques import class_model
    if all(isinstance(t, int) for t in targets):
        shape = None if size is None else (len(targets), 3, size, size)
        images, _ = class_model(net, list(targets), steps=steps, shape=shape, rng=seed,
                                progress=progress)
        return list(images), softmax(net.forward(images))[np.arange(len(targets)), targets]
    shape = None if size is None else (1, 3, size, size)
    images = [class_model(net, t, steps=steps, shape=shape, init="noise", rng=seed,
                          progress=progress)[0][0] for t in targets]
    return images, None


def _class_model(args):
    from ..plots.optimize import class_model_figure, image_grid
    from .common import load_model, parse_target_option, write_figure
    net = load_model(args)
    labels = net.metadata.get("labels") or [str(k) for k in range(net.metadata["num_classes"])]
    if args.layer:
        targets = [f"{args.layer}:{c}" for c in range(args.channels)]
    elif args.target:
        targets = [parse_target_option(t.strip()) for t in args.target.split(",")]
    else:
        targets = list(range(len(labels)))
    images, probabilities = class_models(net, targets, args.steps, args.seed, args.size)
    spec = net.metadata["preprocessing"]
    if probabilities is None:
        fig = image_grid(images, targets, spec, columns=min(len(images), 8),
                         title=f"Feature visualization, {args.steps} steps")
    else:
        fig = class_model_figure(images, [labels[t] for t in targets], probabilities, spec,
                                 title=f"Class models, {args.steps} steps")
        for t, p in zip(targets, probabilities):
            print(f"  {labels[t]:<12} softmax {p:.4f}")
    write_figure(fig, args.out)
    return 0


def inversions(net, image, layers, steps, progress=True):
    """``{layer: reconstruction (C, H, W)}`` and ``{layer: code error}``."""
    from ..techniques import code_error, invert
    images, errors = {}, {}
    for layer in layers:
        x, _ = invert(net, image, layer, steps=steps, progress=progress)
        images[layer], errors[layer] = x[0], float(code_error(net, x, image, layer)[0])
    return images, errors


GALLERY_RATES = {"gradient": [10.0, 100.0], "adam": [0.1, 0.3]}


def optimizer_comparison(net, image, layer, evaluations, seed, progress=True,
                         learning_rates=None):
    """The loss-per-evaluation figure of :func:`compare_optimizers` on one inversion;
    returns (figure, {optimizer: final loss})."""
    from ..plots.optimize import loss_curves
    from ..techniques import compare_optimizers
    results = compare_optimizers(net, image, layer, evaluations=evaluations, rng=seed,
                                 progress=progress, learning_rates=learning_rates)
    fig = loss_curves({name: r[1] for name, r in results.items()},
                      title=f"Inverting {layer}: loss per evaluation")
    return fig, {name: r[1].loss[-1] for name, r in results.items()}


def _invert(args):
    from ..plots.optimize import inversion_figure
    from .common import write_figure
    net = load_model_or_vgg19(args)
    image = _first_image(args, net)
    if args.compare_optimizers:
        layer = args.layer or stages(net)[0]
        fig, finals = optimizer_comparison(net, image, layer, args.steps, args.seed)
        for name, loss in finals.items():
            print(f"  {name:<10} final loss {loss:.5g} after {args.steps} evaluations")
        write_figure(fig, args.out)
        return 0
    layers = [args.layer] if args.layer else stages(net)
    images, errors = inversions(net, image, layers, args.steps)
    for layer, error in errors.items():
        print(f"  {layer:<12} relative code error {error:.4f}")
    fig = inversion_figure(image[0], images, errors, net.metadata["preprocessing"],
                           title=f"Feature inversion, L-BFGS, {args.steps} iterations")
    write_figure(fig, args.out)
    return 0


def _dream(args):
    from ..plots.optimize import image_grid
    from ..techniques import dream
    from .common import load_model, write_figure
    net = load_model(args)
    image = _first_image(args, net)
    layers = [args.layer] if args.layer else stages(net)[:2]
    guide = None if args.guide is None else load_input(args.guide, net, args.size)
    dreams = [dream(net, image, layer, octaves=args.octaves, steps=args.steps,
                    jitter=args.jitter, guide=guide, rng=args.seed)[0][0] for layer in layers]
    fig = image_grid([image[0], *dreams], ["image", *(f"dream {layer}" for layer in layers)],
                     net.metadata["preprocessing"], title="DeepDream" + (" (guided)" if guide
                                                                         is not None else ""))
    write_figure(fig, args.out)
    return 0


def _style(args):
    from ..plots.optimize import image_grid
    from ..techniques import style_objective, style_transfer
    from .common import write_figure
    net = load_model_or_vgg19(args)
    content = load_input(args.content, net, args.size)
    styles = [load_input(path, net, args.size) for path in args.style]
    style_layers = args.style_layers.split(",") if args.style_layers else None
    results, titles = [], []
    for statistic in args.statistic.split(","):
        x, _ = style_transfer(net, content, styles, args.layer, style_layers,
                              style_weight=args.style_weight, statistic=statistic,
                              steps=args.steps, preserve_colors=args.preserve_colors,
                              rng=args.seed)
        measure = style_objective(net, content, styles, args.layer, style_layers,
                                  content_weight=0.0, style_weight=1.0, statistic=statistic)
        drop = 1 - measure(x)[0] / measure(content)[0]
        print(f"  {statistic:<9} style loss lowered by {drop:.1%} from the content image")
        results.append(x[0])
        titles.append(f"{statistic}\nstyle loss -{drop:.0%}")
    fig = image_grid([content[0], *(s[0] for s in styles), *results],
                     ["content", *(["style"] * len(styles)), *titles],
                     net.metadata["preprocessing"], title="Neural style")
    write_figure(fig, args.out)
    return 0


def register(sub):
    from .common import add_model_options

    def common(p, steps, out, data=False):
        p.add_argument("--steps", type=int, default=steps, help=f"optimizer steps ({steps})")
        p.add_argument("--size", type=int, default=None, metavar="PIXELS",
                       help="work at this square size (default: the model's input size)")
        add_model_options(p, layer=True, data=data, out=out)

    p = sub.add_parser("class-model", help="images that maximize a class score or a unit",
                       description="Class model visualization (Simonyan et al.): gradient "
                       "ascent on S_c(I) - l2 ||I||^2 with jitter and blur, one image per class; "
                       "with --layer, feature visualization of that layer's first channels.")
    common(p, 100, "class_model.png")
    p.add_argument("--target", metavar="T", help="classes or LAYER:CHANNEL, comma-separated "
                   "(default: every class)")
    p.add_argument("--channels", type=int, default=8, help="channels shown with --layer (8)")
    p.set_defaults(func=_class_model)

    p = sub.add_parser("invert", help="reconstruct an image from its code at each stage",
                       description="Feature inversion (Mahendran & Vedaldi) with L-BFGS: the "
                       "image whose code at a layer matches the given image's. Without "
                       "--weights, VGG-19 when its weights were downloaded.")
    p.add_argument("image", nargs="?", help="image file (default: the model's first image)")
    common(p, 200, "invert.png", data=True)
    p.add_argument("--compare-optimizers", action="store_true",
                   help="instead: L-BFGS, gradient descent and Adam (each with the best of its "
                   "learning rates) on the same inversion, --steps evaluations each, as loss "
                   "curves (at --layer, default the first stage)")
    p.set_defaults(func=_invert)

    p = sub.add_parser("dream", help="DeepDream: boost what a layer sees",
                       description="DeepDream over an octave pyramid with jitter and "
                       "normalized steps; --guide maximizes the match to a guide's features.")
    p.add_argument("image", nargs="?", help="image file (default: the model's first image)")
    common(p, 10, "dream.png", data=True)
    p.add_argument("--octaves", type=int, default=3, help="pyramid levels (3)")
    p.add_argument("--jitter", type=int, default=4, help="largest random roll in pixels (4)")
    p.add_argument("--guide", metavar="IMAGE", help="guide image for the guided objective")
    p.set_defaults(func=_dream)

    p = sub.add_parser("style", help="neural style transfer (Gatys et al.)",
                       description="An image with CONTENT's content and STYLE's style, by "
                       "L-BFGS; --layer is the content layer. Without --weights, VGG-19 when "
                       "its weights were downloaded (Gatys et al.'s layers).")
    p.add_argument("content")
    p.add_argument("style", nargs="+", help="one or more style images (blended equally)")
    common(p, 200, "style.png")
    p.add_argument("--style-layers", metavar="A,B,...", help="default: first ReLU and stages")
    p.add_argument("--statistic", default="gram", help="gram, mean, mean_std, or several "
                   "comma-separated (gram)")
    p.add_argument("--style-weight", type=float, default=1e5, help="(1e5)")
    p.add_argument("--preserve-colors", action="store_true",
                   help="transfer on luminance only, keeping the content's colours")
    p.set_defaults(func=_style)


def _feature_visualization(context, layer, spec, channels=6, steps=100):
    """The gallery's feature visualization: one image per channel of ``layer``, with
    how strongly it drives the channel against the data's strongest activation."""
    import time
    from ..backend import get_array_module, to_cpu
    from ..plots.optimize import image_grid
    net, data = context.net, context.data
    start = time.perf_counter()
    targets = [f"{layer}:{c}" for c in range(channels)]
    images, _ = class_models(net, targets, steps, context.seed, progress=False)
    batch = get_array_module(images[0]).stack(images)
    made = to_cpu(net.forward(batch, stop_at=layer, cache=False))
    real = to_cpu(net.forward(data.images(range(min(64, len(data)))), stop_at=layer, cache=False))
    ratios = [float(made[c, c].max() / real[:, c].max()) for c in range(channels)]
    context.add(image_grid(images, targets, spec, title=f"Feature visualization, {layer}"),
                "feature_visualization.png", "Feature visualization",
                f"Gradient ascent on the strongest activation of channels 0-{channels - 1} of "
                f"{layer}, {steps} steps from noise with jitter and blur "
                f"({time.perf_counter() - start:.1f} s); each image drives its channel to "
                f"{min(ratios):.1f}-{max(ratios):.1f} times the channel's strongest activation "
                f"over {len(real)} of the data's images.")


def gallery(context):
    import time
    import numpy as np
    from ..plots.optimize import class_model_figure, image_grid, inversion_figure
    from ..techniques import dream, style_objective, style_transfer
    net, data, seed = context.net, context.data, context.seed
    spec = net.metadata["preprocessing"]
    labels = net.metadata.get("labels") or [str(k) for k in range(net.metadata["num_classes"])]
    start = time.perf_counter()
    targets = list(range(len(labels)))
    # 200 steps: at 60 the digits model's "3" was still at p = 0.06 (the other digits
    # above 0.99); at 200 every class is above 0.998, in about 2 s on one core
    images, probabilities = class_models(net, targets, 200, seed, progress=False)
    lowest = int(np.argmin(probabilities))
    context.add(class_model_figure(images, [labels[t] for t in targets], probabilities, spec),
                "class_models.png", "Class models",
                f"Gradient ascent on S_c(I) - 0.001 ||I||^2 from the mean image, 200 steps with "
                f"jitter and blur ({time.perf_counter() - start:.1f} s); every class's softmax is "
                f"at least {probabilities.min():.4f} (the lowest is class {labels[lowest]!r}).")
    layers = stages(net)
    _feature_visualization(context, layers[len(layers) // 2], spec)
    image = data.images([0])
    recon, errors = inversions(net, image, layers, 60, progress=False)
    context.add(inversion_figure(image[0], recon, errors, spec), "inversion.png",
                "Feature inversion per stage", "L-BFGS-B, 60 iterations from the mean image; "
                "relative code errors " + ", ".join(f"{k} {v:.3f}" for k, v in errors.items())
                + ".")
    fig, finals = optimizer_comparison(net, image, layers[-1], 40, seed, progress=False,
                                       learning_rates=GALLERY_RATES)
    context.add(fig, "inversion_optimizers.png", "L-BFGS against gradient descent and Adam",
                "Same start, 40 evaluations each, the better of two learning rates for "
                "gradient descent (10, 100) and Adam (0.1, 0.3); final losses " + ", ".join(
                    f"{k} {v:.4g}" for k, v in finals.items()) + ".")
    dreams = [dream(net, image, layer, octaves=2, steps=8, jitter=2, rng=seed,
                    progress=False)[0][0] for layer in layers[:2]]
    context.add(image_grid([image[0], *dreams], ["image", *(f"dream {n}" for n in layers[:2])],
                           spec, title="DeepDream"), "dream.png", "DeepDream",
                f"Two octaves of 8 normalized steps (step 1.5, jitter 2) at {layers[0]} and "
                f"{layers[1]}; on {image.shape[-1]}x{image.shape[-2]} images a dream is a toy "
                "(docs/optimizing_images.md shows them on a larger photo).")
    content, style = data.images([0]), data.images([1])
    row, titles = [content[0], style[0]], ["content", "style"]
    for statistic in ("gram", "mean", "mean_std"):
        x, _ = style_transfer(net, content, style, statistic=statistic, steps=40, rng=seed,
                              progress=False)
        measure = style_objective(net, content, style, content_weight=0.0, style_weight=1.0,
                                  statistic=statistic)
        row.append(x[0])
        titles.append(f"{statistic}\nstyle loss -{1 - measure(x)[0] / measure(content)[0]:.0%}")
    context.add(image_grid(row, titles, spec, title="Neural style"), "style.png",
                "Neural style with three statistics", "L-BFGS, 40 iterations from the content; "
                "each title gives how much the style loss fell.")
