"""Animated GIF, PNG (APNG) and WebP files: every frame stylized and shown for as long as in the original, the
number of plays kept (looping forever, or a set number of times).

Pillow reads the frames composed as a viewer shows them (disposal and blending applied). The network sees
transparent frames over white, as for still images, and the output keeps their transparency: APNG and WebP as it
is, GIF as on or off (a pixel is transparent where it was less than half opaque). A GIF is written with one palette
for all its frames, so that colours do not shift between frames, and its frame times in whole hundredths of a
second; WebP is written lossy at quality 95, as still images are (its transparency losslessly), and APNG
losslessly.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from PIL import Image

from faststyle.errors import FaststyleError
from faststyle.images import (
    PILLOW_READ_ERRORS,
    alpha_channel,
    atomic_write_bytes,
    check_format_size,
    check_frames_job,
    check_pixels,
    frame_total,
    long_side_size,
    open_within,
    opened,
    pil_to_tensor,
    tensor_to_pil,
    to_rgb,
    with_alpha,
)

if TYPE_CHECKING:
    from faststyle.stylize import Strength, Stylizer

log = logging.getLogger(__name__)
T = TypeVar("T")

# Pillow's format name of each animated format -> the suffixes written in it
ANIMATED_FORMATS = {"GIF": (".gif",), "PNG": (".png", ".apng"), "WEBP": (".webp",)}
WRITE_SUFFIXES = tuple(suffix for suffixes in ANIMATED_FORMATS.values() for suffix in suffixes)
# The stylized frames are held until the file is written: a longer animation is better written as a video.
MAX_HELD_BYTES = 1 << 30  # writing the file takes up to twice as much again
DEFAULT_DURATION_MS = 100  # a frame that gives no duration, as browsers show it
MAX_PLAYS = 65_535  # GIF's and WebP's loop counts are 16-bit; more plays than that are taken as forever
GIF_TICK_MS, GIF_SHORTEST_MS = 10, 20  # browsers show a GIF frame of 0 or 10 ms for 100 ms
_GIF_PALETTE_PIXELS = 4_000_000  # the frames are scaled down to this many pixels in all to choose the palette
_OWN_PALETTE_ERROR = 2.0  # a frame whose error is this many times the median (3 dB) gets its own palette
_GIF_TRANSPARENT = 255  # the palette index of transparent pixels, where a GIF has them


@dataclass(frozen=True)
class AnimationResult:
    path: Path
    frames: int
    width: int
    height: int
    duration_ms: float  # one play of the animation as written
    plays: int  # how many times it plays; 0: it loops forever
    seconds: float  # wall time of the whole job: reading, stylizing, writing

    @property
    def throughput(self) -> float:
        """Frames stylized per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    @property
    def playing(self) -> str:
        """How it plays, in words: "loops forever", "plays once", "plays 3 times"."""
        return {0: "loops forever", 1: "plays once"}.get(self.plays, f"plays {self.plays} times")


def animated_format(path: str | os.PathLike[str]) -> str | None:
    """The format (GIF, PNG or WEBP) of an animation file, whatever its name; None for anything else (a still
    image, a file that cannot be read). Pillow's own pixel limit is left out (``opened`` applies ours as the file is
    read): it would warn of a decompression bomb on a 90-megapixel photo, and take a larger animation for a still."""
    try:
        with open_within(Path(path)) as image:
            animated = image.format in ANIMATED_FORMATS and frame_total(image) > 1
            return image.format if animated else None
    except Exception:  # noqa: BLE001 - whatever Pillow raises on a file it cannot read: not an animation
        return None


