"""How steady a style network's output is from one video frame to the next, and a training term that makes it so.

Johnson et al.'s network downsamples twice by stride-2 convolutions, so what it paints is tied to a 4-pixel grid:
a scene that moves by 1–3 pixels (a slow pan, a hand-held camera) is painted anew, and a video shimmers, while a
move by 4 pixels is followed. Camera noise on a still scene changes the output much less. The training term asks
the network to paint a photo moved by a few pixels, with camera noise, as it painted the photo, moved: a simplified
form of the single-frame regularisation of Wang et al., "Consistent Video Style Transfer via Compound
Regularization" (AAAI 2020), with whole-pixel moves instead of warps, so that it needs no optical flow.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from faststyle.errors import FaststyleError

MAX_SHIFT = 3  # a move of 4 px is one the network's stride-4 grid already follows
MARGIN = 8  # pixels at the edges left out of the comparison: there the content itself differs
NOISE = 2 / 255  # camera noise of the moved copy (standard deviation, in [0,1] units): about a webcam's
_INNER = (..., slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
STABLE_SIZE = 2 * MARGIN + MAX_SHIFT + 1  # the smallest crop that leaves a pixel to compare
PANS = (1, 2, 4)  # the moves ``instability`` measures, in pixels
# the smallest (height, width) that ``instability`` measures: its widest pan still leaves a pixel inside the margins
MEASURED_SIZE = (2 * MARGIN + 1, 2 * MARGIN + 2 * max(PANS) + 1)


def step_shift(seed: int, step: int) -> tuple[int, int]:
    """The move (down, right) of a training step, in whole pixels: the same on every process and on resuming."""
    rng = random.Random(seed * 1_000_003 + step)
    return rng.randint(0, MAX_SHIFT), rng.randint(0, MAX_SHIFT)


def moved_window(images: Tensor, shift: tuple[int, int]) -> Tensor:
    """The window of ``images`` MAX_SHIFT pixels smaller on each axis, ``shift`` pixels in from the top left."""
    (dy, dx), (h, w) = shift, images.shape[-2:]
    return images[..., dy : h - MAX_SHIFT + dy, dx : w - MAX_SHIFT + dx]


def check_measurable(height: int, width: int, what: str, fix: str) -> None:
    """Raise a FaststyleError naming ``what`` and how to ``fix`` it when ``instability`` would compare no pixels."""
    need_height, need_width = MEASURED_SIZE
    if height < need_height or width < need_width:
        raise FaststyleError(
            f"{what} is {width}x{height} pixels: measuring how steady a painting is needs at least "
            f"{need_width}x{need_height} ({MARGIN}-px edges left out, moves of up to {max(PANS)} px); {fix}"
        )


def stability_loss(net: Callable[[Tensor], Tensor], content: Tensor, styled: Tensor, shift: tuple[int, int],
                   noise: float = NOISE) -> Tensor:  # fmt: skip
    """Mean squared difference (in [0,1] units, edges left out) between the network's painting of a moved, noisy
    window of ``content`` and the same window of ``styled``, its painting of ``content``. Both carry gradients."""
    moved = moved_window(content, shift)
    if noise:
        moved = (moved + torch.randn_like(moved) * noise).clamp(0, 1)
    return F.mse_loss(net(moved)[_INNER].float(), moved_window(styled, shift)[_INNER].float())


@torch.no_grad()
def instability(stylize: Callable[[Tensor], Tensor], images: Sequence[Tensor], frames: int = 6,
                noise: float = NOISE, seed: int = 0) -> dict[str, float]:  # fmt: skip
    """How much the output of ``stylize`` changes between frames of a still scene, in 8-bit levels (mean absolute
    difference over the pixels, edges left out; the mean over ``images``, (1,3,H,W) in [0,1]):

    - ``pan_1px``, ``pan_2px``: the scene moved left by 1 or 2 pixels, compared where both frames show it;
    - ``pan_4px``: moved by 4, which the network's grid follows (the floor the others are measured against);
    - ``noise``: camera noise (``noise``, rounded to 8 bits) on an unmoved scene, ``frames`` frames;
    - ``noise_in``: the same between the noisy input frames themselves.

    An image smaller than MEASURED_SIZE is refused: it leaves no pixel to compare.
    """
    for index, image in enumerate(images):
        check_measurable(*image.shape[-2:], f"image {index}", "give larger images")
    generator = torch.Generator().manual_seed(seed)
    sums: dict[str, float] = {"pan_1px": 0.0, "pan_2px": 0.0, "pan_4px": 0.0, "noise": 0.0, "noise_in": 0.0}
    for image in images:
        width = image.shape[-1]
        for move in PANS:
            before, after = stylize(image[..., : width - move]), stylize(image[..., move:])
            change = after[..., :, : width - 2 * move] - before[..., :, move:]
            sums[f"pan_{move}px"] += float(change[_INNER].abs().mean())
        noises = [torch.randn(image.shape, generator=generator).to(image.device) * noise for _ in range(frames)]
        noisy = [((image + n) * 255).round().clamp(0, 255) / 255 for n in noises]  # as a camera's 8 bits
        styled = [stylize(frame) for frame in noisy]
        sums["noise"] += _mean_change(styled)
        sums["noise_in"] += _mean_change(noisy)
    return {name: 255 * total / len(images) for name, total in sums.items()}


def _mean_change(frames: Sequence[Tensor]) -> float:
    changes = [float((b - a)[_INNER].abs().mean()) for a, b in zip(frames, frames[1:], strict=False)]
    return sum(changes) / len(changes)
