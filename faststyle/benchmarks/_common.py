"""Shared timing helpers for the benchmarks."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from faststyle.argtypes import non_negative_int, positive_int

WEIGHTS_HELP = "a weights file, or 'random' (timing only); default: the cache, fetching missing weights"


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--warmup", type=non_negative_int, default=1, help="untimed runs first")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs and weights")


@dataclass
class Timing:
    """``peak_memory_gb``: the device's peak during the calls, all it held counted (the other variants' networks and
    optimiser states too); ``call_memory_gb``: the most a call added to what the device held when it began (a
    variant's own weights and optimiser state, held between calls, left out). Alone, a variant peaks between them."""

    seconds: list[float] = field(default_factory=list)
    peak_memory_gb: float | None = None
    call_memory_gb: float | None = None


def timed_together(
    fns: Mapping[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int
) -> dict[str, Timing]:
    """Seconds per call of each of ``fns`` (and peak CUDA memory), the timed calls taken in rounds, one call of each
    per round and the order reversed every other round, so that a shared machine's slow and fast spells fall on every
    variant alike rather than on whichever ran last. A variant whose warm-up raises makes the whole call raise."""
    cuda = device.type == "cuda"

    def call(fn: Callable[[], object], timing: Timing) -> float:
        held = 0
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            held = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device)
            timing.peak_memory_gb = max(timing.peak_memory_gb or 0.0, peak / 1e9)
            timing.call_memory_gb = max(timing.call_memory_gb or 0.0, (peak - held) / 1e9)
        return time.perf_counter() - start

    timings = {name: Timing() for name in fns}
    for name, fn in fns.items():
        for _ in range(warmup):
            call(fn, timings[name])
    names = list(fns)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            timings[name].seconds.append(call(fns[name], timings[name]))
    return timings


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Seconds per call of ``fn`` for ``repeats`` calls after ``warmup`` calls, synchronising CUDA."""
    return timed_together({"": fn}, device, repeats, warmup)[""].seconds


def summary(times: list[float], scale: float = 1.0) -> dict[str, float]:
    values = [t * scale for t in times]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def environment(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
