"""``faststyle stylize``: apply a style model to image and video files, folders and globs."""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faststyle.argtypes import positive_int, unit_interval
from faststyle.compiling import add_compile_argument

if TYPE_CHECKING:
    from faststyle.stylize import Stylizer

OUTPUT_FORMATS = ("png", "jpg", "jpeg", "webp", "gif")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "stylize",
        help="stylize images and videos with a trained model",
        description=(
            "Stylize image, animation and video files, folders and globs with a style model. With one input, --out "
            "may name "
            "the output file; otherwise --out is a folder (created) that receives <stem>_<model>.<format> "
            "(videos keep their container where it can be written, else .mp4; animated GIF, PNG and WebP files keep "
            "theirs). Videos keep their frame timing and sound and need PyAV (pip install 'faststyle[video]'); "
            "animations keep each frame's duration and their loop count, and may be written as videos too (--out "
            "NAME.mp4). Outputs are written atomically; a file that fails does not stop the others (exit code 1 if "
            "any failed)."
        ),
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="image, animation or video files, folders or globs")
    parser.add_argument("--model", help="model NAME (see --list) or model file (.safetensors)")
    parser.add_argument("--out", help="output file (one input) or folder")
    parser.add_argument("--list", action="store_true", help="list the available models and exit")
    parser.add_argument(
        "--size", type=positive_int, default=None, help="resize the longer side to this many pixels first"
    )
    parser.add_argument(
        "--strength", type=unit_interval, default=1.0, help="0 to 1: 0 = the photo, 1 = fully stylized (default)"
    )
    parser.add_argument(
        "--mask", default=None, metavar="IMG",
        help="paint only where this image is white (grey: partly; black keeps the photo), or opaque where it has "
        "transparency (a cut-out), scaled to each input and frame; --strength is the strength where it is white",
    )  # fmt: skip
    parser.add_argument("--preserve-color", action="store_true", help="keep the photo's colours (stylize luminance)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "fp16", "bf16"],
        help="auto: fp32, fp16 if compiled on CUDA",
    )
    add_compile_argument(parser, "the network: pays off for many images of one size (video frames)")
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "eager", "channels_last", "onnxruntime"],
        help="how the network runs; auto: ONNX Runtime for fp32 on a CPU (eager with --compile); on CUDA eager, "
        "channels_last with --compile",
    )  # fmt: skip
    parser.add_argument(
        "--batch", type=int, default=None,
        help="images per forward pass (equal sizes are batched; default 1), or frames of a video or animation "
        "(default 4)",
    )  # fmt: skip
    parser.add_argument(
        "--tile", type=int, default=None,
        help="tile side for large images, which bounds the memory of every pass; 0: never tile (default: images "
        "over 2048x2048 px are tiled)",
    )  # fmt: skip
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels")
    parser.add_argument(
        "--format",
        choices=OUTPUT_FORMATS,
        default=None,
        help="image format when --out is a folder (default: png; animations keep theirs; videos keep their "
        "container, else .mp4); a still format takes an animation's first frame",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        help="refuse larger images and videos with larger frames, before any --size (default 180 million)",
    )
    parser.set_defaults(handler=_stylize)


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]], list[tuple[Path, int]]]:
    """Files from files, folders (their images and videos, not recursive) and globs (the same; ``**`` recurses),
    each once; (input, reason) for inputs that name nothing; and (file, count) for files that several inputs name."""
    from PIL import Image

    from faststyle.video import VIDEO_SUFFIXES

    # the formats Pillow reads (it registers some it can only write: .pdf, .palm), and a camera's .mpo
    readable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN or fmt == "MPO"}
    suffixes = readable | set(VIDEO_SUFFIXES)
    named: dict[Path, tuple[Path, set[int]]] = {}  # by the file itself: a symlinked folder or a ``**`` loop
    missing: list[tuple[str, str]] = []
    for index, item in enumerate(inputs):
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(  # hidden files left out, as a glob leaves them (a Mac's ._photo.jpg is not a photo)
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
            )
            if not found:
                missing.append((item, "folder has no image or video files"))
        elif path.exists():
            found = [path]
        elif glob.has_magic(item):
            matches = [Path(p) for p in glob.glob(str(path), recursive=True)]
            found = sorted(p for p in matches if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                missing.append((item, "no image or video files match" if matches else "no files match"))
        else:
            found = []
            missing.append((item, "does not exist"))
        for file in found:
            named.setdefault(file.resolve(), (file, set()))[1].add(index)
    repeated = [(file, len(items)) for file, items in named.values() if len(items) > 1]
    return [file for file, _ in named.values()], missing, repeated


def output_paths(
    files: list[Path],
    out: Path,
    model: str,
    fmt: str | None,
    folder: bool,
    animated: dict[Path, str] | None = None,
) -> list[Path]:
    """Where each file goes; ``animated`` maps the animations to their format (an animation keeps its format in a
    folder unless ``fmt`` is given). In a folder no output takes another's name or an input's: ``-2``, ``-3`` … are
    added to the stem instead."""
    from faststyle.animation import kept_suffix
    from faststyle.video import is_video, output_suffix

    if not folder:
        return [out] if files else []
    paths: list[Path] = []
    inputs = {file.resolve() for file in files}
    taken: set[Path] = set()
    for file in files:
        if is_video(file):
            suffix = output_suffix(file)
        elif animated and file in animated and not fmt:
            suffix = kept_suffix(file, animated[file])
        else:
            suffix = "." + (fmt or "png")
        candidate = out / f"{file.stem}_{model}{suffix}"
        count = 2
        while candidate in taken or candidate.resolve() in inputs:
            candidate = out / f"{file.stem}-{count}_{model}{suffix}"
            count += 1
        taken.add(candidate)
        paths.append(candidate)
    return paths


def _list_models() -> int:
    from faststyle.stylize import backbone_name, list_models, model_dirs, style_name, train_command

    models = list_models()
    if not models:
        print("no models found in " + ", ".join(str(d) for d in model_dirs()))
        print(f"train one with: {train_command(Path('checkpoints'))}")
        return 0
    width = max(len(m.name) for m in models)
    for m in models:
        print(f"{m.name:<{width}}  style: {style_name(m.metadata)}  backbone: {backbone_name(m.metadata)}  ({m.path})")
    return 0


def _stylize(args: argparse.Namespace) -> int:
    from faststyle.errors import FaststyleError

    if args.list:
        return _list_models()
    if not args.model:
        raise FaststyleError("name a model with --model NAME|FILE (see `faststyle stylize --list`)")
    if not args.inputs:
        raise FaststyleError("name the images or videos to stylize: files, folders or globs")
    if not args.out:
        raise FaststyleError("name where to write with --out FILE (one input) or --out FOLDER")
    if args.batch is not None and args.batch < 1:
        raise FaststyleError("--batch must be at least 1")

    from faststyle import animation
    from faststyle.images import MAX_PIXELS, check_writable, image_format, is_image_file_name
    from faststyle.stylize import Stylizer
    from faststyle.video import WRITE_SUFFIXES, check_output, is_video

    files, failures, repeated = expand_inputs(args.inputs)
    for file, count in repeated:
        print(f"{file} is named by {count} of the inputs; stylizing it once", file=sys.stderr)
    out = Path(args.out).expanduser()
    several = len(files) + len(failures) > 1
    out_suffix = out.suffix.lower()
    names_a_file = out_suffix.lstrip(".") in OUTPUT_FORMATS or out_suffix in WRITE_SUFFIXES or is_image_file_name(out)
    if several and names_a_file and not out.is_dir():
        raise FaststyleError(
            f"--out {args.out} names one file, but {len(files) + len(failures)} inputs are given; "
            "pass a folder (--out DIR), or one input"
        )
    animated = {f: fmt for f in files if not is_video(f) and (fmt := animation.animated_format(f))}
    folder = several or out.is_dir() or args.out.endswith(("/", "\\")) or not out.suffix
    if not folder and args.format:
        raise FaststyleError("--format applies to folder output; name the output file with the suffix you want")
    if folder or not files:
        pass  # nothing is written to --out itself, or nothing at all (the summary names the inputs)
    elif is_video(files[0]) or (files[0] in animated and out_suffix in WRITE_SUFFIXES):
        check_output(out)
    elif out_suffix in WRITE_SUFFIXES:
        raise FaststyleError(f"--out {args.out} is a video file, but the input is an image; end it in .png or .jpg")
    else:
        try:
            image_format(out)
        except FaststyleError:
            raise FaststyleError(
                f"--out {args.out}: cannot tell the image format from {out.suffix!r}; end the file name in .png, .jpg "
                "or .webp, or end --out in / for a folder"
            ) from None
    max_pixels = args.max_pixels or MAX_PIXELS
    stylizer = Stylizer(
        args.model,
        device=args.device,
        precision=args.precision,
        tile=args.tile,
        overlap=args.overlap,
        max_pixels=max_pixels,
        backend=args.backend,
        compile=args.compile,
    )
    targets = output_paths(files, out, stylizer.name, args.format, folder, animated)
    if folder and out.exists() and not out.is_dir():
        if several:
            raise FaststyleError(f"--out {out} is a file; name a folder for several inputs")
        raise FaststyleError(
            f"--out {out} is a file without a suffix; end the name in .png or .jpg for one image (or name a folder)"
        )
    if not folder and files and out.exists() and out.resolve() == files[0].resolve():
        raise FaststyleError(f"--out {args.out} is the input itself; name another file so that the input is kept")
    check_writable(out if folder else out.parent, "the stylized files")
    strength: Any = args.strength
    if args.mask is not None:
        from faststyle.images import load_mask

        strength = load_mask(args.mask, max_pixels=max_pixels) * args.strength
    options = {"size": args.size, "strength": strength, "preserve_color": args.preserve_color}
    jobs = list(zip(files, targets, strict=True))
    kinds: dict[str, list[tuple[Path, Path]]] = {"image": [], "animation": [], "video": []}
    for file, target in jobs:
        if is_video(file) or target.suffix.lower() in WRITE_SUFFIXES:  # an animation may be written as a video
            kinds["video"].append((file, target))
        elif file in animated and target.suffix.lower() in animation.WRITE_SUFFIXES:
            kinds["animation"].append((file, target))
        else:
            kinds["image"].append((file, target))
    images, animations, videos = kinds["image"], kinds["animation"], kinds["video"]
    failed: list[tuple[str, str]] = []
    written = {
        "image": _stylize_images(stylizer, images, args.batch or 1, max_pixels, options, failed),
        "animation": _stylize_animations(stylizer, animations, args.batch or 4, options, failed),
        "video": _stylize_videos(stylizer, videos, args.batch or 4, options, failed),
    }
    counts = [f"{written[kind]} of {_count(len(kinds[kind]), kind)}" for kind in kinds if kinds[kind]]
    print(f"stylized {_listed(counts or ['0 of 0 images'])} with {stylizer.name} into {out}")
    if failures:
        print(f"{len(failures)} input{'s' if len(failures) != 1 else ''} named no image or video:", file=sys.stderr)
        for name, reason in failures:
            print(f"  {name}: {reason}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} failed:", file=sys.stderr)
        for name, reason in failed:
            print(f"  {name}: {reason}", file=sys.stderr)
    return 1 if failed or failures else 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'s' if number != 1 else ''}"


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _stylize_images(
    stylizer: Stylizer,
    jobs: list[tuple[Path, Path]],
    batch: int,
    max_pixels: int,
    options: dict[str, Any],
    failed: list[tuple[str, str]],
) -> int:
    from tqdm import tqdm

    from faststyle.errors import FaststyleError
    from faststyle.images import check_format_size, long_side_size, open_with_alpha, save_image, with_alpha

    written = 0
    with tqdm(total=len(jobs), unit="image", disable=len(jobs) < 2, file=sys.stderr) as progress:
        for start in range(0, len(jobs), batch):
            loaded = []
            for file, target in jobs[start : start + batch]:
                try:
                    image, alpha = open_with_alpha(file, max_pixels=max_pixels)
                    size = options["size"]
                    height, width = long_side_size(image.height, image.width, size) if size else image.size[::-1]
                    check_format_size(target, width, height)  # before the work, not with the encoder's error after it
                    loaded.append((file, target, image, alpha))
                except FaststyleError as exc:
                    failed.append((str(file), str(exc)))
                    progress.update(1)
            try:
                results = stylizer.batch([job[2] for job in loaded], **options) if len(loaded) > 1 else None
            except Exception:
                results = None  # retried one by one below, so that one bad image does not fail the rest
            for i, (file, target, image, alpha) in enumerate(loaded):
                try:
                    result = results[i] if results is not None else stylizer(image, **options)
                    save_image(with_alpha(result, alpha), target)  # transparency kept where the format holds it
                    written += 1
                except Exception as exc:  # one failed image must not stop the batch; the summary names it
                    failed.append((str(file), _reason(exc)))
                progress.update(1)
    return written


