"""Seconds for ITERS L-BFGS iterations of the Gatys reference mode (``faststyle.gatys.stylize``), median of
--repeats runs, and seconds per iteration. Synthetic images unless --content/--style name real ones.
--baseline also times the plain loop (fp32, torch's ``LBFGS.step`` with the same history, its strong Wolfe line
search where faststyle backtracks, no bounds, no bookkeeping) on the same network and images, for side-by-side
speedups, with the evaluations and the final loss of each to say what the time bought; the runs of the two
alternate, so that a shared machine's noise falls on both alike."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import torch
from torch import Tensor

from faststyle.argtypes import positive_int
from faststyle.benchmarks._common import WEIGHTS_HELP, add_device_arguments, environment, summary, timed_together
from faststyle.compiling import add_compile_argument

HELP = "Gatys optimisation: seconds for N L-BFGS iterations"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from faststyle.gatys import PRECISIONS

    parser.add_argument("--backbone", default=None, help="loss network (default: the --config's, else vgg16)")
    parser.add_argument("--config", default=None, help="layer config (default: the backbone's)")
    parser.add_argument("--size", type=positive_int, default=512, help="long side of the content in pixels")
    parser.add_argument("--iters", type=positive_int, default=100, help="L-BFGS iterations per run")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="loss-network precision")
    parser.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    parser.add_argument("--cache", default=None, help="weights cache (default: as `faststyle weights`)")
    parser.add_argument("--content", default=None, help="content photo (default: a synthetic image)")
    parser.add_argument("--style", default=None, help="style image (default: a synthetic pattern)")
    parser.add_argument("--channels-last", choices=["on", "off", "auto"], default="auto", help="auto: on for CUDA")
    add_compile_argument(parser, "the loss")
    parser.add_argument("--baseline", action="store_true", help="also time the plain fp32 L-BFGS loop")
    add_device_arguments(parser)
    parser.set_defaults(repeats=3)


def synthetic_images(size: int, seed: int) -> tuple[Tensor, Tensor]:
    """A 4:3 content image (smooth gradients and shapes) and a square style image (stripes and noise)."""
    generator = torch.Generator().manual_seed(seed)
    h, w = max(1, round(size * 3 / 4)), size
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    disc = ((x - 0.6) ** 2 + (y - 0.5) ** 2 < 0.08).float()
    content = torch.stack([x, y, 0.5 * disc + 0.25 * (1 - y)])
    content = content + 0.02 * torch.randn(content.shape, generator=generator)
    s = torch.linspace(0, 1, size)
    v, u = torch.meshgrid(s, s, indexing="ij")
    style = torch.stack(
        [
            0.5 + 0.5 * torch.sin(40 * u + 10 * v),
            0.5 + 0.5 * torch.sin(25 * v - 15 * u),
            torch.rand(size, size, generator=generator),
        ]
    )
    return content.clamp(0, 1).unsqueeze(0), style.clamp(0, 1).unsqueeze(0)


def plain_lbfgs(loss: torch.nn.Module, content: Tensor, iters: int, line_search: str | None) -> tuple[Tensor, int]:
    """The common reference loop: fp32, one ``LBFGS.step`` running ``iters`` iterations. Returns the image
    and the number of loss evaluations."""
    features = loss.content_features(content)
    pixels = content.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [pixels],
        history_size=8,
        max_iter=iters,
        max_eval=iters * 100,
        tolerance_grad=0.0,
        tolerance_change=0.0,
        line_search_fn=line_search,
    )
    evaluations = 0

    def closure() -> Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        total = loss(pixels, content_features=features).total
        total.backward()
        return total

    optimizer.step(closure)
    return pixels.detach(), evaluations


def _clamped_loss(loss: torch.nn.Module, target: Tensor, pixels: Tensor) -> float:
    """The total loss of the plain loop's result as an image holds it: its unbounded pixels clamped to [0,1]."""
    with torch.no_grad():
        return float(loss(pixels.clamp(0, 1), content_features=loss.content_features(target)).total)


