"""The ``faststyle`` command. Each subcommand lives in ``faststyle/commands/<name>.py`` and exposes
``register(subparsers)``; the function it sets as ``handler`` receives the parsed arguments."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from faststyle import __version__, commands
from faststyle.errors import FaststyleError

ORDER = ["train", "stylize", "gatys", "compare", "export", "weights", "bench", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faststyle",
        description=(
            "Neural style transfer: train a fast style network for one artwork, stylize photos at once, "
            "run the Gatys reference optimisation, and compare loss networks (VGG16/19, GoogLeNet, AlexNet, CaffeNet)."
        ),
        epilog="Run `faststyle COMMAND --help` for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"faststyle {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = [m.name for m in pkgutil.iter_modules(commands.__path__)]
    for name in sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        importlib.import_module(f"faststyle.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except FaststyleError as exc:
        print(f"faststyle: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("faststyle: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
