"""``faststyle compare`` end to end on a tiny study: files, schema, caching, metrics, the report in Chromium."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from conftest import copy_photos
from PIL import Image

from faststyle.cli import main
from faststyle.compare import SCHEMA, CompareSettings, compare
from faststyle.config import load_config
from faststyle.errors import FaststyleError
from faststyle.losses import STYLE_BALANCE
from faststyle.modelfile import read_metadata

CHROMIUM = Path("/usr/bin/chromium")
STYLE = "data/styles/vangogh_starry_night_crop.jpg"
CONTENTS = ("data/content/kodak/kodim03.png", "data/content/kodak/kodim07.png")


@pytest.fixture(scope="module")
def study(shared: Path, lossnet_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two backbones, one style, two photos, 10 training steps at 64 px; run once through the CLI."""
    root = tmp_path_factory.mktemp("compare")
    photos = root / "photos"
    photos.mkdir()
    for path in sorted((shared / "data/train/unsplash").glob("*.jpg"))[:8]:
        shutil.copy(path, photos / path.name)
    args = {
        "styles": [str(shared / STYLE)],
        "content": [str(shared / c) for c in CONTENTS],
        "out": str(root / "out"),
        "backbones": ["vgg16", "googlenet"],
        "steps": 10,
        "batch": 2,
        "size": 64,
        "data": str(photos),
        "cache": str(lossnet_cache),
        "workers": 0,
        "device": "cpu",
        "progress": False,
        "style_weights": {"googlenet": "auto"},
    }
    argv = ["compare", "--styles", *args["styles"], "--content", *args["content"], "--backbones", "vgg16,googlenet"]
    argv += ["--steps", "10", "--batch", "2", "--size", "64", "--data", args["data"], "--cache", args["cache"]]
    argv += [
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        "--style-weight",
        "googlenet=auto",
        "--out",
        args["out"],
    ]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(argv)
    assert code == 0
    out = Path(args["out"])
    return {
        "args": args,
        "out": out,
        "stdout": stdout.getvalue(),
        "results": json.loads((out / "results.json").read_text()),
    }


def _strict_json(path: Path) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"{path} holds {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _numbers(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return [float(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_the_report_files_and_the_results_schema(study: dict[str, Any]) -> None:
    out: Path = study["out"]
    assert study["stdout"].strip().endswith(f"report: {out / 'index.html'}")
    for name in ("results.json", "report.md", "index.html", "cache.json"):
        assert (out / name).is_file(), name
    results = _strict_json(out / "results.json")
    assert results["schema"] == SCHEMA
    assert {"runs", "metrics", "timings", "environment", "settings", "columns", "styles", "contents"} <= set(results)
    assert all(math.isfinite(n) for n in _numbers(results))
    assert [c["name"] for c in results["columns"]] == ["vgg16", "googlenet"]
    assert [r["kind"] for r in results["runs"]] == ["feedforward", "feedforward"]
    # googlenet weighs style less than vgg16 does: the study can measure the weight that evens the balance
    assert [c["style_weight"] for c in results["columns"]] == [2.0, "auto"]
    measured = results["runs"][1]["style_weight"]
    assert results["runs"][0]["style_weight"] == 2.0 and measured > 0
    loss = read_metadata(out / results["runs"][1]["model"])["loss"]
    assert loss["style_weight"] == measured and loss["style_balance"] == STYLE_BALANCE
    assert f"| googlenet | {measured:.3g} (auto) |" in (out / "report.md").read_text()
    assert all((out / r["model"]).is_file() and (out / r["metrics_csv"]).is_file() for r in results["runs"])

    (style,) = results["metrics"]["styles"].values()
    methods = ["content", "feedforward:vgg16", "feedforward:googlenet"]
    assert style["methods"] == methods
    match = style["style_match"]
    assert match["rows"] == methods and match["columns"] == ["vgg16", "googlenet"]
    assert len(match["matrix"]) == 3 and all(len(row) == 2 for row in match["matrix"])
    assert len(style["per_image"]) == 3 * 2
    for row in style["per_image"]:
        assert set(row["style_distance"]) == {"vgg16", "googlenet"}
        assert {"ssim_y", "lpips_vgg16", "color_hist", "grain", "texture"} <= set(row)
        assert (row["texture"] == 1.0) == (row["method"] == "content") and row["texture"] > 0  # relative to the photo
        assert (out / row["image"]).is_file()
    for column in ("vgg16", "googlenet"):  # each layer's share of the photos' style loss under the column
        shares = style["layer_shares"][column]
        assert list(shares) == list(load_config(column).style_layers) and sum(shares.values()) == pytest.approx(1)
    assert max(style["layer_shares"]["googlenet"].values()) > 0.8  # its first convolution, as in the README
    assert "| googlenet | conv1/7x7\\_s2 " in (out / "report.md").read_text()
    bar = r'<td class="share" style="--share: (9\d|8[1-9])\.\d%">conv1/7x7_s2 '  # a bar of its share
    assert re.search(bar, (out / "index.html").read_text())
    assert "steadiness" not in style["summary"]["content"]
    for method in methods[1:]:  # 10-step models repaint a scene moved by a pixel: several levels, not 0
        steadiness = style["summary"][method]["steadiness"]
        assert steadiness.keys() == {"pan_1px", "pan_2px", "noise"} and min(steadiness.values()) > 0.5, steadiness
    assert "| shimmer 1-px move ↓ | shimmer 2-px move ↓ | camera noise ↓ |" in (out / "report.md").read_text()

    timings = results["timings"]
    assert [t["column"] for t in timings["training"]] == ["vgg16", "googlenet"]
    assert all(t["seconds"] > 0 and t["images_per_second"] > 0 for t in timings["training"])
    assert set(next(iter(timings["inference_ms"].values()))) == {"vgg16", "googlenet"}
    assert timings["counts"]["models"] == {"computed": 2, "reused": 0}
    assert timings["counts"]["steadiness"] == {"computed": 2, "reused": 0}
    assert results["environment"]["device"] == "cpu"


