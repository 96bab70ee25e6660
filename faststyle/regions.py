"""Spatial control of style (Gatys et al., "Controlling Perceptual Factors in Neural Style Transfer", CVPR 2017):
each style image paints only where its mask, in the content's frame, says.

Each region's Gram matrix is taken of the features weighted by its mask (scaled down to each layer's size by area
averaging) and divided by the mask's weight, so it is a Gram matrix per covered position, matched against its style
image's own. A region's loss counts by the share of the image it covers: one style with a mask of ones is exactly the
unguided loss, and regions that split the image split its style loss. Pixels no mask covers keep only the content
loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from faststyle.config import ConfigSpec
from faststyle.errors import FaststyleError
from faststyle.images import as_mask
from faststyle.losses import Normalization, PerceptualLoss, gram_matrix, style_layer_loss
from faststyle.lossnets.base import LossNet


class RegionStyleLoss(PerceptualLoss):
    """``PerceptualLoss`` with one region per style image: ``masks[i]`` (1,1,H,W) in [0,1], at the size of the images
    the loss will see, says where ``style_images[i]`` paints. The masks are scaled to each style layer once, here,
    so that an evaluation waits for no value of the device and compiles as one graph."""

    def __init__(
        self,
        lossnet: LossNet,
        config: ConfigSpec,
        style_images: Sequence[Tensor],
        masks: Sequence[Tensor],
        content_weight: float = 1.0,
        style_weight: float = 1e4,
        tv_weight: float = 0.0,
        normalization: Normalization = "caffe",
    ) -> None:
        if len(masks) != len(style_images):
            raise FaststyleError(f"give one mask per style image: {len(style_images)} styles, {len(masks)} masks")
        super().__init__(
            lossnet,
            config,
            list(style_images),
            content_weight=content_weight,
            style_weight=style_weight,
            tv_weight=tv_weight,
            normalization=normalization,
        )
        checked = [as_mask(m, f"mask {i + 1}") for i, m in enumerate(masks)]
        if len({tuple(m.shape[-2:]) for m in checked}) > 1:
            sizes = ", ".join("x".join(map(str, m.shape[:-3:-1])) for m in checked)
            raise FaststyleError(f"the masks must have one size, that of the images the loss sees; got {sizes}")
        self.masks = torch.cat(checked).to(self.device)
        with torch.no_grad():
            probe = torch.zeros(1, 3, *self.masks.shape[-2:], device=self.device)
            sizes = {
                layer: tuple(f.shape[-2:]) for layer, f in self.features(probe, list(self.config.style_layers)).items()
            }
        self.regions = {layer: self._regions_at(size) for layer, size in sizes.items()}

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> RegionStyleLoss:
        """``to``, ``cuda``, ``half`` …: the masks at every layer go where the network and the targets go."""
        super()._apply(fn, recurse)
        if "regions" not in self.__dict__:  # while PerceptualLoss is being made
            return self
        self.masks = fn(self.masks)
        self.regions = {
            layer: [(i, fn(mask), share, per_covered) for i, mask, share, per_covered in regions]
            for layer, regions in self.regions.items()
        }
        return self

    @torch.no_grad()
    def style_targets(self, style_images: Sequence[Tensor], blend: Sequence[float]) -> dict[str, Tensor]:
        """Each style image's own Gram matrix per position, stacked (S,N,N) per layer: not blended."""
        return {layer: torch.stack(grams) for layer, grams in self.style_grams(style_images).items()}

    def _regions_at(self, size: tuple[int, int]) -> list[tuple[int, Tensor, float, float]]:
        """Per region that reaches a layer of this size: its index, its mask there (1,1,h,w; area-averaged), the
        share of the layer it covers and the factor from a Gram per position to one per covered position."""
        (h, w), (mh, mw) = size, self.masks.shape[-2:]
        masks = F.interpolate(self.masks, size=size, mode="area" if h <= mh and w <= mw else "bilinear").clamp(0, 1)
        weights = masks.square().sum((1, 2, 3)).tolist()
        return [
            (i, masks[i : i + 1], weight / (h * w), h * w / weight) for i, weight in enumerate(weights) if weight > 0
        ]

    def style_layer(self, layer: str, features: Tensor) -> Tensor:
        regions = self.regions[layer]
        if regions and regions[0][1].shape[-2:] != features.shape[-2:]:
            h, w = self.masks.shape[-2:]
            raise FaststyleError(f"the masks are for {w}x{h} images; scale them to the output's size")
        targets = self.target_gram(layer)
        loss = features.new_zeros((), dtype=torch.float32)
        for region, mask, share, per_covered in regions:
            gram = gram_matrix(features * mask.to(features.dtype), "mean") * per_covered
            loss = loss + share * style_layer_loss(gram, targets[region], features.shape[1], 1, self.normalization)
        return loss