def _stylize_each(
    jobs: list[tuple[Path, Path]], stylize: Callable[[Path, Path], Any], describe: Callable[[Any], str],
    failed: list[tuple[str, str]],
) -> int:  # fmt: skip
    """Videos or animations, one file at a time; a line each on stderr, and the failures named in ``failed``."""
    written = 0
    for file, target in jobs:
        try:
            result = stylize(file, target)
        except Exception as exc:  # the next file may still work; the summary names this one
            failed.append((str(file), _reason(exc)))
            continue
        print(f"{file.name}: {describe(result)} -> {target}", file=sys.stderr)
        written += 1
    return written


def _stylize_animations(
    stylizer: Stylizer, jobs: list[tuple[Path, Path]], batch: int, options: dict[str, Any],
    failed: list[tuple[str, str]],
) -> int:  # fmt: skip
    from faststyle.animation import AnimationResult, stylize_animation

    def describe(result: AnimationResult) -> str:
        return (
            f"{result.frames} frames, {result.width}x{result.height}, {result.duration_ms / 1000:.3g} s a play, "
            f"{result.playing}; stylized in {result.seconds:.1f} s ({result.throughput:.3g} frames/s)"
        )

    return _stylize_each(
        jobs, lambda file, target: stylize_animation(stylizer, file, target, batch=batch, **options), describe, failed
    )


def _stylize_videos(
    stylizer: Stylizer, jobs: list[tuple[Path, Path]], batch: int, options: dict[str, Any],
    failed: list[tuple[str, str]],
) -> int:  # fmt: skip
    from faststyle.video import VideoResult, stylize_video

    def describe(result: VideoResult) -> str:
        sound = {"copied": "sound copied", "none": "no sound"}.get(result.audio, f"sound {result.audio}")
        return (
            f"{result.frames} frames, {result.width}x{result.height} at {result.frame_rate:.3g} fps, "
            f"stylized in {result.seconds:.1f} s ({result.throughput:.3g} frames/s), {sound}"
        )

    return _stylize_each(
        jobs, lambda file, target: stylize_video(stylizer, file, target, batch=batch, **options), describe, failed
    )


def _reason(exc: Exception) -> str:
    from faststyle.errors import FaststyleError

    return str(exc) if isinstance(exc, FaststyleError) else f"{type(exc).__name__}: {exc}"
