"""Animated GIF, PNG and WebP files through ``stylize_animation`` and ``faststyle stylize``.

The animations are made with Pillow from a pan across the shared Chicago photo. The network is an untrained
width-0.5 one, whose output is far from the photo, which is what the checks need.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pan_frames
from PIL import Image, ImageSequence

from faststyle import animation
from faststyle.animation import stylize_animation
from faststyle.cli import main
from faststyle.errors import FaststyleError
from faststyle.images import PixelLimitError
from faststyle.modelfile import save_model
from faststyle.stylize import Stylizer
from faststyle.transformer import TransformerNet
from faststyle.video import stylize_video

WIDTH, HEIGHT = 96, 64
DURATIONS = [40, 40, 120, 40, 70, 200, 40, 500]


@pytest.fixture(scope="module")
def stylizer(tmp_path_factory: pytest.TempPathFactory) -> Stylizer:
    torch.manual_seed(0)
    path = save_model(TransformerNet(width=0.5), tmp_path_factory.mktemp("models") / "starry.safetensors", metadata={})
    return Stylizer(path, device="cpu", backend="eager")


@pytest.fixture(scope="module")
def pan(shared: Path) -> list[Image.Image]:
    return [Image.fromarray(frame) for frame in pan_frames(WIDTH, HEIGHT)]


def write(path: Path, frames: list[Image.Image], **options: object) -> Path:
    """Frames saved by Pillow as its format's own options say (``loop`` in the format's own meaning)."""
    extra = {"lossless": True} if path.suffix == ".webp" else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=DURATIONS[: len(frames)], **options, **extra)
    return path


def read(path: Path) -> tuple[list[np.ndarray], list[float], str, int]:
    """The frames as shown (uint8 H×W×3), their durations, the format and its plays (0: forever)."""
    with Image.open(path) as image:
        frames, durations = [], []
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            image.load()
            frames.append(np.asarray(image.convert("RGB")))
            durations.append(float(image.info["duration"]))
        return frames, durations, image.format, animation.plays_of(image)


def moved_frame(gif: bytes, number: int, left: int, top: int) -> bytes:
    """The GIF with its ``number``-th image drawn at (left, top) on the canvas."""
    data = bytearray(gif)
    flags = data[10]
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # past the header and the global colour table
    images = 0
    while data[at] != 0x3B:
        if data[at] == 0x21:  # an extension: its label, then data sub-blocks
            at += 2
        else:  # an image: its descriptor, local colour table, LZW code size, then data sub-blocks
            if images == number:
                data[at + 1 : at + 5] = struct.pack("<HH", left, top)
                return bytes(data)
            images += 1
            packed = data[at + 9]
            at += 10 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0) + 1
        while data[at]:
            at += data[at] + 1
        at += 1
    raise ValueError(f"the GIF has no image {number}")


def differs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


@pytest.mark.parametrize(
    ("source", "target", "tolerance"),
    [
        ("pan.gif", "out.gif", 6.0),  # 256 colours, dithered
        ("pan.png", "out.png", 0.0),
        ("pan.webp", "out.webp", 8.0),  # lossy at quality 95: as far off as a JPEG at 95 (6.1 on these frames)
        ("pan.gif", "out.apng", 0.0),
    ],
)
def test_every_frame_is_stylized_and_keeps_its_duration(
    stylizer: Stylizer, pan: list[Image.Image], tmp_path: Path, source: str, target: str, tolerance: float
) -> None:
    source_path = write(tmp_path / source, pan, loop=0)
    shown, _, _, _ = read(source_path)
    result = stylize_animation(stylizer, source_path, tmp_path / target, progress=False)
    frames, durations, _, plays = read(tmp_path / target)
    assert (result.frames, result.width, result.height, result.plays) == (8, WIDTH, HEIGHT, 0)
    assert durations == DURATIONS and result.duration_ms == sum(DURATIONS) and plays == 0
    expected = [np.asarray(stylizer(Image.fromarray(frame))) for frame in shown]
    for frame, wanted, original in zip(frames, expected, shown, strict=True):
        assert differs(frame, wanted) <= tolerance
        assert differs(frame, original) > 20  # stylized, not the photo


@pytest.mark.parametrize(
    ("source", "options", "target", "plays"),
    [
        ("gif", {}, "webp", 1),  # a GIF without a loop count plays once
        ("gif", {"loop": 0}, "png", 0),
        ("gif", {"loop": 2}, "webp", 3),  # a GIF's loop count repeats the first play
        ("png", {"loop": 3}, "gif", 3),
        ("webp", {"loop": 1}, "gif", 1),
        ("webp", {"loop": 0}, "gif", 0),
    ],
)
def test_the_number_of_plays_is_kept_across_formats(
    stylizer: Stylizer, pan: list[Image.Image], tmp_path: Path, source: str, options: dict, target: str, plays: int
) -> None:
    source_path = write(tmp_path / f"pan.{source}", pan[:3], **options)
    result = stylize_animation(stylizer, source_path, tmp_path / f"out.{target}", size=48, progress=False)
    frames, durations, fmt, written_plays = read(tmp_path / f"out.{target}")
    assert result.plays == plays and written_plays == plays and fmt == Image.registered_extensions()[f".{target}"]
    assert len(frames) == 3 and frames[0].shape == (32, 48, 3) and durations == DURATIONS[:3]


def test_gif_frame_times_are_whole_hundredths_that_keep_the_frames_on_time(
    stylizer: Stylizer, pan: list[Image.Image], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "fast.png"
    pan[0].save(source, save_all=True, append_images=pan[1:6], duration=[1000 / 60] * 6, loop=0)  # 60 fps
    result = stylize_animation(stylizer, source, tmp_path / "fast.gif", size=32, progress=False)
    _, durations, _, _ = read(tmp_path / "fast.gif")
    assert durations == [20.0] * 6 and result.duration_ms == 120  # a GIF's fastest: 50 fps
    wanted = sum(read(source)[1])  # 100 ms; Pillow before 11 writes whole milliseconds, 6 × 17
    held = "a GIF holds frame times in hundredths of a second, 20 ms or more"
    assert f"{held}; one play takes 120 ms instead of {wanted:.0f}" in caplog.text
    assert animation.gif_delays([25.0, 25.0, 25.0, 25.0]) == [20.0, 30.0, 20.0, 30.0]  # on time every other frame
    # a GIF's own times are kept, even those viewers show at 100 ms, as they show the source's; others' are not
    assert animation.gif_delays([0.0, 100.0, 10.0], from_gif=True) == [0.0, 100.0, 10.0]
    assert animation.gif_delays([0.0, 100.0, 10.0]) == [20.0, 80.0, 20.0]
    assert animation.gif_delays([10.0] * 4) == [20.0] * 4  # 100 fps: was kept at 10 ms, shown at 100


def test_frame_times_in_whole_milliseconds_do_not_drift(
    stylizer: Stylizer, pan: list[Image.Image], tmp_path: Path
) -> None:
    """WebP holds whole milliseconds: at 30 fps each frame's start is rounded, not each time (33 ms a frame would
    play 30 frames in 990 ms)."""
    source = tmp_path / "thirty.png"
    frames = (pan * 4)[:30]
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=[1000 / 30] * 30, loop=0)
    wanted = sum(read(source)[1])
    result = stylize_animation(stylizer, source, tmp_path / "thirty.webp", size=32, progress=False)
    _, durations, _, _ = read(tmp_path / "thirty.webp")
    assert len(durations) == 30 and set(durations) <= {33.0, 34.0}
    assert sum(durations) == round(wanted) == round(result.duration_ms)


def test_an_apng_default_image_is_not_taken_for_a_frame(
    stylizer: Stylizer, pan: list[Image.Image], tmp_path: Path
) -> None:
    source = tmp_path / "with_default.png"
    pan[0].save(source, save_all=True, append_images=pan[1:4], default_image=True, duration=[0, 50, 70, 90], loop=0)
    with Image.open(source) as image:
        assert image.n_frames == 4 and image.info["default_image"]
    result = stylize_animation(stylizer, source, tmp_path / "out.png", size=32, strength=0.0, progress=False)
    frames, _, _, _ = read(tmp_path / "out.png")
    assert result.frames == 3 and len(frames) == 3
    shown = [np.asarray(frame.resize((32, 21), Image.BILINEAR)) for frame in pan[1:4]]
    assert all(differs(a, b) < 2 for a, b in zip(frames, shown, strict=True))  # the animation's frames, in order


def test_loop_counts_beyond_what_a_format_holds_loop_forever(
    stylizer: Stylizer, pan: list[Image.Image], tmp_path: Path
) -> None:
    source = write(tmp_path / "many.gif", pan[:2], loop=65535)  # plays 65536 times: more than WebP can say
    result = stylize_animation(stylizer, source, tmp_path / "out.webp", size=32, progress=False)
    assert result.plays == 0 and read(tmp_path / "out.webp")[3] == 0


@pytest.mark.parametrize("suffix", [".gif", ".png", ".webp"])
def test_an_animation_may_be_written_as_a_video(
    stylizer: Stylizer, pan: list[Image.Image], tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    """Read as it is shown, by Pillow: FFmpeg reads no animated WebP (it was "no frames that could be decoded"), and
    gave an APNG's hidden colours under its transparency to the network, not white."""
    av = pytest.importorskip("av")
    source = write(tmp_path / f"pan{suffix}", pan, loop=0)
    assert main(["stylize", "--model", str(stylizer.path), str(source), "--out", str(tmp_path / "pan.mp4")]) == 0
    assert "stylized 1 of 1 video" in capsys.readouterr().out
    with av.open(str(tmp_path / "pan.mp4")) as container:
        times = [float(frame.time) for frame in container.decode(video=0)]
    assert times == pytest.approx(np.cumsum([0, *DURATIONS[:-1]]) / 1000, abs=0.011)  # each frame on its time
    clear = []
    for frame in pan[:3]:  # a cut-out: black where clear, which the network must see as white
        rgba = Image.new("RGBA", frame.size, (0, 0, 0, 0))
        rgba.paste(frame.crop((0, 0, 20, 20)), (10, 10))  # opaque
        clear.append(rgba)
    source = write(tmp_path / f"cut_out{suffix}", clear, loop=0)
    video = stylize_video(stylizer, source, tmp_path / "cut_out.mp4", strength=0.0, progress=False)
    assert video.frames == 3
    with av.open(str(tmp_path / "cut_out.mp4")) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert first[-8:, -8:].min() > 235  # white where clear (strength 0: what the network was given)


