"""Video files through ``stylize_video`` and ``faststyle stylize``: frames, timing, sound, rotation, errors.

The clips are made with PyAV (``conftest.write_clip``) from the shared photos: a pan across Chicago, with a tone as
sound. The network is an untrained width-0.5 one, whose output is far from the photo, which is what the checks need.
"""

from __future__ import annotations

import os
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLIP_FPS as FPS
from conftest import SHARED, pan_frames, write_clip
from PIL import Image

from faststyle.cli import main
from faststyle.errors import FaststyleError
from faststyle.modelfile import save_model
from faststyle.stylize import Stylizer
from faststyle.transformer import TransformerNet
from faststyle.video import even_size, frame_pixels, is_video, stylize_video

av = pytest.importorskip("av")

WIDTH, HEIGHT = 160, 96


@pytest.fixture(scope="module")
def stylizer(tmp_path_factory: pytest.TempPathFactory) -> Stylizer:
    torch.manual_seed(0)
    path = save_model(TransformerNet(width=0.5), tmp_path_factory.mktemp("models") / "starry.safetensors", metadata={})
    return Stylizer(path, device="cpu")


@pytest.fixture(scope="module")
def pan(shared: Path) -> list[np.ndarray]:
    frames = pan_frames(WIDTH, HEIGHT)
    assert all(f.shape == (HEIGHT, WIDTH, 3) for f in frames)
    return frames


