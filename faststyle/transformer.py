"""Johnson et al.'s image transformation network: photo in, stylized photo out, both RGB in [0,1]."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from faststyle.errors import FaststyleError


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, norm: bool = True) -> nn.Sequential:
    """Reflection pad + conv (+ affine instance norm); a conv bias before instance norm would be cancelled."""
    layers: list[nn.Module] = [
        nn.ReflectionPad2d(kernel_size // 2),
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, bias=not norm),
    ]
    if norm:
        layers.append(nn.InstanceNorm2d(out_channels, affine=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels, 3), nn.ReLU(inplace=True), _conv(channels, channels, 3))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2 upsampling, then a 3×3 conv (avoids the checkerboard of transposed convs)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = _conv(in_channels, out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TransformerNet(nn.Module):
    """Image transformation network; any H×W of 5 pixels a side or more in, the same H×W out (the input is padded to a
    multiple of 4). Smaller images go through ``faststyle.stylize.on_min_side``, as the Stylizer sends them."""

    def __init__(self, width: float = 1.0, num_residual: int = 5) -> None:
        super().__init__()
        if width <= 0 or num_residual < 0:
            raise FaststyleError(f"TransformerNet needs width > 0 and num_residual >= 0, got {width}, {num_residual}")
        self.width = float(width)
        self.num_residual = int(num_residual)
        c1, c2, c3 = (max(1, round(c * self.width)) for c in (32, 64, 128))
        relu = nn.ReLU
        self.encoder = nn.Sequential(
            _conv(3, c1, 9), relu(inplace=True),
            _conv(c1, c2, 3, stride=2), relu(inplace=True),
            _conv(c2, c3, 3, stride=2), relu(inplace=True),
        )  # fmt: skip
        self.residuals = nn.Sequential(*(ResidualBlock(c3) for _ in range(self.num_residual)))
        self.decoder = nn.Sequential(
            Upsample(c3, c2), relu(inplace=True),
            Upsample(c2, c1), relu(inplace=True),
            _conv(c1, 3, 9, norm=False),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        """Sigmoid output: (tanh(x)+1)/2 = sigmoid(2x), so it is Johnson's scaled tanh mapped straight to [0,1]."""
        h, w = x.shape[-2:]
        pad_h, pad_w = (h + 3) // 4 * 4 - h, (w + 3) // 4 * 4 - w
        y = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        y = self.decoder(self.residuals(self.encoder(y)))
        return y[..., :h, :w].sigmoid()

    def config(self) -> dict[str, Any]:
        """The constructor arguments, for a model file's metadata."""
        return {"width": self.width, "num_residual": self.num_residual}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TransformerNet:
        unknown = set(config) - {"width", "num_residual"}
        if unknown:
            raise FaststyleError(
                f"transformer config has unknown keys {sorted(unknown)}; the model file may come from a newer "
                "faststyle, upgrade it"
            )
        return cls(**config)
