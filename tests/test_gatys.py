"""The Gatys reference mode: convergence on real images with VGG16 and GoogLeNet, colour, multiscale, CLI."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
import torch
from conftest import SHARED
from PIL import Image

from faststyle.cli import Terminated, main
from faststyle.color import grey, match_luminance, preserve_color, rgb_to_ycbcr, ycbcr_to_rgb
from faststyle.config import layer_config
from faststyle.errors import FaststyleError
from faststyle.gatys import Interrupted, caffe_pixel_scale, stylize
from faststyle.images import load_image, resize_long_side, save_image
from faststyle.losses import PerceptualLoss

CONTENT = SHARED / "data" / "content" / "tubingen.jpg"
STYLE = SHARED / "data" / "styles" / "vangogh_starry_night_crop.jpg"


@pytest.fixture(scope="module")
def nets(vgg16: torch.nn.Module, googlenet: torch.nn.Module) -> dict:
    return {"vgg16": vgg16, "googlenet": googlenet}


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    return load_image(CONTENT), load_image(STYLE)


def _check_history(history: list[dict], iters: int, layers: int) -> None:
    assert len(history) == iters
    assert [h["iteration"] for h in history] == list(range(1, iters + 1))
    for entry in history:
        assert {"total", "content", "style", "tv", "evaluations", "seconds"} <= entry.keys()
        assert sum(k.startswith("style/") for k in entry) == layers
        assert all(torch.isfinite(torch.tensor(v)) for v in entry.values())
    seconds = [entry["seconds"] for entry in history]
    assert seconds[0] > 0 and seconds == sorted(seconds)


@pytest.mark.parametrize("backbone", ["vgg16", "googlenet"])
def test_lbfgs_lowers_the_loss_and_stylizes(backbone: str, nets: dict, images: tuple) -> None:
    content, style = images
    seen: list[int] = []
    image, history = stylize(
        content, style, lossnet=nets[backbone], size=128, iters=20, progress=False,
        callback=lambda i, img, terms: seen.append(i),
    )  # fmt: skip
    assert image.shape[0] == 1 and max(image.shape[-2:]) == 128
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    _check_history(history, 20, layers=5)
    assert seen == list(range(1, 21))
    # measured on tubingen/starry night: final/first 0.13 (vgg16), 0.013 (googlenet)
    assert history[-1]["total"] < 0.3 * history[0]["total"]
    target = torch.nn.functional.interpolate(content, size=image.shape[-2:], mode="bilinear", antialias=True)
    # measured: 0.042 (vgg16), 0.082 (googlenet)
    assert float((image - target).abs().mean()) > 0.025


@pytest.mark.parametrize("backbone", ["vgg16", "googlenet"])
def test_lbfgs_keeps_pace_with_the_reference_codes_l_bfgs_b(
    backbone: str, nets: dict, images: tuple, figure: Callable[[str], None]
) -> None:
    """The reference code minimised the same loss with SciPy's L-BFGS-B (history 8, the pixels bounded): given the
    same number of loss-network passes, the box L-BFGS gets as low."""
    content, style = images
    net = nets[backbone]
    image, history = stylize(content, style, lossnet=net, size=128, iters=30, progress=False)
    passes, ours = history[-1]["evaluations"], history[-1]["total"]

    # Gatys' defaults, spelt out: content at 128 px, the style 1.2× as large, style weight 1e4 in Caffe's units
    target = resize_long_side(content, 128)
    loss = PerceptualLoss(
        net, layer_config(net.name, None), [resize_long_side(style, round(1.2 * 128))], normalization="caffe",
        content_weight=1.0, style_weight=1e4 * caffe_pixel_scale(net) ** 2, tv_weight=0.0, style_target="whole",
    )  # fmt: skip
    content_features = loss.content_features(target)

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        pixels = torch.from_numpy(x.astype(np.float32)).view_as(target).requires_grad_(True)
        total = loss(pixels, content_features=content_features).total
        total.backward()
        assert pixels.grad is not None
        return float(total.detach()), pixels.grad.double().numpy().ravel()

    assert objective(image.double().numpy().ravel())[0] == pytest.approx(ours, rel=1e-4)  # the same loss
    start = target.double().numpy().ravel()
    reference = scipy.optimize.minimize(
        objective, start, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * start.size,
        options={"maxcor": 8, "maxfun": passes, "maxiter": 10**6, "ftol": 0.0, "gtol": 0.0},
    )  # fmt: skip
    assert reference.nfev <= passes + 1
    figure(f"Gatys 128 px, {backbone}, {passes} passes: box L-BFGS {ours:.4g}, SciPy's L-BFGS-B {reference.fun:.4g}")
    assert ours < 1.05 * reference.fun  # 1.001× (VGG16), 0.954× (GoogLeNet); per position 0.995×, 0.985×


def test_adam_lowers_the_loss(nets: dict, images: tuple) -> None:
    content, style = images
    image, history = stylize(content, style, lossnet=nets["vgg16"], size=96, iters=15, optimizer="adam", progress=False)
    _check_history(history, 15, layers=5)
    assert history[-1]["total"] < 0.5 * history[0]["total"]
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_color_conversions_round_trip() -> None:
    rgb = torch.rand(2, 3, 8, 8)
    ycc = rgb_to_ycbcr(rgb)
    assert torch.allclose(ycbcr_to_rgb(ycc), rgb, atol=1e-5)
    grey = torch.full((1, 3, 2, 2), 0.3)
    assert torch.allclose(rgb_to_ycbcr(grey), torch.tensor([0.3, 0.5, 0.5]).view(1, 3, 1, 1).expand(1, 3, 2, 2))
    mixed = preserve_color(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 16, 16))
    assert mixed.shape == (1, 3, 8, 8) and float(mixed.min()) >= 0 and float(mixed.max()) <= 1


def test_preserve_color_keeps_the_content_chroma(nets: dict, images: tuple) -> None:
    content, style = images
    image, _ = stylize(content, style, lossnet=nets["vgg16"], size=64, iters=8, preserve_color=True, progress=False)
    target = torch.nn.functional.interpolate(content, size=image.shape[-2:], mode="bilinear", antialias=True)
    out, ref = rgb_to_ycbcr(image), rgb_to_ycbcr(target)
    chroma = (out[:, 1:] - ref[:, 1:]).abs()
    assert float(chroma.mean()) < 0.005 and float(chroma.max()) < 0.1
    assert float((out[:, :1] - ref[:, :1]).abs().mean()) > 0.01


def test_colour_preservation_transfers_luminance_only(nets: dict, images: tuple) -> None:
    """Gatys et al. 2016: the optimisation sees luminances only, so a painting and its greyscale copy give the same
    picture; snapshots are in the content's colours, as the result."""
    content, style = images
    snapshots: list[torch.Tensor] = []
    kwargs = {"lossnet": nets["vgg16"], "size": 64, "iters": 5, "preserve_color": True, "progress": False}
    image, _ = stylize(content, style, callback=lambda i, img, terms: snapshots.append(img.clone()), **kwargs)
    from_grey, _ = stylize(content, grey(style), **kwargs)
    # the luminances differ by float rounding (6e-8) only, which L-BFGS's line search can amplify: measured max 5e-3,
    # mean 3e-4; transferring in colour and keeping the chroma afterwards gave a max of 0.06
    assert float((image - from_grey).abs().max()) < 0.02 and float((image - from_grey).abs().mean()) < 2e-3
    torch.testing.assert_close(snapshots[-1], image)
    target = torch.nn.functional.interpolate(content, size=image.shape[-2:], mode="bilinear", antialias=True)
    for snapshot in snapshots:
        assert float((rgb_to_ycbcr(snapshot)[:, 1:] - rgb_to_ycbcr(target)[:, 1:]).abs().max()) < 0.1


