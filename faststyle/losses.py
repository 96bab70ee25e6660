"""Gram matrices, content, style and total-variation losses, and the perceptual loss built from them.

Two normalisations:

- ``"caffe"`` (default; the Gatys reference mode uses it): the reference Caffe code's definitions —
  style per layer ``1/(4·N²·M²)·Σ(G−A)²`` with N channels and M positions, content ``½·Σ(F−P)²``,
  total variation ``Σ`` of squared neighbour differences. The style image's Gram matrix A is either its whole Gram
  matrix (``style_target="whole"``, the reference's: it computes a scale from the content's size over the style
  image's but passes 1), or scaled to the output's M (``"per-position"``, PerceptualLoss's default; the Gatys mode
  defaults to the reference's): a style image larger than the output (the reference's 1.2×) then sets the same
  target per position as one of the output's size.
- ``"mean"`` (feed-forward training uses it): Gram divided by M, style per layer the mean of
  ``(G'−A')²`` — exactly 4 × the caffe style loss, so the documented layer weights keep their meaning —,
  content the mean of ``(F−P)²`` and total variation the mean of squared differences instead of sums. Every
  term is then independent of image size and batch size, so one set of loss weights serves any crop size.
  Features are also measured in torchvision's input units (Caffe networks, fed 0–255 pixels, have theirs
  divided by ~57.6), so the same weights serve every backbone.

Losses of a batch are the mean over its images of each image's loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from faststyle.config import ConfigSpec, LayerConfig, layer_config
from faststyle.errors import FaststyleError
from faststyle.images import unit_range
from faststyle.lossnets.base import LossNet

Normalization = Literal["caffe", "mean"]
# What the painting's Gram matrix A is against the output's: taken per position, or whole as the reference code took
# it (whose 1.2× larger painting thus asks for 1.44 times the positions' worth of each Gram entry)
StyleTarget = Literal["whole", "per-position"]
STYLE_TARGETS: tuple[StyleTarget, ...] = ("whole", "per-position")
# Feed-forward training's default loss weights, under normalization="mean" (README, "Losses").
TRAINING_WEIGHTS = {"content_weight": 1.0, "style_weight": 2.0, "tv_weight": 1.0}
# --style-weight auto's balance of style against content (faststyle.balance): VGG16's at style weight 2 and 256 px,
# the median over the 15 paintings of ../shared (tools/style_balance.py; 0.28 to 1.32 among them).
STYLE_BALANCE = 0.57
# Input units per [0,1] pixel of torchvision's ImageNet networks (1 / mean ImageNet std).
TORCHVISION_PIXEL_SCALE = 3 / (0.229 + 0.224 + 0.225)


def gram_matrix(features: Tensor, normalization: Normalization = "caffe") -> Tensor:
    """(B,N,H,W) -> (B,N,N) Gram matrices ``F·Fᵀ``, divided by M=H·W under ``"mean"``. Float32, also under autocast."""
    b, n, h, w = features.shape
    with torch.autocast(features.device.type, enabled=False):
        if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
            flat = features.permute(0, 2, 3, 1).reshape(b, h * w, n).float()  # (B,M,N): a view of NHWC memory
            gram = torch.bmm(flat.transpose(1, 2), flat)
        else:
            flat = features.reshape(b, n, h * w).float()
            gram = torch.bmm(flat, flat.transpose(1, 2))
    return gram / (h * w) if normalization == "mean" else gram


def style_layer_loss(
    gram: Tensor, target: Tensor, channels: int, positions: int, normalization: Normalization
) -> Tensor:
    """Per-image style loss for one layer, averaged over the batch. ``target`` is (N,N) or (B,N,N)."""
    target = target.expand_as(gram)
    if normalization == "mean":
        return F.mse_loss(gram, target)
    return F.mse_loss(gram, target, reduction="sum") / (4.0 * channels**2 * positions**2 * gram.shape[0])


def content_layer_loss(features: Tensor, target: Tensor, normalization: Normalization = "caffe") -> Tensor:
    features, target = features.float(), target.float().expand_as(features)
    if normalization == "mean":
        return F.mse_loss(features, target)
    return F.mse_loss(features, target, reduction="sum") * (0.5 / features.shape[0])


def tv_loss(images: Tensor, normalization: Normalization = "caffe") -> Tensor:
    """Total variation: squared differences between vertical and horizontal neighbours."""
    dy = (images[..., 1:, :] - images[..., :-1, :]).float().pow(2).flatten(1)
    dx = (images[..., :, 1:] - images[..., :, :-1]).float().pow(2).flatten(1)
    if normalization == "mean":
        return dy.mean(1).mean() + dx.mean(1).mean()
    return dy.sum(1).mean() + dx.sum(1).mean()


def describe_terms(terms: Mapping[str, float]) -> str:
    """The loss terms for people: the weighted total, then the unweighted terms it was made of (those exactly 0 left
    out: a term whose weight is 0 is not computed)."""
    parts = ", ".join(f"{k} {terms[k]:.4g}" for k in ("content", "style", "tv", "stability") if terms.get(k))
    return f"total {terms['total']:.4g} (weighted); unweighted {parts or 'all 0'}"


@dataclass
class LossTerms:
    """The weighted total and every unweighted term, per layer too (for logging)."""

    total: Tensor
    content: Tensor
    style: Tensor
    tv: Tensor
    content_layers: dict[str, Tensor] = field(default_factory=dict)
    style_layers: dict[str, Tensor] = field(default_factory=dict)
    others: dict[str, Tensor] = field(default_factory=dict)  # unweighted terms added to the total by the caller

    def as_tensors(self) -> dict[str, Tensor]:
        """Every term as a float32 scalar still on its device (no host synchronisation). They are copies: the
        terms of a CUDA-graphed loss live in memory that the graph's next replay overwrites."""
        names, values = self.stacked()
        return dict(zip(names, values.unbind(), strict=True))

    def stacked(self) -> tuple[list[str], Tensor]:
        """The names of ``as_tensors`` and their values in one detached float32 vector (one copy, one kernel)."""
        out = {"total": self.total, "content": self.content, "style": self.style, "tv": self.tv}
        out |= {f"content/{k}": v for k, v in self.content_layers.items()}
        out |= {f"style/{k}": v for k, v in self.style_layers.items()}
        out |= self.others
        return list(out), torch.stack(list(out.values())).detach().float()


