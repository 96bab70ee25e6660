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
from faststyle.lossnets.weights import StateDict, cached_path, fetch_weights, load_cached, read_state_dict

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


def fitted_state(net: LossNet, name: str, state: StateDict, where: object) -> StateDict:
    """``state`` loaded into ``net.body`` and returned in its keys. Besides faststyle's own keys (``0.weight``, as
    the cache holds them) it takes a whole torchvision model's (``features.0.weight``; the classifier is left out)
    and, for the Caffe networks, Caffe's layer names (``conv1/7x7_s2.weight``, or with ``_`` for ``/``). Weights that
    do not fit are a FaststyleError naming ``where``."""
    from faststyle.lossnets.caffe import caffejs_convs

    expected = set(net.body.state_dict())
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    caffe_names = {
        f"{alias}.{blob}": f"{prefix}.0.{blob}"
        for prefix, conv in caffejs_convs(net.body).items()
        for alias in {conv.caffe_name, conv.caffe_name.replace("/", "_")}
        for blob in ("weight", "bias")
    }
    by_caffe_name = {caffe_names[k]: v for k, v in state.items() if k in caffe_names}
    chosen = next((c for c in (state, features, by_caffe_name) if set(c) == expected), state)
    integer = [k for k, v in chosen.items() if not v.is_floating_point()]
    if integer:
        raise FaststyleError(
            f"the weights in {where} are not floating point ({integer[0]} is {chosen[integer[0]].dtype}): they would "
            f"load as whole numbers; give {name}'s trained float weights"
        )
    broken = [k for k, v in chosen.items() if not torch.isfinite(v).all()]
    if broken:
        raise FaststyleError(
            f"the weights in {where} hold NaN or infinite values ({', '.join(broken[:3])}): the file is damaged, or "
            "was saved from a training that diverged"
        )
    try:
        net.body.load_state_dict(chosen, strict=True)
    except RuntimeError as exc:
        layouts = "faststyle's own (as `faststyle weights get` writes them), a torchvision model's (features.*)"
        if caffe_names:
            layouts += ", Caffe layer names (" + ", ".join(list(caffe_names)[:2]) + ", …)"
        raise FaststyleError(f"the weights in {where} do not fit {name}: {exc}\nkeys taken: {layouts}") from None
    return dict(chosen)


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

            weights = os.path.expanduser(weights)
            state, digest = read_state_dict(weights), sha256_file(weights)
        else:
            if download and not cached_path(name, cache).exists():
                fetch_weights(name, cache=cache)  # a file that is there but altered is refused, never replaced
            state, digest = load_cached(name, cache)
        fitted_state(net, name, state, weights or cached_path(name, cache))
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
