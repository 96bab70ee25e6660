"""Video files: decode with PyAV, stylize batches of frames with a ``Stylizer``, encode; the sound is copied as it
is, or re-encoded where the output's container cannot hold it.

Frames keep their timestamps, so variable frame rates and the audio stay in sync. A phone's rotation flag (its
display matrix, a mirror image included) is applied to the pixels (the output plays upright without one). Colours
are converted with the matrix the video declares (BT.709 when it declares none and is 720 lines or more, else
BT.601), and the output is H.264 (VP9 for ``.webm``) in 4:2:0, tagged BT.709.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from faststyle.animation import animated_format
from faststyle.errors import FaststyleError
from faststyle.images import (
    PILLOW_READ_ERRORS,
    check_frames_job,
    check_resized_pixels,
    durable_replace,
    frame_total,
    new_file_mode,
    opened,
)

if TYPE_CHECKING:
    from faststyle.stylize import Strength, Stylizer

log = logging.getLogger(__name__)

# Output suffix -> encoder and its options (visually lossless: x264's CRF 18, VP9's CRF 24).
ENCODERS: dict[str, tuple[str, dict[str, str]]] = {
    ".mp4": ("libx264", {"crf": "18", "preset": "fast"}),
    ".m4v": ("libx264", {"crf": "18", "preset": "fast"}),
    ".mov": ("libx264", {"crf": "18", "preset": "fast"}),
    ".mkv": ("libx264", {"crf": "18", "preset": "fast"}),
    ".webm": ("libvpx-vp9", {"crf": "24", "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"}),
}
# The suffixes taken for videos, named or found in folders and globs (a file named otherwise is read as an image).
VIDEO_SUFFIXES = (
    *ENCODERS, ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".m2t", ".wmv", ".asf", ".flv", ".f4v", ".3gp", ".ogv",
    ".mxf", ".h264", ".264", ".hevc", ".h265", ".vob", ".mod", ".tod", ".dv", ".m2v", ".mpv", ".y4m", ".divx", ".nut",
)  # fmt: skip
WRITE_SUFFIXES = tuple(ENCODERS)
MOV_SUFFIXES = (".mp4", ".m4v", ".mov")  # FFmpeg's mov muxer: the track ends at its last packet's dts + duration
LAST_FRAME_MAX = 60  # seconds the last frame may last by the video's end as its file gives it (else an estimate)
# Audio codecs a container's muxer accepts per PyAV's list but refuses when it writes its header (.mov), or writes
# under an identifier that players do not know (Vorbis in MP4) or do not play (PCM in MP4): re-encoded instead.
_PCM = {"pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_s32be", "pcm_f32le", "pcm_f32be",
        "pcm_f64le", "pcm_f64be", "pcm_u8", "pcm_mulaw", "pcm_alaw"}  # fmt: skip
AUDIO_REFUSED = {".mov": {"opus", "flac"}, ".mp4": {"vorbis", *_PCM}, ".m4v": {"vorbis", *_PCM}}
# The codec sound is re-encoded to where the output container cannot hold the original's (and its bit rate).
AUDIO_ENCODERS = {".webm": ("libopus", 128_000)}
DEFAULT_AUDIO_ENCODER = ("aac", 192_000)
# FFmpeg's default layout for a number of channels, for sound whose channel order is not given, and the layout tried
# where an encoder refuses the sound's own (5.1 for AC3's usual 5.1(side)), before stereo
DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
INSTALL_HINT = "video needs PyAV: pip install 'faststyle[video]' (or pip install av)"
_BT709 = 1
# A video's declared matrix (AVColorSpace) -> swscale's: BT.709, FCC, BT.601 (BT470BG, SMPTE170M), SMPTE240M, BT.2020
_MATRICES = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
# swscale flags: bilinear chroma, exact rounding (its default rounding darkens by 1-1.5 levels), full chroma
_READ_FLAGS, _WRITE_FLAGS = 2 | 262_144 | 8192, 2 | 262_144


@dataclass(frozen=True)
class VideoResult:
    path: Path
    frames: int
    width: int
    height: int
    frame_rate: float  # frames per second of video: the average over the frames' timestamps
    seconds: float  # wall time of the whole job: decoding, stylizing, encoding
    audio: str  # "copied", "none" (none in the input), "re-encoded from X to Y"; "(first of N tracks)" may follow
    damaged: int = 0  # packets that could not be decoded, skipped

    @property
    def throughput(self) -> float:
        """Frames stylized per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def is_video(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _image_suffixes() -> set[str]:
    from PIL import Image

    return set(Image.registered_extensions())


def output_suffix(source: str | os.PathLike[str]) -> str:
    """The suffix of a stylized copy: the source's where it can be written, else ``.mp4``."""
    suffix = Path(source).suffix.lower()
    return suffix if suffix in ENCODERS else ".mp4"


def check_output(path: str | os.PathLike[str]) -> None:
    if Path(path).suffix.lower() not in ENCODERS:
        raise FaststyleError(
            f"cannot write a video to {Path(path).name!r}; end the name in {', '.join(WRITE_SUFFIXES)}"
        )


def require_av() -> Any:
    try:
        import av
    except ImportError:
        raise FaststyleError(INSTALL_HINT) from None
    return av


def even_size(height: int, width: int, long_side: int | None) -> tuple[int, int]:
    """The output frame size: the long side scaled to ``long_side`` (when given), both sides even (4:2:0 chroma)."""
    if long_side:
        scale = long_side / max(height, width)
        height, width = round(height * scale), round(width * scale)
    return max(2, height // 2 * 2), max(2, width // 2 * 2)


def _colorspace(frame: Any) -> int:
    """swscale's matrix for a frame: the one it declares, else BT.709 from 720 lines up and BT.601 below."""
    return _MATRICES.get(int(frame.colorspace), _BT709 if frame.height >= 720 else 5)


def _orientation(frame: Any) -> tuple[bool, bool, bool]:
    """How to show a frame as its display matrix asks: (transposed, then rows reversed, then columns reversed), the
    nearest of the eight quarter turns and mirror images (a mirrored matrix is no turn: PyAV's ``rotation`` reads a
    horizontal mirror as a half turn, and a vertical one as none). The matrix maps a pixel's column and row (x, y) to
    (a·x + c·y, b·x + d·y)."""
    data = frame.side_data.get("DISPLAYMATRIX") if hasattr(frame, "side_data") else None
    if data is None:
        return (False, False, False)
    a, b, _, c, d = np.frombuffer(bytes(data), dtype=np.int32)[:5].tolist()
    if abs(a) + abs(d) >= abs(b) + abs(c):
        return (False, d < 0, a < 0)
    return (True, b < 0, c < 0)


def frame_pixels(frame: Any) -> Tensor:
    """A decoded PyAV frame as uint8 RGB (3,H,W), read with its own matrix and exact rounding, and upright (turned
    and mirrored as its display matrix asks)."""
    array = frame.to_ndarray(format="rgb24", src_colorspace=_colorspace(frame), interpolation=_READ_FLAGS)
    pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    transposed, rows, columns = _orientation(frame)
    if transposed:
        pixels = pixels.transpose(-2, -1)
    flipped = [dim for dim, flip in ((-2, rows), (-1, columns)) if flip]
    return pixels.flip(flipped) if flipped else pixels


class _Frame:
    """Pixels, timestamp and duration (in the stream's time base; None: not known), and whether turned a quarter."""

    __slots__ = ("duration", "pixels", "pts", "sideways")

    def __init__(self, pixels: Tensor, pts: int, sideways: bool, duration: int | None = None) -> None:
        self.pixels, self.pts, self.sideways, self.duration = pixels, pts, sideways, duration


def _decoded(container: Any, stream: Any, writer: _Writer, av: Any) -> Iterator[_Frame]:
    """The video stream's frames (uint8 (3,H,W), upright) with their timestamps in the stream's time base, counted from
    the file's start (``writer.video_shift``: a broadcast recording's clock may start at hours); the sound goes to
    ``writer``. Frames without a timestamp are placed at the average rate, and a timestamp that does not move forward
    is moved one tick past the last. Packets that cannot be decoded are skipped and counted in ``writer.damaged``."""
    rate = _frame_rate(stream)
    index = 0
    last_pts: int | None = None
    for packet in container.demux(stream, *writer.audio_in):
        if packet.stream.type == "audio":
            writer.take_audio(packet)
            continue
        try:
            frames = packet.decode()
        except av.InvalidDataError:
            writer.damaged += 1
            continue
        for frame in frames:
            pts = frame.pts - writer.video_shift if frame.pts is not None else round(index / rate / stream.time_base)
            if last_pts is not None and pts <= last_pts:
                pts = last_pts + 1
            last_pts = pts
            duration = getattr(frame, "duration", None) or None  # PyAV 14+; 0 is not known
            yield _Frame(frame_pixels(frame), pts, _orientation(frame)[0], duration)
            index += 1


class AnimationSource:
    """An animated GIF, PNG or WebP read by Pillow, with what ``stylize_video`` and ``_Writer`` read of a PyAV
    container and its video stream: frames as shown (over white where transparent, on the first frame's canvas),
    timed in milliseconds from their durations."""

    def __init__(self, source: Path, max_pixels: int) -> None:
        from faststyle.animation import has_hidden_default_image

        self.name, self.source, self._max_pixels = str(source), source, max_pixels
        self._open = contextlib.ExitStack()
        self._image = self._open.enter_context(opened(source, max_pixels))
        self._first = 1 if has_hidden_default_image(self._image) else 0  # an APNG's still default image is no frame
        count = frame_total(self._image) - self._first
        stream = SimpleNamespace(
            width=self._image.width, height=self._image.height, frames=count, thread_type=None,
            time_base=Fraction(1, 1000), sample_aspect_ratio=None, duration=None, metadata={},
        )  # fmt: skip
        stream.guessed_rate = stream.average_rate = Fraction(1000, _typical_duration(self._image))
        self.streams = SimpleNamespace(video=[stream], audio=[])

    def frames(self) -> Iterator[_Frame]:
        from faststyle.animation import _frames

        start = 0
        last: int | None = None
        try:
            for frame, _, duration in _frames(self.source, self._image, self._first, self._max_pixels):
                pts = start if last is None or start > last else last + 1  # a 0 ms frame still gets its own time
                pixels = torch.from_numpy(np.asarray(frame).copy()).permute(2, 0, 1)
                yield _Frame(pixels, pts, False, max(1, round(duration)))
                last, start = pts, start + round(duration)
        except PILLOW_READ_ERRORS as exc:  # the first frame (a later one ends the animation, with a warning)
            raise FaststyleError(f"cannot read {self.source} ({exc})") from None

    def close(self) -> None:
        self._open.close()


def _typical_duration(image: Any) -> int:
    """The first frame's duration in whole milliseconds (100 where it has none), for the output's nominal rate."""
    return max(1, round(float(image.info.get("duration") or 100)))


def stylize_video(
    stylizer: Stylizer | str | os.PathLike[str],
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    size: int | None = None,
    strength: Strength = 1.0,
    preserve_color: bool = False,
    batch: int = 4,
    progress: bool = True,
    max_frames: int | None = None,
    audio_codecs: Collection[str] | None = None,
    max_pixels: int | None = None,
) -> VideoResult:
    """Stylize every frame of ``source`` into ``target`` (written atomically), ``batch`` frames a pass, with a
    ``Stylizer`` (or a model NAME or file, loaded with the defaults). ``size`` scales the long side first; the sides
    are rounded down to even numbers. A video of more than ``max_frames`` frames is refused (before any work where
    the file says how long its video is). ``audio_codecs``: the sound codecs that may be copied as they are (e.g. those
    a browser plays); other sound is re-encoded (default: whatever the output container holds is copied). Frames of
    more than ``max_pixels`` (default: the stylizer's limit) are refused, each of an animation's before it is read."""
    from faststyle.stylize import Stylizer

    av = require_av()
    source, target = Path(source), Path(target)
    animated = animated_format(source)
    if animated is None and not is_video(source) and source.suffix.lower() in _image_suffixes():
        raise FaststyleError(
            f"{source.name} is a still image, not a video; stylize it as a photo (faststyle stylize, or a Stylizer)"
        )
    check_output(target)
    check_frames_job(source, target, batch, size, "video")
    if not isinstance(stylizer, Stylizer):
        stylizer = Stylizer(stylizer)
    max_pixels = stylizer.max_pixels if max_pixels is None else max_pixels
    started = time.perf_counter()
    if animated is not None:  # read as shown (over white where clear); FFmpeg reads no animated WebP
        container: Any = AnimationSource(source, max_pixels)
    else:
        try:
            container = av.open(str(source))
        except (av.FFmpegError, OSError) as exc:
            raise FaststyleError(f"cannot read {source} as a video ({_ffmpeg_reason(exc)})") from None
    tmp: Path | None = None
    try:
        if not container.streams.video:
            raise FaststyleError(f"{source} has no video stream")
        stream = container.streams.video[0]
        # slice threads: with frame threads, a packet that fails to decode takes the frames decoded before it
        # but not yet returned with it (all of a 16-frame clip with 16 threads)
        stream.thread_type = "SLICE"
        if stream.width * stream.height > max_pixels:
            raise FaststyleError(
                f"{source}'s frames have {stream.width}x{stream.height} pixels, over the limit of "
                f"{max_pixels:,}; raise the limit (max_pixels / --max-pixels)"
            )
        check_resized_pixels(stream.height, stream.width, size, max_pixels, f"{source}'s frames")
        if max_frames is not None and stream.frames > max_frames:  # an exact count
            raise _too_long(source, f"{stream.frames} frames", max_frames)
        # its duration (Matroska and WebM give only that) by its rate: refused when clearly over, before any work;
        # a file that says neither, or is near the limit, is counted as it runs
        if max_frames is not None and not stream.frames and _frame_count(stream) > 1.05 * max_frames:
            raise _too_long(source, f"about {_frame_count(stream)} frames", max_frames)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)
        except OSError as exc:
            raise FaststyleError(f"cannot write {target} ({exc.strerror or exc})") from None
        os.close(fd)
        tmp = Path(name)
        with av.open(str(tmp), "w") as output:
            writer = _Writer(av, output, stream, target.suffix.lower(), size, container, audio_codecs)
            from tqdm import tqdm

            total = _frame_count(stream)
            with tqdm(total=total or None, unit="frame", disable=not progress, desc=source.name) as bar:
                pending: list[_Frame] = []
                animation = isinstance(container, AnimationSource)
                for frame in container.frames() if animation else _decoded(container, stream, writer, av):
                    if max_frames is not None and writer.frames + len(pending) == max_frames:
                        raise _too_long(source, f"more than {max_frames} frames", max_frames)
                    pending.append(frame)
                    if len(pending) == batch:
                        writer.write(_stylized(stylizer, pending, writer, strength, preserve_color), pending)
                        bar.update(len(pending))
                        pending = []
                if pending:
                    writer.write(_stylized(stylizer, pending, writer, strength, preserve_color), pending)
                    bar.update(len(pending))
            if writer.frames == 0:
                raise FaststyleError(f"{source} has no frames that could be decoded")
            writer.close()
        os.chmod(tmp, new_file_mode())
        durable_replace(tmp, target)
        tmp = None
    except av.FFmpegError as exc:
        raise FaststyleError(f"{source} could not be stylized into {target.name} ({_ffmpeg_reason(exc)})") from None
    finally:
        container.close()
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    if writer.damaged:
        log.warning("%s: %d damaged packets could not be decoded and were skipped", source, writer.damaged)
    return VideoResult(
        target,
        writer.frames,
        writer.width,
        writer.height,
        writer.frame_rate(),
        time.perf_counter() - started,
        writer.audio,
        writer.damaged,
    )


def _ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's words without the file name it adds (our temporary file's, for writes)."""
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else str(exc)


def _too_long(source: Path, frames: str, max_frames: int) -> FaststyleError:
    return FaststyleError(f"{source.name} has {frames}; the limit is {max_frames}: cut it shorter first")


def _frame_rate(stream: Any) -> Fraction:
    """The stream's frame rate: the one its codec declares (a bare H.264 stream's own) before the container's
    average (which a demuxer without timestamps makes up)."""
    return stream.guessed_rate or stream.average_rate or Fraction(25)


def _frame_count(stream: Any) -> int:
    """The video stream's frame count as the file gives it, or an estimate from the stream's duration (0: not
    known), for the progress bar. The container's duration is not used: it covers the sound too, which may run far
    longer."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        return 0
    if stream.duration and stream.time_base:
        return round(stream.duration * stream.time_base * rate)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")  # Matroska's per-stream tag
    try:
        hours, minutes, seconds = str(tag).split(":")
        return round((int(hours) * 3600 + int(minutes) * 60 + float(seconds)) * rate)
    except ValueError:
        return 0