def test_the_html_report_references_only_images_that_exist(study: dict[str, Any]) -> None:
    out: Path = study["out"]
    html = (out / "index.html").read_text()
    sources = re.findall(r'src="([^"]+)"', html)
    assert len(sources) >= 1 + 2 * 3  # the style and the 2×3 grid
    for src in sources:
        assert not src.startswith(("http:", "https:", "/", "file:")), src
        assert (out / unquote(src)).is_file(), src
    assert "<svg" in html and "<polyline" in html  # the training loss curves
    assert "<script" not in html and "://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_names_and_hardware_cannot_put_markup_into_the_html_report(study: dict[str, Any]) -> None:
    """Column names come from the command line and the hardware from model files: the report escapes them."""
    from faststyle.report import render_html, render_markdown

    results = copy.deepcopy(study["results"])
    hostile = "<img src=x onerror=alert(1)>"
    old = results["columns"][0]["name"]
    text = json.dumps(results).replace(json.dumps(old), json.dumps(hostile))
    text = re.sub(r'"hardware": "[^"]*"', '"hardware": "<b>gpu</b>"', text)
    results = json.loads(text)
    html = render_html(results, study["out"])
    assert hostile not in html and "<b>gpu" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;b&gt;gpu&lt;/b&gt;" in html
    assert html.count("<img ") == (study["out"] / "index.html").read_text().count("<img ")  # the report's own kept
    assert hostile not in render_markdown(results)


def test_the_markdown_report_links_images_that_exist_and_escapes_names(study: dict[str, Any]) -> None:
    from faststyle.report import _md

    report = (study["out"] / "report.md").read_text()
    links = re.findall(r"!\[\]\(([^)]+)\)", report)
    assert len(links) == 2 * 3  # the 2×3 grid
    assert all((study["out"] / unquote(link)).is_file() for link in links)
    assert _md("shot #1 | a&b <i>") == "shot \\#1 \\| a&amp;b &lt;i&gt;"  # a name cannot split a row or start markup


def test_a_rerun_reuses_every_model_image_and_metric(study: dict[str, Any]) -> None:
    out: Path = study["out"]
    models = {p: p.stat().st_mtime_ns for p in (out / "models").glob("*.safetensors")}
    result = compare(CompareSettings(**study["args"]))
    assert result.computed() == 0
    assert result.counts["models"] == {"computed": 0, "reused": 2}
    assert result.counts["stylized"] == {"computed": 0, "reused": 4}
    assert {p: p.stat().st_mtime_ns for p in models} == models
    first = study["results"]["metrics"]["styles"]
    assert result.results["metrics"]["styles"] == first
    stored = json.loads((out / "cache.json").read_text())
    for kind, counts in result.counts.items():  # each cached value counts once, however often the report reads it
        if kind != "models":
            assert counts["reused"] <= len(stored[kind]), (kind, counts)


