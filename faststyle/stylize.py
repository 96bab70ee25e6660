"""Inference: a model file (or a model's name) in, stylized images out.

``Stylizer`` picks the device, precision and backend, blends with the content (strength), optionally keeps the
content's colours, and processes large images in overlapping tiles.

Tiling. Instance norm normalises each channel by statistics of the whole image, so a tile normalised by its own
statistics comes out a little different from its neighbours. By default (``tile_stats="global"``) every tile is
normalised with the statistics of one whole-image pass, run on a copy of the image downscaled to the tile budget
(at full size when it fits), so all tiles share one normalisation. Each tile also reads ``CONTEXT`` extra pixels
beyond its sides (cropped off again) and neighbours overlap by ``overlap`` pixels, blended with cosine ramps that sum
to one, which keeps the networks' reflection padding out of the result. Measured on a 341×512 photo in 192-px tiles
(tests/test_stylize.py, untrained width-1 network): max |tiled − whole| 1.3e-3, 1e-6 away from tile borders, and
the step across tile borders is no larger than elsewhere. ``tile_stats="local"`` (each tile its own statistics,
blended overlaps) differs from the whole image by 0.07 on average. When the statistics come from a half-size pass
(images over twice the budget) the result differs from an untiled run by ~0.03 on average, but without seams.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import hashlib
import io
import logging
import math
import numbers
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F

from faststyle.compiling import compiler
from faststyle.device import resolve_device
from faststyle.errors import FaststyleError
from faststyle.images import (
    MAX_PIXELS,
    alpha_channel,
    as_mask,
    check_resized_pixels,
    long_side_size,
    pil_to_tensor,
    resize_long_side,
    tensor_to_pil,
    to_rgb,
    unit_range,
    with_alpha,
)

log = logging.getLogger(__name__)

MODELS_ENV = "FASTSTYLE_MODELS"
MODEL_SUFFIX = ".safetensors"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
BACKENDS = ("auto", "eager", "channels_last", "onnxruntime")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# How much of the painting to keep: one number for the whole image, or a map, one weight per pixel (a mask).
Strength = float | Tensor | Image.Image
# Pixels processed in one pass; larger images are tiled. One pass of a width-1 network takes about 1.1 kB of memory
# per pixel on a CPU (3.3 GB at 1536×2048 in ONNX Runtime), and tiles run eagerly, 4.5× slower there (46 s against
# 10 s): a demo photo (≤ 2048 px) is never tiled.
TILE_PIXELS = 2048 * 2048
# ONNX exports kept in the cache (the most recently used); an export is a few MB.
ONNX_CACHE_FILES = 16
# Pixels of context read beyond each tile side and discarded (a multiple of 4, the network's stride).
CONTEXT = 32
# Narrower images are padded (replicating their edge) to this many pixels for the network, then cropped.
MIN_SIDE = 8
THUMBNAIL_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

ImageLike = TypeVar("ImageLike", Image.Image, Tensor)


class ModelInfo(NamedTuple):
    name: str
    path: Path
    metadata: dict[str, Any]


def model_dirs() -> list[Path]:
    """Where model names are looked up, in order: ``$FASTSTYLE_MODELS`` folders, the repo's and ./checkpoints."""
    import faststyle

    dirs = [Path(p).expanduser() for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    dirs += [Path(faststyle.__file__).resolve().parents[1] / "checkpoints", Path.cwd() / "checkpoints"]
    unique: list[Path] = []
    for d in dirs:
        if d.resolve() not in {u.resolve() for u in unique}:
            unique.append(d)
    return unique


def find_model(name: str | os.PathLike[str], dirs: Sequence[Path] | None = None) -> Path:
    """The model file for a path or a NAME: the first readable ``NAME.safetensors`` in ``model_dirs()``, the one
    ``stylize --list`` shows (a file of that name that cannot be read is skipped, as the list skips it)."""
    from faststyle.modelfile import read_metadata

    path = Path(name).expanduser()
    if path.is_file():
        return path
    looks_like_path = len(path.parts) > 1
    skipped: list[Unreadable] = []
    if not looks_like_path:  # a NAME, or NAME.safetensors as `stylize --list` shows its file
        stem = path.stem if path.suffix == MODEL_SUFFIX else path.name
        for folder in dirs if dirs is not None else model_dirs():
            candidate = folder / f"{stem}{MODEL_SUFFIX}"
            if not candidate.is_file():
                continue
            try:
                read_metadata(candidate)
            except FaststyleError as exc:
                log.warning("skipping %s: %s", candidate, exc)
                skipped.append(Unreadable(candidate, str(exc)))
                continue
            return candidate
    if skipped:
        raise FaststyleError(f"no readable model named {str(name)!r}: " + "; ".join(item.reason for item in skipped))
    if path.is_dir() and (looks_like_path or str(name).endswith(("/", os.sep))):  # a folder of models: name one
        names = ", ".join(m.name for m in list_models([path])) or "none"
        raise FaststyleError(
            f"model {path} is a folder, not a model file; pass one of its {MODEL_SUFFIX} files (models in it: {names}),"
            f" or add it to ${MODELS_ENV} and pass a NAME"
        )
    if looks_like_path or path.suffix == MODEL_SUFFIX:
        raise FaststyleError(f"model file {path} does not exist")
    searched = ", ".join(str(d) for d in (dirs if dirs is not None else model_dirs()))
    names = ", ".join(m.name for m in list_models(dirs)) or "none"
    raise FaststyleError(
        f"no model named {str(name)!r} in {searched} (available: {names}); pass a model file, add its folder to "
        f"${MODELS_ENV}, or train one with "
        f"`{train_command(Path('checkpoints'), path.name)}`"
    )


def train_command(folder: Path, name: str = "NAME") -> str:
    """The command that trains a model named ``name`` into ``folder``, for messages that say how to get one."""
    return f"faststyle train --style STYLE.jpg --data PHOTOS/ --out {folder / (name + MODEL_SUFFIX)}"


class Unreadable(NamedTuple):
    path: Path
    reason: str


class ModelScan(NamedTuple):
    models: list[ModelInfo]
    unreadable: list[Unreadable]  # model files that were left out, and why


def scan_models(dirs: Sequence[Path] | None = None) -> ModelScan:
    """The readable models in ``dirs`` (default ``model_dirs()``; a name found twice is taken from the first) and the
    model files that could not be read."""
    from faststyle.modelfile import read_metadata

    found: dict[str, ModelInfo] = {}
    unreadable: list[Unreadable] = []
    for folder in dirs if dirs is not None else model_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob(f"*{MODEL_SUFFIX}")):
            if path.stem in found:
                continue
            try:
                found[path.stem] = ModelInfo(path.stem, path, read_metadata(path))
            except FaststyleError as exc:
                log.warning("skipping %s: %s", path, exc)
                unreadable.append(Unreadable(path, str(exc)))
    return ModelScan(list(found.values()), unreadable)


