"""How many operations each unit of hot work dispatches, and how often the Gatys loop reads from the device.

On a GPU every dispatched operation costs the host a kernel launch (a few microseconds of Python and C++), and
every read of a value (``bool``, ``float``, ``.tolist()``, ``torch.equal``) waits for the GPU to drain. Where the
arithmetic is small, those counts set the speed, and they are the same on the CPU, where this script runs:

    python tools/launch_counts.py            # random-weight VGG16, 64 px; one JSON line

Counts, per Gatys L-BFGS iteration (the mean over iterations 11–30), per training loss step (targets, transformer
and loss forward, backward, the logged terms; batch 4) and per loss forward+backward in each normalisation.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from faststyle.benchmarks.gatys import synthetic_images
from faststyle.config import layer_config
from faststyle.gatys import stylize
from faststyle.losses import PerceptualLoss
from faststyle.lossnets import get_lossnet
from faststyle.transformer import TransformerNet


class _Operations(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.count += 1
        return func(*args, **(kwargs or {}))


class _Reads:
    """Counts the calls that copy a value from the tensor to Python."""

    NAMES = ("__bool__", "__float__", "__int__", "item", "tolist")

    def __enter__(self) -> _Reads:
        self.count = 0
        self.saved = {name: getattr(torch.Tensor, name) for name in self.NAMES}
        self.equal = torch.equal
        for name, method in self.saved.items():
            setattr(torch.Tensor, name, self._counted(method))
        torch.equal = self._counted(self.equal)
        return self

    def _counted(self, method):  # noqa: ANN001, ANN202
        def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            self.count += 1
            return method(*args, **kwargs)

        return counted

    def __exit__(self, *exc: object) -> None:
        for name, method in self.saved.items():
            setattr(torch.Tensor, name, method)
        torch.equal = self.equal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    args = parser.parse_args()
    torch.manual_seed(0)
    net = get_lossnet("vgg16", weights="random", device="cpu")
    config = layer_config("vgg16", None)
    content, style = synthetic_images(args.size, 0)

    def gatys(iters: int) -> int:
        _, history = stylize(content, style, lossnet=net, config=config, size=args.size, iters=iters, progress=False)
        return int(history[-1]["evaluations"])

    result: dict[str, object] = {"size": args.size, "torch": torch.__version__}
    counts = {}
    for iters in (10, 30):
        with _Operations() as operations, _Reads() as reads:
            evaluations = gatys(iters)
        counts[iters] = (operations.count, reads.count, evaluations)
    (ops10, reads10, evals10), (ops30, reads30, evals30) = counts[10], counts[30]
    result["gatys_per_iteration"] = {
        "operations": (ops30 - ops10) / 20,
        "reads": (reads30 - reads10) / 20,
        "evaluations": (evals30 - evals10) / 20,
    }
    photos = torch.rand(4, 3, args.size, args.size)
    for normalization in ("caffe", "mean"):
        loss = PerceptualLoss(net, config, [style], tv_weight=1.0, normalization=normalization)
        output = photos.clone().requires_grad_(True)
        targets = loss.content_features(photos)
        with _Operations() as operations:
            terms = loss(output, content_features=targets)
            terms.total.backward()
            terms.as_tensors()
        result[f"loss_{normalization}_fwd_bwd"] = operations.count
    loss = PerceptualLoss(net, config, [style], tv_weight=1.0, normalization="mean")
    transformer = TransformerNet()
    with _Operations() as operations:
        terms = loss(transformer(photos), content_features=loss.content_features(photos))
        terms.total.backward()
        terms.as_tensors()
    result["training_loss_step"] = operations.count
    print(json.dumps(result))


if __name__ == "__main__":
    main()
