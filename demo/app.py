"""faststyle's Gradio demo: pick a style, upload a photo or a video or stream the webcam, compare backbones.

Run with ``faststyle demo`` or ``python demo/app.py [--host 127.0.0.1] [--port 7860] [--models DIR]``.
"""

import argparse
import contextlib
import math
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from faststyle.animation import frame_count, is_animation, kept_suffix, stylize_animation
from faststyle.commands.demo import add_arguments, parse_dirs
from faststyle.errors import FaststyleError
from faststyle.images import PixelLimitError, frame_total, open_with_alpha, opened, save_image, with_alpha
from faststyle.stylize import (
    ModelInfo,
    Stylizer,
    Unreadable,
    backbone_name,
    model_dirs,
    scan_models,
    style_key,
    style_name,
    style_thumbnail,
    train_command,
)
from faststyle.video import stylize_video

UPLOAD_MAX_PIXELS = 50_000_000
PHOTO_SIZES = (128, 2048)  # the output size slider's range, also enforced for API calls
FRAME_SIZES = (64, 768)  # the webcam's and the video tab's
VIDEO_MAX_FRAMES = 900  # 30 s at 30 fps: minutes of work on a CPU, with a progress bar
# Sound every browser plays in MP4; other sound (Vorbis from WebM, a camera's PCM, MP2 from .ts) is re-encoded to AAC
BROWSER_AUDIO = ("aac", "mp3")
# Pillow formats that are videos: Pillow reads their size, not their pictures (the Video tab takes them)
IDENTIFIED_VIDEOS = ("MPEG",)
ANIMATION_MAX_FRAMES = 300  # an animated GIF, PNG or WebP upload; its frames are at most FRAME_SIZES[1] px
# Asked of the camera: enough for the largest frame size (Gradio asks for up to 1920×1440, sent 5 times a second).
CAMERA = {"video": {"width": {"ideal": 960}, "height": {"ideal": 720}}}
OUTPUT_MAX_AGE_S = 3600  # our copies of results (Gradio serves its own copies, kept a day)
GRADIO_CACHE_AGE_S = 86_400  # an upload stays usable this long after it was made
CSS = "#latency textarea {font-variant-numeric: tabular-nums}"
# Models kept loaded at once (a comparison's four backbones): each holds its network and, on the CPU, ONNX Runtime's
# working memory of its largest pass, which a gallery of styles tried in turn would add up.
LOADED_MODELS = 4
# On the CPU, a pass over more pixels than this gives ONNX Runtime's working memory back: a 2048×2048 photo's is
# 5.5 GB, kept per model otherwise; the webcam's and videos' frames (≤ 768 px) keep theirs, which saves time.
RELEASE_PIXELS = 1024 * 1024
NAME_MAX_BYTES = 200  # a result's file name, under the file systems' 255 with the writer's temporary suffix


def _name_tile(text: str, size: int = 256) -> Image.Image:
    image = Image.new("RGB", (size, size), (58, 63, 77))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=22)
    words, lines = text.replace("_", " ").split(), [""]
    for word in words:
        candidate = f"{lines[-1]} {word}".strip()
        if draw.textlength(candidate, font=font) > size - 24 and lines[-1]:
            lines.append(word)
        else:
            lines[-1] = candidate
    block = "\n".join(lines)
    box = draw.multiline_textbbox((0, 0), block, font=font, align="center")
    origin = ((size - (box[2] - box[0])) / 2, (size - (box[3] - box[1])) / 2)
    draw.multiline_text(origin, block, font=font, fill=(235, 235, 235), align="center")
    return image


