"""Frozen ImageNet loss networks: ``get_lossnet(name)(images, layers) -> {layer: activation}``."""

from faststyle.lossnets.base import LossNet
from faststyle.lossnets.registry import available_lossnets, get_lossnet, spec

__all__ = ["LossNet", "available_lossnets", "get_lossnet", "spec"]
