"""``faststyle bench``: each target prints one JSON line with its figures; no timings are asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from faststyle.benchmarks._common import timed_together
from faststyle.cli import main
from faststyle.config import load_config
from faststyle.lossnets.weights import cached_info


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["bench", *argv, "--device", "cpu", "--repeats", "2", "--warmup", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_variants_are_timed_in_alternating_rounds() -> None:
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timings = timed_together(fns, torch.device("cpu"), repeats=4, warmup=1)
    assert calls == list("abc" + "abc" + "cba" + "abc" + "cba")
    assert all(len(t.seconds) == 4 and min(t.seconds) >= 0 and t.peak_memory_gb is None for t in timings.values())


def test_bench_train_times_faststyle_beside_the_plain_loop(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench(capsys, "train", "--size", "32", "--batch", "2", "--steps", "1", "--weights", "random")
    for key in ("baseline_img_per_s", "faststyle_img_per_s"):
        assert result[key]["runs"] == 2 and 0 < result[key]["min"] <= result[key]["median"] <= result[key]["max"]
    ours, plain = result["faststyle_img_per_s"]["median"], result["baseline_img_per_s"]["median"]
    assert result["speedup"] == pytest.approx(ours / plain)
    assert result["settings"] == {"precision": "fp32", "channels_last": False, "compile": False, "steps_per_run": 1}
    assert "faststyle_stability_img_per_s" not in result
    steady = bench(capsys, "train", "--size", "32", "--batch", "2", "--steps", "1", "--weights", "random",
                   "--no-baseline", "--stability-weight", "300")  # fmt: skip
    assert {"faststyle_img_per_s", "faststyle_stability_img_per_s"} <= steady.keys()
    assert steady["faststyle_stability_img_per_s"]["runs"] == 2 and steady["settings"]["stability_weight"] == 300


def test_bench_gatys_counts_evaluations_for_both_loops(capsys: pytest.CaptureFixture[str], lossnet_cache) -> None:
    result = bench(capsys, "gatys", "--size", "48", "--iters", "4", "--baseline", "--cache", str(lossnet_cache))
    assert result["weights"] != "random" and result["iters"] == 4
    assert result["evaluations"] >= 4 and result["baseline"]["evaluations"] >= 4
    # the loss each ends at, on the same objective (the plain loop's pixels clamped to [0,1] as an image holds them)
    ours, plain = result["loss"], result["baseline"]["loss"]
    assert 0 < ours < 2 * plain and 0 < plain < 2 * ours, (ours, plain)
    assert result["s_per_iter"]["median"] == pytest.approx(result["seconds"]["median"] / 4)
    assert result["speedup"] == pytest.approx(result["baseline"]["seconds"]["median"] / result["seconds"]["median"])


def test_bench_gatys_says_which_images_were_given(
    capsys: pytest.CaptureFixture[str], shared: Path, lossnet_cache: Path
) -> None:
    photo = str(shared / "data/content/kodak/kodim03.png")
    argv = ["gatys", "--backbone", "alexnet", "--size", "48", "--iters", "1", "--cache", str(lossnet_cache)]
    assert bench(capsys, *argv, "--repeats", "1", "--content", photo)["images"] == "content given, style synthetic"
    from faststyle.benchmarks.gatys import _images_given

    assert _images_given(None, photo) == "style given, content synthetic"
    assert (_images_given(photo, photo), _images_given(None, None)) == ("given", "synthetic")


def test_bench_infer_reports_each_backend_against_eager(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench(capsys, "infer", "--model", "random", "--size", "40x56", "--backend", "onnxruntime")
    assert result["size"] == [40, 56] and result["default"]["precision"] == "fp32"
    assert set(result["ms_per_image"]) == {"eager_fp32", "onnxruntime_fp32"} and "skipped" not in result
    assert result["speedup_vs_eager_fp32"]["eager_fp32"] == 1.0
    # a backend that cannot run on this device is said, not left out silently
    result = bench(capsys, "infer", "--model", "random", "--size", "40x56", "--backend", "cudagraphs", "--repeats", "1")
    assert set(result["ms_per_image"]) == {"eager_fp32"}
    assert result["skipped"] == {"cudagraphs_fp32": "CUDA graphs need CUDA"}


def test_bench_video_times_the_whole_path_beside_its_parts(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("av")
    result = bench(capsys, "video", "--size", "30x44", "--frames", "5", "--batch", "2", "--backend", "eager")
    assert (result["frame_size"], result["frames"], result["backend"]) == ([30, 44], 5, "eager")
    medians = {name: s["median"] for name, s in result["ms_per_frame"].items()}
    assert set(medians) == {"video", "network_only", "decode_encode_only"}
    assert result["overhead"] == pytest.approx(1 - medians["network_only"] / medians["video"], abs=1e-3)
    assert result["frames_per_second"]["video"] == pytest.approx(1000 / medians["video"], rel=1e-3)
    # an input clip is timed as it is: the made-up one, written here by the bench's own maker
    from faststyle.benchmarks.video import make_clip

    clip = make_clip(tmp_path / "clip.mkv", 24, 40, 3)
    result = bench(capsys, "video", "--input", str(clip), "--backend", "eager")
    assert (result["frame_size"], result["frames"], result["input"]) == ([24, 40], 3, str(clip))
    assert result["network_only_frames"] == 3
    # a longer input: the video path takes it all, the network alone its first --frames (not every frame held)
    clip = make_clip(tmp_path / "longer.mkv", 24, 40, 7)
    result = bench(capsys, "video", "--input", str(clip), "--frames", "2", "--batch", "2", "--backend", "eager")
    assert (result["frames"], result["network_only_frames"]) == (7, 2)
    frames = [Image.new("RGB", (40, 24), (50 * i, 90, 140)) for i in range(4)]  # FFmpeg reads no animated WebP
    frames[0].save(tmp_path / "loop.webp", save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = bench(capsys, "video", "--input", str(tmp_path / "loop.webp"), "--backend", "eager")
    assert (result["frame_size"], result["frames"]) == ([24, 40], 4)
    assert main(["bench", "video", "--input", str(tmp_path / "none.mp4"), "--device", "cpu"]) == 1
    assert "--input" in capsys.readouterr().err
    (tmp_path / "notes.mp4").write_text("not a video")
    assert main(["bench", "video", "--input", str(tmp_path / "notes.mp4"), "--device", "cpu"]) == 1
    assert "notes.mp4: cannot read its video (InvalidDataError" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_infer_compiled_on_a_cpu_prints_only_its_json(tmp_path: Path) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "faststyle.cli", "bench", "infer", "--model", "random", "--size", "32",
               "--backend", "compile", "--device", "cpu", "--repeats", "1", "--warmup", "0"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=True)
    assert "No CUDA runtime" not in done.stderr  # torch's "… is found, using CUDA_HOME=…" is not shown on a CPU
    assert set(json.loads(done.stdout)["ms_per_image"]) == {"eager_fp32", "compile_fp32"}


def test_bench_lossnet_names_the_weights_and_layers(capsys: pytest.CaptureFixture[str], lossnet_cache) -> None:
    result = bench(capsys, "lossnet", "--backbone", "alexnet", "--size", "64", "--batch", "2")
    assert result["weights"] == cached_info("alexnet", lossnet_cache)["sha256"]
    assert result["layers"] == load_config("alexnet").layers and result["ms_per_image"]["runs"] == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lossnet", "--backbone", "vgg16", "--size", "8", "--weights", "random"],
         "--size 8 is 8x8 pixels: vgg16 needs at least 16 pixels"),
        (["train", "--backbone", "googlenet", "--size", "16", "--steps", "1", "--no-baseline", "--weights", "random"],
         "--size 16 is 16x16 pixels: googlenet needs at least 31 pixels"),
        (["train", "--size", "16", "--steps", "1", "--no-baseline", "--weights", "random", "--stability-weight", "300"],
         "--stability-weight needs --size 2"),
        (["infer", "--model", "random", "--size", "0x0"], "--size '0x0': use"),
        (["video", "--size", "1x640"], "--size 1x640: the made-up clip needs at least 2 pixels a side"),
        (["video", "--size", "1"], "--size 1: the made-up clip needs at least 2 pixels a side"),
    ],
)  # fmt: skip
def test_bench_refuses_sizes_too_small_for_the_network(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *argv, "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err and captured.out == ""


def test_bench_lossnet_takes_the_backbone_from_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    result = bench(
        capsys, "lossnet", "--config", "googlenet_pool", "--size", "64", "--batch", "1", "--weights", "random"
    )
    assert result["backbone"] == "googlenet" and result["layers"] == load_config("googlenet_pool").layers
