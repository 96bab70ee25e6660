"""``--style-weight auto``: the balance of style against content, measured on real weights, photos and paintings."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch

from faststyle.balance import balanced_style_weight, fit_to, style_pull
from faststyle.config import default_config
from faststyle.errors import FaststyleError
from faststyle.images import load_image
from faststyle.losses import STYLE_BALANCE, PerceptualLoss


def _photos(shared: Path, size: int, count: int = 3) -> list[torch.Tensor]:
    paths = sorted((shared / "data/train/unsplash").glob("*.jpg"))[:count]
    return [fit_to(load_image(path), size, size) for path in paths]


def _loss(net, painting: torch.Tensor, content_weight: float = 1.0, style_weight: float = 1.0) -> PerceptualLoss:
    config = default_config(net.name)
    return PerceptualLoss(net, config, [painting], content_weight=content_weight, style_weight=style_weight,
                          normalization="mean")  # fmt: skip


def test_fit_to_covers_the_shape_and_keeps_the_centre() -> None:
    image = torch.linspace(0, 1, 100).expand(1, 3, 40, 100).clone()  # brightness rises left to right
    fitted = fit_to(image, 32, 48)
    assert fitted.shape == (1, 3, 32, 48)
    row = fitted[0, 0, 16]  # 40 rows cover 32 at scale 0.8: 80 columns, of which the middle 48 are kept
    assert 0.15 < row[0] < 0.3 and 0.7 < row[-1] < 0.85
    torch.testing.assert_close(row.mean(), torch.tensor(0.5), atol=0.01, rtol=0)
    assert fit_to(image, 10, 10).shape == (1, 3, 10, 10)


def test_the_measured_weight_sets_the_balance(vgg16, shared: Path) -> None:
    painting = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg", 96)
    photos = _photos(shared, 64)
    weight, pull = balanced_style_weight(_loss(vgg16, painting, content_weight=3.0), photos, [painting])
    assert weight == pytest.approx(STYLE_BALANCE * 3.0 / pull)
    # measured again from the weighted total alone, with one term switched off at a time
    content_only, style_only = _loss(vgg16, painting, 3.0, 0.0), _loss(vgg16, painting, 0.0, weight)
    ratios = []
    for photo in photos:
        midpoint = (0.5 * photo + 0.5 * fit_to(painting, 64, 64)).requires_grad_(True)
        content_grad = torch.autograd.grad(content_only(midpoint, photo).total, midpoint)[0]
        style_grad = torch.autograd.grad(style_only(midpoint, photo).total, midpoint)[0]
        ratios.append(float(style_grad.norm() / content_grad.norm()))
    assert statistics.median(ratios) == pytest.approx(STYLE_BALANCE, rel=1e-4)


def test_googlenet_gets_a_much_larger_weight_than_vgg16(vgg16, googlenet, shared: Path) -> None:
    # Measured at 128 px on three Unsplash photos: GoogLeNet's style pulls 2.6x (Starry Night) and 12x (The Scream)
    # less per unit weight than VGG16's, so equal weights are far from an equal balance.
    photos = _photos(shared, 128)
    for name in ("vangogh_starry_night_crop.jpg", "munch_the_scream_1893.jpg"):
        painting = load_image(shared / "data/styles" / name, 192)
        vgg_weight, _ = balanced_style_weight(_loss(vgg16, painting), photos, [painting])
        googlenet_weight, _ = balanced_style_weight(_loss(googlenet, painting), photos, [painting])
        assert googlenet_weight > 2 * vgg_weight, (name, vgg_weight, googlenet_weight)


def test_the_pull_does_not_depend_on_the_loss_weights(vgg16, shared: Path) -> None:
    painting = load_image(shared / "data/styles/munch_the_scream_1893.jpg", 96)
    photos = _photos(shared, 64, count=2)
    plain = style_pull(_loss(vgg16, painting), photos, [painting])
    weighted = style_pull(_loss(vgg16, painting, content_weight=5.0, style_weight=0.1), photos, [painting])
    assert weighted == pytest.approx(plain, rel=1e-5)
    assert all(r > 0 for r in plain)


def test_bad_balances_are_refused(vgg16, shared: Path) -> None:
    painting = load_image(shared / "data/styles/munch_the_scream_1893.jpg", 96)
    with pytest.raises(FaststyleError, match="positive"):
        balanced_style_weight(_loss(vgg16, painting), _photos(shared, 64, 1), [painting], balance=0.0)
    with pytest.raises(FaststyleError, match="at least one photo"):
        style_pull(_loss(vgg16, painting), [], [painting])
