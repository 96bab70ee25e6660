"""Stylizer API, odd inputs, tiling, model lookup and the ``faststyle stylize`` command (untrained networks)."""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from faststyle import stylize as stylize_module
from faststyle.cli import main
from faststyle.color import rgb_to_ycbcr
from faststyle.errors import FaststyleError
from faststyle.images import PixelLimitError, load_image, open_image, save_image, to_rgb
from faststyle.modelfile import save_model
from faststyle.stylize import (
    Stylizer,
    default_backend,
    default_precision,
    find_model,
    list_models,
    on_min_side,
    tile_starts,
)
from faststyle.transformer import TransformerNet

METADATA = {
    "style": {"images": [{"file": "vangogh_starry_night_1889.jpg", "sha256": "ab" * 32, "size": [512, 405]}]},
    "backbone": {"name": "vgg16"},
}


def make_model(path: Path, width: float = 0.5, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_model(TransformerNet(width=width), path, metadata=METADATA)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("models") / "starry.safetensors")


@pytest.fixture(scope="module")
def stylizer(model_path: Path) -> Stylizer:
    return Stylizer(model_path, device="cpu", backend="eager")


@pytest.fixture(scope="module")
def photo(shared: Path) -> torch.Tensor:
    return load_image(shared / "data" / "content" / "chicago.jpg", size=96)


def test_pil_in_pil_out(stylizer: Stylizer) -> None:
    image = Image.new("RGB", (64, 40), (200, 30, 30))
    out = stylizer(image)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (64, 40)
    assert stylizer(image, size=32).size == (32, 20)


def test_tensor_in_tensor_out(stylizer: Stylizer, photo: torch.Tensor) -> None:
    batched = stylizer(photo)
    assert batched.shape == photo.shape and batched.dtype == torch.float32
    assert batched.min() >= 0 and batched.max() <= 1
    single = stylizer(photo[0])
    assert single.shape == photo.shape[1:]
    torch.testing.assert_close(single, batched[0])
    assert stylizer(photo, size=48).shape[-2:] == (32, 48)


def test_strength_blends_with_the_content(stylizer: Stylizer, photo: torch.Tensor) -> None:
    full = stylizer(photo)
    torch.testing.assert_close(stylizer(photo, strength=0.0), photo)
    torch.testing.assert_close(stylizer(photo, strength=1.0), full)
    torch.testing.assert_close(stylizer(photo, strength=0.25), 0.75 * photo + 0.25 * full, atol=1e-6, rtol=0)
    with pytest.raises(FaststyleError, match="strength"):
        stylizer(photo, strength=1.5)


