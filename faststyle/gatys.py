"""The Gatys et al. reference mode: optimise the pixels of one image against a content and a style image.

Defaults follow the reference Caffe code: post-ReLU features, the Caffe loss normalisation (``PerceptualLoss``
with ``normalization="caffe"``), content weight 1 and style weight ``ratio``, L-BFGS with a history of 8,
initialisation from the content, and the style image scaled to 1.2 × the content's long side, its whole Gram
matrix the target (``style_target="whole"``; "per-position" takes it per position instead, so that the larger
painting asks for no more of each Gram entry than one of the output's size).

Pixels stay in [0,1] as the reference code kept them with L-BFGS-B: L-BFGS works on the box
(``faststyle.boxlbfgs``: projected steps, the pixels held at black or white by their gradient left out of the
direction); Adam steps the pixels and clamps them. An iteration is one optimiser step; its history entry holds the
loss terms of the image after that step.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import numbers
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch
from torch import Tensor
from tqdm.auto import tqdm

from faststyle.boxlbfgs import BoxLBFGS
from faststyle.color import grey, match_luminance
from faststyle.color import preserve_color as _preserve_color
from faststyle.compiling import compiler
from faststyle.config import LayerConfig, backbone_for, layer_config
from faststyle.device import resolve_device
from faststyle.errors import FaststyleError
from faststyle.images import as_mask, resize_long_side, unit_range
from faststyle.losses import STYLE_TARGETS, PerceptualLoss, StyleTarget
from faststyle.lossnets.base import LossNet
from faststyle.lossnets.registry import get_lossnet
from faststyle.regions import RegionStyleLoss

log = logging.getLogger(__name__)

# Bumped when the same arguments give another image, so that caches (faststyle compare) do not serve the old one
# (2: the painting's Gram matrix per position, L-BFGS on the box instead of on a sigmoid of the pixels; 3: its first
# step 30 times as long; 4: the painting's whole Gram matrix by default, as the reference took it).
VERSION = 4
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "mixed")
PRECISIONS = ("fp32", "bf16", "fp16")
LBFGS_HISTORY = 8
LBFGS_LINE_SEARCH = "backtracking"  # along the projected path, until the Armijo condition holds
LBFGS_MAX_LINE_SEARCH = 25  # evaluations per iteration at most
MIXED_NOISE = 0.1  # share of uniform noise in the "mixed" initialisation

Callback = Callable[[int, Tensor, dict[str, float]], None]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or another ``KeyboardInterrupt``, ``reason``) during ``stylize``'s iterations, with the picture as the
    last finished iteration left it (``image``, as ``stylize`` would have returned it, at the scale then running or
    the previous one) and those iterations' ``history``."""

    def __init__(self, image: Tensor, history: list[dict[str, float]], reason: KeyboardInterrupt) -> None:
        super().__init__(f"interrupted after {len(history)} iterations")
        self.image, self.history, self.reason = image, history, reason


class _Stopped(KeyboardInterrupt):
    def __init__(self, image: Tensor | None, reason: KeyboardInterrupt) -> None:
        super().__init__()
        self.image, self.reason = image, reason


def caffe_pixel_scale(net: LossNet) -> float:
    """How many times larger the reference Caffe input (0–255 pixels) is than this network's input.

    1 for the Caffe networks; about 57 for torchvision's, which divide [0,1] pixels by the ImageNet std.
    """
    return 255.0 / net.pixel_scale


def _one_image(image: Tensor, what: str) -> Tensor:
    if not isinstance(image, Tensor):
        raise FaststyleError(f"{what} must be an image tensor (1,3,H,W) in [0,1]; load files with load_image")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise FaststyleError(f"{what}: expected one RGB image of shape (1,3,H,W), got {tuple(image.shape)}")
    return unit_range(image.detach(), what).float()


def _choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise FaststyleError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _positive(value: float, what: str, integer: bool = False) -> None:
    ok = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    if not ok or not value > 0 or not math.isfinite(value):
        raise FaststyleError(f"{what} must be a positive {'whole ' if integer else ''}number, not {value!r}")


def _warn_if_stretched(image: Tensor, content: Tensor, what: str) -> None:
    (ih, iw), (ch, cw) = image.shape[-2:], content.shape[-2:]
    if abs(math.log((iw / ih) / (cw / ch))) > 0.02:
        log.warning("%s (%dx%d) is stretched to the content's shape (%dx%d)", what, iw, ih, cw, ch)


def _resized(image: Tensor, size: Sequence[int]) -> Tensor:
    return torch.nn.functional.interpolate(
        image, size=tuple(size), mode="bilinear", antialias=True, align_corners=False
    ).clamp(0, 1)


