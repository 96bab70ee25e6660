"""The edges of the library: files and PIL images in, RGB float tensors in [0,1] (N,C,H,W) out, and back."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import logging
import math
import numbers
import os
import struct
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageCms, UnidentifiedImageError
from torch import Tensor
from torch.nn import functional as F

from faststyle.errors import FaststyleError

log = logging.getLogger(__name__)

MAX_PIXELS = 180_000_000
# How far outside [0,1] an image tensor may stray and be clamped: a bicubic resize overshoots by up to ~0.25 on
# line art; the mistakes are far outside ([-1,1], ImageNet's normalisation at about [-2.1,2.6], or 0–255).
RANGE_SLACK = 0.5
# Bumped when the pixels read from a file change, so that what was computed from the old ones is not reused
# (2: embedded colour profiles are converted to sRGB; 3: greyscale and CMYK profiles too).
READER_VERSION = 3
_PIL_LIMIT = threading.Lock()


def to_rgb(image: Image.Image, convert_profile: bool = True) -> Image.Image:
    """Any PIL image as 8-bit sRGB: EXIF orientation applied; an embedded colour profile (Adobe RGB, Display P3, a
    printer's CMYK, a greyscale gamma, …) converted to sRGB; greyscale, palette, CMYK, 16-bit and alpha handled.
    ``convert_profile=False`` leaves the profile attached for a later ``to_rgb`` (after a crop, where converting costs
    far less than on the whole photo): the image is then RGB, or L or CMYK where its profile is for that mode."""
    image.load()  # Pillow turns a TIFF upright as it loads it (and drops its orientation): not turned twice
    profile = image.info.get("icc_profile")
    profile = bytes(profile) if isinstance(profile, bytes | bytearray) and profile else None
    image = _upright(image)
    keyed = _colour_key_alpha(image)
    if image.mode.startswith("I") or image.mode == "F":
        image = Image.fromarray(_to_8bit(image), "L")
    image = _on_white(image, keyed)
    mode = _PROFILE_MODES.get(_profile_space(profile), "RGB") if profile else "RGB"
    if mode == "L" and image.mode == "1":
        image = image.convert("L")
    image = image.convert(mode if image.mode == mode else "RGB")
    if not convert_profile:
        if profile:
            image.info["icc_profile"] = profile
        return image
    transform = _to_srgb(profile, image.mode) if profile else None
    if transform is None:
        rgb = image.convert("RGB")
        rgb.info.pop("icc_profile", None)  # taken as sRGB: a greyscale profile must not be read again on RGB pixels
        return rgb
    converted = ImageCms.applyTransform(image, transform)
    converted.info.pop("icc_profile", None)
    return converted


def _colour_key_alpha(image: Image.Image) -> Image.Image | None:
    """The transparency of an RGB or greyscale image whose clear pixels are those of one colour (a PNG's tRNS chunk:
    what optipng and oxipng make of a cut-out whose alpha is only 0 or 255, at any bit depth), as an L image; None
    for any other."""
    key = image.info.get("transparency")
    if key is None or image.mode not in ("RGB", "L", "1", "I;16", "I"):
        return None
    if image.mode == "RGB" and isinstance(key, tuple) and max(key) > 255:  # a 16-bit PNG's (see _key_as_read)
        key = tuple(value >> 8 for value in key)
    pixels = np.asarray(image.convert("L") if image.mode == "1" else image)
    clear = (pixels == np.asarray(key)).all(axis=-1) if pixels.ndim == 3 else pixels == key
    return Image.fromarray(np.where(clear, 0, 255).astype(np.uint8), "L") if clear.any() else None


def _key_as_read(image: Image.Image) -> None:
    """A PNG's colour key in the values of the pixels Pillow gives, which it leaves in the file's: Pillow reads a
    16-bit RGB file's samples as their high bytes (so a pixel within 1/256 of the key is clear) and stretches 2- and
    4-bit greyscale to 0–255. Done as the file is opened, while its raw mode still says how it is stored."""
    key = image.info.get("transparency")
    rawmode = image.tile[0][3] if image.format == "PNG" and image.tile else None
    if rawmode == "RGB;16B" and isinstance(key, tuple):
        image.info["transparency"] = tuple(value >> 8 for value in key)
    elif rawmode in ("L;2", "L;4") and isinstance(key, int):
        image.info["transparency"] = key * 255 // (2 ** int(rawmode[-1]) - 1)


def _on_white(image: Image.Image, keyed: Image.Image | None = None) -> Image.Image:
    """Transparency composited over white: greyscale stays greyscale (for its profile), the rest becomes RGB.
    ``keyed``: the transparency of a colour-keyed image (``_colour_key_alpha``)."""
    if keyed is not None:
        mode = "L" if image.mode == "L" else "RGB"
        background = Image.new(mode, image.size, (255,) * len(mode))
        background.paste(image.convert(mode), mask=keyed)
        background.info = {k: v for k, v in image.info.items() if k != "transparency"}
        return background
    if image.mode == "LA":
        background = Image.new("L", image.size, 255)
        background.paste(image.getchannel("L"), mask=image.getchannel("A"))
        return background
    if image.mode in ("RGBA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image


# The PIL mode a profile's colour space (the ICC header's data colour space) applies to.
_PROFILE_MODES = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}


def _profile_space(profile: bytes) -> str:
    return profile[16:20].decode("ascii", "replace").strip()


@functools.lru_cache(maxsize=16)
def _to_srgb(profile: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The transform from an embedded profile to sRGB for an image of ``mode``; None where it would move no colour
    by more than one level (an sRGB profile), does not fit the image, or cannot be read (the pixels are then taken
    as sRGB, or as plain CMYK)."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        space = source.profile.xcolor_space.strip()
        if _PROFILE_MODES.get(space) != mode:
            log.warning("ignoring a %s colour profile on a %s image; the pixels are taken as sRGB", space, mode)
            return None
        transform = ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        log.warning("ignoring an unreadable colour profile (%s); the pixels are taken as sRGB", exc)
        return None
    if mode == "CMYK":
        return transform
    levels = np.linspace(0, 255, 9 if mode == "RGB" else 256).round().astype(np.uint8)
    if mode == "RGB":
        grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(1, -1, 3)
    else:
        grid = levels.reshape(1, -1)
    moved = np.asarray(ImageCms.applyTransform(Image.fromarray(grid, mode), transform), dtype=np.int16)
    plain = np.asarray(Image.fromarray(grid, mode).convert("RGB"), dtype=np.int16)
    return transform if np.abs(moved - plain).max() > 1 else None


_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image, warn: bool = True) -> Image.Transpose | None:
    """The turn the image's EXIF orientation asks for; unreadable EXIF is ignored."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, SyntaxError, TypeError, struct.error) as exc:
        if warn:
            log.warning("ignoring unreadable EXIF data (%s)", exc)
        return None
    return _ORIENTATIONS.get(orientation) if isinstance(orientation, int) else None


def alpha_channel(image: Image.Image) -> Image.Image | None:
    """The image's transparency as an L image, turned as its EXIF orientation says (as ``to_rgb`` turns the
    pixels); None where the image is opaque."""
    image.load()  # (a TIFF's orientation is applied, and dropped, as it loads)
    if image.mode in ("RGBA", "LA", "PA"):
        alpha = image.getchannel("A")
    elif image.mode == "P" and "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
    elif (keyed := _colour_key_alpha(image)) is not None:
        alpha = keyed
    else:
        return None
    if alpha.getextrema()[0] == 255:
        return None
    method = _orientation(image, warn=False)
    return alpha.transpose(method) if method is not None else alpha


def with_alpha(image: Image.Image, alpha: Image.Image | None) -> Image.Image:
    """``image`` (RGB, a painting of the picture over white, as ``to_rgb`` gives it) with ``alpha`` as its
    transparency, scaled to its size; as it is without one. Where partly clear, the white is taken out of the colours
    again: shown over white the result is the painting, and the picture itself (a strength-0 pass) comes back as it
    was, without pale fringes on its soft edges over other backgrounds."""
    if alpha is None:
        return image
    alpha = alpha if alpha.size == image.size else alpha.resize(image.size, Image.BILINEAR)
    opacity = np.asarray(alpha, dtype=np.float32)[..., None] / 255
    colours = np.asarray(image.convert("RGB"), dtype=np.float32)
    unmixed = (colours - (1 - opacity) * 255) / np.maximum(opacity, 1 / 255)
    colours = np.where(opacity > 0, unmixed, colours).round().clip(0, 255).astype(np.uint8)
    result = Image.fromarray(colours, "RGB")
    result.putalpha(alpha)
    return result


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says. Unlike ``ImageOps.exif_transpose`` this does not write the
    EXIF block back, which fails on values cameras do write (a zero denominator)."""
    method = _orientation(image)
    if method is None:
        return image
    upright = image.transpose(method)
    for key in ("exif", "xmp", "XML:com.adobe.xmp", "Raw profile type exif"):  # turned once, never again
        upright.info.pop(key, None)
    return upright


def _to_8bit(image: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit integer or float greyscale image as 8 bits. 16-bit data (``I;16*``, and PNG's 16-bit
    greyscale, which older Pillow opens as ``I``) spans 0–65535; floats are taken as [0,1] when they fit in it."""
    array = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG"):
        peak = 65535.0
    elif image.mode == "F":
        peak = 1.0 if array.size == 0 or array.max() <= 1.0 else 255.0
    else:
        peak = 65535.0 if array.size and array.max() > 255 else 255.0
    return (array / peak * 255.0).round().clip(0, 255).astype(np.uint8)


def open_image(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS, convert_profile: bool = True) -> Image.Image:
    """Read an image file as RGB (see ``to_rgb``), or raise FaststyleError saying what is wrong with it."""
    return _read(path, max_pixels, convert_profile, alpha=False)[0]


def open_with_alpha(
    path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS
) -> tuple[Image.Image, Image.Image | None]:
    """``open_image``'s RGB (over white where transparent), and the file's transparency (see ``alpha_channel``)
    to put back on a result with ``with_alpha``."""
    return _read(path, max_pixels, True, alpha=True)


# what Pillow raises on a file cut short, by where the cut falls (struct.error: in a GIF's frame header)
# TypeError: a multi-page TIFF cut short ("Missing dimensions", counting its pages)
PILLOW_READ_ERRORS = (IndexError, EOFError, OSError, ValueError, SyntaxError, struct.error, TypeError)


def frame_total(image: Image.Image) -> int:
    """The frames of an opened image (Pillow's ``n_frames``); where Pillow cannot count them (a GIF cut short at the
    edge of a frame raises IndexError), the frames that can be reached, the image left at its first."""
    try:
        return getattr(image, "n_frames", 1)
    except PILLOW_READ_ERRORS:
        pass
    count = 0
    try:
        while True:
            image.seek(count)
            count += 1
    except PILLOW_READ_ERRORS:
        pass
    image.seek(0)
    return max(count, 1)


def _read(
    path: str | os.PathLike[str], max_pixels: int, convert_profile: bool, alpha: bool
) -> tuple[Image.Image, Image.Image | None]:
    with opened(path, max_pixels) as image:
        frames = frame_total(image)
        if frames > 1 and image.format in ("GIF", "PNG", "WEBP"):
            log.warning(
                "%s is an animation of %d frames; using the first (stylize_animation, or faststyle stylize into "
                ".gif, .webp or .png, keeps them all)",
                path,
                frames,
            )
        elif frames > 1 and image.format != "MPO":  # a camera's MPO holds its photo and a preview
            log.warning("%s has %d frames or pages; using the first", path, frames)
        image.load()
        return to_rgb(image, convert_profile), alpha_channel(image) if alpha else None


class PixelLimitError(FaststyleError):
    """An image with more pixels than the limit it is read under."""


def check_pixels(image: Image.Image, max_pixels: int, what: str | os.PathLike[str]) -> None:
    """Refuse an opened image, or the frame it is at, of more than ``max_pixels`` before its pixels are read."""
    if image.width * image.height > max_pixels:
        raise PixelLimitError(
            f"{what} has {image.width}x{image.height} pixels, over the limit of {max_pixels:,}; "
            "downscale it first or raise the limit (stylize --max-pixels; max_pixels in Python)"
        )


@contextlib.contextmanager
def opened(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """An image file opened by Pillow (its header read) within the pixel limit, checked on its first frame: the
    caller checks each later one it reads (``check_pixels``). What goes wrong, here or while the caller reads it, is
    a FaststyleError saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        reason = "is a folder, not an image file" if path.is_dir() else "does not exist"
        raise FaststyleError(f"image {path} {reason}")
    try:
        with open_within(path) as image:
            check_pixels(image, max_pixels, path)
            _key_as_read(image)
            yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PixelLimitError(
            f"{path} is larger than the pixel limit of {max_pixels:,} (decompression bomb?)"
        ) from None
    except (UnidentifiedImageError, *PILLOW_READ_ERRORS) as exc:
        raise FaststyleError(f"cannot read {path} as an image ({exc}); is it a whole JPEG, PNG, WebP … file?") from None


def open_within(path: Path) -> Image.Image:
    """``Image.open`` (which reads the header only) without Pillow's global pixel limit, which warns over it and
    refuses at twice it without the image's size: ``opened`` checks ours, with a message that gives it. The global
    is set and put back under a lock, so threads opening images at once (the demo, the photo cache) never leave it
    changed."""
    with _PIL_LIMIT:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def unit_range(images: Tensor, what: str = "image") -> Tensor:
    """``images`` as float in [0,1]: uint8 is divided by 255, and a float tensor is checked and clamped. Values
    outside [0,1] by more than ``RANGE_SLACK``, NaN or infinities are refused, naming the likely cause (a
    normalisation left on, or 0–255), instead of giving white, black or NaN pictures."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise FaststyleError(f"{what}: image tensors are float in [0,1] or uint8, not {images.dtype}")
    if images.numel() == 0:
        return images
    low, high = torch.stack(torch.aminmax(images.detach())).tolist()  # one transfer from the device
    if not (math.isfinite(low) and math.isfinite(high)):
        raise FaststyleError(f"{what}: the tensor holds NaN or infinite values")
    if low < -RANGE_SLACK:
        hint = "it looks normalised: undo that first ((x + 1) / 2 for [-1,1], x · std + mean for ImageNet's)"
    elif high > 2:  # 0–255 (a picture just over 1, divided by 255, would be black)
        hint = "it looks like 0–255: divide it by 255 (or pass a uint8 tensor)"
    elif high > 1 + RANGE_SLACK:
        hint = "clamp it to [0,1], or find what brightened it past 1"
    else:
        return images.clamp(0, 1) if low < 0 or high > 1 else images
    raise FaststyleError(f"{what}: pixel values run from {low:.4g} to {high:.4g}, not within [0,1]; {hint}")


def as_mask(mask: Tensor | Image.Image, what: str = "mask") -> Tensor:
    """A mask or per-pixel weight map as (1,1,H,W) float in [0,1]: a tensor (H,W), (1,H,W) or (1,1,H,W) as it is,
    an RGB tensor (1,3,H,W) or (3,H,W) by its mean over R, G and B, or a PIL image as ``load_mask`` reads its file
    (16-bit and float greyscale included)."""
    if isinstance(mask, Image.Image):
        alpha = alpha_channel(mask)
        mask = pil_to_tensor(alpha if alpha is not None else mask)
    if not isinstance(mask, Tensor):
        raise FaststyleError(f"{what} must be a tensor (1,1,H,W) in [0,1] or a PIL image, not {type(mask).__name__}")
    while mask.ndim < 4:
        mask = mask.unsqueeze(0)
    if mask.ndim != 4 or mask.shape[0] != 1 or mask.shape[1] not in (1, 3):
        raise FaststyleError(f"{what}: expected one mask of shape (1,1,H,W) or an RGB image, got {tuple(mask.shape)}")
    return unit_range(mask.detach(), what).float().mean(1, keepdim=True)


def load_mask(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> Tensor:
    """A mask file as (1,1,H,W) in [0,1]: its transparency where it has some (a cut-out's subject is 1), else its
    grey level (white is 1)."""
    image, alpha = open_with_alpha(path, max_pixels=max_pixels)
    return as_mask(alpha if alpha is not None else image, f"mask {Path(path).name}")


def pil_to_tensor(image: Image.Image) -> Tensor:
    """PIL image -> float tensor (1,3,H,W) in [0,1]."""
    array = np.asarray(to_rgb(image), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def tensor_to_pil(image: Tensor) -> Image.Image:
    """Float tensor in [0,1] or uint8 tensor, (1,3,H,W) or (3,H,W) -> PIL RGB image."""
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3:
        raise FaststyleError(f"expected one RGB image tensor shaped (3,H,W) or (1,3,H,W), got {tuple(image.shape)}")
    image = unit_range(image.detach())
    array = image.float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def load_image(path: str | os.PathLike[str], size: int | None = None, max_pixels: int = MAX_PIXELS) -> Tensor:
    """An image file as a (1,3,H,W) tensor in [0,1]; ``size`` resizes the longer side to that many pixels."""
    tensor = pil_to_tensor(open_image(path, max_pixels=max_pixels))
    return resize_long_side(tensor, size) if size is not None else tensor


def check_long_side(size: int | None) -> None:
    """Refuse a long-side ``size`` that is not a positive whole number of pixels (None means as it is)."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1):
        raise FaststyleError(f"size must be a positive whole number of pixels, not {size!r}")


def long_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) scaled so that the longer side is ``size`` pixels."""
    check_long_side(size)
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def check_resized_pixels(height: int, width: int, size: int | None, max_pixels: int, what: str = "the image") -> None:
    """Refuse a ``size`` (long side) that would scale an image of (height, width) past ``max_pixels``, before the
    scaled image is made."""
    if size is None:
        return
    new_height, new_width = long_side_size(height, width, size)
    if new_height * new_width > max_pixels:
        raise PixelLimitError(
            f"{what} at a long side of {size} would have {new_width}x{new_height} pixels, over the limit of "
            f"{max_pixels:,}; give a smaller --size (size=) or raise the limit (--max-pixels; max_pixels in Python)"
        )


def check_frames_job(source: Path, target: Path, batch: object, size: object, what: str) -> None:
    """The checks before stylizing the frames of ``source`` (a video or an animation) into ``target``."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise FaststyleError(f"batch must be a whole number of at least 1, not {batch!r}")
    check_long_side(size)  # type: ignore[arg-type]
    if target.is_dir():
        raise FaststyleError(f"{target} is a folder; name the {what} file to write")
    if target.exists() and target.resolve() == source.resolve():
        raise FaststyleError(f"{target} is the {what} being stylized; name another file so that it is kept")
    blocking = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise FaststyleError(f"cannot write {target}: {blocking} is a file, not a folder")


def resize_long_side(images: Tensor, size: int) -> Tensor:
    h, w = images.shape[-2:]
    new = long_side_size(h, w, size)
    if new == (h, w):
        return images
    shrink = new[0] < h or new[1] < w
    return F.interpolate(images, size=new, mode="bilinear", antialias=shrink, align_corners=False).clamp(0, 1)


@functools.cache
def new_file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask (``mkstemp`` always gives 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def check_writable(folder: str | os.PathLike[str], what: str) -> None:
    """Check, before any long work, that files can be written in ``folder``. Folders made for the check are
    removed again, so that a command refused later leaves nothing behind; the writers make them."""
    folder = Path(os.path.abspath(folder))  # '..' resolved, so that what is made here can be removed
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise FaststyleError(f"cannot write {what} in {folder} ({reason}); pick a folder you can write to") from None
    finally:
        for path in made:
            try:
                path.rmdir()
            except OSError:
                break


def durable_replace(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """``os.replace(tmp, path)`` with ``tmp``'s data on the disk first and the rename after it, so that a power cut
    leaves the old file or the new one, never an empty one (as ext4, XFS and btrfs may without the syncs)."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # folders cannot be opened on Windows, nor synced on some file systems
        folder = os.open(Path(path).parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, new_file_mode())
        durable_replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_image_file_name(path: str | os.PathLike[str]) -> bool:
    """Whether ``path``'s suffix is one an image can be written to (.png, .tiff, .bmp, …)."""
    return _writable_format(Path(path).suffix.lower()) is not None


def image_format(path: str | os.PathLike[str]) -> str:
    """The format Pillow writes for ``path``'s suffix; an error for a suffix it cannot write."""
    fmt = _writable_format(Path(path).suffix.lower())
    if fmt is None:
        raise FaststyleError(f"cannot tell the image format from {Path(path).name!r}; use .png, .jpg or .webp")
    return fmt


@functools.cache
def _writable_format(suffix: str) -> str | None:
    fmt = Image.registered_extensions().get(suffix)
    try:
        Image.new("RGB", (1, 1)).save(io.BytesIO(), fmt)  # some formats have only a stub writer (.h5, .grib)
    except (KeyError, OSError, ValueError):
        return None
    return fmt


# The longest side each format holds (JPEG as libjpeg writes it); the others hold far more than MAX_PIXELS allows.
MAX_SIDES = {"WEBP": 16383, "JPEG": 65500, "GIF": 65535}


def check_format_size(path: str | os.PathLike[str], width: int, height: int) -> None:
    """Refuse to write a ``width`` x ``height`` image to ``path`` in a format that cannot hold its sides (a wide
    panorama as WebP), before the work that makes it rather than with the encoder's error after it."""
    fmt = _writable_format(Path(path).suffix.lower())
    limit = MAX_SIDES.get(fmt or "")
    if limit is not None and max(width, height) > limit:
        raise FaststyleError(
            f"{Path(path).name}: {fmt} holds at most {limit:,} pixels a side, not {width}x{height}; write .png or "
            ".tif, or give a smaller --size (size=)"
        )


def save_image(image: Tensor | Image.Image, path: str | os.PathLike[str], quality: int = 95) -> Path:
    """Write an image atomically (temporary file, then rename); the format follows the suffix."""
    path = Path(path)
    fmt = image_format(path)
    pil = image if isinstance(image, Image.Image) else tensor_to_pil(image)
    check_format_size(path, pil.width, pil.height)
    if pil.mode == "RGBA" and fmt not in ("PNG", "WEBP", "TIFF", "GIF"):  # a format without transparency
        pil = Image.alpha_composite(Image.new("RGBA", pil.size, (255, 255, 255, 255)), pil).convert("RGB")
    if fmt == "GIF":  # as an animation's frame: one dithered palette, clear where less than half opaque
        from faststyle.animation import encode

        atomic_write_bytes(path, encode([pil], [0.0], 1, fmt))
        return path
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    pil.save(buffer, format=fmt, **options)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def thumbnail_data_uri(paths: Sequence[str | os.PathLike[str]], height: int = 192) -> str:
    """The style images side by side, ``height`` px high, as a JPEG data URI (the demo's gallery shows it)."""
    images = []
    for path in paths:
        image = to_rgb(open_image(path))
        images.append(image.resize((max(1, round(image.width * height / image.height)), height), Image.LANCZOS))
    sheet = Image.new("RGB", (sum(i.width for i in images), height))
    x = 0
    for image in images:
        sheet.paste(image, (x, 0))
        x += image.width
    sheet.thumbnail((4 * height, height))
    buffer = io.BytesIO()
    sheet.save(buffer, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
