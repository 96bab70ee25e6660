"""``faststyle compare``: the loss-network study (train or reuse models, stylize, measure, report)."""

from __future__ import annotations

import argparse

from faststyle.argtypes import non_negative_int, positive_int, style_weight
from faststyle.errors import FaststyleError


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers separated by commas (100,300,500), not {text!r}"
        ) from None


def _style_weights(text: str) -> dict[str, float | str]:
    """``4`` or ``auto`` (every column) or ``vgg16=2,googlenet=auto`` (per backbone or column name, the others
    train's default)."""
    weights: dict[str, float | str] = {}
    for part in _names(text):
        key, equals, value = part.rpartition("=")
        try:
            if equals and not key:
                raise argparse.ArgumentTypeError
            weights[key or "*"] = style_weight(value)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"{part!r}: give a number of 0 or more, or auto, for every column (4) or per backbone "
                "(vgg16=2,googlenet=auto)"
            ) from None
    return weights


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compare",
        help="compare loss networks: train/stylize per backbone, metrics, HTML report",
        description=(
            "For every style image and loss network (and extra layer config), train a feed-forward model (or reuse "
            "one in OUT/models/ with the same settings) and/or run the Gatys optimisation, stylize the content "
            "photos and measure the outputs: style distance under every loss network, SSIM and LPIPS to the photo, "
            "colour histogram and texture distance (no network's) to the style, fine grain, a feed-forward model's "
            "shimmer, and (--mode both) the gap to Gatys. Writes OUT/results.json, OUT/report.md and OUT/index.html; "
            "a rerun recomputes only what changed. Example:\n"
            "  faststyle compare --styles starry.jpg --content photos/ --backbones vgg16,googlenet --out cmp/"
        ),
    )
    p = parser.add_argument
    p("--styles", nargs="+", required=True, metavar="IMG", help="style images (files or folders)")
    p("--content", nargs="+", required=True, metavar="DIR_OR_FILE", help="content photos to stylize and measure")
    p("--backbones", type=_names, default=["vgg16", "googlenet", "alexnet"],
      help="loss networks, comma-separated: vgg16, vgg19, googlenet, alexnet, caffenet")  # fmt: skip
    p(
        "--configs",
        nargs="*",
        default=[],
        metavar="FILE_OR_NAME",
        help="extra layer configs (built-in name such as googlenet_pool, or a YAML file): columns backbone:config",
    )
    p("--mode", choices=["feedforward", "gatys", "both"], default="feedforward",
      help="feedforward: train models and stylize; gatys: optimise each photo; both: both, and their gap")  # fmt: skip
    p("--steps", type=positive_int, default=2000, help="training steps per model")
    p("--batch", type=positive_int, default=4, help="photos per training step")
    p("--size", type=positive_int, default=256, help="training crop size and long side of the measured images")
    p("--style-weight", type=_style_weights, default={}, metavar="W|NAME=W,…",
      help="style weight of the feed-forward models: one for every column (e.g. 4), or per backbone or column "
      "(vgg16=2,googlenet=8); the loss networks weigh style differently, so equal weights are not an equal balance: "
      "'auto' measures, per column and painting, the weight at which style pulls as hard against content as VGG16's "
      "does at 2 on a typical painting (see train --help); default: train's 2 for every column; Gatys keeps its "
      "ratio")  # fmt: skip
    p("--gatys-iters", type=_ints, default=[100, 300, 500], help="Gatys iterations at which to measure")
    p("--data", default=None, help="training photos (default: ../shared/data/train next to the repo, if present)")
    p("--seed", type=int, default=0, help="seed of the training runs and of Gatys")
    p("--device", default="auto", help="auto, cpu or cuda[:N]")
    p("--cache", default=None, help="loss-network weights cache folder (default: as `faststyle weights`)")
    p("--workers", type=non_negative_int, default=None, help="data loader workers for training (default: min(4, CPUs))")
    p("--no-progress", action="store_true", help="no progress bars")
    p("--out", required=True, metavar="DIR", help="output folder (models/, images/, results.json, index.html)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from faststyle.compare import CompareSettings, compare

    if not args.backbones and not args.configs:
        raise FaststyleError("--backbones is empty; name at least one, e.g. vgg16,googlenet")
    settings = CompareSettings(
        styles=args.styles,
        content=args.content,
        out=args.out,
        backbones=args.backbones,
        configs=args.configs,
        mode=args.mode,
        steps=args.steps,
        size=args.size,
        batch=args.batch,
        gatys_iters=args.gatys_iters,
        style_weights=args.style_weight,
        seed=args.seed,
        device=args.device,
        data=args.data,
        cache=args.cache,
        workers=args.workers,
        progress=not args.no_progress,
    )
    result = compare(settings)
    print(
        f"compared {len(result.results['columns'])} loss-network settings on {len(result.results['styles'])} "
        f"style(s) and {len(result.results['contents'])} photo(s): {result.computed()} computed, "
        f"{result.reused()} reused in {result.results['timings']['wall_seconds']:.0f} s; report: {result.report}"
    )
    return 0
