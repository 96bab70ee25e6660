"""The loss-network study's report, from its ``results.json`` data: ``report.md`` and a static ``index.html`` with the
image grids, the metric and timing tables and the loss curves."""

from __future__ import annotations

import csv
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from faststyle.plots import line_plot


def _fmt(value: float | None) -> str:
    if value is None:  # e.g. the speed of a training session that only wrote the model file of a finished run
        return "–"
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"


def _method_label(method: str) -> str:
    kind, _, column = method.partition(":")
    return {"feedforward": f"{column} (feed-forward)", "gatys": f"{column} (Gatys)"}.get(kind, "content photo")


def _lpips_key(results: dict[str, Any]) -> str:
    """The LPIPS metric's name (``lpips_<network>``) in these results."""
    return next(k for k in results["metrics"]["definitions"] if k.startswith("lpips_"))


def _metric_rows(style: dict[str, Any], lpips: str) -> tuple[list[str], list[list[str]]]:
    iters = sorted({k for s in style["summary"].values() for k in s.get("gatys_gap", {})}, key=int)
    header = ["method", "SSIM-Y ↑ content", f"LPIPS ({lpips.removeprefix('lpips_')}) ↓ content", "colour hist ↓ style"]
    header += ["texture ↓ style (photo = 1)", "fine grain (painting = 1)"]
    header += [f"Gatys gap @{k}" for k in iters]
    steady = any("steadiness" in s for s in style["summary"].values())
    header += ["shimmer 1-px move ↓", "shimmer 2-px move ↓", "camera noise ↓"] if steady else []
    rows = []
    for method in style["methods"]:
        s = style["summary"][method]
        row = [_method_label(method), _fmt(s["ssim_y"]), _fmt(s[lpips]), _fmt(s["color_hist"])]
        row += [_fmt(s[k]) if k in s else "" for k in ("texture", "grain")]
        row += [_fmt(s["gatys_gap"][k]) if "gatys_gap" in s else "" for k in iters]
        if steady:
            figures = s.get("steadiness", {})
            row += [_fmt(figures[k]) if k in figures else "" for k in ("pan_1px", "pan_2px", "noise")]
        rows.append(row)
    return header, rows


SHARES_NOTE = (
    "Each layer's share of the column's weighted style loss on the content photos (the mean over them): how much "
    'each layer steers the training or the optimisation. A layer with most of it decides alone what "style" means.'
)


