"""``faststyle bench TARGET``: timings as one JSON line (medians of several runs)."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil

from faststyle import benchmarks


def _prose(docstring: str) -> str:
    """A module docstring as --help text: one paragraph per blank-line block, without reST markup."""
    paragraphs = [" ".join(block.split()) for block in docstring.split("\n\n")]
    return "\n\n".join(p.replace("``", "") for p in paragraphs if p)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench",
        help="measure speed; prints one JSON line",
        description="Measure speed. Each target prints one JSON line with medians over --repeats runs.",
    )
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"faststyle.benchmarks.{info.name}")
        p = targets.add_parser(info.name, help=module.HELP, description=_prose(module.__doc__ or ""))
        module.add_arguments(p)
        p.set_defaults(handler=lambda args, m=module: print(json.dumps(m.run(args))))
