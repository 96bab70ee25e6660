"""BVLC GoogLeNet with the real caffejs weights from ../shared, and CaffeNet's shapes with random weights."""

from __future__ import annotations

import copy
import re
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED
from PIL import Image
from skimage import data as skdata
from torch import nn

from faststyle.errors import FaststyleError
from faststyle.images import load_image, pil_to_tensor
from faststyle.lossnets import get_lossnet
from faststyle.lossnets import googlenet as googlenet_module
from faststyle.lossnets.googlenet import GoogLeNet, Inception, load_bvlc_classifier
from faststyle.lossnets.weights import cached_path, fetch_weights

WEIGHTS = SHARED / "weights" / "bvlc_googlenet"

CHANNELS = {
    "conv1/7x7_s2": (64, 112),
    "pool1/3x3_s2": (64, 56),
    "pool1/norm1": (64, 56),
    "conv2/3x3_reduce": (64, 56),
    "conv2/3x3": (192, 56),
    "conv2/norm2": (192, 56),
    "pool2/3x3_s2": (192, 28),
    "inception_3a/output": (256, 28),
    "inception_3b/output": (480, 28),
    "pool3/3x3_s2": (480, 14),
    "inception_4a/output": (512, 14),
    "inception_4b/output": (512, 14),
    "inception_4c/output": (512, 14),
    "inception_4d/output": (528, 14),
    "inception_4e/output": (832, 14),
    "pool4/3x3_s2": (832, 7),
    "inception_5a/output": (832, 7),
    "inception_5b/output": (1024, 7),
}


@pytest.fixture(scope="module")
def weights_dir() -> Path:
    if not (WEIGHTS / "SHA256SUMS").is_file():
        pytest.fail(f"the BVLC GoogLeNet weights are missing: expected the caffejs folder at {WEIGHTS} (../shared)")
    return WEIGHTS