class StyleApp:
    """The models, their loaded stylizers, and the functions the page calls."""

    def __init__(self, dirs: Sequence[Path] | None = None, device: str | None = None) -> None:
        scan = scan_models(dirs)
        self.models = {m.name: m for m in scan.models}
        self.unreadable = scan.unreadable  # model files left out, shown with their reasons
        self.dirs = list(dirs) if dirs is not None else model_dirs()
        self.device = device
        self._stylizers: OrderedDict[str, Stylizer] = OrderedDict()  # the most recently used last
        self._lock = threading.Lock()
        self._pruning = threading.Lock()  # each event has its own queue: a photo and a video may prune at once
        self._outputs = Path(tempfile.mkdtemp(prefix="faststyle-demo-"))
        weakref.finalize(self, shutil.rmtree, self._outputs, ignore_errors=True)

    def stylizer(self, name: str) -> Stylizer:
        if name not in self.models:
            raise gr.Error(f"unknown style model {name!r}; pick one from the gallery", print_exception=False)
        with self._lock:
            if name not in self._stylizers:
                try:
                    self._stylizers[name] = Stylizer(
                        self.models[name].path, device=self.device, release_pixels=RELEASE_PIXELS
                    )
                except FaststyleError as exc:
                    raise gr.Error(f"The model {name} cannot be used: {exc}") from None
                while len(self._stylizers) > LOADED_MODELS:  # a request still using it keeps it until done
                    self._stylizers.popitem(last=False)
            self._stylizers.move_to_end(name)
            return self._stylizers[name]

    def _run(self, stylizer: Stylizer, image: Image.Image, size: int, strength: float, preserve: bool) -> Image.Image:
        try:
            return stylizer(image, size=size, strength=_number(strength, "strength"), preserve_color=bool(preserve))
        except FaststyleError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    def groups(self) -> dict[str, list[ModelInfo]]:
        """Models grouped by style (style images' sha256, else name), for the backbone comparison."""
        groups: dict[str, list[ModelInfo]] = {}
        for info in self.models.values():
            groups.setdefault(style_key(info.metadata, info.name), []).append(info)
        return groups

    def gallery(self) -> list[tuple[Image.Image, str]]:
        items = []
        for info in self.models.values():
            # the backbone first: models of one painting share a thumbnail, and long captions are cut at the end
            caption = f"{backbone_name(info.metadata)} · {info.name} · {style_name(info.metadata, info.name)}"
            items.append((style_thumbnail(info) or _name_tile(info.name), caption))
        return items

    @staticmethod
    def _upload(payload: Any) -> tuple[str, str]:
        """The uploaded file's path and name, from the raw payload (the event skips Gradio's preprocessing, which
        would fail on a non-image with a bare error)."""
        if isinstance(payload, dict):
            path, name = payload.get("path"), Path(str(payload.get("orig_name") or "")).name
        else:
            path, name = payload, ""
        if not path:
            raise gr.Error("Upload a photo first (JPEG, PNG, WebP …).", print_exception=False)
        return str(path), name

    def _open_upload(self, payload: Any) -> tuple[Image.Image, Image.Image | None, str]:
        """The uploaded file as an RGB image (over white where transparent), its transparency (None where opaque),
        and its name; or a message in the page."""
        path, name = self._upload(payload)
        try:
            return (*open_with_alpha(path, max_pixels=UPLOAD_MAX_PIXELS), name)
        except FaststyleError as exc:
            raise _unreadable(name, exc) from None

    def stylize_photo(
        self,
        photo: Any,
        model: str,
        strength: float,
        preserve_color: bool,
        size: float,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio's way to ask for a progress bar
    ) -> tuple[str, str, Any]:
        upload, name = self._upload(photo)
        if is_animation(upload):
            return self._stylize_animation(self.stylizer(model), model, upload, name, strength, preserve_color, size)
        image, alpha, name = self._open_upload(photo)
        stylizer = self.stylizer(model)
        start = time.perf_counter()
        result = self._run(stylizer, image, _clamp(size, PHOTO_SIZES), strength, preserve_color)
        ms = (time.perf_counter() - start) * 1000
        result = with_alpha(result, alpha)  # a transparent upload comes back transparent, as from the CLI
        path = save_image(result, self._output_path(name, "photo", f"-{model}.png"))
        latency = (
            f"{ms:.0f} ms · {result.width}×{result.height} px · {model} ({stylizer.backend}, {stylizer.precision})"
        )
        return str(path), latency, gr.DownloadButton("Download PNG", value=str(path), interactive=True)

    def _stylize_animation(
        self,
        stylizer: Stylizer,
        model: str,
        upload: str,
        name: str,
        strength: float,
        preserve_color: bool,
        size: float,
    ) -> tuple[str, str, Any]:
        """An animated GIF, PNG or WebP upload, stylized into an animation of its own format."""
        name = name or Path(upload).name
        try:
            with opened(upload, UPLOAD_MAX_PIXELS) as animation:
                frames, suffix = frame_count(animation), kept_suffix(Path(name), animation.format)
        except FaststyleError as exc:
            raise _unreadable(name, exc) from None
        if frames > ANIMATION_MAX_FRAMES:
            raise gr.Error(
                f"Cannot stylize {name}: it has {frames} frames, and this demo takes animations of up to "
                f"{ANIMATION_MAX_FRAMES}. Shorten it, or run `faststyle stylize` on your own machine.",
                print_exception=False,
            )
        target = self._output_path(name, "animation", f"-{model}{suffix}")
        try:
            result = stylize_animation(
                stylizer,
                upload,
                target,
                size=min(_clamp(size, PHOTO_SIZES), FRAME_SIZES[1]),
                strength=_number(strength, "strength"),
                preserve_color=bool(preserve_color),
                max_pixels=UPLOAD_MAX_PIXELS,
            )
        except PixelLimitError as exc:  # a later frame larger than the first
            raise _unreadable(name, exc) from None
        except FaststyleError as exc:
            raise _cannot(name, upload, exc) from None
        report = (
            f"{result.frames} frames · {result.width}×{result.height} px · {result.seconds:.1f} s "
            f"({result.throughput:.3g} frames/s) · {result.playing} · {model} "
            f"({stylizer.backend}, {stylizer.precision})"
        )
        label = f"Download {suffix.lstrip('.').upper()}"
        return str(result.path), report, gr.DownloadButton(label, value=str(result.path), interactive=True)

    def _output_path(self, upload_name: str, default_stem: str, ending: str) -> Path:
        """Where a result goes: a folder of its own, so that the download keeps the upload's name."""
        self._prune_outputs()
        stem = Path(upload_name).stem
        stem = re.sub(r"[^\w.-]+", "_", stem).encode()[:80].decode(errors="ignore").lstrip(".") or default_stem
        suffix = Path(ending).suffix  # the rest of the ending is the model's name, which may be long too
        name = f"{stem}_stylized{ending.removesuffix(suffix)}".encode()[: NAME_MAX_BYTES - len(suffix)]
        return self._outputs / str(time.time_ns()) / f"{name.decode(errors='ignore')}{suffix}"

    def stylize_clip(
        self,
        clip: str | None,
        model: str,
        strength: float,
        preserve_color: bool,
        size: float,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio's way to ask for a progress bar
    ) -> tuple[str, str]:
        if not clip:
            raise gr.Error("Upload a video first (MP4, MOV, WebM …).", print_exception=False)
        if _is_photo(clip):
            raise gr.Error(f"{Path(clip).name} is a photo: stylize it in the Photo tab.", print_exception=False)
        stylizer = self.stylizer(model)
        target = self._output_path(clip, "video", f"-{model}.mp4")
        try:
            result = stylize_video(
                stylizer,
                clip,
                target,
                size=_clamp(size, FRAME_SIZES),
                strength=_number(strength, "strength"),
                preserve_color=bool(preserve_color),
                max_frames=VIDEO_MAX_FRAMES,
                audio_codecs=BROWSER_AUDIO,
                max_pixels=UPLOAD_MAX_PIXELS,
            )
        except PixelLimitError as exc:  # an animation's later frame larger than the first
            raise _unreadable(Path(clip).name, exc) from None
        except FaststyleError as exc:
            raise _cannot(Path(clip).name, str(clip), exc) from None
        sound = {"copied": "sound kept", "none": "no sound"}.get(result.audio, f"sound {result.audio}")
        return str(result.path), (
            f"{result.frames} frames · {result.width}×{result.height} px · {result.seconds:.1f} s "
            f"({result.throughput:.3g} frames/s, {stylizer.backend}, {stylizer.precision}) · {sound}"
        )

    def _prune_outputs(self) -> None:
        """Forget results older than ``OUTPUT_MAX_AGE_S``: a demo left running does not fill the disk."""
        if not self._pruning.acquire(blocking=False):
            return  # another request is at it
        try:
            cutoff = time.time() - OUTPUT_MAX_AGE_S
            for old in (p for p in self._outputs.rglob("*") if p.is_file()):
                with contextlib.suppress(OSError):
                    if old.stat().st_mtime < cutoff:
                        old.unlink()
                        if old.parent != self._outputs:
                            old.parent.rmdir()
            for folder in [p for p in self._outputs.iterdir() if p.is_dir()]:  # a failed job's, left empty
                with contextlib.suppress(OSError):  # (one with a result in it is not removed)
                    if folder.stat().st_mtime < cutoff:
                        folder.rmdir()
        finally:
            self._pruning.release()

    def stylize_brushed(
        self, editor: dict[str, Any] | None, model: str, strength: float, preserve: bool, size: float
    ) -> tuple[str, str]:
        """The photo in the brush editor, painted only where it was brushed (all of it when nothing was)."""
        photo = (editor or {}).get("background")
        if photo is None:
            raise gr.Error("Upload a photo first, then brush over what to paint.", print_exception=False)
        if photo.width * photo.height > UPLOAD_MAX_PIXELS:
            raise gr.Error(
                f"The photo has over {UPLOAD_MAX_PIXELS:,} pixels; downscale it first.", print_exception=False
            )
        brushed = np.zeros((photo.height, photo.width), dtype=bool)
        for layer in editor.get("layers") or []:
            if layer is not None and layer.size == photo.size and layer.mode == "RGBA":
                brushed |= np.asarray(layer.getchannel("A")) > 0
        weight: Any = _number(strength, "strength")
        if brushed.any():  # feathered by about 1% of the photo's size, so that the painting fades into the photo
            mask = Image.fromarray(brushed.astype(np.uint8) * 255).filter(
                ImageFilter.GaussianBlur(max(1.0, 0.01 * max(photo.size)))
            )
            weight = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255)[None, None] * weight
        stylizer = self.stylizer(model)
        start = time.perf_counter()
        try:
            # as it is (RGBA from the editor): the Stylizer paints it over white and puts its transparency back
            result = stylizer(photo, size=_clamp(size, PHOTO_SIZES), strength=weight, preserve_color=bool(preserve))
        except FaststyleError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        ms = (time.perf_counter() - start) * 1000
        path = save_image(result, self._output_path("brushed.png", "photo", f"-{model}.png"))
        where = f"{brushed.mean():.0%} of the photo brushed" if brushed.any() else "nothing brushed: all of it"
        return str(path), f"{ms:.0f} ms · {result.width}×{result.height} px · {where}"

    def stylize_frame(
        self, frame: np.ndarray | None, name: str, strength: float, preserve: bool, size: float
    ) -> tuple[np.ndarray | None, str]:
        if frame is None:
            return None, ""
        stylizer = self.stylizer(name)  # loaded before the clock starts: the latency is the frame's own
        start = time.perf_counter()
        result = self._run(
            stylizer, Image.fromarray(frame).convert("RGB"), _clamp(size, FRAME_SIZES), strength, preserve
        )
        ms = (time.perf_counter() - start) * 1000
        return np.asarray(result), f"{ms:.0f} ms per frame · {result.width}×{result.height} px"

    def compare(self, photo: Any, style: str, strength: float, preserve_color: bool, size: float) -> list[Any]:
        image, _, _ = self._open_upload(photo)
        results = []
        for info in self.groups().get(style, []):
            stylizer = self.stylizer(info.name)
            start = time.perf_counter()
            out = self._run(stylizer, image, _clamp(size, PHOTO_SIZES), strength, preserve_color)
            ms = (time.perf_counter() - start) * 1000
            caption = f"{backbone_name(info.metadata)} · {info.name} · {ms:.0f} ms"
            results.append((_captioned(out, caption), caption))
        if not results:
            raise gr.Error("Pick a style to compare.", print_exception=False)
        return results