def test_models_trained_on_other_photos_are_not_reused(study: dict[str, Any], tmp_path: Path) -> None:
    from faststyle.compare import Study, resolve_columns

    other = tmp_path / "other_photos"
    shutil.copytree(study["args"]["data"], other)
    column = resolve_columns(["vgg16"], [])[0]
    same = Study(CompareSettings(**study["args"]))
    assert same.find_model(same.model_wanted(0, column)) is not None
    moved = Study(CompareSettings(**(study["args"] | {"data": str(other)})))
    assert moved.find_model(moved.model_wanted(0, column)) is None
    # nor one trained with settings the study leaves at train's defaults (a file dropped into models/ by hand)
    wanted = same.model_wanted(0, column)
    meta = read_metadata(same.find_model(wanted))
    assert Study.model_matches(meta, wanted)
    for part, key, value in [
        ("loss", "stability_weight", 300.0), ("transformer", "width", 0.5), ("training", "lr", 0.01),
        ("style", "size", 512), ("data", "short_side", 512), ("training", "lr_from_step", [[0, 1e-3], [5, 1e-4]]),
    ]:  # fmt: skip
        assert not Study.model_matches(meta | {part: meta[part] | {key: value}}, wanted), (part, key)


def test_an_output_folder_inside_the_content_folder_is_not_read_as_content(tmp_path: Path) -> None:
    from faststyle.compare import collect_images

    Image.new("RGB", (40, 30)).save(tmp_path / "photo.png")
    (tmp_path / "report" / "images").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(tmp_path / "report" / "images" / "photo_vgg16.png")
    assert collect_images([str(tmp_path)], "content", skip=tmp_path / "report") == [tmp_path / "photo.png"]


def _study_output(folder: Path, files: dict[str, str]) -> Path:
    (folder / "images" / "content").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(folder / "images" / "content" / "photo.png")
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_the_outputs_of_other_studies_in_a_content_folder_are_not_read_as_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from faststyle.compare import collect_images

    Image.new("RGB", (40, 30)).save(tmp_path / "photo.png")
    _study_output(tmp_path / "done", {"results.json": json.dumps({"schema": SCHEMA}), "cache.json": "{}"})
    _study_output(tmp_path / "cut_short", {"cache.json": json.dumps({"content": {"ab12": {"path": "x"}}})})
    kept = _study_output(tmp_path / "not_a_study", {"cache.json": json.dumps({"thumbnails": [1, 2]})})
    with caplog.at_level(logging.INFO, logger="faststyle.photofolders"):
        found = collect_images([str(tmp_path)], "content", skip=tmp_path / "new")
    assert found == [tmp_path / "not_a_study/images/content/photo.png", tmp_path / "photo.png"]
    assert [m for m in caplog.messages if "leaving out" in m] == [
        f"leaving out {tmp_path / name}: it is the output of a faststyle study" for name in ("cut_short", "done")
    ]
    assert collect_images([str(kept)], "content") == [kept / "images/content/photo.png"]


def test_a_file_given_twice_is_taken_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from faststyle.compare import collect_images

    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 30)).save(tmp_path / name)
    with caplog.at_level(logging.WARNING, logger="faststyle.compare"):
        found = collect_images(
            [str(tmp_path), str(tmp_path / "b.png"), f"{tmp_path}/../{tmp_path.name}/a.png"], "style"
        )
    assert found == [tmp_path / "a.png", tmp_path / "b.png"]
    assert caplog.messages == [
        f"the style {tmp_path / 'b.png'} was given before, as {tmp_path / 'b.png'}: taking it once",
        f"the style {tmp_path}/../{tmp_path.name}/a.png was given before, as {tmp_path / 'a.png'}: taking it once",
    ]


