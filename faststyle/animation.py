"""Animated GIF, PNG (APNG) and WebP files: every frame stylized and shown for as long as in the original, the
number of plays kept (looping forever, or a set number of times).

Pillow reads the frames composed as a viewer shows them (disposal and blending applied; transparency over white,
as for still images). A GIF is written with one palette for all its frames, so that colours do not shift between
frames; WebP is written lossy at quality 95, as still images are, and APNG losslessly.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from faststyle.errors import FaststyleError
from faststyle.images import atomic_write_bytes, check_long_side, open_within, pil_to_tensor, tensor_to_pil, to_rgb

if TYPE_CHECKING:
    from faststyle.stylize import Stylizer

log = logging.getLogger(__name__)

# Pillow's format name of each animated format -> the suffixes written in it
ANIMATED_FORMATS = {"GIF": (".gif",), "PNG": (".png", ".apng"), "WEBP": (".webp",)}
WRITE_SUFFIXES = tuple(suffix for suffixes in ANIMATED_FORMATS.values() for suffix in suffixes)
# The stylized frames are held until the file is written: a longer animation is better converted to a video.
MAX_HELD_BYTES = 3 << 30
DEFAULT_DURATION_MS = 100  # a frame that gives no duration, as browsers show it
_GIF_PALETTE_SAMPLES = 16
_GIF_PALETTE_PIXELS = 4_000_000


@dataclass(frozen=True)
class AnimationResult:
    path: Path
    frames: int
    width: int
    height: int
    duration_ms: float  # one play of the animation
    plays: int  # how many times it plays; 0: it loops forever
    seconds: float  # wall time of the whole job: reading, stylizing, writing

    @property
    def throughput(self) -> float:
        """Frames stylized per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def is_animation(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a GIF, PNG or WebP file with more than one frame (a file that cannot be read is not)."""
    try:
        with Image.open(path) as image:
            return image.format in ANIMATED_FORMATS and bool(getattr(image, "is_animated", False))
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError):
        return False


def plays_of(image: Image.Image) -> int:
    """How many times an opened animation plays (0: forever). A GIF's loop count repeats the first play, and a GIF
    without one plays once; APNG and WebP give the plays themselves."""
    loop = image.info.get("loop")
    if image.format == "GIF":
        return 1 if loop is None else 0 if loop == 0 else loop + 1
    return 0 if loop is None else int(loop)


def check_output(path: str | os.PathLike[str]) -> str:
    """The Pillow format ``path`` is written in, or an error naming the suffixes that hold an animation."""
    suffix = Path(path).suffix.lower()
    for fmt, suffixes in ANIMATED_FORMATS.items():
        if suffix in suffixes:
            return fmt
    raise FaststyleError(f"cannot write an animation as {Path(path).name!r}; end the file name in .gif, .webp or .png")


def stylize_animation(
    stylizer: Stylizer | str | os.PathLike[str],
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    size: int | None = None,
    strength: float = 1.0,
    preserve_color: bool = False,
    batch: int = 4,
    progress: bool = True,
) -> AnimationResult:
    """Stylize every frame of the animated GIF, PNG or WebP ``source`` into ``target`` (written atomically, in the
    format its suffix names: .gif, .png/.apng or .webp), ``batch`` frames a pass, with a ``Stylizer`` (or a model
    NAME or file, loaded with the defaults). ``size`` scales the long side first. Each frame keeps its duration and
    the animation its number of plays."""
    from tqdm import tqdm

    from faststyle.stylize import Stylizer

    source, target = Path(source), Path(target)
    fmt = check_output(target)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise FaststyleError(f"batch must be a whole number of at least 1, not {batch!r}")
    check_long_side(size)
    if target.is_dir():
        raise FaststyleError(f"{target} is a folder; name the file to write")
    if target.exists() and target.resolve() == source.resolve():
        raise FaststyleError(f"{target} is the animation being stylized; name another file so that it is kept")
    if not isinstance(stylizer, Stylizer):
        stylizer = Stylizer(stylizer)
    started = time.perf_counter()
    stylized: list[Image.Image] = []
    durations: list[float] = []
    with _open(source, stylizer.max_pixels) as image:
        plays = plays_of(image)
        count = getattr(image, "n_frames", 1)
        _check_memory(source, count, _output_size(image.width, image.height, size))
        with tqdm(total=count, unit="frame", disable=not progress, desc=source.name) as bar:
            for frames, times in _batches(_frames(source, image), batch):
                pixels = torch.cat([pil_to_tensor(frame) for frame in frames])
                result = stylizer(pixels, size=size, strength=strength, preserve_color=preserve_color)
                stylized += [tensor_to_pil(frame) for frame in result]
                durations += times
                bar.update(len(frames))
    atomic_write_bytes(target, encode(stylized, durations, plays, fmt))
    return AnimationResult(
        target,
        len(stylized),
        stylized[0].width,
        stylized[0].height,
        sum(durations),
        plays,
        time.perf_counter() - started,
    )


def encode(frames: list[Image.Image], durations: list[float], plays: int, fmt: str) -> bytes:
    """RGB frames as an animation file's bytes; ``plays`` 0 loops forever."""
    options: dict[str, object] = {"save_all": True, "append_images": frames[1:]}
    if fmt == "GIF":
        frames = _with_one_palette(frames)
        options["append_images"] = frames[1:]
        options["duration"] = [round(d) for d in durations]
        if plays != 1:  # a GIF without a loop count plays once
            options["loop"] = max(plays - 1, 0)
    elif fmt == "WEBP":
        options.update(duration=[round(d) for d in durations], loop=plays, quality=95, method=4)
    else:
        options.update(duration=durations, loop=plays)
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _with_one_palette(frames: list[Image.Image]) -> list[Image.Image]:
    """The frames in 256 colours chosen from a sample of them all, with Floyd–Steinberg dithering."""
    picks = np.linspace(0, len(frames) - 1, min(len(frames), _GIF_PALETTE_SAMPLES)).round().astype(int)
    width, height = frames[0].size
    scale = min(1.0, (_GIF_PALETTE_PIXELS / (len(picks) * width * height)) ** 0.5)
    cell = (max(1, round(width * scale)), max(1, round(height * scale)))
    sheet = Image.new("RGB", (cell[0], cell[1] * len(picks)))
    for row, index in enumerate(picks):
        sheet.paste(frames[index].resize(cell, Image.BOX), (0, row * cell[1]))
    palette = sheet.quantize(256, method=Image.Quantize.FASTOCTREE)
    return [frame.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG) for frame in frames]