def _not_a_folder(path: Path) -> str:
    if path.is_dir():
        return ""
    if path.is_file():
        return f" (a file: give its folder, `faststyle demo --models {path.parent}`)"
    return " (does not exist)"


def _unreadable_models(unreadable: Sequence[Unreadable]) -> str:
    """The page's list of the model files that were left out, and why (Markdown; empty when there are none)."""
    if not unreadable:
        return ""
    lines = [f"- `{u.path.name}`: {u.reason.replace(str(u.path), 'the file')}" for u in unreadable]
    return "**Left out, as they could not be read:**\n\n" + "\n".join(lines)


def _unreadable(name: str, exc: FaststyleError) -> gr.Error:
    """The page's message for an upload that cannot be opened: too many pixels, or not an image."""
    name = name or "the upload"
    if isinstance(exc, PixelLimitError):
        return gr.Error(
            f"Cannot stylize {name}: it has more than {UPLOAD_MAX_PIXELS / 1e6:.0f} megapixels. Scale it down "
            "and upload it again (the output is at most 2048 px on its long side anyway).",
            print_exception=False,
        )
    return gr.Error(
        f"Cannot stylize {name}: it is not an image file this demo can read. Upload a JPEG, PNG or WebP photo.",
        print_exception=False,
    )


def _is_photo(path: str) -> bool:
    """Whether an upload is a still image: one frame that Pillow reads (a video it cannot read at all, or an MPEG-1/2
    video stream, .m2v or .mpg, whose header Pillow knows but whose pictures it cannot decode)."""
    try:
        with opened(path) as image:
            return frame_total(image) == 1 and image.format not in IDENTIFIED_VIDEOS
    except FaststyleError:
        return False


