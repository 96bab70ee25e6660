"""Training end to end on CPU: real VGG16 weights, real photos and paintings from ../shared."""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, copy_photos
from PIL import Image

from faststyle.cli import main
from faststyle.config import default_config
from faststyle.errors import FaststyleError
from faststyle.images import load_image, sha256_file
from faststyle.losses import PerceptualLoss
from faststyle.lossnets import get_lossnet
from faststyle.metrics import texture_distance
from faststyle.modelfile import load_model, read_metadata
from faststyle.resuming import adopt_adam_state
from faststyle.settings import TrainSettings
from faststyle.stylize import ModelInfo, style_thumbnail
from faststyle.training import dither_flat, train
from faststyle.transformer import TransformerNet


@pytest.fixture()
def photos(shared: Path, tmp_path: Path) -> Path:
    """Eight real photos plus one corrupt file."""
    folder = copy_photos(tmp_path / "photos", 8)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    return folder


def _settings(shared: Path, lossnet_cache: Path, steps: int) -> TrainSettings:
    return TrainSettings(
        styles=[str(shared / "data/styles/vangogh_starry_night_crop.jpg")],
        steps=steps,
        batch=2,
        size=64,
        style_size=128,
        width=0.5,
        cache=str(lossnet_cache),
    )


def _train(settings: TrainSettings, photos: Path, out: Path, **options: object):
    defaults = {"num_workers": 0, "val_photos": 0, "progress": False, "data_cache_dir": str(photos.parent / "hf")}
    return train(settings, photos, out, **(defaults | options))


def _style_losses(run: Path) -> list[float]:
    with open(run / "metrics.csv") as handle:
        return [float(row["loss/style"]) for row in csv.DictReader(handle) if row.get("loss/style")]


