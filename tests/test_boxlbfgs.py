"""L-BFGS on a box (the Gatys reference mode's optimiser): the bounded optimum, monotone progress, no slow-down
near the bounds."""

from __future__ import annotations

import pytest
import torch

from faststyle.boxlbfgs import BoxLBFGS


def _quadratic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) = ½ xᵀAx − bᵀx with A well conditioned and an unconstrained minimum far outside [0,1]ⁿ."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(1, 20, n, dtype=torch.float64)) @ q.T
    b = 30 * torch.randn(n, generator=generator, dtype=torch.float64)
    return a, b


def _minimise(a: torch.Tensor, b: torch.Tensor, iterations: int) -> tuple[torch.Tensor, list[float], int]:
    x = torch.full((a.shape[0],), 0.5, dtype=torch.float64, requires_grad=True)

    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        x.grad = None
        loss = 0.5 * x @ a @ x - b @ x
        loss.backward()
        return loss

    optimizer = BoxLBFGS(x)
    losses = [float(optimizer.step(closure)) for _ in range(iterations)]
    return x.detach(), losses, evaluations


@pytest.mark.parametrize("scale", [1.0, 1e12])  # the Gatys loss in Caffe units is in the billions
def test_it_finds_the_optimum_on_the_box(scale: float) -> None:
    a, b = _quadratic(60, 0)
    a, b = a * scale, b * scale
    x, losses, evaluations = _minimise(a, b, 40)
    assert evaluations < 60  # measured 22 (about one per iteration until it has converged)
    gradient = a @ x - b
    lower, upper = x <= 0, x >= 1
    assert int(lower.sum()) > 5 and int(upper.sum()) > 5 and int((~lower & ~upper).sum()) > 5
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    # Karush-Kuhn-Tucker: no gradient along the free coordinates, and the bounds hold the others back
    assert float(gradient[~lower & ~upper].abs().max()) < 1e-4 * float(b.abs().max())
    assert bool((gradient[lower] > 0).all()) and bool((gradient[upper] < 0).all())
    assert all(later <= earlier for earlier, later in zip(losses, losses[1:], strict=False))


def test_values_near_a_bound_move_as_fast_as_the_others() -> None:
    """Minimising Σ (x − c)² from 0.5: the targets near 0 and 1 are met as soon as those in the middle."""
    target = torch.tensor([0.001, 0.999, 0.3, 0.6, -2.0, 3.0], dtype=torch.float64)
    x = torch.full_like(target, 0.5, requires_grad=True)

    def closure() -> torch.Tensor:
        x.grad = None
        loss = ((x - target) ** 2).sum()
        loss.backward()
        return loss

    optimizer = BoxLBFGS(x)
    for _ in range(4):
        optimizer.step(closure)
    torch.testing.assert_close(x.detach(), target.clamp(0, 1), atol=1e-6, rtol=0)


def test_unchecked_steps_take_the_step_size() -> None:
    x = torch.zeros(3, requires_grad=True)

    def closure() -> torch.Tensor:
        x.grad = None
        loss = (x - torch.tensor([0.2, 0.4, 0.6])).pow(2).sum()
        loss.backward()
        return loss

    optimizer = BoxLBFGS(x, lr=0.5, line_search=False)
    optimizer.step(closure)  # along -g = (0.4, 0.8, 1.2), the largest change lr · FIRST_STEP = 0.005
    torch.testing.assert_close(x.detach(), torch.tensor([0.4, 0.8, 1.2]) * 0.005 / 1.2)