def is_animation(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a GIF, PNG or WebP file with more than one frame, whatever its name."""
    return animated_format(path) is not None


def kept_suffix(path: Path, fmt: str) -> str:
    """The suffix an animation in ``fmt`` keeps when written: its own where it names that format, else the
    format's (a GIF named .jpg becomes .gif)."""
    suffix = path.suffix.lower()
    return suffix if suffix in ANIMATED_FORMATS[fmt] else ANIMATED_FORMATS[fmt][0]


def plays_of(image: Image.Image) -> int:
    """How many times an opened animation plays (0: forever). A GIF's loop count repeats the first play, and a GIF
    without one plays once; APNG and WebP give the plays themselves."""
    loop = image.info.get("loop")
    if image.format == "GIF":
        plays = 1 if loop is None else 0 if loop == 0 else loop + 1
    else:
        plays = 0 if loop is None else int(loop)
    return 0 if plays > MAX_PLAYS else plays


def output_format(path: str | os.PathLike[str]) -> str:
    """The Pillow format ``path`` is written in, or an error naming the suffixes that hold an animation."""
    suffix = Path(path).suffix.lower()
    for fmt, suffixes in ANIMATED_FORMATS.items():
        if suffix in suffixes:
            return fmt
    raise FaststyleError(
        f"cannot write an animation as {Path(path).name!r}; end the file name in .gif, .webp or .png (or write a "
        "video with faststyle.stylize_video)"
    )


def stylize_animation(
    stylizer: Stylizer | str | os.PathLike[str],
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    size: int | None = None,
    strength: Strength = 1.0,
    preserve_color: bool = False,
    batch: int = 4,
    progress: bool = True,
    max_pixels: int | None = None,
) -> AnimationResult:
    """Stylize every frame of the animated GIF, PNG or WebP ``source`` into ``target`` (written atomically, in the
    format its suffix names: .gif, .png/.apng or .webp), ``batch`` frames a pass, with a ``Stylizer`` (or a model
    NAME or file, loaded with the defaults). ``size`` scales the long side first. Each frame keeps its duration
    (in a GIF, to the hundredth of a second it can hold) and the animation its number of plays. A frame of more
    than ``max_pixels`` (default: the stylizer's limit) is refused before it is read, and nothing is written."""
    from tqdm import tqdm

    from faststyle.stylize import Stylizer
    from faststyle.video import is_video

    source, target = Path(source), Path(target)
    if is_video(source):
        raise FaststyleError(f"{source.name} is a video; stylize it with faststyle.stylize_video")
    fmt = output_format(target)
    check_frames_job(source, target, batch, size, "animation")
    if not isinstance(stylizer, Stylizer):
        stylizer = Stylizer(stylizer)
    started = time.perf_counter()
    stylized: list[Image.Image] = []
    durations: list[float] = []
    max_pixels = stylizer.max_pixels if max_pixels is None else max_pixels
    with opened(source, max_pixels) as image:
        if image.format not in ANIMATED_FORMATS:
            raise FaststyleError(f"{source} is a {image.format} file; animations are read from GIF, PNG and WebP")
        source_format = image.format
        plays = plays_of(image)
        first = 1 if has_hidden_default_image(image) else 0
        count = frame_count(image)
        side = (image.height, image.width)
        out_side = side if size is None else long_side_size(*side, size)
        _check_memory(source, count, out_side)
        check_format_size(target, out_side[1], out_side[0])
        with tqdm(total=count, unit="frame", disable=not progress, desc=source.name) as bar:
            for chunk in _batches(_frames(source, image, first, max_pixels), batch):
                pixels = torch.cat([pil_to_tensor(frame) for frame, _, _ in chunk])
                result = stylizer(pixels, size=size, strength=strength, preserve_color=preserve_color)
                for out, (_, alpha, duration) in zip(result, chunk, strict=True):
                    stylized.append(with_alpha(tensor_to_pil(out), alpha))
                    durations.append(duration)
                bar.update(len(chunk))
    if fmt == "GIF":
        durations = gif_delays(durations, source, from_gif=source_format == "GIF")
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
    """RGB or RGBA frames as an animation file's bytes (all RGBA where one is; a GIF's pixels transparent where
    they are less than half opaque); ``plays`` 0 loops forever. GIF durations are taken as they are: see
    ``gif_delays``."""
    options: dict[str, object] = {"save_all": True}
    if any(frame.mode == "RGBA" for frame in frames):
        frames = [frame.convert("RGBA") for frame in frames]
    if fmt == "GIF":
        frames = _with_one_palette(frames)
        options["duration"] = _whole_milliseconds(durations)
        if plays != 1:  # a GIF without a loop count plays once
            options["loop"] = max(plays - 1, 0)
        if "transparency" in frames[0].info:  # each frame clears the canvas, so that no earlier frame shows through
            options.update(transparency=_GIF_TRANSPARENT, disposal=2, optimize=False)
    elif fmt == "WEBP":
        options.update(duration=_whole_milliseconds(durations), loop=plays, quality=95, method=4)
    else:
        options.update(duration=durations, loop=plays)
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, append_images=frames[1:], **options)
    return buffer.getvalue()


