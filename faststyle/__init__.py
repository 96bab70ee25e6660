"""faststyle: neural style transfer — fast feed-forward style networks, the Gatys reference mode, loss networks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("faststyle")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
