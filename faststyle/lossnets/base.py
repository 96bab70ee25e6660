"""The frozen loss network every backbone becomes: RGB in [0,1] in, named activations out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from faststyle.errors import FaststyleError


def swap_max_for_avg_pooling(body: nn.Sequential) -> None:
    """Replace the max-pooling between the stages of ``body`` by average pooling of the same geometry, as Gatys et
    al. did in VGG. Pooling inside a block (an inception module's 3×3 stride-1 branch) stays max: the 1×1
    projection after it was trained on max-pooled inputs, and averaging there changed ``inception_4a`` and
    ``inception_5a`` by a further 40% (relative L2) beyond the swap between stages."""
    for name, child in body.named_children():
        if isinstance(child, nn.MaxPool2d):
            average = nn.AvgPool2d(
                child.kernel_size, child.stride, child.padding, ceil_mode=child.ceil_mode, count_include_pad=False
            )
            setattr(body, name, average)


# What torch says when an input is too small for a layer (pooling; convolution; reflection padding)
_TOO_SMALL = ("Output size is too small", "Kernel size can't be greater than", "should be less than the corresponding")


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
        self._min_sides: dict[int, int] = {}

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

    def min_side(self, layers: Sequence[str]) -> int:
        """The smallest image side, in pixels, whose activations at every one of ``layers`` are still at least 1×1."""
        self.check_layers(layers)
        last = max(self.taps[name] for name in layers)
        if last not in self._min_sides:
            self._min_sides[last] = self._probe_min_side(last)
        return self._min_sides[last]

    def check_size(self, height: int, width: int, layers: Sequence[str], what: str, fix: str) -> None:
        """Raise a FaststyleError naming ``what`` and how to ``fix`` it when the image is too small for ``layers``."""
        need = self.min_side(layers)
        if min(height, width) < need:
            deepest = max(layers, key=self.taps.__getitem__)
            raise FaststyleError(
                f"{what} is {width}x{height} pixels: {self.name} needs at least {need} pixels a side to reach its "
                f"layer {deepest}; {fix}"
            )

    @torch.no_grad()
    def _probe_min_side(self, last: int) -> int:
        param = next(self.parameters(), None)
        device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)

        def fits(side: int) -> bool:
            x = torch.zeros(1, 3, side, side, device=device, dtype=dtype)
            try:
                for module in self.body[: last + 1]:
                    x = module(x)
            except RuntimeError:
                return False
            return x.shape[-1] >= 1 and x.shape[-2] >= 1

        high = 1
        while not fits(high):
            if high >= 4096:
                raise FaststyleError(f"{self.name}: no input size up to 4096 pixels reaches layer index {last}")
            high *= 2
        low = high // 2  # does not fit (or is 0)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (low, middle) if fits(middle) else (middle, high)
        return high

    def forward(self, images: Tensor, layers: Sequence[str] | str) -> dict[str, Tensor]:
        """Activations at ``layers`` (names, or one name) for RGB images of shape (N,3,H,W), float in [0,1] or
        uint8; stops at the deepest. The input is cast to the network's dtype (autocast still applies)."""
        layers = [layers] if isinstance(layers, str) else list(layers)
        if not layers:
            raise FaststyleError(f"name at least one layer of {self.name}: {', '.join(self.layer_names)}")
        self.check_layers(layers)
        if images.ndim != 4 or images.shape[1] != 3:
            raise FaststyleError(f"expected RGB images of shape (N,3,H,W), got {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        param = next(self.parameters(), None)
        if param is not None and images.dtype != param.dtype:
            images = images.to(param.dtype)
        wanted: dict[int, list[str]] = {}
        for name in layers:
            wanted.setdefault(self.taps[name], []).append(name)
        last = max(wanted)
        out: dict[str, Tensor] = {}
        x = self.preprocess(images)
        for index, module in enumerate(self.body):
            try:
                x = module(x)
            except RuntimeError as exc:
                if any(words in str(exc) for words in _TOO_SMALL):
                    self.check_size(*images.shape[-2:], layers, "the image", "give larger images")
                raise
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
