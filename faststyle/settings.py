"""The settings of a training run, checked when made with the errors the command line gives."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any

from faststyle.compiling import COMPILE_MODES
from faststyle.config import LayerConfig, backbone_for, layer_config
from faststyle.errors import FaststyleError
from faststyle.losses import STYLE_BALANCE, TRAINING_WEIGHTS, blend_weights
from faststyle.lossnets import spec
from faststyle.stability import MARGIN, MAX_SHIFT, STABLE_SIZE


def default_style_size(size: int) -> int:
    """The style image's long side when --style-size is not given: 1.5 times the crop's."""
    return round(1.5 * size)


@dataclass
class TrainSettings:
    """Everything that defines a training run; recorded in the model file. Checked when made, with the errors the
    command line gives. ``styles``: paths (one may be given alone); ``style_weight``: a number, or ``"auto"`` to
    measure it from ``style_balance`` (see ``style_weight_settings``)."""

    styles: list[str]
    backbone: str | None = None  # None: the one ``config`` is for, else vgg16
    config: str | None = None
    style_blend: list[float] | None = None
    style_size: int | None = None
    content_weight: float = TRAINING_WEIGHTS["content_weight"]
    style_weight: float = TRAINING_WEIGHTS["style_weight"]
    # set: style_weight is measured so that style pulls this hard against content (faststyle.balance), not given
    style_balance: float | None = None
    tv_weight: float = TRAINING_WEIGHTS["tv_weight"]
    stability_weight: float = 0.0  # faststyle.stability's term; 0: left out
    lr: float = 1e-3
    steps: int = 40_000
    batch: int = 4
    size: int = 256
    short_side: int | None = None  # photos scaled to this short side before cropping; None: only small ones, up
    width: float = 1.0
    num_residual: int = 5
    pooling: str = "max"
    lossnet_weights: str | None = None
    cache: str | None = None
    seed: int = 0
    channels_last: bool | None = None
    compile: bool | str = False  # True or a mode of faststyle.compiling.COMPILE_MODES
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check every setting, naming it as the command line does, before any work."""
        if isinstance(self.styles, (str, os.PathLike)):
            self.styles = [self.styles]
        self.styles = [str(path) for path in self.styles]
        if not self.styles:
            raise FaststyleError("give at least one style image (styles, --style)")
        if self.style_weight == "auto":
            auto = style_weight_settings("auto")
            self.style_weight = auto["style_weight"]
            self.style_balance = self.style_balance if self.style_balance is not None else auto["style_balance"]
        for name in ("steps", "batch"):
            setattr(self, name, _whole(getattr(self, name), name, 1))
        self.size = _whole(self.size, "size", 16, "too small a crop to train on; give 16 or more (256 is usual)")
        for name in ("style_size", "short_side"):
            if getattr(self, name) is not None:
                setattr(self, name, _whole(getattr(self, name), name, 1))
        self.num_residual = _whole(self.num_residual, "num_residual", 0)
        self.seed = _whole(self.seed, "seed", 0)
        for name in ("content_weight", "style_weight", "tv_weight", "stability_weight"):
            setattr(self, name, _number(getattr(self, name), name, allow_zero=True))
        for name in ("lr", "width"):
            setattr(self, name, _number(getattr(self, name), name, allow_zero=False))
        if self.stability_weight > 0 and self.size < STABLE_SIZE:
            raise FaststyleError(
                f"--stability-weight compares crops moved by up to {MAX_SHIFT} px, {MARGIN} px in from each edge: "
                f"give --size {STABLE_SIZE} or more, not {self.size}"
            )
        if self.style_balance is not None:
            self.style_balance = _number(self.style_balance, "style_balance", allow_zero=False)
            if not self.content_weight > 0:
                raise FaststyleError(
                    "--style-weight auto balances style against content: give --content-weight above 0"
                )
        if self.pooling not in ("max", "avg"):
            raise FaststyleError(f"pooling (--pooling) must be max or avg, not {self.pooling!r}")
        if self.style_blend is not None:
            blend_weights(len(self.styles), self.style_blend)
        if not isinstance(self.compile, bool) and self.compile not in COMPILE_MODES:
            # else only found once the photos and the loss network are loaded, when training starts
            raise FaststyleError(
                f"compile (--compile) {self.compile!r} is not a compile mode ({', '.join(COMPILE_MODES)}); give one "
                "of them, True (default) or False"
            )
        self.backbone = backbone_for(self.backbone, self.config)

    def layer_config(self) -> LayerConfig:
        spec(self.backbone)  # an unknown backbone: the error lists the known ones
        return layer_config(self.backbone, self.config)

    def resolved_style_size(self) -> int:
        return self.style_size or default_style_size(self.size)


def _flag(name: str) -> str:
    """A setting's name, and the command line's option for it where there is one."""
    return name if name in ("style_balance", "num_residual") else f"{name} (--{name.replace('_', '-')})"


def _whole(value: object, name: str, least: int, advice: str | None = None) -> int:
    """``value`` as an int (numpy's too), or an error naming the setting."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise FaststyleError(f"{_flag(name)} must be a whole number, not {value!r}")
    if value < least:
        raise FaststyleError(
            f"{_flag(name)} {value} is {advice}" if advice else f"{_flag(name)} must be {least} or more, not {value}"
        )
    return int(value)


def _number(value: object, name: str, allow_zero: bool) -> float:
    """``value`` as a float (numpy's too), or an error naming the setting."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise FaststyleError(f"{_flag(name)} must be a finite number, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        least = "0 or more" if allow_zero else "above 0"
        raise FaststyleError(f"{_flag(name)} must be {least}, not {value}")
    return float(value)


def style_weight_settings(weight: float | str) -> dict[str, float | None]:
    """TrainSettings' ``style_weight`` and ``style_balance`` for a --style-weight value: a number, or ``"auto"``."""
    if weight == "auto":
        return {"style_weight": TRAINING_WEIGHTS["style_weight"], "style_balance": STYLE_BALANCE}
    return {"style_weight": float(weight), "style_balance": None}
