"""Measure the style pull (faststyle.balance) of loss networks over paintings, as the README's table.

    python tools/style_balance.py --styles ../shared/data/styles --photos ../shared/data/train \
        --backbones vgg16,alexnet,googlenet --sizes 128,256
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from faststyle.balance import BALANCE_PHOTOS, fit_to, style_pull
from faststyle.config import default_config
from faststyle.data import PhotoDataModule
from faststyle.images import load_image
from faststyle.losses import PerceptualLoss
from faststyle.lossnets import get_lossnet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--styles", type=Path, required=True, help="a painting or a folder of them")
    parser.add_argument("--photos", type=Path, required=True, help="a folder of photos: the 8 that training uses")
    parser.add_argument("--backbones", default="vgg16")
    parser.add_argument("--sizes", default="256", help="crop sizes; each painting is shown at 1.5x, as in training")
    args = parser.parse_args()
    styles = sorted(args.styles.glob("*.jpg")) if args.styles.is_dir() else [args.styles]
    sizes = [int(s) for s in args.sizes.split(",")]
    chosen = PhotoDataModule(str(args.photos), batch_size=1, size=max(sizes), num_workers=0).val_photos(
        BALANCE_PHOTOS, 2 * max(sizes)
    )  # the photos and scale train --style-weight auto measures on
    nets = {name: get_lossnet(name) for name in args.backbones.split(",")}
    print("painting\tsize\t" + "\t".join(f"{n} pull" for n in nets))
    pulls: dict[tuple[str, int], list[float]] = {}
    for size in sizes:
        photos = [fit_to(p, size, size) for p in chosen]
        for style in styles:
            painting = load_image(style, round(1.5 * size))
            row = []
            for name, net in nets.items():
                loss = PerceptualLoss(net, default_config(name), [painting], normalization="mean")
                pull = statistics.median(style_pull(loss, photos, [painting]))
                pulls.setdefault((name, size), []).append(pull)
                row.append(f"{pull:.3f}")
            print(f"{style.name}\t{size}\t" + "\t".join(row), flush=True)
    for (name, size), values in pulls.items():
        print(f"median over the paintings: {name} at {size} px, pull per unit weight {statistics.median(values):.3f}")


if __name__ == "__main__":
    main()