def test_a_short_run_lowers_the_style_loss_and_writes_a_usable_model(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "starry.safetensors"
    settings = _settings(shared, lossnet_cache, steps=30)
    monkeypatch.chdir(photos.parent)  # the photos named relative to here; the model records where they are
    result = _train(settings, Path(photos.name), out, val_every=15, val_photos=2, data_cache_dir=str(tmp_path / "hf"))
    assert result.model_path == out and result.steps == 30
    assert result.skipped_photos == 1
    wall_rate = 30 * settings.batch / result.seconds  # set-up and the first step included
    assert math.isfinite(result.images_per_second) and result.images_per_second > wall_rate
    style = _style_losses(result.run_dir)
    assert len(style) == 30
    assert sum(style[-5:]) / 5 < 0.7 * style[0], style
    assert sorted(p.name for p in (result.run_dir / "val").glob("grid_*.png")) == [
        "grid_000000.png",
        "grid_000015.png",
        "grid_000030.png",
    ]
    with open(result.run_dir / "metrics.csv") as handle:  # the texture of the outputs shown in each grid
        logged = {int(r["step"]): float(r["val/texture"]) for r in csv.DictReader(handle) if r.get("val/texture")}
    assert logged == pytest.approx(result.val_texture) and sorted(logged) == [0, 15, 30]
    val = result.run_dir / "val"
    painting = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg", settings.resolved_style_size())
    grid, top, ratios = load_image(val / "grid_000030.png"), 4, []
    for photo in (load_image(val / f"photo_{i}.png") for i in range(2)):
        height, width = photo.shape[-2:]
        styled = grid[..., top : top + height, 8 + width : 8 + 2 * width]  # right of the photo, past two gaps
        ratios.append(texture_distance(styled, painting).item() / texture_distance(photo, painting).item())
        top += height + 4
    assert logged[30] == pytest.approx(sum(ratios) / 2, rel=0.02)

    meta = read_metadata(out)
    style_file = shared / "data/styles/vangogh_starry_night_crop.jpg"
    assert meta["style"]["images"][0]["sha256"] == sha256_file(style_file)
    assert meta["style"]["images"][0]["size"] == [938, 640]
    thumbnail = style_thumbnail(ModelInfo("starry", out, meta))  # what the demo's gallery shows
    assert thumbnail is not None and thumbnail.size == (281, 192)
    coarse = [
        np.asarray(i.convert("RGB").resize((28, 19), Image.BOX), np.float32)
        for i in (thumbnail, Image.open(style_file))
    ]
    assert np.abs(coarse[0] - coarse[1]).mean() < 3  # levels of 255: the painting, as a whole
    assert meta["backbone"]["name"] == "vgg16"
    assert meta["backbone"]["weights_sha256"] == sha256_file(lossnet_cache / "vgg16.safetensors")
    assert meta["layers"]["style_layers"] == {f"conv{i}_1": 0.2 for i in range(1, 6)}
    assert meta["loss"]["style_weight"] == settings.style_weight
    assert meta["training"]["steps"] == 30 and meta["training"]["batch"] == 2
    assert meta["training"]["hardware"].startswith("cpu ") and meta["training"]["precision"] == "32-true"
    assert meta["data"] == {"source": str(photos), "images": 9, "skipped": 1, "short_side": None}
    assert meta["dtype"] == "float16" and "torch" in meta["versions"]

    net, meta_again = load_model(out)
    assert meta_again == meta
    trained = torch.load(result.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    trained = {k.removeprefix("net."): v for k, v in trained["state_dict"].items() if k.startswith("net.")}
    assert set(trained) == set(net.state_dict())
    for name, value in net.state_dict().items():  # the weights of the last step, in half precision
        torch.testing.assert_close(value.float(), trained[name].half().float(), rtol=0, atol=0)
    photo = load_image(shared / "data/content/chicago.jpg", 96)
    with torch.no_grad():
        styled = net(photo)
    assert styled.shape == photo.shape
    assert styled.min() >= 0 and styled.max() <= 1
    assert (styled - photo).abs().mean() > 0.05
    # it paints an unseen photo closer to the painting than the untrained network it started from
    torch.manual_seed(settings.seed)
    untrained = TransformerNet(settings.width).eval()
    perceptual = PerceptualLoss(get_lossnet("vgg16", cache=lossnet_cache), default_config("vgg16"),
                                [load_image(style_file, 128)], normalization="mean")  # fmt: skip
    with torch.no_grad():
        before, after = (perceptual(n(photo), photo).style.item() for n in (untrained, net))
    assert after < 0.9 * before, (before, after)  # measured: 0.83 after 30 steps at 64 px


def test_resume_continues_the_step_count(shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    first = _train(_settings(shared, lossnet_cache, 4), photos, out, checkpoint_every=2)
    assert first.steps == 4 and (first.run_dir / "checkpoints" / "last.ckpt").exists()
    with pytest.raises(FaststyleError, match="--resume"):
        _train(_settings(shared, lossnet_cache, 8), photos, out)
    lower = replace(_settings(shared, lossnet_cache, 8), lr=2e-4)  # --lr may change: from the step resumed at
    second = _train(lower, photos, out, resume=True, checkpoint_every=3)
    assert second.steps == 8 and second.start_step == 4
    assert read_metadata(out)["training"]["images_seen"] == 16
    assert read_metadata(out)["training"]["lr"] == 2e-4
    assert read_metadata(out)["training"]["lr_from_step"] == [[0, 1e-3], [4, 2e-4]]
    state = torch.load(first.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert [group["lr"] for group in state["optimizer_states"][0]["param_groups"]] == [2e-4]  # what Adam used
    assert read_metadata(out)["training"]["timed_steps"] == 4  # the seconds and speed are of the second part
    assert read_metadata(out)["data"]["skipped"] == 1  # the corrupt photo, found in either part, counted once
    # a third part finds the newest checkpoint, whatever --checkpoint-every was
    third = _train(replace(lower, steps=9), photos, out, resume=True, checkpoint_every=5)
    assert third.steps == 9 and read_metadata(out)["training"]["images_seen"] == 18
    assert read_metadata(out)["training"]["lr_from_step"] == [[0, 1e-3], [4, 2e-4]]
    assert sorted(p.name for p in (first.run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    with open(first.run_dir / "metrics.csv") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle) if row.get("loss/style")]
    assert steps == list(range(9))  # the whole history, though Lightning's CSV logger starts a new file each time
    assert not (first.run_dir / "metrics.previous.csv").exists()


@pytest.mark.parametrize("streamed", [False, True], ids=["indexed-then-streamed", "streamed-then-indexed"])
def test_photos_found_unreadable_stay_counted_when_a_resume_reads_the_folder_the_other_way(
    photos: Path, tmp_path: Path, streamed: bool
) -> None:
    """--stream may change on --resume: the photos found unreadable before are skipped and counted all the same (a
    streamed folder's photos are known by their paths' slots, an indexed one's by their names; they were lost)."""
    from faststyle.data import PhotoDataModule

    (photos / "empty.jpg").write_bytes(b"")  # and the fixture's broken.jpg

    def folder(stream: bool) -> PhotoDataModule:
        return PhotoDataModule(photos, num_workers=0, cache_dir=tmp_path / "hf", stream=stream)

    before = folder(streamed)
    assert len(before.val_photos(20)) == 8 and before.skipped == 2  # every photo read: both found
    after = folder(not streamed)
    after.load_state_dict(before.state_dict())
    assert after.skipped == 2
    after.val_photos(20)
    assert after.skipped == 2  # the same photos, not found again as others


def test_a_cpu_run_resumed_where_adam_is_fused_continues_as_if_it_had_not_moved(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPU session has fused Adam, a CPU session not; Adam's restored state kept the first session's choice, and a
    CPU run resumed on a GPU failed at its first step (unfused Adam refused the non-finite flag meant for the fused
    kernel). Played on the CPU, whose Adam has a fused kernel too."""
    import faststyle.training as training

    first = _settings(shared, lossnet_cache, 2)
    started = _train(first, photos, tmp_path / "a.safetensors", checkpoint_every=2)
    shutil.copytree(started.run_dir, tmp_path / "b_run")
    photo, styled = load_image(shared / "data/content/tubingen.jpg", 96), {}
    for stem, fused_on in (("a", ()), ("b", ("cpu",))):  # a stays, b moves
        monkeypatch.setattr(training, "FUSED_ADAM_DEVICES", fused_on)
        later = replace(first, steps=3)
        result = _train(later, photos, tmp_path / f"{stem}.safetensors", resume=True, checkpoint_every=2, half=False)
        assert result.start_step == 2 and result.steps == 3
        with torch.no_grad():
            styled[stem] = load_model(tmp_path / f"{stem}.safetensors")[0](photo)
    # One step, and the pictures rather than the weights: fused and unfused Adam round differently, and the biases of
    # the residual blocks' last normalisations, whose gradients are rounding noise (the next normalisation takes any
    # constant out), take steps of ±lr from it; from the next step on, the pictures drift apart by up to 1e-3.
    torch.testing.assert_close(styled["b"], styled["a"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("fused", [(True, True), (True, False), (False, True)], ids=str)
def test_a_restored_adam_state_is_laid_out_and_placed_for_this_session(fused: tuple[bool, bool]) -> None:
    """A GPU session's moments are channels_last, as its weights; a resumed session whose weights are not (a CPU's)
    got them back so, and fused Adam then paired up the wrong elements."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(16, 8, 3, 3, generator=generator)
    grads = [torch.randn(16, 8, 3, 3, generator=generator) for _ in range(4)]
    before = torch.nn.Parameter(start.clone().contiguous(memory_format=torch.channels_last))
    optimizer = torch.optim.Adam([before], lr=0.1, fused=fused[0])
    for grad in grads[:2]:
        before.grad = grad.contiguous(memory_format=torch.channels_last)
        optimizer.step()
    saved = optimizer.state_dict()
    after = torch.nn.Parameter(before.detach().clone().contiguous())
    resumed = torch.optim.Adam([after], lr=0.1, fused=fused[1])
    resumed.load_state_dict(saved)
    adopt_adam_state(resumed)
    assert resumed.param_groups[0]["fused"] is fused[1]
    assert resumed.state[after]["exp_avg"].stride() == after.stride()
    for grad in grads[2:]:
        before.grad, after.grad = grad.contiguous(memory_format=torch.channels_last), grad.clone()
        optimizer.step()
        resumed.step()
    torch.testing.assert_close(after.detach(), before.detach(), rtol=0, atol=1e-6)


def test_the_validation_texture_of_the_step_a_run_resumes_at_is_kept(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.safetensors"
    first = _train(_settings(shared, lossnet_cache, 4), photos, out, checkpoint_every=2, val_photos=2, val_every=2)
    _train(_settings(shared, lossnet_cache, 6), photos, out, resume=True, checkpoint_every=2, val_photos=2, val_every=2)
    with open(first.run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in rows if row.get("val/texture")] == [0, 2, 4, 6]
    assert [int(row["step"]) for row in rows if row.get("loss/style")] == list(range(6))
    grids = sorted(p.name for p in (first.run_dir / "val").glob("grid_*.png"))
    assert grids == [f"grid_{step:06d}.png" for step in (0, 2, 4, 6)]


def test_the_model_file_names_the_hardware_the_run_trained_on(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's strategy moves the module to the CPU when fit ends: asked then, a GPU run said "cpu"."""
    import pytorch_lightning as pl

    import faststyle.training as training

    events: list[str] = []
    original_teardown, original_hardware = pl.strategies.Strategy.teardown, training.hardware

    def teardown(self: pl.strategies.Strategy) -> None:
        events.append("teardown")
        original_teardown(self)

    def hardware(device: torch.device) -> str:
        events.append("hardware")
        return original_hardware(device)

    monkeypatch.setattr(pl.strategies.Strategy, "teardown", teardown)
    monkeypatch.setattr(training, "hardware", hardware)
    out = tmp_path / "m.safetensors"
    _train(_settings(shared, lossnet_cache, 1), photos, out)
    assert events.index("hardware") < events.index("teardown")
    assert read_metadata(out)["training"]["hardware"] == original_hardware(torch.device("cpu"))


@pytest.mark.parametrize("record", [None, "missing", {"width": "1"}, [1.0, 5]])
def test_a_model_file_whose_network_record_is_damaged_is_refused_with_a_message(tmp_path: Path, record) -> None:
    """A KeyError or TypeError from the record (edited by hand, or by another tool) was a stack trace in stylize."""
    import json

    from safetensors.torch import load_file, save_file

    from faststyle.modelfile import save_model

    good = save_model(TransformerNet(width=0.25, num_residual=0), tmp_path / "good.safetensors", {})
    meta = read_metadata(good)
    if record == "missing":
        del meta["transformer"]
    else:
        meta["transformer"] = record
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(good), bad, metadata={"faststyle": json.dumps(meta)})
    with pytest.raises(FaststyleError, match=r"bad.safetensors's network record \(transformer: .*\) is damaged"):
        load_model(bad)


def test_a_resumed_runs_progress_bar_counts_its_steps_against_all_of_them(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lightning's bar counted a resumed run's batches against the steps left: 5/4 … 8/4 from step 4 to 8, its
    speed counting the 4 steps before as done in this session."""
    out = tmp_path / "m.safetensors"
    _train(_settings(shared, lossnet_cache, 4), photos, out)
    capsys.readouterr()
    _train(_settings(shared, lossnet_cache, 8), photos, out, resume=True, progress=True)
    shown = re.findall(r"\| (\d+)/(\d+) \[", capsys.readouterr().out)
    assert shown and {total for _, total in shown} == {"8"}
    assert (shown[0][0], shown[-1][0]) == ("4", "8")


def test_an_auto_style_weight_is_measured_at_the_start_and_kept_on_resume(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from faststyle.balance import BALANCE_PHOTOS, balanced_style_weight, fit_to
    from faststyle.data import PhotoDataModule
    from faststyle.losses import STYLE_BALANCE

    out = tmp_path / "m.safetensors"
    settings = _settings(shared, lossnet_cache, 2)
    settings.style_balance = STYLE_BALANCE
    with caplog.at_level("INFO", logger="faststyle.training"):
        _train(settings, photos, out, checkpoint_every=1)
    weight = read_metadata(out)["loss"]["style_weight"]
    assert read_metadata(out)["loss"]["style_balance"] == STYLE_BALANCE
    assert f"style weight {weight:.4g}: style pulls {STYLE_BALANCE:.3g} times as hard as content" in caplog.text
    # the same measurement, made here: the photos the run validates with, at the crop size, and its painting
    module = PhotoDataModule(str(photos), batch_size=2, size=64, num_workers=0, cache_dir=str(photos.parent / "hf"))
    chosen = [fit_to(p, 64, 64) for p in module.val_photos(BALANCE_PHOTOS, 2 * 64)]
    painting = load_image(settings.styles[0], 128)
    loss = PerceptualLoss(get_lossnet("vgg16", cache=lossnet_cache), default_config("vgg16"), [painting],
                          normalization="mean")  # fmt: skip
    assert weight == pytest.approx(balanced_style_weight(loss, chosen, [painting])[0], rel=1e-4)

    caplog.clear()
    again = _settings(shared, lossnet_cache, 3)
    again.style_balance = STYLE_BALANCE
    with caplog.at_level("INFO", logger="faststyle.training"):
        _train(again, photos, out, resume=True)
    assert read_metadata(out)["loss"]["style_weight"] == weight and read_metadata(out)["training"]["steps"] == 3
    assert "pulls" not in caplog.text  # not measured again
    refused = rf"other settings \(--style-weight auto \({STYLE_BALANCE}\) then, 2.0 now\)"
    with pytest.raises(FaststyleError, match=refused):
        _train(_settings(shared, lossnet_cache, 4), photos, out, resume=True)
    hparams = (out.with_name("m_run") / "hparams.yaml").read_text()
    assert f"style_weight: {weight}" in hparams  # what the loggers recorded is the measured weight
    no_content = _settings(shared, lossnet_cache, 2)
    no_content.style_balance, no_content.content_weight = STYLE_BALANCE, 0.0
    with pytest.raises(FaststyleError, match="give --content-weight above 0"):
        _train(no_content, photos, tmp_path / "other.safetensors")


def test_resume_refuses_other_settings_and_a_finished_run(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.safetensors"
    _train(_settings(shared, lossnet_cache, 2), photos, out)
    written = out.read_bytes()
    changed = _settings(shared, lossnet_cache, 4)
    changed.size, changed.width = 48, 1.0
    with pytest.raises(FaststyleError, match=r"other settings \(--size 64 then, 48 now; --width 0.5 then, 1.0 now\)"):
        _train(changed, photos, out, resume=True)
    other_style = _settings(shared, lossnet_cache, 4)
    other_style.styles = [str(shared / "data/styles/hokusai_great_wave_crop.jpg")]
    with pytest.raises(FaststyleError, match="other style images"):
        _train(other_style, photos, out, resume=True)
    other_photos = shutil.copytree(photos, tmp_path / "other-photos")
    with pytest.raises(FaststyleError, match=rf"--data {photos} then, {other_photos} now"):
        _train(_settings(shared, lossnet_cache, 4), other_photos, out, resume=True)
    with pytest.raises(FaststyleError, match="already reached step 2 of --steps 2; raise --steps"):
        _train(_settings(shared, lossnet_cache, 2), photos, out, resume=True)
    # a config is checked by the layers and weights it holds, not by its path; so are the loss network's weights
    documented = (REPO / "configs" / "vgg16.yaml").read_text()
    edited = _settings(shared, lossnet_cache, 4)
    edited.config = str(tmp_path / "vgg16.yaml")
    Path(edited.config).write_text(documented.replace("conv5_1: 0.2", "conv5_1: 0.5"))
    with pytest.raises(FaststyleError, match=r"other layers or layer weights \(--config None then, '.*vgg16.yaml' now"):
        _train(edited, photos, out, resume=True)
    random_net = _settings(shared, lossnet_cache, 4)
    random_net.lossnet_weights = "random"
    with pytest.raises(FaststyleError, match=r"other loss-network weights \(sha256 [0-9a-f]{12}… then, random now\)"):
        _train(random_net, photos, out, resume=True)
    assert out.read_bytes() == written
    Path(edited.config).write_text(documented)  # the documented layers from another path: the same training
    assert _train(edited, photos, out, resume=True).steps == 4


def test_a_run_that_failed_before_its_first_step_does_not_block_the_next(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(3):
        (junk / f"junk{i}.jpg").write_bytes(b"not a jpeg" * 20)
    out = tmp_path / "m.safetensors"
    with pytest.raises(FaststyleError, match="none of the training photos could be read"):
        _train(_settings(shared, lossnet_cache, 2), junk, out)
    assert _train(_settings(shared, lossnet_cache, 2), photos, out).steps == 2
    # with validation photos or --style-weight auto, which read photos first: the same said before anything is written
    from faststyle.losses import STYLE_BALANCE

    auto = replace(_settings(shared, lossnet_cache, 2), style_balance=STYLE_BALANCE)
    for settings, options in [(_settings(shared, lossnet_cache, 2), {"val_photos": 2}), (auto, {})]:
        with monkeypatch.context() as patch:
            if not settings.style_balance:  # validation photos are read before the loss network is loaded
                patch.setattr("faststyle.training.StyleModule", lambda *args: pytest.fail("the loss network loaded"))
            with pytest.raises(FaststyleError, match=f"none of the photos in {junk} could be read as an image; check"):
                _train(settings, junk, tmp_path / "n.safetensors", **options)
        assert not (tmp_path / "n_run").exists()


def test_max_minutes_keeps_a_checkpoint_of_the_last_step_and_starts_afresh_on_resume(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.safetensors"
    started = time.monotonic()
    first = _train(_settings(shared, lossnet_cache, 100_000), photos, out, max_minutes=0.05, checkpoint_every=100_000)
    assert time.monotonic() - started < 60
    last = torch.load(first.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert 0 < first.steps < 100_000 and last["global_step"] == first.steps
    assert first.model_path == out and read_metadata(out)["training"]["steps"] == first.steps  # written all the same
    from faststyle.commands.train import summary

    assert "stopped by --max-minutes before step 100000 (--resume continues the run)" in summary(first)
    second = _train(_settings(shared, lossnet_cache, 100_000), photos, out, resume=True, max_minutes=0.05)
    assert second.steps > first.steps and second.seconds >= 2.5  # a new 3-second budget, not the first one's leftover


def test_the_stability_term_is_weighted_logged_and_recorded(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path
) -> None:
    """--stability-weight: the term (faststyle.stability) is added to the total with its weight, logged every step
    beside the others, and recorded in the model file; a resumed run may not change it."""
    settings = _settings(shared, lossnet_cache, steps=4)
    settings.stability_weight = 300.0
    out = tmp_path / "steady.safetensors"
    result = _train(settings, photos, out)  # 4 steps: logged every step
    with open(result.run_dir / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("loss/stability")]
    assert len(rows) == 4
    for row in rows:
        terms = {name: float(row[f"loss/{name}"]) for name in ("total", "content", "style", "tv", "stability")}
        assert 0 < terms["stability"] < 0.1
        weighted = terms["content"] + 2 * terms["style"] + terms["tv"] + 300 * terms["stability"]
        assert terms["total"] == pytest.approx(weighted, rel=1e-5)
    assert read_metadata(out)["loss"]["stability_weight"] == 300.0
    settings.steps, settings.stability_weight = 6, 100.0
    with pytest.raises(FaststyleError, match=r"--stability-weight 300.0 then, 100.0 now"):
        _train(settings, photos, out, resume=True)


def test_an_unreadable_style_image_fails_before_training(tmp_path: Path, photos: Path) -> None:
    bad = tmp_path / "style.jpg"
    bad.write_text("not an image")
    code = main(["train", "--style", str(bad), "--data", str(photos), "--out", str(tmp_path / "m.safetensors")])
    assert code == 1
    assert not (tmp_path / "m_run").exists()


@pytest.mark.parametrize("on_device", [False, True], ids=["checked-every-step", "left-out-on-the-device"])
def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_device: bool
) -> None:
    """Checked every step (the CPU default), or left out by fused Adam on the device and read before each checkpoint
    (CUDA's; fused Adam runs on the CPU too, so the same path is exercised here)."""
    import faststyle.training
    from faststyle.training import NonFiniteLoss, StyleModule

    if on_device:
        monkeypatch.setattr(faststyle.training, "FUSED_ADAM_DEVICES", ("cuda", "cpu"))
    original = StyleModule.losses

    def poisoned(self: StyleModule, content: torch.Tensor):  # noqa: ANN202
        terms = original(self, content)
        if self.global_step >= 3:
            terms.total = terms.total * float("nan")
        return terms

    monkeypatch.setattr(StyleModule, "losses", poisoned)
    out = tmp_path / "m.safetensors"
    with pytest.raises(NonFiniteLoss, match=r"(?s)loss became nan at step 3.*last good checkpoint") as stopped:
        _train(_settings(shared, lossnet_cache, 10), photos, out, checkpoint_every=2, val_photos=1, val_every=100)
    assert not out.exists()
    assert "--resume continues from it with other photos" in str(stopped.value)
    # no validation grid of the stopped weights (one giving NaN pictures hid the stop behind an image error)
    assert [p.name for p in (tmp_path / "m_run" / "val").glob("grid_*")] == ["grid_000000.png"]
    state = torch.load(tmp_path / "m_run/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    # The step-2 checkpoint; Lightning before 2.6 also saves when the run stops, after 3 good (finite) updates.
    assert state["global_step"] in (2, 3) and f"(step {state['global_step']})" in str(stopped.value)
    if on_device:
        return
    # Resumed at the very step that overflows (a checkpoint after every step), with other photos: the weights
    # overflow, and a lower --lr cannot change that step's loss, so the advice is a new run.
    again = tmp_path / "again.safetensors"
    with pytest.raises(NonFiniteLoss, match="at step 3"):
        _train(_settings(shared, lossnet_cache, 10), photos, again, checkpoint_every=1)
    with pytest.raises(NonFiniteLoss, match=r"(?s)at step 3.*stopped at the step it resumed at.*Start a new run"):
        _train(replace(_settings(shared, lossnet_cache, 10), lr=1e-4), photos, again, resume=True, checkpoint_every=1)


def test_steps_left_out_on_the_device_do_not_reach_the_weights(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loss that turns infinite at step 5 is found only before the step-8 checkpoint: steps 5–7 ran, but fused
    Adam applied none of them (its step count says 5 updates), and the stop names step 5."""
    import faststyle.training
    from faststyle.training import NonFiniteLoss, StyleModule

    monkeypatch.setattr(faststyle.training, "FUSED_ADAM_DEVICES", ("cuda", "cpu"))
    original = StyleModule.losses
    modules: list[StyleModule] = []
    weights: dict[int, list[torch.Tensor]] = {}

    def poisoned(self: StyleModule, content: torch.Tensor):  # noqa: ANN202
        modules[:] = [self]
        weights[self.global_step] = [p.detach().clone() for p in self.net.parameters()]
        terms = original(self, content)
        if self.global_step >= 5:
            terms.total = terms.total * float("inf")  # a finite loss's gradients, made infinite
        return terms

    monkeypatch.setattr(StyleModule, "losses", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"(?s)loss became inf at step 5.*last good checkpoint.*step 4"):
        _train(_settings(shared, lossnet_cache, 12), photos, tmp_path / "m.safetensors", checkpoint_every=4)
    assert sorted(weights) == list(range(8))  # steps 5, 6 and 7 ran before the check at step 7
    optimizer = modules[0].optimizers().optimizer
    assert all(float(optimizer.state[p]["step"]) == 5 for p in modules[0].net.parameters())
    for step in (6, 7):
        assert all(torch.equal(a, b) for a, b in zip(weights[5], weights[step], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(weights[4], weights[5], strict=True))
    assert all(torch.isfinite(p).all() for p in modules[0].net.parameters())


class _InfiniteGradient(torch.autograd.Function):
    """The identity, whose gradient is infinite: a finite loss whose gradients overflow, as fp16's do."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf")


@pytest.mark.parametrize("fused", [False, True], ids=["adam", "fused-adam"])
def test_under_a_gradient_scaler_overflowing_gradients_are_skipped_and_a_non_finite_loss_stops(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fused: bool
) -> None:
    """16-mixed, as on CUDA, with torch's CPU gradient scaler: a step whose gradients overflow is the scaler's to
    skip (it halves the scale and the run goes on); a loss that is itself not finite stops the run."""
    from pytorch_lightning.plugins.precision import MixedPrecision

    import faststyle.training
    from faststyle.training import NonFiniteLoss, StyleModule

    if fused:
        monkeypatch.setattr(faststyle.training, "FUSED_ADAM_DEVICES", ("cuda", "cpu"))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    make_trainer = faststyle.training._trainer

    def with_scaler(**options: object):  # noqa: ANN202
        options.pop("precision")
        return make_trainer(plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)], **options)

    monkeypatch.setattr(faststyle.training, "_trainer", with_scaler)
    original = StyleModule.losses
    modules: list[StyleModule] = []
    weights: dict[int, list[torch.Tensor]] = {}
    nan_from = [10**9]

    def overflowing(self: StyleModule, content: torch.Tensor):  # noqa: ANN202
        modules[:] = [self]
        weights[self.global_step] = [p.detach().clone() for p in self.net.parameters()]
        terms = original(self, content)
        if self.global_step == 3:
            terms.total = _InfiniteGradient.apply(terms.total)
        if self.global_step >= nan_from[0]:
            terms.total = terms.total * float("nan")
        return terms

    monkeypatch.setattr(StyleModule, "losses", overflowing)
    settings = _settings(shared, lossnet_cache, 6)
    settings.backbone = "googlenet"  # any loss network: float16 on the CPU is slow, and GoogLeNet the lightest
    result = _train(settings, photos, tmp_path / "m.safetensors")
    assert result.steps == 6 and result.model_path is not None
    assert scaler.get_scale() == 2.0**9  # halved once, for step 3
    assert all(torch.equal(a, b) for a, b in zip(weights[3], weights[4], strict=True))  # step 3 left out
    assert not all(torch.equal(a, b) for a, b in zip(weights[2], weights[3], strict=True))
    optimizer = modules[0].optimizers().optimizer
    assert all(float(optimizer.state[p]["step"]) == 5 for p in modules[0].net.parameters())
    assert all(torch.isfinite(p).all() for p in modules[0].net.parameters())

    nan_from[0] = 2
    with pytest.raises(NonFiniteLoss, match="loss became nan at step 2"):
        _train(replace(settings, steps=3), photos, tmp_path / "n.safetensors")


def _interrupt_after_grid(command: list[str], env: dict[str, str], grid: Path, signum: int) -> str:
    """Runs ``command`` until it has drawn the validation ``grid`` (after a step, however slow the machine is today),
    then sends it ``signum``; its stderr."""
    # Ctrl-C as in a terminal: the child starts with SIGINT at its default even if something in this test process
    # left it ignored (an ignored signal is inherited; seen in the full suite, not when this test runs alone)
    process = subprocess.Popen(
        command, env=env, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not grid.exists() and time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended before it was interrupted:\n{process.communicate()[1][-2000:]}")
        time.sleep(0.2)
    process.send_signal(signum)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()  # never leave a 10,000-step run behind
    assert process.returncode != 0
    assert "--resume" in stderr and "weights_only" not in stderr, stderr[-2000:]
    assert "💡 Tip" not in stderr  # Lightning's noise left out
    return stderr


def test_an_interrupted_cli_run_resumes_at_the_same_step(
    shared: Path,
    lossnet_cache: Path,
    photos: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ctrl-C, then, in the resumed run, ``kill`` (SIGTERM): each keeps a checkpoint of the step it stopped at, and
    --resume finishes the run from the second."""
    out = tmp_path / "m.safetensors"
    args = ["train", "--style", str(shared / "data/styles/hokusai_great_wave_crop.jpg"), "--data", str(photos),
            "--out", str(out), "--size", "64", "--style-size", "96", "--batch", "2", "--width", "0.5", "--workers",
            "0", "--checkpoint-every", "1000", "--val-every", "1", "--no-progress",
            "--cache", str(lossnet_cache)]  # fmt: skip
    command = [sys.executable, "-m", "faststyle.cli", *args, "--steps", "10000"]
    env = os.environ | {"HF_HOME": str(tmp_path / "hf")}
    interrupted = tmp_path / "m_run" / "checkpoints" / "interrupted.ckpt"
    grids = tmp_path / "m_run" / "val"

    _interrupt_after_grid(command, env, grids / "grid_000001.png", signal.SIGINT)
    first = torch.load(interrupted, map_location="cpu", weights_only=False)["global_step"]
    assert first >= 1 and not out.exists()
    stderr = _interrupt_after_grid([*command, "--resume"], env, grids / f"grid_{first + 1:06d}.png", signal.SIGTERM)
    assert f"from interrupted.ckpt at step {first}" in stderr
    second = torch.load(interrupted, map_location="cpu", weights_only=False)["global_step"]
    assert second > first and not out.exists()

    finish = second + 2
    with caplog.at_level(logging.INFO, logger="faststyle.training"):
        assert main([*args, "--steps", str(finish), "--resume"]) == 0
    assert f"from interrupted.ckpt at step {second}" in caplog.text
    assert read_metadata(out)["training"]["steps"] == finish
    assert read_metadata(out)["training"]["images_seen"] == 2 * finish
    assert f"wrote {out}: steps {second + 1}-{finish} in " in capsys.readouterr().out  # this part's steps and time


@pytest.mark.parametrize("precision", ["32-true", "bf16-true"])
def test_two_process_ddp_through_the_cli(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, precision: str
) -> None:
    """Lightning's own DDP strategy, two CPU processes over gloo, each streaming its half of the folder; with the
    stability term, each process runs the network twice a step before its gradients are averaged. (Without it, the
    non-finite-loss tests below check that both processes end with the same weights.) bf16 weights are compared too
    (their digest once failed at the end, as NumPy has no bfloat16). Unreadable photos that the validation photos do
    not reach are found by the process whose half holds them: the model counts those of both (it once counted the
    first process's alone)."""
    stability_weight = 300
    (photos / "broken.jpg").unlink()  # which the validation photos would find first, in both processes
    for path in sorted((shared / "data/train/unsplash").glob("*.jpg"))[8:16]:  # more than the 4 steps draw
        shutil.copy(path, photos / path.name)
    for i in range(4):  # after the photos in the folder's order (the validation photos'), and one of them empty
        (photos / f"zz_unreadable_{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated" * i)
    out = tmp_path / "ddp.safetensors"
    command = [sys.executable, "-m", "faststyle.cli", "-v", "train", "--style",
               str(shared / "data/styles/vangogh_starry_night_crop.jpg"), "--data", str(photos), "--stream",
               "--out", str(out), "--size", "48", "--style-size", "96", "--batch", "2", "--width", "0.5",
               "--steps", "4", "--workers", "0", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
               "--val-every", "2", "--checkpoint-every", "2", "--no-progress",
               "--stability-weight", str(stability_weight), "--cache", str(lossnet_cache),
               "--precision", precision]  # fmt: skip
    env = os.environ | {"HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr
    assert done.stdout.count("wrote ") == 1, done.stdout  # only rank 0 reports and writes
    digests = dict(re.findall(r"process (\d) ends with weights (\w+)", done.stderr))
    assert digests.keys() == {"0", "1"} and digests["0"] == digests["1"], digests  # gradients were averaged
    assert read_metadata(out)["loss"]["stability_weight"] == stability_weight
    meta = read_metadata(out)["training"]
    assert meta["steps"] == 4 and meta["processes"] == 2 and meta["precision"] == precision
    assert meta["images_seen"] == 4 * 2 * 2
    unreadable = set(re.findall(r"skipping unreadable photo (\S+):", done.stderr))  # each process warns of its own
    assert len(unreadable) >= 2, unreadable
    assert read_metadata(out)["data"]["skipped"] == len(unreadable), unreadable
    state = torch.load(tmp_path / "ddp_run/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert len(state["PhotoDataModule"]["skipped_slots"]) == len(unreadable)  # and a --resume skips them all
    net = load_model(out)[0]
    styled = net(load_image(shared / "data/content/kodak/kodim05.png", 64))
    assert styled.shape[-2:] == (43, 64) and torch.isfinite(styled).all()
    assert sorted(p.name for p in (tmp_path / "ddp_run" / "val").glob("grid_*.png")) == [
        "grid_000000.png", "grid_000002.png", "grid_000004.png"
    ]  # fmt: skip


_RANK_ONE_GOES_NON_FINITE = """
import sys
import torch
import faststyle.training
from faststyle.cli import main

if {on_device}:
    faststyle.training.FUSED_ADAM_DEVICES = ("cuda", "cpu")
original = faststyle.training.StyleModule.losses


def poisoned(self, content):
    terms = original(self, content)
    if self.trainer.global_rank == 1 and self.global_step >= {step}:
        if {gradients_too}:  # every gradient of process 1 NaN, and so, averaged, every process's
            terms.total = terms.total * torch.tensor(float("nan"))
        else:  # the loss alone: the gradients stay finite
            terms.total = terms.total + torch.tensor(float("nan"))
    return terms


faststyle.training.StyleModule.losses = poisoned
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("on_device", "gradients_too", "bad_step", "checkpoint_every"),
    # each way of finding the step (every step, or fused Adam's verdict read before a checkpoint) and each poisoning
    # (the loss alone, or the gradients too) once; their other two pairings add 30 s of CI and no other code
    [(False, True, 3, 2), (True, False, 5, 4)],
    ids=["gradients-too-checked-every-step", "loss-left-out-on-the-device"],
)  # fmt: skip
def test_ddp_stops_every_process_when_one_alone_goes_non_finite(
    shared: Path,
    lossnet_cache: Path,
    photos: Path,
    tmp_path: Path,
    on_device: bool,
    gradients_too: bool,
    bad_step: int,
    checkpoint_every: int,
) -> None:
    """Process 1's loss turns NaN while process 0's stays finite, either alone (both processes' averaged gradients
    stay finite) or with process 1's gradients (which DDP's averaging makes NaN on both): the shared verdict stops
    both at the same step, with the same weights and the same last good checkpoint, and process 0 says it was the
    other's loss, not blame a gradient. Left out on the device, the bad step is found only before the next
    checkpoint, and none of the steps since reached the weights."""
    script = tmp_path / "rank_one_goes_non_finite.py"
    script.write_text(_RANK_ONE_GOES_NON_FINITE.format(on_device=on_device, gradients_too=gradients_too, step=bad_step))
    out = tmp_path / "ddp.safetensors"
    command = [sys.executable, str(script), "-v", "train", "--style",
               str(shared / "data/styles/vangogh_starry_night_crop.jpg"), "--data", str(photos), "--stream",
               "--out", str(out), "--size", "48", "--style-size", "96", "--batch", "2", "--width", "0.5",
               "--steps", "12", "--workers", "0", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
               "--val-every", "100", "--checkpoint-every", str(checkpoint_every), "--no-progress",
               "--cache", str(lossnet_cache)]  # fmt: skip
    env = os.environ | {"HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, done.stderr[-3000:]
    stops = re.findall(r"stopping: (.*); the weights were not updated with it", done.stderr)
    assert sorted(stops) == [
        f"the loss became nan at step {bad_step}",
        f"the loss of another process was not finite at step {bad_step}",
    ], stops
    digests = dict(re.findall(r"process (\d) ends with weights (\w+)", done.stderr))
    assert digests.keys() == {"0", "1"} and digests["0"] == digests["1"], digests
    assert not out.exists()
    state = torch.load(tmp_path / "ddp_run/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    # Lightning 2.6 keeps the checkpoint before the bad step; before 2.6 it also saves when the run stops
    assert done.stderr.count(f"last.ckpt (step {state['global_step']})") == 2, done.stderr[-3000:]  # both name it
    adam = state["optimizer_states"][0]["state"]
    updates = min(state["global_step"], bad_step)  # steps 0 to bad_step - 1, and none after
    assert all(float(s["step"]) == updates for s in adam.values())
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())


def test_settings_refused_before_training(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    compiled = _settings(shared, lossnet_cache, steps=10)
    compiled.compile = True
    with caplog.at_level(logging.WARNING), pytest.raises(FaststyleError, match="32-true"):
        _train(compiled, photos, tmp_path / "y.safetensors", accelerator="cpu", precision="bf16-mixed")
    assert "--precision bf16-mixed on the CPU runs several times slower than 32-true" in caplog.text
    with pytest.raises(FaststyleError, match="--max-minutes must be positive, not 0"):
        _train(_settings(shared, lossnet_cache, steps=10), photos, tmp_path / "x.safetensors", max_minutes=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_settings_lightning_refuses_leave_no_run_folder(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "new" / "m.safetensors"
    with pytest.raises(FaststyleError, match="Lightning refuses these settings"):
        _train(_settings(shared, lossnet_cache, 2), photos, out, accelerator="cuda", val_photos=2)
    assert not (tmp_path / "new").exists()


def test_settings_are_checked_when_made(shared: Path) -> None:
    style = str(shared / "data/styles/vangogh_starry_night_crop.jpg")
    for changes, message in [
        ({"style_weight": -2}, r"style_weight \(--style-weight\) must be 0 or more, not -2"),
        ({"steps": 2.5}, r"steps \(--steps\) must be a whole number, not 2.5"),
        ({"batch": 0}, r"batch \(--batch\) must be 1 or more, not 0"),
        ({"size": 8}, r"size \(--size\) 8 is too small a crop to train on; give 16 or more"),
        ({"lr": -1}, r"lr \(--lr\) must be above 0, not -1"),
        ({"tv_weight": float("nan")}, r"tv_weight \(--tv-weight\) must be a finite number, not nan"),
        ({"pooling": "mean"}, r"pooling \(--pooling\) must be max or avg, not 'mean'"),
        ({"style_blend": [1.0, 2.0]}, r"give one non-negative blend weight per style image \(1\)"),
        ({"styles": []}, "give at least one style image"),
        ({"style_balance": 0.5, "content_weight": 0.0}, "--style-weight auto balances style against content"),
        ({"compile": "fastest"}, r"compile \(--compile\) 'fastest' is not a compile mode \(default, reduce-overhead"),
    ]:
        with pytest.raises(FaststyleError, match=message):
            TrainSettings(**{"styles": [style], **changes})
    with pytest.raises(FaststyleError, match=r"seed \(--seed\) must be 0 or more, not -1"):
        TrainSettings(styles=[style], seed=-1)
    one = TrainSettings(styles=style, style_weight="auto")  # type: ignore[arg-type]
    assert one.styles == [style] and one.style_balance is not None and one.style_weight > 0
    mine = TrainSettings(styles=[style], style_weight="auto", style_balance=0.3)  # type: ignore[arg-type]
    assert mine.style_balance == 0.3  # "auto" measures the weight; a balance given is kept
    from_numpy = TrainSettings(styles=[style], steps=np.int64(100), lr=np.float32(0.002))
    assert type(from_numpy.steps) is int and type(from_numpy.lr) is float and from_numpy.steps == 100


def test_compile_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from faststyle.compiling import compiler

    net = torch.nn.Linear(2, 2)
    assert compiler(False)(net) is net
    assert compiler(True)(net) is not net and compiler("reduce-overhead")(net) is not net
    with pytest.raises(FaststyleError, match="reduce-overhead"):
        compiler("fastest")
    with pytest.raises(SystemExit):
        main(["train", "--style", "s.jpg", "--data", ".", "--out", "m.safetensors", "--compile", "fastest"])
    assert "'fastest' is not a compile mode (default, reduce-overhead" in capsys.readouterr().err


def test_cli_refuses_zero_intervals(shared: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["train", "--style", str(shared / "data/styles/vangogh_starry_night_crop.jpg"), "--data", str(photos)]
    assert main([*args, "--out", str(tmp_path / "m.safetensors"), "--val-every", "0"]) == 1
    assert "--val-every and --checkpoint-every must be 1 or more, not 0, 500" in capsys.readouterr().err
    assert not (tmp_path / "m_run").exists()


def test_cli_refuses_a_short_side_below_the_crop_size(
    shared: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["train", "--style", str(shared / "data/styles/vangogh_starry_night_crop.jpg"), "--data", str(photos)]
    assert main([*args, "--out", str(tmp_path / "m.safetensors"), "--size", "128", "--short-side", "100"]) == 1
    assert "--short-side 100 is smaller than the crop --size 128" in capsys.readouterr().err
    assert not (tmp_path / "m_run").exists()
    assert main([*args, "--out", str(tmp_path / "new" / "m.safetensors"), "--backbone", "vgg61"]) == 1
    assert "vgg61" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # neither new/ nor new/m_run/ is left behind


def test_flat_photos_are_dithered_so_their_gradients_stay_finite() -> None:
    torch.manual_seed(0)
    net = TransformerNet(width=0.5)
    flat = torch.cat([torch.full((1, 3, 64, 64), v) for v in (0.0, 0.5, 1.0)] + [torch.rand(1, 3, 64, 64)])

    def grad_norm(photos: torch.Tensor) -> float:
        net.zero_grad()
        ((net(photos) - 0.3) ** 2).mean().backward()
        return float(torch.nn.utils.get_total_norm([p.grad for p in net.parameters()]))

    assert not math.isfinite(grad_norm(flat[:3]))  # why: instance normalisation of flat photos
    dithered = dither_flat(flat)
    assert torch.equal(dithered[3], flat[3])  # a real photo is left alone
    assert 0 < (dithered[:3] - flat[:3]).abs().amax() <= 1e-3
    assert grad_norm(dithered) < 10


def test_a_folder_of_flat_photos_trains(shared: Path, lossnet_cache: Path, tmp_path: Path) -> None:
    folder = tmp_path / "backdrops"
    folder.mkdir()
    for name, value in (("white", 255), ("grey", 128)):
        Image.new("RGB", (96, 80), (value, value, value)).save(folder / f"{name}.png")
    result = _train(_settings(shared, lossnet_cache, 4), folder, tmp_path / "m.safetensors")
    assert result.steps == 4 and result.stopped_reason is None


def test_a_panorama_style_or_a_tiny_crop_is_refused_before_training(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path
) -> None:
    scroll = tmp_path / "scroll.jpg"
    with Image.open(shared / "data/styles/hokusai_great_wave_crop.jpg") as wave:
        wave.convert("RGB").resize((4000, 100)).save(scroll)
    settings = _settings(shared, lossnet_cache, 2)
    settings.styles, settings.style_size = [str(scroll)], None
    with pytest.raises(FaststyleError, match=r"the style image scroll.jpg at --style-size 96 is 96x2 pixels.*--style"):
        _train(settings, photos, tmp_path / "m.safetensors")
    tiny = _settings(shared, lossnet_cache, 2)
    tiny.backbone, tiny.size = "alexnet", 24
    with pytest.raises(FaststyleError, match=r"a crop of --size 24 is 24x24 pixels: alexnet needs at least 31"):
        _train(tiny, photos, tmp_path / "m.safetensors")


def test_a_banner_among_the_validation_photos_is_stylized(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(photos, tmp_path / "with-banner")
    with Image.open(shared / "data/content/chicago.jpg") as photo:
        photo.resize((6000, 100)).save(folder / "banner.jpg")
    result = _train(_settings(shared, lossnet_cache, 2), folder, tmp_path / "m.safetensors", val_photos=9, val_every=1)
    grid = result.run_dir / "val" / "grid_000002.png"
    assert grid.is_file() and result.steps == 2
    assert sorted(result.val_texture) == [0, 1, 2]  # measured on the other photos, the banner being 4 px high


def test_an_unwritable_run_folder_is_refused_before_anything_loads(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(FaststyleError, match=r"cannot write the checkpoints and logs \(--run-dir\) in .*a-file/run"):
        _train(_settings(shared, lossnet_cache, 2), photos, tmp_path / "m.safetensors", run_dir=tmp_path / "a-file/run")
    with pytest.raises(FaststyleError, match=r"--run-dir .* is the --data folder: the run's validation photos"):
        _train(_settings(shared, lossnet_cache, 2), photos, tmp_path / "m.safetensors", run_dir=photos)


def test_the_loss_terms_are_logged_only_on_the_steps_the_loggers_write(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's log() costs about 1.5 ms of Python a call: 16 ms a step for the loss terms, logged every step."""
    from faststyle.training import StyleModule

    calls: list[int] = []
    log_dict = StyleModule.log_dict
    monkeypatch.setattr(
        StyleModule, "log_dict", lambda self, *a, **k: calls.append(self.global_step) or log_dict(self, *a, **k)
    )
    result = _train(_settings(shared, lossnet_cache, steps=41), photos, tmp_path / "m.safetensors")
    assert calls == list(range(2, 41, 2))  # log_every_n_steps is 2 for 41 steps
    with open(result.run_dir / "metrics.csv") as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == [c - 1 for c in calls]
    assert set(result.final_losses) >= {"total", "content", "style", "tv", "style/conv1_1"}
    assert all(math.isfinite(v) for v in result.final_losses.values())


def test_an_interruption_while_a_resumed_run_starts_keeps_the_interrupted_checkpoint(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning restores the checkpoint only after fit has started: a Ctrl-C before that wrote the fresh model of
    step 0 over the interrupted run's only checkpoint."""
    from faststyle.training import StyleModule

    step = StyleModule.training_step

    def ctrl_c_at_step_3(self: StyleModule, batch: torch.Tensor, index: int) -> torch.Tensor:
        if self.global_step == 3:
            raise KeyboardInterrupt
        return step(self, batch, index)

    out = tmp_path / "m.safetensors"
    interrupted = tmp_path / "m_run" / "checkpoints" / "interrupted.ckpt"
    with monkeypatch.context() as patch:
        patch.setattr(StyleModule, "training_step", ctrl_c_at_step_3)
        with pytest.raises(FaststyleError, match="interrupted at step 3; continue with the same command and --resume"):
            _train(_settings(shared, lossnet_cache, 50), photos, out, checkpoint_every=100)
    saved = interrupted.read_bytes()

    def ctrl_c(self: StyleModule) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(StyleModule, "on_fit_start", ctrl_c)
        with pytest.raises(FaststyleError, match=r"interrupted before step 4; nothing was saved: run .*--resume"):
            _train(_settings(shared, lossnet_cache, 50), photos, out, resume=True)
    assert interrupted.read_bytes() == saved
    result = _train(_settings(shared, lossnet_cache, 5), photos, out, resume=True)
    assert result.start_step == 3
    # the resumed steps a row each (5 steps log every step), numbered as trained: Lightning counts a batch more on
    # resuming from a checkpoint saved within one (a gap in metrics.csv, and the last row numbered 5)
    with open(result.run_dir / "metrics.csv") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle) if row.get("loss/total")]
    assert steps[-2:] == [3, 4] and steps == sorted(set(steps)), steps


def test_a_finished_run_whose_model_was_not_written_writes_it_on_resume(
    shared: Path, lossnet_cache: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faststyle.modelfile

    # a style photo stored on its side, upright by its EXIF orientation: the model records the size trained on
    style = tmp_path / "style.jpg"
    painting = Image.open(shared / "data/styles/vangogh_starry_night_crop.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    painting.transpose(Image.Transpose.ROTATE_90).save(style, exif=exif)
    settings = _settings(shared, lossnet_cache, 2)
    settings.styles = [str(style)]

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    out = tmp_path / "m.safetensors"
    with monkeypatch.context() as patch:
        patch.setattr(faststyle.modelfile, "save_model", disk_full)
        with pytest.raises(OSError, match="No space left"):
            _train(settings, photos, out)
    assert not out.exists()
    result = _train(settings, photos, out, resume=True)
    assert result.steps == 2 and result.start_step == 2 and out.exists()
    meta = read_metadata(out)
    assert meta["training"]["steps"] == 2 and meta["training"]["timed_steps"] == 0
    # the last step's losses, from the checkpoint (no step ran now: they were {}, and the CLI's line raised KeyError)
    assert {"total", "content", "style"} <= set(meta["loss"]["final"]) and result.final_losses == meta["loss"]["final"]
    from faststyle.commands.train import summary

    line = summary(result)
    assert f"wrote {out}: the run's 2 steps, trained before; final loss: total " in line, line
    assert "not kept" in summary(replace(result, final_losses={}))
    assert "texture" not in line  # no validation ran in this session
    line = summary(replace(result, val_texture={0: 0.91, 300: 0.62, 600: 0.48}))
    assert "validation photos' texture distance to the painting 0.91 at step 0, 0.48 at 600 (photo = 1); " in line
    assert meta["training"]["images_per_second"] is None  # no step was timed in this session
    assert meta["style"]["images"][0]["size"] == list(painting.size)
    load_model(out)
    with pytest.raises(FaststyleError, match="already reached step 2 of --steps 2; raise --steps"):
        _train(settings, photos, out, resume=True)
    last = tmp_path / "m_run" / "checkpoints" / "last.ckpt"
    whole = last.read_bytes()
    # cut short; zeros, as a power cut leaves a file (KeyError in torch); other bytes (pickle's UnpicklingError)
    for damaged in (whole[: len(whole) // 2], bytes(len(whole)), bytes(range(256)) * 64):
        last.write_bytes(damaged)
        for resume in (True, False):
            with pytest.raises(FaststyleError, match=f"cannot read the checkpoint {last} .*damaged: move it"):
                _train(_settings(shared, lossnet_cache, 4), photos, out, resume=resume)
    with monkeypatch.context() as patch:  # not a damaged file: too little memory to read it
        message = "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
        patch.setattr(torch, "load", lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError(message)))
        with pytest.raises(FaststyleError, match=f"not enough memory to read the checkpoint {last} "):
            _train(_settings(shared, lossnet_cache, 4), photos, out, resume=True)


def test_validation_grids_are_drawn_by_a_network_cast_to_bf16(shared: Path, lossnet_cache: Path) -> None:
    """Under --precision bf16-true Lightning casts the network: the float32 validation photos failed in it."""
    from faststyle.training import StyleModule

    settings = _settings(shared, lossnet_cache, 2)
    settings.backbone = "googlenet"
    module = StyleModule(settings)
    module.net.to(torch.bfloat16)
    (painted,) = module.stylize([load_image(shared / "data/content/kodak/kodim05.png", 48)])
    assert painted.dtype == torch.float32 and painted.shape == (1, 3, 32, 48) and float(painted.std()) > 0.01


def test_the_photo_folder_leaves_out_runs_and_studies_and_follows_links(tmp_path: Path) -> None:
    """A run's --out inside --data put its validation photos and grids into the training set on --resume; a linked
    folder of photos was left out without a word."""
    from faststyle.data import find_images

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 30)).save(photos / "a.png")
    (photos / "._a.png").write_bytes(b"\x00\x05\x16\x07")  # macOS's resource fork of a.png on a shared drive
    Image.new("RGB", (40, 30)).save(photos / ".thumbnail.png")
    run = photos / "m_run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "hparams.yaml").write_text("settings: {}")
    (run / "val").mkdir()
    Image.new("RGB", (40, 30)).save(run / "val" / "grid_000000.png")
    elsewhere = tmp_path / "more"
    elsewhere.mkdir()
    Image.new("RGB", (40, 30)).save(elsewhere / "b.png")
    (photos / "linked").symlink_to(elsewhere)
    (elsewhere / "back").symlink_to(photos)  # a loop: each folder is read once
    (photos / "home").symlink_to(tmp_path)  # a folder holding this one (~, say): not followed
    Image.new("RGB", (40, 30)).save(tmp_path / "not_a_photo_of_the_set.png")
    study = photos / "study"
    (study / "images").mkdir(parents=True)
    (study / "cache.json").write_text('{"content": {}}')
    Image.new("RGB", (40, 30)).save(study / "images" / "photo.png")
    killed = photos / "k_run"  # a run killed before its first checkpoint (no checkpoints/): what it left
    (killed / "val").mkdir(parents=True)
    (killed / "events.out.tfevents.1796027060.vm.8201.0").write_bytes(b"")
    (killed / "hparams.yaml").write_text("settings: {}")
    for name in ("photo_0.png", "grid_000000.png"):
        Image.new("RGB", (40, 30)).save(killed / "val" / name)
    wanted = [photos / "a.png", photos / "linked" / "b.png"]
    assert find_images(photos) == wanted
    mid_run = photos / "n_run"  # a run's folder before its first checkpoint: left out when named
    (mid_run / "val").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(mid_run / "val" / "photo_0.png")
    assert find_images(photos, skip=mid_run) == wanted
    assert (
        find_images(photos, skip=tmp_path) == find_images(photos, skip=photos) == [*wanted, mid_run / "val/photo_0.png"]
    )


def test_a_resume_takes_the_style_size_given_as_its_default(shared: Path, lossnet_cache: Path, tmp_path: Path) -> None:
    """--style-size left out is 1.5 x --size: giving that number on --resume is the same setting, not another."""
    from dataclasses import asdict

    from faststyle.resuming import check_resumable

    then = replace(_settings(shared, lossnet_cache, 4), style_size=None)  # --size 64: style size 96
    checkpoint = {"hyper_parameters": {"settings": asdict(then)}}
    check_resumable(checkpoint, replace(then, style_size=96), tmp_path, "photos")
    check_resumable(checkpoint, then, tmp_path, "photos")
    with pytest.raises(FaststyleError, match=r"--style-size \(?96"):
        check_resumable(checkpoint, replace(then, style_size=128), tmp_path, "photos")


def test_an_error_in_a_loader_worker_reads_as_itself(shared: Path, lossnet_cache: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(3):
        (junk / f"junk{i}.jpg").write_bytes(b"not a jpeg" * 20)
    with pytest.raises(FaststyleError) as error:
        _train(_settings(shared, lossnet_cache, 2), junk, tmp_path / "m.safetensors", num_workers=1)
    assert str(error.value) == "none of the training photos could be read; check the folder"


def test_metrics_set_aside_twice_are_kept_once(tmp_path: Path) -> None:
    from faststyle.resuming import join_metrics, set_metrics_aside

    rows = "step,loss/style\n" + "".join(f"{step},{step / 10}\n" for step in range(6))
    (tmp_path / "metrics.csv").write_text(rows)
    set_metrics_aside(tmp_path, 4)
    # killed before Lightning's logger replaced metrics.csv: the rows are in both files when the next resume starts
    set_metrics_aside(tmp_path, 4)
    (tmp_path / "metrics.csv").write_text("step,loss/style\n4,0.4\n5,0.5\n")
    join_metrics(tmp_path)
    with open(tmp_path / "metrics.csv") as handle:
        assert [row["step"] for row in csv.DictReader(handle)] == ["0", "1", "2", "3", "4", "5"]
