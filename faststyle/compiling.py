"""How faststyle applies ``torch.compile``: off, or in one of its modes."""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from typing import Any

import torch

from faststyle.errors import FaststyleError

# "reduce-overhead" adds CUDA graphs; "max-autotune" also searches kernel configurations.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compiler(setting: bool | str) -> Callable[[Any], Any]:
    """``torch.compile`` in the mode ``setting`` names (True: "default"), or the identity when it is False."""
    if setting is False:
        return lambda fn: fn
    mode = "default" if setting is True else setting
    if mode not in COMPILE_MODES:
        raise FaststyleError(f"compile mode {mode!r} is not one of {', '.join(COMPILE_MODES)}")
    if not torch.cuda.is_available():  # its "No CUDA runtime is found, using CUDA_HOME=…" says nothing about a CPU run
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return functools.partial(torch.compile, mode=mode)


def new_step() -> None:
    """Marks the start of a training step for CUDA graphs ("reduce-overhead"): the compiled content targets, network
    and loss of one step then share one generation of graph outputs. Without it each compiled call began a new one,
    and the targets, made by an inference graph, were overwritten before the loss read them."""
    torch.compiler.cudagraph_mark_step_begin()


def compile_mode(text: str) -> str:
    if text not in COMPILE_MODES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a compile mode ({', '.join(COMPILE_MODES)}); before other arguments that do not start "
            "with --, write the mode out: --compile default"
        )
    return text


def add_compile_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--compile [MODE]``: off by default, ``default`` when given alone."""
    parser.add_argument(
        "--compile", nargs="?", const="default", default=False, type=compile_mode, metavar="MODE",
        help=f"torch.compile {what}; MODE: {', '.join(COMPILE_MODES)} (default when given alone; reduce-overhead "
        "adds CUDA graphs)",
    )  # fmt: skip
