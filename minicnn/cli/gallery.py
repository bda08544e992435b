"""``minicnn gallery``: every technique on one model, written as figures."""
ORDER = 1


def _gallery(args):
    from ..gallery import run_gallery
    index, failures, timings = run_gallery(args.out, weights=args.weights, data=args.data,
                                           seed=args.seed, only=args.only)
    print("seconds per section: " + ", ".join(f"{name} {seconds:.0f}"
                                              for name, seconds in timings.items()))
    print(f"wrote {index}")
    if failures:
        print(f"{len(failures)} section(s) failed: {', '.join(s for s, _ in failures)}")
        return 1
    return 0


def register(sub):
    from ..gallery import gallery_sections, section_name
    p = sub.add_parser("gallery", help="run every technique and write the figures with an "
                       "index.html", description="Run every visualization technique on one "
                       "model (the shipped digits model by default) and write PNG figures and an "
                       "index.html that shows them.")
    p.add_argument("--out", default="minicnn-gallery", metavar="DIR",
                   help="output folder (default ./minicnn-gallery)")
    p.add_argument("--weights", metavar="FILE", help="minicnn weights file (default: the shipped "
                   "weights/digits_resnet8.h5)")
    p.add_argument("--data", metavar="FOLDER", help="images (class subfolders name the labels; "
                   "default: the model's own data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", action="append", metavar="SECTION",
                   help="make only this section's figures (repeatable): "
                   f"{', '.join(section_name(m) for m in gallery_sections())}")
    p.set_defaults(func=_gallery)
