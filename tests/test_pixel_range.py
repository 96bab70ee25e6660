"""One pixel convention for every public entry point: float in [0,1] or uint8 (0–255, converted the same way
everywhere); 0–255 floats, normalised tensors and NaN are refused with the fix, instead of white or NaN pictures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from faststyle import gatys
from faststyle.errors import FaststyleError
from faststyle.images import load_image, save_image
from faststyle.losses import PerceptualLoss
from faststyle.metrics import LPIPS, StyleMeter, color_histogram_distance, ssim_luminance, texture_distance
from faststyle.modelfile import save_model
from faststyle.stylize import Stylizer
from faststyle.transformer import TransformerNet


@pytest.fixture(scope="module")
def photo(shared: Path) -> torch.Tensor:
    return load_image(shared / "data" / "content" / "chicago.jpg", size=64)


@pytest.fixture(scope="module")
def painting(shared: Path, photo: torch.Tensor) -> torch.Tensor:
    """The painting at the photo's size, for the metrics that compare two pictures pixel by pixel."""
    painting = load_image(shared / "data" / "styles" / "vangogh_starry_night_1889.jpg")
    return torch.nn.functional.interpolate(painting, size=photo.shape[-2:], mode="bilinear", antialias=True).clamp(0, 1)


@pytest.fixture(scope="module")
def stylizer(tmp_path_factory: pytest.TempPathFactory) -> Stylizer:
    torch.manual_seed(0)
    path = save_model(TransformerNet(width=0.5), tmp_path_factory.mktemp("models") / "m.safetensors", metadata={})
    return Stylizer(path, device="cpu", backend="eager")


def as_bytes(image: torch.Tensor) -> torch.Tensor:
    return image.mul(255).round().byte()


def entry_points(stylizer: Stylizer, alexnet, painting: torch.Tensor, tmp_path: Path) -> dict[str, Callable]:
    lpips = LPIPS("alexnet", lossnet=alexnet)
    meter = StyleMeter(alexnet, painting)
    return {
        "Stylizer": lambda x: stylizer(x, strength=0.5),
        "Stylizer.batch": lambda x: stylizer.batch([x])[0],
        "gatys content": lambda x: gatys.stylize(x, painting, lossnet=alexnet, size=64, iters=1, progress=False)[0],
        "gatys style": lambda x: gatys.stylize(painting, x, lossnet=alexnet, size=64, iters=1, progress=False)[0],
        "loss network": lambda x: alexnet(x, ["conv1"])["conv1"],
        "perceptual loss": lambda x: PerceptualLoss(alexnet, "alexnet", x)(painting, content=painting).total,
        "LPIPS": lambda x: lpips(x, painting),
        "style distance": lambda x: meter.layer_losses(x)["conv1"],
        "SSIM": lambda x: ssim_luminance(x, painting),
        "colour histograms": lambda x: color_histogram_distance(x, painting),
        "texture distance": lambda x: texture_distance(x, painting),
        "save_image": lambda x: load_image(save_image(x, tmp_path / "saved.png")),
    }


def test_uint8_is_read_as_0_to_255_everywhere(
    stylizer: Stylizer, alexnet, photo: torch.Tensor, painting: torch.Tensor, tmp_path: Path
) -> None:
    quantised = as_bytes(photo).float() / 255
    for name, run in entry_points(stylizer, alexnet, painting, tmp_path).items():
        from_float, from_bytes = run(quantised), run(as_bytes(photo))
        assert from_bytes.dtype == from_float.dtype and torch.isfinite(from_bytes).all(), name
        torch.testing.assert_close(from_bytes, from_float, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        (lambda x: x * 255, r"not within \[0,1\]; it looks like 0–255: divide it by 255"),
        (lambda x: x * 2 - 1, r"not within \[0,1\]; it looks normalised: undo that first \(\(x \+ 1\) / 2"),
        (
            lambda x: (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / 0.226,
            r"not within \[0,1\]; it looks normalised",
        ),
        (lambda x: x.masked_fill(x > 0.9, float("nan")), "holds NaN or infinite values"),
        (lambda x: (x * 255).int(), "image tensors are float in \\[0,1\\] or uint8, not torch.int32"),
        (lambda x: x * 1.6, r"not within \[0,1\]; clamp it to \[0,1\], or find what brightened it"),  # not /255
    ],
    ids=["0-255", "normalised", "imagenet", "nan", "int32", "over-bright"],
)
def test_0_to_255_normalised_and_nan_tensors_are_refused_everywhere(
    stylizer: Stylizer, alexnet, photo: torch.Tensor, painting: torch.Tensor, tmp_path: Path, mistake, message: str
) -> None:
    wrong = mistake(photo)
    for name, run in entry_points(stylizer, alexnet, painting, tmp_path).items():
        if name == "loss network":
            continue  # the hot path of training: it converts uint8 but checks no values
        with pytest.raises(FaststyleError, match=message):
            run(wrong)
    assert not (tmp_path / "saved.png").exists()


def test_a_resampling_overshoot_is_tolerated(stylizer: Stylizer) -> None:
    edge = torch.zeros(1, 3, 24, 24)
    edge[..., 12:] = 1.0
    sharp = torch.nn.functional.interpolate(edge, scale_factor=3, mode="bicubic")  # rings on both sides of the edge
    assert sharp.min() < -0.05 and sharp.max() > 1.05
    out = stylizer(sharp, strength=0.0)
    torch.testing.assert_close(out, sharp.clamp(0, 1))


def test_stylized_tensors_can_be_edited_and_differentiated(stylizer: Stylizer, photo: torch.Tensor) -> None:
    out = stylizer(photo)
    out.mul_(0.5)  # an inference-mode tensor would refuse this
    weight = torch.ones(1, requires_grad=True)
    (out * weight).sum().backward()
    assert weight.grad is not None and weight.grad.item() == pytest.approx(out.sum().item(), rel=1e-5)


def test_sizes_are_whole_positive_numbers(stylizer: Stylizer, photo: torch.Tensor, shared: Path) -> None:
    for size in (0, -5, 64.5, True):
        with pytest.raises(FaststyleError, match="size must be a positive whole number of pixels"):
            stylizer(photo, size=size)
        with pytest.raises(FaststyleError, match="size must be a positive whole number of pixels"):
            load_image(shared / "data" / "content" / "chicago.jpg", size=size)
    assert stylizer(photo, size=32).shape[-2:] == (22, 32)  # 43x64 halved


def test_the_loss_network_takes_one_name_other_dtypes_and_says_when_images_are_too_small(
    alexnet, photo: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = alexnet(photo, "conv2")
    assert list(one) == ["conv2"]
    half = alexnet(photo.half(), ["conv2"])["conv2"]
    torch.testing.assert_close(half, one["conv2"], atol=0.05, rtol=0.02)  # cast to the network's float32
    with pytest.raises(FaststyleError, match="name at least one layer of alexnet: conv1, "):
        alexnet(photo, [])
    with pytest.raises(FaststyleError, match="the image is 8x8 pixels: alexnet needs at least .* to reach its layer"):
        alexnet(photo[..., :8, :8], ["conv5"])

    def out_of_memory(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(alexnet.body[3], "forward", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory") as raised:  # any other error is left as it is
        alexnet(photo, ["conv5"])
    assert not isinstance(raised.value, FaststyleError)
