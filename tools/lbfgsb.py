"""The Gatys mode's box L-BFGS against SciPy's L-BFGS-B, the reference code's optimiser, on the same loss.

Both start from the content and minimise the default Gatys loss (ratio 1e4, style 1.2× the content's size); the table
gives each one's lowest loss after the same number of loss-network passes:

    python tools/lbfgsb.py --size 128 --passes 300
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.optimize
import torch

from faststyle.config import layer_config
from faststyle.gatys import LBFGS_HISTORY, caffe_pixel_scale, stylize
from faststyle.images import load_image, resize_long_side
from faststyle.losses import PerceptualLoss
from faststyle.lossnets import get_lossnet

SHARED = "../shared/data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--content", default=f"{SHARED}/content/tubingen.jpg")
    parser.add_argument("--style", default=f"{SHARED}/styles/vangogh_starry_night_crop.jpg")
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--passes", type=int, default=100, help="loss-network passes for each optimiser")
    args = parser.parse_args()

    content, style = load_image(args.content), load_image(args.style)
    net = get_lossnet(args.backbone)
    started = time.perf_counter()
    _, history = stylize(content, style, lossnet=net, size=args.size, iters=args.passes, progress=False)
    ours_seconds = time.perf_counter() - started
    ours = {int(h["evaluations"]): h["total"] for h in history}

    target = resize_long_side(content, args.size)
    loss = PerceptualLoss(
        net,
        layer_config(net.name, None),
        [resize_long_side(style, round(1.2 * args.size))],
        normalization="caffe",
        style_target="whole",
        content_weight=1.0,
        style_weight=1e4 * caffe_pixel_scale(net) ** 2,
        tv_weight=0.0,
    )
    content_features = loss.content_features(target)
    losses: list[float] = []

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        pixels = torch.from_numpy(x.astype(np.float32)).view_as(target).requires_grad_(True)
        total = loss(pixels, content_features=content_features).total
        total.backward()
        assert pixels.grad is not None
        losses.append(float(total.detach()))
        return losses[-1], pixels.grad.double().numpy().ravel()

    start = target.double().numpy().ravel()
    started = time.perf_counter()
    scipy.optimize.minimize(
        objective,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, 1.0)] * start.size,
        options={"maxcor": LBFGS_HISTORY, "maxfun": args.passes, "maxiter": 10**6, "ftol": 0.0, "gtol": 0.0},
    )
    scipy_seconds = time.perf_counter() - started
    lowest = np.minimum.accumulate(losses)
    print(json.dumps({"size": args.size, "backbone": net.name, "box_s": ours_seconds, "scipy_s": scipy_seconds}))
    print("passes  box L-BFGS  L-BFGS-B  ratio")
    for passes in (5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000):
        if passes > min(args.passes, len(lowest)):
            break
        box = min(v for e, v in ours.items() if e <= passes)
        reference = lowest[passes - 1]
        print(f"{passes:6d}  {box:10.4g}  {reference:8.4g}  {box / reference:5.3f}")


if __name__ == "__main__":
    main()
