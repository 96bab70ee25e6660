"""Which device a command runs on, and what it says when this machine lacks it."""

from __future__ import annotations

import pytest
import torch

from faststyle.device import resolve_device
from faststyle.errors import FaststyleError


def test_auto_and_none_pick_cuda_only_where_there_is_one() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("bogus", "unknown device 'bogus'; use auto, cpu, cuda or cuda:N"),
        ("meta", "device meta is not supported; use auto, cpu or cuda"),
    ],
)
def test_devices_that_cannot_run_are_named(device: str, message: str) -> None:
    with pytest.raises(FaststyleError, match=message):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_says_to_use_the_cpu() -> None:
    message = r"device cuda:1: CUDA is not available on this machine; use the CPU \(--device cpu\)"
    with pytest.raises(FaststyleError, match=message):
        resolve_device("cuda:1")


def test_a_gpu_number_past_the_machines_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rather than torch's "invalid device ordinal" at the first tensor moved there (two GPUs stood in here)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(FaststyleError, match=r"device cuda:2: this machine has 2 GPUs, cuda:0 to cuda:1"):
        resolve_device("cuda:2")