def test_match_luminance_gives_the_content_mean_and_spread(images: tuple) -> None:
    content, style = images
    matched = match_luminance(style, content)
    assert torch.equal(matched[:, 0], matched[:, 1]) and torch.equal(matched[:, 1], matched[:, 2])
    y_content = rgb_to_ycbcr(content)[:, 0]
    assert float(matched[:, 0].mean()) == pytest.approx(float(y_content.mean()), abs=0.01)
    assert float(matched[:, 0].std()) == pytest.approx(float(y_content.std()), rel=0.05)
    # a one-pixel content has no spread: the style's luminance becomes flat at the pixel's, not NaN
    pixel = content[..., :1, :1]
    flat = match_luminance(style, pixel)
    assert torch.allclose(flat, rgb_to_ycbcr(pixel)[:, :1].expand_as(flat), atol=1e-6)


def test_colour_preservation_takes_a_half_precision_painting() -> None:
    """fp16 output (a half-precision model on the CPU) with a larger photo: the photo is resized in float32."""
    photo = load_image(CONTENT, 64)
    painting = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0)).half()
    kept = preserve_color(painting, photo)
    assert kept.dtype == torch.float16 and kept.shape == painting.shape
    small = torch.nn.functional.interpolate(photo, size=(24, 32), mode="bilinear", antialias=True)
    # the photo's chroma, but where the painting's luminance with it falls outside the RGB cube and is clamped
    assert float((rgb_to_ycbcr(kept.float())[:, 1:] - rgb_to_ycbcr(small)[:, 1:]).abs().mean()) < 0.005


