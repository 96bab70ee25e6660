"""Spatial control in the Gatys mode: each style image paints only where its mask says."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import SHARED
from PIL import Image

from faststyle.cli import main
from faststyle.errors import FaststyleError
from faststyle.gatys import stylize
from faststyle.images import load_image, resize_long_side
from faststyle.losses import PerceptualLoss
from faststyle.regions import RegionStyleLoss

CONTENT = SHARED / "data" / "content" / "tubingen.jpg"
STARRY = SHARED / "data" / "styles" / "vangogh_starry_night_crop.jpg"
SCREAM = SHARED / "data" / "styles" / "munch_the_scream_1893.jpg"


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The photo, and the paintings at 256 px: as large as ``stylize`` scales them for these tests' sizes or more
    (the Scream whole is 1200×1528, 20 s through VGG16 on a 2-core CPU for each loss made of it)."""
    return load_image(CONTENT), load_image(STARRY, 256), load_image(SCREAM, 256)


def left_half(like: torch.Tensor) -> torch.Tensor:
    h, w = like.shape[-2:]
    mask = torch.zeros(1, 1, h, w)
    mask[..., : w // 2] = 1
    return mask


@pytest.mark.parametrize("normalization", ["caffe", "mean"])
def test_one_region_over_the_whole_image_is_the_unguided_loss(vgg16, images: tuple, normalization: str) -> None:
    content, starry, scream = images
    content = resize_long_side(content, 96)
    output = torch.rand_like(content, generator=torch.Generator().manual_seed(0))
    whole = torch.ones(1, 1, *content.shape[-2:])
    plain = PerceptualLoss(vgg16, "vgg16", [starry], normalization=normalization)(output, content=content)
    guided = RegionStyleLoss(vgg16, "vgg16", [starry], [whole], normalization=normalization)(output, content=content)
    assert torch.allclose(guided.total, plain.total, rtol=1e-5)
    for layer, value in plain.style_layers.items():
        assert torch.allclose(guided.style_layers[layer], value, rtol=1e-5), layer
    # two regions that split the image, both with the same painting: no less than the whole image's loss (whose
    # Gram matrix is the mean of the halves'; the loss is convex in it), and about as much for a uniform image
    halves = [left_half(content), 1 - left_half(content)]
    split = RegionStyleLoss(vgg16, "vgg16", [starry, starry], halves, normalization=normalization)
    ratio = float(split(output, content=content).style) / float(plain.style)
    assert 1.0 - 1e-5 <= ratio < 1.05, ratio


def test_each_style_paints_its_own_region(vgg16, images: tuple) -> None:
    """The Scream on the left half, Starry Night on the right: each half is far nearer to what that painting alone
    makes of it than to what the other does."""
    content, starry, scream = images
    options = {"lossnet": vgg16, "size": 128, "iters": 30, "progress": False}
    guided, _ = stylize(content, [starry, scream], masks=[1 - left_half(content), left_half(content)], **options)
    alone = options | {"style_target": "per-position"}  # as a masked style's target always is
    starry_only, _ = stylize(content, starry, **alone)
    scream_only, _ = stylize(content, scream, **alone)
    width = guided.shape[-1]
    left, right = slice(0, width // 2 - 8), slice(width // 2 + 8, width)  # 8 px from the seam

    def off(a: torch.Tensor, b: torch.Tensor, part: slice) -> float:
        return float((a[..., part] - b[..., part]).abs().mean())

    # measured: left 0.036 against 0.060, right 0.038 against 0.060
    assert off(guided, scream_only, left) < 0.7 * off(guided, starry_only, left)
    assert off(guided, starry_only, right) < 0.7 * off(guided, scream_only, right)


def test_the_masks_move_with_the_loss(vgg16, images: tuple) -> None:
    """``.to(device)`` takes the masks at every layer along, as it takes the network and the targets."""
    content, starry, scream = images
    content = resize_long_side(content, 64)
    masks = [left_half(content), 1 - left_half(content)]
    loss = RegionStyleLoss(copy.deepcopy(vgg16), "vgg16", [starry, scream], masks).to("meta")  # a device CI has
    assert loss.masks.device.type == "meta" and loss.target_gram("conv1_1").device.type == "meta"
    assert {mask.device.type for regions in loss.regions.values() for _, mask, _, _ in regions} == {"meta"}


def test_the_region_loss_traces_as_one_graph(vgg16, images: tuple) -> None:
    """The masks are scaled to each layer when the loss is made, so that ``--compile`` makes one graph of an
    evaluation (a read of the device inside it had split it per layer, past Dynamo's recompile limit)."""
    _, starry, scream = images
    mask = torch.zeros(1, 1, 48, 64)
    mask[..., :32] = 1
    loss = RegionStyleLoss(vgg16, "vgg16", [starry, scream], [mask, 1 - mask])
    targets = loss.content_features(torch.rand(1, 3, 48, 64))
    explained = torch._dynamo.explain(lambda image: loss(image, content_features=targets).total)(
        torch.rand(1, 3, 48, 64, requires_grad=True)
    )
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    with pytest.raises(FaststyleError, match="the masks are for 64x48 images"):
        loss(torch.rand(1, 3, 64, 64), content=torch.rand(1, 3, 64, 64))
    with pytest.raises(FaststyleError, match="the masks must have one size"):
        RegionStyleLoss(vgg16, "vgg16", [starry, scream], [mask, torch.ones(1, 1, 8, 8)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"masks": [torch.ones(1, 1, 8, 8)]}, "give one mask per style image: 2 styles, 1 masks"),
        ({"masks": [torch.ones(8, 8)] * 2, "style_blend": [1, 1]}, "give them or a style blend, not both"),
        ({"masks": [torch.ones(1, 2, 8, 8)] * 2}, r"mask 1: expected one mask of shape"),
        ({"masks": [torch.full((8, 8), 2.0)] * 2}, r"mask 1"),
    ],
)
def test_bad_masks_are_clear_errors(kwargs: dict, message: str) -> None:
    content = torch.rand(1, 3, 16, 16)
    with pytest.raises(FaststyleError, match=message):
        stylize(content, [content, content], progress=False, **kwargs)


def test_cli_takes_a_mask_per_style(tmp_path: Path, lossnet_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Image.open(CONTENT) as photo:
        width, height = photo.size
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (0, 0, width // 2, height))
    mask.save(tmp_path / "left.png")
    Image.eval(mask, lambda v: 255 - v).save(tmp_path / "right.png")
    args = ["gatys", "--content", str(CONTENT), "--style", str(SCREAM), "--style", str(STARRY), "--size", "48",
            "--iters", "2", "--quiet", "--cache", str(lossnet_cache), "--out", str(tmp_path / "out.png")]  # fmt: skip
    assert main([*args, "--mask", str(tmp_path / "left.png"), "--mask", str(tmp_path / "right.png")]) == 0
    with Image.open(tmp_path / "out.png") as written:
        assert max(written.size) == 48
    assert main([*args, "--mask", str(tmp_path / "left.png")]) == 1
    assert "give one mask per style image: 2 styles, 1 masks" in capsys.readouterr().err
