"""Which files under a folder are photos: image files by suffix, in linked folders too, leaving out hidden files
and folders (a Mac's ``._photo.jpg``) and faststyle's own output folders (a study's resized copies and
stylizations, a training run's validation photos and grids), which would otherwise be read back as training
photos, content or styles."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("faststyle.photofolders")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"})
# Photos in formats left out (the datasets library's folder index skips them, or Pillow cannot read them): said, so
# that a phone's .heic or .avif photos, or a camera's raw files, are not dropped without a word.
OTHER_PHOTO_SUFFIXES = frozenset(
    {".avif", ".heic", ".heif", ".jxl", ".jpe", ".mpo", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".raf", ".rw2"}
)
STUDY_SCHEMA_NAME = "faststyle-compare"


def find_images(
    folder: str | os.PathLike[str], skip: str | os.PathLike[str] | None = None, left_out: list[Path] | None = None
) -> list[Path]:
    """Every image file under ``folder`` (recursively, through linked folders but none that holds ``folder``, each
    folder once), sorted, leaving out hidden files and folders, faststyle's output folders, and the folder ``skip``
    where it lies within (an output folder while it is being written). ``left_out`` gathers the photos in the formats
    of ``OTHER_PHOTO_SUFFIXES``."""
    top = os.path.realpath(folder)
    seen = {top, *([os.path.realpath(skip)] if skip is not None else [])}
    found: list[Path] = []
    for root, folders, files in os.walk(folder, followlinks=True):
        here = Path(root)
        kept = []
        for name in sorted(folders):
            real = os.path.realpath(here / name)
            # a link to a folder holding this one (~, say) or to one read already is not followed
            if name.startswith(".") or real in seen or (top + os.sep).startswith(real.rstrip(os.sep) + os.sep):
                continue
            seen.add(real)
            if (what := output_kind(here / name)) is not None:
                log.info("leaving out %s: it is the output of a faststyle %s", here / name, what)
                continue
            kept.append(name)
        folders[:] = kept
        found += [
            here / name
            for name in files
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES and (here / name).is_file()
        ]
        if left_out is not None:
            left_out += [
                here / name
                for name in files
                if not name.startswith(".") and Path(name).suffix.lower() in OTHER_PHOTO_SUFFIXES
            ]
    if left_out is not None:
        left_out.sort()
    return sorted(found)


def output_kind(folder: Path) -> str | None:
    """'study' or 'training run' where ``folder`` is the output of one, else None."""
    if is_study_output(folder):
        return "study"
    # a run killed before its first checkpoint has its logs and validation photos and grids, but no checkpoints/
    logs = any((folder / name).is_file() for name in ("hparams.yaml", "metrics.csv"))
    logs = logs or any(folder.glob("events.out.tfevents.*"))
    if logs and ((folder / "checkpoints").is_dir() or (folder / "val").is_dir()):
        return "training run"
    return None


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
