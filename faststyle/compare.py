"""The loss-network study: for each style and backbone (or layer config) train a model and/or run Gatys, stylize
the same photos, measure the results and write ``results.json``, ``report.md`` and a static ``index.html``.

Everything expensive is cached under the output folder: models in ``models/`` are reused when their metadata
matches the requested run; stylized images and metrics are keyed by a hash of their inputs in ``cache.json``.
Metrics are computed from the PNG files as written, so a reused run reports the same numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from faststyle.config import LayerConfig, layer_weights, load_config
from faststyle.device import resolve_device
from faststyle.errors import FaststyleError
from faststyle.gatys import VERSION as GATYS_VERSION
from faststyle.images import READER_VERSION, atomic_write_bytes, check_writable, load_image, save_image, sha256_file
from faststyle.losses import STYLE_BALANCE, TRAINING_WEIGHTS
from faststyle.lossnets import LossNet, available_lossnets, get_lossnet, spec
from faststyle.metrics import layer_shares, relative_style_loss
from faststyle.modelfile import hardware
from faststyle.photofolders import IMAGE_SUFFIXES, STUDY_SCHEMA_NAME, find_images
from faststyle.report import render_html, render_markdown
from faststyle.settings import TrainSettings, default_style_size

log = logging.getLogger("faststyle.compare")

SCHEMA = f"{STUDY_SCHEMA_NAME}/1"
MODES = ("feedforward", "gatys", "both")
# Bump when a metric's definition changes, so cached values are recomputed.
METRICS_VERSION = 3
STEADINESS_VERSION = 1
STEADINESS_FRAMES = 4  # noisy frames of each photo
LPIPS_NETWORK = "vgg16"
PAIR_MEASURES = ("ssim_y", f"lpips_{LPIPS_NETWORK}", "color_hist", "grain", "texture")  # one per photo
IDENTITY = "content"
HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


def default_data_dir() -> Path | None:
    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"
    return folder if folder.is_dir() else None


@dataclass
class CompareSettings:
    styles: list[str]
    content: list[str]
    out: str
    backbones: list[str] = field(default_factory=lambda: ["vgg16", "googlenet", "alexnet"])
    configs: list[str] = field(default_factory=list)
    mode: str = "feedforward"
    steps: int = 2000
    size: int = 256
    batch: int = 4
    gatys_iters: list[int] = field(default_factory=lambda: [100, 300, 500])
    # feed-forward style weight, or "auto" (faststyle.balance), per column name or backbone ("*": every column);
    # otherwise train's default
    style_weights: dict[str, float | str] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    data: str | None = None
    cache: str | None = None
    workers: int | None = None
    progress: bool = True

    def check(self) -> None:
        if self.mode not in MODES:
            raise FaststyleError(f"--mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not self.styles:
            raise FaststyleError("give at least one style image with --styles")
        if not self.backbones and not self.configs:
            raise FaststyleError("give at least one backbone with --backbones, e.g. vgg16,googlenet")
        for name in self.backbones:
            spec(name)
        if self.steps <= 0 or self.batch <= 0 or self.size < 16:
            raise FaststyleError("--steps and --batch must be positive and --size at least 16")
        for key, weight in self.style_weights.items():
            if weight != "auto" and not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
                raise FaststyleError(f"--style-weight {key}={weight}: give a finite number of 0 or more, or auto")
        if self.mode != "feedforward" and (not self.gatys_iters or min(self.gatys_iters) <= 0):
            raise FaststyleError("--gatys-iters takes positive iteration counts, e.g. 100,300,500")

    def style_weight(self, column: Column) -> float | str:
        weights = self.style_weights
        weight = weights.get(
            column.name, weights.get(column.backbone, weights.get("*", TRAINING_WEIGHTS["style_weight"]))
        )
        return weight if weight == "auto" else float(weight)

    @property
    def feedforward(self) -> bool:
        return self.mode in ("feedforward", "both")

    @property
    def gatys(self) -> bool:
        return self.mode in ("gatys", "both")


@dataclass(frozen=True)
class Column:
    """One loss-network setting: a backbone with its documented layers, or ``backbone:config`` for another config."""

    name: str
    backbone: str
    config: LayerConfig

    @property
    def slug(self) -> str:
        return self.name.replace(":", "-").replace("/", "_")


def resolve_columns(backbones: Sequence[str], configs: Sequence[str]) -> list[Column]:
    columns = [Column(b, b, load_config(b)) for b in backbones]
    loaded = [load_config(name) for name in configs]
    for config in loaded:
        spec(config.backbone)
    plain = [f"{c.backbone}:{c.name}" for c in loaded]
    for config, name in zip(loaded, plain, strict=True):
        if plain.count(name) > 1 and config.source:  # config files of one name, in other folders: named by folder too
            name = f"{config.backbone}:{Path(config.source).resolve().parent.name}/{config.name}"
        columns.append(Column(name, config.backbone, config))
    names = [c.name for c in columns]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FaststyleError(
            f"{', '.join(duplicates)} given twice; list each backbone and config once (a column is named by its "
            "config file's name and folder: rename one of two files named alike)"
        )
    return columns


def collect_images(paths: Sequence[str], what: str, skip: Path | None = None) -> list[Path]:
    """Image files and the images in folders (recursively), each file once, leaving out those under ``skip`` (the
    study's own output, when it lies inside an input folder) and in the output folders of other studies."""
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found += find_images(path, skip)
        elif path.is_file():
            found.append(path)
        else:
            raise FaststyleError(f"{what} {path} does not exist; pass image files or folders of images")
    if not found:
        raise FaststyleError(f"no {what} images in {', '.join(paths)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return _once_each(found, what)


def _once_each(paths: list[Path], what: str) -> list[Path]:
    """``paths`` with each file once (the first name it was given by), however often a file and its folder name it."""
    first: dict[Path, Path] = {}
    for path in paths:
        kept = first.setdefault(path.resolve(), path)
        if kept is not path:
            log.warning("the %s %s was given before, as %s: taking it once", what, path, kept)
    return list(first.values())


def _distinct(paths: list[Path], what: str) -> tuple[list[Path], list[str]]:
    """``paths`` with each picture once, however many copies of it were given, and their sha256 digests."""
    first: dict[str, Path] = {}
    for path in paths:
        kept = first.setdefault(sha256_file(path), path)
        if kept is not path:
            log.warning("the %s %s is the same file as %s: taking it once", what, path, kept)
    return list(first.values()), list(first)


def _warn_of_training_photos(contents: list[Path], data: Path) -> None:
    inside = [p for p in contents if p.resolve().is_relative_to(data)]
    if inside:
        log.warning(
            "%d of the content photos (%s) lie under --data %s: the models train on them, so their figures are not "
            "of photos the models never saw; keep the content photos out of the training folder",
            len(inside), ", ".join(str(p) for p in inside[:3]), data,
        )  # fmt: skip


def _slugs(paths: Sequence[Path], digests: Sequence[str]) -> list[str]:
    stems = [p.stem for p in paths]
    return [s if stems.count(s) == 1 else f"{s}-{d[:6]}" for s, d in zip(stems, digests, strict=True)]


def _learning_rates(training: dict[str, Any]) -> list[object]:
    """Every lr a model was trained with: a resumed run may have changed it."""
    return [training.get("lr"), *(lr for _, lr in training.get("lr_from_step", []))]


def _hash(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _non_finite(value: Any, where: str = "") -> list[str]:
    """Where ``value`` (nested dicts and lists) holds NaN or an infinity, e.g. ``["pan_1px"]``: results.json cannot."""
    if isinstance(value, dict):
        return [bad for k, v in value.items() for bad in _non_finite(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, list):
        return [bad for i, v in enumerate(value) for bad in _non_finite(v, f"{where}[{i}]")]
    return [where or "the value"] if isinstance(value, float) and not math.isfinite(value) else []


class Cache:
    """``cache.json``: values keyed by kind and a hash of their inputs, with computed/reused counts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                self.data = json.loads(path.read_text())
            except (json.JSONDecodeError, OSError):
                log.warning("%s is unreadable; starting a new cache", path)
        self.counts: dict[str, dict[str, int]] = {}
        self.fresh: set[tuple[str, str]] = set()  # computed in this run: hits on them are not reuse
        self.reused_keys: set[tuple[str, str]] = set()  # each reused value counts once, however often it is read

    def count(self, kind: str, status: str) -> None:
        self.counts.setdefault(kind, {"computed": 0, "reused": 0})[status] += 1

    def get(self, kind: str, key: str, valid: Callable[[Any], bool] = lambda _: True) -> Any:
        value = self.data.get(kind, {}).get(key)
        if value is not None and not _non_finite(value) and valid(value):
            if (kind, key) not in self.fresh and (kind, key) not in self.reused_keys:
                self.reused_keys.add((kind, key))
                self.count(kind, "reused")
            return value
        return None

    def put(self, kind: str, key: str, value: Any) -> Any:
        bad = _non_finite(value)
        if bad:
            raise FaststyleError(
                f"the {kind} figures {', '.join(bad[:5])} came out as NaN or infinite and were not cached: the "
                "images may be too small or flat to measure; check them and the settings, or report it with them"
            )
        self.data.setdefault(kind, {})[key] = value
        self.fresh.add((kind, key))
        self.count(kind, "computed")
        atomic_write_bytes(self.path, json.dumps(self.data, indent=1, sort_keys=True).encode())
        return value


@dataclass
class CompareResult:
    out: Path
    results: dict[str, Any]
    counts: dict[str, dict[str, int]]

    @property
    def report(self) -> Path:
        return self.out / "index.html"

    def computed(self) -> int:
        return sum(c["computed"] for c in self.counts.values())

    def reused(self) -> int:
        return sum(c["reused"] for c in self.counts.values())


class Study:
    """One invocation of the comparison; ``run()`` does everything and returns the result."""

    def __init__(self, settings: CompareSettings) -> None:
        settings.check()
        self.s = settings
        self.out = Path(settings.out)
        check_writable(self.out, "the study")
        self.columns = resolve_columns(settings.backbones, settings.configs)
        known = {"*", *(c.name for c in self.columns), *available_lossnets()}  # a table for several studies is fine
        unknown = sorted(set(settings.style_weights) - known)
        if unknown:
            raise FaststyleError(
                f"--style-weight names {', '.join(unknown)}, neither a loss network nor a column of this study "
                f"({', '.join(c.name for c in self.columns)})"
            )
        here = {"*", *(c.name for c in self.columns), *(c.backbone for c in self.columns)}
        if settings.style_weights and not settings.feedforward:
            log.warning("--style-weight is left unused: it weighs feed-forward models, and --mode gatys trains none")
        elif unused := sorted(set(settings.style_weights) - here):
            log.warning("--style-weight %s: no column of this study uses it", ", ".join(unused))
        self.styles = collect_images(settings.styles, "style", skip=self.out)
        self.contents = collect_images(settings.content, "content", skip=self.out)
        self.device = resolve_device(settings.device)
        if settings.feedforward and settings.data is None:
            found = default_data_dir()
            if found is None:
                raise FaststyleError("feed-forward models need training photos: pass --data FOLDER")
            settings.data = str(found)
        if settings.feedforward and not Path(str(settings.data)).exists() and not HUB_NAME.match(str(settings.data)):
            raise FaststyleError(
                f"--data {settings.data} does not exist; pass a folder of photos or a hub dataset name"
            )
        from faststyle.data import data_source

        # as a model's metadata names it, so that models trained on other photos are never reused
        self.data_source = data_source(str(settings.data))
        self.styles, self.style_sha = _distinct(self.styles, "style")
        self.contents, self.content_sha = _distinct(self.contents, "content")
        if settings.feedforward and Path(self.data_source).is_dir():
            _warn_of_training_photos(self.contents, Path(self.data_source))
        self.style_names = _slugs(self.styles, self.style_sha)
        self.content_names = _slugs(self.contents, self.content_sha)
        self.style_size = default_style_size(settings.size)  # as train() scales it
        self.hardware = hardware(self.device)
        self.cache = Cache(self.out / "cache.json")
        self._lossnets: dict[str, LossNet] = {}
        self._lpips: Any = None
        self._meters: dict[tuple[int, str], Any] = {}
        self._painting: tuple[int, Tensor] | None = None

    # -- shared pieces --------------------------------------------------------------------------------------------

    def lossnet(self, name: str) -> LossNet:
        if name not in self._lossnets:
            self._lossnets[name] = get_lossnet(name, cache=self.s.cache, device=self.device)
        return self._lossnets[name]

    def column_spec(self, column: Column) -> dict[str, Any]:
        return {
            "backbone": column.backbone,
            "weights_sha256": self.lossnet(column.backbone).weights_sha256,
            "layers": column.config.to_dict(),
        }

    def meter(self, style_index: int, column: Column) -> Any:
        from faststyle.metrics import StyleMeter

        key = (style_index, column.name)
        if key not in self._meters:
            style = self.painting(style_index)
            self._meters[key] = StyleMeter(self.lossnet(column.backbone), style, column.config, self.style_size)
        return self._meters[key]

    def painting(self, style_index: int) -> Tensor:
        """The style image at full size, decoded once while the study works on it (one at a time: they may be
        large)."""
        if self._painting is None or self._painting[0] != style_index:
            self._painting = (style_index, load_image(self.styles[style_index]))
        return self._painting[1]

    def lpips(self) -> Any:
        from faststyle.metrics import LPIPS

        if self._lpips is None:
            lossnet = self.lossnet(LPIPS_NETWORK)
            self._lpips = LPIPS(LPIPS_NETWORK, lossnet=lossnet, cache=self.s.cache).to(self.device)
        return self._lpips

    def rel(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()

    def _image_valid(self, entry: dict[str, Any]) -> bool:
        path = self.out / entry["path"]
        return path.is_file() and sha256_file(path) == entry["sha256"]

    def _save(self, image: Tensor, path: Path) -> dict[str, Any]:
        save_image(image.detach().float().cpu().clamp(0, 1), path)
        return {"path": self.rel(path), "sha256": sha256_file(path)}

    # -- the steps ------------------------------------------------------------------------------------------------

    def resized_copies(self, kind: str, names: list[str], paths: list[Path], digests: list[str], size: int) -> list:
        """The inputs resized to their long side ``size``, as PNGs under ``images/<kind>/`` (the report's copies)."""
        entries = []
        for name, path, digest in zip(names, paths, digests, strict=True):
            key = _hash({kind: digest, "size": size, "reader": READER_VERSION})
            entry = self.cache.get(kind, key, self._image_valid)
            if entry is None:
                target = self.out / "images" / kind / f"{name}.png"
                entry = self.cache.put(kind, key, self._save(load_image(path, size), target))
            entries.append(entry)
        return entries

    def model_wanted(self, style_index: int, column: Column) -> dict[str, Any]:
        defaults = {f.name: f.default for f in dataclasses.fields(TrainSettings)}
        return {
            "style_sha256": self.style_sha[style_index],
            "reader": READER_VERSION,
            "backbone": column.backbone,
            "weights_sha256": self.lossnet(column.backbone).weights_sha256,
            "layers": column.config.to_dict(),
            "steps": self.s.steps,
            "size": self.s.size,
            "batch": self.s.batch,
            "seed": self.s.seed,
            "data": self.data_source,
            "loss": self.loss_weights(column),
            # what train() is left to choose: a model dropped in models/ trained otherwise is not one of the study's
            "trained_as": {
                "transformer": {"width": defaults["width"], "num_residual": defaults["num_residual"]},
                "lr": defaults["lr"],
                "style_size": self.style_size,
                "short_side": defaults["short_side"],
                "stability_weight": defaults["stability_weight"],
            },
        }

    def loss_weights(self, column: Column) -> dict[str, float]:
        weight = self.s.style_weight(column)
        if weight == "auto":  # the weight itself is measured in training
            return {k: v for k, v in TRAINING_WEIGHTS.items() if k != "style_weight"} | {"style_balance": STYLE_BALANCE}
        return TRAINING_WEIGHTS | {"style_weight": weight}

    @staticmethod
    def model_matches(meta: dict[str, Any], wanted: dict[str, Any]) -> bool:
        images = meta.get("style", {}).get("images", [])
        training = meta.get("training", {})
        return (
            [i.get("sha256") for i in images] == [wanted["style_sha256"]]
            and meta.get("style", {}).get("reader", 1) == wanted["reader"]
            and meta.get("backbone", {}).get("name") == wanted["backbone"]
            and meta.get("backbone", {}).get("weights_sha256") == wanted["weights_sha256"]
            and meta.get("backbone", {}).get("pooling", "max") == "max"
            and layer_weights(meta.get("layers")) == layer_weights(wanted["layers"])  # a config renamed is the same
            and all(training.get(k) == wanted[k] for k in ("steps", "size", "batch", "seed"))
            and meta.get("data", {}).get("source") == wanted["data"]
            and all(meta.get("loss", {}).get(k) == v for k, v in wanted["loss"].items())
            and meta.get("transformer") == wanted["trained_as"]["transformer"]
            and all(lr == wanted["trained_as"]["lr"] for lr in _learning_rates(training))
            and meta.get("style", {}).get("size") == wanted["trained_as"]["style_size"]
            and meta.get("data", {}).get("short_side") == wanted["trained_as"]["short_side"]
            and meta.get("loss", {}).get("stability_weight", 0.0) == wanted["trained_as"]["stability_weight"]
        )

    def find_model(self, wanted: dict[str, Any]) -> Path | None:
        from faststyle.modelfile import read_metadata

        for path in sorted((self.out / "models").glob("*.safetensors")):
            try:
                if self.model_matches(read_metadata(path), wanted):
                    return path
            except FaststyleError:
                continue
        return None

    def model(self, style_index: int, column: Column) -> tuple[Path, dict[str, Any], str]:
        from faststyle.modelfile import read_metadata
        from faststyle.resuming import checkpoint_step, latest_checkpoint
        from faststyle.settings import style_weight_settings
        from faststyle.training import train

        wanted = self.model_wanted(style_index, column)
        found = self.find_model(wanted)
        if found is not None:
            self.cache.count("models", "reused")
            log.info("reusing %s for %s / %s", found.name, self.style_names[style_index], column.name)
            return found, read_metadata(found), "reused"
        out = self.out / "models" / f"{self.style_names[style_index]}__{column.slug}__{_hash(wanted)[:8]}.safetensors"
        run_dir = out.with_name(out.stem + "_run")
        checkpoint = latest_checkpoint(run_dir / "checkpoints")
        # an interrupted training continues, and one that reached its steps but has no model file (interrupted while
        # writing it, a full disk) writes it from its last checkpoint, as train --resume does, rather than train again
        resume = checkpoint is not None and 0 < checkpoint_step(checkpoint) <= self.s.steps
        if run_dir.exists() and not resume:
            shutil.rmtree(run_dir)
        if resume and out.exists():  # not this study's model (find_model passed it by): damaged, or written otherwise
            out.unlink()
        log.info("training %s (%d steps at %d px)", out.name, self.s.steps, self.s.size)
        settings = TrainSettings(
            styles=[str(self.styles[style_index])],
            backbone=column.backbone,
            config=column.config.source or column.config.name,
            steps=self.s.steps,
            batch=self.s.batch,
            size=self.s.size,
            **style_weight_settings(self.s.style_weight(column)),
            cache=self.s.cache,
            seed=self.s.seed,
        )
        cuda = self.device.type == "cuda"
        train(
            settings,
            self.data_source,
            out,
            run_dir=run_dir,
            resume=resume,
            accelerator="gpu" if cuda else "cpu",
            devices=[self.device.index or 0] if cuda else 1,
            num_workers=self.s.workers,
            val_photos=0,
            checkpoint_every=max(500, self.s.steps // 4),
            half=False,
            progress=self.s.progress,
            resume_flag="",
        )
        self.cache.count("models", "computed")
        return out, read_metadata(out), "computed"

    def stylize(self, style_index: int, column: Column, model: Path, contents: list[dict[str, Any]]) -> list[dict]:
        from faststyle.stylize import Stylizer

        model_sha = sha256_file(model)
        stylizer: Stylizer | None = None
        entries = []
        bar = tqdm(contents, desc=f"stylize {column.name}", unit="img", leave=False, disable=not self.s.progress)
        for name, content_entry in zip(self.content_names, bar, strict=True):
            # the photo as resized for the study, and where it ran: the entry holds its time
            key = _hash({"model": model_sha, "content": content_entry["sha256"], "hardware": self.hardware})
            entry = self.cache.get("stylized", key, self._image_valid)
            if entry is None:
                if stylizer is None:
                    stylizer = Stylizer(model, device=self.device, precision="fp32")
                    stylizer(torch.rand(1, 3, 32, 32))  # warm-up, not timed
                photo = load_image(self.out / content_entry["path"])
                started = time.perf_counter()
                image = stylizer(photo)
                ms = (time.perf_counter() - started) * 1000
                target = self.out / "images" / self.style_names[style_index] / f"{name}__ff-{column.slug}.png"
                entry = self.cache.put("stylized", key, self._save(image, target) | {"ms": ms})
            entries.append(entry)
        return entries

    def steadiness(self, model: Path, contents: list[dict[str, Any]]) -> dict[str, float]:
        """How much a model's painting of the study's photos changes when the scene moves by 1 or 2 pixels, or
        under camera noise (faststyle.stability.instability, in 8-bit levels)."""
        from faststyle.stability import instability
        from faststyle.stylize import Stylizer

        key = _hash(
            {"model": sha256_file(model), "contents": [e["sha256"] for e in contents], "version": STEADINESS_VERSION}
        )
        value = self.cache.get("steadiness", key)
        if value is None:
            stylizer = Stylizer(model, device=self.device, precision="fp32")
            photos = [load_image(self.out / entry["path"]).to(self.device) for entry in contents]
            figures = instability(stylizer, photos, frames=STEADINESS_FRAMES, seed=self.s.seed)
            value = self.cache.put("steadiness", key, {k: figures[k] for k in ("pan_1px", "pan_2px", "noise")})
        return value

    def gatys(self, style_index: int, column: Column, contents: list[dict[str, Any]]) -> list[dict]:
        """Gatys runs with snapshots at each of ``--gatys-iters``. The trajectory does not depend on where a run stops,
        so the cache keeps one run per photo and column: it serves any subset of the counts snapshotted so far, and a
        run for other counts adds its snapshots to it."""
        iters = sorted(set(self.s.gatys_iters))
        entries = []
        bar = tqdm(contents, desc=f"gatys {column.name}", unit="img", leave=False, disable=not self.s.progress)
        for name, content_entry in zip(self.content_names, bar, strict=True):
            key = _hash(
                {
                    "content": content_entry["sha256"],
                    "style": self.style_sha[style_index],
                    "reader": READER_VERSION,
                    "gatys": GATYS_VERSION,
                    "column": self.column_spec(column),
                    "seed": self.s.seed,
                    "hardware": self.hardware,
                }  # fmt: skip
            )

            def covers(entry: dict[str, Any]) -> bool:
                have = entry["snapshots"]
                return all(str(i) in have and self._image_valid(have[str(i)]) for i in iters)

            entry = self.cache.get("gatys", key, covers)
            if entry is None:
                photo = load_image(self.out / content_entry["path"])
                entry = self._run_gatys(style_index, column, name, photo, self.painting(style_index), iters)
                earlier = self.cache.data.get("gatys", {}).get(key)
                if earlier is not None:
                    kept = {k: s for k, s in earlier["snapshots"].items() if self._image_valid(s)}
                    longer = max(earlier["history"], entry["history"], key=lambda h: len(h["total"]))
                    entry = {"snapshots": kept | entry["snapshots"], "history": longer}
                entry = self.cache.put("gatys", key, entry)
            entries.append(
                {
                    "snapshots": {str(i): entry["snapshots"][str(i)] for i in iters},
                    "history": {k: v[: max(iters)] for k, v in entry["history"].items()},
                }  # fmt: skip
            )
        return entries

    def _run_gatys(
        self, style_index: int, column: Column, name: str, photo: Tensor, style: Tensor, iters: list[int]
    ) -> dict:
        """One Gatys run, snapshotted at ``iters``: each snapshot's seconds are the optimisation's, its writing left
        out."""
        from faststyle import gatys

        snapshots: dict[str, dict[str, Any]] = {}
        folder = self.out / "images" / self.style_names[style_index]
        saving = 0.0
        started = time.perf_counter()

        def snapshot(iteration: int, image: Tensor, terms: dict[str, float]) -> None:
            nonlocal saving
            if iteration in iters:
                now = time.perf_counter()
                path = folder / f"{name}__gatys-{column.slug}-{iteration}.png"
                snapshots[str(iteration)] = self._save(image, path) | {"seconds": now - started - saving}
                saving += time.perf_counter() - now

        _, history = gatys.stylize(
            photo, style, backbone=column.backbone, config=column.config,
            lossnet=self.lossnet(column.backbone), size=self.s.size, iters=max(iters), seed=self.s.seed,
            device=self.device, progress=False, callback=snapshot,
        )  # fmt: skip
        if len(snapshots) != len(iters):
            raise FaststyleError(f"Gatys stopped after {len(history)} iterations, before {max(iters)}")
        return {"snapshots": snapshots, "history": {k: [h[k] for h in history] for k in ("total", "content", "style")}}

    def style_layers(self, style_index: int, column: Column, image_entry: dict[str, Any]) -> dict[str, float]:
        """The per-layer style losses of an image under a column (see faststyle.metrics.StyleMeter)."""
        key = _hash(
            {
                "image": image_entry["sha256"],
                "style": self.style_sha[style_index],
                "style_size": self.style_size,
                "column": self.column_spec(column),
                "version": METRICS_VERSION,
                "reader": READER_VERSION,
            }  # fmt: skip
        )
        value = self.cache.get("style_layers", key)
        if value is None:
            image = load_image(self.out / image_entry["path"]).to(self.device)
            losses = self.meter(style_index, column).layer_losses(image)
            value = self.cache.put("style_layers", key, {k: float(v[0]) for k, v in losses.items()})
        return value

    def pair_metrics(self, style_index: int, image_entry: dict[str, Any], content_entry: dict[str, Any]) -> dict:
        from faststyle.metrics import color_histogram_distance, fine_grain, ssim_luminance, texture_distance

        key = _hash(
            {
                "image": image_entry["sha256"],
                "content": content_entry["sha256"],
                "style": self.style_sha[style_index],
                "lpips_weights": self.lossnet(LPIPS_NETWORK).weights_sha256,
                "version": METRICS_VERSION,
                "measures": PAIR_MEASURES,
                "reader": READER_VERSION,
            }  # fmt: skip
        )
        value = self.cache.get("pair_metrics", key)
        if value is None:
            image = load_image(self.out / image_entry["path"]).to(self.device)
            content = load_image(self.out / content_entry["path"]).to(self.device)
            style = load_image(self.styles[style_index], self.style_size).to(self.device)
            texture = texture_distance(torch.cat([image, content]), style)  # the painting's patches taken once
            value = self.cache.put(
                "pair_metrics",
                key,
                {
                    "ssim_y": float(ssim_luminance(image, content)[0]),
                    f"lpips_{LPIPS_NETWORK}": float(self.lpips()(image, content)[0]),
                    "color_hist": float(color_histogram_distance(image, style)[0]),
                    "grain": float(fine_grain(image)[0] / fine_grain(style)[0].clamp_min(1e-3)),
                    "texture": float(texture[0] / texture[1].clamp_min(1e-6)),
                },
            )
        return value

    def metric_definitions(self) -> dict[str, str]:
        both = self.s.feedforward and self.s.gatys
        left_out = set() if both else {"gatys_gap"}
        left_out |= set() if self.s.feedforward else {"steadiness"}
        return {k: v for k, v in METRIC_DEFINITIONS.items() if k not in left_out}

    def check_sizes(self, contents: list[dict[str, Any]], styles: list[dict[str, Any]]) -> None:
        """Every photo and painting, at the sizes used, reaches the deepest layer of every network measuring it:
        refused here rather than after minutes of training."""
        from PIL import Image

        from faststyle.metrics import LPIPS_TAPS
        from faststyle.stability import check_measurable

        def size_of(entry: dict[str, Any]) -> tuple[int, int]:
            with Image.open(self.out / entry["path"]) as image:
                return image.height, image.width

        fix = "raise --size, or leave out very wide or tall images"
        crop = (f"a training crop of --size {self.s.size}", (self.s.size, self.s.size), "raise --size")
        photos = [
            (f"the photo {name} at --size {self.s.size}", size_of(entry), fix)
            for name, entry in zip(self.content_names, contents, strict=True)
        ]
        images = [crop, *photos] if self.s.feedforward else photos
        for name, entry in zip(self.style_names, styles, strict=True):
            images.append((f"the painting {name} at {self.style_size} px", size_of(entry), fix))
        checks = [(LPIPS_NETWORK, list(LPIPS_TAPS[LPIPS_NETWORK]))]
        checks += [(column.backbone, list(column.config.layers)) for column in self.columns]
        for backbone, layers in checks:
            for what, (height, width), how in images:
                self.lossnet(backbone).check_size(height, width, layers, what, how)
        if self.s.feedforward:  # a feed-forward model's steadiness is measured on the photos
            for what, (height, width), how in photos:
                check_measurable(height, width, what, how)

    # -- the whole run --------------------------------------------------------------------------------------------

    def run(self) -> CompareResult:
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        contents = self.resized_copies("content", self.content_names, self.contents, self.content_sha, self.s.size)
        styles = self.resized_copies("style", self.style_names, self.styles, self.style_sha, self.style_size)
        self.check_sizes(contents, styles)
        runs: list[dict[str, Any]] = []
        per_style: dict[str, Any] = {}
        timings: dict[str, Any] = {"training": [], "inference_ms": {}, "gatys_seconds": {}}
        for si, style_name in enumerate(self.style_names):
            # outputs[method] = one image entry per content photo
            outputs: dict[str, list[dict[str, Any]]] = {IDENTITY: contents}
            gatys_entries: dict[str, list[dict[str, Any]]] = {}
            steadiness: dict[str, dict[str, float]] = {}
            for column in self.columns:
                if self.s.feedforward:
                    model, meta, status = self.model(si, column)
                    run_dir = model.with_name(model.stem + "_run")
                    metrics_csv = run_dir / "metrics.csv"
                    training = meta["training"]
                    runs.append(
                        {
                            "kind": "feedforward",
                            "style": style_name,
                            "column": column.name,
                            "backbone": column.backbone,
                            "config": column.config.name,
                            "status": status,
                            "model": self.rel(model),
                            "metrics_csv": self.rel(metrics_csv) if metrics_csv.exists() else None,
                            "steps": training["steps"],
                            "batch": training["batch"],
                            "size": training["size"],
                            "seed": training["seed"],
                            "style_weight": meta.get("loss", {}).get("style_weight"),
                            "final_losses": meta.get("loss", {}).get("final", {}),
                        }  # fmt: skip
                    )
                    timings["training"].append(
                        {
                            "style": style_name,
                            "column": column.name,
                            "seconds": training["seconds"],
                            "images_per_second": training["images_per_second"],
                            "steps": training["steps"],
                            # a resumed training's seconds are of its last session; older model files ran in one
                            "timed_steps": training.get("timed_steps", training["steps"]),
                            "hardware": training.get("hardware", "unknown"),
                        }  # fmt: skip
                    )
                    images = self.stylize(si, column, model, contents)
                    outputs[f"feedforward:{column.name}"] = images
                    steadiness[f"feedforward:{column.name}"] = self.steadiness(model, contents)
                    timings["inference_ms"].setdefault(style_name, {})[column.name] = _mean([e["ms"] for e in images])
                if self.s.gatys:
                    entries = self.gatys(si, column, contents)
                    gatys_entries[column.name] = entries
                    last = str(max(self.s.gatys_iters))
                    outputs[f"gatys:{column.name}"] = [e["snapshots"][last] for e in entries]
                    seconds = {
                        k: _mean([e["snapshots"][k]["seconds"] for e in entries]) for k in entries[0]["snapshots"]
                    }
                    timings["gatys_seconds"].setdefault(style_name, {})[column.name] = seconds
                    runs.append(
                        {
                            "kind": "gatys",
                            "style": style_name,
                            "column": column.name,
                            "backbone": column.backbone,
                            "config": column.config.name,
                            "iters": sorted(set(self.s.gatys_iters)),
                            "seconds": seconds,
                        }  # fmt: skip
                    )
            per_style[style_name] = self.measure(si, outputs, gatys_entries, contents)
            for method, figures in steadiness.items():
                per_style[style_name]["summary"][method]["steadiness"] = figures
        timings["wall_seconds"] = time.perf_counter() - started
        timings["counts"] = self.cache.counts
        results = {
            "schema": SCHEMA,
            "settings": asdict(self.s)
            | {"styles": [str(p) for p in self.styles], "content": [str(p) for p in self.contents]},  # fmt: skip
            "columns": [
                {
                    "name": c.name,
                    "backbone": c.backbone,
                    "config": c.config.to_dict(),
                    "style_weight": self.s.style_weight(c),
                }
                for c in self.columns
            ],
            "styles": [
                {"name": n, "file": str(p), "sha256": d, "image": e["path"]}
                for n, p, d, e in zip(self.style_names, self.styles, self.style_sha, styles, strict=True)
            ],  # fmt: skip
            "contents": [
                {"name": n, "file": str(p), "sha256": d, "image": e["path"]}
                for n, p, d, e in zip(self.content_names, self.contents, self.content_sha, contents, strict=True)
            ],  # fmt: skip
            "runs": runs,
            "metrics": {"definitions": self.metric_definitions(), "style_size": self.style_size, "styles": per_style},
            "timings": timings,
            "environment": environment(self.device),
        }
        text = json.dumps(results, indent=1, allow_nan=False)
        atomic_write_bytes(self.out / "results.json", text.encode())
        atomic_write_bytes(self.out / "report.md", render_markdown(results).encode())
        atomic_write_bytes(self.out / "index.html", render_html(results, self.out).encode())
        for kind, count in sorted(self.cache.counts.items()):
            log.info("%s: %d computed, %d reused", kind, count["computed"], count["reused"])
        return CompareResult(self.out, results, self.cache.counts)

    def measure(
        self,
        si: int,
        outputs: dict[str, list[dict[str, Any]]],
        gatys_entries: dict[str, list[dict[str, Any]]],
        contents: list[dict[str, Any]],
    ) -> dict[str, Any]:
        methods = list(outputs)
        total = len(methods) * len(contents)
        bar = tqdm(total=total, desc="metrics", unit="img", leave=False, disable=not self.s.progress)
        weights = {c.name: c.config.style_layers for c in self.columns}
        reference = {c.name: [self.style_layers(si, c, e) for e in contents] for c in self.columns}
        per_image = []
        for method, images in outputs.items():
            for ci, (image, content) in enumerate(zip(images, contents, strict=True)):
                layers = {c.name: self.style_layers(si, c, image) for c in self.columns}
                distance = {k: relative_style_loss(v, reference[k][ci], weights[k]) for k, v in layers.items()}
                row: dict[str, Any] = {
                    "content": self.content_names[ci],
                    "method": method,
                    "image": image["path"],
                    "style_loss": {k: sum(w * v[layer] for layer, w in weights[k].items()) for k, v in layers.items()},
                    "style_distance": distance,
                }
                row |= self.pair_metrics(si, image, content)
                kind, _, name = method.partition(":")
                if kind == "feedforward" and name in gatys_entries:
                    column = next(c for c in self.columns if c.name == name)
                    snapshots = gatys_entries[name][ci]["snapshots"]
                    gatys = {k: self.style_layers(si, column, e) for k, e in snapshots.items()}
                    row["gatys_gap"] = {
                        k: distance[name] / max(relative_style_loss(v, reference[name][ci], weights[name]), 1e-30)
                        for k, v in gatys.items()
                    }
                per_image.append(row)
                bar.update()
        bar.close()
        matrix = [
            [_mean([r["style_distance"][c.name] for r in per_image if r["method"] == m]) for c in self.columns]
            for m in methods
        ]
        summary: dict[str, Any] = {}
        for m in methods:
            rows = [r for r in per_image if r["method"] == m]
            entry = {k: _mean([r[k] for r in rows]) for k in PAIR_MEASURES}
            if "gatys_gap" in rows[0]:
                entry["gatys_gap"] = {k: _mean([r["gatys_gap"][k] for r in rows]) for k in rows[0]["gatys_gap"]}
            summary[m] = entry
        curves = {name: {k: v for k, v in e[0]["history"].items()} for name, e in gatys_entries.items()}
        shares: dict[str, dict[str, float]] = {}  # of each column's style loss on the photos (their mean)
        for name, photos in reference.items():
            per_photo = [layer_shares(losses, weights[name]) for losses in photos]
            shares[name] = {layer: _mean([p[layer] for p in per_photo]) for layer in weights[name]}
        return {
            "methods": methods,
            "layer_shares": shares,
            "style_match": {"rows": methods, "columns": [c.name for c in self.columns], "matrix": matrix},
            "summary": summary,
            "per_image": per_image,
            "gatys_curves": curves,
        }


METRIC_DEFINITIONS = {
    "style_distance": "Gram style loss of the output relative to the content photo's, per style layer of each "
    "column's loss network, weighted by the layer config; 1 = no closer to the style than the photo, 0 = exact; "
    "the style image is resized to 1.5 × --size (the training style size)",
    "ssim_y": (
        "SSIM of the BT.601 luma of output and content photo (1 = identical structure); torchmetrics' Gaussian 11×11 "
        "window with the borders reflect-padded and averaged in (scikit-image crops them: lower on small images)"
    ),
    f"lpips_{LPIPS_NETWORK}": "LPIPS v0.1 (VGG16) distance between output and content photo (0 = identical)",
    "color_hist": "mean over R,G,B of the earth mover's distance between 64-bin histograms of output and style",
    "grain": "fine grain of the output (the mean absolute difference from its 3×3 box blur, R, G, B) over the "
    "painting's at 1.5 × --size: 1 = as much detail at the scale of single pixels as the painting has; well above 1, "
    "the grid or colour noise that strided first layers (AlexNet's, GoogLeNet's) leave where nothing smooths it",
    "texture": "the output's texture distance to the painting at 1.5 × --size over the content photo's (1 = no closer "
    "than the photo, 0 = the painting's own): the sliced Wasserstein distance between their 7×7 RGB patches at three "
    "scales (the band-pass levels of a Laplacian pyramid), seen by no loss network, so it favours none "
    "(faststyle.metrics.texture_distance)",
    "steadiness": "how much a feed-forward model's output changes between two video frames of a still scene, in "
    "8-bit levels (mean absolute change where both frames show it, 8 px edges left out; lower is steadier): the "
    "scene moved by 1 and by 2 pixels, and under camera noise of 2 levels (faststyle.stability.instability)",
    "gatys_gap": "a feed-forward output's style distance over that of the Gatys result after N iterations "
    "(same photo, style and loss network); 1 = as close to the style as Gatys, above 1 = farther",
}


def environment(device: torch.device) -> dict[str, Any]:
    from faststyle.modelfile import package_versions

    env: dict[str, Any] = {
        "versions": package_versions(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "hardware": hardware(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def compare(settings: CompareSettings) -> CompareResult:
    """Run the study described by ``settings``; see the module docstring."""
    return Study(settings).run()
