"""Reading images: embedded colour profiles (RGB, greyscale, CMYK), and Pillow's pixel limit under threads."""

from __future__ import annotations

import io
import logging
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED
from PIL import Image, ImageCms, ImageOps

from faststyle.errors import FaststyleError
from faststyle.images import (
    as_mask,
    load_image,
    load_mask,
    open_image,
    open_with_alpha,
    pil_to_tensor,
    save_image,
    to_rgb,
)

ADOBE_PAINTING = "data/styles/gauguin_three_tahitian_women_1896.jpg"  # carries an Adobe RGB (1998) profile
# Adobe RGB (1998) -> XYZ and XYZ -> linear sRGB, both D65, from the two colour spaces' specifications.
ADOBE_TO_XYZ = np.array(
    [[0.5767309, 0.1855540, 0.1881852], [0.2973769, 0.6273491, 0.0752741], [0.0270343, 0.0706872, 0.9911085]]
)
XYZ_TO_SRGB = np.array(
    [[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560], [0.0556434, -0.2040259, 1.0572252]]
)


def _adobe_to_srgb(values: np.ndarray) -> np.ndarray:
    linear = np.clip((values / 255.0) ** (563 / 256) @ (XYZ_TO_SRGB @ ADOBE_TO_XYZ).T, 0, 1)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055) * 255


def _saturation(image: Image.Image) -> float:
    rgb = np.asarray(image, dtype=np.float64) / 255
    top = rgb.max(-1)
    return float(((top - rgb.min(-1)) / np.maximum(top, 1e-6)).mean())


def test_an_adobe_rgb_image_is_read_as_srgb(shared: Path, tmp_path: Path) -> None:
    with Image.open(shared / ADOBE_PAINTING) as painting:
        profile = painting.info["icc_profile"]
    values = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    Image.fromarray(values).save(tmp_path / "adobe.png", icc_profile=profile)
    read = np.asarray(open_image(tmp_path / "adobe.png"), dtype=np.float64)
    assert np.abs(read - _adobe_to_srgb(values.astype(np.float64))).max() <= 1.0
    assert np.abs(read - values).max() > 20  # taken as sRGB, as before, the colours were far off


def test_the_adobe_rgb_painting_keeps_its_saturation(shared: Path) -> None:
    with Image.open(shared / ADOBE_PAINTING) as painting:
        as_if_srgb = painting.convert("RGB")
    read = open_image(shared / ADOBE_PAINTING)
    assert "icc_profile" not in read.info  # converted once: reading it again changes nothing
    assert _saturation(read) > _saturation(as_if_srgb) + 0.05


def test_srgb_profiles_leave_the_pixels_alone(shared: Path) -> None:
    path = shared / "data/content/amber.jpg"  # carries an sRGB profile
    with Image.open(path) as photo:
        assert photo.info.get("icc_profile")
        raw = np.asarray(photo.convert("RGB"))
    np.testing.assert_array_equal(np.asarray(open_image(path)), raw)


def test_a_damaged_profile_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    values = np.random.default_rng(1).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    Image.fromarray(values).save(tmp_path / "odd.png", icc_profile=b"not a colour profile at all" * 8)
    with caplog.at_level(logging.WARNING, logger="faststyle.images"):
        read = open_image(tmp_path / "odd.png")
    np.testing.assert_array_equal(np.asarray(read), values)
    assert "colour profile" in caplog.text


# Profiles from Debian's libgs-common (Ghostscript's colour profiles), which .ci/run installs.
GHOSTSCRIPT_ICC = Path("/usr/share/color/icc/ghostscript")


def _ghostscript_profile(name: str) -> bytes:
    path = GHOSTSCRIPT_ICC / name
    if not path.is_file():
        pytest.skip(f"{path} is missing: apt-get install libgs-common (as .ci/run does)")
    return path.read_bytes()


