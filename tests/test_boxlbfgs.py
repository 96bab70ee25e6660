"""L-BFGS on a box (the Gatys reference mode's optimiser): the bounded optimum, monotone progress, no slow-down
near the bounds."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch

from faststyle.boxlbfgs import BoxLBFGS, lbfgs_direction


def _quadratic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) = ½ xᵀAx − bᵀx with A well conditioned and an unconstrained minimum far outside [0,1]ⁿ."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(1, 20, n, dtype=torch.float64)) @ q.T
    b = 30 * torch.randn(n, generator=generator, dtype=torch.float64)
    return a, b


def _quadratic_closure(
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    evaluations: list[int],
    after: Callable[[int], None] | None = None,
) -> Callable[[], torch.Tensor]:
    """The closure of f(x) = ½ xᵀAx − bᵀx, counting its calls in ``evaluations[0]``; ``after(n)`` may spoil the n-th
    call's gradient."""

    def closure() -> torch.Tensor:
        evaluations[0] += 1
        x.grad = None
        loss = 0.5 * x @ a @ x - b @ x
        loss.backward()
        if after is not None:
            after(evaluations[0])
        return loss

    return closure


def _minimise(a: torch.Tensor, b: torch.Tensor, iterations: int) -> tuple[torch.Tensor, list[float], int]:
    x = torch.full((a.shape[0],), 0.5, dtype=torch.float64, requires_grad=True)
    evaluations = [0]
    closure = _quadratic_closure(x, a, b, evaluations)
    optimizer = BoxLBFGS(x)
    losses = [float(optimizer.step(closure)) for _ in range(iterations)]
    return x.detach(), losses, evaluations[0]


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


def _two_loop(steps: list[torch.Tensor], changes: list[torch.Tensor], grad: torch.Tensor) -> torch.Tensor:
    """The textbook two-loop recursion (Nocedal and Wright, algorithm 7.4), pairs without positive curvature
    skipped, H₀ scaled by the newest pair."""
    usable = [float(s @ y) > 1e-10 * float(s.norm() * y.norm()) for s, y in zip(steps, changes, strict=True)]
    q, alphas = grad.clone(), []
    for s, y, ok in reversed(list(zip(steps, changes, usable, strict=True))):
        alpha = float(s @ q) / float(s @ y) if ok else 0.0
        q -= alpha * y
        alphas.append(alpha)
    s, y = steps[-1], changes[-1]
    q *= float(s @ y) / float(y @ y) if usable[-1] else 1.0
    for (s, y, ok), alpha in zip(zip(steps, changes, usable, strict=True), reversed(alphas), strict=True):
        if ok:
            q += s * (alpha - float(y @ q) / float(s @ y))
    return -q


@pytest.mark.parametrize("left_out", [(), (3,), (0, 5), (7,)])
def test_the_compact_direction_is_the_two_loop_recursion(left_out: tuple[int, ...]) -> None:
    """The direction from two matrix products equals the two-loop recursion's, pairs without curvature (made here by
    turning y against s) left out alike, the newest among them."""
    generator = torch.Generator().manual_seed(1)
    a, _ = _quadratic(50, 2)
    steps = [torch.randn(50, generator=generator, dtype=torch.float64) for _ in range(8)]
    changes = [a @ s + 0.1 * torch.randn(50, generator=generator, dtype=torch.float64) for s in steps]
    for i in left_out:
        changes[i] = -changes[i]
    grad = torch.randn(50, generator=generator, dtype=torch.float64)
    direction, used = lbfgs_direction(torch.stack(steps + changes).float(), grad.float())
    expected = _two_loop(steps, changes, grad)
    torch.testing.assert_close(direction.double(), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    assert direction.dtype == torch.float32 and bool(used)
    assert float(grad @ expected) < 0  # a descent direction


def test_no_usable_pair_leaves_the_gradient() -> None:
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    direction, used = lbfgs_direction(torch.cat([s, -s]), torch.tensor([0.5, -2.0]))
    assert not bool(used)
    torch.testing.assert_close(direction, torch.tensor([-0.5, 2.0]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_gradient_beside_a_finite_loss_is_raised(bad: float) -> None:
    """It stopped as if converged, silently, 25 evaluations later: the line search found no fall along NaN."""
    a, b = _quadratic(20, 1)
    x = torch.full((20,), 0.5, dtype=torch.float64, requires_grad=True)
    evaluations = [0]

    def spoil(n: int) -> None:
        if n >= 3:
            x.grad[0] = bad

    closure, optimizer = _quadratic_closure(x, a, b, evaluations, spoil), BoxLBFGS(x)
    with pytest.raises(FloatingPointError, match="the gradient is not finite"):
        for _ in range(5):
            optimizer.step(closure)
    assert evaluations[0] == 3 and not optimizer.converged


def test_a_loss_that_is_not_finite_wherever_it_steps_is_raised() -> None:
    """It restored the start and said it had converged, and every later iteration did nothing: what an overflow in
    reduced precision looks like, the loss finite only at the start."""
    a, b = _quadratic(20, 3)
    x = torch.full((20,), 0.5, dtype=torch.float64, requires_grad=True)
    start, evaluations = x.detach().clone(), [0]
    quadratic = _quadratic_closure(x, a, b, evaluations)

    def overflowing() -> torch.Tensor:
        loss = quadratic()
        return loss if torch.equal(x.detach(), start) else loss * float("nan")

    optimizer = BoxLBFGS(x)
    with pytest.raises(FloatingPointError, match="the loss is nan at every step tried along the gradient"):
        optimizer.step(overflowing)
    assert evaluations[0] == 1 + optimizer.max_evaluations and not optimizer.converged
    assert torch.equal(x.detach(), start) and not math.isfinite(float(optimizer.loss))


_TF32_CHECK = """
import torch
from faststyle.boxlbfgs import _exact_float32_matmul
matmul = torch.backends.cuda.matmul
{setup}
before = matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32
with _exact_float32_matmul(torch.device("cuda")):
    inside = matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32
after = matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32
print(before, inside, after)
"""


@pytest.mark.parametrize(
    "setup",
    [
        "",
        "matmul.allow_tf32 = True",
        "torch.set_float32_matmul_precision('high')",
        "matmul.fp32_precision = 'tf32' if hasattr(matmul, 'fp32_precision') else None",
    ],
)
def test_the_direction_turns_tf32_off_and_back_however_the_caller_set_it(setup: str) -> None:
    """Only flags are read and set: this runs without a GPU. In a fresh process each, as the flags are global; torch
    refuses to read the legacy flag after the new API has been used, which made every CUDA L-BFGS run fail."""
    done = subprocess.run([sys.executable, "-c", _TF32_CHECK.format(setup=setup)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    before, inside, after = done.stdout.split()
    assert inside in ("ieee", "False") and after == before
    if setup:
        assert before in ("tf32", "True")
