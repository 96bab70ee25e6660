"""Stylization time per image (ms) through ``Stylizer`` for each backend, beside the plain fp32 eager network
measured in the same run, the backends' timed runs alternating."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from faststyle.argtypes import positive_int
from faststyle.benchmarks._common import add_device_arguments, environment, summary, timed_together

HELP = "stylization time per image for each inference backend"
SIZES = {"512": (512, 512), "1024": (1024, 1024), "720p": (720, 1280), "1080p": (1080, 1920), "4k": (2160, 3840)}
BACKENDS = ("eager", "channels_last", "compile", "cudagraphs", "onnxruntime")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="random", help="model file or name; 'random': an untrained network")
    parser.add_argument("--size", default="512", help=f"{', '.join(SIZES)} or HxW (e.g. 600x800)")
    parser.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="auto: fp16 when compiled on CUDA"
    )
    parser.add_argument("--backend", default="all", choices=[*BACKENDS, "all"], help="inference path to time")
    parser.add_argument("--batch", type=positive_int, default=1, help="images per call")
    add_device_arguments(parser)


def parse_size(text: str) -> tuple[int, int]:
    from faststyle.errors import FaststyleError

    if text.lower() in SIZES:
        return SIZES[text.lower()]
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) == 2 and min(parts) >= 1:
        return parts[0], parts[1]
    raise FaststyleError(f"--size {text!r}: use {', '.join(SIZES)}, a side (512) or HxW (600x800)")


def run(args: argparse.Namespace) -> dict[str, object]:
    from faststyle.device import resolve_device
    from faststyle.stylize import Stylizer, default_backend, default_precision, find_model
    from faststyle.transformer import TransformerNet

    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    if args.model == "random":
        net: torch.nn.Module | str = TransformerNet().eval()
    else:
        net = str(find_model(args.model))  # a missing model is an error, not every backend "skipped"
    h, w = parse_size(args.size)
    images = torch.rand(args.batch, 3, h, w, device=device)
    runs: dict[str, dict[str, object]] = {"eager_fp32": {"precision": "fp32", "backend": "eager"}}
    skipped: dict[str, str] = {}
    for backend in BACKENDS if args.backend == "all" else (args.backend,):
        compiled = backend in ("compile", "cudagraphs")
        precision = args.precision if args.precision != "auto" else default_precision(device, compiled)
        options: dict[str, object] = {"precision": precision, "backend": backend}
        if compiled:
            mode = "reduce-overhead" if backend == "cudagraphs" else "default"
            options = {"precision": precision, "backend": "channels_last", "compile": mode}
        if backend == "onnxruntime" and (device.type != "cpu" or precision != "fp32"):
            skipped[f"{backend}_{precision}"] = "ONNX Runtime runs fp32 on the CPU here"
            continue
        if backend == "cudagraphs" and device.type != "cuda":
            skipped[f"{backend}_{precision}"] = "CUDA graphs need CUDA"
            continue
        runs.setdefault(f"{backend}_{precision}", options)

    result: dict[str, object] = {
        "bench": "infer",
        "model": args.model,
        "size": [h, w],
        "batch": args.batch,
        "default": {
            "backend": default_backend(device, default_precision(device)),
            "precision": default_precision(device),
        },
    }
    calls: dict[str, Callable[[], object]] = {}
    for name, options in runs.items():
        try:
            stylizer = Stylizer(net, device=device, tile=0, **options)  # type: ignore[arg-type]
            stylizer(images)  # builds, exports or compiles the backend
        except Exception as exc:  # a backend that cannot run here is reported, not fatal
            skipped[name] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        calls[name] = lambda s=stylizer: s(images)
    timings = {
        name: summary(timing.seconds, 1000.0 / args.batch)
        for name, timing in timed_together(calls, device, args.repeats, args.warmup).items()
    }
    baseline = timings.get("eager_fp32", {}).get("median")
    result["ms_per_image"] = timings
    if baseline:
        result["speedup_vs_eager_fp32"] = {k: round(baseline / v["median"], 3) for k, v in timings.items()}
    if skipped:
        result["skipped"] = skipped
    return result | environment(device)