def list_models(dirs: Sequence[Path] | None = None) -> list[ModelInfo]:
    """Every readable model in ``dirs`` (default ``model_dirs()``); a name found twice is taken from the first."""
    return scan_models(dirs).models


def _style_images(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    style = metadata.get("style")
    if isinstance(style, dict):
        images = style.get("images")
        if isinstance(images, list):
            return [i for i in images if isinstance(i, dict)]
        return [style]
    return []


def style_name(metadata: dict[str, Any], default: str = "unknown style") -> str:
    """A readable name of the style: its image file's stem(s), or the name recorded in the metadata."""
    style = metadata.get("style")
    if isinstance(style, str):
        return style
    if isinstance(style, dict) and isinstance(style.get("name"), str):
        return style["name"]
    files = [i.get("file") or i.get("path") for i in _style_images(metadata)]
    stems = [Path(str(f)).stem for f in files if f]
    return " + ".join(stems) if stems else default


def style_key(metadata: dict[str, Any], default: str) -> str:
    """What identifies the style across models: the style images' sha256, else the style's name."""
    hashes = [str(i["sha256"]) for i in _style_images(metadata) if i.get("sha256")]
    return "+".join(hashes) if hashes else style_name(metadata, default)


def backbone_name(metadata: dict[str, Any]) -> str:
    backbone = metadata.get("backbone")
    if isinstance(backbone, dict):
        return str(backbone.get("name", "unknown"))
    return str(backbone) if backbone else "unknown"


def style_thumbnail(info: ModelInfo) -> Image.Image | None:
    """The style image's thumbnail: a file next to the model (``NAME.style.jpg``, ``NAME.jpg``, …) or base64 image
    data under ``thumbnail`` in the metadata (or its ``style`` section)."""
    for stem in (f"{info.name}.style", info.name):
        for suffix in THUMBNAIL_SUFFIXES:
            candidate = info.path.with_name(stem + suffix)
            if candidate.is_file():
                with (
                    contextlib.suppress(OSError, ValueError, Image.DecompressionBombError),
                    Image.open(candidate) as image,
                ):
                    image.thumbnail((512, 512))
                    return to_rgb(image)
    style = info.metadata.get("style")
    data = info.metadata.get("thumbnail") or (style.get("thumbnail") if isinstance(style, dict) else None)
    if isinstance(data, str):
        with contextlib.suppress(OSError, ValueError, Image.DecompressionBombError):
            raw = base64.b64decode(data.split(",", 1)[-1], validate=False)
            with Image.open(io.BytesIO(raw)) as image:
                image.thumbnail((512, 512))
                return to_rgb(image)
    return None


class _TileStats(threading.local):
    mode: Literal["record", "apply"] | None = None
    stats: dict[int, tuple[Tensor, Tensor]]


_TILE_STATS = _TileStats()


class _SharedStatsNorm(nn.Module):
    """Instance norm that can record its statistics on one pass and normalise later passes with them."""

    def __init__(self, norm: nn.InstanceNorm2d) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: Tensor) -> Tensor:
        mode = _TILE_STATS.mode
        if mode is None:
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        if mode == "record":
            var, mean = torch.var_mean(x.float(), dim=(2, 3), unbiased=False, keepdim=True)
            _TILE_STATS.stats[id(self)] = (mean, var)
        else:
            mean, var = _TILE_STATS.stats[id(self)]
        y = (x.float() - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.float().view(1, -1, 1, 1) + self.bias.float().view(1, -1, 1, 1)
        return y.to(x.dtype)


@contextlib.contextmanager
def _tile_stats_mode(mode: Literal["record", "apply"], stats: dict[int, tuple[Tensor, Tensor]]) -> Iterator[None]:
    _TILE_STATS.mode, _TILE_STATS.stats = mode, stats
    try:
        yield
    finally:
        _TILE_STATS.mode, _TILE_STATS.stats = None, {}


def _with_shared_stats_norm(net: nn.Module) -> nn.Module:
    net = copy.deepcopy(net)
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.InstanceNorm2d):
                setattr(parent, name, _SharedStatsNorm(child))
    return net


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets along one axis: evenly spread multiples of 4 (the network's stride), neighbours
    overlapping by at least ``overlap``; the last tile runs to ``length`` (up to 3 pixels longer than ``tile``)."""
    last = max(0, length - tile) // 4 * 4
    if last == 0:
        return [0]
    # rounding each start to a multiple of 4 can widen a gap by up to 4 pixels
    spacing = max(4, (tile - overlap) // 4 * 4 - 4)
    count = math.ceil(last / spacing) + 1
    return sorted({round(i * last / (count - 1) / 4) * 4 for i in range(count)})


def _ramps(starts: list[int], tile: int, length: int) -> list[Tensor]:
    """1-D blending weights per tile: cosine ramps across each overlap that sum to 1 with the neighbour's."""
    ends = [min(s + tile, length) if i < len(starts) - 1 else length for i, s in enumerate(starts)]
    weights = []
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        w = torch.ones(end - start, dtype=torch.float64)
        if i > 0:
            n = ends[i - 1] - start
            w[:n] = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n)
        if i < len(starts) - 1:
            n = end - starts[i + 1]
            w[end - start - n :] *= 0.5 + 0.5 * torch.cos(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n)
        weights.append(w.float())
    return weights


