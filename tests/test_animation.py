"""Animated GIF, PNG and WebP files through ``stylize_animation`` and ``faststyle stylize``.

The animations are made with Pillow from a pan across the shared Chicago photo. The network is an untrained
width-0.5 one, whose output is far from the photo, which is what the checks need.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pan_frames
from PIL import Image

from faststyle import animation
from faststyle.animation import stylize_animation
from faststyle.cli import main
from faststyle.errors import FaststyleError
from faststyle.modelfile import save_model
from faststyle.stylize import Stylizer
from faststyle.transformer import TransformerNet

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


def test_cli_keeps_animations_beside_images(
    stylizer: Stylizer, pan: list[Image.Image], shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
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
    captured = capsys.readouterr()
    assert "pan.gif is animated; first.jpg gets its first frame (a .gif, .webp or .png output keeps" in captured.err
    with Image.open(tmp_path / "first.jpg") as still:
        assert still.format == "JPEG" and still.size == (WIDTH, HEIGHT)

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
    tiff = tmp_path / "pages.tif"
    pan[0].save(tiff, save_all=True, append_images=pan[1:3])
    with pytest.raises(FaststyleError, match="is a TIFF file; animations are read from GIF, PNG and WebP"):
        stylize_animation(stylizer, tiff, tmp_path / "out.gif")
    monkeypatch.setattr(animation, "MAX_HELD_BYTES", 8 * WIDTH * HEIGHT * 3 - 1)
    with pytest.raises(FaststyleError, match=r"8 frames of 96x64.*give a smaller --size, or convert it to a video"):
        stylize_animation(stylizer, source, tmp_path / "out.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pages.tif", "pan.gif"]  # nothing written
    assert stylize_animation(stylizer, source, tmp_path / "out.gif", size=48, progress=False).width == 48