class _Writer:
    """Encodes stylized frames, and copies (or re-encodes) the first audio track. The streams are made at the first
    frame, once the frame size is known (video first, as players expect); no packet can be written before, so the
    sound waits until then."""

    def __init__(
        self,
        av: Any,
        output: Any,
        source: Any,
        suffix: str,
        size: int | None,
        container: Any,
        audio_codecs: Collection[str] | None = None,
    ) -> None:
        self.av, self.output, self.source, self.size = av, output, source, size
        self.codec, self.options = ENCODERS[suffix]
        self._mov = suffix in MOV_SUFFIXES
        self.rate = _frame_rate(source)
        self.stream: Any = None
        self._first_pts = self._last_pts = 0
        self.frames = self.width = self.height = self.damaged = 0
        self.audio_in: tuple[Any, ...] = ()  # the audio stream to demux, if any
        self._audio_out: Any = None
        self._waiting: list[Any] = []
        self.audio = "none"  # what became of the sound: "none" (there was none), "copied" or "re-encoded …"
        self._encoder: tuple[str, int] | None = None  # (codec, bit rate) when the sound must be re-encoded
        self._layout = ""
        self._last_duration: int | None = None  # the last frame's, as its source gave it
        tracks = container.streams.audio
        # the file's start, where a broadcast recording's clock may read hours: its streams are shifted to time 0
        start = _start_seconds([source, *tracks[:1]])
        self.video_shift = round(start / source.time_base) if source.time_base else 0
        # where the video ends, which says how long its last frame lasts (a decoder gives a B-frame file's frames the
        # durations of its packets, in decoding order)
        self._source_end: int | None = None
        if getattr(source, "start_time", None) is not None and source.duration:
            self._source_end = source.start_time + source.duration - self.video_shift
        self._audio_shift = round(start / tracks[0].time_base) if tracks and tracks[0].time_base else 0
        if tracks:
            audio = tracks[0]
            self.audio_in = (audio,)
            name = audio.codec_context.codec.canonical_name  # "mp3", not its decoder's "mp3float"
            # a layout without channel order ("2 channels": PCM in AVI) is refused by MP4's muxer and AAC's encoder
            self._layout = audio.layout.name
            unordered = self._layout.endswith(" channels")
            if unordered:
                self._layout = DEFAULT_LAYOUTS.get(len(audio.layout.channels), self._layout)
            held = name in output.supported_codecs and name not in AUDIO_REFUSED.get(suffix, ()) and not unordered
            if held and (audio_codecs is None or name in audio_codecs):
                self.audio = "copied"
            else:
                self._encoder = AUDIO_ENCODERS.get(suffix, DEFAULT_AUDIO_ENCODER)
                self.audio = f"re-encoded from {name} to {self._encoder[0].removeprefix('lib')}"
                why = f"{suffix} files cannot hold {name} audio" if not held else f"{name} audio is not asked for"
                log.info("%s: %s; the sound is %s", container.name, why, self.audio)
            if len(tracks) > 1:
                self.audio += f" (first of {len(tracks)} tracks)"

    def take_audio(self, packet: Any) -> None:
        """Writes an audio packet: copied, or decoded and re-encoded; held back until the streams exist."""
        if packet.dts is None and self._encoder is None:
            return  # a demuxer's flush packet: nothing to copy
        if self.stream is None:
            self._waiting.append(packet)
        elif self._encoder is None:
            if self._audio_shift:
                if packet.pts is not None:
                    packet.pts -= self._audio_shift
                if packet.dts is not None:
                    packet.dts -= self._audio_shift
            packet.stream = self._audio_out
            self.output.mux(packet)
        else:
            try:
                frames = packet.decode()
            except self.av.InvalidDataError:
                self.damaged += 1
                return
            for frame in frames:
                if self._audio_shift and frame.pts is not None:
                    frame.pts -= round(self._audio_shift * self.audio_in[0].time_base / frame.time_base)
                kept = _from_time_zero(self.av, frame)
                if kept is not None:
                    self._encode_audio(kept)
            if packet.size == 0:  # the end of the sound: the encoder's last packets
                self._encode_audio(None)

    def _encode_audio(self, frame: Any) -> None:
        for packet in self._audio_out.encode(frame):
            self.output.mux(packet)

    def frame_size(self, height: int, width: int, sideways: bool) -> tuple[int, int]:
        if self.stream is None:
            self.height, self.width = even_size(height, width, self.size)
            self._open(sideways)
        return self.height, self.width

    def frame_rate(self) -> float:
        """Frames per second of video, from the first and last timestamps (the stream's rate for one frame)."""
        span = (self._last_pts - self._first_pts) * self.source.time_base
        return float((self.frames - 1) / span) if self.frames > 1 and span > 0 else float(self.rate)

    def _open(self, sideways: bool) -> None:
        stream = self.output.add_stream(self.codec, rate=self.rate, options=self.options)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        aspect = self.source.sample_aspect_ratio  # non-square pixels (DV, HDV): kept, turned with the picture
        if aspect and aspect != 1:
            stream.codec_context.sample_aspect_ratio = 1 / aspect if sideways else aspect
        stream.time_base = self.source.time_base
        context = stream.codec_context
        context.time_base = self.source.time_base  # the frames' own timestamps, not a grid of 1/rate
        context.colorspace = context.color_primaries = context.color_trc = _BT709
        context.color_range = 1  # limited ("TV") range, as players expect
        self.stream = stream
        if self.audio_in and self._encoder is None:
            self._audio_out = self.output.add_stream_from_template(self.audio_in[0])
        elif self.audio_in:
            codec, bit_rate = self._encoder
            rate = _encoder_rate(self.av, codec, self.audio_in[0].rate)  # PyAV resamples to the encoder's rate
            layout = _encoder_layout(self.av, codec, rate, self._layout)  # and mixes to its layout
            self._audio_out = self.output.add_stream(codec, rate=rate, layout=layout)
            self._audio_out.bit_rate = bit_rate
        for packet in self._waiting:
            self.take_audio(packet)
        self._waiting.clear()

    def write(self, images: Tensor, frames: list[_Frame]) -> None:
        arrays = images.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for array, frame in zip(arrays, frames, strict=True):
            video = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            video = video.reformat(format="yuv420p", dst_colorspace=_BT709, interpolation=_WRITE_FLAGS)
            video.pts, video.time_base = frame.pts, self.source.time_base
            self._last_duration = frame.duration
            for packet in self.stream.encode(video):
                self.output.mux(packet)
            if self.frames == 0:
                self._first_pts = frame.pts
            self._last_pts = frame.pts
            self.frames += 1

    def close(self) -> None:
        """Flushes the encoder. The last frame keeps its own duration (a GIF's long last pause, a clip's last
        frame), which muxers otherwise take to be the one before's: the packet that shows it gets it; the mov muxer
        also ends the track's samples at the last packet in decoding order (with B-frames, not the last shown), which
        gets what reaches the same end."""
        packets = self.stream.encode()
        last = self._last_duration
        by_end = self._source_end - self._last_pts if self._source_end is not None else 0
        if 0 < by_end <= LAST_FRAME_MAX / self.source.time_base:
            last = by_end
        if last:
            for packet in packets:
                if packet.pts == self._last_pts:
                    packet.duration = last
            if self._mov and packets and packets[-1].pts is not None and packets[-1].pts != self._last_pts:
                packets[-1].duration = self._last_pts + last - packets[-1].pts
        for packet in packets:
            self.output.mux(packet)