def default_precision(device: torch.device, compiled: bool | str | None = False) -> str:
    """fp16 for a compiled network on CUDA, fp32 otherwise. Measured on an H200 (``faststyle bench infer``, 512×512
    and 1920×1080, medians of 20): the eager network took 1.09/1.27× as long in fp16 as in fp32, channels_last fp16
    1.25/1.52×, compiled fp16 0.71/0.40× and compiled fp16 with CUDA graphs 0.48/0.38×."""
    return "fp16" if device.type == "cuda" and compiled else "fp32"


def default_backend(device: torch.device, precision: str, compiled: bool | str | None = False) -> str:
    """ONNX Runtime for fp32 on the CPU when it is installed: 1.7–1.9× the eager network in ``faststyle bench infer``
    on a 2-core machine, where channels_last (0.87–0.99×) and torch.compile (0.88–1.44×) were not reliably faster;
    eager on the CPU otherwise. On CUDA eager, and channels_last for a compiled network (see ``default_precision``).
    """
    if device.type == "cpu":
        from faststyle.export import missing_onnx

        return "onnxruntime" if precision == "fp32" and not compiled and not missing_onnx() else "eager"
    return "channels_last" if compiled else "eager"


class Stylizer:
    """A style model ready to apply: ``Stylizer("starry_night")(photo)``.

    ``model``: a model NAME (see ``find_model``), a model file, or a network (RGB [0,1] in, RGB [0,1] out).
    ``precision``: ``auto`` is fp32, or fp16 for a compiled network on CUDA. ``backend``: ``auto`` is eager on CUDA
    (channels_last when compiled) and ONNX Runtime on CPU for fp32 when onnx and onnxruntime are installed, else
    eager: the fastest in ``faststyle bench infer`` (see ``default_precision`` and ``default_backend``). ``compile``
    (default off: it costs a compilation per new image size) wraps the network in ``torch.compile``: True, or a mode of
    ``faststyle.compiling.COMPILE_MODES`` ("reduce-overhead" adds CUDA graphs). ``tile``: the tile side; ``None``
    tiles images over the pixel budget ``tile_pixels``, ``0`` never tiles; tiles always run in PyTorch. The pass that
    gives all tiles their statistics runs on a copy scaled down to ``tile_pixels`` (default 2048², or with ``tile``
    a tile's own pass, (tile + 2·CONTEXT)², so that no pass takes more memory than a tile). Images over
    ``max_pixels`` are refused. ONNX Runtime keeps the working memory of its largest pass for the next (5.5 GB after
    a 2048×2048 image); ``release_pixels`` gives it back after each pass over that many pixels, for a program that
    holds several models (the demo).
    """

    def __init__(
        self,
        model: str | Path | nn.Module,
        device: str | torch.device | None = None,
        precision: str = "auto",
        compile: bool | str | None = None,
        tile: int | None = None,
        overlap: int = 32,
        max_pixels: int = MAX_PIXELS,
        backend: str = "auto",
        tile_stats: Literal["global", "local"] = "global",
        tile_pixels: int | None = None,
        release_pixels: int | None = None,
    ) -> None:
        from faststyle.modelfile import load_model

        if precision not in PRECISIONS:
            raise FaststyleError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        if backend not in BACKENDS:
            raise FaststyleError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
        if tile_stats not in ("global", "local"):
            raise FaststyleError(f"tile_stats must be 'global' or 'local', not {tile_stats!r}")
        if overlap < 0:
            raise FaststyleError(f"overlap must be 0 or more pixels, not {overlap}")
        if tile is not None and (tile < 0 or 0 < tile < 2 * overlap + 8):
            raise FaststyleError(f"tile ({tile}) must be 0 (no tiling) or at least 2×overlap + 8 = {2 * overlap + 8}")
        self.device = resolve_device(device)
        if precision == "auto":
            precision = default_precision(self.device, compile)
        elif precision != "fp32" and self.device.type == "cpu":
            log.warning("%s on the CPU is emulated by most processors and far slower than fp32", precision)
        self.precision = precision
        self.dtype = DTYPES[precision]
        if isinstance(model, nn.Module):
            net, self.metadata, self.path = model, dict(getattr(model, "metadata", {}) or {}), None
            self.name = "model"
        else:
            self.path = find_model(model)
            net, self.metadata = load_model(self.path)
            self.name = self.path.stem
        net = copy.deepcopy(net).float().eval().cpu()
        for p in net.parameters():
            p.requires_grad_(False)
        if backend == "auto":
            backend = default_backend(self.device, precision, compile)
        elif compile and backend == "onnxruntime":
            raise FaststyleError("compile applies to the PyTorch backends; use backend eager or channels_last")
        self.backend = backend
        self.tile, self.overlap, self.max_pixels, self.tile_stats = tile, overlap, max_pixels, tile_stats
        # with a tile side, no pass is larger than a tile's: the statistics' pass is scaled down to it too
        self.tile_pixels = tile_pixels or ((tile + 2 * CONTEXT) ** 2 if tile else TILE_PIXELS)
        self.context = CONTEXT
        self.compiled: bool | str = compile or False
        self._session = None
        if backend == "onnxruntime":
            if self.device.type != "cpu" or precision != "fp32":
                raise FaststyleError("the onnxruntime backend runs fp32 on the CPU; use --device cpu --precision fp32")
            from faststyle.export import require_onnx

            require_onnx("the onnxruntime backend")
            self._session = _onnx_session(net, self.path)
        self.release_pixels = release_pixels
        memory_format = torch.channels_last if backend == "channels_last" else torch.contiguous_format
        self.memory_format = memory_format
        self.net = net.to(self.device, self.dtype, memory_format=memory_format)
        self._tile_net: nn.Module | None = None
        self._lock = threading.Lock()
        self._forward = compiler(self.compiled)(self.net)

    def __repr__(self) -> str:
        return (
            f"Stylizer({self.name!r}, device={self.device}, precision={self.precision}, backend={self.backend}, "
            f"compile={self.compiled}, tile={self.tile})"
        )

    # -- public API -----------------------------------------------------------------------------------------------

    def __call__(
        self, image: ImageLike, size: int | None = None, strength: Strength = 1.0, preserve_color: bool = False
    ) -> ImageLike:
        """Stylize a PIL image (-> PIL RGB; RGBA where it is transparent: its transparency is kept, and the network
        sees it over white) or a tensor shaped (3,H,W) or (N,3,H,W), float in [0,1] or uint8 (-> same shape, float32
        in [0,1], on the input's device). ``size`` resizes the longer side first. ``strength``: 0 (the photo) to 1
        (the painting), or a map of it per pixel, scaled to the image: a greyscale PIL image or a (1,1,H,W) tensor in
        [0,1] (white: painted, black: the photo kept)."""
        if isinstance(image, Image.Image):
            self._check_pixels(image.width, image.height)
            result = tensor_to_pil(self._run(pil_to_tensor(image), size, strength, preserve_color))
            return with_alpha(result, alpha_channel(image))
        if isinstance(image, Tensor):
            batch = self._as_batch(image, keep_uint8=True)  # converted on the device: a quarter of the transfer
            out = self._run(batch, size, strength, preserve_color).to(image.device)
            return out[0] if image.ndim == 3 else out
        raise FaststyleError(f"Stylizer takes a PIL image or a tensor, not {type(image).__name__}")

    def batch(
        self,
        images: Sequence[ImageLike],
        size: int | None = None,
        strength: Strength = 1.0,
        preserve_color: bool = False,
    ) -> list[ImageLike]:
        """Stylize several images; those of equal size after resizing run as one batch."""
        tensors: list[Tensor] = []
        for image in images:
            if isinstance(image, Image.Image):
                self._check_pixels(image.width, image.height)
                tensors.append(pil_to_tensor(image))
            elif isinstance(image, Tensor):
                tensors.append(self._as_batch(image))
            else:
                raise FaststyleError(f"Stylizer.batch takes PIL images or tensors, not {type(image).__name__}")
        if size is not None:
            for t in tensors:
                check_resized_pixels(*t.shape[-2:], size, self.max_pixels)
            tensors = [resize_long_side(t, size) for t in tensors]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault(tuple(t.shape[1:]), []).append(i)
        results: list[Tensor | None] = [None] * len(tensors)
        for indices in groups.values():
            out = self._run(torch.cat([tensors[i] for i in indices]), None, strength, preserve_color)
            counts = [tensors[i].shape[0] for i in indices]
            for i, part in zip(indices, out.split(counts), strict=True):
                results[i] = part
        converted: list[Any] = []
        for image, result in zip(images, results, strict=True):
            assert result is not None
            if isinstance(image, Image.Image):
                converted.append(with_alpha(tensor_to_pil(result), alpha_channel(image)))
            else:
                converted.append(result.to(image.device)[0] if image.ndim == 3 else result.to(image.device))
        return converted

    # -- internals ------------------------------------------------------------------------------------------------

    def _check_pixels(self, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise FaststyleError(
                f"the image has {width}x{height} pixels, over the limit of {self.max_pixels:,}; downscale it first "
                "or raise the limit (max_pixels / --max-pixels)"
            )

    def _as_batch(self, image: Tensor, keep_uint8: bool = False) -> Tensor:
        """(N,3,H,W), checked: float in [0,1], or uint8 as it is with ``keep_uint8`` (``_run`` converts it)."""
        if image.ndim == 3:
            image = image.unsqueeze(0)
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[0] == 0:
            raise FaststyleError(f"expected an RGB image tensor shaped (3,H,W) or (N,3,H,W), got {tuple(image.shape)}")
        self._check_pixels(image.shape[-1], image.shape[-2])
        if keep_uint8 and image.dtype == torch.uint8:
            return image
        return unit_range(image, "Stylizer").float()

    def _run(self, content: Tensor, size: int | None, strength: Strength, preserve_color: bool) -> Tensor:
        if isinstance(strength, (Tensor, Image.Image)):
            strength = as_mask(strength, "the strength map")
        elif isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0.0 <= strength <= 1.0:
            raise FaststyleError(f"strength must be between 0 and 1 (or a map of it), not {strength!r}")
        with torch.no_grad():  # not inference_mode: callers may edit the result in place or take gradients later
            check_resized_pixels(*content.shape[-2:], size, self.max_pixels)
            content = content.to(self.device)
            content = content.float().div_(255.0) if content.dtype == torch.uint8 else content.float()
            if size is not None:
                content = resize_long_side(content, size)
            painted = isinstance(strength, Tensor) or strength > 0
            stylized = self.stylize(content) if painted else content
            if preserve_color and painted:
                from faststyle.color import preserve_color as keep_colors

                stylized = keep_colors(stylized, content)
            if isinstance(strength, Tensor):
                weight = F.interpolate(
                    strength.to(self.device), size=content.shape[-2:], mode="bilinear", antialias=True
                )
                stylized = torch.lerp(content, stylized, weight.clamp(0, 1))
            elif strength < 1:
                stylized = torch.lerp(content, stylized, strength)
            return stylized.clamp(0, 1)

    def needs_tiles(self, height: int, width: int) -> bool:
        if self.tile == 0:
            return False
        if self.tile:
            return max(height, width) > self.tile
        return height * width > self.tile_pixels

    def stylize(self, content: Tensor) -> Tensor:
        """The network's output for a float32 (N,3,H,W) batch on the device, tiled when the image is large."""
        h, w = content.shape[-2:]
        if self.needs_tiles(h, w):
            return self._tiled(content)
        return self._forward_once(content)

    def _forward_once(self, content: Tensor) -> Tensor:
        h, w = content.shape[-2:]
        if min(h, w) < MIN_SIDE:
            return on_min_side(self._forward_once, content)
        if self._session is not None:
            array = content.detach().cpu().contiguous().numpy()
            release = self.release_pixels is not None and array.size // 3 > self.release_pixels
            try:
                out = self._session.run(
                    None, {self._session.get_inputs()[0].name: array}, _release_options() if release else None
                )[0]
            except Exception as exc:  # onnxruntime's errors do not derive from RuntimeError
                raise FaststyleError(
                    f"ONNX Runtime failed on a {w}x{h} image ({type(exc).__name__}: {exc}); try --backend eager"
                ) from None
            return torch.from_numpy(out).to(content.device)
        x = content.to(self.dtype).contiguous(memory_format=self.memory_format)
        return self._forward(x).float().contiguous()

    def _shared_stats_net(self) -> nn.Module:
        with self._lock:
            if self._tile_net is None:
                self._tile_net = _with_shared_stats_norm(self.net)
            return self._tile_net

    def _tiled(self, content: Tensor) -> Tensor:
        n, _, h, w = content.shape
        side = self.tile or max(2 * self.overlap + 8, math.isqrt(self.tile_pixels) // 4 * 4)
        net = self._shared_stats_net()
        stats: dict[int, tuple[Tensor, Tensor]] = {}
        if self.tile_stats == "global":
            long = min(max(h, w), max(4, math.floor(math.sqrt(self.tile_pixels / (h * w)) * max(h, w))))
            while long > 4 and math.prod(long_side_size(h, w, long)) > self.tile_pixels:  # the short side rounded up
                long -= 1
            preview = resize_long_side(content, long)
            with _tile_stats_mode("record", stats):
                on_min_side(net, preview.to(self.dtype).contiguous(memory_format=self.memory_format))
        ys, xs = tile_starts(h, side, self.overlap), tile_starts(w, side, self.overlap)
        wy, wx = _ramps(ys, side, h), _ramps(xs, side, w)
        out = torch.zeros(n, 3, h, w, device=content.device)
        total = torch.zeros(1, 1, h, w, device=content.device)
        for y0, ry in zip(ys, wy, strict=True):
            for x0, rx in zip(xs, wx, strict=True):
                y1, x1 = y0 + ry.numel(), x0 + rx.numel()
                # extra context beyond the tile, cropped off again, keeps padding effects out of the blend
                cy0, cx0 = max(0, y0 - self.context), max(0, x0 - self.context)
                cy1, cx1 = min(h, y1 + self.context), min(w, x1 + self.context)
                piece = content[..., cy0:cy1, cx0:cx1].to(self.dtype).contiguous(memory_format=self.memory_format)
                if stats:
                    with _tile_stats_mode("apply", stats):
                        result = on_min_side(net, piece)
                else:
                    result = on_min_side(net, piece)
                result = result[..., y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
                weight = (ry.view(-1, 1) * rx.view(1, -1)).to(content.device)
                out[..., y0:y1, x0:x1] += result.float() * weight
                total[..., y0:y1, x0:x1] += weight
        return out / total


def on_min_side(forward: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
    """``forward(images)``, with sides under ``MIN_SIDE`` padded for it (replicating the edge) and cropped after: the
    network's 9×9 reflection padding needs more than 4 pixels a side."""
    h, w = images.shape[-2:]
    if min(h, w) >= MIN_SIDE:
        return forward(images)
    grown = F.pad(images, (0, max(0, MIN_SIDE - w), 0, max(0, MIN_SIDE - h)), mode="replicate")
    return forward(grown)[..., :h, :w]


@functools.cache
def _release_options() -> Any:
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def _onnx_session(net: nn.Module, path: Path | None) -> Any:
    """An ONNX Runtime session for ``net``; the export of a model file is cached by the file's sha256."""
    import onnxruntime as ort

    from faststyle.export import onnx_bytes

    data: bytes | None = None
    cached: Path | None = None
    if path is not None:
        from faststyle.images import atomic_write_bytes, sha256_file
        from faststyle.lossnets.weights import cache_dir

        key = f"{sha256_file(path)[:32]}-{_export_code_key()}-torch{torch.__version__.split('+')[0]}"
        cached = cache_dir() / "onnx" / f"{key}.onnx"
        with contextlib.suppress(OSError):  # missing, or just pruned by another process: exported again
            data = cached.read_bytes()
            os.utime(cached)  # recently used: kept by _prune_onnx_cache
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3
    if data is not None:
        try:
            return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a damaged cache file: export again
            log.warning("re-exporting %s: the cached ONNX file %s does not load (%s)", path, cached, exc)
    data = onnx_bytes(net)
    if cached is not None:
        with contextlib.suppress(OSError):
            atomic_write_bytes(cached, data)
            _prune_onnx_cache(cached)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _prune_onnx_cache(kept: Path, limit: int = ONNX_CACHE_FILES) -> None:
    """Removes the exports of ``kept``'s model by other code or torch versions unused for a day (another install
    sharing the cache may still use one), and all but the ``limit`` most recently used exports."""
    model = kept.name.split("-", 1)[0]
    exports = [p for p in kept.parent.glob("*.onnx") if p != kept]
    day_ago = time.time() - 86_400
    stale = [p for p in exports if p.name.split("-", 1)[0] == model and p.stat().st_mtime < day_ago]
    by_use = sorted((p for p in exports if p not in stale), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in stale + by_use[limit - 1 :]:
        with contextlib.suppress(OSError):
            path.unlink()


@functools.cache
def _export_code_key() -> str:
    """A digest of the code that defines the exported graph, so a changed network or export invalidates the cache."""
    import faststyle.export
    import faststyle.transformer

    digest = hashlib.sha256()
    for module in (faststyle.transformer, faststyle.export):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()[:12]