def _initial(content: Tensor, init: str | Tensor, generator: torch.Generator) -> Tensor:
    if isinstance(init, Tensor):
        return _resized(init.to(content.device), content.shape[-2:])
    if init == "content":
        return content.clone()
    noise = torch.rand(content.shape, generator=generator).to(content.device)
    return noise if init == "noise" else (1 - MIXED_NOISE) * content + MIXED_NOISE * noise


class _Objective:
    """The loss at the current variable, evaluated once per distinct value of it.

    ``render`` maps the optimised variable to the image. The iteration loop asks for the loss terms of the point an
    L-BFGS step ended on, which its line search has already evaluated: the latest evaluations (gradient and loss
    terms) are remembered by the variable's version counter, which every in-place change of it advances, and given
    back instead of running the network again. Unlike comparing the values, that costs no kernel and no
    synchronisation with the device. (Fused Adam does not advance the counter: the Adam path uses the plain one and
    clamps the pixels in place after each step.)
    """

    REMEMBERED = 4

    def __init__(
        self,
        loss: PerceptualLoss,
        variable: Tensor,
        render: Callable[[Tensor], Tensor],
        content_features: dict[str, Tensor],
        amp: Callable[[], AbstractContextManager[object]],
        memory_format: torch.memory_format = torch.contiguous_format,
        compile: bool | str = False,
        scaled: bool = False,
    ) -> None:
        """``scaled``: backpropagate a scaled loss, for fp16, whose range the Gatys loss's gradients overflow."""
        self.loss = compiler(compile)(loss)
        self.headroom: float | None = 2.0**16 if scaled else None
        self.amp = amp
        self.memory_format = memory_format
        self.variable = variable
        self.render = render
        self.content_features = content_features
        # version of the variable -> (gradient, names and values of the loss terms); the values are a copy, safe
        # from CUDA-graph replays
        self.recent: dict[int, tuple[Tensor, list[str], Tensor]] = {}
        self.evaluations = 0

    def __call__(self) -> Tensor:
        known = self.recent.get(self.variable._version)
        if known is not None:
            self.variable.grad = known[0].clone()
            return known[2][0]
        while True:
            self.variable.grad = None
            image = self.render(self.variable).contiguous(memory_format=self.memory_format)
            with self.amp():
                terms = self.loss(image, content_features=self.content_features)
            if self.headroom is None:
                terms.total.backward()
                break
            # fp16 gradients overflow at this loss's magnitude (~1e8): backpropagate the loss scaled to the headroom,
            # unscale the gradient in fp32, and lower the headroom for as long as the gradient overflows.
            factor = self.headroom / terms.total.detach().clamp_min(1e-30)
            (terms.total * factor).backward()
            assert self.variable.grad is not None
            self.variable.grad /= factor
            if self.headroom < 1 or bool(torch.isfinite(self.variable.grad).all()):
                break
            self.headroom /= 16
        assert self.variable.grad is not None
        names, values = terms.stacked()
        if len(self.recent) >= self.REMEMBERED:
            del self.recent[next(iter(self.recent))]
        # a copy: a CUDA-graphed backward's next replay overwrites the memory of its output
        self.recent[self.variable._version] = (self.variable.grad.detach().clone(), names, values)
        self.evaluations += 1
        return values[0]

    def current(self) -> dict[str, float]:
        """The loss terms at the variable's current value: one transfer from the device."""
        known = self.recent.get(self.variable._version)
        if known is None:
            self()
            known = self.recent[self.variable._version]
        return dict(zip(known[1], known[2].tolist(), strict=True))


def _optimizer(name: str, pixels: Tensor, lr: float | None, line_search: str | None) -> torch.optim.Adam | BoxLBFGS:
    if name == "adam":
        return torch.optim.Adam([pixels], lr=0.02 if lr is None else lr)
    return BoxLBFGS(
        pixels,
        history=LBFGS_HISTORY,
        lr=1.0 if lr is None else lr,
        line_search=line_search is not None,
        max_evaluations=LBFGS_MAX_LINE_SEARCH,
    )


