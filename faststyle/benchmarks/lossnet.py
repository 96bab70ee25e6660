"""Forward+backward time of a loss network at its configured layers (ms per image)."""

from __future__ import annotations

import argparse

import torch

from faststyle.argtypes import positive_int
from faststyle.benchmarks._common import WEIGHTS_HELP, add_device_arguments, environment, summary, timed
from faststyle.device import resolve_device

HELP = "loss network forward+backward at the config's layers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backbone", default=None, help="loss network (default: the --config's, else vgg16)")
    parser.add_argument("--config", default=None, help="layer config (default: the backbone's)")
    parser.add_argument("--cache", default=None, help="weights cache (default: as `faststyle weights`)")
    parser.add_argument("--size", type=positive_int, default=256, help="input side in pixels")
    parser.add_argument("--batch", type=positive_int, default=4, help="images per pass")
    parser.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    add_device_arguments(parser)


def run(args: argparse.Namespace) -> dict[str, object]:
    from faststyle.config import backbone_for, layer_config
    from faststyle.lossnets import get_lossnet

    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    args.backbone = backbone_for(args.backbone, args.config)
    config = layer_config(args.backbone, args.config)
    net = get_lossnet(args.backbone, weights=args.weights, cache=args.cache, device=device)
    net.check_size(args.size, args.size, config.layers, f"--size {args.size}", "raise --size")
    images = torch.rand(args.batch, 3, args.size, args.size, device=device, requires_grad=True)

    def step() -> None:
        feats = net(images, config.layers)
        sum(f.float().square().mean() for f in feats.values()).backward()

    times = timed(step, device, args.repeats, args.warmup)
    result: dict[str, object] = {
        "bench": "lossnet",
        "backbone": args.backbone,
        "weights": "random" if args.weights == "random" else net.weights_sha256,
        "layers": config.layers,
        "size": args.size,
        "batch": args.batch,
        "ms_per_image": summary(times, 1000.0 / args.batch),
    }
    return result | environment(device)
