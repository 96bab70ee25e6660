"""The frozen loss network every backbone becomes: RGB in [0,1] in, named activations out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from faststyle.errors import FaststyleError


def swap_max_for_avg_pooling(module: nn.Module) -> None:
    """Replace every max-pooling layer by average pooling of the same geometry (as the reference code)."""
    for name, child in module.named_children():
        if isinstance(child, nn.MaxPool2d):
            setattr(
                module,
                name,
                nn.AvgPool2d(
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    ceil_mode=child.ceil_mode,
                    count_include_pad=False,
                ),
            )
        else:
            swap_max_for_avg_pooling(child)


class LossNet(nn.Module):
    """A feed-forward stack ``body`` whose outputs at given positions have Caffe-style names.

    Subclasses build ``body`` (an ``nn.Sequential``), give ``taps`` (layer name -> index in ``body``
    whose output is that layer, post-ReLU for convolutions), ``channels`` (layer name -> channels) and
    ``normalize`` (the network's own input convention). Everything else is shared.
    """

    name: str = ""

    def __init__(
        self, body: nn.Sequential, taps: dict[str, int], channels: dict[str, int], normalize: Normalize
    ) -> None:
        super().__init__()
        self.normalize = normalize
        self.body = body
        self.taps = dict(taps)
        self.channels = dict(channels)
        self.weights_sha256: str | None = None

    @property
    def layer_names(self) -> list[str]:
        """Every layer name this network answers to, shallow to deep."""
        return sorted(self.taps, key=self.taps.__getitem__)

    def preprocess(self, images: Tensor) -> Tensor:
        return self.normalize(images)

    @property
    def pixel_scale(self) -> float:
        """Network input units per unit of a [0,1] pixel: 255 for Caffe's networks, 1/std (≈4.4) for torchvision's."""
        return float(self.normalize.scale / self.normalize.std.mean())

    def check_layers(self, layers: Sequence[str]) -> None:
        unknown = [name for name in layers if name not in self.taps]
        if unknown:
            raise FaststyleError(
                f"{self.name} has no layer {', '.join(map(repr, unknown))}; "
                f"its layers are: {', '.join(self.layer_names)}"
            )

    def forward(self, images: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        """Activations at ``layers`` for RGB images in [0,1] of shape (N,3,H,W); stops at the deepest."""
        self.check_layers(layers)
        if images.ndim != 4 or images.shape[1] != 3:
            raise FaststyleError(f"expected RGB images of shape (N,3,H,W), got {tuple(images.shape)}")
        wanted: dict[int, list[str]] = {}
        for name in layers:
            wanted.setdefault(self.taps[name], []).append(name)
        last = max(wanted)
        out: dict[str, Tensor] = {}
        x = self.preprocess(images)
        for index, module in enumerate(self.body):
            x = module(x)
            for name in wanted.get(index, ()):
                out[name] = x
            if index == last:
                break
        return {name: out[name] for name in layers}

    def freeze(self) -> LossNet:
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> LossNet:
        # A loss network never leaves eval mode (no dropout, no batch-norm statistics).
        return super().train(False)


class Normalize(nn.Module):
    """RGB [0,1] -> the network's input: optional BGR order, scale, mean and std per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], scale: float = 1.0, bgr: bool = False):
        super().__init__()
        self.scale = scale
        self.bgr = bgr
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        if self.bgr:
            images = images.flip(1)
        return (images * self.scale - self.mean.to(images.dtype)) / self.std.to(images.dtype)
