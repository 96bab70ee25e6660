"""Which torch device a command runs on."""

from __future__ import annotations

import torch

from faststyle.errors import FaststyleError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when this machine has it, else the CPU; otherwise cpu, cuda or cuda:N, refused
    with a message when this machine lacks it."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise FaststyleError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise FaststyleError(f"device {device} is not supported; use auto, cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FaststyleError(f"device {device}: CUDA is not available on this machine; use the CPU (--device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise FaststyleError(
            f"device {device}: this machine has {count} GPU{'s' * (count != 1)}, cuda:0 to cuda:{count - 1}"
        )
    return device
