"""Each style layer's share of a photo's style loss under a layer config, as the README's study gives it.

The style term a training run starts from is the config's weighted sum over its style layers; this prints how that
sum divides between the layers (the median over the 8 photos that `train --style-weight auto` measures on, each
painting at 1.5x the crop size, as in training). A layer with a share near 0 hardly steers the training.

    python tools/layer_shares.py --styles ../shared/data/styles/vangogh_starry_night_crop.jpg \
        --photos ../shared/data/train --configs vgg16,googlenet,alexnet --size 128
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from faststyle.balance import BALANCE_PHOTOS, fit_to
from faststyle.config import load_config
from faststyle.data import PhotoDataModule
from faststyle.images import load_image
from faststyle.lossnets import get_lossnet
from faststyle.metrics import StyleMeter, layer_shares
from faststyle.settings import default_style_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--styles", type=Path, nargs="+", required=True, help="paintings, or folders of them")
    parser.add_argument("--photos", type=Path, required=True, help="a folder of photos: the 8 that training uses")
    parser.add_argument("--configs", default="vgg16,googlenet,alexnet", help="config names or YAML files")
    parser.add_argument("--size", type=int, default=256, help="crop size; each painting is shown at 1.5x")
    args = parser.parse_args()
    styles = [p for s in args.styles for p in (sorted(s.glob("*.jpg")) if s.is_dir() else [s])]
    photos = PhotoDataModule(str(args.photos), batch_size=1, size=args.size, num_workers=0).val_photos(
        BALANCE_PHOTOS, 2 * args.size
    )
    photos = torch.cat([fit_to(p, args.size, args.size) for p in photos])
    nets: dict[str, torch.nn.Module] = {}
    for config in (load_config(c) for c in args.configs.split(",")):
        if config.backbone not in nets:
            nets[config.backbone] = get_lossnet(config.backbone)
        net = nets[config.backbone]
        for style in styles:
            meter = StyleMeter(net, load_image(style, default_style_size(args.size)), config)
            losses = meter.layer_losses(photos)  # (N,) per layer
            shares = layer_shares(losses, config.style_layers)
            row = ", ".join(f"{layer} {100 * statistics.median(v.tolist()):.1f}%" for layer, v in shares.items())
            print(f"{config.name}\t{style.name}\t{row}", flush=True)


if __name__ == "__main__":
    main()
