"""The feed-forward model file: TransformerNet weights as safetensors, everything else as JSON metadata.

The metadata records what is needed to use and to reproduce the model: the network's constructor
arguments, backbone and its weights' sha256, layer and loss weights, style image sha256 and size, training
steps, batch, data source and package versions. It lives in the safetensors header under ``faststyle``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from faststyle.errors import FaststyleError
from faststyle.lossnets.weights import save_state_dict

FORMAT = "faststyle-model/1"
CPUINFO = Path("/proc/cpuinfo")


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in ("faststyle", "torch", "torchvision", "pytorch-lightning", "datasets"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[name] = md.version(name)
    return versions


def hardware(device: torch.device) -> str:
    """What a run's timings were measured on, e.g. ``NVIDIA H100 80GB HBM3`` or ``cpu AMD EPYC 7B13, 2 threads``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {cpu_name()}, {torch.get_num_threads()} threads"


def cpu_name() -> str:
    """The CPU's model where the system says it, else its architecture (Linux's platform.processor() is empty)."""
    system = platform.system()
    named = _linux_cpu_name() if system == "Linux" else _mac_cpu_name() if system == "Darwin" else ""
    return named or platform.processor() or platform.machine() or "unknown"


def _linux_cpu_name() -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return ""


def _mac_cpu_name() -> str:
    import subprocess

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5)
        return done.stdout.strip() if done.returncode == 0 else ""
    return ""


def save_model(net: torch.nn.Module, path: str | os.PathLike[str], metadata: dict[str, Any], half: bool = True) -> Path:
    """Write the model file atomically; ``half`` stores the weights as float16."""
    from faststyle.transformer import TransformerNet

    if not isinstance(net, TransformerNet):
        raise TypeError("save_model takes a TransformerNet")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise FaststyleError(f"model files end in .safetensors, not {path.name!r}")
    dtype = torch.float16 if half else torch.float32
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype) for k, v in net.state_dict().items()}
    meta = {
        "format": FORMAT,
        "transformer": net.config(),
        "dtype": str(dtype).removeprefix("torch."),
        "versions": package_versions(),
    } | metadata
    save_state_dict(state, path, metadata={"faststyle": json.dumps(meta, sort_keys=True)})
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FaststyleError(
            f"model file {path} does not exist; train one with `faststyle train` or pick one from checkpoints/"
        )
    try:
        with safe_open(path, framework="pt") as handle:
            raw = (handle.metadata() or {}).get("faststyle")
    except (SafetensorError, OSError, ValueError) as exc:
        raise FaststyleError(f"{path} is not a safetensors model file ({exc})") from None
    if raw is None:
        raise FaststyleError(f"{path} is a safetensors file but not a faststyle model (no 'faststyle' metadata)")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise FaststyleError(f"{path}'s faststyle metadata is damaged ({exc}); train or copy the model again") from None
    if not isinstance(meta, dict):
        raise FaststyleError(f"{path}'s faststyle metadata is not a record but {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise FaststyleError(f"{path} has model format {meta.get('format')!r}; this faststyle reads {FORMAT}")
    return meta


def load_model(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The TransformerNet (float32, eval mode) and the metadata of a model file."""
    from safetensors.torch import load_file

    from faststyle.transformer import TransformerNet

    meta = read_metadata(path)
    record = meta.get("transformer")
    try:
        if not isinstance(record, dict):
            raise TypeError("not a record of width and num_residual")
        net = TransformerNet.from_config(record)  # names unknown keys itself
    except (TypeError, ValueError) as exc:
        raise FaststyleError(
            f"{path}'s network record (transformer: {record!r}) is damaged ({exc}); train or copy the model again"
        ) from None
    try:
        state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(path).items()}
    except (SafetensorError, OSError) as exc:
        raise FaststyleError(f"cannot read the weights in {path} ({exc}); the file may be truncated") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise FaststyleError(f"{path}: weights do not match the recorded network ({exc})") from None
    return net.eval().to(device), meta
