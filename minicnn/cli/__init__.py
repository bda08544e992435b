"""The ``minicnn`` command line: one subcommand per job.

Each module of this package (but :mod:`~minicnn.cli.common`) registers its
subcommands with ``register(subparsers)``; ``ORDER`` sorts them in the help.
A module whose techniques belong in ``minicnn gallery`` also defines
``gallery(context)`` (see :mod:`minicnn.gallery`).
"""
import argparse
import importlib
import pkgutil
import sys

from ..layers.base import ShapeError


def command_modules():
    """The subcommand modules of this package, in their ``ORDER``."""
    modules = [importlib.import_module(f"{__name__}.{info.name}")
               for info in pkgutil.iter_modules(__path__) if info.name != "common"]
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 50), m.__name__))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="minicnn", description="A readable CNN engine: layers, ResNets, visualizations.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in command_modules():
        module.register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, TypeError, RuntimeError, OSError, ShapeError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"minicnn {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
