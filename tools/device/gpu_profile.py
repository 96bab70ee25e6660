"""Where the time goes in the two GPU paths that miss their targets: Gatys iterations (VGG16, 512 px) and one
inference call (1920×1080), under torch.profiler. For each: wall time per iteration or call, the share of it the
GPU spent in kernels (low: the GPU waits for Python, launches or host synchronisations), the host synchronisations
and copies, and the operators by device time (CPU time where there is no GPU).

    python tools/device/gpu_profile.py --device cuda --out DIR     (writes DIR/profile.txt; prints the summary lines)
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from faststyle.device import resolve_device
from faststyle.gatys import stylize
from faststyle.images import load_image
from faststyle.lossnets import get_lossnet
from faststyle.stylize import Stylizer
from faststyle.transformer import TransformerNet

HOST_WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpyAsync", "cudaMemcpy")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profiled(name: str, fn: Callable[[], object], count: int, device: torch.device, rows: int) -> tuple[str, str]:
    """(summary line, table) for ``count`` calls of ``fn`` after one warm-up call."""
    fn()
    _synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(count):
            fn()
        _synchronize(device)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    line = f"{name}: {1000 * wall / count:.2f} ms per call ({count} calls)"
    if device.type == "cuda":
        kernels = sum(_device_us(e) for e in events if e.device_type == DeviceType.CUDA) / 1e6
        waits = {e.key: e.count // count for e in events if e.key in HOST_WAITS}
        line += f"; GPU busy {100 * kernels / wall:.0f}% of the wall time; host waits and copies per call: {waits}"
    sort = "self_cpu_time_total"
    if device.type == "cuda":
        sort = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    return line, f"== {line}\n{events.table(sort_by=sort, row_limit=rows)}\n"


def _device_us(event: object) -> float:
    """An event's own device time in µs (its attribute's name changed in torch 2.4)."""
    return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("FASTSTYLE_SHARED", "../shared")))
    parser.add_argument("--size", type=int, default=512, help="Gatys image size")
    parser.add_argument("--infer-size", default="1080x1920", help="inference HxW")
    parser.add_argument("--iters", type=int, default=10, help="Gatys iterations profiled")
    parser.add_argument("--rows", type=int, default=25, help="operators listed per table")
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    device = resolve_device(args.device)
    data = args.shared / "data"
    content = load_image(data / "content/tubingen.jpg")
    style = load_image(data / "styles/vangogh_starry_night_crop.jpg")
    net = get_lossnet("vgg16", download=False, device=device)

    results = []
    for precision in ("fp32", "bf16"):

        def gatys(precision: str = precision) -> object:
            return stylize(content, style, lossnet=net, size=args.size, iters=args.iters, precision=precision,
                           device=device, progress=False)  # fmt: skip

        name = f"gatys {precision} {args.size}px, {args.iters} iterations"
        results.append(profiled(name, gatys, 1, device, args.rows))

    h, w = (int(v) for v in args.infer_size.split("x"))
    photo = torch.rand(1, 3, h, w, device=device)
    model = TransformerNet().eval()
    stylizer = Stylizer(model, device=device, precision="fp32", backend="eager", tile=0)
    raw = model.to(device)

    def network() -> object:
        with torch.inference_mode():
            return raw(photo)

    results.append(profiled(f"Stylizer eager fp32 {h}x{w}", lambda: stylizer(photo), 10, device, args.rows))
    results.append(profiled(f"the network alone, eager fp32 {h}x{w}", network, 10, device, args.rows))

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.txt").write_text("".join(table for _, table in results))
    for line, _ in results:
        print(line)


if __name__ == "__main__":
    main()
