"""The ``minicnn`` command line: one subcommand per job."""
import argparse
import sys


def _gradcheck(args):
    from .gradcheck import check_all, format_table
    rows = check_all(seed=args.seed)
    print(format_table(rows))
    return 0 if all(r[3] for r in rows) else 1


def build_parser():
    parser = argparse.ArgumentParser(
        prog="minicnn", description="A readable CNN engine: layers, ResNets, visualizations.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("gradcheck", help="check every layer's backward pass numerically",
                       description="Check every layer and ReLU backward mode against centered "
                                   "differences in float64 and print a table.")
    p.add_argument("--seed", type=int, default=0, help="seed for the random inputs (default 0)")
    p.set_defaults(func=_gradcheck)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, TypeError, FileNotFoundError, RuntimeError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"minicnn {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
