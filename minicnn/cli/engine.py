"""Subcommands for the engine itself: gradcheck, classify, and weights files."""
ORDER = 0


def _gradcheck(args):
    from ..gradcheck import check_all, format_table
    rows = check_all(seed=args.seed)
    print(format_table(rows))
    return 0 if all(r[3] for r in rows) else 1


def _classify(args):
    import json
    from ..io.model_file import load
    from ..predict import classify
    if args.top < 1:
        raise ValueError(f"--top must be at least 1, received {args.top}")
    net = load(args.weights)
    for result in classify(net, args.images, top=args.top):
        if args.json:
            print(json.dumps(result))
            continue
        print(result["path"])
        for label, prob in result["predictions"]:
            print(f"  {prob:7.2%}  {label}")
    return 0


def _convert(args):
    from ..io.convert import convert
    meta = convert(args.src, args.dst, arch=args.arch, variant=args.variant, labels=args.labels)
    print(f"wrote {args.dst}: {meta['arch']} ({meta['variant']}), {meta['num_classes']} classes")
    return 0


def _download(args):
    from ..io.download import download
    path = download(args.name, folder=args.dir, progress=not args.quiet)
    print(f"wrote {path}")
    return 0


def _list(args):
    from ..io.download import REGISTRY, weights_home
    print(f"known downloads (saved to {weights_home()} unless --dir is given):")
    for name, entry in REGISTRY.items():
        print(f"  {name:<22} {entry['about']}")
    return 0


def _info(args):
    from ..io.hdf5 import read_weights
    metadata, state = read_weights(args.file)
    for key in ("arch", "variant", "num_classes", "preprocessing", "source"):
        print(f"{key}: {metadata.get(key)}")
    labels = metadata.get("labels") or []
    print(f"labels: {labels[:5]}{' ...' if len(labels) > 5 else ''}")
    print(f"arrays: {len(state)}, parameters: {sum(v.size for v in state.values()):,}")
    return 0


def register(sub):
    p = sub.add_parser("gradcheck", help="check every layer's backward pass numerically",
                       description="Check every layer and ReLU backward mode against centered "
                                   "differences in float64 and print a table.")
    p.add_argument("--seed", type=int, default=0, help="seed for the random inputs (default 0)")
    p.set_defaults(func=_gradcheck)

    p = sub.add_parser("classify", help="print the top-k labels of images",
                       description="Classify image files (any format Pillow reads) with a "
                                   "minicnn weights file; the shipped digits model by default.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--weights", metavar="FILE", help="minicnn weights file (default: the "
                   "shipped weights/digits_resnet8.h5)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many labels (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.set_defaults(func=_classify)

    weights = sub.add_parser("weights", help="convert, download and inspect weights files")
    wsub = weights.add_subparsers(dest="weights_command", metavar="ACTION")
    wsub.required = True
    p = wsub.add_parser("convert", help="convert Keras / PyTorch / Caffe weights",
                        description="Convert a Keras HDF5, PyTorch checkpoint or Caffe "
                                    ".caffemodel file into minicnn's HDF5 format.")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--arch", help="e.g. resnet50, cifar_resnet20, vgg19 (default: inferred)")
    p.add_argument("--variant", choices=["caffe", "torchvision", "keras", "cifar"],
                   help="default: follows from the source format")
    p.add_argument("--labels", metavar="FILE",
                   help="class names: a Keras class-index JSON or a text file, one per line")
    p.set_defaults(func=_convert)
    p = wsub.add_parser("download", help="download, verify and convert known weights")
    p.add_argument("name", help="see 'minicnn weights list'")
    p.add_argument("--dir", help="destination folder (default $MINICNN_HOME or ~/.cache/minicnn)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_download)
    p = wsub.add_parser("list", help="list the known downloads")
    p.set_defaults(func=_list)
    p = wsub.add_parser("info", help="show a minicnn weights file's metadata")
    p.add_argument("file")
    p.set_defaults(func=_info)