def _srgb_encode(linear: np.ndarray) -> np.ndarray:
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055) * 255


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_greyscale_gamma_profile_is_applied(tmp_path: Path, suffix: str) -> None:
    profile = _ghostscript_profile("sgray.icc")
    assert profile[16:20] == b"GRAY" and profile.find(b"kTRC") > 0
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(ramp, "L").save(tmp_path / f"grey{suffix}", icc_profile=profile, quality=100)
    with Image.open(tmp_path / f"grey{suffix}") as stored:
        stored_values = np.asarray(stored, dtype=np.float64)
    read = np.asarray(open_image(tmp_path / f"grey{suffix}"), dtype=np.float64)
    expected = _srgb_encode((stored_values / 255) ** 1.8)  # sgray.icc's kTRC is a pure gamma of 1.8 (0x01CD/256)
    assert (read == read[..., :1]).all()  # grey stays grey
    assert np.abs(read[..., 0] - expected).max() <= 1.5
    assert np.abs(read[..., 0] - stored_values).max() > 15  # as plain sRGB grey, the mid-tones were far too dark


def test_a_greyscale_profile_applies_under_transparency_and_on_a_later_crop(tmp_path: Path) -> None:
    profile = _ghostscript_profile("sgray.icc")
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(ramp, "L").save(tmp_path / "grey.png", icc_profile=profile)
    Image.fromarray(np.stack([ramp, np.full_like(ramp, 255)], -1), "LA").save(tmp_path / "la.png", icc_profile=profile)
    whole = np.asarray(open_image(tmp_path / "grey.png"))
    np.testing.assert_array_equal(np.asarray(open_image(tmp_path / "la.png")), whole)
    with Image.open(tmp_path / "grey.png") as photo:
        deferred = to_rgb(photo, convert_profile=False)
    assert deferred.mode == "L" and deferred.info["icc_profile"] == profile
    np.testing.assert_array_equal(np.asarray(to_rgb(deferred.crop((3, 5, 11, 13)))), whole[5:13, 3:11])


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_a_cmyk_file_with_a_press_profile_reads_back_as_the_photo(shared: Path, tmp_path: Path, suffix: str) -> None:
    profile = _ghostscript_profile("default_cmyk.icc")  # Artifex's SWOP press profile, with lookup tables
    assert profile[16:20] == b"CMYK"
    with Image.open(shared / "data/content/chicago.jpg") as photo:
        rgb = photo.convert("RGB").reduce(4)
    press = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    separation = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), press, "RGB", "CMYK")
    ImageCms.applyTransform(rgb, separation).save(tmp_path / f"print{suffix}", icc_profile=profile, quality=95)
    with Image.open(tmp_path / f"print{suffix}") as printed:
        assert printed.mode == "CMYK"
        naive = np.abs(np.asarray(printed.convert("RGB"), dtype=np.float64) - np.asarray(rgb)).mean()
        deferred = to_rgb(printed, convert_profile=False)
    read = np.asarray(open_image(tmp_path / f"print{suffix}"), dtype=np.float64)
    error = np.abs(read - np.asarray(rgb, dtype=np.float64))
    assert error.mean() < 6 and np.percentile(error, 99) < 20  # the press's gamut costs a little
    assert naive > 3 * error.mean()  # Pillow's CMYK formula alone (measured: 17 levels against 4)
    assert deferred.mode == "CMYK"
    np.testing.assert_array_equal(np.asarray(to_rgb(deferred.crop((10, 20, 74, 84)))), read[20:84, 10:74])


def test_a_greyscale_profile_close_to_srgb_is_dropped_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    profile = _ghostscript_profile("default_gray.icc")  # a curve within one level of sRGB's
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(ramp, "L").save(tmp_path / "grey.png", icc_profile=profile)
    with caplog.at_level(logging.WARNING, logger="faststyle.images"):
        image = load_image(tmp_path / "grey.png")  # reads the file, then converts the image once more
    assert caplog.text == ""
    np.testing.assert_array_equal(image[0, 0].mul(255).round().numpy(), ramp)


