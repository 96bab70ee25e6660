"""Caffe's building blocks (convolution + in-place ReLU, ceil-mode pooling, LRN, the BGR 0–255 input) and the
caffejs per-layer weight format (one raw float32 file per blob, filters stored (out, kh, kw, in))."""

from __future__ import annotations

import http.client
import math
import os
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from faststyle.errors import FaststyleError
from faststyle.images import sha256_file
from faststyle.lossnets.base import Normalize
from faststyle.lossnets.weights import StateDict

CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)


def caffe_input() -> Normalize:
    """RGB [0,1] -> Caffe's input: BGR, 0–255, minus the per-channel ImageNet mean."""
    return Normalize(CAFFE_MEAN_BGR, (1.0, 1.0, 1.0), scale=255.0, bgr=True)


class CaffeConv(nn.Sequential):
    """A Caffe convolution followed by its in-place ReLU; ``caffe_name`` names its caffejs weight files."""

    def __init__(
        self,
        caffe_name: str,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
    ) -> None:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups)
        super().__init__(conv, nn.ReLU(inplace=True))
        self.caffe_name = caffe_name
        self.out_channels = out_channels


def caffe_max_pool(stride: int = 2, padding: int = 0) -> nn.MaxPool2d:
    """Caffe's 3×3 max pooling; Caffe rounds the output size up, hence ``ceil_mode``."""
    return nn.MaxPool2d(3, stride, padding, ceil_mode=True)


class CaffeLRN(nn.LocalResponseNorm):
    """Caffe's LRN across channels (local_size 5, alpha 1e-4, beta 0.75, k 1; both divide alpha by the size), in
    float32 whatever autocast chose: at Caffe's 0-255 scale the squares it sums pass float16's 65,504 (GoogLeNet's
    pool1/3x3_s2 reaches ~1,750), and the overflowed positions would come out as 0 with zero gradients."""

    def __init__(self) -> None:
        super().__init__(5, alpha=1e-4, beta=0.75, k=1.0)

    def forward(self, input: Tensor) -> Tensor:
        if input.dtype == torch.float32:
            return super().forward(input)
        with torch.autocast(input.device.type, enabled=False):
            return super().forward(input.float()).to(input.dtype)


def caffe_stack(
    layers: Sequence[tuple[str, nn.Module]], in_channels: int = 3
) -> tuple[nn.Sequential, dict[str, int], dict[str, int]]:
    """``body``, ``taps`` and ``channels`` for a list of (layer name, module), each module producing its layer."""
    taps: dict[str, int] = {}
    channels: dict[str, int] = {}
    width = in_channels
    for index, (name, module) in enumerate(layers):
        width = getattr(module, "out_channels", width)
        taps[name] = index
        channels[name] = width
    return nn.Sequential(*(module for _, module in layers)), taps, channels


# -- caffejs per-layer folders ---------------------------------------------------------------------------


def caffejs_folder(location: str | os.PathLike[str] | None, env: str) -> Path:
    """``location``, else ``$env``: an existing folder, or a FaststyleError saying how to name one."""
    chosen = location or os.environ.get(env)
    if not chosen:
        raise FaststyleError(f"this source needs a caffejs weights folder: --path DIR or ${env}")
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        raise FaststyleError(f"{folder} is not a folder; give the caffejs weights folder (with conv1/, … inside)")
    return folder


def read_caffejs_blob(folder: Path, file: str, shape: Sequence[int], checksums: dict[str, str] | None = None) -> Tensor:
    """One raw float32 little-endian blob of ``shape``, its sha256 checked when ``checksums`` is given."""
    path = folder / file
    if not path.is_file():
        raise FaststyleError(f"{file} is missing from the caffejs weights folder {folder}")
    if checksums is not None:
        digest = sha256_file(path)
        if digest != checksums[file]:
            raise FaststyleError(
                f"{path} has sha256 {digest}, not the expected {checksums[file]}: the file is damaged or from "
                "another model; get the folder again"
            )
    data = np.fromfile(path, dtype="<f4")
    if data.size != math.prod(shape):
        raise FaststyleError(f"{path} holds {data.size} floats, but {file} needs {math.prod(shape)} {tuple(shape)}")
    return torch.from_numpy(data.astype(np.float32).reshape(shape))


def caffejs_convs(body: nn.Module) -> dict[str, CaffeConv]:
    """Every Caffe convolution in ``body`` by its state-dict prefix."""
    return {prefix: module for prefix, module in body.named_modules() if isinstance(module, CaffeConv)}


def caffejs_files(body: nn.Module) -> list[str]:
    return [f"{m.caffe_name}_{blob}.bin" for m in caffejs_convs(body).values() for blob in ("filter", "bias")]


def read_caffejs(folder: Path, body: nn.Module, checksums: dict[str, str] | None = None) -> StateDict:
    """The state dict of ``body`` from a caffejs folder; filters are stored (out, kh, kw, in) there."""
    state: StateDict = {}
    for prefix, module in caffejs_convs(body).items():
        conv: nn.Conv2d = module[0]
        out_channels, in_channels, kh, kw = conv.weight.shape
        name = module.caffe_name
        weight = read_caffejs_blob(folder, f"{name}_filter.bin", (out_channels, kh, kw, in_channels), checksums)
        state[f"{prefix}.0.weight"] = weight.permute(0, 3, 1, 2).contiguous()
        state[f"{prefix}.0.bias"] = read_caffejs_blob(folder, f"{name}_bias.bin", (out_channels,), checksums)
    return state


def download_caffejs(files: Sequence[str], folder: Path, base_url: str, timeout: float = 60.0) -> None:
    """Download ``base_url + file`` for every file into ``folder``; a failure raises FaststyleError."""
    if folder.exists() and not folder.is_dir():
        raise FaststyleError(f"{folder} is a file; give --path a folder to download the GoogLeNet files into")
    for file in files:
        target = folder / file
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        url = base_url + file
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                partial.write_bytes(response.read())
        except (OSError, http.client.HTTPException, ValueError) as exc:
            partial.unlink(missing_ok=True)
            raise FaststyleError(
                f"could not download {url} ({type(exc).__name__}: {exc}); check the internet connection, or "
                "get the folder yourself and run `faststyle weights get googlenet --from caffejs --path DIR`"
            ) from None
        os.replace(partial, target)