def test_a_strength_map_paints_where_it_is_white(stylizer: Stylizer, photo: torch.Tensor) -> None:
    """A mask half the photo's size, white on the left, black on the right: scaled to the photo, the left is the
    painting and the right the photo, whether the map is a tensor or a greyscale PIL image; 0.5 blends."""
    full = stylizer(photo)
    height, width = photo.shape[-2:]
    mask = torch.zeros(1, 1, height // 2, width // 2)
    mask[..., : width // 4] = 1.0
    left, right = np.s_[..., : width // 2 - 4], np.s_[..., width // 2 + 4 :]
    grey = Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8), "L")
    for given in (mask, grey):
        out = stylizer(photo, strength=given)
        torch.testing.assert_close(out[left], full[left], atol=1e-6, rtol=0)
        torch.testing.assert_close(out[right], photo[right], atol=1e-6, rtol=0)
    half = stylizer(photo, strength=mask * 0.5)
    torch.testing.assert_close(half[left], 0.5 * (photo + full)[left], atol=1e-6, rtol=0)
    pixels = (photo[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    kept = np.asarray(stylizer(Image.fromarray(pixels), strength=grey), dtype=float)  # PIL in, PIL out
    assert np.abs(kept[:, width // 2 + 4 :] - pixels[:, width // 2 + 4 :]).max() <= 1.0
    with pytest.raises(FaststyleError, match="the strength map: pixel values run from 0 to 2"):
        stylizer(photo, strength=mask * 2)
    with pytest.raises(FaststyleError, match="the strength map: expected one mask"):
        stylizer(photo, strength=torch.ones(2, 1, 4, 4))


def test_cli_mask_keeps_the_photo_where_it_is_black(
    model_path: Path, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = Image.open(shared / "data/content/kodak/kodim05.png").convert("RGB").resize((96, 64))
    photo.save(tmp_path / "photo.png")
    mask = Image.new("L", (48, 32), 0)
    mask.paste(255, (0, 0, 24, 32))
    mask.save(tmp_path / "mask.png")
    argv = ["stylize", "--model", str(model_path), str(tmp_path / "photo.png"), "--backend", "eager"]
    assert main([*argv, "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "masked.png")]) == 0
    assert main([*argv, "--out", str(tmp_path / "full.png")]) == 0
    masked, full, source = (
        np.asarray(Image.open(tmp_path / n), dtype=float) for n in ("masked.png", "full.png", "photo.png")
    )
    assert np.abs(masked[:, 52:] - source[:, 52:]).max() <= 1.0  # the photo, to 8-bit rounding
    assert np.abs(masked[:, :44] - full[:, :44]).max() <= 1.0  # the painting
    assert np.abs(full[:, 52:] - source[:, 52:]).mean() > 10  # which differs from the photo
    cutout = Image.new("RGBA", (48, 32), (0, 0, 0, 0))  # a cut-out: its opaque part is painted, whatever its colour
    cutout.paste((0, 0, 0, 255), (0, 0, 24, 32))
    cutout.save(tmp_path / "cutout.png")
    assert main([*argv, "--mask", str(tmp_path / "cutout.png"), "--out", str(tmp_path / "cut.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "cut.png")), masked.astype(np.uint8))
    assert main([*argv, "--mask", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o.png")]) == 1
    assert "missing.png" in capsys.readouterr().err


def test_preserve_color_keeps_the_content_chroma(stylizer: Stylizer, photo: torch.Tensor) -> None:
    plain = rgb_to_ycbcr(stylizer(photo))
    kept = rgb_to_ycbcr(stylizer(photo, preserve_color=True))
    content = rgb_to_ycbcr(photo)
    assert (plain[:, 1:] - content[:, 1:]).abs().mean() > 0.02
    assert (kept[:, 1:] - content[:, 1:]).abs().mean() < 0.01
    assert (kept[:, :1] - plain[:, :1]).abs().mean() < 0.01


def test_batch_matches_single_images(stylizer: Stylizer, photo: torch.Tensor) -> None:
    other = torch.rand(1, 3, 40, 52)
    results = stylizer.batch([photo[0], photo, other, Image.new("L", (30, 20), 128)])
    torch.testing.assert_close(results[0], stylizer(photo[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(results[1], stylizer(photo), atol=1e-5, rtol=0)
    assert results[2].shape == other.shape
    assert isinstance(results[3], Image.Image) and results[3].size == (30, 20)


def _save_odd(kind: str, path: Path) -> tuple[Path, tuple[int, int]]:
    """An image of an awkward kind and the (width, height) people see when they open it."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8), "RGB")
    if kind == "exif6":
        exif = Image.Exif()
        exif[0x0112] = 6
        rgb.save(path.with_suffix(".jpg"), exif=exif.tobytes())
        return path.with_suffix(".jpg"), (40, 60)
    if kind == "L":
        rgb.convert("L").save(path.with_suffix(".png"))
    elif kind == "P":
        rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(path.with_suffix(".png"))
    elif kind == "RGBA":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
        rgba.save(path.with_suffix(".png"))
    elif kind == "CMYK":
        rgb.convert("CMYK").save(path.with_suffix(".jpg"))
        return path.with_suffix(".jpg"), (60, 40)
    elif kind == "I;16":
        array = (rng.integers(0, 65535, (40, 60))).astype(np.uint16)
        Image.fromarray(array).save(path.with_suffix(".png"))
    elif kind == "I;16 dark":  # a nearly black 16-bit photo: every value under 256 of 65535
        Image.fromarray(rng.integers(0, 255, (40, 60)).astype(np.uint16)).save(path.with_suffix(".png"))
    elif kind == "F":  # a float TIFF in [0,1]
        Image.fromarray(rng.random((40, 60), dtype=np.float32), "F").save(path.with_suffix(".tif"))
        return path.with_suffix(".tif"), (60, 40)
    return path.with_suffix(".png"), (60, 40)


@pytest.mark.parametrize("kind", ["exif6", "L", "P", "RGBA", "CMYK", "I;16", "I;16 dark", "F"])
def test_odd_inputs_give_rgb_of_the_right_size(stylizer: Stylizer, tmp_path: Path, kind: str) -> None:
    path, size = _save_odd(kind, tmp_path / "odd")
    with Image.open(path) as raw:
        # Older Pillow (10.1, our floor) opens a 16-bit greyscale PNG as mode "I", newer as "I;16".
        modes = {"exif6": ("RGB",), "I;16": ("I;16", "I"), "I;16 dark": ("I;16", "I"), "F": ("F",)}
        assert raw.mode in modes.get(kind, (raw.mode,)) and raw.size == (60, 40)
        if kind in ("I;16", "I;16 dark"):
            expected = np.asarray(raw, dtype=np.float64) / 65535 * 255
            assert np.abs(np.asarray(to_rgb(raw), dtype=np.float64) - expected[..., None]).max() <= 0.5
        if kind == "F":
            expected = np.asarray(raw, dtype=np.float64) * 255
            assert np.abs(np.asarray(to_rgb(raw), dtype=np.float64) - expected[..., None]).max() <= 0.5
        direct = stylizer(raw)
    opened = stylizer(open_image(path))
    for out in (direct, opened):
        assert out.size == size
    assert opened.mode == "RGB" and direct.mode == ("RGBA" if kind == "RGBA" else "RGB")  # transparency is kept


def test_transparency_is_kept_where_the_format_holds_it(
    stylizer: Stylizer, model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _save_odd("RGBA", tmp_path / "logo")
    with Image.open(path) as rgba:
        rgba.load()
    alpha = np.asarray(rgba.getchannel("A"))
    styled = stylizer(rgba)
    assert styled.mode == "RGBA" and np.array_equal(np.asarray(styled.getchannel("A")), alpha)
    over_white = np.asarray(stylizer(open_image(path)), dtype=int)  # the network sees the picture over white, once
    # shown over white it is that painting where the pixel's clarity lets it be (a nearly clear pixel cannot show a
    # dark stroke): never further from it than the painting with the alpha put on top, as it was, which was paler
    shown = np.asarray(Image.alpha_composite(Image.new("RGBA", styled.size, "white"), styled).convert("RGB"), int)
    opacity = alpha[..., None] / 255
    paler = over_white * opacity + 255 * (1 - opacity)
    assert (np.abs(shown - over_white) <= np.abs(paler - over_white) + 1).all()
    assert np.abs(shown - over_white).mean() < 0.8 * np.abs(paler - over_white).mean()
    out = tmp_path / "out"
    assert main(["stylize", "--model", str(model_path), str(path), "--out", str(out), "--size", "30"]) == 0
    assert main(["stylize", "--model", str(model_path), str(path), "--out", str(out), "--format", "jpg"]) == 0
    with Image.open(out / "logo_starry.png") as png, Image.open(out / "logo_starry.jpg") as jpg:
        assert png.mode == "RGBA" and png.size == (30, 20) and jpg.mode == "RGB"
        ramp = np.asarray(png.getchannel("A"), dtype=float).mean(axis=1)  # a top-to-bottom ramp
        assert ramp[0] < 40 and ramp[-1] > 215 and (np.diff(ramp) >= -1).all()  # the ramp, scaled


def test_exif_rotation_is_applied(stylizer: Stylizer, tmp_path: Path) -> None:
    image = Image.new("RGB", (60, 40), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 30, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    upright = open_image(tmp_path / "rotated.jpg")
    assert upright.size == (40, 60)
    top, bottom = np.asarray(upright)[:20].mean((0, 1)), np.asarray(upright)[-20:].mean((0, 1))
    assert top[0] > 200 and bottom[2] > 200  # the left (red) half is on top after a 90° clockwise turn
    assert stylizer(upright, strength=0.0).size == (40, 60)


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims ``width``×``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_pixel_bombs_are_refused(stylizer: Stylizer, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(100_000, 100_000))
    with pytest.raises(FaststyleError, match="limit"):
        open_image(bomb)
    strict = Stylizer(stylizer.net, device="cpu", backend="eager", max_pixels=1000)
    with pytest.raises(FaststyleError, match="max_pixels"):
        strict(Image.new("RGB", (50, 50)))
    with pytest.raises(FaststyleError, match="max_pixels"):
        strict(torch.rand(3, 50, 50))
    # a --size that would scale a small image past the limit is refused before the scaled image is made
    with pytest.raises(PixelLimitError, match="at a long side of 40 would have 40x30 pixels, over the limit of 1,000"):
        strict(torch.rand(3, 24, 32), size=40)
    with pytest.raises(PixelLimitError, match="at a long side of 40"):
        strict.batch([Image.new("RGB", (32, 24))], size=40)
    assert strict(torch.rand(3, 24, 32), size=32).shape == (3, 24, 32)


def _check_tiling(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and all(s % 4 == 0 for s in starts) and starts == sorted(set(starts))
    ends = [min(s + tile, length) for s in starts[:-1]] + [length]
    assert all(e - s <= tile + 3 for s, e in zip(starts, ends, strict=True))
    assert all(ends[i] - starts[i + 1] >= overlap for i in range(len(starts) - 1)), (length, tile, overlap, starts)


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(100, 128, 32), (341, 192, 32), (512, 192, 32), (1037, 256, 64), (306, 102, 0)]
)
def test_tile_starts_cover_the_image(length: int, tile: int, overlap: int) -> None:
    _check_tiling(length, tile, overlap)


def test_tiles_overlap_by_at_least_the_overlap_for_every_geometry() -> None:
    for tile in range(8, 72):
        for overlap in range(0, (tile - 8) // 2 + 1):
            for length in range(1, 300, 7):
                _check_tiling(length, tile, overlap)


@pytest.mark.parametrize(("tile", "overlap", "width"), [(102, 0, 306), (101, 0, 606), (17, 4, 69)])
def test_tiles_without_overlap_still_match_the_whole_image(tile: int, overlap: int, width: int) -> None:
    torch.manual_seed(0)
    net = TransformerNet(width=0.25)
    image = torch.rand(1, 3, 40, width)
    tiled = Stylizer(net, device="cpu", backend="eager", tile=tile, overlap=overlap)(image)
    whole = Stylizer(net, device="cpu", backend="eager", tile=0)(image)
    assert tiled.shape == whole.shape
    assert float((tiled - whole).abs().mean()) < 0.01


@pytest.mark.parametrize("backend", ["eager", "onnxruntime"])
def test_images_a_few_pixels_wide_are_stylized(model_path: Path, backend: str) -> None:
    stylizer = Stylizer(model_path, device="cpu", backend=backend)
    eager = Stylizer(model_path, device="cpu", backend="eager")
    for height, width in [(1, 1), (3, 40), (40, 3), (4, 40), (7, 7)]:
        image = torch.rand(1, 3, height, width)
        out = stylizer(image)
        assert out.shape == image.shape and torch.isfinite(out).all()
        torch.testing.assert_close(out, eager(image), atol=1e-4, rtol=0)
    strip = Image.new("RGB", (300, 2), (200, 40, 40))
    assert stylizer(strip).size == (300, 2)


def _borders(length: int, tile: int, overlap: int) -> list[int]:
    starts = tile_starts(length, tile, overlap)
    return sorted({min(s + tile, length) for s in starts[:-1]} | set(starts[1:]))


def _seam_ratio(image: torch.Tensor, borders: list[int], dim: int) -> float:
    """Mean step between neighbouring rows/columns at tile borders over the mean step 2–8 px away from them:
    about 1 without a visible seam."""
    steps = image.diff(dim=dim).abs().mean(dim=(0, 1, 5 - dim))
    near = [b + d for b in borders for d in (*range(-8, -1), *range(2, 9)) if 0 < b + d < steps.numel()]
    at = [b - 1 for b in borders if 0 < b <= steps.numel()]
    return (steps[at].mean() / steps[near].mean()).item()


def _seam_report(tiled: torch.Tensor, reference: torch.Tensor, tile: int, overlap: int) -> dict[str, float]:
    """Differences from the untiled result (everywhere, and >= overlap px from tile borders) and seam ratios."""
    h, w = reference.shape[-2:]
    diff = (tiled - reference).abs().amax(1)[0]
    borders_y, borders_x = _borders(h, tile, overlap), _borders(w, tile, overlap)
    dist_y = torch.tensor([min((abs(i - b) for b in borders_y), default=10**6) for i in range(h)])
    dist_x = torch.tensor([min((abs(j - b) for b in borders_x), default=10**6) for j in range(w)])
    far = torch.minimum(dist_y.view(-1, 1), dist_x.view(1, -1)) >= overlap
    ratios = [_seam_ratio(tiled, borders_y, 2), _seam_ratio(tiled, borders_x, 3)]
    reference_ratios = [_seam_ratio(reference, borders_y, 2), _seam_ratio(reference, borders_x, 3)]
    return {
        "max": round(diff.max().item(), 6),
        "mean": round(diff.mean().item(), 6),
        "far_max": round(diff[far].max().item(), 6),
        "seam_ratio": round(max(ratios), 3),
        "untiled_ratio": round(max(reference_ratios), 3),
    }


def test_a_tile_side_bounds_every_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tile`` is how a user fits a small device: the pass that gives the tiles their statistics is no larger than
    a tile's own pass either."""
    passes: list[tuple[int, int]] = []

    def recorded(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        passes.append(tuple(images.shape[-2:]))
        return on_min_side(forward, images)

    monkeypatch.setattr(stylize_module, "on_min_side", recorded)
    net = TransformerNet(width=0.25).eval()
    image = torch.rand(1, 3, 300, 400, generator=torch.Generator().manual_seed(0))
    out = Stylizer(net, device="cpu", backend="eager", tile=96, overlap=16)(image)
    assert out.shape == image.shape and len(passes) > 1
    largest = (96 + 2 * stylize_module.CONTEXT) ** 2  # a tile and the context it reads on both sides
    assert max(h * w for h, w in passes) <= largest, passes  # the statistics' pass was 300x400 before
    assert passes[0][0] / passes[0][1] == pytest.approx(300 / 400, rel=0.02)  # the whole picture, scaled down


@pytest.mark.slow
def test_tiling_matches_the_whole_image_without_seams(shared: Path, figure: Callable[[str], None]) -> None:
    torch.manual_seed(1)
    net = TransformerNet(width=1.0).eval()
    photo = load_image(shared / "data" / "content" / "chicago.jpg", size=512)  # 341×512
    whole = Stylizer(net, device="cpu", backend="eager", tile=0)(photo)
    # statistics from a full-size pass (a budget of the whole picture), which tiling alone must not change
    tiled = Stylizer(net, device="cpu", backend="eager", tile=192, overlap=32, tile_pixels=341 * 512)(photo)
    local = Stylizer(net, device="cpu", backend="eager", tile=192, overlap=32, tile_stats="local")(photo)
    report = _seam_report(tiled, whole, 192, 32)
    report_local = _seam_report(local, whole, 192, 32)
    figure(
        f"tiling 341x512, tile 192, overlap 32, against one pass: shared statistics {report}; per tile {report_local}"
    )
    assert report["far_max"] < 1e-3
    assert report["max"] < 5e-3
    assert report["seam_ratio"] < 1.05 * report["untiled_ratio"]
    assert report_local["mean"] > report["mean"]


@pytest.mark.slow
def test_auto_tiling_of_large_images_has_no_seams(shared: Path, figure: Callable[[str], None]) -> None:
    torch.manual_seed(1)
    net = TransformerNet(width=0.5).eval()
    photo = load_image(shared / "data" / "content" / "chicago.jpg", size=600)
    assert photo.shape[-2:] == (399, 600)
    budget = 200 * 300  # the shared statistics come from a half-size pass
    stylizer = Stylizer(net, device="cpu", backend="eager", tile_pixels=budget)
    assert stylizer.needs_tiles(*photo.shape[-2:])
    tiled = stylizer(photo)
    whole = Stylizer(net, device="cpu", backend="eager", tile=0)(photo)
    side = int(budget**0.5) // 4 * 4
    report = _seam_report(tiled, whole, side, 32)
    assert tiled.shape == photo.shape
    local = Stylizer(net, device="cpu", backend="eager", tile_pixels=budget, tile_stats="local")(photo)
    report_local = _seam_report(local, whole, side, 32)
    figure(f"auto tiling 400x600, tile {side}, statistics of a half-size pass: {report}; per tile {report_local}")
    # measured: mean 0.028 from one pass (statistics of half the size), 0.075 with each tile's own statistics
    assert report["mean"] < 0.05 and report["mean"] < 0.5 * report_local["mean"]
    assert report["seam_ratio"] < 1.05 * report["untiled_ratio"] + 0.05


def test_models_are_found_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    make_model(first / "wave.safetensors")
    make_model(second / "wave.safetensors", seed=1)
    make_model(second / "scream.safetensors")
    monkeypatch.setenv("FASTSTYLE_MODELS", os.pathsep.join([str(first), str(second)]))
    assert find_model("wave") == first / "wave.safetensors"
    assert find_model("scream") == second / "scream.safetensors"
    assert find_model(str(second / "wave.safetensors")) == second / "wave.safetensors"
    names = {info.name: info for info in list_models()}
    assert {"wave", "scream"} <= set(names)
    assert names["wave"].path == first / "wave.safetensors" and names["wave"].metadata["backbone"]["name"] == "vgg16"
    assert Stylizer("scream", device="cpu", backend="eager").name == "scream"
    with pytest.raises(FaststyleError, match="faststyle train"):
        find_model("no_such_style")
    # a damaged model among them is skipped, named, and breaks neither the list nor the message of a missing name
    state = {"weight": torch.zeros(1)}
    save_file(state, str(second / "damaged.safetensors"), metadata={"faststyle": "{not json"})
    save_file(state, str(second / "listed.safetensors"), metadata={"faststyle": "[1, 2]"})
    with caplog.at_level(logging.WARNING):
        assert {info.name for info in list_models()} == {"wave", "scream"}
    assert "damaged.safetensors's faststyle metadata is damaged" in caplog.text
    assert "listed.safetensors's faststyle metadata is not a record but list" in caplog.text
    with pytest.raises(FaststyleError, match="faststyle train"):
        find_model("no_such_style")
    with pytest.raises(FaststyleError, match="does not exist"):
        find_model(tmp_path / "missing.safetensors")
    # a folder of models was "model file … does not exist"
    with pytest.raises(FaststyleError, match=r"b is a folder, not a model file; .*\(models in it: scream, wave\)"):
        find_model(second)


def test_a_name_finds_the_model_the_list_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreadable file in an earlier folder is skipped by ``--model NAME`` as by ``--list``, which shows the
    later folder's model of that name; where none of that name can be read, the error names each file and why."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    (first / "m.safetensors").write_bytes(b"not a model")
    make_model(second / "m.safetensors")
    monkeypatch.setenv("FASTSTYLE_MODELS", os.pathsep.join([str(first), str(second)]))
    assert main(["stylize", "--list"]) == 0
    assert f"({second / 'm.safetensors'})" in capsys.readouterr().out
    Image.new("RGB", (16, 12), (90, 140, 200)).save(tmp_path / "photo.png")
    argv = ["stylize", "--model", "m", str(tmp_path / "photo.png"), "--device", "cpu", "--backend", "eager"]
    assert main([*argv, "--out", str(tmp_path / "out.png")]) == 0
    assert Image.open(tmp_path / "out.png").size == (16, 12)
    assert find_model("m") == find_model("m.safetensors") == second / "m.safetensors"
    assert Stylizer("m", device="cpu", backend="eager").path == second / "m.safetensors"
    (second / "m.safetensors").write_bytes(b"damaged too")
    with pytest.raises(FaststyleError, match="no readable model named 'm'") as error:
        find_model("m")
    assert str(first / "m.safetensors") in str(error.value) and str(second / "m.safetensors") in str(error.value)


def _write_photos(folder: Path, shared: Path) -> None:
    folder.mkdir()
    content = open_image(shared / "data" / "content" / "chicago.jpg")
    content.resize((96, 64)).save(folder / "city.jpg")
    content.resize((64, 64)).convert("L").save(folder / "grey.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")


def test_cli_folder_with_a_broken_file(
    model_path: Path, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_photos(tmp_path / "in", shared)
    out = tmp_path / "out"
    code = main(["stylize", "--model", str(model_path), str(tmp_path / "in"), "--out", str(out), "--batch", "2"])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["city_starry.png", "grey_starry.png"]
    with Image.open(out / "city_starry.png") as image:
        assert image.size == (96, 64) and image.mode == "RGB"
    assert "stylized 2 of 3 images" in captured.out
    assert "1 failed" in captured.err and "broken.jpg" in captured.err


def test_cli_into_the_input_folder_never_writes_over_an_input(
    model_path: Path, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out`` the photos' own folder, where a photo is named as another's output would be: the photo is kept."""
    folder = tmp_path / "photos"
    folder.mkdir()
    open_image(shared / "data" / "content" / "chicago.jpg").resize((96, 64)).save(folder / "city.jpg")
    open_image(shared / "data" / "content" / "tubingen.jpg").resize((64, 48)).save(folder / "city_starry.png")
    before = (folder / "city_starry.png").read_bytes()
    assert main(["stylize", "--model", str(model_path), str(folder), "--out", str(folder)]) == 0
    assert (folder / "city_starry.png").read_bytes() == before  # was overwritten by city.jpg's painting
    assert sorted(p.name for p in folder.iterdir()) == [
        "city-2_starry.png", "city.jpg", "city_starry.png", "city_starry_starry.png"
    ]  # fmt: skip
    with Image.open(folder / "city-2_starry.png") as image, Image.open(folder / "city_starry_starry.png") as other:
        assert image.size == (96, 64) and other.size == (64, 48)
    assert "stylized 2 of 2 images" in capsys.readouterr().out


def test_cli_single_file_glob_and_format(
    model_path: Path, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_photos(tmp_path / "in", shared)
    single = tmp_path / "one.jpg"
    args = ["stylize", "--model", str(model_path), "--backend", "eager", "--size", "48"]
    assert main([*args, str(tmp_path / "in" / "city.jpg"), "--out", str(single), "--strength", "0.5"]) == 0
    with Image.open(single) as image:
        assert image.format == "JPEG" and image.size == (48, 32)
    out = tmp_path / "globbed"
    assert main([*args, str(tmp_path / "in" / "*.png"), str(tmp_path / "in" / "city.jpg"), "--out", str(out),
                 "--format", "webp", "--preserve-color"]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["city_starry.webp", "grey_starry.webp"]
    capsys.readouterr()
    assert main([*args, str(tmp_path / "in" / "*.gif"), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "stylized 0 of 0 images" in captured.out  # a glob that matches nothing is not an image
    assert "1 input named no image or video:" in captured.err and "no files match" in captured.err
    # an output suffix that no image format has is refused before the model loads (this one does not exist)
    unknown = ["stylize", "--model", str(tmp_path / "missing.safetensors"), str(tmp_path / "in" / "city.jpg")]
    assert main([*unknown, "--out", str(tmp_path / "result.weird")]) == 1
    assert "cannot tell the image format from '.weird'; end the file name in .png" in capsys.readouterr().err
    assert main([*unknown, "--out", str(tmp_path / "result.h5")]) == 1  # Pillow knows .h5 but cannot write it
    assert "cannot tell the image format from '.h5'" in capsys.readouterr().err


def test_cli_globs_recurse_and_skip_non_images(
    model_path: Path, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_photos(tmp_path / "in", shared)
    (tmp_path / "in" / "broken.jpg").unlink()
    deeper = tmp_path / "in" / "a" / "b"
    deeper.mkdir(parents=True)
    Image.new("RGB", (40, 30), (10, 200, 30)).save(deeper / "deep.png")
    args = ["stylize", "--model", str(model_path), "--backend", "eager"]
    out = tmp_path / "out"
    assert main([*args, str(tmp_path / "in" / "**" / "*"), "--out", str(out)]) == 0  # notes.txt is not an image
    assert sorted(p.name for p in out.iterdir()) == ["city_starry.png", "deep_starry.png", "grey_starry.png"]
    assert main([*args, str(tmp_path / "in" / "*.txt"), "--out", str(out)]) == 1
    assert "no image or video files match" in capsys.readouterr().err


def test_cli_several_inputs_into_one_file_is_an_error(
    model_path: Path, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_photos(tmp_path / "in", shared)
    args = ["stylize", "--model", str(model_path), "--backend", "eager", str(tmp_path / "in" / "*.png")]
    args += [str(tmp_path / "in" / "city.jpg")]
    assert main([*args, "--out", str(tmp_path / "two.png")]) == 1
    assert "names one file, but 2 inputs are given" in capsys.readouterr().err
    assert not (tmp_path / "two.png").exists()
    (tmp_path / "taken").write_text("a file, not a folder")
    assert main([*args, "--out", str(tmp_path / "taken")]) == 1
    assert "is a file" in capsys.readouterr().err


def test_cli_a_one_pixel_image_in_a_folder_does_not_stop_the_others(
    model_path: Path, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_photos(tmp_path / "in", shared)
    (tmp_path / "in" / "broken.jpg").unlink()
    Image.new("RGB", (3, 40), (0, 0, 0)).save(tmp_path / "in" / "thin.png")
    out = tmp_path / "out"
    code = main(["stylize", "--model", str(model_path), str(tmp_path / "in"), "--out", str(out)])  # ONNX Runtime
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["city_starry.png", "grey_starry.png", "thin_starry.png"]
    assert "stylized 3 of 3 images" in capsys.readouterr().out


def test_written_files_get_the_usual_permissions(model_path: Path, shared: Path, tmp_path: Path) -> None:
    _write_photos(tmp_path / "in", shared)
    previous = os.umask(0o022)
    try:
        out = tmp_path / "city.png"
        assert main(["stylize", "--model", str(model_path), str(tmp_path / "in" / "city.jpg"), "--out", str(out)]) == 0
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o644


def test_cli_writes_atomically(
    model_path: Path, shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_photos(tmp_path / "in", shared)
    out = tmp_path / "out"

    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    code = main(["stylize", "--model", str(model_path), "--backend", "eager", str(tmp_path / "in"), "--out", str(out)])
    assert code == 1
    assert list(out.iterdir()) == []  # neither outputs nor temporary files are left behind
    assert capsys.readouterr().err.count("disk full") == 2


def test_cli_list(model_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FASTSTYLE_MODELS", str(model_path.parent))
    assert main(["stylize", "--list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("starry"))
    assert "vangogh_starry_night_1889" in line and "vgg16" in line


def test_cli_resolves_names(model_path: Path, shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSTYLE_MODELS", str(model_path.parent))
    _write_photos(tmp_path / "in", shared)
    out = tmp_path / "named.png"
    assert main(["stylize", "--model", "starry", str(tmp_path / "in" / "grey.png"), "--out", str(out)]) == 0
    assert out.is_file()
    assert main(["stylize", "--model", "unknown", str(tmp_path / "in" / "grey.png"), "--out", str(out)]) == 1
    other = tmp_path / "elsewhere"  # the file name `stylize --list` shows, typed away from its folder
    other.mkdir()
    monkeypatch.chdir(other)
    assert main(["stylize", "--model", "starry.safetensors", str(tmp_path / "in" / "grey.png"), "--out", str(out)]) == 0


def test_default_cpu_backend_matches_eager(model_path: Path, photo: torch.Tensor, stylizer: Stylizer) -> None:
    default = Stylizer(model_path, device="cpu")
    assert default.backend in ("onnxruntime", "channels_last", "eager") and default.precision == "fp32"
    torch.testing.assert_close(default(photo), stylizer(photo), atol=1e-4, rtol=0)


def test_reduced_precision_on_the_cpu(stylizer: Stylizer, photo: torch.Tensor) -> None:
    reference = stylizer(photo)
    for precision in ("bf16", "fp16"):
        low = Stylizer(stylizer.net, device="cpu", precision=precision)
        assert low.backend == "eager" and low.precision == precision
        assert (low(photo) - reference).abs().max() < 0.05
    if not torch.cuda.is_available():
        with pytest.raises(FaststyleError, match="--device cpu"):
            Stylizer(stylizer.net, device="cuda")


def test_cli_compiled_matches_eager(model_path: Path, shared: Path, tmp_path: Path) -> None:
    _write_photos(tmp_path / "in", shared)
    args = ["stylize", "--model", str(model_path), "--backend", "eager", str(tmp_path / "in" / "city.jpg")]
    assert main([*args, "--out", str(tmp_path / "eager.png")]) == 0
    assert main([*args, "--out", str(tmp_path / "compiled.png"), "--compile"]) == 0
    eager, compiled = (np.asarray(Image.open(tmp_path / f"{n}.png"), dtype=np.int16) for n in ("eager", "compiled"))
    assert eager.shape == compiled.shape == (64, 96, 3)
    assert np.abs(eager - compiled).max() <= 2  # 8-bit outputs of the same network; fusion reorders float sums


def test_compile_picks_a_pytorch_backend(model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert Stylizer(model_path, device="cpu").backend == "onnxruntime"
    assert Stylizer(model_path, device="cpu", compile=True).backend == "eager"  # ONNX Runtime would ignore it
    with pytest.raises(FaststyleError, match="compile applies to the PyTorch backends"):
        Stylizer(model_path, device="cpu", compile=True, backend="onnxruntime")
    with pytest.raises(SystemExit):
        main(["stylize", "--model", str(model_path), "--compile", "photo.jpg", "--out", "x.png"])
    assert "write the mode out: --compile default" in capsys.readouterr().err


def test_a_glob_through_a_symlink_loop_names_each_photo_once(shared: Path, tmp_path: Path) -> None:
    from faststyle.commands.stylize import expand_inputs

    folder = tmp_path / "loop"
    folder.mkdir()
    (folder / "a.png").write_bytes((shared / "data/content/kodak/kodim03.png").read_bytes())
    (folder / "self").symlink_to(".")
    assert expand_inputs([str(folder / "**" / "*.png")]) == ([folder / "a.png"], [], [])
    files, missing, repeated = expand_inputs([str(folder / "**" / "*.png"), str(folder), str(folder / "b.png")])
    assert files == [folder / "a.png"]
    assert missing == [(str(folder / "b.png"), "does not exist")]
    assert repeated == [(folder / "a.png", 2)]


def test_a_folder_gives_its_images_not_what_pillow_only_writes_nor_hidden_files(shared: Path, tmp_path: Path) -> None:
    """A PDF (Pillow writes them, cannot read them) and a Mac's ._photo.png (AppleDouble, left on exFAT and SMB
    shares) failed every run of a folder, exit status 1; a glob of the same folder already left the hidden file out."""
    from faststyle.commands.stylize import expand_inputs

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "photo.png").write_bytes((shared / "data/content/kodak/kodim03.png").read_bytes())
    (folder / "._photo.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / "notes.pdf").write_bytes(b"%PDF-1.4 notes")
    (folder / "cover.palm").write_bytes(b"palm")
    assert expand_inputs([str(folder)]) == ([folder / "photo.png"], [], [])
    assert expand_inputs([str(folder / "*")]) == ([folder / "photo.png"], [], [])


def test_a_photo_named_twice_is_stylized_once_and_the_user_told(
    model_path: Path, shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_photos(tmp_path / "in", shared)
    city = tmp_path / "in" / "city.jpg"
    inputs = [str(city), str(tmp_path / "in" / "*.png"), str(tmp_path / "in" / "c*.jpg")]
    assert main(["stylize", "--model", str(model_path), *inputs, "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert f"{city} is named by 2 of the inputs; stylizing it once" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["city_starry.png", "grey_starry.png"]
    assert "stylized 2 of 2 images" in captured.out


def test_the_onnx_cache_keeps_one_export_per_model_and_the_recent_ones(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faststyle.images import sha256_file

    cache = tmp_path / "cache"
    folder = cache / "onnx"
    folder.mkdir(parents=True)
    model = sha256_file(model_path)[:32]
    stale = folder / f"{model}-0123456789ab-torch2.0.0.onnx"  # the same model, exported by older code
    others = [folder / f"{i:032x}-0123456789ab-torch2.0.0.onnx" for i in range(20)]
    for age, path in enumerate([stale, *others]):
        path.write_bytes(b"not really onnx")
        os.utime(path, (1e9 + age, 1e9 + age))  # others[19] used last
    monkeypatch.setenv("FASTSTYLE_CACHE", str(cache))
    photo = torch.rand(1, 3, 40, 56)
    first = Stylizer(model_path, device="cpu", backend="onnxruntime")(photo)
    kept = sorted(folder.glob("*.onnx"))
    (export,) = [p for p in kept if p.name.startswith(model)]
    assert export != stale and not stale.exists()
    assert sorted(set(kept) - {export}) == others[-15:]  # 16 in all: this export and the 15 used last
    # a second Stylizer reads the export, and marks it used, instead of exporting again
    os.utime(export, (1e9, 1e9))
    monkeypatch.setattr("faststyle.export.onnx_bytes", lambda *args: pytest.fail("exported again"))
    torch.testing.assert_close(Stylizer(model_path, device="cpu", backend="onnxruntime")(photo), first)
    assert sorted(folder.glob("*.onnx")) == kept and export.stat().st_mtime > 1e9 + 86_400


def _resident_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


def test_onnx_runtime_gives_a_large_pass_memory_back(model_path: Path) -> None:
    """ONNX Runtime keeps its largest pass's working memory for the next; with release_pixels (as the demo, which
    holds several models) a larger pass gives it back, with the same picture."""
    big = torch.rand(1, 3, 768, 1024)

    def growth(stylizer: Stylizer) -> tuple[float, torch.Tensor]:
        stylizer(torch.rand(1, 3, 32, 32))  # the session's first-run allocations
        before = _resident_mb()
        out = stylizer(big)
        return _resident_mb() - before, out

    released_mb, released = growth(Stylizer(model_path, device="cpu", backend="onnxruntime", release_pixels=512 * 512))
    kept_mb, kept = growth(Stylizer(model_path, device="cpu", backend="onnxruntime"))
    assert kept_mb > 150, kept_mb  # a width-0.5 network: about 0.4 kB a pixel
    assert released_mb < kept_mb / 4, (released_mb, kept_mb)
    torch.testing.assert_close(released, kept)


def test_the_package_offers_the_api_without_importing_torch_first(model_path: Path) -> None:
    import subprocess
    import sys

    import faststyle
    from faststyle.animation import stylize_animation
    from faststyle.video import stylize_video

    assert faststyle.Stylizer is Stylizer and faststyle.stylize_video is stylize_video
    assert faststyle.stylize_animation is stylize_animation and "stylize_animation" in faststyle.__all__
    from faststyle import gatys

    assert faststyle.gatys is gatys
    assert faststyle.Stylizer(model_path, device="cpu").name == "starry"
    with pytest.raises(AttributeError, match="no attribute 'Stylise'"):
        _ = faststyle.Stylise  # type: ignore[attr-defined]
    code = "import sys, faststyle; print('torch' in sys.modules, faststyle.Stylizer.__module__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "faststyle.stylize", "True"]


def test_auto_picks_the_path_measured_fastest() -> None:
    """On an H200 the eager network was slower in fp16 (1.09–1.27×) and channels_last fp16 (1.25–1.52×) than in fp32,
    compiled fp16 faster (0.38–0.71×); on the CPU ONNX Runtime, which torch.compile cannot wrap."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert (default_precision(cuda), default_backend(cuda, "fp32")) == ("fp32", "eager")
    assert (default_precision(cuda, "reduce-overhead"), default_backend(cuda, "fp16", True)) == (
        "fp16",
        "channels_last",
    )
    assert default_precision(cpu, True) == "fp32" and default_backend(cpu, "fp32", True) == "eager"
    stylizer = Stylizer(TransformerNet(), device="cpu", compile=True)
    assert (stylizer.precision, stylizer.backend) == ("fp32", "eager")


def test_a_damaged_multipage_tiff_fails_alone(model_path: Path, shared: Path, tmp_path: Path, capsys) -> None:
    """Pillow raises TypeError ("Missing dimensions") counting the pages of a TIFF cut short: the whole batch died
    with a traceback and wrote nothing."""
    folder = tmp_path / "in"
    _write_photos(folder, shared)
    page = open_image(shared / "data" / "content" / "chicago.jpg").resize((256, 170))
    whole = tmp_path / "scan.tif"
    page.save(whole, save_all=True, append_images=[page.convert("L")])
    (folder / "scan.tif").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    out = tmp_path / "out"
    assert main(["stylize", "--model", str(model_path), "--backend", "eager", str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "scan.tif: cannot read" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["city_starry.png", "grey_starry.png"]  # (broken.jpg fails too)


def test_an_oriented_tiff_is_turned_once(stylizer: Stylizer, tmp_path: Path) -> None:
    """Pillow turns a TIFF upright as it loads it: the API turned a freshly opened one a second time."""
    exif = Image.Exif()
    exif[0x0112] = 8  # turned 90° to display
    Image.new("RGB", (64, 40), "red").save(tmp_path / "turned.tif", exif=exif)
    with Image.open(tmp_path / "turned.tif") as image:
        assert stylizer(image, strength=0).size == open_image(tmp_path / "turned.tif").size == (40, 64)


def test_out_names_one_file_by_any_image_suffix(model_path: Path, shared: Path, tmp_path: Path, capsys) -> None:
    """--out all.tiff with two inputs made a folder named all.tiff full of PNGs (only .png/.jpg/.webp were known)."""
    _write_photos(tmp_path / "in", shared)
    inputs = [str(p) for p in sorted((tmp_path / "in").iterdir())[:2]]
    for name in ("all.tiff", "all.bmp"):
        assert main(["stylize", "--model", str(model_path), *inputs, "--out", str(tmp_path / name)]) == 1
        assert "names one file, but 2 inputs are given" in capsys.readouterr().err
        assert not (tmp_path / name).exists()
    (tmp_path / "result").write_text("")
    assert main(["stylize", "--model", str(model_path), inputs[0], "--out", str(tmp_path / "result")]) == 1
    assert "is a file without a suffix; end the name in .png or .jpg" in capsys.readouterr().err


def test_soft_edges_keep_their_colours(model_path: Path, tmp_path: Path) -> None:
    """The network sees a cut-out over white; its partly clear pixels came back mixed with that white, and the alpha
    on top: a red cut-out's soft edge turned pink (at alpha 0.5, (200,0,0) became (228,129,129)) even at strength 0,
    and a JPEG, flattened over white once more, paler still."""
    ramp = np.linspace(255, 0, 96).round().astype(np.uint8)
    rgba = np.zeros((32, 96, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, ramp[None, :]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    argv = [
        "stylize",
        "--model",
        str(model_path),
        "--backend",
        "eager",
        str(tmp_path / "cutout.png"),
        "--strength",
        "0",
    ]
    assert main([*argv, "--out", str(tmp_path / "out.png")]) == 0
    with Image.open(tmp_path / "out.png") as written:
        result = np.asarray(written.convert("RGBA")).astype(int)
    np.testing.assert_array_equal(result[..., 3], rgba[..., 3])
    visible = rgba[..., 3] >= 16  # nearer clear, 8-bit rounding of the mix with white leaves too little to undo
    assert np.abs(result[..., :3][visible] - [200, 0, 0]).max() <= 8
    assert main([*argv, "--out", str(tmp_path / "out.jpg")]) == 0
    over_white = rgba[..., :3] * (rgba[..., 3:] / 255) + 255 * (1 - rgba[..., 3:] / 255)
    with Image.open(tmp_path / "out.jpg") as written:
        assert np.abs(np.asarray(written, dtype=float) - over_white).mean() < 3  # the cut-out over white, once


def test_a_side_the_format_cannot_hold_is_refused_before_the_work(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A panorama 17,000 px wide was stylized in full, then failed as WebP's encoder refused it ("encoding error 5");
    a JPEG over 65,500 px failed with "broken data stream"."""
    Image.new("RGB", (17_000, 8), (90, 120, 200)).save(tmp_path / "pano.png")
    ran: list[int] = []
    monkeypatch.setattr(Stylizer, "stylize", lambda self, content: ran.append(1) or content)
    argv = ["stylize", "--model", str(model_path), "--backend", "eager", str(tmp_path / "pano.png")]
    assert main([*argv, "--out", str(tmp_path / "pano.webp")]) == 1
    assert "pano.webp: WEBP holds at most 16,383 pixels a side, not 17000x8; write .png" in capsys.readouterr().err
    assert not ran and not (tmp_path / "pano.webp").exists()
    assert main([*argv, "--out", str(tmp_path / "pano.webp"), "--size", "16000"]) == 0
    with Image.open(tmp_path / "pano.webp") as written:
        assert written.size == (16_000, 8)
    with pytest.raises(FaststyleError, match=r"JPEG holds at most 65,500 pixels a side, not 66000x1"):
        save_image(Image.new("RGB", (66_000, 1)), tmp_path / "wide.jpg")
