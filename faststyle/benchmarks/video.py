"""Video stylization speed (frames per second) through ``stylize_video``: decoding, the network and encoding,
beside the network alone on the same frames in the same batches (what the video path cannot beat) and decoding and
encoding alone (the video path at strength 0, which skips the network), the three's timed runs alternating.

The clip is --input, or one made first (not timed): a moving colour pattern, H.264 at --size and 25 fps.
"""

from __future__ import annotations

import argparse
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from faststyle.argtypes import positive_int
from faststyle.benchmarks._common import add_device_arguments, environment, summary, timed_together
from faststyle.benchmarks.infer import SIZES, parse_size

HELP = "video frames per second: decode, stylize, encode, beside the network alone"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="random", help="model file or name; 'random': an untrained network")
    parser.add_argument("--input", default=None, help="a video file to time (default: a made-up clip)")
    parser.add_argument(
        "--size", default="720p", help=f"frame size of the made-up clip: {', '.join(SIZES)} or HxW (e.g. 360x640)"
    )
    parser.add_argument(
        "--frames", type=positive_int, default=48,
        help="frames of the made-up clip; with --input, how many of its first frames are held in memory to time the "
        "network alone (the video path takes every frame)",
    )  # fmt: skip
    parser.add_argument("--batch", type=positive_int, default=4, help="frames per forward pass")
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="auto: fp32, as Stylizer"
    )
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "eager", "channels_last", "onnxruntime"],
        help="inference path (auto: the Stylizer's default)",
    )  # fmt: skip
    add_device_arguments(parser)


def make_clip(path: Path, height: int, width: int, frames: int) -> Path:
    """An H.264 clip of a moving colour pattern: smooth like a film's frames, unlike noise."""
    import av

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=25, options={"crf": "18", "preset": "fast"})
        stream.width, stream.height, stream.pix_fmt = width // 2 * 2, height // 2 * 2, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        for i in range(frames):
            phase = 2 * np.pi * i / 50
            channels = [
                np.sin(x / 37 + phase) * np.cos(y / 23 - phase),
                np.sin((x + y) / 53 - 2 * phase),
                np.cos(np.hypot(x - width / 2, y - height / 2) / 29 + phase),
            ]
            pixels = np.stack(channels, axis=-1)[: stream.height, : stream.width]
            frame = av.VideoFrame.from_ndarray(((pixels + 1) * 127.5).astype(np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)
    return path


def clip_size(text: str) -> tuple[int, int]:
    """The made-up clip's (height, width) from ``--size``: H.264 in 4:2:0 takes whole 2x2 blocks of pixels."""
    from faststyle.errors import FaststyleError

    height, width = parse_size(text)
    if min(height, width) < 2:
        raise FaststyleError(f"--size {text}: the made-up clip needs at least 2 pixels a side, e.g. 360x640")
    return height, width


def _decode(path: Path, keep: int) -> tuple[list[torch.Tensor], int]:
    """The first ``keep`` frames' pixels, and how many frames the video has (a long one is not held whole)."""
    import av

    from faststyle.animation import animated_format
    from faststyle.errors import FaststyleError
    from faststyle.images import MAX_PIXELS
    from faststyle.video import AnimationSource, frame_pixels

    kept: list[torch.Tensor] = []
    count = 0
    if animated_format(path) is not None:  # read as stylize_video reads it (FFmpeg reads no animated WebP)
        animation = AnimationSource(path, MAX_PIXELS)
        try:
            for frame in animation.frames():
                count += 1
                if len(kept) < keep:
                    kept.append(frame.pixels)
        finally:
            animation.close()
        return kept, count
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                count += 1
                if len(kept) < keep:
                    kept.append(frame_pixels(frame))
        return kept, count
    except (av.FFmpegError, IndexError) as exc:  # IndexError: no video stream
        raise FaststyleError(f"--input {path}: cannot read its video ({type(exc).__name__}: {exc})") from None


def run(args: argparse.Namespace) -> dict[str, object]:
    from faststyle.device import resolve_device
    from faststyle.errors import FaststyleError
    from faststyle.stylize import Stylizer, find_model
    from faststyle.transformer import TransformerNet
    from faststyle.video import even_size, require_av, stylize_video

    require_av()  # PyAV missing: the install hint, before any work
    if not args.input:
        clip_size(args.size)  # refused before the network is built
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    net: torch.nn.Module | str = TransformerNet().eval() if args.model == "random" else str(find_model(args.model))
    stylizer = Stylizer(net, device=device, precision=args.precision, backend=args.backend, tile=0)
    with tempfile.TemporaryDirectory(prefix="faststyle-bench-video-") as folder:
        work = Path(folder)
        if args.input:
            clip = Path(args.input).expanduser()
            if not clip.is_file():
                raise FaststyleError(f"--input {args.input} does not exist")
        else:
            clip = make_clip(work / "clip.mp4", *clip_size(args.size), args.frames)
        frames, count = _decode(clip, args.frames)
        if not frames:
            raise FaststyleError(f"{clip} has no frames that could be decoded")
        # uint8, as the video path hands its frames to the Stylizer (the conversion on the device is the network's)
        batches = [torch.stack(frames[i : i + args.batch]) for i in range(0, len(frames), args.batch)]

        def network() -> None:
            for batch in batches:
                stylizer(batch)

        calls = {
            "video": lambda: stylize_video(stylizer, clip, work / "out.mp4", batch=args.batch, progress=False),
            "network_only": network,
            "decode_encode_only": lambda: stylize_video(
                stylizer, clip, work / "copy.mp4", batch=args.batch, strength=0.0, progress=False
            ),
        }
        timings = timed_together(calls, device, args.repeats, args.warmup)
    ms = {
        name: summary(t.seconds, 1000.0 / (len(frames) if name == "network_only" else count))
        for name, t in timings.items()
    }
    medians = {name: s["median"] for name, s in ms.items()}
    return {
        "bench": "video",
        "model": args.model,
        "input": str(args.input) if args.input else f"made-up clip, {count} frames",
        "frame_size": list(even_size(*frames[0].shape[-2:], None)),  # as the video path writes it
        "frames": count,
        "network_only_frames": len(frames),  # the first ones; fewer than "frames" where --input has more than --frames
        "batch": args.batch,
        "backend": stylizer.backend,
        "precision": stylizer.precision,
        "ms_per_frame": ms,
        "frames_per_second": {name: round(1000.0 / m, 3) for name, m in medians.items()},
        # the share of the video path's time spent outside the network
        "overhead": round(1 - medians["network_only"] / medians["video"], 3),
    } | environment(device)