def _start_seconds(streams: list[Any]) -> Fraction:
    """The earliest start of ``streams`` in seconds, where it is after time 0 (an MPEG-TS clock's hours, a DVD's
    half second); 0 otherwise (a start before 0 is a decoder's priming, which players skip)."""
    starts = [
        Fraction(start) * s.time_base
        for s in streams
        if (start := getattr(s, "start_time", None)) is not None and s.time_base is not None
    ]
    return max(Fraction(0), min(starts)) if starts else Fraction(0)


def _encoder_rate(av: Any, codec: str, rate: int) -> int:
    """``rate`` where the encoder takes it, else the nearest one above it that it takes, else its highest."""
    rates = sorted(av.Codec(codec, "w").audio_rates or ())
    if not rates or rate in rates:
        return rate
    return next((r for r in rates if r > rate), rates[-1])


def _encoder_layout(av: Any, codec: str, rate: int, layout: str) -> str:
    """``layout`` where the encoder opens with it (libopus refuses AC3's usual "5.1(side)", say), else FFmpeg's
    default for that many channels, else stereo."""
    channels = len(av.AudioLayout(layout).channels)
    for candidate in dict.fromkeys([layout, DEFAULT_LAYOUTS.get(channels, "stereo"), "stereo"]):
        context = av.CodecContext.create(codec, "w")
        context.sample_rate, context.layout = rate, candidate
        context.format = av.Codec(codec, "w").audio_formats[0]
        try:
            context.open()
        except av.FFmpegError:
            continue
        return candidate
    return "stereo"


