"""Losses against hand computations, and the perceptual loss on real weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from faststyle.config import LayerConfig, default_config, layer_config, load_config, parse_config
from faststyle.errors import FaststyleError
from faststyle.images import load_image
from faststyle.losses import PerceptualLoss, content_layer_loss, gram_matrix, style_layer_loss, tv_loss


def test_gram_matrix_by_hand() -> None:
    f = torch.tensor([[1.0, 2.0], [0.0, 3.0]]).view(1, 2, 1, 2)
    assert gram_matrix(f).tolist() == [[[5.0, 6.0], [6.0, 9.0]]]
    assert gram_matrix(f, "mean").tolist() == [[[5 / 2, 6 / 2], [6 / 2, 9 / 2]]]


def test_gram_matrix_stays_float32_under_autocast() -> None:
    f = torch.rand(2, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gram = gram_matrix(f.bfloat16())
    assert gram.dtype == torch.float32
    torch.testing.assert_close(gram, gram_matrix(f.bfloat16().float()))


def test_gram_matrix_of_channels_last_features_is_the_same() -> None:
    f = torch.rand(2, 16, 7, 5)
    nhwc = f.contiguous(memory_format=torch.channels_last)
    assert not nhwc.is_contiguous()
    for normalization in ("caffe", "mean"):
        torch.testing.assert_close(gram_matrix(nhwc, normalization), gram_matrix(f, normalization))
    gradients = []
    for features in (f, nhwc):
        features = features.clone().requires_grad_(True)
        gram_matrix(features).pow(2).sum().backward()
        gradients.append(features.grad.contiguous())
    torch.testing.assert_close(gradients[0], gradients[1])


def test_style_loss_is_the_reference_normalisation() -> None:
    g = torch.tensor([[[5.0, 6.0], [6.0, 9.0]]])
    a = torch.tensor([[4.0, 6.0], [6.0, 7.0]])
    # 1/(4 N^2 M^2) * sum (G-A)^2 with N=2 channels, M=3 positions: (1 + 4) / (4 * 4 * 9)
    assert style_layer_loss(g, a, channels=2, positions=3, normalization="caffe").item() == pytest.approx(5 / 144)
    # mean: the mean over the N^2 entries of ((G-A)/M)^2 = 4 x the reference value
    mean_g, mean_a = g / 3, a / 3
    assert style_layer_loss(mean_g, mean_a, channels=2, positions=3, normalization="mean").item() == pytest.approx(
        4 * 5 / 144
    )
    assert style_layer_loss(g, g[0], 2, 3, "caffe").item() == 0


def test_content_and_tv_losses_by_hand() -> None:
    f = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    p = torch.tensor([1.0, 0.0, 3.0, 1.0]).view(1, 1, 2, 2)
    assert content_layer_loss(f, p, "caffe").item() == pytest.approx(0.5 * (4 + 9))
    assert content_layer_loss(f, p, "mean").item() == pytest.approx(13 / 4)
    assert content_layer_loss(f, f).item() == 0
    # vertical differences (3-1, 4-2), horizontal (2-1, 4-3)
    assert tv_loss(f, "caffe").item() == pytest.approx(4 + 4 + 1 + 1)
    assert tv_loss(f, "mean").item() == pytest.approx(4 + 1)
    assert tv_loss(torch.ones(1, 3, 5, 5)).item() == 0


def test_batch_losses_are_the_mean_over_images() -> None:
    torch.manual_seed(0)
    f, p = torch.rand(3, 4, 5, 5), torch.rand(3, 4, 5, 5)
    each = [content_layer_loss(f[i : i + 1], p[i : i + 1]) for i in range(3)]
    assert content_layer_loss(f, p).item() == pytest.approx(sum(each).item() / 3, rel=1e-5)


def test_configs_hold_the_documented_weights_verbatim() -> None:
    google = load_config("googlenet")
    assert google.content_layers == {"conv2/3x3": pytest.approx(2e-4), "inception_3a/output": pytest.approx(1 - 2e-4)}
    assert set(google.style_layers.values()) == {0.2}
    assert default_config("vgg16").content_layers == {"conv4_2": 1.0}
    assert list(default_config("vgg19").style_layers) == ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
    assert default_config("caffenet").content_layers == {"conv4": 1.0}


def test_builtin_configs_are_found_whatever_lies_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alexnet").mkdir()  # e.g. a folder of results named after the backbone
    (tmp_path / "vgg16").write_text("not a config")
    assert default_config("alexnet").style_layers == {f"conv{i}": 0.2 for i in range(1, 6)}
    assert load_config("alexnet") == default_config("alexnet")
    assert default_config("vgg16").content_layers == {"conv4_2": 1.0}


def test_bad_configs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FaststyleError, match="not a number"):
        parse_config({"backbone": "vgg16", "content_layers": {"conv4_2": "lots"}, "style_layers": {"conv1_1": 1}})
    with pytest.raises(FaststyleError, match="missing style_layers"):
        parse_config({"backbone": "vgg16", "content_layers": {"conv4_2": 1}})
    with pytest.raises(FaststyleError, match="no built-in config 'vgg99'"):
        load_config("vgg99")
    # a --backbone is a loss network: not a config's name or file (its message listed the configs, which fail there)
    with pytest.raises(FaststyleError, match=r"unknown loss network 'vgg99'; choose one of vgg16, .*alexnet$"):
        default_config("vgg99")
    for config in ("googlenet_pool", str(Path(__file__).parents[1] / "configs" / "vgg16.yaml")):
        with pytest.raises(FaststyleError, match="unknown loss network .*; a layer config is given with --config"):
            layer_config(config, None)
    mine = tmp_path / "mine.yaml"
    mine.write_text("backbone: vgg16\ncontent_layers: {conv3_2: 1}\nstyle_layers: {conv1_1: 0.5, conv2_1: 0.5}\n")
    assert load_config(mine).style_layers == {"conv1_1": 0.5, "conv2_1": 0.5}
    base = "backbone: vgg16\ncontent_layers: {conv4_2: 1}\n"
    for weight in ("-0.2", ".nan", ".inf", "1-2"):
        mine.write_text(base + f"style_layers: {{conv1_1: {weight}}}\n")
        with pytest.raises(FaststyleError, match="weights are finite numbers of 0 or more"):
            load_config(mine)
    mine.write_text(base + "style_layers: {conv1_1: 1}\nstyle_weight: 1000\ndescription: mine\n")
    with pytest.raises(FaststyleError, match="unknown key.* style_weight.*--style-weight"):
        load_config(mine)
    mine.write_bytes((base + "style_layers: {conv1_1: 1}\n# Gewichte f\u00fcr VGG\n").encode("latin-1"))
    with pytest.raises(FaststyleError, match="not UTF-8 text"):
        load_config(mine)
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(FaststyleError, match="is a folder"):
        load_config(tmp_path / "folder.yaml")


def test_configs_made_in_python_and_duplicate_keys_are_checked(tmp_path: Path) -> None:
    from faststyle.config import LayerConfig

    for content, style, message in [
        ({"conv4": 1.0}, {"conv1": -5.0}, r"style_layers.conv1: -5.0 is not a weight"),
        ({}, {"conv1": 1.0}, "content_layers must map layer names to weights"),
        ({"conv4": float("inf")}, {"conv1": 1.0}, "content_layers.conv4: inf is not a finite weight"),
        ({"conv4": True}, {"conv1": 1.0}, "True is not a weight"),
    ]:
        with pytest.raises(FaststyleError, match=message):
            LayerConfig("alexnet", content, style)
    mine = tmp_path / "mine.yaml"
    mine.write_text("backbone: vgg16\ncontent_layers: {conv4_2: 1}\nstyle_layers:\n  conv1_1: 0.2\n  conv1_1: 5\n")
    with pytest.raises(FaststyleError, match=r"(?s)'conv1_1' is given twice in one mapping; keep one.*line 5"):
        load_config(mine)
    mine.write_text(  # YAML's merge keys, as a config may share weights: the keys given beside them win
        "backbone: vgg16\ndescription: &shared {conv1_1: 1, conv2_1: 1}\ncontent_layers: {conv4_2: 1}\n"
        "style_layers: {<<: *shared, conv1_1: 2}\n"
    )
    assert load_config(mine).style_layers == {"conv1_1": 2.0, "conv2_1": 1.0}
    mine.write_text("backbone: vgg16\ncontent_layers: {conv4_2: 1}\nstyle_layers: {? [conv1_1, conv2_1] : 1}\n")
    with pytest.raises(FaststyleError, match="a key must be a name"):
        load_config(mine)


def test_perceptual_loss_arguments_are_checked_or_taken_as_meant(alexnet: torch.nn.Module, shared: Path) -> None:
    style = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg", 64)
    photo = load_image(shared / "data/content/chicago.jpg", 64)
    with pytest.raises(FaststyleError, match="normalization must be 'caffe' or 'mean', not 'Mean'"):
        PerceptualLoss(alexnet, "alexnet", [style], normalization="Mean")  # type: ignore[arg-type]
    by_name = PerceptualLoss(alexnet, "alexnet", style)  # a config's name, and one tensor for the style images
    by_object = PerceptualLoss(alexnet, default_config("alexnet"), [style])
    assert by_name(photo, content=photo).total.item() == by_object(photo, content=photo).total.item() > 0


def test_perceptual_loss_is_zero_for_the_style_image_itself(vgg16: torch.nn.Module, shared: Path) -> None:
    style = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg", 96)
    photo = load_image(shared / "data/content/chicago.jpg", 96)
    loss = PerceptualLoss(vgg16, default_config("vgg16"), [style], tv_weight=1.0)
    same = loss(style, content=style)
    assert same.content.item() == 0 and same.style.item() == pytest.approx(0, abs=1e-6)
    other = loss(photo, content=photo)
    assert other.style.item() > 1.0
    assert set(other.style_layers) == set(default_config("vgg16").style_layers)
    assert other.total.item() == pytest.approx(1e4 * other.style.item() + other.tv.item(), rel=1e-5)


def test_the_layer_weights_of_the_config_weigh_each_layer(vgg16: torch.nn.Module, shared: Path) -> None:
    style = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg", 96)
    photo = load_image(shared / "data/content/chicago.jpg", 96)
    content = photo.flip(-1)  # a content target other than the output
    config = LayerConfig("vgg16", {"conv4_2": 0.5, "conv3_2": 3.0}, {"conv1_1": 1.0, "conv3_1": 0.25, "conv5_1": 4.0})
    for normalization in ("caffe", "mean"):
        loss = PerceptualLoss(vgg16, config, [style], content_weight=2.0, style_weight=7.0, tv_weight=3.0,
                              normalization=normalization)  # fmt: skip
        terms = loss(photo, content=content)
        layers = terms.style_layers
        assert min(layers.values()) > 0 and max(layers.values()) > 10 * min(layers.values())  # unequal terms
        expected_style = 1.0 * layers["conv1_1"] + 0.25 * layers["conv3_1"] + 4.0 * layers["conv5_1"]
        expected_content = 0.5 * terms.content_layers["conv4_2"] + 3.0 * terms.content_layers["conv3_2"]
        assert terms.style.item() == pytest.approx(expected_style.item(), rel=1e-6)
        assert terms.content.item() == pytest.approx(expected_content.item(), rel=1e-6)
        expected = 2.0 * expected_content + 7.0 * expected_style + 3.0 * tv_loss(photo, normalization)
        assert terms.total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_style_targets_blend_by_weight(vgg16: torch.nn.Module, shared: Path) -> None:
    a = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg", 64)
    b = load_image(shared / "data/styles/hokusai_great_wave_crop.jpg", 64)
    config = default_config("vgg16")
    only_a = PerceptualLoss(vgg16, config, [a])
    mix = PerceptualLoss(vgg16, config, [a, b], style_blend=[3, 1])
    feats_a, feats_b = vgg16(a, list(config.style_layers)), vgg16(b, list(config.style_layers))
    for layer in config.style_layers:
        per_position = gram_matrix(feats_a[layer], "mean")[0], gram_matrix(feats_b[layer], "mean")[0]
        torch.testing.assert_close(only_a.target_gram(layer), per_position[0])
        torch.testing.assert_close(mix.target_gram(layer), 0.75 * per_position[0] + 0.25 * per_position[1])
    for bad in ([1], [1, float("nan")], [1, float("inf")], [-1, 2], [0, 0]):
        with pytest.raises(FaststyleError, match="blend weight"):
            PerceptualLoss(vgg16, config, [a, b], style_blend=bad)


def test_a_larger_style_image_does_not_weigh_more_in_a_blend(vgg16: torch.nn.Module, shared: Path) -> None:
    a = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg", 128)
    b = load_image(shared / "data/styles/hokusai_great_wave_crop.jpg", 128)
    b_twice = torch.cat([b, b], dim=-1)  # the same statistics per position, but for the seam; twice the positions
    config = default_config("vgg16")
    small, large = PerceptualLoss(vgg16, config, [a, b]), PerceptualLoss(vgg16, config, [a, b_twice])
    for layer in ("conv1_1", "conv2_1", "conv3_1"):  # deeper, the seam and the borders change the statistics
        per_position_small, per_position_large = small.target_gram(layer), large.target_gram(layer)
        # measured 0.7, 0.9, 2.7 %; a blend of the unnormalised Gram matrices, where b_twice counts double, gave 10,
        # 7.7, 12 %
        difference = (per_position_small - per_position_large).norm() / per_position_small.norm()
        assert float(difference) < 0.04, layer


def test_a_style_image_larger_than_the_output_sets_the_same_target_per_position(
    vgg16: torch.nn.Module, shared: Path
) -> None:
    """The reference code divides each Gram matrix by its own number of positions: a painting tiled 2×2 (four times
    the positions, the same statistics but for the seams) must ask the output for the same style as the painting."""
    painting = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg", 64)
    tiled = torch.cat([torch.cat([painting, painting], -1)] * 2, -2)
    photo = load_image(shared / "data/content/chicago.jpg", 64)
    config = default_config("vgg16")
    once, four_times = PerceptualLoss(vgg16, config, [painting]), PerceptualLoss(vgg16, config, [tiled])
    a, b = once(photo, content=photo), four_times(photo, content=photo)
    for layer in ("conv1_1", "conv2_1", "conv3_1"):  # deeper layers see the seams more
        ratio = b.style_layers[layer].item() / a.style_layers[layer].item()
        assert 0.75 < ratio < 1.33, (layer, ratio)  # measured 1.17, 1.10, 0.89; with A unscaled 64, 42, 21
    assert 0.75 < b.style.item() / a.style.item() < 1.33  # measured 0.88; with A unscaled 5.8
    # the painting itself nearly meets the tiled painting's target: measured 0.11 of the photo's loss, 0.56 before
    assert four_times(painting, content=photo).style.item() < 0.15 * b.style.item()


def test_the_whole_style_target_is_the_reference_codes_loss(vgg16: torch.nn.Module, shared: Path) -> None:
    """The reference took the 1.2× larger painting's whole Gram matrix as A against the output's, normalised by the
    output's N and M (style.py's `_compute_reprs(..., gram_scale=1)`): written out here with the features alone."""
    painting = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg", 77)
    photo = load_image(shared / "data/content/chicago.jpg", 64)
    config = default_config("vgg16")
    whole = PerceptualLoss(vgg16, config, [painting], style_target="whole")
    per_position = PerceptualLoss(vgg16, config, [painting])
    terms = whole(photo, content=photo)
    layers = list(config.style_layers)
    out, style = vgg16(photo, layers), vgg16(painting, layers)
    for layer in layers:
        f, s = out[layer][0].flatten(1).double(), style[layer][0].flatten(1).double()
        channels, positions = f.shape
        expected = ((f @ f.T - s @ s.T) ** 2).sum() / (4 * channels**2 * positions**2)
        assert terms.style_layers[layer].item() == pytest.approx(expected.item(), rel=1e-4), layer
    # the painting is larger (1.44 times the positions at 64 and 77 px), so it asks for more than per position
    assert terms.style.item() > 1.2 * per_position(photo, content=photo).style.item()
    with pytest.raises(FaststyleError, match="'whole' under the caffe normalisation only"):
        PerceptualLoss(vgg16, config, [painting], style_target="whole", normalization="mean")


def test_config_for_another_backbone_is_refused(vgg16: torch.nn.Module) -> None:
    config = LayerConfig("googlenet", {"conv2/3x3": 1.0}, {"conv1/7x7_s2": 1.0}, name="googlenet")
    with pytest.raises(FaststyleError, match="is for googlenet"):
        PerceptualLoss(vgg16, config, [torch.rand(1, 3, 32, 32)])


def test_mean_normalisation_puts_every_backbone_on_one_scale(
    vgg16: torch.nn.Module, googlenet: torch.nn.Module, alexnet: torch.nn.Module, shared: Path
) -> None:
    """One set of training loss weights must serve Caffe networks (0–255 input) and torchvision's alike."""
    style = load_image(shared / "data/styles/vangogh_starry_night_crop.jpg", 128)
    photo = load_image(shared / "data/content/kodak/kodim05.png", 128)
    other = load_image(shared / "data/content/kodak/kodim11.png", 128)
    terms = {}
    for net in (vgg16, googlenet, alexnet):
        loss = PerceptualLoss(net, default_config(net.name), [style], normalization="mean")
        terms[net.name] = loss(other, content=photo)
    assert googlenet.pixel_scale == 255 and vgg16.pixel_scale == pytest.approx(4.42, abs=0.01)
    for name in ("googlenet", "alexnet"):
        assert 0.02 < terms[name].content.item() / terms["vgg16"].content.item() < 50
        assert 0.02 < terms[name].style.item() / terms["vgg16"].style.item() < 50
    caffe = PerceptualLoss(googlenet, default_config("googlenet"), [style])(other, content=photo)
    assert caffe.content.item() > 1e3 * terms["googlenet"].content.item()


def test_describe_terms_says_which_numbers_are_weighted() -> None:
    from faststyle.losses import describe_terms

    terms = {"total": 40.37, "content": 8.47, "style": 15.95, "tv": 0.003391, "style/conv1_1": 1.0}
    assert describe_terms(terms) == "total 40.37 (weighted); unweighted content 8.47, style 15.95, tv 0.003391"
    no_tv = terms | {"tv": 0.0}  # Gatys' default TV weight 0: the term is not computed
    assert describe_terms(no_tv) == "total 40.37 (weighted); unweighted content 8.47, style 15.95"
    nothing = {"total": 0.0, "content": 0.0, "style": 0.0, "tv": 0.0}  # e.g. Gatys under an all-black mask
    assert describe_terms(nothing) == "total 0 (weighted); unweighted all 0"