def _share_rows(style: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rows = [
        [column, ", ".join(f"{layer} {100 * share:.1f}%" for layer, share in shares.items())]
        for column, shares in style["layer_shares"].items()
    ]
    return ["column", "style layers: share of the style loss"], rows


def _share_table(shares: dict[str, dict[str, float]]) -> str:
    """One row per column, a cell per style layer, each with a bar as long as its share."""
    width = max(len(layers) for layers in shares.values())
    head = "<th>column</th>" + "".join(f"<th>style layer {i + 1}</th>" for i in range(width))
    rows = []
    for column, layers in shares.items():
        cells = [
            f'<td class="share" style="--share: {100 * share:.1f}%">{escape(layer)} {100 * share:.1f}%</td>'
            for layer, share in layers.items()
        ]
        cells += ["<td></td>"] * (width - len(cells))
        rows.append(f"<tr><td>{escape(column)}</td>{''.join(cells)}</tr>")
    return f'<table class="shares"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _timing_rows(results: dict[str, Any], style: str) -> tuple[list[str], list[list[str]]]:
    timings = results["timings"]
    header = ["column", "style weight", "training s", "training img/s", "trained on", "inference ms", "Gatys s"]
    rows = []
    for column in results["columns"]:
        name = column["name"]
        trained = [t for t in timings["training"] if t["style"] == style and t["column"] == name]
        weights = [
            r.get("style_weight")
            for r in results["runs"]
            if r["kind"] == "feedforward" and r["style"] == style and r["column"] == name
        ]
        weight = _fmt(weights[0]) if weights and weights[0] is not None else ""
        inference = timings["inference_ms"].get(style, {}).get(name)
        gatys = timings["gatys_seconds"].get(style, {}).get(name, {})
        rows.append(
            [
                name,
                f"{weight} (auto)" if weight and column.get("style_weight") == "auto" else weight,
                _training_seconds(trained[0]) if trained else "",
                _fmt(trained[0]["images_per_second"]) if trained else "",
                trained[0].get("hardware", "unknown") if trained else "",
                _fmt(inference) if inference is not None else "",
                ", ".join(f"{_fmt(v)} @{k}" for k, v in sorted(gatys.items(), key=lambda kv: int(kv[0]))),
            ]
        )
    filled = [0] + [i for i in range(1, len(header)) if any(row[i] for row in rows)]
    return [header[i] for i in filled], [[row[i] for i in filled] for row in rows]


def _training_seconds(timing: dict[str, Any]) -> str:
    """A training's seconds, saying when they are of the last session of a resumed one only."""
    steps = timing["steps"]
    timed = timing.get("timed_steps", steps)
    if not timed:  # the session only wrote the model file of a run that had reached its steps
        return "– (the model written from a finished run)"
    seconds = _fmt(timing["seconds"])
    return seconds if timed == steps else f"{seconds} for the last {timed} of {steps} steps"


def _what_ran(results: dict[str, Any]) -> str:
    s = results["settings"]
    parts = []
    if s["mode"] != "gatys":
        parts.append(f"feed-forward models trained for {s['steps']} steps on {s['size']} px crops (batch {s['batch']})")
    if s["mode"] != "feedforward":
        iters = sorted(set(s["gatys_iters"]))
        parts.append(
            f"Gatys optimisation for {', '.join(map(str, iters))} iterations (the image columns show "
            f"iteration {iters[-1]})"
        )
    text = f"{'; '.join(parts)}; photos at {s['size']} px on their long side, seed {s['seed']}"
    return f"{text[0].upper()}{text[1:]}, device {results['environment']['device']}."


def _timed_on(results: dict[str, Any]) -> str:
    mode, hardware = results["settings"]["mode"], results["environment"]["hardware"]
    timed = {"feedforward": "Inference", "gatys": "Gatys", "both": "Inference and Gatys"}[mode]
    return f"{timed} timed on {hardware}" + ("." if mode == "gatys" else "; training where the table says.")


def _grid(results: dict[str, Any], style: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    data = results["metrics"]["styles"][style]
    methods = data["methods"]
    images = {(r["content"], r["method"]): r["image"] for r in data["per_image"]}
    rows = [(c["name"], [images[(c["name"], m)] for m in methods]) for c in results["contents"]]
    return [_method_label(m) for m in methods], rows


class _Markup(str):
    """Markdown the report writes itself, put into a table as it is (file and column names are escaped)."""


def _md(text: str) -> str:
    if isinstance(text, _Markup):
        return text
    text = escape(text, quote=False)
    for char in "\\|*_`[]#":
        text = text.replace(char, "\\" + char)
    return text


def render_markdown(results: dict[str, Any]) -> str:
    def table(header: list[str], rows: list[list[str]]) -> list[str]:
        lines = ["| " + " | ".join(map(_md, header)) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(map(_md, r)) + " |" for r in rows]

    out = [
        "# Loss-network comparison",
        "",
        _what_ran(results),
        "",
        f"Columns: {', '.join(_md(c['name']) for c in results['columns'])}.",
        "",
    ]
    out += [f"- **{k}**: {v}" for k, v in results["metrics"]["definitions"].items()] + [""]
    for style, data in results["metrics"]["styles"].items():
        out += [f"## {_md(style)}", "", "### Images", ""]
        labels, grid = _grid(results, style)
        cells = [[name, *[_Markup(f"![]({quote(p)})") for p in paths]] for name, paths in grid]
        out += table(["photo", *labels], cells)
        out += ["", "### Style distance (rows: output; columns: measured under)", ""]
        match = data["style_match"]
        out += table(
            ["output", *match["columns"]],
            [[_method_label(m), *map(_fmt, row)] for m, row in zip(match["rows"], match["matrix"], strict=True)],
        )
        out += ["", "### Closeness to the photo, and to the painting", ""]
        out += table(*_metric_rows(data, _lpips_key(results)))
        if data.get("layer_shares"):
            out += ["", "### Where each column's style term comes from", "", SHARES_NOTE, ""]
            out += table(*_share_rows(data))
        out += ["", "### Timings", "", _timed_on(results), ""]
        out += table(*_timing_rows(results, style)) + [""]
    counts = results["timings"]["counts"]
    out += ["## Cache", ""] + [f"- {k}: {v['computed']} computed, {v['reused']} reused" for k, v in counts.items()]
    return "\n".join(out) + "\n"


def _read_curves(path: Path) -> dict[str, list[tuple[float, float]]]:
    curves: dict[str, list[tuple[float, float]]] = {}
    if not path.is_file():
        return curves
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            step = row.get("step")
            for key in ("loss/total", "loss/content", "loss/style", "loss/tv"):
                value = row.get(key)
                if step and value:
                    curves.setdefault(key.removeprefix("loss/"), []).append((float(step), float(value)))
    return curves


CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 20px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; font-size: 13px; }
th:first-child, td:first-child { text-align: left; }
table.grid { table-layout: fixed; width: 100%; }
table.grid td, table.grid th { text-align: center; padding: 2px; font-size: 12px; overflow-wrap: anywhere; }
table.grid td img { width: 100%; max-width: 160px; display: block; margin: auto; }
table.grid td:first-child, table.grid th:first-child { width: 72px; }
img.style { max-width: 320px; max-height: 240px; }
.plots svg { margin: 4px; border: 1px solid #ddd; }
.best { font-weight: bold; background: #e8f4e8; }
table.shares th, td.share { text-align: left; }
td.share { background: linear-gradient(to right, #bcd9ee var(--share), transparent var(--share)); }
dt { font-weight: bold; } dd { margin: 0 0 6px 16px; font-size: 13px; }
"""


class _Html(str):
    """A table cell of HTML the report builds itself (an image, a highlighted number), put in as it is."""


def _cell(value: str) -> str:
    """A table cell's HTML: names, labels and the hardware a model file names are escaped."""
    return value if isinstance(value, _Html) else escape(str(value))


def render_html(results: dict[str, Any], out: Path) -> str:
    def table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
        head = "".join(f"<th>{escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>faststyle: loss-network comparison</title>',
        f"<style>{CSS}</style></head><body>",
        "<h1>Loss-network comparison</h1>",
        f"<p>{escape(_what_ran(results))}</p>",
        "<dl>"
        + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in results["metrics"]["definitions"].items())
        + "</dl>",
    ]
    for style_info in results["styles"]:
        style = style_info["name"]
        data = results["metrics"]["styles"][style]
        parts.append(f"<h2>{escape(style)}</h2>")
        parts.append(
            f'<p><img class="style" src="{escape(quote(style_info["image"]))}" alt="style {escape(style)}"></p>'
        )
        labels, grid = _grid(results, style)
        rows = [
            [
                name,
                *[
                    _Html(f'<img src="{escape(quote(p))}" alt="{escape(name)}: {escape(label)}" loading="lazy">')
                    for p, label in zip(paths, labels, strict=True)
                ],
            ]  # fmt: skip
            for name, paths in grid
        ]
        parts += ["<h3>Images</h3>", table(["photo", *labels], rows, "grid")]
        match = data["style_match"]
        parts.append("<h3>Style distance</h3><p>Rows: the output; columns: the loss network that measures it "
                     "(1 = the photo itself, lower = closer to the style; best per column in bold).</p>")  # fmt: skip
        best = [min(col) for col in zip(*match["matrix"], strict=True)]
        rows = [
            [_method_label(m),
             *[_Html(f'<span class="{"best" if v == b else ""}">{_fmt(v)}</span>')
               for v, b in zip(row, best, strict=True)]]
            for m, row in zip(match["rows"], match["matrix"], strict=True)
        ]  # fmt: skip
        parts.append(table(["output", *map(str, match["columns"])], rows))
        header, rows = _metric_rows(data, _lpips_key(results))
        parts += ["<h3>Closeness to the photo, and to the painting</h3>", table(header, rows)]
        if data.get("layer_shares"):
            parts += ["<h3>Where each column's style term comes from</h3>", f"<p>{escape(SHARES_NOTE)}</p>"]
            parts.append(_share_table(data["layer_shares"]))
        header, rows = _timing_rows(results, style)
        parts += ["<h3>Timings</h3>", f"<p>{escape(_timed_on(results))}</p>", table(header, rows)]
        plots = []
        for run in results["runs"]:
            if run["style"] == style and run["kind"] == "feedforward" and run.get("metrics_csv"):
                curves = _read_curves(out / run["metrics_csv"])
                plots.append(line_plot(curves, f"training: {run['column']}", "step", "loss", log_y=True))
        for column, curve in data["gatys_curves"].items():
            series = {k: list(enumerate(v, 1)) for k, v in curve.items()}
            plots.append(line_plot(series, f"Gatys ({results['contents'][0]['name']}): {column}", "iteration", "loss",
                                   log_y=True))  # fmt: skip
        if plots:
            parts += ["<h3>Loss curves</h3>", '<div class="plots">', *plots, "</div>"]
    counts = results["timings"]["counts"]
    items = "".join(f"<li>{escape(k)}: {v['computed']} computed, {v['reused']} reused</li>" for k, v in counts.items())
    parts.append(f"<h2>Cache</h2><ul>{items}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