def gif_delays(durations: list[float], source: str | os.PathLike[str] = "", from_gif: bool = False) -> list[float]:
    """Frame times a GIF can hold: whole hundredths of a second, 20 ms or more, each rounded so that the frames
    still start on time as nearly as they can. A GIF's own times (``from_gif``) are kept as they are, even 0 and 10
    ms, which viewers show alike in both files; a change is logged."""
    if from_gif and all(d == round(d, -1) for d in durations):
        return list(durations)
    delays: list[float] = []
    wanted = shown = 0.0
    for duration in durations:
        wanted += duration
        delay = max(GIF_SHORTEST_MS, round((wanted - shown) / GIF_TICK_MS) * GIF_TICK_MS)
        delays.append(float(delay))
        shown += delay
    if sum(durations) and abs(shown - sum(durations)) > GIF_TICK_MS:
        log.warning(
            "%s: a GIF holds frame times in hundredths of a second, 20 ms or more; one play takes %.0f ms instead "
            "of %.0f (write .webp or .png to keep the times)",
            Path(source).name or "the animation",
            shown,
            sum(durations),
        )
    return delays


def _whole_milliseconds(durations: list[float]) -> list[int]:
    """Frame times in the whole milliseconds WebP and GIF hold, each frame's start rounded rather than each time, so
    that rounding does not add up over a play (30 fps: 33, 34, 33, …)."""
    starts = [round(t) for t in itertools.accumulate(durations, initial=0.0)]
    return [end - start for start, end in itertools.pairwise(starts)]


def _with_one_palette(frames: list[Image.Image]) -> list[Image.Image]:
    """The frames in 256 colours chosen from all of them (each scaled down for the choice), with Floyd–Steinberg
    dithering. A frame the shared palette serves far worse than the others (a scene cut, a flash, a title card)
    gets a palette of its own. RGBA frames get 255 colours, chosen from and measured on the pixels that stay
    visible, and the last index where they are less than half opaque (``info["transparency"]``)."""
    if frames[0].mode == "RGBA":
        opaque = [np.asarray(frame.getchannel("A")) >= 128 for frame in frames]
        quantized = _quantized(frames, colours=_GIF_TRANSPARENT, shown=opaque)
        return [_transparent_where(frame, ~keep) for frame, keep in zip(quantized, opaque, strict=True)]
    return _quantized(frames, colours=256)


