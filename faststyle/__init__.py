"""faststyle: neural style transfer — fast feed-forward style networks, the Gatys reference mode, loss networks.

``faststyle.Stylizer`` applies a trained model to images and tensors, ``faststyle.stylize_video`` to video files,
``faststyle.stylize_animation`` to animated GIF, PNG and WebP files; they are imported on first use, so that
``import faststyle`` (and the command line's start) stays light.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("faststyle")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

if TYPE_CHECKING:
    from faststyle.animation import stylize_animation
    from faststyle.stylize import Stylizer
    from faststyle.video import stylize_video

_LAZY = {
    "Stylizer": "faststyle.stylize",
    "stylize_video": "faststyle.video",
    "stylize_animation": "faststyle.animation",
}

__all__ = ["Stylizer", "__version__", "stylize_animation", "stylize_video"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if not name.startswith("_") and find_spec(f"faststyle.{name}") is not None:  # faststyle.gatys, without importing it
        return import_module(f"faststyle.{name}")
    raise AttributeError(f"module 'faststyle' has no attribute {name!r}")
