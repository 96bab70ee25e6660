"""Training throughput (images per second) of faststyle's step, beside the plain reference loop."""

from __future__ import annotations

import argparse
import copy
import itertools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from faststyle.argtypes import non_negative_float, positive_int
from faststyle.benchmarks._common import WEIGHTS_HELP, add_device_arguments, environment, summary, timed_together
from faststyle.compiling import add_compile_argument, compiler
from faststyle.device import resolve_device
from faststyle.errors import FaststyleError
from faststyle.stability import STABLE_SIZE

HELP = "training step throughput, with the plain fp32 eager loop as baseline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default="vgg16", help="loss network")
    parser.add_argument("--cache", default=None, help="weights cache (default: as `faststyle weights`)")
    parser.add_argument("--size", type=positive_int, default=256, help="crop size in pixels")
    parser.add_argument("--batch", type=positive_int, default=4, help="photos per step")
    parser.add_argument("--steps", type=positive_int, default=5, help="training steps per timed run")
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="auto", help="auto: bf16 on CUDA")
    parser.add_argument("--channels-last", choices=["on", "off", "auto"], default="auto", help="auto: on for CUDA")
    add_compile_argument(parser, "the step's networks")
    parser.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain reference loop")
    parser.add_argument("--stability-weight", type=non_negative_float, default=0.0, metavar="W",
                        help="also time the step with train's stability term at this weight")  # fmt: skip
    add_device_arguments(parser)


def _faststyle_step(
    net_fn: Callable[[Tensor], Tensor],
    loss_fn: Callable[..., object],
    targets_fn: Callable[[Tensor], dict[str, Tensor]],
    optimizer: torch.optim.Optimizer,
    batch: Tensor,
    dtype: torch.dtype | None,
    stability_weight: float = 0.0,
) -> Callable[[], None]:
    """faststyle's step: content targets once under no_grad, optional bf16 autocast, no bad steps skipped here;
    with ``stability_weight``, train's stability term too (on the first photo, a new move each step)."""
    from faststyle.compiling import new_step
    from faststyle.stability import stability_loss, step_shift

    device_type = batch.device.type
    count = itertools.count()

    def step() -> None:
        new_step()
        with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            targets = targets_fn(batch)
            styled = net_fn(batch)
            terms = loss_fn(styled, content_features=targets)
            if stability_weight:
                steadiness = stability_loss(net_fn, batch[:1], styled[:1], step_shift(0, next(count)))
                terms.total = terms.total + stability_weight * steadiness  # type: ignore[attr-defined]
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()  # type: ignore[attr-defined]
        optimizer.step()

    return step


def _plain_gram(f: Tensor) -> Tensor:
    b, c, h, w = f.shape
    flat = f.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def _plain_step(net: nn.Module, lossnet: nn.Module, config, optimizer, batch: Tensor, grams) -> Callable[[], None]:
    """The common reference loop: fp32, eager, content features computed with autograd on, MSE losses."""
    mse = nn.functional.mse_loss

    def step() -> None:
        optimizer.zero_grad()
        out = net(batch)
        f_out = lossnet(out, config.layers)
        f_in = lossnet(batch, list(config.content_layers))
        content = sum(mse(f_out[k], f_in[k]) for k in config.content_layers)
        style = sum(mse(_plain_gram(f_out[k]), grams[k].expand(out.shape[0], -1, -1)) for k in config.style_layers)
        (content + 1e5 * style).backward()
        optimizer.step()

    return step


def run(args: argparse.Namespace) -> dict[str, object]:
    from faststyle.config import default_config
    from faststyle.losses import PerceptualLoss
    from faststyle.lossnets import get_lossnet
    from faststyle.transformer import TransformerNet

    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    config = default_config(args.backbone)
    style = torch.rand(1, 3, round(1.5 * args.size), round(1.5 * args.size), device=device)
    batch = torch.rand(args.batch, 3, args.size, args.size, device=device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if args.precision == "bf16" or (args.precision == "auto" and cuda) else None
    channels_last = args.channels_last == "on" or (args.channels_last == "auto" and cuda)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    lossnet = get_lossnet(args.backbone, weights=args.weights, cache=args.cache, device=device)
    lossnet.check_size(args.size, args.size, config.layers, f"--size {args.size}", "raise --size")
    if args.stability_weight and args.size < STABLE_SIZE:  # as train refuses it: the term would compare no pixels
        raise FaststyleError(f"--stability-weight needs --size {STABLE_SIZE} or more, not {args.size}")
    result: dict[str, object] = {"bench": "train", "backbone": args.backbone, "size": args.size, "batch": args.batch}
    steps: dict[str, Callable[[], None]] = {}
    if not args.no_baseline:
        plain_lossnet = copy.deepcopy(lossnet)  # NCHW, whatever layout faststyle's step gives the shared one
        net = TransformerNet().to(device)
        with torch.no_grad():
            feats = plain_lossnet(style, list(config.style_layers))
            targets = {k: _plain_gram(v) for k, v in feats.items()}
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        steps["baseline_img_per_s"] = _plain_step(net, plain_lossnet, config, optimizer, batch, targets)

    net = TransformerNet().to(device, memory_format=memory_format)
    loss = PerceptualLoss(lossnet, config, [style], normalization="mean", tv_weight=1.0).to(memory_format=memory_format)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    compile_ = compiler(args.compile)
    steps["faststyle_img_per_s"] = _faststyle_step(
        compile_(net), compile_(loss), compile_(loss.content_features), optimizer,
        batch.contiguous(memory_format=memory_format), dtype,
    )  # fmt: skip
    if args.stability_weight:
        steady = TransformerNet().to(device, memory_format=memory_format)
        steady_optimizer = torch.optim.Adam(steady.parameters(), lr=1e-3)
        steps["faststyle_stability_img_per_s"] = _faststyle_step(
            compile_(steady), compile_(loss), compile_(loss.content_features), steady_optimizer,
            batch.contiguous(memory_format=memory_format), dtype, args.stability_weight,
        )  # fmt: skip
    runs = {name: (lambda step=step: [step() for _ in range(args.steps)]) for name, step in steps.items()}
    for name, timing in timed_together(runs, device, args.repeats, args.warmup).items():
        stats: dict[str, float] = summary([args.steps * args.batch / t for t in timing.seconds])
        if timing.peak_memory_gb is not None:
            stats["peak_memory_gb"] = timing.peak_memory_gb
            stats["call_memory_gb"] = timing.call_memory_gb
        result[name] = stats
    result["settings"] = {
        "precision": "bf16" if dtype else "fp32",
        "channels_last": channels_last,
        "compile": args.compile,
        "steps_per_run": args.steps,
        **({"stability_weight": args.stability_weight} if args.stability_weight else {}),
    }
    if "baseline_img_per_s" in result:
        base = result["baseline_img_per_s"]["median"]  # type: ignore[index]
        result["speedup"] = result["faststyle_img_per_s"]["median"] / base  # type: ignore[index]
    return result | environment(device)
