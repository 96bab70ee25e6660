"""faststyle.stability: the measure of how steady a network's output is between frames, and the training term."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from faststyle.errors import FaststyleError
from faststyle.images import load_image
from faststyle.settings import TrainSettings
from faststyle.stability import (
    MAX_SHIFT,
    MEASURED_SIZE,
    STABLE_SIZE,
    instability,
    moved_window,
    stability_loss,
    step_shift,
)
from faststyle.transformer import TransformerNet


@pytest.fixture(scope="module")
def photo(shared: Path) -> torch.Tensor:
    return load_image(shared / "data/content/chicago.jpg", 96)


def test_moves_cover_the_grid_and_repeat_for_a_step() -> None:
    moves = {step_shift(0, step) for step in range(200)}
    assert moves == {(dy, dx) for dy in range(MAX_SHIFT + 1) for dx in range(MAX_SHIFT + 1)}
    assert [step_shift(7, step) for step in range(20)] == [step_shift(7, step) for step in range(20)]
    assert [step_shift(7, step) for step in range(20)] != [step_shift(8, step) for step in range(20)]


def test_the_window_is_the_photo_moved(photo: torch.Tensor) -> None:
    window = moved_window(photo, (1, 2))
    assert window.shape[-2:] == (photo.shape[-2] - MAX_SHIFT, photo.shape[-1] - MAX_SHIFT)
    assert torch.equal(window[..., 0, 0], photo[..., 1, 2])
    assert torch.equal(moved_window(photo, (MAX_SHIFT, MAX_SHIFT))[..., -1, -1], photo[..., -1, -1])


def test_a_network_that_moves_with_the_scene_costs_nothing_and_the_transformer_does_not(photo: torch.Tensor) -> None:
    torch.manual_seed(0)
    local = nn.Conv2d(3, 3, 5, padding=2)  # follows any move, away from the edges
    with torch.no_grad():
        for shift in [(0, 0), (1, 2), (3, 1)]:
            assert float(stability_loss(local, photo, local(photo), shift, noise=0.0)) < 1e-12
        net = TransformerNet(width=0.5).eval()
        styled = net(photo)
        grid = float(stability_loss(net, photo, styled, (0, 0), noise=0.0))  # the window is smaller, no more
        moved = [float(stability_loss(net, photo, styled, (0, dx), noise=0.0)) for dx in (1, 2, 3)]
    assert min(moved) > 5 * grid, (grid, moved)  # about 10 times


def test_instability_sees_the_grid(photo: torch.Tensor) -> None:
    """An untrained transformer repaints a scene moved by 1 or 2 pixels, and follows one moved by 4; a network that
    moves with the scene changes only with the noise."""
    torch.manual_seed(0)
    net = TransformerNet(width=0.5).eval()
    figures = instability(net, [photo], frames=3)
    assert figures["pan_1px"] > 3 * figures["pan_4px"] and figures["pan_2px"] > 3 * figures["pan_4px"], figures
    assert 1.5 < figures["noise_in"] < 3  # noise of 2 levels: mean |a - b| = 2σ/√π = 2.26 levels
    identity = instability(lambda image: image, [photo], frames=3)
    assert identity["pan_1px"] == identity["pan_2px"] == identity["pan_4px"] == 0
    assert identity["noise"] == identity["noise_in"] == figures["noise_in"]


def test_training_on_the_term_alone_steadies_the_network(shared: Path, photo: torch.Tensor) -> None:
    """The term measures what ``instability`` does: 40 Adam steps on it alone make the network's painting of a
    scene moved by 1 or 2 pixels several times steadier, while it still paints (its output is not flattened)."""
    torch.manual_seed(0)
    net = TransformerNet(width=0.5)
    crops = load_image(shared / "data/content/tubingen.jpg", 128)[..., :96, :96]
    before = instability(net.eval(), [photo], frames=2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for step in range(40):
        loss = stability_loss(net, crops, net(crops), step_shift(0, step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = instability(net.eval(), [photo], frames=2)
    for move in ("pan_1px", "pan_2px"):
        assert after[move] < before[move] / 3, (before, after)
    with torch.no_grad():
        assert float(net(photo).std()) > 0.05


def test_the_smallest_crop_it_takes_leaves_pixels_to_compare() -> None:
    """Below STABLE_SIZE the comparison was of nothing: a NaN loss at the first step, nothing naming the size."""
    torch.manual_seed(0)
    net = TransformerNet(width=0.25, num_residual=1).eval()
    crop = torch.rand(1, 3, STABLE_SIZE, STABLE_SIZE)
    with torch.no_grad():
        assert torch.isfinite(stability_loss(net, crop, net(crop), (MAX_SHIFT, MAX_SHIFT)))
    with pytest.raises(FaststyleError, match=f"give --size {STABLE_SIZE} or more, not {STABLE_SIZE - 1}"):
        TrainSettings(styles=["starry.jpg"], size=STABLE_SIZE - 1, stability_weight=300)
    assert TrainSettings(styles=["starry.jpg"], size=16).size == 16  # without the term a 16-px crop still trains


def test_instability_refuses_an_image_it_would_compare_nothing_of() -> None:
    """An image within the 8-px edges once its widest pan is taken gave NaN, which compare cached and choked on."""
    height, width = MEASURED_SIZE
    smallest = instability(lambda image: image * 0.5, [torch.rand(1, 3, height, width)], frames=2)
    assert all(math.isfinite(v) for v in smallest.values()), smallest
    for small in [(height - 1, width), (height, width - 1), (16, 64)]:
        images = [torch.rand(1, 3, 32, 32), torch.rand(1, 3, *small)]
        with pytest.raises(FaststyleError, match=f"image 1 is {small[1]}x{small[0]} pixels: measuring how steady"):
            instability(lambda image: image, images, frames=2)