def read_clip(path: Path) -> tuple[list[np.ndarray], list[float], dict[str, object]]:
    """Decoded frames (uint8 H×W×3), their times in seconds, and facts about the file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        facts: dict[str, object] = {
            "codec": stream.codec_context.name,
            "streams": [s.type for s in container.streams],
            "audio_seconds": 0.0,
        }
        frames, times = [], []
        for frame in container.decode(video=0):
            frames.append(frame_pixels(frame).permute(1, 2, 0).numpy())
            times.append(float(frame.pts * frame.time_base))
    if container_has_audio(path):
        with av.open(str(path)) as container:
            decoded = [f for f in container.decode(audio=0)]
            facts["audio_seconds"] = sum(f.samples for f in decoded) / decoded[0].sample_rate
            facts["audio_codec"] = container.streams.audio[0].codec_context.codec.canonical_name
            facts["audio_start"] = float(decoded[0].pts * decoded[0].time_base)
            last = decoded[-1]
            facts["audio_end"] = float(last.pts * last.time_base) + last.samples / last.sample_rate
            facts["audio"] = np.concatenate([f.to_ndarray()[0] for f in decoded])
    return frames, times, facts


def container_has_audio(path: Path) -> bool:
    with av.open(str(path)) as container:
        return bool(container.streams.audio)


def luma(frame: np.ndarray) -> np.ndarray:
    return frame.astype(float) @ np.array([0.299, 0.587, 0.114])


def frames_through(stylizer: Stylizer, frames: list[np.ndarray], **options: object) -> list[np.ndarray]:
    """What the stylizer makes of each frame on its own, as uint8."""
    batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    out = stylizer(batch, **options)
    return list(out.mul(255).round().byte().permute(0, 2, 3, 1).numpy())


def test_each_frame_is_stylized_with_its_timing_and_sound(
    stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path
) -> None:
    source = write_clip(tmp_path / "pan.mp4", pan)
    result = stylize_video(stylizer, source, tmp_path / "out" / "pan_starry.mp4", batch=3, progress=False)
    assert (result.frames, result.width, result.height, result.frame_rate, result.audio) == (
        8, WIDTH, HEIGHT, FPS, "copied"
    )  # fmt: skip
    frames_in, times_in, facts_in = read_clip(source)
    frames_out, times_out, facts_out = read_clip(result.path)
    assert facts_out["codec"] == "h264" and facts_out["streams"] == ["video", "audio"]
    assert times_out == pytest.approx(times_in) and times_out == pytest.approx([i / FPS for i in range(8)])
    # the sound is copied, not re-encoded: the same samples
    assert facts_out["audio_seconds"] == pytest.approx(facts_in["audio_seconds"]) and facts_in["audio_seconds"] > 0.7
    np.testing.assert_array_equal(facts_out["audio"], facts_in["audio"])
    # each output frame is the network's output for its input frame, up to the encoder's loss (measured: 2.0-2.4
    # levels of luma; the colours of this untrained network's fine pattern lose more to 4:2:0 chroma) ...
    expected = frames_through(stylizer, frames_in)
    errors = [np.abs(luma(a) - luma(b)).mean() for a, b in zip(frames_out, expected, strict=True)]
    assert max(errors) < 3.0, errors
    # ... and far from the photo itself and from the next frame's output (the pan moves 6 px a frame)
    assert min(np.abs(luma(a) - luma(b)).mean() for a, b in zip(frames_out, frames_in, strict=True)) > 25
    assert np.abs(luma(frames_out[0]) - luma(expected[1])).mean() > 3 * max(errors)
    assert not list(result.path.parent.glob(".*")), "the temporary file is left behind"


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_variable_frame_rate_keeps_its_timestamps(
    stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path, suffix: str
) -> None:
    milliseconds = [0, 7, 40, 41, 300, 333, 350, 700]  # a camera's uneven times, 1 ms apart at the closest
    source = write_clip(tmp_path / f"vfr{suffix}", pan, pts=milliseconds, sound=None, time_base=Fraction(1, 1000))
    result = stylize_video(stylizer, source, tmp_path / f"vfr_out{suffix}", progress=False)
    _, times, facts = read_clip(result.path)
    assert times == pytest.approx([t / 1000 for t in milliseconds], abs=1e-6)
    assert result.audio == "none" and facts["streams"] == ["video"]


def test_frames_without_timestamps_are_spread_at_the_frame_rate(
    stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path
) -> None:
    source = write_clip(tmp_path / "raw.h264", pan, sound=None, muxer="h264")  # a bare stream: no timestamps
    with av.open(str(source)) as container:
        assert all(frame.pts is None for frame in container.decode(video=0))
    result = stylize_video(stylizer, source, tmp_path / "raw.mp4", progress=False)
    _, times, _ = read_clip(result.path)
    assert result.frames == 8 and result.frame_rate == pytest.approx(FPS)  # the stream's own rate, not a default
    assert times == pytest.approx([i / FPS for i in range(8)], abs=1e-3)


def test_colours_come_back_unshifted(stylizer: Stylizer, tmp_path: Path) -> None:
    """At strength 0 the output is the input: no level lost to rounding, and each declared matrix honoured."""
    patches = np.zeros((96, 160, 3), np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 60, 30), (30, 120, 200), (128, 128, 128)]
    for i, colour in enumerate(colours):
        patches[:, i * 26 : i * 26 + 26] = colour
    from av.video.reformatter import Colorspace

    matrices = [None, 1] + ([9] if "BT2020" in Colorspace.__members__ else [])  # PyAV 17 has no BT.2020 matrix
    for colorspace in matrices:  # untagged (BT.601 below 720 lines), BT.709, BT.2020
        source = write_clip(tmp_path / f"patches{colorspace}.mp4", [patches] * 3, sound=None, colorspace=colorspace)
        result = stylize_video(stylizer, source, tmp_path / f"out{colorspace}.mp4", strength=0.0, progress=False)
        out = read_clip(result.path)[0][1].astype(float)
        centres = [out[30:66, i * 26 + 8 : i * 26 + 18].mean(axis=(0, 1)) for i in range(len(colours))]
        np.testing.assert_allclose(centres, np.array(colours, float), atol=4, err_msg=f"colorspace {colorspace}")


def test_a_strength_0_pass_keeps_the_levels(stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path) -> None:
    source = write_clip(tmp_path / "pan.mp4", pan, sound=None)
    result = stylize_video(stylizer, source, tmp_path / "copy.mp4", strength=0.0, progress=False)
    frames_in, frames_out = read_clip(source)[0], read_clip(result.path)[0]
    difference = np.stack(frames_out).astype(float) - np.stack(frames_in)
    bias = difference.mean(axis=(0, 1, 2))  # swscale's default rounding made it 1-1.5 levels darker
    assert np.abs(bias).max() < 0.3 and np.abs(difference).mean() < 2.0, (bias, np.abs(difference).mean())


@pytest.mark.parametrize(("sound", "suffix", "codec"), [("libopus", ".mov", "aac"), ("aac", ".webm", "opus")])
def test_sound_a_container_cannot_hold_is_re_encoded_in_step(
    stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path, sound: str, suffix: str, codec: str
) -> None:
    # the video starts at 2 s, the sound at 0 and runs to 3 s: both starts must stay where they are
    source = write_clip(tmp_path / "clip.mkv", pan, pts=list(range(20, 28)), sound=sound, sound_seconds=3.0)
    result = stylize_video(stylizer, source, tmp_path / f"out{suffix}", progress=False)  # PyAV lists opus for .mov
    assert result.frames == 8 and result.audio == f"re-encoded from {sound.removeprefix('lib')} to {codec}"
    _, times_in, facts_in = read_clip(source)
    _, times_out, facts_out = read_clip(result.path)
    assert times_out == pytest.approx(times_in) and times_out[0] == pytest.approx(2.0)
    assert facts_out["audio_codec"] == codec and facts_out["audio_start"] == pytest.approx(0.0, abs=0.01)
    assert facts_out["audio_end"] == pytest.approx(facts_in["audio_end"], abs=0.03)

    def loudness(samples: np.ndarray) -> float:  # the tone's, away from the encoders' ramps
        return float(np.sqrt(np.mean(samples[4800:-4800] ** 2)))

    assert loudness(facts_out["audio"]) == pytest.approx(loudness(facts_in["audio"]), rel=0.05)
    assert loudness(facts_in["audio"]) > 0.1
    assert stylize_video(stylizer, source, tmp_path / "out.mkv", progress=False).audio == "copied"


@pytest.mark.parametrize(
    ("codec", "rate", "layout", "source", "suffix", "expected"),
    [
        ("pcm_s16le", 48_000, "5.1(side)", ".mkv", ".webm", ("opus", 48_000, "5.1")),  # AC3's usual layout; Opus's own
        ("flac", 192_000, "stereo", ".mkv", ".mov", ("aac", 96_000, "stereo")),  # over AAC's highest rate
        ("pcm_s16le", 16_000, "stereo", ".mov", ".mp4", ("aac", 16_000, "stereo")),  # MP4's PCM does not play
        ("pcm_s16le", 48_000, "5.1(side)", ".mov", ".webm", ("opus", 48_000, "5.1")),  # read back as 5.1(side)
        ("vorbis", 48_000, "stereo", ".mkv", ".mp4", ("aac", 48_000, "stereo")),  # players do not play it in MP4
    ],
    ids=["surround-into-webm", "192-khz-into-mov", "pcm-into-mp4", "side-surround-into-webm", "vorbis-into-mp4"],
)  # fmt: skip
def test_sound_is_re_encoded_at_a_rate_and_layout_the_encoder_takes(
    stylizer: Stylizer,
    pan: list[np.ndarray],
    tmp_path: Path,
    codec: str,
    rate: int,
    layout: str,
    source: str,
    suffix: str,
    expected: tuple,
) -> None:
    """The encoder was opened with the sound's own rate and layout, and the video failed with FFmpeg's "Invalid
    argument" after its frames were stylized."""
    clip = write_clip(
        tmp_path / f"clip{source}", pan[:2], sound=codec, sound_rate=rate, layout=layout, sound_seconds=1.0
    )
    result = stylize_video(stylizer, clip, tmp_path / f"out{suffix}", progress=False)
    assert result.audio == f"re-encoded from {codec.removeprefix('lib')} to {expected[0]}"
    with av.open(str(result.path)) as written:
        sound = written.streams.audio[0]
        assert (sound.codec_context.codec.canonical_name, sound.rate, sound.layout.name) == expected
        decoded = [f for f in written.decode(audio=0)]
    tone = np.concatenate([f.to_ndarray()[0] for f in decoded])
    assert sum(f.samples for f in decoded) / expected[1] == pytest.approx(1.0, abs=0.05)
    assert float(np.sqrt(np.mean(tone[len(tone) // 4 : -len(tone) // 4] ** 2))) > 0.1  # the tone, not silence


def test_a_recording_whose_clock_starts_late_starts_at_zero(
    stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path
) -> None:
    """A broadcast or camcorder recording's clock may read hours at its first frame: the output kept that as an
    empty start (a one-second clip became an hour long, the picture in its last second)."""
    clip = write_clip(tmp_path / "clip.ts", pan, muxer="mpegts")
    late = tmp_path / "late.ts"
    with av.open(str(clip)) as source, av.open(str(late), "w", "mpegts", {"output_ts_offset": "3600"}) as output:
        streams = {s.index: output.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                output.mux(packet)
    _, times_in, facts_in = read_clip(late)
    assert times_in[0] > 3600
    for suffix in (".mp4", ".mkv", ".webm"):  # the sound copied, and re-encoded (AAC into WebM becomes Opus)
        result = stylize_video(stylizer, late, tmp_path / f"out{suffix}", progress=False)
        assert result.audio == ("re-encoded from aac to opus" if suffix == ".webm" else "copied")
        _, times_out, facts_out = read_clip(result.path)
        with av.open(str(result.path)) as written:
            assert written.duration / 1e6 < 1.5, suffix
        assert times_out[0] < 0.2
        assert np.diff(times_out) == pytest.approx(np.diff(times_in), abs=1e-3)
        # the sound in step: each starts where it did against the other
        started = times_out[0] - facts_out["audio_start"]
        assert started == pytest.approx(times_in[0] - facts_in["audio_start"], abs=0.03), suffix


def test_sound_that_starts_before_time_zero_moves_nothing(
    stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path
) -> None:
    """Only a late start is taken off: a Matroska file whose sound starts half a second before its picture, at -0.5 s,
    keeps the picture at 0 where its sound is re-encoded (from time 0), and the sound half a second ahead where it is
    copied (the muxer then starts the file at the sound). Taking that start off as a late one put the picture over
    half a second late in WebM."""
    clip = write_clip(tmp_path / "clip.mkv", pan)
    early = tmp_path / "early.mkv"
    keep_negative = {"avoid_negative_ts": "disabled"}
    with av.open(str(clip)) as source, av.open(str(early), "w", "matroska", keep_negative) as output:
        streams = {s.index: output.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.size:
                if packet.stream.type == "audio":  # milliseconds in Matroska
                    packet.pts, packet.dts = packet.pts - 500, packet.dts - 500
                packet.stream = streams[packet.stream.index]
                output.mux(packet)
    _, times_in, facts_in = read_clip(early)
    assert times_in[0] == 0 and facts_in["audio_start"] == pytest.approx(-0.5)

    result = stylize_video(stylizer, early, tmp_path / "out.webm", progress=False)
    assert result.audio == "re-encoded from aac to opus"
    _, times_out, facts_out = read_clip(result.path)
    assert times_out == pytest.approx(times_in, abs=2e-3)
    assert facts_out["audio_start"] == pytest.approx(0, abs=0.01)
    assert facts_out["audio_end"] == pytest.approx(facts_in["audio_end"], abs=0.03)

    result = stylize_video(stylizer, early, tmp_path / "out.mkv", progress=False)
    _, times_out, facts_out = read_clip(result.path)
    assert np.diff(times_out) == pytest.approx(np.diff(times_in), abs=1e-3)
    assert times_out[0] - facts_out["audio_start"] == pytest.approx(0.5, abs=0.01)


def test_sound_a_browser_may_not_play_is_re_encoded_when_asked(
    stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path
) -> None:
    """``audio_codecs`` (the demo's Video tab: AAC and MP3, which every browser plays in MP4): FLAC, which MP4 holds,
    is copied by default and re-encoded to AAC when only those may be copied."""
    clip = write_clip(tmp_path / "clip.mkv", pan[:4], sound="flac", sound_seconds=0.5)
    assert stylize_video(stylizer, clip, tmp_path / "kept.mp4", progress=False).audio == "copied"
    result = stylize_video(stylizer, clip, tmp_path / "out.mp4", progress=False, audio_codecs=("aac", "mp3"))
    assert result.audio == "re-encoded from flac to aac"
    assert read_clip(result.path)[2]["audio_codec"] == "aac"


def test_an_animation_becomes_a_video_of_its_shown_frames(
    stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path
) -> None:
    """An APNG's separate default image (shown only where animation is not) is no frame, and a 0 ms frame (which an
    APNG may have) still gets a time of its own, a millisecond after the one before, so that the frames' times rise."""
    frames = [Image.fromarray(f) for f in pan[:4]]
    apng = tmp_path / "with_default.png"
    frames[0].save(apng, save_all=True, append_images=frames[1:], default_image=True, duration=100, loop=0)
    result = stylize_video(stylizer, apng, tmp_path / "apng.mp4", strength=0.0, progress=False)
    decoded, times, _ = read_clip(result.path)
    assert result.frames == len(decoded) == 3 and times == pytest.approx([0, 0.1, 0.2], abs=1e-3)
    assert np.abs(decoded[0].astype(float) - pan[1]).mean() < np.abs(decoded[0].astype(float) - pan[0]).mean()

    instant = tmp_path / "instant.png"
    frames[0].save(instant, save_all=True, append_images=frames[1:], duration=[100, 0, 100, 100], loop=0)
    _, times, _ = read_clip(stylize_video(stylizer, instant, tmp_path / "instant.mp4", progress=False).path)
    assert times == pytest.approx([0, 0.1, 0.101, 0.2], abs=1e-4)


def test_the_last_frame_keeps_its_own_duration(stylizer: Stylizer, tmp_path: Path) -> None:
    """A GIF's long last pause (100, 100, 100, 2000 ms) was cut to the others' 100 ms in a video, and a clip's
    last frame too: nothing gave the encoder or the muxer its duration."""
    frames = [Image.new("RGB", (64, 48), (60 * i, 90, 120)) for i in range(4)]
    gif = tmp_path / "hold.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[100, 100, 100, 2000], loop=0)
    source = gif
    for suffix in (".mp4", ".mkv", ".mov"):  # an animation, then a video each (the mov muxer ends a track its way)
        target = tmp_path / f"from_{source.suffix[1:]}{suffix}"
        stylize_video(stylizer, source, target, progress=False)
        _, times, _ = read_clip(target)
        with av.open(str(target)) as written:
            assert written.duration / 1e6 == pytest.approx(2.3, abs=0.02), target.name
        assert times == pytest.approx([0, 0.1, 0.2, 0.3], abs=1e-3)
        source = target


def test_videos_are_known_by_their_suffixes(stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path, capsys) -> None:
    """A DVD's .vob (or .dv, .y4m, .m2v …) was read as an image: "cannot read … as an image"."""
    assert all(is_video(f"clip{suffix}") for suffix in (".vob", ".dv", ".y4m", ".m2v", ".asf", ".divx", ".m2t"))
    vob = write_clip(tmp_path / "disc.vob", pan[:4], sound=None, muxer="vob")
    assert stylizer.path is not None
    assert main(["stylize", "--model", str(stylizer.path), str(vob), "--out", str(tmp_path / "disc.mp4")]) == 0
    assert "disc.vob: 4 frames" in capsys.readouterr().err
    assert even_size(1, 40, None) == (2, 40)  # a one-pixel-high animation, made a video


@pytest.mark.parametrize(("audio_format", "layout"), [("fltp", "mono"), ("s16", "stereo")])
def test_audio_before_time_zero_is_trimmed_before_re_encoding(audio_format: str, layout: str) -> None:
    """An AAC decoder's priming samples come before time 0; encoded, they made FFmpeg 8.0's WebM muxer shift the
    video 64 ms late (PyAV 17)."""
    from faststyle.video import _from_time_zero

    values = np.arange(2048).reshape(1, -1).astype(np.int16 if audio_format == "s16" else np.float32)
    frame = av.AudioFrame.from_ndarray(values, format=audio_format, layout=layout)  # s16 stereo: interleaved
    frame.sample_rate, frame.time_base, frame.pts = 16_000, Fraction(1, 16_000), -320
    kept = _from_time_zero(av, frame)
    assert (kept.pts, kept.samples, kept.format.name) == (0, frame.samples - 320, audio_format)
    channels = len(frame.layout.channels)
    np.testing.assert_array_equal(kept.to_ndarray(), values[:, 320 * channels :])
    frame.pts = -frame.samples
    assert _from_time_zero(av, frame) is None
    frame.pts = 5
    assert _from_time_zero(av, frame) is frame


def test_camcorder_avi_with_pcm_sound_and_wide_pixels(
    stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path
) -> None:
    """PCM in AVI has no channel order ("2 channels"), which MP4 and AAC refuse; DV-like pixels are 4:3 wide."""
    source = tmp_path / "cam.avi"
    with av.open(str(source), "w") as output:
        video = output.add_stream("mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.codec_context.sample_aspect_ratio = Fraction(4, 3)
        sound = output.add_stream("pcm_s16le", rate=16_000, layout="stereo")
        for i, array in enumerate(pan[:4]):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = i
            output.mux(video.encode(frame))
        output.mux(video.encode())
        tone = (np.sin(np.arange(2 * 6400) / 5) * 8000).astype(np.int16).reshape(1, -1)  # 0.4 s, interleaved
        chunk = av.AudioFrame.from_ndarray(tone, format="s16", layout="stereo")
        chunk.sample_rate, chunk.pts = 16_000, 0
        output.mux(sound.encode(chunk))
        output.mux(sound.encode())
    with av.open(str(source)) as container:
        assert container.streams.audio[0].layout.name == "2 channels"
    result = stylize_video(stylizer, source, tmp_path / "cam.mp4", progress=False)
    assert result.frames == 4 and result.audio == "re-encoded from pcm_s16le to aac"
    with av.open(str(result.path)) as container:
        assert container.streams.video[0].sample_aspect_ratio == Fraction(4, 3)
        assert container.streams.audio[0].layout.name == "stereo"


def test_odd_sides_lose_their_last_row_and_column_not_a_resampling(stylizer: Stylizer, tmp_path: Path) -> None:
    frames = pan_frames(161, 97)[:2]
    source = tmp_path / "odd.mkv"
    with av.open(str(source), "w") as output:  # 4:4:4 holds odd sides; 4:2:0 output cannot
        video = output.add_stream("libx264", rate=FPS, options={"crf": "0"})
        video.width, video.height, video.pix_fmt = 161, 97, "yuv444p"
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = i
            output.mux(video.encode(frame))
        output.mux(video.encode())
    result = stylize_video(stylizer, source, tmp_path / "odd.mp4", strength=0.0, progress=False)
    assert (result.width, result.height) == (160, 96)
    decoded_in, decoded_out = read_clip(source)[0][0], read_clip(result.path)[0][0]
    # cropped, not scaled by 160/161: the encoder's loss is left (2.1 levels; scaled, 6.1)
    assert np.abs(decoded_out.astype(float) - decoded_in[:96, :160]).mean() < 3.0


def test_size_strength_and_webm(stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path) -> None:
    source = write_clip(tmp_path / "pan.mp4", pan)
    result = stylize_video(stylizer, source, tmp_path / "small.webm", size=75, strength=0.0, progress=False)
    # 160×96 at 75 px: 75×45, rounded down to even sides for 4:2:0 video
    assert (result.width, result.height) == (74, 44) == even_size(96, 160, 75)[::-1]
    assert result.audio == "re-encoded from aac to opus"
    frames_out, _, facts = read_clip(result.path)
    assert facts["codec"] == "vp9" and facts["streams"] == ["video", "audio"] and facts["audio_codec"] == "opus"
    # strength 0 is the photo itself, scaled
    photo = torch.from_numpy(pan[0]).permute(2, 0, 1)[None].float()
    scaled = torch.nn.functional.interpolate(photo, size=(44, 74), mode="bilinear", antialias=True)
    scaled = scaled.round().clamp(0, 255)[0].permute(1, 2, 0).numpy()
    assert np.abs(frames_out[0].astype(float) - scaled).mean() < 4.0


def test_a_phone_clip_comes_out_upright(stylizer: Stylizer, tmp_path: Path) -> None:
    """A portrait phone video is stored landscape with a display matrix that turns it 90° clockwise."""
    coded = np.zeros((96, 160, 3), np.uint8)
    coded[:48] = 255  # top half white: once turned clockwise, the right half
    source = write_clip(tmp_path / "phone.mp4", [coded] * 3, sound=None)
    data = bytearray(source.read_bytes())
    at = data.index(b"tkhd")
    matrix = at + 4 + (52 if data[at + 4] == 1 else 40)
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 96 << 16, 0, 1 << 30)
    source.write_bytes(bytes(data))
    with av.open(str(source)) as container:
        assert next(container.decode(video=0)).rotation == -90
    result = stylize_video(stylizer, source, tmp_path / "phone_out.mp4", strength=0.0, progress=False)
    assert (result.width, result.height) == (96, 160)
    frames, _, _ = read_clip(result.path)
    grey = frames[0].astype(float).mean(axis=2)
    assert grey[:, 52:].mean() > 240 and grey[:, :44].mean() < 15
    with av.open(str(result.path)) as container:
        assert next(container.decode(video=0)).rotation == 0


@pytest.mark.parametrize(
    ("matrix", "corner"),
    [
        ((-1, 0, 0, 1), "top right"),  # a horizontal mirror image (PyAV's rotation reads it as a half turn)
        ((1, 0, 0, -1), "bottom left"),  # a vertical one (rotation 0)
        ((0, 1, 1, 0), "top left"),  # the picture's diagonal swapped (rotation -90): rows become columns
        ((0, -1, -1, 0), "bottom right"),  # the other diagonal
    ],
)
def test_a_mirrored_clip_is_mirrored_not_turned(
    stylizer: Stylizer, tmp_path: Path, matrix: tuple[int, int, int, int], corner: str
) -> None:
    """A display matrix may mirror the picture, as FFmpeg's -display_hflip/-display_vflip write it, alone or with a
    quarter turn; only its rotation angle was applied, so a mirrored clip came out upside down or unmirrored."""
    coded = np.zeros((96, 160, 3), np.uint8)
    coded[:48, :80] = 255  # the top left quarter white
    source = write_clip(tmp_path / "mirrored.mp4", [coded] * 3, sound=None)
    data = bytearray(source.read_bytes())
    at = data.index(b"tkhd")
    at += 4 + (52 if data[at + 4] == 1 else 40)
    a, b, c, d = (v << 16 for v in matrix)
    data[at : at + 36] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 1 << 30)  # (the offsets are not read)
    source.write_bytes(bytes(data))
    result = stylize_video(stylizer, source, tmp_path / "mirrored_out.mp4", strength=0.0, progress=False)
    sideways = matrix[0] == 0
    assert (result.height, result.width) == ((160, 96) if sideways else (96, 160))
    grey = read_clip(result.path)[0][0].astype(float).mean(axis=2)
    h, w = grey.shape
    quarters = {
        "top left": grey[: h // 2, : w // 2],
        "top right": grey[: h // 2, w // 2 :],
        "bottom left": grey[h // 2 :, : w // 2],
        "bottom right": grey[h // 2 :, w // 2 :],
    }
    assert {name for name, quarter in quarters.items() if quarter.mean() > 200} == {corner}


def test_errors_say_what_to_do(stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path) -> None:
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    with pytest.raises(FaststyleError, match="cannot read .*notes.mp4 as a video"):
        stylize_video(stylizer, not_video, tmp_path / "out.mp4", progress=False)
    photo = SHARED / "data" / "content" / "tubingen.jpg"  # FFmpeg would read it as a one-frame video
    with pytest.raises(FaststyleError, match="tubingen.jpg is a still image, not a video; stylize it as a photo"):
        stylize_video(stylizer, photo, tmp_path / "out.mp4", progress=False)
    source = write_clip(tmp_path / "pan.mp4", pan[:2], sound=None)
    with pytest.raises(FaststyleError, match=r"cannot write a video to 'out.gif'; end the name in \.mp4"):
        stylize_video(stylizer, source, tmp_path / "out.gif", progress=False)
    for options, message in [
        ({"batch": 0}, "batch must be a whole number of at least 1, not 0"),
        ({"batch": 2.5}, "batch must be a whole number of at least 1, not 2.5"),
        ({"size": -5}, "size must be a positive whole number of pixels, not -5"),
    ]:
        with pytest.raises(FaststyleError, match=message):
            stylize_video(stylizer, source, tmp_path / "out.mp4", progress=False, **options)
    with pytest.raises(FaststyleError, match="is the video being stylized; name another file"):
        stylize_video(stylizer, source, tmp_path / "." / "pan.mp4", progress=False)
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(FaststyleError, match="folder.mp4 is a folder; name the video file to write"):
        stylize_video(stylizer, source, tmp_path / "folder.mp4", progress=False)
    with pytest.raises(FaststyleError, match=r"cannot write .*notes.mp4/out.mp4: .*notes.mp4 is a file, not a folder"):
        stylize_video(stylizer, source, not_video / "out.mp4", progress=False)
    small = Stylizer(stylizer.path, device="cpu", max_pixels=1000)
    with pytest.raises(FaststyleError, match="frames have 160x96 pixels, over the limit of 1,000"):
        stylize_video(small, source, tmp_path / "out.mp4", size=30, progress=False)
    roomy = Stylizer(stylizer.path, device="cpu", max_pixels=20_000)  # the frames are 160x96: 15,360
    with pytest.raises(FaststyleError, match="pan.mp4's frames at a long side of 320 would have 320x192 pixels"):
        stylize_video(roomy, source, tmp_path / "out.mp4", size=320, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.mp4", "notes.mp4", "pan.mp4"]
    # a model file or name does for a Stylizer
    assert stylize_video(str(stylizer.path), source, tmp_path / "out.mp4", progress=False).frames == 2


def test_a_clip_over_the_frame_limit_is_refused_before_any_work(
    stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_clip(tmp_path / "pan.mp4", pan, sound=None)
    with pytest.raises(FaststyleError, match="pan.mp4 has 8 frames; the limit is 5: cut it shorter first"):
        stylize_video(stylizer, source, tmp_path / "out.mp4", max_frames=5, progress=False)
    assert stylize_video(stylizer, source, tmp_path / "out.mp4", max_frames=8, progress=False).frames == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "pan.mp4"]
    # Matroska keeps no frame count, and its duration covers the sound: 8 frames with 20 s of sound are 8 frames
    long_sound = write_clip(tmp_path / "long_sound.mkv", pan, sound_seconds=20.0)
    assert stylize_video(stylizer, long_sound, tmp_path / "out.mkv", max_frames=8, progress=False).frames == 8
    with pytest.raises(FaststyleError, match="long_sound.mkv has about 8 frames; the limit is 7"):  # from its video's
        stylize_video(stylizer, long_sound, tmp_path / "out.mkv", max_frames=7, progress=False)  # own duration
    # far over: refused before any frame is stylized (it was refused only at the limit, after minutes in the demo)
    longer = write_clip(tmp_path / "longer.mkv", pan * 4, sound=None)
    stylized: list[int] = []
    original = Stylizer.__call__

    def count(self: Stylizer, images, *args, **kwargs):  # noqa: ANN001, ANN202
        stylized.append(len(images))
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(Stylizer, "__call__", count)
    with pytest.raises(FaststyleError, match="longer.mkv has about 32 frames; the limit is 8"):
        stylize_video(stylizer, longer, tmp_path / "out.mp4", max_frames=8, progress=False)
    assert stylized == []
    # within 5% of the limit by its duration: counted as it runs
    with pytest.raises(FaststyleError, match="longer.mkv has more than 31 frames; the limit is 31"):
        stylize_video(stylizer, longer, tmp_path / "out.mp4", max_frames=31, progress=False)


def test_damaged_packets_are_skipped_and_counted(
    stylizer: Stylizer, pan: list[np.ndarray], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = bytearray(write_clip(tmp_path / "pan.mp4", pan * 2, sound=None).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 1500] = bytes((b * 7 + 13) % 256 for b in data[middle : middle + 1500])
    (tmp_path / "damaged.mp4").write_bytes(bytes(data))
    result = stylize_video(stylizer, tmp_path / "damaged.mp4", tmp_path / "out.mp4", progress=False)
    # slice threads: only the damaged packets' frames are lost (frame threads lost all 16 with 16 threads)
    assert result.damaged >= 1 and result.frames == 16 - result.damaged
    assert "damaged packets could not be decoded and were skipped" in caplog.text


def test_without_pyav_the_error_says_how_to_install_it(
    stylizer: Stylizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "av", None)
    with pytest.raises(FaststyleError, match=r"pip install 'faststyle\[video\]'"):
        stylize_video(stylizer, tmp_path / "any.mp4", tmp_path / "out.mp4", progress=False)


def test_cli_stylizes_videos_beside_images(
    stylizer: Stylizer, pan: list[np.ndarray], shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stylizer.path is not None
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "pan.mov", pan)
    write_clip(clips / "vfr.mkv", pan, pts=[0, 2, 3, 5, 6, 7, 9, 12], sound=None)
    (clips / "notes.txt").write_text("skipped: neither image nor video")
    photo = shared / "data" / "content" / "tubingen.jpg"
    out = tmp_path / "out"
    code = main(["stylize", "--model", str(stylizer.path), str(clips), str(photo), "--out", str(out), "--size", "64"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == ["pan_starry.mov", "tubingen_starry.png", "vfr_starry.mkv"]
    assert "stylized 1 of 1 image and 2 of 2 videos with starry" in captured.out
    assert "pan.mov: 8 frames, 64x38 at 10 fps" in captured.err and "sound copied" in captured.err
    assert "vfr.mkv: 8 frames" in captured.err and "no sound" in captured.err
    frames, times, _ = read_clip(out / "vfr_starry.mkv")
    assert frames[0].shape == (38, 64, 3) and times == pytest.approx([0, 0.2, 0.3, 0.5, 0.6, 0.7, 0.9, 1.2])


def test_kill_stops_a_video_and_leaves_no_partial_file(stylizer: Stylizer, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    source = write_clip(tmp_path / "long.mp4", pan_frames(320, 192) * 25, sound=None)  # 200 frames
    out = tmp_path / "out"
    command = [sys.executable, "-m", "faststyle.cli", "stylize", "--model", str(stylizer.path), str(source),
               "--out", str(out / "long_out.mp4"), "--backend", "eager", "--device", "cpu"]  # fmt: skip
    import faststyle

    env = os.environ | {"PYTHONPATH": str(Path(faststyle.__file__).parents[1])}  # this faststyle, wherever installed
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    deadline = time.monotonic() + 120
    while not list(out.glob(".long_out.*.mp4")):  # the partial file is there
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM and "faststyle: stopped (SIGTERM)" in err, err
    assert list(out.iterdir()) == []


def test_cli_single_video_and_its_mistakes(
    stylizer: Stylizer, pan: list[np.ndarray], shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(stylizer.path)
    source = write_clip(tmp_path / "pan.mp4", pan[:4], sound=None)
    assert main(["stylize", "--model", model, str(source), "--out", str(tmp_path / "styled.mkv")]) == 0
    assert read_clip(tmp_path / "styled.mkv")[2]["codec"] == "h264"
    photo = str(shared / "data" / "content" / "tubingen.jpg")
    mistakes = [
        ([str(source), "--out", str(tmp_path / "styled.png")], "cannot write a video to 'styled.png'; end the name in"),
        ([photo, "--out", str(tmp_path / "styled.mp4")], "is a video file, but the input is an image"),
        ([photo, str(source), "--out", str(tmp_path / "both.mp4")], "names one file, but 2 inputs are given"),
        ([str(source), "--out", str(source)], "is the input itself; name another file"),
    ]
    mistakes.append(([str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "x.mp4")], "missing.mp4: does not exist"))
    for arguments, message in mistakes:
        capsys.readouterr()
        assert main(["stylize", "--model", model, *arguments]) == 1
        assert message in capsys.readouterr().err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(source.read_bytes()[:200])
    capsys.readouterr()
    code = main(["stylize", "--model", model, str(broken), str(source), "--out", str(tmp_path / "many")])
    captured = capsys.readouterr()
    assert code == 1 and "stylized 1 of 2 videos" in captured.out
    assert "broken.mp4:" in captured.err and (tmp_path / "many" / "pan_starry.mp4").is_file()
