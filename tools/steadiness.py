"""How steady models' outputs are between video frames (faststyle.stability.instability), and what the style costs:
one JSON line per model, as the README's table.

    python tools/steadiness.py MODEL.safetensors … --photos ../shared/data/content --size 256 \
        --style ../shared/data/styles/vangogh_starry_night_crop.jpg

The photos are the images directly in --photos (Amber, Chicago and Tübingen in ../shared/data/content) and in its
kodak/ folder. With --style, each model's outputs are also measured under training's loss (the model's loss network
with its default layer weights, training's normalisation), against that painting at 1.5 × --size: the content and
style terms, unweighted, averaged over the photos.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from faststyle.images import load_image
from faststyle.losses import PerceptualLoss
from faststyle.lossnets import get_lossnet
from faststyle.modelfile import read_metadata
from faststyle.photofolders import IMAGE_SUFFIXES
from faststyle.stability import instability
from faststyle.stylize import Stylizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--size", type=int, default=256, help="long side of the photos")
    parser.add_argument("--style", type=Path, default=None, help="the painting the models were trained on")
    parser.add_argument("--cache", default=None, help="loss-network weights cache (default: as `faststyle weights`)")
    args = parser.parse_args()
    files = [p for folder in (args.photos, args.photos / "kodak") for p in sorted(folder.glob("*"))]
    photos = [load_image(p, args.size) for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    for model in args.models:
        stylizer = Stylizer(model, device="cpu", backend="eager")
        line: dict[str, object] = {"model": model.name, "photos": len(photos)}
        line |= {k: round(v, 2) for k, v in instability(stylizer, photos).items()}
        if args.style is not None:
            meta = read_metadata(model)
            loss = PerceptualLoss(
                get_lossnet(meta["backbone"]["name"], cache=args.cache), meta["backbone"]["name"],
                [load_image(args.style, round(1.5 * args.size))], normalization="mean",
            )  # fmt: skip
            with torch.no_grad():
                terms = [loss(stylizer(photo), photo) for photo in photos]
            line["content"] = round(sum(float(t.content) for t in terms) / len(terms), 3)
            line["style"] = round(sum(float(t.style) for t in terms) / len(terms), 3)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