def test_the_metrics_tell_the_photo_from_a_stylization(study: dict[str, Any]) -> None:
    (style,) = study["results"]["metrics"]["styles"].values()
    for row in style["per_image"]:
        if row["method"] == "content":
            assert row["style_distance"] == pytest.approx({"vgg16": 1.0, "googlenet": 1.0})
            assert row["ssim_y"] == pytest.approx(1.0, abs=1e-6)
            assert row["lpips_vgg16"] == pytest.approx(0.0, abs=1e-6)
        else:
            assert row["ssim_y"] < 0.9
            assert row["lpips_vgg16"] > 0.1


def test_gatys_mode_reuses_the_model_and_reports_the_gap(study: dict[str, Any]) -> None:
    args = study["args"] | {"backbones": ["vgg16"], "mode": "both", "gatys_iters": [2, 5]}
    result = compare(CompareSettings(**args))
    assert result.counts["models"] == {"computed": 0, "reused": 1}
    assert result.counts["gatys"] == {"computed": 2, "reused": 0}
    results = _strict_json(result.out / "results.json")
    (style,) = results["metrics"]["styles"].values()
    assert style["methods"] == ["content", "feedforward:vgg16", "gatys:vgg16"]
    gap = style["summary"]["feedforward:vgg16"]["gatys_gap"]
    assert set(gap) == {"2", "5"} and all(v > 0 for v in gap.values())
    (gatys_run,) = [r for r in results["runs"] if r["kind"] == "gatys"]
    assert gatys_run["iters"] == [2, 5]
    seconds = results["timings"]["gatys_seconds"][gatys_run["style"]]["vgg16"]
    assert 0 < seconds["2"] < seconds["5"]
    for row in style["per_image"]:
        if row["method"] == "gatys:vgg16":
            assert row["style_distance"]["vgg16"] < 0.9
            assert row["ssim_y"] < 0.99 and row["lpips_vgg16"] > 0.01
            assert set(row) >= {"style_distance", "ssim_y", "lpips_vgg16", "color_hist", "grain", "texture"}
            assert row["texture"] < 0.95  # nearer the painting's patches than the photo is, after 5 iterations
    assert len(style["gatys_curves"]["vgg16"]["total"]) == 5
    report = (result.out / "report.md").read_text()
    assert "Feed-forward models trained for 10 steps on 64 px crops (batch 2); Gatys optimisation for 2, 5 " in report
    assert "iterations (the image columns show iteration 5)" in report


def test_gatys_runs_serve_any_subset_of_their_snapshots(study: dict[str, Any]) -> None:
    def run(iters: list[int]) -> tuple[dict[str, int], dict[str, Any]]:
        args = study["args"] | {"backbones": ["vgg16"], "mode": "gatys", "gatys_iters": iters}
        result = compare(CompareSettings(**args))
        return result.counts["gatys"], _strict_json(result.out / "results.json")

    def seconds(results: dict[str, Any]) -> dict[str, float]:
        (by_column,) = results["timings"]["gatys_seconds"].values()
        return by_column["vgg16"]

    run([2, 5])
    for unused in study["out"].glob("images/*/*__gatys-vgg16-5.png"):
        unused.unlink()  # not wanted below: the runs still serve their snapshot at 2
    counts, results = run([2])
    assert counts == {"computed": 0, "reused": 2}
    (style,) = results["metrics"]["styles"].values()
    assert len(style["gatys_curves"]["vgg16"]["total"]) == 2 and set(seconds(results)) == {"2"}
    counts, _ = run([3])
    assert counts == {"computed": 2, "reused": 0}
    counts, _ = run([5, 3, 2])  # snapshot 5 was deleted: run again
    assert counts == {"computed": 2, "reused": 0}
    counts, results = run([5, 3, 2])
    assert counts == {"computed": 0, "reused": 2}
    for report in ((study["out"] / name).read_text() for name in ("report.md", "index.html")):
        assert "Gatys optimisation for 2, 3, 5 iterations (the image columns show iteration 5); photos at 64" in report
        assert "training steps" not in report and "feed-forward" not in report and "gatys_gap" not in report
        assert "style weight" not in report and "inference ms" not in report  # timing columns with nothing in them
    (style,) = results["metrics"]["styles"].values()
    assert len(style["gatys_curves"]["vgg16"]["total"]) == 5 and set(seconds(results)) == {"2", "3", "5"}