def test_images_too_small_for_the_deepest_layer_are_clear_errors(nets: dict, images: tuple) -> None:
    content, style = images
    for network, kwargs in [("vgg16", {"size": 12}), ("googlenet", {"multiscale": [24, 64]})]:
        with pytest.raises(FaststyleError, match=r"pixels: \w+ needs at least \d+ pixels a side .* raise --size"):
            stylize(content, style, lossnet=nets[network], iters=1, progress=False, **kwargs)
    with pytest.raises(FaststyleError, match="the scaled style image .* raise --style-scale"):
        stylize(content, style, lossnet=nets["vgg16"], size=64, style_scale=0.2, iters=1, progress=False)


def test_multiscale_runs_each_scale(nets: dict, images: tuple) -> None:
    content, style = images
    image, history = stylize(
        content, style, lossnet=nets["vgg16"], multiscale=[64, 40, 64], iters=3, progress=False
    )  # each size once, coarse to fine
    assert max(image.shape[-2:]) == 64
    assert [h["scale"] for h in history] == [40] * 3 + [64] * 3
    _check_history(history, 6, layers=5)


def test_an_initial_image_is_refined_where_it_stands(nets: dict, images: tuple) -> None:
    """Ten iterations, then ten more started from their result: the second run goes on from where the first
    stopped, and its picture stays nearer to the first run's than to the photo."""
    content, style = images
    options = {"lossnet": nets["vgg16"], "size": 96, "progress": False}
    first, first_history = stylize(content, style, iters=10, **options)
    second, second_history = stylize(content, style, iters=10, init=first, **options)
    assert second_history[0]["total"] <= first_history[-1]["total"]  # no worse than where the first run ended
    assert second_history[-1]["total"] < 0.8 * first_history[-1]["total"]  # measured 0.64
    # measured 0.022 against 0.035
    assert float((second - first).abs().mean()) < float((second - content_at(first, content)).abs().mean())


