"""ONNX export with dynamic batch, height and width, checked in ONNX Runtime against PyTorch."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from faststyle.cli import main
from faststyle.errors import FaststyleError
from faststyle.export import export_onnx
from faststyle.modelfile import load_model, save_model
from faststyle.stylize import Stylizer
from faststyle.transformer import TransformerNet


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("models") / "wave.safetensors"
    return save_model(TransformerNet(width=0.5), path, metadata={"backbone": {"name": "googlenet"}})


def test_export_runs_at_two_sizes_and_matches_pytorch(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "wave.onnx"
    assert main(["export", "--model", str(model_path), "--onnx", str(out), "--opset", "17", "--verify"]) == 0
    assert "matches PyTorch" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wave.onnx"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    net, _ = load_model(model_path)
    for shape in [(1, 3, 64, 96), (2, 3, 131, 77)]:
        image = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        ours = session.run(None, {"image": image.numpy()})[0]
        with torch.inference_mode():
            reference = net(image).numpy()
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() < 1e-3


def test_export_refuses_bad_targets(model_path: Path, tmp_path: Path) -> None:
    with pytest.raises(FaststyleError, match=r"\.onnx"):
        export_onnx(model_path, tmp_path / "wave.txt")
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(FaststyleError, match="folder"):
        export_onnx(model_path, tmp_path / "dir.onnx")
    with pytest.raises(FaststyleError, match="does not exist"):
        export_onnx(tmp_path / "missing.safetensors", tmp_path / "x.onnx")


def test_a_failed_export_says_so_in_one_line(
    model_path: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # opset 9 has no reflection padding for this graph; torch's C++ exporter then prints the whole graph
    assert main(["export", "--model", str(model_path), "--onnx", str(tmp_path / "old.onnx"), "--opset", "9"]) == 1
    out, err = capfd.readouterr()
    assert out == "" and not list(tmp_path.iterdir())
    assert "ONNX export failed at opset 9" in err and "try --opset 17" in err and len(err.splitlines()) <= 3
    assert main(["export", "--model", str(model_path), "--onnx", str(tmp_path / "upper.ONNX")]) == 0
    assert (tmp_path / "upper.ONNX").stat().st_size > 100_000 and "wrote" in capfd.readouterr().out
    with pytest.MonkeyPatch.context() as patch:  # a program started without standard output
        patch.setattr("sys.stdout", None)
        assert export_onnx(model_path, tmp_path / "quiet.onnx")[0].stat().st_size > 100_000


def test_onnxruntime_backend_caches_the_export(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTSTYLE_CACHE", str(tmp_path / "cache"))
    image = torch.rand(1, 3, 70, 90)
    fast = Stylizer(model_path, device="cpu", backend="onnxruntime")
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1
    again = Stylizer(model_path, device="cpu", backend="onnxruntime")
    eager = Stylizer(model_path, device="cpu", backend="eager")
    torch.testing.assert_close(fast(image), eager(image), atol=1e-4, rtol=0)
    torch.testing.assert_close(again(image), fast(image))


def test_a_damaged_onnx_cache_file_is_exported_again(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTSTYLE_CACHE", str(tmp_path / "cache"))
    image = torch.rand(1, 3, 40, 52)
    reference = Stylizer(model_path, device="cpu", backend="onnxruntime")(image)
    (cached,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    cached.write_bytes(b"not a protobuf")
    torch.testing.assert_close(Stylizer(model_path, device="cpu", backend="onnxruntime")(image), reference)
    assert cached.stat().st_size > 100_000  # written again


def test_the_onnx_cache_is_keyed_by_the_network_code(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an upgrade that changes transformer.py or export.py, the old code's export is not served."""
    import faststyle.stylize

    monkeypatch.setenv("FASTSTYLE_CACHE", str(tmp_path / "cache"))
    Stylizer(model_path, device="cpu", backend="onnxruntime")
    (first,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    assert faststyle.stylize._export_code_key() in first.name
    monkeypatch.setattr(faststyle.stylize, "_export_code_key", lambda: "changedcode0")
    Stylizer(model_path, device="cpu", backend="onnxruntime")
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 2  # another install may still use the old one
    os.utime(first, (time.time() - 2 * 86_400,) * 2)
    monkeypatch.setattr(faststyle.stylize, "_export_code_key", lambda: "changedcode1")
    Stylizer(model_path, device="cpu", backend="onnxruntime")
    # unused for two days, the first code's export goes when newer code exports the model
    assert sorted(p.name for p in (tmp_path / "cache" / "onnx").glob("*.onnx")) == [
        first.name.replace(first.name.split("-")[1], code) for code in ("changedcode0", "changedcode1")
    ]


def test_without_the_onnx_extra_each_path_says_what_to_install(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain `pip install faststyle` has neither onnx nor onnxruntime: export said "try --opset 17" (the opset it
    had used), the default CPU backend picked ONNX Runtime with onnx missing and stopped in a traceback."""
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else found(name, *a))
    assert main(["export", "--model", str(model_path), "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "ONNX export needs onnx, not installed here: pip install 'faststyle[onnx]'" in capsys.readouterr().err
    assert Stylizer(model_path, device="cpu").backend == "eager"  # the next fastest, not a traceback
    with pytest.raises(FaststyleError, match=r"the onnxruntime backend needs onnx, not installed here: pip install"):
        Stylizer(model_path, device="cpu", backend="onnxruntime")
    assert not (tmp_path / "m.onnx").exists()


def test_verify_does_not_pass_over_nan(model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--verify took the largest difference with max(), which passes over NaN: a model file whose weights overflowed
    half precision (all NaN pixels) was said to match PyTorch with a difference of 0, and so was an ONNX file that gives
    NaN where PyTorch does not."""
    from faststyle.export import onnx_bytes, verify_onnx

    torch.manual_seed(5)
    net = TransformerNet(width=0.25, num_residual=1)
    with torch.no_grad():
        net.encoder[0][1].weight[0, 0, 0, 0] = 1e6  # over float16's 65504: inf in the model file
    broken = save_model(net, tmp_path / "overflow.safetensors", metadata={})
    out = tmp_path / "overflow.onnx"
    assert main(["export", "--model", str(broken), "--onnx", str(out), "--verify"]) == 1
    err = capsys.readouterr().err
    assert "output is not finite" in err and "nothing was written" in err and not out.exists()

    good, _ = load_model(model_path)
    assert verify_onnx(onnx_bytes(good), good, sizes=[(24, 20)]) < 1e-3
    assert verify_onnx(onnx_bytes(load_model(broken)[0]), good, sizes=[(24, 20)]) == float("inf")