def test_a_profile_for_another_kind_of_image_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    values = np.random.default_rng(2).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    Image.fromarray(values).save(tmp_path / "rgb.png", icc_profile=_ghostscript_profile("sgray.icc"))
    with caplog.at_level(logging.WARNING, logger="faststyle.images"):
        read = open_image(tmp_path / "rgb.png")
    np.testing.assert_array_equal(np.asarray(read), values)
    assert "ignoring a GRAY colour profile on a RGB image" in caplog.text


def test_threads_opening_images_leave_pillows_pixel_limit_as_it_was(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / "small.png")
    before = Image.MAX_IMAGE_PIXELS
    errors: list[BaseException] = []

    def work(limit: int) -> None:
        try:
            for _ in range(300):
                open_image(tmp_path / "small.png", max_pixels=limit)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(1_000 + i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = Image.MAX_IMAGE_PIXELS
    assert errors == []
    assert after == before


@pytest.mark.parametrize("limit", [1_600, 800])  # 2,400 pixels: 1.5 and 3 times the limit
def test_an_image_over_the_limit_is_named_with_its_size_and_no_warning(tmp_path: Path, limit: int) -> None:
    """Pillow's own limit warned between once and twice the limit, and refused over twice without the size."""
    import warnings

    Image.new("RGB", (60, 40)).save(tmp_path / "large.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(FaststyleError, match=rf"large.png has 60x40 pixels, over the limit of {limit:,}; down"):
            open_image(tmp_path / "large.png", max_pixels=limit)
        assert open_image(tmp_path / "large.png", max_pixels=2400).size == (60, 40)


def _exif_with_a_zero_denominator() -> bytes:
    """EXIF as some cameras write it: Orientation 6, and an ExposureBiasValue of -1/0 that Pillow cannot write back."""
    ifd0 = struct.pack("<H", 2) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack("<HHII", 0x8769, 4, 1, 38)
    exif_ifd = struct.pack("<H", 1) + struct.pack("<HHII", 0x9204, 10, 1, 56) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd0 + struct.pack("<I", 0) + exif_ifd + struct.pack("<ii", -1, 0)
    return b"Exif\x00\x00" + tiff


def test_a_photo_with_exif_pillow_cannot_rewrite_is_still_turned_upright(tmp_path: Path) -> None:
    values = np.zeros((24, 32, 3), dtype=np.uint8)
    values[:, :16] = 255  # the left half white
    Image.fromarray(values).save(tmp_path / "camera.jpg", exif=_exif_with_a_zero_denominator())
    with Image.open(tmp_path / "camera.jpg") as photo, pytest.raises(struct.error):
        ImageOps.exif_transpose(photo)  # what reading it used to go through
    upright = np.asarray(open_image(tmp_path / "camera.jpg"), dtype=np.float64)
    assert upright.shape == (32, 24, 3)  # Orientation 6: turned a quarter clockwise, the left half now on top
    assert pil_to_tensor(open_image(tmp_path / "camera.jpg")).shape == (1, 3, 32, 24)  # and not turned again
    assert upright[:12].mean() > 250 and upright[-12:].mean() < 5


def test_a_folder_named_like_an_image_and_an_animation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "holiday.jpg").mkdir()
    with pytest.raises(FaststyleError, match="holiday.jpg is a folder, not an image file"):
        open_image(tmp_path / "holiday.jpg")
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "blink.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with caplog.at_level(logging.WARNING, logger="faststyle.images"):
        first = np.asarray(open_image(tmp_path / "blink.gif"))
    assert "blink.gif is an animation of 2 frames; using the first (stylize_animation, or faststyle" in caplog.text
    assert first[..., 0].min() > 200 and first[..., 1].max() < 50


def test_check_writable_leaves_no_folder_it_made(tmp_path: Path) -> None:
    from faststyle.images import check_writable

    check_writable(tmp_path / "new" / "deeper", "the results")
    check_writable(tmp_path / "a" / "b" / ".." / "c", "the results")  # 'a/b/..' is a/, made and removed once
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    check_writable(tmp_path / "kept", "the results")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    (tmp_path / "a-file").write_text("")
    with pytest.raises(FaststyleError, match="cannot write the results in .*a-file/x"):
        check_writable(tmp_path / "a-file" / "x", "the results")


@pytest.mark.parametrize("mode", ["RGB", "L", "I;16"])
def test_a_colour_keyed_png_is_transparent(tmp_path: Path, mode: str) -> None:
    """A cut-out whose alpha is only 0 or 255, as optipng and oxipng write it: an RGB or greyscale PNG whose clear
    pixels are one colour (tRNS). Read over white, with its transparency, like the RGBA file it was."""
    subject = np.zeros((40, 60), dtype=np.uint16)
    subject[10:30, 15:45] = 150
    scale, key = (257, 0) if mode == "I;16" else (1, 0)
    pixels = subject * scale if mode == "I;16" else subject.astype(np.uint8)
    image = Image.fromarray(np.stack([pixels] * 3, -1) if mode == "RGB" else pixels)
    image.save(tmp_path / "keyed.png", transparency=(key,) * 3 if mode == "RGB" else key)
    with Image.open(tmp_path / "keyed.png") as opened:
        assert opened.mode == mode and "transparency" in opened.info
    picture, alpha = open_with_alpha(tmp_path / "keyed.png")
    assert alpha is not None and np.array_equal(np.asarray(alpha) > 0, subject > 0)
    rgb = np.asarray(picture)
    assert (rgb[subject == 0] == 255).all()  # over white, not the key's black
    assert (np.abs(rgb[subject > 0].astype(int) - 150) <= 1).all()
    assert np.array_equal(np.asarray(open_image(tmp_path / "keyed.png")), rgb)
    mask = load_mask(tmp_path / "keyed.png")[0, 0].numpy()  # a mask drawn this way: its transparency
    assert np.array_equal(mask > 0.5, subject > 0)


def test_a_still_gif_is_clear_where_the_picture_is_less_than_half_opaque(tmp_path: Path) -> None:
    """As an animation's frames are: the soft edge of a cut-out (alpha 1–127) was written opaque, a whitish halo."""
    photo = open_image(SHARED / "data/content/chicago.jpg").resize((64, 40))
    rgba = photo.copy()
    columns = np.array([[0] * 16 + [60] * 16 + [200] * 16 + [255] * 16], np.uint8)
    rgba.putalpha(Image.fromarray(np.repeat(columns, 40, axis=0)))
    with Image.open(save_image(rgba, tmp_path / "cut_out.gif")) as gif:
        alpha = np.asarray(gif.convert("RGBA").getchannel("A"))
        assert gif.format == "GIF" and getattr(gif, "n_frames", 1) == 1
    assert [int(alpha[:, i].min()) for i in (0, 16, 32, 48)] == [0, 0, 255, 255]
    assert [int(alpha[:, i].max()) for i in (0, 16, 32, 48)] == [0, 0, 255, 255]
    with Image.open(save_image(photo, tmp_path / "opaque.gif")) as gif:  # 256 dithered colours, near the photo
        shown = np.asarray(gif.convert("RGB"), dtype=np.float32)
    assert np.abs(shown - np.asarray(photo, dtype=np.float32)).mean() < 8


def _png(path: Path, depth: int, colour: int, rows: list[bytes], key: bytes) -> Path:
    """A PNG written by hand, as Pillow writes none: ``depth`` bits a sample, colour type ``colour`` (0 grey,
    2 RGB), the unfiltered ``rows`` and the tRNS chunk ``key``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    width = len(rows[0]) * 8 // (depth * (3 if colour == 2 else 1))
    header = struct.pack(">IIBBBBB", width, len(rows), depth, colour, 0, 0, 0)
    data = zlib.compress(b"".join(b"\0" + row for row in rows))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"tRNS", key) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize("key", [(0xFFFF, 0, 0), (0, 0, 0x00FF)])
def test_a_colour_keyed_16_bit_rgb_png_is_transparent(tmp_path: Path, key: tuple[int, int, int]) -> None:
    """Pillow reads a 16-bit RGB PNG's samples as their high bytes but gives its colour key in 16 bits: the key's
    pixels are clear all the same, and only they (pure blue, (0,0,0xFFFF), is not the near-black key (0,0,0x00FF))."""
    pixels = np.zeros((6, 8, 3), ">u2")
    pixels[:, :4] = key  # the left half is clear
    pixels[:, 4:6] = (0x8080, 0x4040, 0x2020)
    pixels[:, 6:] = (0, 0, 0xFFFF)
    path = _png(tmp_path / "key16.png", 16, 2, [row.tobytes() for row in pixels], struct.pack(">HHH", *key))
    clear = np.zeros((6, 8), bool)
    clear[:, :4] = True
    picture, alpha = open_with_alpha(path)
    assert alpha is not None and np.array_equal(np.asarray(alpha) == 0, clear)
    rgb = np.asarray(picture)
    assert (rgb[clear] == 255).all() and rgb[0, 4].tolist() == [128, 64, 32] and rgb[0, 6].tolist() == [0, 0, 255]
    if max(key) > 255:  # an image opened without faststyle: the key says it is a 16-bit one
        with Image.open(path) as image:
            assert np.array_equal(np.asarray(to_rgb(image)), rgb)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_a_colour_keyed_greyscale_png_of_few_bits_is_transparent(tmp_path: Path, depth: int) -> None:
    """Pillow stretches 1-, 2- and 4-bit greyscale to 0–255; the colour key (white) is clear all the same."""
    white = 2**depth - 1
    levels = [white, white, 0, 0, white // 2 if depth > 1 else 0, 0, 0, 0]  # 8 pixels a row
    bits = "".join(format(level, f"0{depth}b") for level in levels)
    row = int(bits, 2).to_bytes(depth, "big")
    path = _png(tmp_path / f"grey{depth}.png", depth, 0, [row, row], struct.pack(">H", white))
    picture, alpha = open_with_alpha(path)
    assert alpha is not None and (np.asarray(alpha) == 0).tolist() == [[True] * 2 + [False] * 6] * 2
    assert np.asarray(picture)[0, :3, 0].tolist() == [255, 255, 0]  # over white; black is not the key


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_a_high_bit_depth_pil_mask_reads_as_its_file(tmp_path: Path, mode: str) -> None:
    """A PIL mask in 16 bits (a 16-bit greyscale PNG as Pillow opens it), 32-bit integers or floats in [0,1] reads
    as ``load_mask`` reads its file: a ramp from black to white, not nearly all white or all black."""
    ramp = np.linspace(0, 1, 65)[None].repeat(8, axis=0)
    if mode == "F":
        image = Image.fromarray(ramp.astype(np.float32), "F")
    else:
        Image.fromarray((ramp * 65535).round().astype(np.uint16)).save(tmp_path / "mask16.png")
        image = Image.open(tmp_path / "mask16.png")
        image = image if mode == "I;16" else image.convert("I")
        assert image.mode == mode
    mask = as_mask(image)[0, 0].numpy()
    assert mask.shape == (8, 65) and abs(mask[0, 32] - 0.5) < 0.01 and mask[0, 0] == 0 and mask[0, -1] == 1
    if mode == "I;16":
        np.testing.assert_array_equal(mask, load_mask(tmp_path / "mask16.png")[0, 0].numpy())


def test_a_pil_cut_out_mask_is_its_transparency_as_from_its_file(tmp_path: Path) -> None:
    """A PIL image with transparency, as a mask, is what ``load_mask`` makes of its file: its opaque part is 1,
    whatever its colour."""
    cutout = Image.new("RGBA", (24, 16), (0, 0, 0, 0))
    cutout.paste((40, 90, 30, 255), (6, 4, 18, 12))
    cutout.save(tmp_path / "cutout.png")
    with Image.open(tmp_path / "cutout.png") as image:
        mask = as_mask(image)
    np.testing.assert_array_equal(mask.numpy(), load_mask(tmp_path / "cutout.png").numpy())
    assert mask[0, 0, 4:12, 6:18].min() == 1 and mask.sum() == 12 * 8
