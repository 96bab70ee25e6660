"""BVLC GoogLeNet (Inception v1) as trained in Caffe, with Caffe's layer names (``inception_3a/output``).

Not torchvision's GoogLeNet: this is the Caffe model zoo's ``bvlc_googlenet`` (LRN, no batch norm, 5×5
branches, BGR 0–255 input), the network the Caffe style-transfer code used. Its weights come from a caffejs
per-layer folder (one float32 file per blob), checked against the sha256 values shipped beside this module.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

from faststyle.lossnets.base import LossNet
from faststyle.lossnets.caffe import (
    CaffeConv,
    CaffeLRN,
    caffe_input,
    caffe_max_pool,
    caffe_stack,
    caffejs_files,
    caffejs_folder,
    download_caffejs,
    read_caffejs,
    read_caffejs_blob,
)
from faststyle.lossnets.weights import StateDict, WeightSource, register_source

GOOGLENET_DIR_ENV = "FASTSTYLE_GOOGLENET_DIR"
CAFFEJS_COMMIT = "d161d610145d6ce1ee4b9e44b10de780e8ecec2d"
CAFFEJS_URL = f"https://raw.githubusercontent.com/chaosmail/caffejs/{CAFFEJS_COMMIT}/models/bvlc_googlenet/weights/"
CHECKSUMS_FILE = Path(__file__).with_name("bvlc_googlenet_sha256.json")
CLASSIFIER = "loss3/classifier"

# name: (1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj) output channels, from deploy.prototxt
INCEPTIONS: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class Inception(nn.Module):
    """One inception module: 1×1, 1×1→3×3, 1×1→5×5 and 3×3 max-pool→1×1 branches, concatenated."""

    def __init__(self, name: str, in_channels: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        c1, c3_reduce, c3, c5_reduce, c5, pool_proj = widths
        self.branch1 = CaffeConv(f"{name}/1x1", in_channels, c1, 1)
        self.branch3 = nn.Sequential(
            CaffeConv(f"{name}/3x3_reduce", in_channels, c3_reduce, 1),
            CaffeConv(f"{name}/3x3", c3_reduce, c3, 3, padding=1),
        )
        self.branch5 = nn.Sequential(
            CaffeConv(f"{name}/5x5_reduce", in_channels, c5_reduce, 1),
            CaffeConv(f"{name}/5x5", c5_reduce, c5, 5, padding=2),
        )
        self.branch_pool = nn.Sequential(
            caffe_max_pool(stride=1, padding=1),
            CaffeConv(f"{name}/pool_proj", in_channels, pool_proj, 1),
        )
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


class GoogLeNet(LossNet):
    """BVLC GoogLeNet up to ``inception_5b/output``; input RGB [0,1], fed to the network as Caffe's BGR 0–255."""

    name = "googlenet"

    def __init__(self) -> None:
        layers: list[tuple[str, nn.Module]] = [
            ("conv1/7x7_s2", CaffeConv("conv1/7x7_s2", 3, 64, 7, stride=2, padding=3)),
            ("pool1/3x3_s2", caffe_max_pool()),
            ("pool1/norm1", CaffeLRN()),
            ("conv2/3x3_reduce", CaffeConv("conv2/3x3_reduce", 64, 64, 1)),
            ("conv2/3x3", CaffeConv("conv2/3x3", 64, 192, 3, padding=1)),
            ("conv2/norm2", CaffeLRN()),
            ("pool2/3x3_s2", caffe_max_pool()),
        ]
        width = 192
        for stage in ("3a", "3b", "pool3", "4a", "4b", "4c", "4d", "4e", "pool4", "5a", "5b"):
            if stage.startswith("pool"):
                layers.append((f"{stage}/3x3_s2", caffe_max_pool()))
                continue
            inception = Inception(f"inception_{stage}", width, INCEPTIONS[stage])
            layers.append((f"inception_{stage}/output", inception))
            width = inception.out_channels
        super().__init__(*caffe_stack(layers), normalize=caffe_input())

    def classify(self, images: Tensor, classifier: nn.Linear) -> Tensor:
        """ImageNet logits (N, 1000): global average of ``inception_5b/output``, then ``classifier``.

        The loss network never needs the classifier; get it with :func:`load_bvlc_classifier`.
        """
        features = self(images, ["inception_5b/output"])["inception_5b/output"]
        return classifier(features.mean(dim=(2, 3)))


def googlenet() -> GoogLeNet:
    return GoogLeNet()


# -- caffejs per-layer folders ----------------------------------------------------------------------------


@functools.cache
def bvlc_googlenet_checksums() -> dict[str, str]:
    """sha256 of every caffejs file of the BVLC GoogLeNet, by its path relative to the weights folder."""
    return json.loads(CHECKSUMS_FILE.read_text())


def load_bvlc_classifier(location: str | os.PathLike[str] | None = None) -> nn.Linear:
    """GoogLeNet's ``loss3/classifier`` (1024 -> 1000 ImageNet classes) from a caffejs folder, checksum-verified."""
    folder = caffejs_folder(location, GOOGLENET_DIR_ENV)
    checksums = bvlc_googlenet_checksums()
    classifier = nn.Linear(1024, 1000)
    with torch.no_grad():
        classifier.weight.copy_(read_caffejs_blob(folder, f"{CLASSIFIER}_filter.bin", (1000, 1024), checksums))
        classifier.bias.copy_(read_caffejs_blob(folder, f"{CLASSIFIER}_bias.bin", (1000,), checksums))
    return classifier.eval().requires_grad_(False)


def _from_caffejs_folder(location: str | None, _cache: Path) -> StateDict:
    folder = caffejs_folder(location, GOOGLENET_DIR_ENV)
    return read_caffejs(folder, GoogLeNet().body, bvlc_googlenet_checksums())


def _from_caffejs_download(location: str | None, _cache: Path) -> StateDict:
    body = GoogLeNet().body
    if location:
        folder = Path(location).expanduser()
        download_caffejs(caffejs_files(body), folder, CAFFEJS_URL)
        return read_caffejs(folder, body, bvlc_googlenet_checksums())
    with tempfile.TemporaryDirectory(prefix="faststyle-googlenet-") as tmp:
        download_caffejs(caffejs_files(body), Path(tmp), CAFFEJS_URL)
        return read_caffejs(Path(tmp), body, bvlc_googlenet_checksums())


register_source(
    WeightSource(
        network="googlenet",
        name="caffejs",
        describe=f"a caffejs bvlc_googlenet weights folder (--path DIR or ${GOOGLENET_DIR_ENV}), sha256-checked",
        how="faststyle weights get googlenet --from caffejs --path DIR",
        fetch=_from_caffejs_folder,
        reads_path=True,
    )
)
register_source(
    WeightSource(
        network="googlenet",
        name="caffejs-download",
        describe=f"downloads the caffejs bvlc_googlenet files (chaosmail/caffejs@{CAFFEJS_COMMIT[:7]}), "
        "sha256-checked; --path DIR keeps them there",
        how="faststyle weights get googlenet --from caffejs-download [--path DIR]",
        fetch=_from_caffejs_download,
        keeps_path=True,
    )
)
