"""``get_lossnet(name)``: a frozen loss network with its weights, by name."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from faststyle.device import resolve_device
from faststyle.errors import FaststyleError
from faststyle.lossnets.base import LossNet, swap_max_for_avg_pooling
from faststyle.lossnets.weights import cached_path, fetch_weights, load_cached, read_state_dict

log = logging.getLogger("faststyle.lossnets")


@dataclass(frozen=True)
class LossNetSpec:
    name: str
    module: str
    builder: str
    description: str

    def build(self) -> LossNet:
        factory: Callable[[], LossNet] = getattr(importlib.import_module(self.module), self.builder)
        return factory()


SPECS: dict[str, LossNetSpec] = {
    s.name: s
    for s in (
        LossNetSpec("vgg16", "faststyle.lossnets.vgg", "vgg16", "VGG16 (torchvision), conv1_1 … conv5_3"),
        LossNetSpec("vgg19", "faststyle.lossnets.vgg", "vgg19", "VGG19 (torchvision), conv1_1 … conv5_4"),
        LossNetSpec(
            "googlenet",
            "faststyle.lossnets.googlenet",
            "googlenet",
            "BVLC GoogLeNet / Inception v1 (Caffe), conv1/7x7_s2 … inception_5b/output",
        ),
        LossNetSpec("caffenet", "faststyle.lossnets.caffenet", "caffenet", "BVLC CaffeNet (Caffe), conv1 … conv5"),
        LossNetSpec("alexnet", "faststyle.lossnets.alexnet", "AlexNet", "AlexNet (torchvision), conv1 … conv5"),
    )
}


def available_lossnets() -> list[str]:
    return list(SPECS)


def spec(name: str) -> LossNetSpec:
    if name not in SPECS:
        raise FaststyleError(f"unknown loss network {name!r}; choose one of {', '.join(SPECS)}")
    return SPECS[name]


def get_lossnet(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    pooling: str = "max",
    cache: str | os.PathLike[str] | None = None,
    download: bool = True,
    device: torch.device | str | None = None,
) -> LossNet:
    """A frozen, eval-mode loss network taking RGB in [0,1].

    ``weights``: None for the cached file (fetched from the network's sources, in order, if it is missing and
    ``download``),
    a path to a state-dict file, or ``"random"`` (shapes and speed only; never a fallback).
    ``pooling``: ``"max"`` or ``"avg"`` (the max-pooling between stages replaced by average pooling; see
    ``swap_max_for_avg_pooling``).
    """
    if pooling not in ("max", "avg"):
        raise FaststyleError(f"pooling must be 'max' or 'avg', not {pooling!r}")
    net = spec(name).build()
    if weights == "random":
        log.warning("%s uses random weights: fine for shapes and timing, meaningless for pictures", name)
        net.weights_sha256 = "random"
    else:
        if weights is not None:
            from faststyle.images import sha256_file

            state, digest = read_state_dict(weights), sha256_file(weights)
        else:
            if download and not cached_path(name, cache).exists():
                fetch_weights(name, cache=cache)  # a file that is there but altered is refused, never replaced
            state, digest = load_cached(name, cache)
        try:
            net.body.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            where = weights or cached_path(name, cache)
            raise FaststyleError(f"the weights in {where} do not fit {name}: {exc}") from None
        net.weights_sha256 = digest
    if pooling == "avg":
        swap_max_for_avg_pooling(net.body)
    net.pooling = pooling
    net.freeze()
    if device is None:
        return net
    if torch.device(device).type == "cuda":
        resolve_device(device)  # a machine without CUDA gets a message, not torch's error
    return net.to(device)
