"""``faststyle demo``: the Gradio app in the repo's ``demo/app.py``."""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import faststyle
from faststyle.argtypes import port_number
from faststyle.errors import FaststyleError

APP = Path(faststyle.__file__).resolve().parents[1] / "demo" / "app.py"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="run the web demo (Gradio)",
        description="Serve the Gradio demo: style gallery, photo upload, webcam streaming, backbone comparison.",
    )
    add_arguments(parser)
    parser.set_defaults(handler=_demo)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options, for ``faststyle demo`` and ``python demo/app.py`` alike."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: all)"
    )
    parser.add_argument("--port", type=port_number, default=7860, help="port to listen on (default: 7860)")
    parser.add_argument(
        "--models",
        default=None,
        help="folder(s) of models, os.pathsep-separated (default: $FASTSTYLE_MODELS, then checkpoints/)",
    )
    parser.add_argument(
        "--share", choices=["yes", "no"], default="no", help="make a public gradio.live link (default: no)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def parse_dirs(models: str | None) -> list[Path] | None:
    """``--models``: folders separated by ``os.pathsep``; None (the default folders) when not given."""
    return [Path(p).expanduser() for p in models.split(os.pathsep) if p] if models else None


def load_app() -> ModuleType:
    """``demo/app.py`` as a module (it lives beside the package, in the source tree)."""
    if not APP.is_file():
        raise FaststyleError(
            f"the demo app {APP} is missing: it ships with the source tree, not the wheel; "
            "clone the repository and `pip install -e '.[demo]'`, or run `python demo/app.py` from a checkout"
        )
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise FaststyleError("the demo needs Gradio: pip install 'faststyle[demo]' (or pip install gradio)") from None
    spec = importlib.util.spec_from_file_location("faststyle_demo_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _demo(args: argparse.Namespace) -> int:
    load_app().launch(parse_dirs(args.models), args.host, args.port, args.share == "yes", args.device)
    return 0
