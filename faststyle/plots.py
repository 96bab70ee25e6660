"""Small static line plots as inline SVG (no plotting library): loss curves for the compare report."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}"


def line_plot(
    series: Mapping[str, Sequence[tuple[float, float]]],
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    log_y: bool = False,
    width: int = 420,
    height: int = 240,
) -> str:
    """An ``<svg>`` element with one polyline per named series of (x, y) points and a legend.

    ``log_y`` plots log10(y) and drops points with y <= 0. Non-finite points are dropped.
    """
    clean: dict[str, list[tuple[float, float]]] = {}
    for name, points in series.items():
        kept = [
            (float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log_y)
        ]
        if kept:
            clean[name] = [(x, math.log10(y) if log_y else y) for x, y in kept]
    legend = 36 + 6 * max((len(name) for name in series), default=0)  # a column right of the plot, off the curves
    left, right, top, bottom = 58, 12 + legend, 24 if title else 10, 38
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title or "plot")}">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    if title:
        parts.append(f'<text x="{width / 2:.1f}" y="15" text-anchor="middle" font-size="12">{escape(title)}</text>')
    if not clean:
        parts.append(
            f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" font-size="12">no data</text>'
        )
        return "".join(parts) + "</svg>"
    xs = [x for pts in clean.values() for x, _ in pts]
    ys = [y for pts in clean.values() for _, y in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    axis = 'stroke="#888" stroke-width="1"'
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" {axis}/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" {axis}/>')
    for tick in _ticks(x0, x1):
        y = top + plot_h + 14
        parts.append(f'<text x="{px(tick):.1f}" y="{y}" text-anchor="middle" font-size="10">{_label(tick)}</text>')
    y_ticks = _ticks(y0, y1)
    if log_y and math.floor(y1) - math.ceil(y0) >= 1:
        y_ticks = [float(e) for e in range(math.ceil(y0), math.floor(y1) + 1)]
    for tick in y_ticks:
        shown = _label(10**tick) if log_y else _label(tick)
        parts.append(f'<line x1="{left}" y1="{py(tick):.1f}" x2="{left + plot_w}" y2="{py(tick):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 4}" y="{py(tick) + 3:.1f}" text-anchor="end" font-size="10">{shown}</text>')
    if xlabel:
        parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" font-size="11">'
                     f"{escape(xlabel)}</text>")  # fmt: skip
    if ylabel:
        text = escape(ylabel + (" (log)" if log_y else ""))
        parts.append(f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" font-size="11" '
                     f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{text}</text>')  # fmt: skip
    for i, (name, pts) in enumerate(clean.items()):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>')
        ly, lx = top + 12 + 13 * i, left + plot_w + 12
        parts.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 16}" y2="{ly - 4}" stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text x="{lx + 20}" y="{ly}" font-size="10">{escape(name)}</text>')
    return "".join(parts) + "</svg>"
