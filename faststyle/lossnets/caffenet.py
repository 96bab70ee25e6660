"""BVLC CaffeNet (``bvlc_reference_caffenet``): Caffe's grouped AlexNet variant, conv1 … conv5 (96/256/384/384/256).

No weights for it ship or download: a user names a state-dict file (``--from file``) or a caffejs-style
per-layer folder of their own (``conv1_filter.bin``, ``conv1_bias.bin``, …).
"""

from __future__ import annotations

from pathlib import Path

from faststyle.lossnets.base import LossNet
from faststyle.lossnets.caffe import (
    CaffeConv,
    CaffeLRN,
    caffe_input,
    caffe_max_pool,
    caffe_stack,
    caffejs_folder,
    read_caffejs,
)
from faststyle.lossnets.weights import StateDict, WeightSource, register_source

CAFFENET_DIR_ENV = "FASTSTYLE_CAFFENET_DIR"


class CaffeNet(LossNet):
    """CaffeNet's convolutional part; input RGB [0,1], fed as BGR 0–255 minus the ILSVRC mean's channel averages.

    Caffe subtracted the full ILSVRC mean image; its per-channel average (104, 117, 123) stands in for it.
    Unlike AlexNet as defined in Caffe, CaffeNet pools before it normalises.
    """

    name = "caffenet"

    def __init__(self) -> None:
        layers = [
            ("conv1", CaffeConv("conv1", 3, 96, 11, stride=4)),
            ("pool1", caffe_max_pool()),
            ("norm1", CaffeLRN()),
            ("conv2", CaffeConv("conv2", 96, 256, 5, padding=2, groups=2)),
            ("pool2", caffe_max_pool()),
            ("norm2", CaffeLRN()),
            ("conv3", CaffeConv("conv3", 256, 384, 3, padding=1)),
            ("conv4", CaffeConv("conv4", 384, 384, 3, padding=1, groups=2)),
            ("conv5", CaffeConv("conv5", 384, 256, 3, padding=1, groups=2)),
            ("pool5", caffe_max_pool()),
        ]
        super().__init__(*caffe_stack(layers), normalize=caffe_input())


def caffenet() -> CaffeNet:
    return CaffeNet()


def _from_caffejs_folder(location: str | None, _cache: Path) -> StateDict:
    return read_caffejs(caffejs_folder(location, CAFFENET_DIR_ENV), CaffeNet().body)


register_source(
    WeightSource(
        network="caffenet",
        name="caffejs",
        describe=f"your caffejs-style CaffeNet folder (--path DIR or ${CAFFENET_DIR_ENV}); no checksums are known, "
        "so the files are not verified",
        how="faststyle weights get caffenet --from caffejs --path DIR",
        fetch=_from_caffejs_folder,
        reads_path=True,
    )
)
