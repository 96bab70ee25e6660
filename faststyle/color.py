"""Colour spaces for style transfer: full-range YCbCr (ITU-R BT.601, as in JPEG) and colour preservation.

All tensors are (N,3,H,W) floats; RGB in [0,1], and Y, Cb, Cr in [0,1] with neutral chroma at 0.5.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from faststyle.errors import FaststyleError

KR, KG, KB = 0.299, 0.587, 0.114

_RGB_TO_YCBCR = torch.tensor(
    [
        [KR, KG, KB],
        [-KR / (2 * (1 - KB)), -KG / (2 * (1 - KB)), 0.5],
        [0.5, -KG / (2 * (1 - KR)), -KB / (2 * (1 - KR))],
    ],
    dtype=torch.float64,
)
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR)
_OFFSET = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)


def _check(images: Tensor, what: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise FaststyleError(f"{what}: expected images of shape (N,3,H,W), got {tuple(images.shape)}")


def _apply(matrix: Tensor, images: Tensor) -> Tensor:
    m = matrix.to(device=images.device, dtype=images.dtype)
    return torch.einsum("ij,njhw->nihw", m, images)


def rgb_to_ycbcr(images: Tensor) -> Tensor:
    """RGB in [0,1] -> YCbCr in [0,1] (BT.601 full range)."""
    _check(images, "rgb_to_ycbcr")
    offset = _OFFSET.to(device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return _apply(_RGB_TO_YCBCR, images) + offset


def ycbcr_to_rgb(images: Tensor) -> Tensor:
    """YCbCr in [0,1] (BT.601 full range) -> RGB; not clamped, since a Y/CbCr mix can leave the RGB cube."""
    _check(images, "ycbcr_to_rgb")
    offset = _OFFSET.to(device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return _apply(_YCBCR_TO_RGB, images - offset)


def _luma(images: Tensor) -> Tensor:
    """(N,1,H,W): Y of RGB images."""
    return rgb_to_ycbcr(images)[:, :1]


def grey(images: Tensor) -> Tensor:
    """Each image's luminance Y in all three channels (R = G = B = Y)."""
    _check(images, "grey")
    return _luma(images).expand(-1, 3, -1, -1).contiguous()


def match_luminance(style: Tensor, content: Tensor) -> Tensor:
    """``grey(style)`` with its luminance shifted and scaled to the mean and standard deviation of the content's, as
    in Gatys et al.'s luminance-only transfer (2016), clamped to [0,1]."""
    style_y, content_y = _luma(style), _luma(content)
    # the spread of the pixels themselves (not an estimate from a sample): a one-pixel image has none, not NaN
    s_std, s_mean = torch.std_mean(style_y, dim=(1, 2, 3), keepdim=True, correction=0)
    c_std, c_mean = torch.std_mean(content_y, dim=(1, 2, 3), keepdim=True, correction=0)
    matched = (style_y - s_mean) * (c_std / s_std.clamp_min(1e-6)) + c_mean
    return matched.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def preserve_color(stylized: Tensor, content: Tensor) -> Tensor:
    """The stylized image's luminance with the content's chroma, clamped to [0,1].

    ``content`` is resized to the stylized image's size when they differ; it holds one image or as many
    as ``stylized``.
    """
    _check(stylized, "preserve_color")
    _check(content, "preserve_color")
    if content.shape[0] not in (1, stylized.shape[0]):
        raise FaststyleError(
            f"preserve_color: {content.shape[0]} content images for {stylized.shape[0]} stylized images"
        )
    content = content.to(device=stylized.device)
    size = tuple(stylized.shape[-2:])
    if tuple(content.shape[-2:]) != size:
        shrink = content.shape[-2] > size[0] or content.shape[-1] > size[1]
        # in float32 (antialiased resizing has no half-precision CPU kernel), then in the stylized image's type
        content = F.interpolate(content.float(), size=size, mode="bilinear", antialias=shrink, align_corners=False)
    content = content.to(stylized.dtype)
    luma = _luma(stylized)
    chroma = rgb_to_ycbcr(content)[:, 1:].expand(stylized.shape[0], -1, -1, -1)
    return ycbcr_to_rgb(torch.cat([luma, chroma], 1)).clamp(0, 1)
