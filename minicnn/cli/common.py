"""What the technique subcommands share: the model and data options, loading
them, and writing a figure."""
from pathlib import Path


def add_model_options(parser, layer=False, target=False, data=True, out=None):
    """--weights, --seed, --out (default ``out``) and, when asked, --layer,
    --target and --data / --limit / --batch-size."""
    parser.add_argument("--weights", metavar="FILE", help="minicnn weights file (default: the "
                        "shipped weights/digits_resnet8.h5)")
    if layer:
        parser.add_argument("--layer", metavar="NAME", default=None if layer is True else layer,
                            help="layer name, as net.names() lists them"
                            + ("" if layer is True else f" (default {layer})"))
    if target:
        parser.add_argument("--target", metavar="T", default=None,
                            help="a class index, LAYER:CHANNEL or LAYER:CHANNEL:Y:X (default: "
                                 "each image's predicted class)")
    if data:
        parser.add_argument("--data", metavar="FOLDER", help="images to use: a folder (class "
                            "subfolders name the labels) or one image file (default: the "
                            "model's own data, the held-out digits for the shipped model)")
        parser.add_argument("--limit", type=int, default=None, metavar="N",
                            help="use only the first N images")
        parser.add_argument("--batch-size", type=int, default=64, metavar="B")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", metavar="PNG", default=out, help=f"where to write the figure "
                        f"(default {out})")


def load_model(args):
    from ..io.model_file import load
    return load(getattr(args, "weights", None))


def load_data(args, net):
    """The --data source as a Dataset (a single image file is a dataset of one)."""
    from ..datasets import as_dataset, from_pixels
    from ..images import load_image
    source = getattr(args, "data", None)
    if source is not None and Path(source).is_file():
        dataset = from_pixels(load_image(source)[None], net.metadata["preprocessing"],
                              classes=net.metadata.get("labels"), description=str(source))
    else:
        dataset = as_dataset(source, net)
    if getattr(args, "limit", None) is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be at least 1, received {args.limit}")
        dataset = dataset.subset(range(min(args.limit, len(dataset))))
    return dataset


def parse_target_option(text):
    """--target as the techniques take it: an int class, or the LAYER:... string."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def write_figure(fig, path):
    from ..plots import save
    path = save(fig, path)
    print(f"wrote {path}")
    return path