def blend_weights(count: int, blend: Sequence[float] | None) -> list[float]:
    if blend is None:
        return [1.0 / count] * count
    if len(blend) != count or not all(math.isfinite(w) and w >= 0 for w in blend) or sum(blend) <= 0:
        raise FaststyleError(f"give one non-negative blend weight per style image ({count}), e.g. 0.7,0.3")
    total = float(sum(blend))
    return [w / total for w in blend]


class PerceptualLoss(nn.Module):
    """Content + weighted style + total-variation loss through a frozen loss network.

    Style targets (Gram matrices, blended across style images by weight) are computed once here. Content
    features can be passed precomputed (``content_features``) so a batch's targets are extracted once.
    ``config``: a ``LayerConfig``, a built-in config's name or a YAML file; ``style_images``: (1,3,H,W) images in
    [0,1]. ``normalization``: ``"caffe"`` (Gatys' sums, the reference mode) or ``"mean"`` (training's means).
    """

    def __init__(
        self,
        lossnet: LossNet,
        config: ConfigSpec,
        style_images: Sequence[Tensor] | Tensor,
        style_blend: Sequence[float] | None = None,
        content_weight: float = 1.0,
        style_weight: float = 1e4,
        tv_weight: float = 0.0,
        normalization: Normalization = "caffe",
        style_target: StyleTarget = "per-position",
    ) -> None:
        super().__init__()
        if normalization not in ("caffe", "mean"):
            raise FaststyleError(f"normalization must be 'caffe' or 'mean', not {normalization!r}")
        if style_target not in STYLE_TARGETS or (style_target == "whole" and normalization != "caffe"):
            raise FaststyleError(
                f"style_target must be one of {', '.join(STYLE_TARGETS)} ('whole' under the caffe normalisation "
                f"only), not {style_target!r}"
            )
        self.style_target: StyleTarget = style_target
        if not isinstance(config, LayerConfig):
            config = layer_config(lossnet.name, config)
        if isinstance(style_images, Tensor):
            style_images = list(style_images.split(1)) if style_images.ndim == 4 else [style_images[None]]
        style_images = [unit_range(image, "style image") for image in style_images]
        if config.backbone != lossnet.name:
            raise FaststyleError(
                f"config {config.name!r} is for {config.backbone}, but the loss network is {lossnet.name}"
            )
        if not style_images:
            raise FaststyleError("give at least one style image")
        lossnet.check_layers(config.layers)
        self.lossnet = lossnet
        self.config = config
        self.normalization: Normalization = normalization
        self.content_weight = content_weight
        self.style_weight = style_weight
        self.tv_weight = tv_weight
        self.blend = blend_weights(len(style_images), style_blend)
        self.feature_scale = TORCHVISION_PIXEL_SCALE / lossnet.pixel_scale if normalization == "mean" else 1.0
        for layer, gram in self.style_targets(style_images, self.blend).items():
            self.register_buffer(_buffer(layer), gram, persistent=False)

    @torch.no_grad()
    def style_targets(self, style_images: Sequence[Tensor], blend: Sequence[float]) -> dict[str, Tensor]:
        """The blended target Gram matrix per style layer: per position (Gram / M), so that a larger image does not
        weigh more in a blend, or with ``style_target="whole"`` each image's whole Gram matrix."""
        return {
            layer: sum(gram * weight for gram, weight in zip(grams, blend, strict=True))
            for layer, grams in self.style_grams(style_images, whole=self.style_target == "whole").items()
        }

    @torch.no_grad()
    def style_grams(self, style_images: Sequence[Tensor], whole: bool = False) -> dict[str, list[Tensor]]:
        """Each style image's own Gram matrix per position (Gram / M), or ``whole``, per style layer."""
        layers = list(self.config.style_layers)
        grams: dict[str, list[Tensor]] = {layer: [] for layer in layers}
        for image in style_images:
            feats = self.features(image.to(self.device), layers)
            for layer in layers:
                positions = feats[layer].shape[-2] * feats[layer].shape[-1] if whole else 1
                grams[layer].append(gram_matrix(feats[layer], "mean").mean(0) * positions)
        return grams

    @property
    def device(self) -> torch.device:
        return next(self.lossnet.parameters(), torch.empty(0)).device

    def target_gram(self, layer: str) -> Tensor:
        return getattr(self, _buffer(layer))

    def features(self, images: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        feats = self.lossnet(images, layers)
        if self.feature_scale == 1.0:
            return feats
        return {name: f * self.feature_scale for name, f in feats.items()}

    @torch.no_grad()
    def content_features(self, content: Tensor) -> dict[str, Tensor]:
        return self.features(content, list(self.config.content_layers))

    def forward(
        self,
        output: Tensor,
        content: Tensor | None = None,
        content_features: Mapping[str, Tensor] | None = None,
    ) -> LossTerms:
        if content_features is None:
            if content is None:
                raise ValueError("pass content or content_features")
            content_features = self.content_features(content)
        feats = self.features(output, self.config.layers)
        norm = self.normalization
        content_layers = {
            layer: content_layer_loss(feats[layer], content_features[layer], norm)
            for layer in self.config.content_layers
        }
        style_layers = {layer: self.style_layer(layer, feats[layer]) for layer in self.config.style_layers}
        content_loss = _weighted_sum(content_layers, self.config.content_layers)
        style_loss = _weighted_sum(style_layers, self.config.style_layers)
        total = torch.add(content_loss * self.content_weight, style_loss, alpha=self.style_weight)
        tv = output.new_zeros(())
        if self.tv_weight:
            tv = tv_loss(output, norm)
            total = torch.add(total, tv, alpha=self.tv_weight)
        return LossTerms(total, content_loss, style_loss, tv, content_layers, style_layers)

    def style_layer(self, layer: str, features: Tensor) -> Tensor:
        """One style layer's loss for the output's ``features`` at it."""
        # Per position: the caffe loss Σ(G − A)²/(4N²M²) is Σ(G/M − A/M)²/(4N²), A/M the per-position target
        gram, target = gram_matrix(features, "mean"), self.target_gram(layer)
        if self.style_target == "whole":
            target = target / (features.shape[-2] * features.shape[-1])
        return style_layer_loss(gram, target, features.shape[1], 1, self.normalization)


def _weighted_sum(terms: dict[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    total = None
    for layer, value in terms.items():
        total = value * weights[layer] if total is None else torch.add(total, value, alpha=weights[layer])
    assert total is not None
    return total


def _buffer(layer: str) -> str:
    return "gram_" + layer.replace("/", "__").replace(".", "_")
