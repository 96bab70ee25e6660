"""ONNX export of a style network with dynamic batch, height and width.

Uses the TorchScript-based exporter (``dynamo=False``): with torch 2.14 the dynamo exporter produces a graph whose
shapes are wrong for sizes that are not multiples of 4 (the network pads its input to a multiple of 4), which
ONNX Runtime rejects at run time.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from faststyle.errors import FaststyleError
from faststyle.images import atomic_write_bytes, check_writable

DEFAULT_OPSET = 17
INPUT, OUTPUT = "image", "stylized"


ONNX_HINT = "pip install 'faststyle[onnx]'"


def missing_onnx(runtime: bool = True) -> list[str]:
    """The packages that ONNX export (and, with ``runtime``, ONNX Runtime) needs and this Python lacks."""
    import importlib.util

    needed = ["onnx", "onnxruntime"] if runtime else ["onnx"]
    return [name for name in needed if importlib.util.find_spec(name) is None]


def require_onnx(what: str, runtime: bool = True) -> None:
    if missing := missing_onnx(runtime):
        raise FaststyleError(f"{what} needs {' and '.join(missing)}, not installed here: {ONNX_HINT}")


def onnx_bytes(net: nn.Module, opset: int = DEFAULT_OPSET) -> bytes:
    """The network as an ONNX model: input ``image`` (N,3,H,W) RGB [0,1] float32, output ``stylized``."""
    require_onnx("ONNX export", runtime=False)
    net = copy.deepcopy(net).float().cpu().eval()
    sample = torch.rand(1, 3, 64, 96)
    axes = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                net,
                (sample,),
                buffer,
                dynamo=False,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: axes, OUTPUT: axes},
                opset_version=opset,
            )
    return buffer.getvalue()


def verify_onnx(
    model: bytes | str | os.PathLike[str], net: nn.Module, sizes: Sequence[tuple[int, int]] = ((256, 256), (198, 331))
) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch over random images of ``sizes`` (infinite where
    ONNX Runtime gives NaN); a network whose own output is not finite is refused."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise FaststyleError(f"verifying needs onnxruntime: {ONNX_HINT}") from None
    source = model if isinstance(model, bytes) else str(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    net = copy.deepcopy(net).float().cpu().eval()
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    for h, w in sizes:
        image = torch.rand(1, 3, h, w, generator=generator)
        ours = torch.from_numpy(session.run(None, {INPUT: image.numpy()})[0])
        with torch.inference_mode():
            reference = net(image).float()
        if ours.shape != reference.shape:
            raise FaststyleError(f"the ONNX model returned shape {tuple(ours.shape)} for {h}x{w}; re-export it")
        if not torch.isfinite(reference).all():
            raise FaststyleError(
                f"the network's own output is not finite (NaN or infinite) for a {w}x{h} image, so there is "
                "nothing to compare: its weights are damaged (a half-precision model file holds at most 65504)"
            )
        difference = (ours - reference).abs().max().item()
        worst = max(worst, difference if math.isfinite(difference) else math.inf)  # max() passes over NaN
    return worst


def export_onnx(
    model: str | os.PathLike[str] | nn.Module,
    out: str | os.PathLike[str],
    opset: int = DEFAULT_OPSET,
    verify: bool = False,
    tolerance: float = 1e-3,
) -> tuple[Path, float | None]:
    """Write ``model`` (a NAME, a model file or a network) as ONNX to ``out`` atomically; with ``verify``, also check
    it in ONNX Runtime at two sizes and return the largest difference from PyTorch."""
    from faststyle.stylize import find_model

    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise FaststyleError(f"ONNX files end in .onnx, not {out.name!r}")
    if out.is_dir():
        raise FaststyleError(f"{out} is a folder; name the .onnx file to write")
    check_writable(out.parent, "the ONNX file")
    if isinstance(model, nn.Module):
        net = model
    else:
        from faststyle.modelfile import load_model

        net, _ = load_model(find_model(model))
    try:
        with _stdout_held_back():
            data = onnx_bytes(net, opset)
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__  # not the graph dump
        raise FaststyleError(f"ONNX export failed at opset {opset} ({first}); try --opset {DEFAULT_OPSET}") from None
    difference = None
    if verify:
        try:
            difference = verify_onnx(data, net)
        except FaststyleError as exc:
            raise FaststyleError(f"{exc}; nothing was written") from None
        if difference > tolerance:
            raise FaststyleError(
                f"the ONNX model differs from PyTorch by {difference:.2g} (> {tolerance}); nothing was written. "
                "Report this with your torch and onnxruntime versions"
            )
    atomic_write_bytes(out, data)
    return out, difference


@contextlib.contextmanager
def _stdout_held_back() -> Iterator[None]:
    """Standard output at the file-descriptor level goes to a temporary file, passed on only on success: a failed
    export has torch's C++ code print the whole graph there."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no standard output to hold back
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        held.seek(0)
        if sys.stdout is not None:
            sys.stdout.write(held.read().decode(errors="replace"))