def content_at(like: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(content, size=like.shape[-2:], mode="bilinear", antialias=True)


def test_a_stretched_initial_image_is_said(nets: dict, images: tuple, caplog: pytest.LogCaptureFixture) -> None:
    content, style = images
    with caplog.at_level(logging.WARNING, logger="faststyle.gatys"):
        stylize(content, style, lossnet=nets["vgg16"], size=48, iters=1, init=torch.rand(1, 3, 40, 40), progress=False)
    assert "is stretched to the content's shape" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backbone": "resnet"}, "unknown loss network"),
        ({"iters": 0}, "iters must be a positive whole number, not 0"),
        ({"iters": -3}, "iters must be a positive whole number, not -3"),
        ({"iters": 2.0}, "iters must be a positive whole number, not 2.0"),
        ({"iters": True}, "iters must be a positive whole number, not True"),
        ({"size": -1}, "size must be a positive whole number, not -1"),
        ({"optimizer": "sgd"}, "lbfgs, adam"),
        ({"init": "zeros"}, "content, noise, mixed"),
        ({"init": torch.rand(1, 4, 16, 16)}, r"init: expected one RGB image"),
        ({"multiscale": []}, "multiscale needs at least one size"),
        ({"multiscale": [64, 0]}, "every multiscale size must be a positive whole number, not 0"),
        ({"ratio": float("inf")}, "ratio must be a finite number"),
        ({"tv_weight": float("nan")}, "tv_weight must be a finite number"),
        ({"style_blend": [float("nan")]}, "blend weight"),
        ({"seed": 2**64}, "seed must be a whole number from -9223372036854775808 to 18446744073709551615, not 1844"),
        ({"seed": 1.5}, "seed must be a whole number"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    content = torch.rand(1, 3, 16, 16)
    with pytest.raises(FaststyleError, match=message):
        stylize(content, content, progress=False, **kwargs)


def test_cli_writes_the_image_and_snapshots(
    tmp_path: Path, lossnet_cache: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "result.png"
    args = ["gatys", "--content", str(CONTENT), "--style", str(STYLE), "--size", "48", "--iters", "2"]
    code = main([*args, "--out", str(out), "--save-every", "1", "--cache", str(lossnet_cache), "--quiet"])
    assert code == 0
    with Image.open(out) as written:
        assert max(written.size) == 48
        assert written.size[0] > written.size[1]  # tubingen is landscape
    assert (tmp_path / "result_iter0001.png").is_file() and (tmp_path / "result_iter0002.png").is_file()
    with caplog.at_level(logging.WARNING, logger="faststyle.gatys"):  # the same --out, one iteration: one left over
        assert (
            main([*args[:-1], "1", "--out", str(out), "--save-every", "1", "--cache", str(lossnet_cache), "--quiet"])
            == 0
        )
    assert "1 snapshots of an earlier run lie beside result.png (result_iter0002.png …)" in caplog.text
    printed = capsys.readouterr().out
    assert re.search(r"2 iterations in [\d.]+ s \(and [\d.]+ s loading the loss network\); final loss: total ", printed)
    assert " (weighted); unweighted content " in printed


def test_cli_starts_from_an_image_or_a_models_painting(tmp_path: Path, lossnet_cache: Path, capsys) -> None:
    """``--init FILE`` and ``--init-model FILE`` start where the picture or the model's painting is: after two
    iterations the result is still far nearer to it than a run from the content is."""
    from faststyle.modelfile import save_model
    from faststyle.stylize import Stylizer
    from faststyle.transformer import TransformerNet

    torch.manual_seed(0)
    model = save_model(TransformerNet(width=0.5), tmp_path / "untrained.safetensors", metadata={})
    painting = Stylizer(model, device="cpu", backend="eager")(load_image(CONTENT, 48))
    save_image(painting, tmp_path / "painting.png")
    args = ["gatys", "--content", str(CONTENT), "--style", str(STYLE), "--size", "48", "--iters", "2", "--quiet",
            "--cache", str(lossnet_cache), "--device", "cpu"]  # fmt: skip
    results = {}
    for name, extra in [("content", []), ("image", ["--init", str(tmp_path / "painting.png")]),
                        ("model", ["--init-model", str(model)])]:  # fmt: skip
        assert main([*args, *extra, "--out", str(tmp_path / f"{name}.png")]) == 0, capsys.readouterr().err
        results[name] = load_image(tmp_path / f"{name}.png")
    for name in ("image", "model"):
        to_painting = float((results[name] - painting).abs().mean())
        assert to_painting < 0.5 * float((results["content"] - painting).abs().mean()), name
    assert main([*args, "--init", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o.png")]) == 1
    assert "--init must be content, noise, mixed or an image file; " in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one or the other
        main([*args, "--init", "noise", "--init-model", str(model), "--out", str(tmp_path / "o.png")])
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_will_not_write_over_its_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(CONTENT.read_bytes())
    for flag in ("--content", "--style"):
        other = "--style" if flag == "--content" else "--content"
        argv = ["gatys", flag, str(photo), other, str(STYLE if other == "--style" else CONTENT), "--iters", "1"]
        assert main([*argv, "--out", str(tmp_path / "." / "photo.jpg")]) == 1
        assert f"is the {flag} image; name another file for the result" in capsys.readouterr().err
    assert photo.read_bytes() == CONTENT.read_bytes()
    mask = tmp_path / "mask.png"
    Image.new("L", (64, 48), 255).save(mask)
    drawn = mask.read_bytes()
    argv = ["gatys", "--content", str(CONTENT), "--style", str(STYLE), "--iters", "1", "--size", "32"]
    for flags in (["--mask", str(mask)], ["--init", str(mask)]):
        assert main([*argv, *flags, "--out", str(mask)]) == 1
        assert f"is the {flags[0]} image; name another file for the result" in capsys.readouterr().err
    assert mask.read_bytes() == drawn


def test_cli_will_not_write_snapshots_over_its_inputs_or_into_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Continuing from a snapshot (``--init run_iter0002.png --out run.png --save-every 2``) wrote the new run's
    iteration 2 over the picture it started from; ``--out`` naming a folder failed after the whole optimisation."""
    start = tmp_path / "run_iter0002.png"
    start.write_bytes(CONTENT.read_bytes())
    argv = ["gatys", "--content", str(CONTENT), "--style", str(STYLE), "--iters", "2", "--size", "32"]
    assert main([*argv, "--init", str(start), "--save-every", "2", "--out", str(tmp_path / "run.png")]) == 1
    err = capsys.readouterr().err
    assert "--save-every 2 would write run_iter0002.png over the --init image; name another --out" in err
    assert main([*argv, "--multiscale", "16,32", "--content", str(tmp_path / "run_iter0004.png"), "--save-every",
                 "4", "--out", str(tmp_path / "run.png")]) == 1  # fmt: skip
    assert "would write run_iter0004.png over the --content image" in capsys.readouterr().err  # 2 iterations x 2 scales
    assert start.read_bytes() == CONTENT.read_bytes()
    (tmp_path / "result.png").mkdir()
    assert main([*argv, "--out", str(tmp_path / "result.png")]) == 1
    assert f"--out {tmp_path / 'result.png'} is a folder; name the image file to write" in capsys.readouterr().err


def _interrupt_every_third_evaluation(patch: pytest.MonkeyPatch, signal: type[BaseException]) -> None:
    """The 3rd, 6th, … evaluation of the Gatys objective raises ``signal`` (Ctrl-C or kill, arriving mid-run)."""
    import faststyle.gatys

    current, calls = faststyle.gatys._Objective.current, [0]

    def interrupted(self: faststyle.gatys._Objective) -> dict:
        calls[0] += 1
        if calls[0] % 3 == 0:
            raise signal
        return current(self)

    patch.setattr(faststyle.gatys._Objective, "current", interrupted)


def test_an_interruption_gives_back_the_picture_of_the_last_finished_iteration(nets: dict, images: tuple) -> None:
    """Ctrl-C during the iterations: ``Interrupted`` holds the picture after the last finished one (as the callback saw
    it), the content's colours put back where asked, and the history so far; at a new scale, the previous scale's."""
    content, style = images
    seen: dict[int, torch.Tensor] = {}

    def stop_at(n: int) -> Callable[[int, torch.Tensor, dict], None]:
        def callback(i: int, image: torch.Tensor, terms: dict) -> None:
            seen[i] = image
            if i == n:
                raise KeyboardInterrupt

        return callback

    args = {"lossnet": nets["vgg16"], "size": 64, "iters": 6, "progress": False}
    with pytest.raises(Interrupted) as stopped:
        stylize(content, style, callback=stop_at(3), **args)
    assert len(stopped.value.history) == 3 and type(stopped.value.reason) is KeyboardInterrupt
    assert torch.equal(stopped.value.image, seen[3]) and max(seen[3].shape[-2:]) == 64
    assert float((seen[3] - resize_long_side(content, 64)).abs().mean()) > 0.01  # painted, not the content

    with pytest.raises(Interrupted) as stopped:
        stylize(content, style, callback=stop_at(2), preserve_color=True, **args)
    chroma = rgb_to_ycbcr(stopped.value.image)[:, 1:]
    assert torch.allclose(chroma, rgb_to_ycbcr(resize_long_side(content, 64))[:, 1:], atol=0.02)

    with pytest.raises(Interrupted) as stopped:  # at the last iteration of the first scale
        stylize(content, style, callback=stop_at(2), **{**args, "iters": 2, "multiscale": [32, 64]})
    assert max(stopped.value.image.shape[-2:]) == 32 and len(stopped.value.history) == 2
    first_scale = stopped.value.image

    with pytest.MonkeyPatch.context() as patch, pytest.raises(Interrupted) as stopped:  # in the second scale's first
        _interrupt_every_third_evaluation(patch, KeyboardInterrupt)
        stylize(content, style, **{**args, "iters": 2, "multiscale": [32, 64]})
    assert torch.equal(stopped.value.image, first_scale) and len(stopped.value.history) == 2


def test_a_non_finite_gradient_stops_with_a_message(nets: dict, images: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN gradient beside a finite loss (as reduced precision can give): L-BFGS stopped as if it had converged,
    and the remaining iterations did nothing, without a word."""
    import faststyle.gatys

    evaluate = faststyle.gatys._Objective.__call__
    calls = [0]

    def nan_gradient_from_the_third(self: faststyle.gatys._Objective) -> torch.Tensor:
        loss = evaluate(self)
        calls[0] += 1
        if calls[0] >= 3:
            self.variable.grad[0, 0, 0, 0] = float("nan")
        return loss

    monkeypatch.setattr(faststyle.gatys._Objective, "__call__", nan_gradient_from_the_third)
    with pytest.raises(FaststyleError, match=r"the gradient \(though the loss was finite\) became non-finite at it"):
        stylize(*images, lossnet=nets["vgg16"], size=48, iters=10, progress=False)

    def infinite_from_the_start(self: faststyle.gatys.BoxLBFGS, closure: Callable) -> torch.Tensor:
        self.loss = torch.tensor(float("inf"))  # as its first evaluation gave, with a NaN gradient
        raise FloatingPointError("the gradient is not finite")

    monkeypatch.setattr(faststyle.gatys.BoxLBFGS, "step", infinite_from_the_start)
    with pytest.raises(FaststyleError, match=r"^the loss became non-finite at iteration 1; lower the learning rate"):
        stylize(*images, lossnet=nets["vgg16"], size=48, iters=10, progress=False)


@pytest.mark.parametrize(("signal", "code"), [(KeyboardInterrupt, 130), (Terminated, 143)])
def test_cli_interrupted_writes_the_picture_so_far(
    signal: type,
    code: int,
    tmp_path: Path,
    lossnet_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
    ctrl_c_while_saving: list,
) -> None:
    _interrupt_every_third_evaluation(monkeypatch, signal)
    import signal as signals

    ctrl_c = signals.getsignal(signals.SIGINT)
    out = tmp_path / "result.png"
    argv = ["gatys", "--content", str(CONTENT), "--style", str(STYLE), "--size", "48", "--iters", "5", "--quiet"]
    assert main([*argv, "--cache", str(lossnet_cache), "--out", str(out)]) == code
    # a second Ctrl-C cannot cut the save short, and works again afterwards
    assert ctrl_c_while_saving == [signals.SIG_IGN] and signals.getsignal(signals.SIGINT) is ctrl_c
    printed = capsys.readouterr()
    assert f"{out}: 48x36, the picture so far: interrupted after 2 of 5 iterations; its loss: total " in printed.out
    assert ("stopped (SIGTERM)" if signal is Terminated else "faststyle: interrupted") in printed.err
    assert load_image(out).shape[-2:] == (36, 48)
    if signal is Terminated:
        return
    save_image(torch.zeros(1, 3, 36, 48), out)  # a finished result: an interrupted run does not replace it
    assert main([*argv, "--cache", str(lossnet_cache), "--out", str(out)]) == code
    kept = tmp_path / "result_interrupted.png"
    assert f"{kept}: 48x36, the picture so far: interrupted after 2 of 5 iterations (result.png left as it was)" in (
        capsys.readouterr().out
    )
    assert float(load_image(out).max()) == 0 and float(load_image(kept).max()) > 0.5


@pytest.fixture()
def ctrl_c_while_saving(monkeypatch: pytest.MonkeyPatch) -> list:
    """The SIGINT handler in force at each ``save_image`` call."""
    import signal

    import faststyle.images

    handlers: list = []
    save = faststyle.images.save_image

    def save_noting_ctrl_c(*args: object) -> None:
        handlers.append(signal.getsignal(signal.SIGINT))
        save(*args)

    monkeypatch.setattr(faststyle.images, "save_image", save_noting_ctrl_c)
    return handlers


def test_cli_a_ctrl_c_cannot_cut_the_finished_results_save_short(
    tmp_path: Path, lossnet_cache: Path, ctrl_c_while_saving: list
) -> None:
    """Ctrl-C while the finished result is written was a KeyboardInterrupt there: the run's result was lost."""
    import signal

    ctrl_c = signal.getsignal(signal.SIGINT)
    out = tmp_path / "result.png"
    argv = ["gatys", "--content", str(CONTENT), "--style", str(STYLE), "--size", "32", "--iters", "1", "--quiet"]
    assert main([*argv, "--cache", str(lossnet_cache), "--out", str(out)]) == 0
    assert ctrl_c_while_saving == [signal.SIG_IGN] and signal.getsignal(signal.SIGINT) is ctrl_c
    assert out.is_file()


def test_cli_refuses_bad_numbers_by_their_flags(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["gatys", "--content", str(CONTENT), "--style", str(STYLE), "--out", "x.png"]
    for flag, value, message in [("--iters", "0", "0 is not a positive whole number"),
                                 ("--style-scale", "0", "0 is not a positive number"),
                                 ("--tv-weight", "-1", "-1 is not a finite number of 0 or more"),
                                 ("--multiscale", "256,0", "expected comma-separated positive sizes")]:  # fmt: skip
        with pytest.raises(SystemExit):
            main([*argv, flag, value])
        assert f"argument {flag}: {message}" in capsys.readouterr().err
    assert main([*argv, "--precision", "fp16", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "--precision fp16 needs CUDA; use bf16 or fp32 on the CPU" in err and "is meant for CUDA" not in err


@pytest.mark.parametrize("backbone", ["vgg16", "googlenet"])
def test_the_tv_weight_smooths_in_the_reference_units_with_each_network(
    backbone: str, nets: dict, images: tuple
) -> None:
    """--tv-weight in --ratio's units (0-255 pixels): one value smooths with torchvision's VGG16, fed [0,1] pixels
    over the ImageNet std, as with the Caffe GoogLeNet, fed 0-255 (in [0,1] units the weight meant ~3,000 times more
    to GoogLeNet). Measured at 128 px, 20 iterations, weight 1000: the picture's total variation falls by 44% with
    VGG16 (by 3% in the old units) and by 88% with GoogLeNet."""
    from faststyle.losses import tv_loss

    content, style = images
    variation = {}
    for weight in (0.0, 1000.0):
        image, _ = stylize(content, style, lossnet=nets[backbone], size=128, iters=20, tv_weight=weight, progress=False)
        variation[weight] = float(tv_loss(image))
    assert variation[1000.0] < 0.75 * variation[0.0], variation


def test_cli_warns_that_reduced_precision_is_slow_on_the_cpu(
    tmp_path: Path, lossnet_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["gatys", "--content", str(CONTENT), "--style", str(STYLE), "--size", "32", "--iters", "1", "--quiet",
            "--out", str(tmp_path / "out.png"), "--cache", str(lossnet_cache), "--device", "cpu"]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="faststyle.gatys"):
        assert main([*argv, "--precision", "bf16"]) == 0
        assert "--precision bf16 is meant for CUDA" in caplog.text
        caplog.clear()
        assert main(argv) == 0
        assert caplog.text == ""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--backbone": "resnet"}, "unknown loss network"),
        ({"--content": "BAD"}, "cannot read"),
        ({"--size": "12"}, "needs at least 16 pixels a side"),
    ],
)
def test_cli_errors_exit_1(change: dict, message: str, tmp_path: Path, lossnet_cache: Path, capsys) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    options = {"--content": str(CONTENT), "--style": str(STYLE), "--size": "32", "--iters": "1"} | change
    if options["--content"] == "BAD":
        options["--content"] = str(bad)
    argv = ["gatys", *[x for pair in options.items() for x in pair], "--out", str(tmp_path / "o.png")]
    assert main([*argv, "--cache", str(lossnet_cache), "--no-progress"]) == 1  # as train and compare spell it
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_bf16_runs_the_loss_network_only_in_reduced_precision(nets: dict, images: tuple) -> None:
    content, style = images
    image, history = stylize(content, style, lossnet=nets["vgg16"], size=48, iters=4, precision="bf16", progress=False)
    assert image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1
    assert history[-1]["total"] < history[0]["total"]


def test_fp16_gradients_are_scaled_into_range(nets: dict, images: tuple) -> None:
    """Seen on an H200: in fp16 the loss never moved (every line search failed), its gradient overflowing."""
    import contextlib
    import functools

    from faststyle.config import load_config
    from faststyle.gatys import _identity, _Objective, caffe_pixel_scale
    from faststyle.images import resize_long_side
    from faststyle.losses import PerceptualLoss

    content, style = resize_long_side(images[0], 96), resize_long_side(images[1], 115)
    net = nets["vgg16"]
    loss = PerceptualLoss(net, load_config("vgg16"), [style], style_weight=1e4 * caffe_pixel_scale(net) ** 2,
                          normalization="caffe")  # fmt: skip
    noisy = (content + 0.1 * torch.randn(content.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    fp16 = functools.partial(torch.autocast, "cpu", dtype=torch.float16)
    grads = {}
    for name, amp, scaled in (("fp32", contextlib.nullcontext, False), ("fp16", fp16, False),
                              ("fp16 scaled", fp16, True)):  # fmt: skip
        variable = noisy.clone().requires_grad_(True)
        objective = _Objective(loss, variable, _identity, loss.content_features(content), amp, scaled=scaled)
        objective()
        grads[name] = variable.grad.flatten()
    assert not torch.isfinite(grads["fp16"]).all()
    assert torch.isfinite(grads["fp16 scaled"]).all()
    cosine = torch.nn.functional.cosine_similarity(grads["fp16 scaled"], grads["fp32"], dim=0)
    assert float(cosine) > 0.99
    assert float(grads["fp16 scaled"].norm() / grads["fp32"].norm()) == pytest.approx(1, abs=0.05)


def test_channels_last_is_the_same_optimisation(nets: dict, images: tuple) -> None:
    content, style = images
    runs = {
        layout: stylize(content, style, lossnet=nets["vgg16"], size=64, iters=3, progress=False, channels_last=layout)
        for layout in (True, False)
    }
    (nhwc, nhwc_history), (nchw, nchw_history) = runs[True], runs[False]
    assert torch.allclose(nhwc, nchw, atol=2e-3)
    assert nhwc_history[-1]["total"] == pytest.approx(nchw_history[-1]["total"], rel=1e-3)
    assert next(nets["vgg16"].parameters()).is_contiguous()  # the default (CPU) layout is back


def test_reading_each_iterations_terms_costs_no_extra_network_passes(nets: dict, images: tuple) -> None:
    """The history and callbacks read the loss terms of every iteration's point, which the line search evaluated."""
    import contextlib

    from faststyle.config import load_config
    from faststyle.gatys import LBFGS_LINE_SEARCH, _identity, _Objective, _optimizer, caffe_pixel_scale
    from faststyle.images import resize_long_side
    from faststyle.losses import PerceptualLoss

    content, style = resize_long_side(images[0], 64), resize_long_side(images[1], 77)
    net = nets["vgg16"]
    loss = PerceptualLoss(net, load_config("vgg16"), [style], style_weight=1e4 * caffe_pixel_scale(net) ** 2)
    features = loss.content_features(content)
    runs = []
    for read_terms in (False, True):
        variable = content.clone().requires_grad_(True)
        objective = _Objective(loss, variable, _identity, features, contextlib.nullcontext)
        optimizer = _optimizer("lbfgs", variable, None, LBFGS_LINE_SEARCH)
        for _ in range(12):
            optimizer.step(objective)
            if read_terms:
                objective.current()
        runs.append((objective.evaluations, variable.detach().clone()))
    (plain, plain_result), (read, read_result) = runs
    assert read == plain and torch.equal(read_result, plain_result)


def test_pixels_near_black_or_white_are_optimised_like_the_others(nets: dict) -> None:
    """Chicago's near-white sky. Optimising a sigmoid of the pixels (as before) moved the channels under 0.05 or over
    0.95 by 0.003 on average here against 0.060 for the others, so the sky stayed photo-white in the painting; on
    the box they move by 0.033 against 0.044."""
    content = load_image(SHARED / "data/content/chicago.jpg", 96)
    image, _ = stylize(content, load_image(STYLE), lossnet=nets["vgg16"], size=96, iters=20, progress=False)
    change = (image - content).abs()
    extreme, middle = (content < 0.05) | (content > 0.95), (content > 0.2) & (content < 0.8)
    assert float(extreme.float().mean()) > 0.05  # the photo has such pixels
    assert float(change[extreme].mean()) > 0.5 * float(change[middle].mean())


def test_cli_config_alone_picks_its_backbone(tmp_path: Path, lossnet_cache: Path, capsys) -> None:
    argv = ["gatys", "--content", str(CONTENT), "--style", str(STYLE), "--size", "48", "--iters", "1", "--quiet",
            "--out", str(tmp_path / "out.png"), "--cache", str(lossnet_cache),
            "--config", "googlenet_pool"]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "out.png").is_file()
    assert main([*argv, "--backbone", "vgg16"]) == 1
    err = capsys.readouterr().err
    assert "config 'googlenet_pool' is for googlenet, not --backbone vgg16; leave out --backbone" in err


def test_the_api_takes_the_backbone_from_the_config(lossnet_cache: Path) -> None:
    from faststyle.settings import TrainSettings

    assert TrainSettings(styles=["s.jpg"], config="googlenet_pool").backbone == "googlenet"
    assert TrainSettings(styles=["s.jpg"]).backbone == "vgg16"
    content = load_image(CONTENT, 56)
    image, history = stylize(content, load_image(STYLE, 48), config="googlenet_pool", size=56, iters=1,
                             cache=lossnet_cache, progress=False)  # fmt: skip
    assert image.shape == content.shape and set(history[0]) >= {"style/pool2/3x3_s2"}


def test_the_style_target_is_the_whole_gram_matrix_by_default_as_the_reference_took_it(
    nets: dict, images: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """At style_scale 1.2 the whole target asks for about 1.44× the positions' worth of each Gram entry, so after one
    step from the photo its style loss is the larger."""
    first = {}
    for target in ("whole", "per-position"):
        _, history = stylize(*images, lossnet=nets["vgg16"], size=64, iters=1, style_target=target, progress=False)
        first[target] = history[0]["style"]
    _, default = stylize(*images, lossnet=nets["vgg16"], size=64, iters=1, progress=False)
    assert default[0]["style"] == first["whole"]
    assert first["whole"] > 1.2 * first["per-position"]
    with pytest.raises(FaststyleError, match="style_target"):
        stylize(*images, lossnet=nets["vgg16"], size=64, iters=1, style_target="sum", progress=False)


def test_the_progress_bar_shows_the_loss_of_the_iteration_it_counts(
    nets: dict, images: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At n/N the bar's loss is the n-th iteration's, not the one before (it lagged one behind, the last unseen)."""
    import io

    import tqdm

    import faststyle.gatys

    shown = io.StringIO()
    monkeypatch.setattr(faststyle.gatys, "tqdm", lambda **kw: tqdm.tqdm(**{**kw, "file": shown, "mininterval": 0}))
    _, history = stylize(*images, lossnet=nets["vgg16"], size=32, iters=3)
    lines = re.findall(r"(\d)/3 \[[^\]]*?(?:loss=([\d.e+-]+))?\]", shown.getvalue())
    counted = {int(n): loss for n, loss in lines if int(n) > 0}
    assert counted == {n: f"{history[n - 1]['total']:.4g}" for n in (1, 2, 3)}