def test_models_trained_with_another_style_weight_are_not_reused(
    study: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from faststyle.compare import Study

    (model,) = [r["model"] for r in study["results"]["runs"] if r["column"] == "googlenet"]
    assert read_metadata(study["out"] / model)["loss"]["style_balance"] == STYLE_BALANCE
    column = next(c for c in Study(CompareSettings(**study["args"])).columns if c.name == "googlenet")
    for weights, found in (
        ({"googlenet": "auto"}, True),
        ({"*": "auto"}, True),
        ({}, False),
        ({"googlenet": 5.0}, False),
    ):
        again = Study(CompareSettings(**(study["args"] | {"style_weights": weights})))
        assert (again.find_model(again.model_wanted(0, column)) is not None) == found, weights
    with pytest.raises(FaststyleError, match="--style-weight names googlent, neither a loss network nor a column"):
        Study(CompareSettings(**(study["args"] | {"style_weights": {"googlent": 5.0}})))
    with caplog.at_level(logging.WARNING, logger="faststyle.compare"):
        Study(CompareSettings(**(study["args"] | {"style_weights": {"alexnet": 5.0, "vgg16": 3.0}})))
        assert caplog.messages == ["--style-weight alexnet: no column of this study uses it"]
        caplog.clear()
        Study(CompareSettings(**(study["args"] | {"style_weights": {"vgg16": 3.0}, "mode": "gatys"})))
        assert caplog.messages == [
            "--style-weight is left unused: it weighs feed-forward models, and --mode gatys trains none"
        ]


def test_models_trained_on_images_read_the_old_way_are_not_reused(study: dict[str, Any]) -> None:
    from faststyle.compare import Study

    (model,) = [r["model"] for r in study["results"]["runs"] if r["column"] == "vgg16"]
    meta = read_metadata(study["out"] / model)
    study_again = Study(CompareSettings(**study["args"]))
    wanted = study_again.model_wanted(0, next(c for c in study_again.columns if c.name == "vgg16"))
    assert Study.model_matches(meta, wanted)
    del meta["style"]["reader"]  # a model trained before colour profiles were converted
    assert not Study.model_matches(meta, wanted)


def test_timed_results_from_other_hardware_are_measured_again(
    study: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("faststyle.compare.hardware", lambda device: "some other machine")
    result = compare(CompareSettings(**study["args"]))
    assert result.counts["models"] == {"computed": 0, "reused": 2}  # models are kept; their timings say where
    assert result.counts["stylized"] == {"computed": 4, "reused": 0}  # 2 photos x 2 models, timed here


def test_a_resumed_training_reports_the_seconds_of_its_last_session(
    study: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed training's model file times only its last session (timed_steps); an older file has no timed_steps
    and ran in one."""
    import faststyle.modelfile

    read = faststyle.modelfile.read_metadata

    def resumed(path: Any) -> dict[str, Any]:
        meta = read(path)
        if meta["backbone"]["name"] == "vgg16":
            meta["training"]["timed_steps"] = 4
        else:
            del meta["training"]["timed_steps"]
        return meta

    monkeypatch.setattr(faststyle.modelfile, "read_metadata", resumed)
    result = compare(CompareSettings(**study["args"]))
    assert result.computed() == 0
    timed = {t["column"]: (t["timed_steps"], t["steps"]) for t in result.results["timings"]["training"]}
    assert timed == {"vgg16": (4, 10), "googlenet": (10, 10)}
    seconds = {t["column"]: t["seconds"] for t in result.results["timings"]["training"]}
    report = (result.out / "report.md").read_text()
    assert f"| vgg16 | 2 | {seconds['vgg16']:.3g} for the last 4 of 10 steps |" in report
    assert re.search(rf"\| googlenet \| [\d.]+ \(auto\) \| {seconds['googlenet']:.3g} \|", report)
    assert "for the last 4 of 10 steps" in (result.out / "index.html").read_text()


def test_the_cpu_model_is_part_of_the_hardware_timings_are_reused_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux's platform.processor() is empty: two CPUs of one architecture must not share timings."""
    import platform

    import torch

    import faststyle.modelfile
    from faststyle.modelfile import hardware

    cpu, threads = torch.device("cpu"), torch.get_num_threads()
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    machines = []
    for name in ("AMD EPYC 7B13", "Intel(R) Xeon(R) CPU @ 2.20GHz"):
        cpuinfo = tmp_path / name.replace(" ", "_")
        cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: x\nmodel name\t: {name}\nflags\t\t: fpu\n")
        monkeypatch.setattr(faststyle.modelfile, "CPUINFO", cpuinfo)
        machines.append(hardware(cpu))
    assert machines == [
        f"cpu AMD EPYC 7B13, {threads} threads",
        f"cpu Intel(R) Xeon(R) CPU @ 2.20GHz, {threads} threads",
    ]
    monkeypatch.setattr(faststyle.modelfile, "CPUINFO", tmp_path / "missing")
    assert hardware(cpu) == f"cpu {platform.processor() or platform.machine()}, {threads} threads"


def test_the_gatys_clock_leaves_out_decoding_the_painting_and_writing_snapshots(
    shared: Path, lossnet_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding the painting happens once, before the clock; writing a snapshot is not Gatys' time. Both are slowed
    down here, around a stand-in for the optimisation that takes a known time an iteration."""
    import time

    import faststyle.compare
    import faststyle.gatys
    from faststyle.compare import Study

    slow, step = 0.3, 0.05
    settings = CompareSettings(
        styles=[str(shared / STYLE)], content=[str(shared / c) for c in CONTENTS], out=str(tmp_path / "out"),
        backbones=["alexnet"], mode="gatys", gatys_iters=[1, 2], size=48, cache=str(lossnet_cache), device="cpu",
        progress=False,
    )  # fmt: skip
    study = Study(settings)
    study.out.mkdir()
    contents = study.resized_copies("content", study.content_names, study.contents, study.content_sha, 48)
    decoded: list[Path] = []
    load, save = faststyle.compare.load_image, Study._save

    def slow_load(path: Path, *args: Any) -> Any:
        if Path(path) == shared / STYLE:
            decoded.append(Path(path))
            time.sleep(slow)
        return load(path, *args)

    def slow_save(self: Study, image: Any, path: Path) -> dict[str, Any]:
        time.sleep(slow)
        return save(self, image, path)

    def optimise(photo: Any, style: Any, *, iters: int, callback: Any, **_: Any) -> tuple[Any, list[dict]]:
        assert style.shape[-1] > 48  # the painting as decoded, not the report's copy
        for iteration in range(1, iters + 1):
            time.sleep(step)
            callback(iteration, photo, {})
        return photo, [{"total": 1.0, "content": 0.5, "style": 0.5}] * iters

    monkeypatch.setattr(faststyle.compare, "load_image", slow_load)
    monkeypatch.setattr(Study, "_save", slow_save)
    monkeypatch.setattr(faststyle.gatys, "stylize", optimise)
    entries = study.gatys(0, study.columns[0], contents)
    assert len(decoded) == 1  # not once a photo
    for entry in entries:
        seconds = [entry["snapshots"][k]["seconds"] for k in ("1", "2")]
        assert step <= seconds[0] < slow and step <= seconds[1] - seconds[0] < slow, seconds


def test_the_report_opens_in_headless_chromium(study: dict[str, Any], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    shot = tmp_path / "report.png"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", f"--screenshot={shot}", "--window-size=1200,1600",
        (study["out"] / "index.html").as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 20_000
    with Image.open(shot) as image:
        assert image.size == (1200, 1600)
        assert len(image.convert("RGB").getcolors(1 << 20) or []) > 200


def test_user_errors_say_what_to_do(shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "study"
    base = ["compare", "--styles", str(shared / STYLE), "--content", str(shared / CONTENTS[0]), "--out", str(out)]
    assert main([*base, "--backbones", "resnet50"]) == 1
    assert "choose one of" in capsys.readouterr().err
    assert main([*base, "--backbones", "vgg16", "--data", str(tmp_path / "missing")]) == 1
    assert "--data" in capsys.readouterr().err
    assert main([*base, "--content", str(tmp_path / "nothing.png"), "--backbones", "vgg16"]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--style-weight", "vgg16=-2"])
    assert "'vgg16=-2': give a number of 0 or more" in capsys.readouterr().err
    assert not out.exists()  # a refused study leaves no folder behind


def test_an_interrupted_study_resumes_with_the_same_command_and_never_trains_on_its_own_output(
    shared: Path,
    lossnet_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The study's output inside the training folder (its resized copies of the photos and the painting, its
    stylizations) was trained on, and a Ctrl-C's message pointed at --resume, a flag compare does not take."""
    from faststyle.training import StyleModule

    photos = copy_photos(tmp_path / "photos", 4)
    held_in = sorted(photos.glob("*.jpg"))[0]
    argv = ["compare", "--styles", str(shared / STYLE), "--content", str(shared / CONTENTS[0]), str(held_in),
            "--out", str(photos / "study"), "--backbones", "googlenet", "--steps", "4", "--batch", "1", "--size",
            "48", "--data", str(photos), "--cache", str(lossnet_cache), "--workers", "0", "--device", "cpu",
            "--no-progress"]  # fmt: skip
    step = StyleModule.training_step

    def ctrl_c_at_step_2(self: StyleModule, batch: Any, index: int) -> Any:
        if self.global_step == 2:
            raise KeyboardInterrupt
        return step(self, batch, index)

    with monkeypatch.context() as patch, caplog.at_level(logging.INFO):
        patch.setattr(StyleModule, "training_step", ctrl_c_at_step_2)
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error: interrupted at step 2; continue with the same command; it resumes there" in err
    assert "--resume" not in err
    assert f"found 4 images under {photos}" in caplog.text  # not the study's copies of the photos and the painting
    assert "1 of the content photos" in caplog.text and "lie under --data" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(argv) == 0
    assert "from interrupted.ckpt at step 2" in caplog.text
    assert f"found 4 images under {photos}" in caplog.text
    assert len(list((photos / "study").rglob("*.png"))) > 4  # its pictures, left out above


def test_a_training_that_reached_its_steps_without_its_model_file_writes_it_instead_of_training_again(
    shared: Path, lossnet_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped while writing the model file (Ctrl-C, a full disk) after the last step: the same command wrote it from
    the run's last checkpoint, as train --resume does; it deleted the run and trained it all again."""
    photos = copy_photos(tmp_path / "photos", 2)
    out = tmp_path / "study"
    argv = ["compare", "--styles", str(shared / STYLE), "--content", str(shared / CONTENTS[0]), "--out", str(out),
            "--backbones", "alexnet", "--steps", "2", "--batch", "1", "--size", "48", "--data", str(photos),
            "--cache", str(lossnet_cache), "--workers", "0", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    (model,) = (out / "models").glob("*.safetensors")
    model.unlink()  # as if the run had stopped while writing it
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(argv) == 0
    assert f"reached step 2 but has no {model.name} yet: writing it" in caplog.text
    assert "from last.ckpt at step 2" in caplog.text
    assert model.is_file() and read_metadata(model)["training"]["timed_steps"] == 0
    assert "| alexnet | 2 | – (the model written from a finished run) |" in (out / "report.md").read_text()


def test_configs_of_one_name_from_two_folders_are_two_columns(
    shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faststyle.compare import resolve_columns

    text = (Path(__file__).parents[1] / "configs" / "alexnet.yaml").read_text()
    for folder, change in (("exp1", "1.0"), ("exp2", "2.0")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "config.yaml").write_text(text.replace("conv1: 0.2", f"conv1: {change}"))
    columns = resolve_columns([], [str(tmp_path / "exp1/config.yaml"), str(tmp_path / "exp2/config.yaml")])
    assert [c.name for c in columns] == ["alexnet:exp1/config", "alexnet:exp2/config"]
    assert columns[0].config.style_layers != columns[1].config.style_layers
    assert [c.slug for c in columns] == ["alexnet-exp1_config", "alexnet-exp2_config"]
    with pytest.raises(FaststyleError, match="given twice"):
        resolve_columns(["alexnet"], [str(tmp_path / "exp1/config.yaml")] * 2)
    monkeypatch.chdir(tmp_path / "exp1")  # named by a path relative to here: the same name
    assert [c.name for c in resolve_columns([], ["config.yaml", "../exp2/config.yaml"])] == [c.name for c in columns]


def test_copies_of_one_picture_are_taken_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from faststyle.compare import _distinct

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / folder / "x.png")
    Image.new("RGB", (40, 30), (10, 200, 10)).save(tmp_path / "a" / "y.png")
    paths = [tmp_path / "a/x.png", tmp_path / "a/y.png", tmp_path / "b/x.png"]
    with caplog.at_level(logging.WARNING, logger="faststyle.compare"):
        kept, digests = _distinct(paths, "content")
    assert kept == paths[:2] and len(set(digests)) == 2
    assert caplog.messages == [f"the content {paths[2]} is the same file as {paths[0]}: taking it once"]


def test_a_photo_too_small_for_a_network_is_refused_before_training(
    shared: Path, lossnet_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.new("RGB", (400, 40), (90, 120, 200)).save(tmp_path / "panorama.png")
    argv = ["compare", "--styles", str(shared / STYLE), "--content", str(tmp_path / "panorama.png"), "--out",
            str(tmp_path / "out"), "--backbones", "alexnet", "--size", "48", "--steps", "2", "--data",
            str(shared / "data/train/unsplash"), "--cache", str(lossnet_cache), "--device", "cpu",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 1
    assert "the photo panorama at --size 48 is 48x5 pixels" in capsys.readouterr().err
    assert not (tmp_path / "out" / "models").exists()


def test_a_photo_too_small_to_measure_steadiness_on_is_refused_before_training(
    shared: Path, lossnet_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """64x16 reaches VGG16's layers, but leaves nothing inside the 8-px edges steadiness leaves out: the study
    trained, then wrote a NaN into cache.json and failed on it at the end of every run."""
    from faststyle.compare import Study

    Image.new("RGB", (400, 100), (90, 120, 200)).save(tmp_path / "panorama.png")
    settings = {"styles": [str(shared / STYLE)], "content": [str(tmp_path / "panorama.png")],
                "out": str(tmp_path / "out"), "backbones": ["vgg16"], "size": 64, "cache": str(lossnet_cache),
                "device": "cpu"}  # fmt: skip
    argv = ["compare", "--styles", *settings["styles"], "--content", *settings["content"], "--out", settings["out"],
            "--backbones", "vgg16", "--size", "64", "--steps", "2", "--data", str(shared / "data/train/unsplash"),
            "--cache", settings["cache"], "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "the photo panorama at --size 64 is 64x16 pixels: measuring how steady a painting is needs" in err
    assert "raise --size, or leave out very wide or tall images" in err
    assert not (tmp_path / "out" / "models").exists()
    # Gatys measures no steadiness: the photo is taken
    gatys = Study(CompareSettings(**settings, mode="gatys"))
    contents = gatys.resized_copies("content", gatys.content_names, gatys.contents, gatys.content_sha, 64)
    styles = gatys.resized_copies("style", gatys.style_names, gatys.styles, gatys.style_sha, gatys.style_size)
    gatys.check_sizes(contents, styles)


def test_the_cache_keeps_no_nan(tmp_path: Path) -> None:
    from faststyle.compare import Cache

    path = tmp_path / "cache.json"
    with pytest.raises(FaststyleError, match=r"the steadiness figures pan_1px, noise\[1\] came out as NaN or infin"):
        Cache(path).put("steadiness", "k", {"pan_1px": math.nan, "pan_2px": 1.0, "noise": [0.5, math.inf]})
    assert not path.exists()
    path.write_text('{"steadiness": {"k": {"pan_1px": NaN}, "j": {"pan_1px": 2.0}}}')  # an older faststyle's
    cache = Cache(path)
    assert cache.get("steadiness", "k") is None and cache.get("steadiness", "j") == {"pan_1px": 2.0}


def test_a_plot_keeps_its_legend_off_the_curves() -> None:
    from faststyle.plots import line_plot

    svg = line_plot({"total": [(0, 40), (200, 10)], "content": [(0, 20), (200, 9)]}, "training", "step", "loss")
    curves = [float(x) for points in re.findall(r'points="([^"]+)"', svg) for x in re.findall(r"([\d.]+),", points)]
    legend = [float(x) for x in re.findall(r'<text x="([\d.]+)"[^>]*>(?:total|content)<', svg)]
    assert len(legend) == 2 and min(legend) > max(curves)  # every curve ends left of the legend column
    assert max(legend) + 6 * len("content") < 420  # and the legend inside the picture
