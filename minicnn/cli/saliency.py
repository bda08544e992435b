"""``minicnn saliency``: the saliency family side by side on a few images."""
import re

ORDER = 20

METHODS = ("vanilla", "guided", "deconv", "smoothgrad", "integrated-gradients", "grad-cam",
           "guided-grad-cam")


def last_stage(net):
    """The deepest stage alias (``res4`` in the CIFAR ResNets, ``res5`` in ImageNet's):
    Grad-CAM's usual layer, the last one with spatial maps."""
    stages = sorted((int(m.group(1)), name) for name in net.names()
                    if (m := re.fullmatch(r"res(\d+)", name)))
    if not stages:
        raise ValueError("this network has no stage named resN; give --layer (net.names() "
                         "lists them)")
    return stages[-1][1]


def saliency_signals(net, x, target, methods=METHODS, layer=None, samples=50, noise=0.15,
                     steps=50, seed=0, batch_size=64, progress=True):
    """Every requested method's signal on the batch ``x``: a dict from method name to an
    (N, C, H, W) signal, or an (N, H, W) map upsampled to the image for Grad-CAM;
    and notes per method (integrated gradients' completeness gap per image)."""
    from ..techniques import (completeness_gap, deconvnet, grad_cam, guided_backprop,
                              guided_grad_cam, integrated_gradients, smoothgrad, upsample,
                              vanilla_gradient)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown saliency method {unknown[0]!r}; choose from "
                         f"{', '.join(METHODS)}")
    layer = layer or last_stage(net)
    make = {
        "vanilla": lambda: vanilla_gradient(net, x, target),
        "guided": lambda: guided_backprop(net, x, target),
        "deconv": lambda: deconvnet(net, x, target),
        "smoothgrad": lambda: smoothgrad(net, x, target, samples, noise, seed, batch_size,
                                         progress),
        "integrated-gradients": lambda: integrated_gradients(net, x, target, steps=steps,
                                                             batch_size=batch_size,
                                                             progress=progress),
        "grad-cam": lambda: upsample(grad_cam(net, x, target, layer), x.shape[2:]),
        "guided-grad-cam": lambda: guided_grad_cam(net, x, target, layer),
    }
    signals, notes = {}, {}
    for method in methods:
        name = f"{method}\n({layer})" if "grad-cam" in method else method
        signals[name] = make[method]()
        if method == "integrated-gradients":
            gap = completeness_gap(net, x, target, signals[name])
            notes[name] = [f"gap {float(g):.2g}" for g in gap]
    return signals, notes


def _chosen_methods(args):
    if args.all or not args.method:
        return list(METHODS)
    chosen = [m.strip() for text in args.method for m in text.split(",") if m.strip()]
    return list(dict.fromkeys(chosen))


def _saliency(args):
    import numpy as np
    from ..plots.saliency import saliency_figure
    from ..predict import labels_of
    from .common import load_data, load_model, parse_target_option, write_figure
    net = load_model(args)
    data = load_data(args, net)
    indices = range(len(data))
    x = data.images(indices)
    target = parse_target_option(args.target)
    predicted = net.forward(x).argmax(axis=1)
    if target is None:
        target = predicted
    methods = _chosen_methods(args)
    signals, notes = saliency_signals(net, x, target, methods, args.layer, args.samples,
                                      args.noise, args.steps, args.seed, args.batch_size)
    names = labels_of(net)
    titles = [f"predicted {names[int(p)]}" for p in predicted]
    if isinstance(target, str):
        titles = [f"{t}\ntarget {target}" for t in titles]
    elif np.ndim(target) == 0:
        titles = [f"{t}\ntarget {names[int(target)]}" for t in titles]
    fig = saliency_figure([data.pixels(i) for i in indices], signals, titles, notes,
                          title="Saliency: " + ", ".join(methods))
    write_figure(fig, args.out)
    return 0


def register(sub):
    from .common import add_model_options
    p = sub.add_parser("saliency", help="gradients on the image: vanilla, guided backprop, "
                       "deconvnet, SmoothGrad, integrated gradients, Grad-CAM",
                       description="Show what the gradient of a target says about each "
                       "input pixel, for several methods side by side: the signal as an image, "
                       "its heat map (max over channels of |g|) and the map over the photo.")
    p.add_argument("--method", action="append", metavar="NAME",
                   help=f"one of {', '.join(METHODS)}; repeat it or separate by commas "
                        "(default: all of them)")
    p.add_argument("--all", action="store_true", help="every method side by side")
    add_model_options(p, target=True, out="saliency.png")
    p.set_defaults(limit=3)  # images in the figure, one row each
    p.add_argument("--layer", metavar="NAME", help="Grad-CAM's layer (default: the last stage, "
                   "res4 in the CIFAR ResNets, res5 in ImageNet's)")
    p.add_argument("--samples", type=int, default=50, help="SmoothGrad's noisy copies (50)")
    p.add_argument("--noise", type=float, default=0.15,
                   help="SmoothGrad's noise, a fraction of each image's value range (0.15)")
    p.add_argument("--steps", type=int, default=50, help="integrated gradients' steps (50)")
    p.set_defaults(func=_saliency)


def gallery(context):
    import numpy as np
    from ..plots.saliency import completeness_figure, saliency_figure
    from ..predict import labels_of
    from ..techniques import completeness_gap, integrated_gradients
    net, data = context.net, context.data
    indices = range(min(4, len(data)))
    x = data.images(indices)
    predicted = net.forward(x).argmax(axis=1)
    signals, notes = saliency_signals(net, x, predicted, METHODS, samples=25, steps=32,
                                      seed=context.seed, batch_size=64, progress=False)
    names = labels_of(net)
    titles = [f"predicted {names[int(p)]}" for p in predicted]
    fig = saliency_figure([data.pixels(i) for i in indices], signals, titles, notes,
                          title="The saliency family, target: the predicted class")
    layer = last_stage(net)
    context.add(fig, "saliency.png", "Saliency methods side by side",
                f"Gradients of each image's predicted class score with respect to the input "
                f"(Simonyan et al.), with the ReLUs' guided and deconvnet rules, SmoothGrad "
                f"(25 samples, noise 0.15), integrated gradients (32 steps from the zero "
                f"image, the dataset's mean colour; completeness gap printed under each), "
                f"Grad-CAM at {layer} upsampled, and guided Grad-CAM. Rows: the signal around "
                f"grey, the heat map max_c |g|, the map over the digit.")
    steps = [2, 4, 8, 16, 32, 64]
    gaps = [completeness_gap(net, x, predicted,
                             integrated_gradients(net, x, predicted, steps=m, progress=False))
            for m in steps]
    zero = np.zeros_like(x)
    differences = (net.forward(x)[np.arange(len(x)), predicted]
                   - net.forward(zero)[np.arange(len(x)), predicted])
    mean_gaps = [float(np.mean(g)) for g in gaps]
    context.add(completeness_figure(steps, np.stack(gaps), differences),
                "saliency_completeness.png", "Integrated gradients: the completeness gap",
                f"|sum of attributions - (S(x) - S(0))| per image against the number of "
                f"steps: mean {mean_gaps[0]:.3g} at {steps[0]} steps, {mean_gaps[-1]:.3g} at "
                f"{steps[-1]} steps (|S(x) - S(0)| averages {float(np.mean(np.abs(differences))):.3g}).")
