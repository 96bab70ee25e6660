"""``faststyle gatys``: the reference optimisation of one image (slow, no training)."""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from faststyle.argtypes import non_negative_float, non_negative_int, positive_float, positive_int
from faststyle.compiling import add_compile_argument

if TYPE_CHECKING:
    from torch import Tensor

DESCRIPTION = """\
Stylize one photo by optimising its pixels against a loss network (Gatys et al.), as the reference Caffe code did: \
post-ReLU features, L-BFGS from the content image, the style image scaled to 1.2 x the content. Slow (seconds per \
image on a GPU at 512 px, minutes on a CPU) but needs no trained model.

example:
  faststyle gatys --content photo.jpg --style starry_night.jpg --backbone googlenet --size 512 --out out.png
"""


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, e.g. 0.7,0.3; got {text!r}") from None


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive sizes, e.g. 256,512; got {text!r}")
    return sizes


def register(sub: argparse._SubParsersAction) -> None:
    from faststyle.gatys import INITS, OPTIMIZERS, PRECISIONS
    from faststyle.lossnets.registry import available_lossnets

    p = sub.add_parser(
        "gatys",
        help="stylize one image by direct optimisation (the reference mode)",
        description=DESCRIPTION,
    )
    p.add_argument("--content", required=True, metavar="IMG", help="the photo to stylize")
    p.add_argument(
        "--style", required=True, action="append", metavar="IMG", help="style image; repeat to mix several styles"
    )
    p.add_argument(
        "--style-blend", type=_floats, default=None, metavar="W1,W2", help="weight per --style (default equal)"
    )
    p.add_argument(
        "--mask", action="append", default=None, metavar="IMG",
        help="where the --style of the same place paints: an image in the content's frame, white (or opaque, in "
        "one with transparency) where it paints, black (or clear) where it does not; one per --style, in place of "
        "--style-blend (Gatys et al.'s spatial control)",
    )  # fmt: skip
    names = ", ".join(available_lossnets())
    p.add_argument(
        "--backbone", default=None, help=f"loss network: {names} (default: the one --config is for, else vgg16)"
    )
    p.add_argument("--config", default=None, metavar="FILE", help="layer weights: built-in name or YAML file")
    p.add_argument(
        "--size",
        type=positive_int,
        default=512,
        help="long side of the output in pixels (default 512; --multiscale overrides)",
    )
    p.add_argument("--iters", type=positive_int, default=500, help="optimiser iterations (per scale; default 500)")
    p.add_argument("--optimizer", default="lbfgs", choices=OPTIMIZERS, help="lbfgs (reference) or adam")
    p.add_argument("--lr", type=positive_float, default=None, help="step size (default: 1 for lbfgs, 0.02 for adam)")
    init = p.add_mutually_exclusive_group()
    init.add_argument(
        "--init", default="content", metavar="{" + ",".join(INITS) + "} or IMG",
        help="start from the content (default), noise, a mix, or an image file such as a trained model's painting "
        "of the content, which the optimisation then refines",
    )  # fmt: skip
    init.add_argument(
        "--init-model", default=None, metavar="NAME|FILE",
        help="start from this trained model's painting of the content (a model in checkpoints/ or a file): a fast "
        "result refined toward the loss network's optimum, keeping much of the model's look",
    )  # fmt: skip
    p.add_argument(
        "--ratio",
        type=non_negative_float,
        default=1e4,
        help=(
            "style weight : content weight (default 1e4), in the reference's 0-255 units: for the torchvision "
            "networks (VGG, AlexNet), whose features are 57.6x smaller, the style weight is 57.6² times this"
        ),
    )
    p.add_argument(
        "--tv-weight", type=non_negative_float, default=0.0, metavar="W",
        help="total-variation weight for smoothness, in --ratio's units (0-255 pixels, content weight 1), so alike "
        "for every network's input; try 10-1000: at 256 px, 100 halves VGG16's picture's variation, and GoogLeNet "
        "reacts about 10x more (default 0)",
    )  # fmt: skip
    p.add_argument(
        "--style-scale",
        type=positive_float,
        default=1.2,
        help="style long side relative to the content's (default 1.2)",
    )
    p.add_argument(
        "--style-target", default="whole", choices=("whole", "per-position"),
        help="whole (default): the style image's whole Gram matrix is the target, as in the reference code, so the "
        "1.2x larger painting asks for up to 1.44x each Gram entry: a bolder style; per-position: scaled to the "
        "output's size, the same target whatever --style-scale (a masked style is always per position)",
    )  # fmt: skip
    p.add_argument("--preserve-color", action="store_true", help="keep the content's colours (transfer luminance only)")
    p.add_argument(
        "--multiscale",
        type=_sizes,
        default=None,
        metavar="S1,S2",
        help="long sides to run in turn, each from the last result upsampled (e.g. 256,512; sorted coarse to fine, "
        "each once); replaces --size",
    )
    p.add_argument("--pooling", default="max", choices=("max", "avg"), help="max (default) or average pooling")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="loss-network precision (CUDA)")
    add_compile_argument(p, "the loss (pays off on a GPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise initialisation")
    p.add_argument("--out", required=True, metavar="FILE", help="output image (.png, .jpg, .webp)")
    p.add_argument(
        "--save-every", type=non_negative_int, default=0, metavar="N",
        help="also write <stem>_iterNNNN<suffix> beside --out every N iterations (default 0: never)",
    )  # fmt: skip
    p.add_argument("--cache", default=None, metavar="DIR", help="weights cache (default: as `faststyle weights`)")
    p.add_argument("--weights", default=None, metavar="FILE", help="loss-network weights file instead of the cache")
    p.add_argument("--quiet", "--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def _snapshot_path(out: Path, iteration: int) -> Path:
    return out.with_name(f"{out.stem}_iter{iteration:04d}{out.suffix}")


def _initial_image(args: argparse.Namespace, content: Tensor) -> str | Tensor:
    """``--init``'s name, or the image it names, or ``--init-model``'s painting of the content at the first scale."""
    from faststyle.errors import FaststyleError
    from faststyle.gatys import INITS
    from faststyle.images import load_image

    if args.init_model is not None:
        from faststyle.stylize import Stylizer

        first = min(args.multiscale) if args.multiscale else args.size
        stylizer = Stylizer(args.init_model, device=args.device)
        return stylizer(content, size=first)
    if args.init in INITS:
        return args.init
    if not Path(args.init).is_file():
        raise FaststyleError(f"--init must be {', '.join(INITS)} or an image file; {args.init!r} is neither")
    return load_image(args.init)


def run(args: argparse.Namespace) -> int:

    from faststyle.device import resolve_device
    from faststyle.errors import FaststyleError
    from faststyle.gatys import INITS, Interrupted
    from faststyle.images import check_writable, image_format, load_image, load_mask, save_image
    from faststyle.losses import describe_terms

    out = Path(args.out)
    image_format(out)  # an unwritable suffix fails here, not after the optimisation
    inputs = {Path(args.content).resolve(): "--content"} | {Path(s).resolve(): "--style" for s in args.style}
    inputs |= {Path(m).resolve(): "--mask" for m in args.mask or []}
    if args.init not in INITS:
        inputs[Path(args.init).resolve()] = "--init"
    if out.resolve() in inputs:
        raise FaststyleError(f"--out {out} is the {inputs[out.resolve()]} image; name another file for the result")
    if out.is_dir():
        raise FaststyleError(f"--out {out} is a folder; name the image file to write, e.g. {out / 'result.png'}")
    if args.save_every:
        iterations = args.iters * len(set(args.multiscale or [args.size]))  # numbered on across the scales
        written = {_snapshot_path(out, i).resolve() for i in range(args.save_every, iterations + 1, args.save_every)}
        if clash := sorted(written & inputs.keys()):
            raise FaststyleError(
                f"--save-every {args.save_every} would write {clash[0].name} over the {inputs[clash[0]]} image; name "
                "another --out (its snapshots are named after it)"
            )
        older = sorted(
            p for p in out.parent.glob(f"{glob.escape(out.stem)}_iter*{out.suffix}") if p.resolve() not in written
        )
        if older:
            logging.getLogger("faststyle.gatys").warning(
                "%d snapshots of an earlier run lie beside %s (%s …) and will be mixed with this run's; move them or "
                "name another --out", len(older), out.name, older[0].name,
            )  # fmt: skip
    on_cpu = resolve_device(args.device).type == "cpu"
    if args.precision == "fp16" and on_cpu:
        raise FaststyleError("--precision fp16 needs CUDA; use bf16 or fp32 on the CPU")
    if args.precision == "bf16" and on_cpu:
        logging.getLogger("faststyle.gatys").warning(
            "--precision %s is meant for CUDA; on the CPU it runs several times slower than fp32", args.precision
        )
    check_writable(out.parent, "the result")
    content = load_image(args.content)
    styles = [load_image(path) for path in args.style]
    init = _initial_image(args, content)
    masks = [load_mask(path) for path in args.mask] if args.mask else None

    def snapshot(iteration: int, image: Tensor, terms: dict[str, float]) -> None:
        if args.save_every and iteration % args.save_every == 0:
            save_image(image, _snapshot_path(out, iteration))

    start = time.perf_counter()
    earlier = out.exists()  # a finished result of an earlier run is not replaced by an interrupted one
    try:
        image, history = _stylize(args, content, styles, init, masks, snapshot)
    except Interrupted as stop:
        kept = out.with_name(f"{out.stem}_interrupted{out.suffix}") if earlier else out
        with _not_interrupted():
            save_image(stop.image, kept)
        h, w = stop.image.shape[-2:]
        total = args.iters * len(set(args.multiscale or [args.size]))
        print(
            f"{kept}: {w}x{h}, the picture so far: interrupted after {len(stop.history)} of {total} iterations"
            f"{f' ({out.name} left as it was)' if earlier else ''}; its loss: {describe_terms(stop.history[-1])}"
        )
        raise stop.reason from None
    seconds = history[-1]["seconds"]
    loading = time.perf_counter() - start - seconds
    with _not_interrupted():  # a Ctrl-C now would lose the finished result
        save_image(image, out)
    h, w = image.shape[-2:]
    print(
        f"{out}: {w}x{h}, {len(history)} iterations in {seconds:.1f} s (and {loading:.1f} s loading the loss network); "
        f"final loss: {describe_terms(history[-1])}"
    )
    return 0


@contextlib.contextmanager
def _not_interrupted() -> Iterator[None]:
    """Ctrl-C held off (a second press, impatient, while the picture so far is written); in the main thread only."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _stylize(
    args: argparse.Namespace,
    content: Tensor,
    styles: list[Tensor],
    init: str | Tensor,
    masks: list[Tensor] | None,
    snapshot: Callable[[int, Tensor, dict[str, float]], None],
) -> tuple[Tensor, list[dict[str, float]]]:
    from faststyle.gatys import stylize

    return stylize(
        content,
        styles,
        backbone=args.backbone,
        config=args.config,
        style_blend=args.style_blend,
        masks=masks,
        size=args.size,
        iters=args.iters,
        optimizer=args.optimizer,
        init=init,
        ratio=args.ratio,
        tv_weight=args.tv_weight,
        style_scale=args.style_scale,
        style_target=args.style_target,
        preserve_color=args.preserve_color,
        multiscale=args.multiscale,
        lr=args.lr,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        seed=args.seed,
        callback=snapshot if args.save_every else None,
        progress=not args.quiet,
        pooling=args.pooling,
        weights=args.weights,
        cache=args.cache,
    )
