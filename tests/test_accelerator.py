"""The accelerator paths: bf16 + channels_last (+ compile) training, the on-device photo cache, reduced-precision
Gatys against fp32, and half-precision (and compiled) inference.

They run on CUDA and are skipped without it. ``FASTSTYLE_TEST_DEVICE=cpu`` runs them on the CPU (bf16 where
CUDA uses fp16) to check the tests themselves. ``FASTSTYLE_TEST_COMPILE=0|1`` leaves out or runs the compiled
variants (default: run on CUDA, left out on the CPU).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
from conftest import copy_photos

from faststyle.config import default_config
from faststyle.data import PhotoDataModule
from faststyle.gatys import caffe_pixel_scale, stylize
from faststyle.images import load_image, resize_long_side
from faststyle.losses import PerceptualLoss
from faststyle.modelfile import load_model, read_metadata
from faststyle.settings import TrainSettings
from faststyle.stylize import Stylizer
from faststyle.training import train
from faststyle.transformer import TransformerNet

DEVICE = torch.device(os.environ.get("FASTSTYLE_TEST_DEVICE", "cuda"))
CUDA = DEVICE.type == "cuda"
COMPILE = os.environ.get("FASTSTYLE_TEST_COMPILE", "1" if CUDA else "0") == "1"
NO_COMPILE = "compiled variants off (FASTSTYLE_TEST_COMPILE)"
HALF = "fp16" if CUDA else "bf16"
pytestmark = pytest.mark.skipif(
    CUDA and not torch.cuda.is_available(), reason="needs CUDA; FASTSTYLE_TEST_DEVICE=cpu checks these on the CPU"
)


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    return copy_photos(tmp_path / "photos", 12)


@pytest.mark.parametrize(
    "compiled",
    [
        False,
        pytest.param("default", marks=pytest.mark.skipif(not COMPILE, reason=NO_COMPILE)),
        pytest.param("reduce-overhead", marks=pytest.mark.skipif(not (CUDA and COMPILE), reason="CUDA graphs")),
    ],
)
@pytest.mark.parametrize("stability", [0.0, 300.0], ids=["", "stability"])
def test_mixed_precision_training_on_the_device(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, compiled: bool | str, stability: float
) -> None:
    """With the stability term, the network runs twice a step on inputs of two sizes (compiled: two graphs)."""
    size, steps = (128, 60) if CUDA else (64, 30)
    settings = TrainSettings(
        styles=[str(shared / "data/styles/vangogh_starry_night_crop.jpg")],
        steps=steps,
        batch=4,
        size=size,
        cache=str(lossnet_cache),
        compile=compiled,
        channels_last=True,
        stability_weight=stability,
    )
    out = tmp_path / "m.safetensors"
    # inductor's CPU code gives NaN gradients under bf16 (faststyle.training refuses that combination)
    precision = "bf16-mixed" if CUDA or not compiled else "32-true"
    result = train(
        settings, photos, out, accelerator="gpu" if CUDA else "cpu", devices=1, precision=precision,
        gpu_cache=True, num_workers=0, val_photos=2, val_every=steps, progress=False,
        data_cache_dir=str(tmp_path / "hf"),
    )  # fmt: skip
    assert result.steps == steps and result.stopped_reason is None
    with open(result.run_dir / "metrics.csv") as handle:
        style = [float(row["loss/style"]) for row in csv.DictReader(handle) if row.get("loss/style")]
    assert len(style) >= 10
    assert sum(style[-5:]) / 5 < 0.75 * style[0], style
    if stability:
        with open(result.run_dir / "metrics.csv") as handle:
            steadiness = [float(row["loss/stability"]) for row in csv.DictReader(handle) if row.get("loss/stability")]
        assert len(steadiness) == len(style) and all(0 < value < 0.1 for value in steadiness), steadiness
    meta = read_metadata(out)
    assert meta["training"]["steps"] == steps and meta["data"]["skipped"] == 0
    net, _ = load_model(out, device=DEVICE)
    photo = load_image(shared / "data/content/kodak/kodim07.png", 192).to(DEVICE)
    with torch.no_grad():
        styled = net(photo)
    assert styled.shape == photo.shape and torch.isfinite(styled).all()
    assert float((styled - photo).abs().mean()) > 0.02
    assert sorted(p.name for p in (result.run_dir / "val").glob("grid_*.png")) == [
        "grid_000000.png", f"grid_{steps:06d}.png"
    ]  # fmt: skip


def test_the_photo_cache_crops_on_the_device(photos: Path, tmp_path: Path) -> None:
    dm = PhotoDataModule(photos, batch_size=8, size=96, gpu_cache=True, device=DEVICE, num_workers=0,
                         cache_dir=tmp_path / "hf")  # fmt: skip
    batch = dm.sample_batch()
    assert batch.device.type == DEVICE.type and batch.shape == (8, 3, 96, 96)
    assert all(photo.device.type == DEVICE.type for photo in dm.cache)
    assert float(batch.min()) >= 0 and float(batch.max()) <= 1 and float(batch.std()) > 0.05


def _reference_loss(image: torch.Tensor, content: torch.Tensor, style: torch.Tensor, net, size: int) -> float:
    """The total Gatys loss of ``image`` in fp32, set up as faststyle.gatys.stylize sets it up by default."""
    loss = PerceptualLoss(
        net, default_config(net.name), [resize_long_side(style, round(1.2 * size))], content_weight=1.0,
        style_weight=1e4 * caffe_pixel_scale(net) ** 2, normalization="caffe",
    )  # fmt: skip
    with torch.no_grad():
        return float(loss(image, content=resize_long_side(content, size)).total)


@pytest.mark.parametrize("backbone", ["vgg16", "googlenet"])
def test_reduced_precision_gatys_converges_like_fp32(shared: Path, lossnet_cache: Path, backbone: str) -> None:
    from faststyle.lossnets import get_lossnet

    net = get_lossnet(backbone, cache=lossnet_cache, download=False, device=DEVICE)
    content = load_image(shared / "data/content/tubingen.jpg").to(DEVICE)
    style = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg").to(DEVICE)
    size, iters = (256, 100) if CUDA else (96, 30)
    finals = {}
    for precision in ("fp32", "bf16", *(["fp16"] if CUDA else [])):
        image, history = stylize(content, style, lossnet=net, size=size, iters=iters, precision=precision,
                                 device=DEVICE, progress=False)  # fmt: skip
        assert image.dtype == torch.float32 and float(image.min()) >= 0 and float(image.max()) <= 1
        finals[precision] = _reference_loss(image, content, style, net, size)
        start = _reference_loss(resize_long_side(content, size), content, style, net, size)
        assert finals[precision] < 0.3 * start, (precision, finals[precision], start)
    # the same loss, measured in fp32, within 15 % of the fp32 run's after the same number of iterations
    assert all(value < 1.15 * finals["fp32"] for value in finals.values()), finals


def test_half_precision_inference_matches_fp32(shared: Path) -> None:
    torch.manual_seed(0)
    net = TransformerNet().eval()
    photo = load_image(shared / "data/content/chicago.jpg", 512)
    reference = Stylizer(net, device=DEVICE, precision="fp32", backend="eager", tile=0)(photo).float().cpu()
    backends = ["eager", "channels_last"]
    half = {b: Stylizer(net, device=DEVICE, precision=HALF, backend=b, tile=0)(photo).float().cpu() for b in backends}
    if COMPILE:
        half["compile"] = Stylizer(net, device=DEVICE, precision=HALF, compile=True, tile=0)(photo).float().cpu()
    if CUDA and COMPILE:
        graphed = Stylizer(net, device=DEVICE, precision=HALF, compile="reduce-overhead", tile=0)
        first = [graphed(photo) for _ in range(3)]  # replays reuse the graph's output memory
        half["cudagraphs"] = graphed(photo).float().cpu()
        assert all(torch.equal(image.cpu(), half["cudagraphs"]) for image in first)
    for backend, image in half.items():
        assert image.shape == reference.shape
        difference = (image - reference).abs()
        assert float(difference.mean()) < 0.01 and float(difference.max()) < 0.15, (backend, difference.max())


@pytest.mark.skipif(not COMPILE, reason=NO_COMPILE)
def test_compiled_gatys_follows_the_eager_run(shared: Path, lossnet_cache: Path) -> None:
    from faststyle.lossnets import get_lossnet

    net = get_lossnet("vgg16", cache=lossnet_cache, download=False, device=DEVICE)
    content = load_image(shared / "data/content/tubingen.jpg").to(DEVICE)
    style = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg").to(DEVICE)
    size, iters = (256, 50) if CUDA else (64, 10)
    runs = {}
    for mode in (False, "default", *(["reduce-overhead"] if CUDA else [])):
        image, history = stylize(content, style, lossnet=net, size=size, iters=iters, device=DEVICE, compile=mode,
                                 progress=False)  # fmt: skip
        runs[mode] = (image, history[-1]["total"], history[0]["total"])
    eager_image, eager_final, start = runs[False]
    for mode, (image, final, first) in runs.items():
        assert first == pytest.approx(start, rel=1e-3), mode
        assert final == pytest.approx(eager_final, rel=0.05), (mode, final, eager_final)
        assert float((image - eager_image).abs().mean()) < 0.01, mode


@pytest.mark.skipif(not CUDA, reason="counts CUDA synchronisations")
def test_a_gatys_iteration_waits_for_the_device_once_per_evaluation_and_twice_more(
    shared: Path, lossnet_cache: Path
) -> None:
    """Each wait for the device leaves it idle while Python queues the next kernels: an L-BFGS iteration may wait
    for the direction's descent check, once per loss evaluation (the line search's decision) and for the loss terms
    of its history entry, and nowhere else."""
    import warnings

    from faststyle.lossnets import get_lossnet

    net = get_lossnet("vgg16", cache=lossnet_cache, download=False, device=DEVICE)
    content = load_image(shared / "data/content/tubingen.jpg", 128).to(DEVICE)
    style = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg", 128).to(DEVICE)
    counts = {}
    for iters in (10, 30):
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                _, history = stylize(content, style, lossnet=net, size=128, iters=iters, device=DEVICE, progress=False)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        waits = sum("synchronizing" in str(w.message) for w in caught)
        counts[iters] = (waits, history[-1]["evaluations"])
    waits = counts[30][0] - counts[10][0]
    evaluations = counts[30][1] - counts[10][1]
    assert waits <= evaluations + 2 * 20, counts