def _from_time_zero(av: Any, frame: Any) -> Any:
    """An audio frame without its samples before time 0 (a decoder's priming, which players skip), or None when it
    has only those. Encoded with them, negative times make some muxers shift every stream, the video too."""
    if frame.pts is None or frame.pts >= 0:
        return frame
    skip = round(-frame.pts * frame.time_base * frame.sample_rate)
    if skip >= frame.samples:
        return None
    samples = frame.to_ndarray()
    step = 1 if frame.format.is_planar else len(frame.layout.channels)  # packed: channels interleaved
    kept = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples[:, skip * step :]), format=frame.format.name, layout=frame.layout.name
    )
    kept.sample_rate, kept.time_base, kept.pts = frame.sample_rate, frame.time_base, 0
    return kept


def _stylized(stylizer: Stylizer, frames: list[_Frame], writer: _Writer, strength: Strength, keep: bool) -> Tensor:
    """The frames' stylized pixels (float (N,3,H,W) in [0,1]) at the output size; frames of another size than the
    first (a stream that changes size) are scaled to it."""
    height, width = writer.frame_size(*frames[0].pixels.shape[-2:], frames[0].sideways)
    batch = torch.stack([_fit(f.pixels, height, width) for f in frames])  # uint8: the Stylizer converts on its device
    return stylizer(batch, strength=strength, preserve_color=keep)


def _fit(pixels: Tensor, height: int, width: int) -> Tensor:
    h, w = pixels.shape[-2:]
    if 0 <= h - height <= 1 and 0 <= w - width <= 1:  # an odd side made even: the last row or column goes
        return pixels[..., :height, :width]
    scaled = F.interpolate(
        pixels[None].float(), size=(height, width), mode="bilinear", antialias=height < h or width < w
    )
    return scaled[0].round_().clamp_(0, 255).to(torch.uint8)