def _cannot(name: str, path: str, exc: FaststyleError) -> gr.Error:
    """The message in the page for an upload that cannot be stylized, naming it by its name, not by the server's
    path to it."""
    return gr.Error(f"Cannot stylize {name}: {str(exc).replace(path, name)}", print_exception=False)


def _captioned(image: Image.Image, text: str) -> Image.Image:
    """The image above a band with ``text``: which backbone made it stays readable however the gallery lays it out."""
    size = max(14, image.width // 40)
    font = ImageFont.load_default(size=size)
    band = round(size * 1.8)
    framed = Image.new("RGB", (image.width, image.height + band), (255, 255, 255))
    framed.paste(image, (0, 0))
    ImageDraw.Draw(framed).text((8, image.height + band / 2), text, fill=(30, 30, 30), font=font, anchor="lm")
    return framed


def _result_image(label: str, elem_id: str) -> gr.Image:
    """A stylized picture: PNG, with its download and full-screen buttons."""
    return gr.Image(label=label, format="png", interactive=False, buttons=["download", "fullscreen"], elem_id=elem_id)


def _clamp(value: Any, limits: tuple[int, int]) -> int:
    """A size from the page, or from an API call that skipped the slider's range check, kept within the slider's."""
    return int(min(max(_number(value, "size"), limits[0]), limits[1]))


def _number(value: Any, what: str) -> float:
    """A slider's value as a float; an API call's ``None``, text or NaN (the events that skip Gradio's preprocessing
    pass on whatever JSON they got) is a message in the page, not a stack trace."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number):
        raise gr.Error(f"The {what} must be a number, not {value!r}.", print_exception=False)
    return number


def build_demo(dirs: Sequence[Path] | None = None, device: str | None = None) -> gr.Blocks:
    app = StyleApp(dirs, device)
    # Gradio's own copies of uploads and results: checked hourly, deleted after a day, and all of them at shutdown.
    cleanup = (OUTPUT_MAX_AGE_S, GRADIO_CACHE_AGE_S)
    with gr.Blocks(title="faststyle", analytics_enabled=False, delete_cache=cleanup) as demo:
        gr.Markdown("# faststyle — instant style transfer")
        if not app.models:
            searched = ", ".join(f"`{d}`{_not_a_folder(d)}" for d in app.dirs)
            into = next((d for d in app.dirs if d.is_dir()), Path("checkpoints"))
            gr.Markdown(
                f"**No style models found** (looked in {searched}).\n\n"
                f"Train one into `{into}` with\n\n```\n{train_command(into)}\n```\n\n"
                "then restart the demo, or point it at a folder of models with `faststyle demo --models DIR` "
                "(or `$FASTSTYLE_MODELS`).\n\n" + _unreadable_models(app.unreadable),
                elem_id="no-models",
            )
            return demo
        names = list(app.models)
        gallery = gr.Gallery(
            value=app.gallery(),
            label="Styles (click one to use it)",
            columns=6,
            fit_columns=False,
            height=230,
            object_fit="cover",
            allow_preview=False,
            interactive=False,
            selected_index=0,
            elem_id="styles",
        )
        if app.unreadable:
            gr.Markdown(_unreadable_models(app.unreadable), elem_id="unreadable-models")
        with gr.Row():  # min_width: on a phone the three wrap instead of squeezing the checkbox's label away
            model = gr.Dropdown(names, value=names[0], label="Style model", min_width=240, elem_id="model")
            strength = gr.Slider(0, 1, value=1.0, step=0.05, label="Strength", min_width=240, elem_id="strength")
            preserve = gr.Checkbox(value=False, label="Keep the photo's colours", min_width=240, elem_id="preserve")

        def pick(evt: gr.SelectData) -> str:
            return names[evt.index]

        gallery.select(pick, None, model, api_visibility="private")
        model.input(  # a model picked in the list is highlighted in the gallery too
            lambda name: gr.Gallery(selected_index=names.index(name)), model, gallery, api_visibility="private"
        )
        with gr.Tab("Photo"):
            with gr.Row():
                photo = gr.Image(
                    label="Photo (an animated GIF, PNG or WebP comes back animated)",
                    type="filepath",
                    sources=["upload", "clipboard"],
                    elem_id="photo",
                )
                output = _result_image("Stylized", "output")
            with gr.Row():
                size = gr.Slider(*PHOTO_SIZES, value=512, step=32, label="Output size (long side, px)", elem_id="size")
                run = gr.Button("Stylize", variant="primary", elem_id="run")
            with gr.Row():
                latency = gr.Textbox(label="Latency", interactive=False, elem_id="latency")
                download = gr.DownloadButton("Download PNG", interactive=False, elem_id="download")
            run.click(
                lambda: (None, "", gr.DownloadButton(value=None, interactive=False)),  # never a previous result
                None,
                [output, latency, download],
                queue=False,
                api_visibility="private",
            ).then(
                app.stylize_photo,
                [photo, model, strength, preserve, size],
                [output, latency, download],
                preprocess=False,
                api_name="stylize",
            )
        with gr.Tab("Brush"):
            with gr.Row():
                brush_photo = gr.ImageEditor(
                    label="Photo: brush over what to paint (nothing brushed: all of it)",
                    type="pil",
                    sources=["upload", "clipboard"],
                    transforms=(),
                    layers=False,
                    brush=gr.Brush(colors=[("#ff3399", 0.5)], color_mode="fixed"),
                    elem_id="brush-photo",
                )
                brush_output = _result_image("Stylized where brushed", "brush-output")
            with gr.Row():
                brush_size = gr.Slider(*PHOTO_SIZES, value=512, step=32, label="Output size (long side, px)")
                brush_run = gr.Button("Stylize where brushed", variant="primary", elem_id="brush-run")
            brush_latency = gr.Textbox(label="Latency", interactive=False, elem_id="brush-latency")
            brush_run.click(
                lambda: (None, ""), None, [brush_output, brush_latency], queue=False, api_visibility="private"
            ).then(
                app.stylize_brushed,
                [brush_photo, model, strength, preserve, brush_size],
                [brush_output, brush_latency],
                api_visibility="private",
            )
        with gr.Tab("Webcam"):
            with gr.Row():
                camera = gr.Image(
                    label="Webcam",
                    sources=["webcam"],
                    streaming=True,
                    type="numpy",
                    webcam_options=gr.WebcamOptions(constraints=CAMERA),
                    elem_id="camera",
                )
                live = gr.Image(label="Stylized frames", interactive=False, elem_id="live")
            with gr.Row():
                frame_size = gr.Slider(*FRAME_SIZES, value=256, step=32, label="Frame size (long side, px)")
                frame_latency = gr.Textbox(label="Latency", interactive=False, elem_id="frame-latency")
            camera.stream(
                app.stylize_frame,
                [camera, model, strength, preserve, frame_size],
                [live, frame_latency],
                stream_every=0.2,
                time_limit=60,  # then the next visitor's turn (the page says it is queued)
                concurrency_limit=2,
                api_visibility="private",
            )
        with gr.Tab("Video"):
            with gr.Row():
                clip = gr.Video(label="Video", sources=["upload"], elem_id="clip")
                clip_out = gr.Video(label="Stylized video", interactive=False, buttons=["download"], elem_id="clip-out")
            with gr.Row():
                clip_size = gr.Slider(*FRAME_SIZES, value=384, step=32, label="Frame size (long side, px)")
                clip_run = gr.Button("Stylize video", variant="primary", elem_id="clip-run")
            clip_report = gr.Textbox(label="Frames, size and speed", interactive=False, elem_id="clip-report")
            clip_run.click(
                app.stylize_clip,
                [clip, model, strength, preserve, clip_size],
                [clip_out, clip_report],
                api_name="stylize_video",
                show_progress_on=clip_out,
            )
        with gr.Tab("Compare backbones"):
            groups = {key: models for key, models in app.groups().items() if len(models) > 1}
            if not groups:
                gr.Markdown(
                    "No style has models from more than one loss network yet. Train the same style with another "
                    "backbone (`faststyle train --backbone googlenet …`, or `faststyle compare`) to see them side by "
                    "side here.",
                    elem_id="compare-none",
                )
            else:
                choices = [
                    (f"{style_name(models[0].metadata, models[0].name)} ({len(models)} models)", key)
                    for key, models in groups.items()
                ]
                gr.Markdown(
                    "The same style trained with different loss networks, applied to the photo from the Photo tab."
                )
                with gr.Row():
                    style = gr.Dropdown(choices, value=choices[0][1], label="Style", elem_id="compare-style")
                    compare = gr.Button("Compare", elem_id="compare")
                side_by_side = gr.Gallery(
                    label="By backbone",
                    format="png",  # exact pixels: the tab compares fine texture, which lossy WebP (the default) blurs
                    columns=min(4, max(len(models) for models in groups.values())),
                    height="auto",
                    object_fit="contain",
                    elem_id="side-by-side",
                )
                compare.click(
                    app.compare,
                    [photo, style, strength, preserve, size],
                    side_by_side,
                    preprocess=False,
                    api_name="compare",
                )
    return demo


def launch(
    dirs: Sequence[Path] | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    device: str | None = None,
    prevent_thread_lock: bool = False,
) -> gr.Blocks:
    from faststyle.device import resolve_device

    on_gpu = resolve_device(device).type == "cuda"  # a device this machine lacks fails here, not on every request
    demo = build_demo(dirs, device)
    demo.queue(default_concurrency_limit=2 if on_gpu else 1, max_size=64)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            prevent_thread_lock=True,
            max_file_size="50mb",
            ssr_mode=False,
            css=CSS,
            footer_links=["api"],
            quiet=True,  # Gradio's own lines advise `share=True` in Python; --share is the option here
        )
    except OSError as exc:
        raise FaststyleError(
            f"cannot serve on {host}:{port} ({exc}); pick another --port, or a --host of this machine"
        ) from None
    print(f"faststyle demo at {demo.local_url}" + (f" and {demo.share_url}" if demo.share_url else ""), flush=True)
    interactive = bool(getattr(sys, "ps1", sys.flags.interactive))  # Gradio's own test: a session goes on
    if not prevent_thread_lock and not interactive:
        _serve_until_stopped(demo)
    return demo


def _serve_until_stopped(demo: gr.Blocks) -> None:
    """Until Ctrl-C, or SIGTERM as `kill` sends: either closes the server, and then the temporary files go."""
    if threading.current_thread() is not threading.main_thread():
        demo.block_thread()
        return
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        demo.block_thread()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        launch(parse_dirs(args.models), args.host, args.port, args.share == "yes", args.device)
    except FaststyleError as exc:
        parser.exit(1, f"{parser.prog}: error: {exc}\n")


if __name__ == "__main__":
    main()