def _transparent_where(frame: Image.Image, clear: np.ndarray) -> Image.Image:
    indices = np.asarray(frame).copy()
    indices[clear] = _GIF_TRANSPARENT
    out = Image.fromarray(indices, "P")
    palette = (frame.getpalette() or [])[: 3 * _GIF_TRANSPARENT]
    # Near-white, where a viewer ignores the transparency; not white itself, which Pillow's writer would take for the
    # cleared background and leave out of a frame with its own palette (showing the frame's white as transparent).
    out.putpalette(palette + [254, 255, 253] * ((3 * 256 - len(palette)) // 3))
    out.info["transparency"] = _GIF_TRANSPARENT
    return out


def _quantized(frames: list[Image.Image], colours: int, shown: list[np.ndarray] | None = None) -> list[Image.Image]:
    """RGB or RGBA frames in ``colours`` colours; with ``shown`` masks, only the pixels they keep count."""
    shown = shown or [None] * len(frames)
    width, height = frames[0].size
    scale = min(1.0, (_GIF_PALETTE_PIXELS / (len(frames) * width * height)) ** 0.5)
    cell = (max(1, round(width * scale)), max(1, round(height * scale)))
    palette = _palette([frame.resize(cell, Image.BOX) for frame in frames], colours)
    rgb = [frame.convert("RGB") for frame in frames]
    shared = [_dithered(frame, palette, keep) for frame, keep in zip(rgb, shown, strict=True)]
    errors = [_squared_error(*args) for args in zip(rgb, shared, shown, strict=True)]
    typical = float(np.median(errors))
    for index, (frame, error, keep) in enumerate(zip(rgb, errors, shown, strict=True)):
        if error > _OWN_PALETTE_ERROR * typical:
            own = _dithered(frame, _palette([frames[index]], colours), keep)
            if _squared_error(frame, own, keep) < error:
                shared[index] = own
    return shared


def _dithered(frame: Image.Image, palette: Image.Image, shown: np.ndarray | None) -> Image.Image:
    """``frame`` in ``palette``'s colours with Floyd–Steinberg dithering. The pixels ``shown`` leaves out are given
    the palette's first colour first: one it holds exactly leaves them no error of their own to pass on to their
    visible neighbours."""
    if shown is not None and not shown.all():
        pixels = np.asarray(frame).copy()
        pixels[~shown] = (palette.getpalette() or [0, 0, 0])[:3]
        frame = Image.fromarray(pixels, "RGB")
    return frame.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)


def _palette(frames: list[Image.Image], colours: int) -> Image.Image:
    """A palette of ``colours`` chosen from the frames' pixels, an RGBA frame's (premultiplied when scaled down)
    where it is at least half opaque; fully transparent frames give one from all their pixels."""
    pixels = np.concatenate([np.asarray(frame).reshape(-1, len(frame.getbands())) for frame in frames])
    if pixels.shape[1] == 4 and (pixels[:, 3] >= 128).any():
        pixels = pixels[pixels[:, 3] >= 128]
    return Image.fromarray(np.ascontiguousarray(pixels[None, :, :3])).quantize(
        colours, method=Image.Quantize.FASTOCTREE
    )


def _squared_error(frame: Image.Image, quantized: Image.Image, shown: np.ndarray | None = None) -> float:
    difference = np.asarray(frame, dtype=np.float32) - np.asarray(quantized.convert("RGB"), dtype=np.float32)
    if shown is not None and shown.any():
        difference = difference[shown]
    return float(np.square(difference).mean())


def frame_count(image: Image.Image) -> int:
    """The frames of an opened animation, an APNG's separate default image (which Pillow counts) left out."""
    return frame_total(image) - (1 if has_hidden_default_image(image) else 0)


def has_hidden_default_image(image: Image.Image) -> bool:
    """Whether an APNG's first image is its still default, shown by viewers without APNG, and not a frame."""
    if image.format != "PNG":
        return False
    image.seek(0)
    return bool(image.info.get("default_image")) and frame_total(image) > 1


def _check_memory(source: Path, frames: int, size: tuple[int, int]) -> None:
    held = frames * size[0] * size[1] * 3
    if held > MAX_HELD_BYTES:
        raise FaststyleError(
            f"{source} has {frames} frames of {size[1]}x{size[0]}: {held / 2**30:.1f} GiB to hold, over "
            f"{MAX_HELD_BYTES / 2**30:.0f} GiB; give a smaller --size, or write it as a video (--out NAME.mp4; "
            "faststyle.stylize_video), which is stylized a frame at a time"
        )


def _frames(
    source: Path, image: Image.Image, first: int, max_pixels: int
) -> Iterator[tuple[Image.Image, Image.Image | None, float]]:
    """Each frame from ``first`` on as shown (RGB, over white where transparent), its transparency (None where
    opaque) and its duration in milliseconds, on the first frame's canvas (a frame drawn past the canvas is cut at
    its edge, as FFmpeg does; Pillow would grow the canvas, and a frame that grows it past ``max_pixels`` is refused
    before it is read). A file cut short gives the frames before the cut, with a warning."""
    canvas: tuple[int, int] | None = None
    for index in range(first, frame_total(image)):
        try:
            image.seek(index)
            check_pixels(image, max_pixels, f"{source}'s frame {index + 1}")
            frame, alpha = to_rgb(image), alpha_channel(image)
        except PILLOW_READ_ERRORS as exc:
            if canvas is None:
                raise
            kept = index - first
            log.warning("%s: frame %d cannot be read (%s); keeping the %d before it", source, index + 1, exc, kept)
            return
        if canvas is None:
            canvas = frame.size
        elif frame.size != canvas:
            whole = Image.new("RGB", canvas, (255, 255, 255))
            whole.paste(frame, (0, 0))
            frame = whole
            if alpha is not None:
                opaque = Image.new("L", canvas, 0)
                opaque.paste(alpha, (0, 0))
                alpha = opaque
        duration = image.info.get("duration")
        yield frame, alpha, float(duration) if duration is not None else float(DEFAULT_DURATION_MS)


def _batches(items: Iterator[T], size: int) -> Iterator[list[T]]:
    pending: list[T] = []
    for item in items:
        pending.append(item)
        if len(pending) == size:
            yield pending
            pending = []
    if pending:
        yield pending
