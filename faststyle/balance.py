"""The style weight that gives a loss network a set balance of style against content (``--style-weight auto``).

Loss networks weigh style differently: at the same weights, the style loss of AlexNet or GoogLeNet pulls the
pixels far less hard against the content loss than VGG16's does, and by how much depends on the painting. The
balance is measured where both losses pull: at the image halfway between a photo and the painting (cropped to the
photo's shape), as the norm of the style loss's gradient over the content loss's, per photo, the median over a few.
If both losses were quadratic along that line, a balance r would settle the output at r/(1+r) of the way to the
painting. The default, ``STYLE_BALANCE``, is VGG16's at the default style weight 2.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from faststyle.errors import FaststyleError
from faststyle.losses import STYLE_BALANCE, PerceptualLoss

BALANCE_PHOTOS = 8


def fit_to(image: Tensor, height: int, width: int) -> Tensor:
    """``image`` (1,3,h,w) scaled to cover height×width, then centre-cropped to it."""
    h, w = image.shape[-2:]
    scale = max(height / h, width / w)
    resized = TF.resize(image, [max(height, round(h * scale)), max(width, round(w * scale))], antialias=True)
    return TF.center_crop(resized, [height, width])


def style_pull(loss: PerceptualLoss, photos: Sequence[Tensor], styles: Sequence[Tensor]) -> list[float]:
    """Per photo, |∇ style loss| / |∇ content loss| at unit weights, halfway between the photo and the paintings
    (blended by ``loss.blend``). Photos and styles are (1,3,H,W) in [0,1]."""
    if not photos:
        raise FaststyleError("measuring the style balance needs at least one photo")
    device = loss.device
    ratios = []
    for photo in photos:
        photo = photo.to(device, torch.float32)
        h, w = photo.shape[-2:]
        painting = sum(b * fit_to(s.to(device, torch.float32), h, w) for s, b in zip(styles, loss.blend, strict=True))
        midpoint = (0.5 * photo + 0.5 * painting).requires_grad_(True)
        terms = loss(midpoint, photo)
        content_grad, style_grad = (
            torch.autograd.grad(term, midpoint, retain_graph=True)[0] for term in (terms.content, terms.style)
        )
        ratios.append(float(style_grad.norm() / content_grad.norm().clamp_min(1e-30)))
    return ratios


def balanced_style_weight(
    loss: PerceptualLoss, photos: Sequence[Tensor], styles: Sequence[Tensor], balance: float = STYLE_BALANCE
) -> tuple[float, float]:
    """(style weight, median pull at unit weights): the style weight whose pull is ``balance`` times the weighted
    content loss's, given ``loss.content_weight``."""
    if not balance > 0:
        raise FaststyleError(f"the style balance must be positive, not {balance}")
    if not loss.content_weight > 0:
        raise FaststyleError("--style-weight auto balances style against content: give --content-weight above 0")
    median = statistics.median(style_pull(loss, photos, styles))
    if not median > 0:
        raise FaststyleError("the style loss does not pull at all at these photos; give --style-weight as a number")
    return balance * loss.content_weight / median, median
