"""The ``faststyle`` command. Each subcommand lives in ``faststyle/commands/<name>.py`` and exposes
``register(subparsers)``; the function it sets as ``handler`` receives the parsed arguments."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import signal
import sys
import textwrap
from typing import Any

from faststyle import __version__, commands
from faststyle.errors import FaststyleError

ORDER = ["train", "stylize", "gatys", "compare", "export", "weights", "bench", "demo"]


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions wrapped line by line, indented example lines kept as written; each option's default shown
    where it says something and the help text does not already give one."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines = []
        for line in text.splitlines():
            if line.startswith(" ") or not line:
                lines.append(indent + line)
            else:
                lines.append(textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent))
        return "\n".join(lines)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default == argparse.SUPPRESS:
            return action.help
        if not action.option_strings or default == []:
            return action.help
        if isinstance(default, list | tuple):  # as typed on the command line
            shown = ",".join(map(str, default)).replace("%", "%%")
            return f"{text} (default: {shown})" if text else f"(default: {shown})"
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """Every (sub)command's parser: faststyle's help formatter unless one is given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="faststyle",
        description=(
            "Neural style transfer: train a fast style network for one artwork, stylize photos at once, "
            "run the Gatys reference optimisation, and compare loss networks (VGG16/19, GoogLeNet, AlexNet, CaffeNet)."
        ),
        epilog="Run `faststyle COMMAND --help` for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"faststyle {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    names = [m.name for m in pkgutil.iter_modules(commands.__path__)]
    for name in sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        importlib.import_module(f"faststyle.commands.{name}").register(sub)
    for command in sub.choices.values():
        _add_verbose(command)
    return parser


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """``-v`` after the command too (``faststyle stylize -v …``), in every sub-command's parser."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_verbose(child)


def _no_tips(record: logging.LogRecord) -> bool:
    """Leaves out Lightning's advertisements ("💡 Tip: … try installing …") from every training's log."""
    return not str(record.msg).startswith("💡")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``), raised like Ctrl-C so that the command cleans up the same way."""


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except KeyboardInterrupt as stop:  # also while the parser's modules load
        # one that carries what was done (gatys.Interrupted) keeps the signal it stopped for as its reason
        if isinstance(stop, Terminated) or isinstance(getattr(stop, "reason", None), Terminated):
            print("faststyle: stopped (SIGTERM)", file=sys.stderr)
            return 128 + signal.SIGTERM
        print("faststyle: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``faststyle`` program: ``main`` with ``kill`` stopping a command as Ctrl-C does (its partial files
    removed). Only here, not in ``main``, which a program of its own may call. Training replaces the handler with
    Lightning's while it fits, which checkpoints first."""
    signal.signal(signal.SIGTERM, _terminate)
    sys.exit(main())


def _terminate(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second kill must not cut the clean-up short
    raise Terminated


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_no_tips)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except FaststyleError as exc:
        print(f"faststyle: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    entry()