@pytest.fixture(scope="module")
def cache(weights_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    fetch_weights("googlenet", source="caffejs", location=str(weights_dir), cache=folder)
    return folder


@pytest.fixture(scope="module")
def net(cache: Path) -> GoogLeNet:
    return get_lossnet("googlenet", cache=cache)


@pytest.fixture(scope="module")
def class_names(weights_dir: Path) -> list[str]:
    return [line.split(" ", 1)[1].strip() for line in (weights_dir / "synset_words.txt").read_text().splitlines()]


def resized_224(array: np.ndarray) -> torch.Tensor:
    return pil_to_tensor(Image.fromarray(array).resize((224, 224), Image.Resampling.BILINEAR))


def test_classifies_chelsea_as_a_cat_and_coffee_as_espresso(
    net: GoogLeNet, weights_dir: Path, class_names: list[str]
) -> None:
    # Measured with PIL bilinear 224×224: chelsea Egyptian cat 0.620 (tiger cat 0.211, tabby 0.147; classes
    # 281–285 sum 0.978), coffee espresso 0.974. A non-antialiased bilinear resize gives the README's cat 0.506.
    classifier = load_bvlc_classifier(weights_dir)
    images = torch.cat([resized_224(skdata.chelsea()), resized_224(skdata.coffee())])
    with torch.no_grad():
        probabilities = net.classify(images, classifier).softmax(dim=1)
    cat, coffee = probabilities
    assert 281 <= int(cat.argmax()) <= 285, class_names[int(cat.argmax())]
    assert class_names[int(cat.argmax())] == "Egyptian cat"
    assert float(cat.max()) > 0.5
    assert float(cat[281:286].sum()) > 0.9
    assert int(coffee.argmax()) == 967 and class_names[967] == "espresso"
    assert float(coffee[967]) > 0.5


def test_every_tap_has_its_documented_channels_and_size(net: GoogLeNet) -> None:
    assert net.layer_names == list(CHANNELS)
    with torch.no_grad():
        features = net(torch.rand(1, 3, 224, 224), list(CHANNELS))
    for name, (channels, size) in CHANNELS.items():
        assert net.channels[name] == channels, name
        assert tuple(features[name].shape) == (1, channels, size, size), name


def test_features_of_a_shifted_photo_are_nearer_than_another_photo(net: GoogLeNet) -> None:
    kodak = SHARED / "data" / "content" / "kodak"
    full = load_image(kodak / "kodim03.png", size=384)
    photo, shifted = full[..., 4:228, 4:228], full[..., :224, :224]
    other = load_image(kodak / "kodim05.png", size=384)[..., 4:228, 4:228]
    layers = ["conv2/3x3", "inception_3a/output"]
    # Measured: conv2/3x3 0.78 vs 1.40, inception_3a/output 0.52 vs 1.33.
    with torch.no_grad():
        features = net(torch.cat([photo, shifted, other]), layers)
    for name in layers:
        reference = features[name][0]
        near = (features[name][1] - reference).norm() / reference.norm()
        far = (features[name][2] - reference).norm() / reference.norm()
        assert near < 0.7 * far, (name, float(near), float(far))


def writable_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return target


def test_a_corrupted_or_missing_weight_file_is_refused(weights_dir: Path, tmp_path: Path) -> None:
    folder = writable_copy(weights_dir, tmp_path / "bvlc_googlenet")
    damaged = folder / "inception_4c" / "3x3_filter.bin"
    blob = bytearray(damaged.read_bytes())
    blob[1000] ^= 0x01
    damaged.write_bytes(bytes(blob))
    with pytest.raises(FaststyleError, match=re.escape("inception_4c/3x3_filter.bin")):
        fetch_weights("googlenet", source="caffejs", location=str(folder), cache=tmp_path / "cache")
    (folder / "conv2" / "3x3_bias.bin").unlink()
    with pytest.raises(FaststyleError, match=re.escape("conv2/3x3_bias.bin")):
        fetch_weights("googlenet", source="caffejs", location=str(folder), cache=tmp_path / "cache")
    assert not cached_path("googlenet", tmp_path / "cache").exists()


def test_the_caffejs_source_needs_a_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(googlenet_module.GOOGLENET_DIR_ENV, raising=False)
    with pytest.raises(FaststyleError, match=googlenet_module.GOOGLENET_DIR_ENV):
        fetch_weights("googlenet", source="caffejs", cache=tmp_path)


def test_forward_stops_at_the_deepest_layer_asked_for(net: GoogLeNet) -> None:
    calls: list[int] = []
    handle = net.body[-1].register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            net(torch.rand(1, 3, 64, 64), ["conv1/7x7_s2"])
            assert calls == []
            net(torch.rand(1, 3, 64, 64), ["conv1/7x7_s2", "inception_5b/output"])
            assert calls == [1]
    finally:
        handle.remove()


def test_average_pooling_replaces_the_pooling_between_stages(cache: Path) -> None:
    net = get_lossnet("googlenet", cache=cache, pooling="avg")
    modules = list(net.body.modules())
    assert [type(m) for m in net.body.children() if isinstance(m, nn.MaxPool2d | nn.AvgPool2d)] == [nn.AvgPool2d] * 4
    # an inception module's own pooling branch stays max, as its 1×1 projection was trained
    assert all(isinstance(m.branch_pool[0], nn.MaxPool2d) for m in modules if isinstance(m, Inception))
    assert sum(isinstance(m, Inception) for m in modules) == 9
    with torch.no_grad():
        features = net(torch.rand(1, 3, 128, 128), ["conv1/7x7_s2", "inception_3a/output", "inception_5b/output"])
    assert all(torch.isfinite(f).all() for f in features.values())


def test_caffenet_shapes_and_groups_with_random_weights() -> None:
    net = get_lossnet("caffenet", weights="random")
    layers = ["conv1", "conv2", "conv3", "conv4", "conv5"]
    with torch.no_grad():
        features = net(torch.rand(1, 3, 227, 227), [*layers, "pool5"])
    expected = {"conv1": (96, 55), "conv2": (256, 27), "conv3": (384, 13), "conv4": (384, 13), "conv5": (256, 13)}
    for name, (channels, size) in expected.items():
        assert net.channels[name] == channels
        assert tuple(features[name].shape) == (1, channels, size, size), name
    assert tuple(features["pool5"].shape) == (1, 256, 6, 6)
    groups = {name: net.body[net.taps[name]][0].groups for name in layers}
    assert groups == {"conv1": 1, "conv2": 2, "conv3": 1, "conv4": 2, "conv5": 2}


def test_the_download_source_fails_cleanly_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(googlenet_module, "CAFFEJS_URL", "http://127.0.0.1:9/")
    start = time.monotonic()
    with pytest.raises(FaststyleError, match="could not download"):
        fetch_weights("googlenet", source="caffejs-download", cache=tmp_path)
    assert time.monotonic() - start < 10
    assert not cached_path("googlenet", tmp_path).exists()


@pytest.fixture
def weights_server(tmp_path: Path):
    """../shared's caffejs folder on a loopback HTTP server, one file corrupted in a second copy."""
    import functools
    import http.server
    import threading

    tampered = tmp_path / "tampered"
    shutil.copytree(WEIGHTS, tampered)
    blob = tampered / "inception_4a" / "1x1_bias.bin"
    blob.chmod(stat.S_IWUSR | stat.S_IRUSR)
    blob.write_bytes(b"\0" * blob.stat().st_size)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    (tmp_path / "good").symlink_to(WEIGHTS)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *args: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_the_download_source_fetches_and_checks_every_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, weights_server: str, googlenet
) -> None:
    monkeypatch.setattr(googlenet_module, "CAFFEJS_URL", weights_server + "good/")
    kept = tmp_path / "kept"
    fetch_weights("googlenet", source="caffejs-download", location=str(kept), cache=tmp_path / "cache")
    downloaded = get_lossnet("googlenet", cache=tmp_path / "cache", download=False)
    assert downloaded.weights_sha256 == googlenet.weights_sha256
    assert (kept / "inception_5b" / "pool_proj_filter.bin").read_bytes() == (
        WEIGHTS / "inception_5b" / "pool_proj_filter.bin"
    ).read_bytes()
    assert not list(kept.rglob("*.part"))

    monkeypatch.setattr(googlenet_module, "CAFFEJS_URL", weights_server + "tampered/")
    with pytest.raises(FaststyleError, match="inception_4a/1x1_bias.bin"):
        fetch_weights("googlenet", source="caffejs-download", cache=tmp_path / "other")
    assert not cached_path("googlenet", tmp_path / "other").exists()


def test_float16_features_match_float32_though_the_lrn_squares_pass_its_range(net: GoogLeNet) -> None:
    # At Caffe's 0-255 scale pool1's values reach ~1,700: squared in float16 they overflow, and LRN would zero them.
    photo = load_image(SHARED / "data" / "content" / "tubingen.jpg", 128)
    layers = ["pool1/3x3_s2", "pool1/norm1", "conv2/norm2", "inception_3a/output"]
    reference = net(photo, layers)
    assert reference["pool1/3x3_s2"].amax() > 256
    half = copy.deepcopy(net).half()
    features = half(photo.half(), layers)
    for name in layers:
        assert features[name].dtype == torch.float16
        error = (features[name].float() - reference[name]).norm() / reference[name].norm()
        assert error < 0.01, name
