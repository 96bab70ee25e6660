"""Which files under a folder are photos: image files by suffix, leaving out hidden files and folders (a Mac's
``._photo.jpg``) and the output folders of ``faststyle compare`` studies (their resized copies and stylizations),
which would otherwise be read back as training photos, content or styles."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("faststyle.photofolders")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"})
STUDY_SCHEMA_NAME = "faststyle-compare"


def find_images(folder: str | os.PathLike[str], skip: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted, leaving out hidden files and folders, the output
    folders of studies, and whatever lies under ``skip`` (a study's own output, while it is being written)."""
    skipped = Path(skip).resolve() if skip is not None else None
    found: list[Path] = []
    for root, folders, files in os.walk(folder):
        here = Path(root)
        studies = [name for name in sorted(folders) if not name.startswith(".") and is_study_output(here / name)]
        for name in studies:
            log.info("leaving out %s: it is the output of a faststyle study", here / name)
        folders[:] = [name for name in folders if not name.startswith(".") and name not in studies]
        found += [
            here / name
            for name in files
            if not name.startswith(".")
            and Path(name).suffix.lower() in IMAGE_SUFFIXES
            and (here / name).is_file()
            and not (skipped is not None and (here / name).resolve().is_relative_to(skipped))
        ]
    return sorted(found)


def is_study_output(folder: Path) -> bool:
    """Whether ``folder`` is the output of a study: its results.json, or the cache.json it starts with (the
    resized copies of its photos come first)."""
    results, cache = _json_or_none(folder / "results.json"), _json_or_none(folder / "cache.json")
    if isinstance(results, dict) and str(results.get("schema", "")).startswith(STUDY_SCHEMA_NAME):
        return True
    return isinstance(cache, dict) and isinstance(cache.get("content"), dict)


def _json_or_none(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError):
        return None