def _open(source: Path, max_pixels: int) -> Image.Image:
    if not source.is_file():
        reason = "is a folder, not an image file" if source.is_dir() else "does not exist"
        raise FaststyleError(f"animation {source} {reason}")
    try:
        image = open_within(source, max_pixels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FaststyleError(
            f"{source} is larger than the pixel limit of {max_pixels:,} (decompression bomb?)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FaststyleError(f"cannot read {source} as an image ({exc})") from None
    if image.format not in ANIMATED_FORMATS:
        image.close()
        raise FaststyleError(f"{source} is a {image.format} file; animations are read from GIF, PNG and WebP")
    if image.width * image.height > max_pixels:
        image.close()
        raise FaststyleError(
            f"{source} has {image.width}x{image.height} pixels a frame, over the limit of {max_pixels:,}; "
            "raise the limit (max_pixels / --max-pixels)"
        )
    return image


def _output_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    if not size:
        return width, height
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _check_memory(source: Path, frames: int, size: tuple[int, int]) -> None:
    held = frames * size[0] * size[1] * 3
    if held > MAX_HELD_BYTES:
        raise FaststyleError(
            f"{source} has {frames} frames of {size[0]}x{size[1]}: {held / 2**30:.1f} GiB to hold, over "
            f"{MAX_HELD_BYTES / 2**30:.0f} GiB; give a smaller --size, or convert it to a video (.mp4), which is "
            "stylized a frame at a time"
        )


def _frames(source: Path, image: Image.Image) -> Iterator[tuple[Image.Image, float]]:
    """Each frame as shown (RGB) with its duration in milliseconds."""
    for index in range(getattr(image, "n_frames", 1)):
        try:
            image.seek(index)
            frame = to_rgb(image)
        except (OSError, ValueError, EOFError, SyntaxError) as exc:
            raise FaststyleError(f"cannot read frame {index + 1} of {source} ({exc})") from None
        duration = image.info.get("duration")
        yield frame, float(duration) if duration is not None else float(DEFAULT_DURATION_MS)


def _batches(frames: Iterator[tuple[Image.Image, float]], size: int) -> Iterator[tuple[list[Image.Image], list[float]]]:
    pending: list[tuple[Image.Image, float]] = []
    for frame in frames:
        pending.append(frame)
        if len(pending) == size:
            yield [f for f, _ in pending], [d for _, d in pending]
            pending = []
    if pending:
        yield [f for f, _ in pending], [d for _, d in pending]