def stylize(
    content: Tensor,
    style: Tensor | Sequence[Tensor],
    *,
    backbone: str | None = None,
    config: LayerConfig | str | os.PathLike[str] | None = None,
    lossnet: LossNet | None = None,
    style_blend: Sequence[float] | None = None,
    masks: Sequence[Tensor] | None = None,
    size: int = 512,
    iters: int = 500,
    optimizer: str = "lbfgs",
    init: str | Tensor = "content",
    ratio: float = 1e4,
    tv_weight: float = 0.0,
    style_scale: float = 1.2,
    style_target: StyleTarget = "whole",
    preserve_color: bool = False,
    multiscale: Sequence[int] | None = None,
    lr: float | None = None,
    pooling: str = "max",
    device: torch.device | str | None = None,
    precision: str = "fp32",
    seed: int = 0,
    callback: Callback | None = None,
    progress: bool = True,
    weights: str | os.PathLike[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    line_search: str | None = LBFGS_LINE_SEARCH,
    caffe_units: bool = True,
    channels_last: bool | None = None,
    compile: bool | str = False,
) -> tuple[Tensor, list[dict[str, float]]]:
    """Stylize ``content`` with the style of ``style`` (one image or several, mixed by ``style_blend``).

    ``content`` and each style: RGB (1,3,H,W) in [0,1], any size. ``size``: the long side of the output
    (ignored when ``multiscale`` lists the long sides to run in turn, each started from the previous result
    upsampled, ``iters`` iterations each). ``ratio``: style weight against content weight 1 (see
    ``caffe_units``). ``optimizer``: ``"lbfgs"`` (on the box [0,1]; ``lr`` is its step size, default 1;
    ``line_search`` ``"backtracking"``, or None to take every step unchecked) or ``"adam"`` (``lr`` default 0.02
    per [0,1] pixel). ``init``: ``"content"``, ``"noise"`` (uniform), ``"mixed"`` (content with 10 % noise), or an
    image (1,3,H,W) in [0,1] scaled to the (first) scale's size, such as a trained model's painting of the content,
    which the optimisation then refines; ``seed`` seeds the noise.
    ``caffe_units``: ``ratio`` is meant for the reference's 0–255 input, as for the Caffe networks; features of a
    network fed smaller numbers are smaller by a factor k (k ≈ 57 for torchvision's VGG and AlexNet), which
    scales content by k² and style by k⁴, so the style weight becomes ``ratio · k²`` (see ``caffe_pixel_scale``).
    ``tv_weight`` weighs the total variation of the picture in 0–255 pixels in the same units: one value smooths
    alike whatever the network's input convention (without ``caffe_units``, that of [0,1] pixels, unscaled).
    ``precision``: ``"bf16"``/``"fp16"`` run the loss network under autocast; pixels and optimiser stay fp32.
    ``channels_last`` (default: on CUDA) keeps the loss network and its input in the NHWC layout that cuDNN's
    fastest convolutions use; the optimised pixels stay NCHW, as L-BFGS flattens them. ``compile``: True or a
    ``faststyle.compiling.COMPILE_MODES`` mode compiles the loss (once per scale; "reduce-overhead" adds CUDA
    graphs, which remove the launch cost of the loss network's many small kernels).
    ``style_target``: ``"whole"``, the style image's whole Gram matrix as the reference took it (1.44 times the
    positions of the output's at the default ``style_scale``, so asking for that much more of each Gram entry), or
    ``"per-position"``, scaled to the output's number of positions (used with ``masks`` in any case).
    ``masks``: one per style image, (1,1,H,W) in [0,1] in the content's frame (an RGB image is taken by its mean):
    each style paints only where its mask is (Gatys et al.'s spatial control, 2017; ``faststyle.regions``), in place
    of ``style_blend``; where no mask is, only the content loss acts.
    ``lossnet`` reuses a loaded network (``backbone``, ``pooling``, ``weights`` and ``cache`` are then unused);
    otherwise ``get_lossnet(backbone, weights, pooling, cache)`` loads one, ``backbone`` defaulting to the one
    ``config`` is for, else VGG16.
    ``preserve_color``: Gatys et al.'s luminance-only transfer (2016): a grey image is optimised against the content's
    luminance and the style's, matched to the content's mean and spread, and the result gets the content's chroma.
    ``callback(iteration, image, terms)`` is called after every iteration (1-based, counted across scales) with the
    image as it would be returned.

    Returns the image (1,3,H,W) in [0,1] on the device used, and one dict of loss terms per iteration
    (``iteration``, ``scale``, ``evaluations`` (loss-network passes so far), ``seconds`` (since the optimisation
    began, the loss network loaded: the style targets and the iterations), ``total``, ``content``, ``style``,
    ``tv``, ``content/<layer>``, ``style/<layer>``; content and style terms unweighted, ``total`` weighted).
    The returned image's losses are the last entry's; with ``preserve_color`` they are the grey image's, before the
    content's chroma is added.
    """
    _positive(iters, "iters", integer=True)
    _positive(size, "size", integer=True)
    _choice(optimizer, OPTIMIZERS, "optimizer")
    if isinstance(init, Tensor):
        init = _one_image(init, "init")
    else:
        _choice(init, INITS, "init")
    _choice(precision, PRECISIONS, "precision")
    _choice(pooling, ("max", "avg"), "pooling")
    _positive(style_scale, "style_scale")
    _choice(style_target, STYLE_TARGETS, "style_target")
    if lr is not None:
        _positive(lr, "lr")
    for value, what in ((ratio, "ratio"), (tv_weight, "tv_weight")):
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
            raise FaststyleError(f"{what} must be a finite number of 0 or more, not {value!r}")
    if not (isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and -(2**63) <= seed < 2**64):
        # torch.Generator's range: a larger seed crashed after the loss network had loaded
        raise FaststyleError(f"seed must be a whole number from {-(2**63)} to {2**64 - 1}, not {seed!r}")
    if line_search not in (None, LBFGS_LINE_SEARCH):
        raise FaststyleError(f"line_search must be None or {LBFGS_LINE_SEARCH!r}, not {line_search!r}")
    if multiscale is not None:
        if len(multiscale) == 0:
            raise FaststyleError("multiscale needs at least one size, e.g. 256,512")
        for s in multiscale:
            _positive(s, "every multiscale size", integer=True)
    scales = sorted(set(multiscale)) if multiscale else [size]  # coarse to fine, each size once
    content = _one_image(content, "content")
    if isinstance(init, Tensor):
        _warn_if_stretched(init, content, "the initial image")
    styles = [_one_image(s, "style") for s in ([style] if isinstance(style, Tensor) else style)]
    if not styles:
        raise FaststyleError("give at least one style image")
    if masks is not None:
        if style_blend is not None:
            raise FaststyleError("masks say where each style paints; give them or a style blend, not both")
        if len(masks) != len(styles):
            raise FaststyleError(f"give one mask per style image: {len(styles)} styles, {len(masks)} masks")
        masks = [as_mask(m, f"mask {i + 1}") for i, m in enumerate(masks)]
        for mask in masks:
            _warn_if_stretched(mask, content, "a mask")

    device = resolve_device(device)
    if precision == "fp16" and device.type == "cpu":
        raise FaststyleError("fp16 needs CUDA; use --precision bf16 or fp32 on the CPU")
    if channels_last is None:
        channels_last = device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if lossnet is None:
        backbone = backbone_for(backbone, config)
        lossnet = get_lossnet(backbone, weights=weights, pooling=pooling, cache=cache, device=device)
    lossnet = lossnet.to(device, memory_format=memory_format)
    config = layer_config(lossnet.name, config)
    style_weight = ratio * caffe_pixel_scale(lossnet) ** 2 if caffe_units else ratio
    tv_weight = tv_weight * lossnet.pixel_scale**2 if caffe_units else tv_weight  # of 0–255 pixels in those units

    generator = torch.Generator().manual_seed(seed)
    content = content.to(device)
    styles = [s.to(device) for s in styles]
    original = content
    if preserve_color:
        # luminance-only transfer: optimise a grey image against the luminances, then add the content's chroma
        styles = [match_luminance(s, content) for s in styles]
        content = grey(content)
        if isinstance(init, Tensor):
            init = grey(init)
        if callback is not None:
            callback = functools.partial(_in_content_colours, callback, original)
    history: list[dict[str, float]] = []
    image: Tensor | None = None
    # Reduced precision covers the loss network only: Gram matrices and losses stay float32 (faststyle.losses),
    # and so do the pixels and the optimiser, which run outside the autocast region.
    amp = (
        contextlib.nullcontext
        if precision == "fp32"
        else functools.partial(torch.autocast, device.type, dtype=_DTYPES[precision])
    )
    bar = tqdm(total=iters * len(scales), disable=not progress, desc="gatys", unit="it", leave=False)
    begun = time.perf_counter()
    try:
        for scale in scales:
            target = resize_long_side(content, scale)
            style_size = max(1, round(style_scale * scale))
            scaled_styles = [resize_long_side(s, style_size) for s in styles]
            too_small = "raise --size (or the smallest --multiscale size)"
            lossnet.check_size(*target.shape[-2:], config.layers, "the content at this scale", too_small)
            for s in scaled_styles:
                lossnet.check_size(*s.shape[-2:], config.style_layers, "the scaled style image", "raise --style-scale")
            weights = {"content_weight": 1.0, "style_weight": style_weight, "tv_weight": tv_weight}
            with amp():
                if masks is None:
                    loss = PerceptualLoss(
                        lossnet,
                        config,
                        scaled_styles,
                        style_blend=style_blend,
                        normalization="caffe",
                        style_target=style_target,
                        **weights,
                    )
                else:
                    at_scale = [_resized(mask, target.shape[-2:]) for mask in masks]
                    loss = RegionStyleLoss(lossnet, config, scaled_styles, at_scale, normalization="caffe", **weights)
            if image is None:
                start = _initial(target, init, generator)
            else:
                start = torch.nn.functional.interpolate(
                    image, size=target.shape[-2:], mode="bilinear", align_corners=False
                ).clamp(0, 1)
            image = _optimise(
                loss,
                target,
                start,
                scale,
                optimizer,
                iters,
                lr,
                line_search,
                history,
                callback,
                bar,
                amp,
                memory_format,
                compile,
                grey=preserve_color,
                scaled=precision == "fp16",
                begun=begun,
            )
    except KeyboardInterrupt as stop:
        reason, partial = (stop.reason, stop.image) if isinstance(stop, _Stopped) else (stop, None)
        image = partial if partial is not None else image  # else the previous scale's, if any
        if image is None or not history:
            raise reason from None
        if preserve_color:
            image = _preserve_color(image, original)
        raise Interrupted(image, history, reason) from None
    finally:
        bar.close()
    assert image is not None
    if preserve_color:
        image = _preserve_color(image, original)
    return image, history


def _optimise(
    loss: PerceptualLoss,
    content: Tensor,
    start: Tensor,
    scale: int,
    optimizer: str,
    iters: int,
    lr: float | None,
    line_search: str | None,
    history: list[dict[str, float]],
    callback: Callback | None,
    bar: tqdm,
    amp: Callable[[], AbstractContextManager[object]],
    memory_format: torch.memory_format,
    compile: bool | str,
    grey: bool = False,
    scaled: bool = False,
    begun: float = 0.0,
) -> Tensor:
    """``grey``: optimise one channel, shown to the loss network in all three. ``scaled``: see ``_Objective``.
    ``begun``: the ``time.perf_counter()`` the history's seconds count from."""
    with amp():
        content_features = loss.content_features(content)
    if grey:
        start = start[:, :1]
    render: Callable[[Tensor], Tensor] = _three_channels if grey else _identity
    variable = start.detach().clamp(0, 1).contiguous().requires_grad_(True)
    objective = _Objective(loss, variable, render, content_features, amp, memory_format, compile, scaled)
    opt = _optimizer(optimizer, variable, lr, line_search)
    counted = 0
    done: Tensor | None = None  # the pixels after the last finished iteration (a line search's trial may be worse)
    try:
        for _ in range(iters):
            try:
                opt.step(objective)
            except FloatingPointError:
                loss = float(opt.loss) if isinstance(opt, BoxLBFGS) and opt.loss is not None else math.nan
                what = "the loss" if not math.isfinite(loss) else "the gradient (though the loss was finite)"
                raise FaststyleError(
                    f"{what} became non-finite at iteration {len(history) + 1}; lower the learning rate (--lr) or "
                    "use --precision fp32"
                ) from None
            if optimizer == "adam":
                with torch.no_grad():
                    variable.clamp_(0, 1)
            terms = objective.current()
            if not math.isfinite(terms["total"]):
                raise FaststyleError(
                    f"the loss became {terms['total']} at iteration {len(history) + 1}; "
                    "lower the learning rate (--lr) or use --precision fp32"
                )
            evaluations = objective.evaluations + (history[-1]["evaluations"] if history else 0) - counted
            counted = objective.evaluations
            seconds = time.perf_counter() - begun
            entry = {"iteration": len(history) + 1, "scale": scale, "evaluations": evaluations, "seconds": seconds}
            history.append(entry | terms)
            done = variable.detach().clone()
            bar.set_postfix(loss=f"{terms['total']:.4g}", refresh=False)  # shown by the update, with its count
            bar.update(1)
            if callback is not None:
                with torch.no_grad():
                    callback(len(history), render(done).clone(), terms)
    except KeyboardInterrupt as stop:
        with torch.no_grad():
            raise _Stopped(None if done is None else render(done).clone(), stop) from None
    with torch.no_grad():
        return render(variable.detach()).clone()


def _identity(image: Tensor) -> Tensor:
    return image


def _three_channels(variable: Tensor) -> Tensor:
    return variable.expand(-1, 3, -1, -1)


def _in_content_colours(
    callback: Callback, content: Tensor, iteration: int, image: Tensor, terms: dict[str, float]
) -> None:
    callback(iteration, _preserve_color(image, content), terms)