def _images_given(content: str | None, style: str | None) -> str:
    """``given``, ``synthetic``, or which of the two was given, e.g. ``content given, style synthetic``."""
    if bool(content) == bool(style):
        return "given" if content else "synthetic"
    given, made = ("content", "style") if content else ("style", "content")
    return f"{given} given, {made} synthetic"


def run(args: argparse.Namespace) -> dict[str, object]:
    from faststyle.config import backbone_for, layer_config
    from faststyle.device import resolve_device
    from faststyle.errors import FaststyleError
    from faststyle.gatys import LBFGS_LINE_SEARCH, caffe_pixel_scale, stylize
    from faststyle.images import load_image, resize_long_side
    from faststyle.losses import PerceptualLoss
    from faststyle.lossnets import get_lossnet

    if args.iters <= 0 or args.size <= 0 or args.repeats <= 0:
        raise FaststyleError("--iters, --size and --repeats must be positive")
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    args.backbone = backbone_for(args.backbone, args.config)
    config = layer_config(args.backbone, args.config)
    net = get_lossnet(args.backbone, weights=args.weights, cache=args.cache, device=device)
    synthetic = synthetic_images(args.size, args.seed)
    content = load_image(args.content, args.size) if args.content else synthetic[0]
    style = load_image(args.style) if args.style else synthetic[1]

    evaluations: list[float] = []
    losses: list[float] = []

    def ours() -> None:
        _, history = stylize(
            content,
            style,
            lossnet=net,
            config=config,
            size=args.size,
            iters=args.iters,
            device=device,
            precision=args.precision,
            seed=args.seed,
            progress=False,
            channels_last=None if args.channels_last == "auto" else args.channels_last == "on",
            compile=args.compile,
        )
        evaluations.append(history[-1]["evaluations"])
        losses.append(history[-1]["total"])

    runs: dict[str, Callable[[], None]] = {"faststyle": ours}
    counts: list[int] = []
    plain_results: list[tuple[PerceptualLoss, Tensor, Tensor]] = []
    if args.baseline:
        plain_net = copy.deepcopy(net).to(memory_format=torch.contiguous_format)  # the plain loop as people write it

        def plain() -> None:
            # Timed like ours: from the images to the result, the style targets included.
            target = resize_long_side(content.to(device), args.size)
            style_size = round(1.2 * max(target.shape[-2:]))
            loss = PerceptualLoss(
                plain_net,
                config,
                [resize_long_side(style.to(device), style_size)],
                style_weight=1e4 * caffe_pixel_scale(plain_net) ** 2,
                style_target="whole",
            )
            pixels, count = plain_lbfgs(loss, target, args.iters, "strong_wolfe")
            counts.append(count)
            plain_results[:] = [(loss, target, pixels)]

        runs["baseline"] = plain
    timings = timed_together(runs, device, args.repeats, args.warmup)
    times = timings["faststyle"].seconds
    result: dict[str, object] = {
        "bench": "gatys",
        "backbone": args.backbone,
        "weights": "random" if args.weights == "random" else net.weights_sha256,
        "images": _images_given(args.content, args.style),
        "size": args.size,
        "iters": args.iters,
        "precision": args.precision,
        "channels_last": next(net.parameters()).is_contiguous(memory_format=torch.channels_last),
        "line_search": LBFGS_LINE_SEARCH,
        "compile": args.compile,
        "seconds": summary(times),
        "s_per_iter": summary(times, 1.0 / args.iters),
        "evaluations": evaluations[-1],
        "loss": losses[-1],
    }
    if timings["faststyle"].peak_memory_gb is not None:
        result["peak_memory_gb"] = timings["faststyle"].peak_memory_gb
        result["call_memory_gb"] = timings["faststyle"].call_memory_gb
    if args.baseline:
        base = timings["baseline"].seconds
        result["baseline"] = {
            "what": "fp32 NCHW, torch's LBFGS.step(max_iter=iters) with strong Wolfe line search, no bounds; "
            "style targets included",
            "seconds": summary(base),
            "s_per_iter": summary(base, 1.0 / args.iters),
            "evaluations": counts[-1],
            "loss": _clamped_loss(*plain_results[0]),
        }
        result["speedup"] = summary(base)["median"] / summary(times)["median"]
    return result | environment(device)
