"""``faststyle train``: train a fast style network for one artwork."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from faststyle.argtypes import non_negative_float, non_negative_int, positive_float, positive_int, style_weight
from faststyle.compiling import add_compile_argument
from faststyle.losses import STYLE_BALANCE, TRAINING_WEIGHTS, describe_terms

if TYPE_CHECKING:
    from faststyle.training import TrainResult


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas, e.g. 0.7,0.3") from None


def _seed(text: str) -> int:
    """A seed Lightning's ``seed_everything`` takes (NumPy's range); a larger one crashed after the set-up."""
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value} is not a seed from 0 to {2**32 - 1}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="train a style network for an artwork",
        description=(
            "Train Johnson et al.'s transformer network so that it paints any photo in the style of the given "
            "artwork, using a perceptual loss from a frozen ImageNet network. Example:\n"
            "  faststyle train --style starry.jpg --data photos/ --steps 40000 --out checkpoints/starry.safetensors"
        ),
    )
    p = parser.add_argument
    p("--style", action="append", required=True, help="style image; repeat to blend several")
    p("--style-blend", type=_floats, default=None, help="blend weights of the style images, e.g. 0.7,0.3")
    p(
        "--backbone",
        default=None,
        help="loss network: vgg16, vgg19, googlenet, alexnet, caffenet (default: the one --config is for, else vgg16)",
    )
    p("--config", default=None, help="layer-weight config (name in configs/ or YAML file); default: the backbone's")
    p("--data", required=True, help="folder of photos, or a Hugging Face dataset name (streamed)")
    p("--steps", type=positive_int, default=40_000, help="optimizer steps")
    p("--max-minutes", type=positive_float, default=None, help="stop after this long (still writing the model)")
    p("--batch", type=positive_int, default=4, help="photos per step")
    p("--size", type=positive_int, default=256, help="crop size of the training photos")
    p("--short-side", type=positive_int, default=None,
      help="scale every photo to this short side before cropping, so that a crop shows a whole scene rather than a "
      "patch of a large photo (e.g. 2 x --size for camera photos); default: photos are cropped as they are, and only "
      "those smaller than --size are scaled up")  # fmt: skip
    p("--style-size", type=positive_int, default=None, help="long side of the style image (default 1.5 x --size)")
    p(
        "--content-weight",
        type=non_negative_float,
        default=TRAINING_WEIGHTS["content_weight"],
        help="weight of the content loss",
    )
    p(
        "--style-weight",
        type=style_weight,
        default=TRAINING_WEIGHTS["style_weight"],
        metavar="W|auto",
        help=f"weight of the style loss (default {TRAINING_WEIGHTS['style_weight']:g}); 'auto' measures the weight at "
        f"which style pulls on the pixels {STYLE_BALANCE:g} times as hard as content (VGG16's pull at weight 2 and "
        "256 px, the median over 15 paintings), so that every loss network, painting and --size gets a like balance",
    )
    p(
        "--tv-weight",
        type=non_negative_float,
        default=TRAINING_WEIGHTS["tv_weight"],
        help="weight of the total-variation loss",
    )
    p("--stability-weight", type=non_negative_float, default=0.0, metavar="W",
      help="weight of a term that keeps the output steady from one video frame to the next: a photo moved by 0-3 px, "
      "with camera noise, must be painted as the photo was, moved (without it the painting follows the network's "
      "4-px grid and shimmers when the camera pans; 300 makes that 2.5-3 times steadier, 1000 3.5-6 times, at "
      "some cost in style, see README); costs one more pass of the transformer network on one photo a step. "
      "Default 0: off")  # fmt: skip
    p("--lr", type=positive_float, default=1e-3, help="Adam learning rate (may change on --resume)")
    p("--width", type=positive_float, default=1.0, help="channel multiplier of the transformer network")
    p("--pooling", choices=["max", "avg"], default="max", help="pooling in the loss network")
    p("--lossnet-weights", default=None, help="weights file for the loss network (default: the cache)")
    p("--cache", default=None, help="loss-network weights cache folder (default: as `faststyle weights`)")
    p("--out", required=True, help="model file to write (.safetensors)")
    p("--run-dir", default=None, help="checkpoints, logs and validation grids (default: next to --out)")
    p("--resume", action="store_true",
      help="continue an interrupted or finished run from its newest checkpoint: repeat the command with --resume; "
      "the style, loss, model and data settings must be the same (--steps and --lr may change), run-time "
      "options such as --precision, --devices or --compile may change")  # fmt: skip
    p("--seed", type=_seed, default=0, help="seed of the initial weights and the photo crops")
    p("--accelerator", default="auto", help="cpu, gpu or auto")
    p("--devices", default="auto", help="number of devices (Lightning)")
    p("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    p("--num-nodes", type=positive_int, default=1, help="machines taking part (multi-node, with --strategy ddp)")
    p("--precision", default=None,
      help="Lightning precision: 32-true, bf16-mixed, 16-mixed … (default: bf16-mixed on GPU, 32-true on CPU)",
    )  # fmt: skip
    add_compile_argument(parser, "the networks (pays off on a GPU)")
    p("--gpu-cache", action="store_true", help="decode small photo sets once onto the device and crop there")
    p("--stream", action="store_true", help="read a local folder as a stream, without indexing it (huge folders)")
    p("--workers", type=non_negative_int, default=None, help="data loader workers (default: min(4, CPUs))")
    p("--val-every", type=int, default=500, help="steps between validation grids")
    p("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p("--fp32", action="store_true", help="store the model in float32 (default float16)")
    p("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from faststyle.settings import TrainSettings, style_weight_settings
    from faststyle.training import train

    settings = TrainSettings(
        styles=args.style,
        backbone=args.backbone,
        config=args.config,
        style_blend=args.style_blend,
        style_size=args.style_size,
        content_weight=args.content_weight,
        **style_weight_settings(args.style_weight),
        tv_weight=args.tv_weight,
        stability_weight=args.stability_weight,
        lr=args.lr,
        steps=args.steps,
        batch=args.batch,
        size=args.size,
        short_side=args.short_side,
        width=args.width,
        pooling=args.pooling,
        lossnet_weights=args.lossnet_weights,
        cache=args.cache,
        seed=args.seed,
        compile=args.compile,
    )
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    result = train(
        settings,
        args.data,
        args.out,
        run_dir=args.run_dir,
        resume=args.resume,
        accelerator=args.accelerator,
        devices=devices,
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        precision=args.precision,
        num_workers=args.workers,
        gpu_cache=args.gpu_cache,
        stream=args.stream,
        max_minutes=args.max_minutes,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        half=not args.fp32,
        progress=not args.no_progress,
    )
    if result.rank != 0:
        return 0
    print(summary(result))
    return 0


def summary(result: TrainResult) -> str:
    """The line a finished training prints: what was trained, how fast, the final loss, where the logs are."""
    steps = f"steps {result.start_step + 1}-{result.steps}" if result.start_step else f"{result.steps} steps"
    pace = " after the first step" if result.steps - result.start_step > 1 else ""
    trained = f"{steps} in {result.seconds:.0f} s ({result.images_per_second:.2f} img/s{pace})"
    if result.steps == result.start_step:  # a finished run whose model file had not been written
        trained = f"the run's {result.steps} steps, trained before"
    if result.planned_steps and result.steps < result.planned_steps:
        trained += f", stopped by --max-minutes before step {result.planned_steps} (--resume continues the run)"
    final = describe_terms(result.final_losses) if result.final_losses else "not kept (a run from an older version)"
    texture = ""
    if len(result.val_texture) > 1:
        (first, before), *_, (last, now) = sorted(result.val_texture.items())
        texture = f"validation photos' texture distance to the painting {before:.2f} at step {first}, "
        texture += f"{now:.2f} at {last} (photo = 1); "
    return (
        f"wrote {result.model_path}: {trained}; final loss: {final}; {texture}"
        f"skipped photos: {result.skipped_photos}; logs and validation grids in {result.run_dir}"
    )