def test_a_frame_unlike_the_others_gets_a_palette_of_its_own(
    stylizer: Stylizer, pan: list[Image.Image], shared: Path, tmp_path: Path
) -> None:
    painting = Image.open(shared / "data/styles/matisse_woman_with_a_hat_1905.jpg").convert("RGB").resize(pan[0].size)
    frames = [*pan * 3, painting, *pan * 3]  # a cut to a painting and back: 1 frame in 49
    source = tmp_path / "cut.png"
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=100, loop=0)
    stylize_animation(stylizer, source, tmp_path / "cut.gif", strength=0.0, progress=False)
    shown, _, _, _ = read(tmp_path / "cut.gif")
    errors = [differs(a, np.asarray(b)) for a, b in zip(shown, frames, strict=True)]
    # 256 colours, dithered: the painting as close as its own palette brings it (6.0; 12.6 with a palette
    # chosen from 16 frames of the 49, which missed it), the pans closer
    assert errors[24] < 7.0 and max(errors[:24] + errors[25:]) < 4.0, errors


def test_frames_past_the_canvas_are_cut_and_a_file_cut_short_keeps_its_frames(
    stylizer: Stylizer, pan: list[Image.Image], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    whole = write(tmp_path / "pan.gif", pan, loop=0)
    data = whole.read_bytes()
    cut = tmp_path / "cut.gif"
    cut.write_bytes(data[: len(data) * 2 // 3])
    result = stylize_animation(stylizer, cut, tmp_path / "cut_out.gif", progress=False)
    assert 2 <= result.frames < 8 and f"keeping the {result.frames} before it" in caplog.text
    assert len(read(tmp_path / "cut_out.gif")[0]) == result.frames

    grown = tmp_path / "grown.gif"  # the last frame drawn 8 px past the canvas, which Pillow grows to show it
    pan[0].save(grown, save_all=True, append_images=pan[1:3], duration=100, loop=0, optimize=False)
    grown.write_bytes(moved_frame(grown.read_bytes(), 2, 8, 8))  # Pillow 12 reads frame 2 as 104x72
    result = stylize_animation(stylizer, grown, tmp_path / "grown_out.webp", progress=False)
    frames, _, _, _ = read(tmp_path / "grown_out.webp")
    assert (result.width, result.height) == (WIDTH, HEIGHT) and {f.shape for f in frames} == {(HEIGHT, WIDTH, 3)}


def grown_gif(path: Path, side: int) -> Path:
    """Two 10x10 frames, then a third of ``side``x``side`` pixels in one colour: a GIF of a few kB that Pillow grows
    to that size as it seeks to the third frame (a decompression bomb past the first frame's size check)."""
    small = io.BytesIO()
    frames = [Image.new("P", (10, 10), index) for index in (1, 2)]
    frames[0].save(small, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0, optimize=False)
    big = io.BytesIO()
    Image.new("P", (side, side), 3).save(big, "GIF", optimize=False)
    image = big.getvalue()
    at = 13 + (3 << ((image[10] & 7) + 1) if image[10] & 0x80 else 0)  # past the header and global colour table
    while image[at] == 0x21:  # extensions, up to the image descriptor
        at += 2
        while image[at]:
            at += image[at] + 1
        at += 1
    control = bytes([0x21, 0xF9, 4, 0, 10, 0, 0, 0])  # 100 ms
    path.write_bytes(small.getvalue()[:-1] + control + image[at:-1] + b";")
    with Image.open(path) as grown:
        assert grown.size == (10, 10) and grown.n_frames == 3
    return path


def test_a_later_frame_over_the_pixel_limit_is_refused_before_it_is_read(
    stylizer: Stylizer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the first frame's size was checked: a later GIF frame that grows Pillow's canvas to 3000x3000 was
    decoded whole (an 8000x8000 one of 48 kB took 1.4 GB under --max-pixels 1000000)."""
    source = grown_gif(tmp_path / "grown.gif", 3000)
    message = r"grown.gif's frame 3 has 3000x3000 pixels, over the limit of 1,000,000; downscale it first"
    with pytest.raises(PixelLimitError, match=message):
        stylize_animation(stylizer, source, tmp_path / "out.gif", progress=False, max_pixels=1_000_000)
    with pytest.raises(PixelLimitError, match=message):
        stylize_video(stylizer, source, tmp_path / "out.mp4", progress=False, max_pixels=1_000_000)
    argv = ["stylize", "--model", str(stylizer.path), str(source), "--device", "cpu", "--backend", "eager"]
    assert main([*argv, "--out", str(tmp_path / "cli.gif"), "--max-pixels", "1000000"]) == 1
    assert "frame 3 has 3000x3000 pixels, over the limit of 1,000,000" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grown.gif"]  # nothing written
    result = stylize_animation(stylizer, source, tmp_path / "out.gif", progress=False, max_pixels=9_000_000)
    assert (result.frames, result.width, result.height) == (3, 10, 10)  # within the limit: cut to the canvas


def test_a_gif_cut_at_the_edge_of_a_frame_keeps_the_frames_before_it(
    stylizer: Stylizer, pan: list[Image.Image], tmp_path: Path
) -> None:
    """Cut where a frame ends (a partial download), Pillow's frame count raises IndexError: the frames before the
    cut are stylized, as from a cut anywhere else, and the photo readers take its first frame."""
    from faststyle import data
    from faststyle.images import open_image

    gif = write(tmp_path / "pan.gif", pan, loop=0).read_bytes()
    starts = [i for i in range(len(gif)) if gif.startswith(b"\x21\xf9\x04", i)]  # each frame's control block
    assert len(starts) == len(pan)
    failed = set()
    for kept, start in enumerate(starts[1:4], start=1):
        for into in range(0, 30, 3):  # the cut in the next frame's headers, before its pixels
            cut = tmp_path / "cut.gif"
            cut.write_bytes(gif[: start + into])
            with Image.open(cut) as image:
                try:
                    image.n_frames  # noqa: B018
                except Exception as exc:  # noqa: BLE001 - what Pillow raises, by where the cut falls
                    failed.add(type(exc).__name__)
            result = stylize_animation(stylizer, cut, tmp_path / "out.gif", progress=False)
            assert result.frames == kept and len(read(tmp_path / "out.gif")[0]) == kept, (kept, into)
            assert animation.is_animation(cut) == (kept > 1)
            assert open_image(cut).size == (WIDTH, HEIGHT)
            assert data._open({"path": str(cut)}).size == (WIDTH, HEIGHT)  # a training photo
    assert failed == {"IndexError", "error"}  # struct.error: the cases that were tracebacks


def test_a_gif_has_one_palette_for_all_its_frames(stylizer: Stylizer, pan: list[Image.Image], tmp_path: Path) -> None:
    source = write(tmp_path / "pan.png", pan)
    stylize_animation(stylizer, source, tmp_path / "out.gif", progress=False)
    frames, _, _, _ = read(tmp_path / "out.gif")
    colours = np.unique(np.concatenate([frame.reshape(-1, 3) for frame in frames]), axis=0)
    assert len(colours) <= 256  # frame-by-frame palettes would give each frame its own 256
    per_frame = [len(np.unique(frame.reshape(-1, 3), axis=0)) for frame in frames]
    assert min(per_frame) > 64  # and the palette is used: a painting's colours, not a few levels


def test_frames_are_read_as_shown_with_disposal_and_transparency(stylizer: Stylizer, tmp_path: Path) -> None:
    """A sprite moving on a transparent canvas, cleared each frame (disposal 2): at strength 0 the output frames
    are the input's as a viewer shows them, over white."""
    frames = []
    for step in range(4):
        frame = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
        frame.paste((200, 30, 30, 255), (step * 8, 10, step * 8 + 10, 20))
        frames.append(frame)
    source = write(tmp_path / "sprite.gif", frames, disposal=2, loop=0)
    stylize_animation(stylizer, source, tmp_path / "shown.png", strength=0.0, progress=False)
    shown, durations, _, _ = read(tmp_path / "shown.png")
    for step, frame in enumerate(shown):
        red = np.argwhere((frame == (200, 30, 30)).all(axis=-1))
        assert red[:, 1].min() == step * 8 and red[:, 1].max() == step * 8 + 9  # the sprite alone: no trail
        assert (frame[0, 0] == 255).all() and len(red) == 100  # the rest is white
    assert durations == DURATIONS[:4]


@pytest.mark.parametrize("suffix", [".png", ".webp", ".gif"])
def test_transparency_is_kept(stylizer: Stylizer, tmp_path: Path, suffix: str) -> None:
    """A sprite with a half-transparent edge moving over a transparent canvas: every output frame is transparent
    where that frame is, with no trail of the frames before, in APNG and WebP as it was, in GIF on or off."""
    frames = []
    for step in range(3):
        frame = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
        frame.paste((200, 30, 30, 255), (step * 8, 10, step * 8 + 10, 20))
        frame.paste((200, 30, 30, 100), (step * 8 + 10, 10, step * 8 + 12, 20))
        frames.append(frame)
    source = write(tmp_path / "sprite.png", frames, loop=0)
    stylize_animation(stylizer, source, tmp_path / f"out{suffix}", progress=False)
    edge = 0 if suffix == ".gif" else 100  # less than half opaque: a GIF's pixel is off
    with Image.open(tmp_path / f"out{suffix}") as image:
        assert image.n_frames == 3
        for step in range(3):
            image.seek(step)
            shown = np.asarray(image.convert("RGBA"))
            expected = np.asarray(frames[step].getchannel("A")).copy()
            expected[expected == 100] = edge
            assert (shown[..., 3] == expected).all(), (step, shown[..., 3][10])
            sprite = shown[10:20, step * 8 : step * 8 + 10, :3].astype(float)
            assert np.abs(sprite - (200, 30, 30)).mean() > 20  # stylized, not the sprite's red


def test_a_strength_map_applies_to_every_frame(stylizer: Stylizer, pan: list[Image.Image], tmp_path: Path) -> None:
    source = write(tmp_path / "pan.png", pan)
    mask = torch.zeros(1, 1, HEIGHT, WIDTH)
    mask[..., : WIDTH // 2] = 1
    stylize_animation(stylizer, source, tmp_path / "masked.png", strength=mask, progress=False)
    frames, _, _, _ = read(tmp_path / "masked.png")
    right = np.s_[:, WIDTH // 2 + 4 :]
    for frame, original in zip(frames, pan, strict=True):
        assert differs(frame[right], np.asarray(original)[right]) < 0.5  # the photo, to 8-bit rounding
        assert differs(frame[:, : WIDTH // 2 - 4], np.asarray(original)[:, : WIDTH // 2 - 4]) > 10  # painted


def test_a_gif_palette_is_chosen_from_the_pixels_that_stay_visible(shared: Path) -> None:
    """A photo on the left quarter of each frame, the rest transparent over either white or random colours (as a
    network paints a transparent canvas): the photo comes out the same, its palette not spent on the noise."""
    photo = np.asarray(Image.open(shared / "data/content/chicago.jpg").convert("RGB").resize((192, 128)))
    visible = np.s_[:, : 192 // 4]

    def round_trip(under: np.ndarray | int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        frames = []
        for step in range(4):
            rgb = np.roll(photo, 4 * step, axis=1)
            rgb[:, 192 // 4 :] = under
            alpha = np.zeros(rgb.shape[:2], np.uint8)
            alpha[visible] = 255
            frames.append(np.dstack([rgb, alpha]))
        data = animation.encode([Image.fromarray(f, "RGBA") for f in frames], [100] * 4, 0, "GIF")
        with Image.open(io.BytesIO(data)) as image:
            shown = [np.asarray(frame.convert("RGBA")) for frame in ImageSequence.Iterator(image)]
        return frames, shown

    frames, over_white = round_trip(255)
    _, over_noise = round_trip(np.random.default_rng(0).integers(0, 256, (128, 144, 3)))
    _, over_black = round_trip(0)
    for frame, white, noise, black in zip(frames, over_white, over_noise, over_black, strict=True):
        assert (noise[..., 3] == frame[..., 3]).all()
        # what lies under the transparency changes neither the palette nor, through the dithering, a visible pixel
        # (3.22 against 2.83 on frame 0 when the noise counted for the palette; then up to 0.6 levels apart)
        assert (noise[visible] == white[visible]).all() and (black[visible] == white[visible]).all()
        assert differs(white[visible][..., :3], frame[visible][..., :3]) < 3.0  # 2.66–2.83


def test_cli_keeps_animations_beside_images(
    stylizer: Stylizer,
    pan: list[Image.Image],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    write(inputs / "pan.gif", pan, loop=0)
    write(inputs / "wave.webp", pan[:4], loop=2)
    pan[0].save(inputs / "still.gif")  # one frame: an image
    model = str(stylizer.path)
    out = tmp_path / "out"
    assert main(["stylize", "--model", model, str(inputs), "--out", str(out), "--size", "48"]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["pan_starry.gif", "still_starry.png", "wave_starry.webp"]
    assert "stylized 1 of 1 image and 2 of 2 animations with starry" in captured.out
    assert "pan.gif: 8 frames, 48x32, 1.05 s a play, loops forever" in captured.err
    assert "wave.webp: 4 frames, 48x32, 0.24 s a play, plays 2 times" in captured.err
    assert len(read(out / "wave_starry.webp")[0]) == 4

    assert main(["stylize", "--model", model, str(inputs / "pan.gif"), "--out", str(tmp_path / "first.jpg")]) == 0
    assert "pan.gif is an animation of 8 frames; using the first (stylize_animation, or faststyle stylize" in (
        caplog.text
    )
    with Image.open(tmp_path / "first.jpg") as still:
        assert still.format == "JPEG" and still.size == (WIDTH, HEIGHT)

    misnamed = tmp_path / "misnamed.jpg"  # a GIF by its content
    misnamed.write_bytes((inputs / "pan.gif").read_bytes())
    assert main(["stylize", "--model", model, str(misnamed), "--out", str(tmp_path / "named")]) == 0
    assert len(read(tmp_path / "named" / "misnamed_starry.gif")[0]) == 8

    folder = tmp_path / "as_jpg"
    assert main(["stylize", "--model", model, str(inputs), "--out", str(folder), "--format", "jpg"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["pan_starry.jpg", "still_starry.jpg", "wave_starry.jpg"]


def test_errors_say_what_to_do(
    stylizer: Stylizer, pan: list[Image.Image], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(tmp_path / "pan.gif", pan, loop=0)
    with pytest.raises(FaststyleError, match=r"cannot write an animation as 'out.jpg'; end the file name in \.gif"):
        stylize_animation(stylizer, source, tmp_path / "out.jpg")
    with pytest.raises(FaststyleError, match="is the animation being stylized; name another file"):
        stylize_animation(stylizer, source, source)
    with pytest.raises(FaststyleError, match="does not exist"):
        stylize_animation(stylizer, tmp_path / "missing.gif", tmp_path / "out.gif")
    with pytest.raises(FaststyleError, match=r"cannot write an animation as 'out.mp4'.*faststyle.stylize_video"):
        stylize_animation(stylizer, source, tmp_path / "out.mp4")
    with pytest.raises(FaststyleError, match="clip.mp4 is a video; stylize it with faststyle.stylize_video"):
        stylize_animation(stylizer, tmp_path / "clip.mp4", tmp_path / "out.gif")
    tiff = tmp_path / "pages.tif"
    pan[0].save(tiff, save_all=True, append_images=pan[1:3])
    with pytest.raises(FaststyleError, match="is a TIFF file; animations are read from GIF, PNG and WebP"):
        stylize_animation(stylizer, tiff, tmp_path / "out.gif")
    monkeypatch.setattr(animation, "MAX_HELD_BYTES", 8 * WIDTH * HEIGHT * 3 - 1)
    with pytest.raises(
        FaststyleError, match=r"8 frames of 96x64.*give a smaller --size, or write it as a video \(--out NAME.mp4"
    ):
        stylize_animation(stylizer, source, tmp_path / "out.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pages.tif", "pan.gif"]  # nothing written
    assert stylize_animation(stylizer, source, tmp_path / "out.gif", size=48, progress=False).width == 48


def test_animations_are_recognised_past_pillows_pixel_limit_without_its_warning(
    pan: list[Image.Image], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``faststyle stylize`` asks of every input whether it is an animation: Pillow's own limit (89 MP, which ours,
    180 MP, is above) must neither warn of a decompression bomb on a large photo nor take a large animation for a
    still (over twice its limit Pillow refuses to open the file)."""
    source = write(tmp_path / "pan.gif", pan, loop=0)
    photo = tmp_path / "photo.png"
    pan[0].crop((0, 0, WIDTH // 2, HEIGHT)).save(photo)  # 1.5x over the limit below: Pillow warns
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", WIDTH * HEIGHT // 3)  # the pan's frames are 3x over it: refused
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert animation.animated_format(source) == "GIF"
        assert animation.animated_format(photo) is None
    assert Image.MAX_IMAGE_PIXELS == WIDTH * HEIGHT // 3  # put back


def test_an_animation_too_wide_for_webp_is_refused_before_it_is_stylized(stylizer: Stylizer, tmp_path: Path) -> None:
    source = write(tmp_path / "wide.gif", [Image.new("RGB", (17_000, 4), colour) for colour in ("red", "blue")])
    with pytest.raises(FaststyleError, match=r"WEBP holds at most 16,383 pixels a side, not 17000x4; write \.png"):
        stylize_animation(stylizer, source, tmp_path / "wide.webp", progress=False)
    assert not (tmp_path / "wide.webp").exists()
