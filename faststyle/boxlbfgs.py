"""L-BFGS on a box: the Gatys reference mode keeps its pixels in [0,1], as the reference code did with L-BFGS-B.

Each iteration holds the coordinates that sit on a bound with the gradient pushing them out, takes the L-BFGS
direction within the others (the newest ``history`` steps, restricted to the free coordinates and scaled by the
newest step's curvature), and searches along the projected path ``clip(x + t·d, low, high)``, halving t until the
Armijo condition holds. It is a simpler relative of L-BFGS-B (Byrd, Lu, Nocedal and Zhu, 1995), which also finds a
generalised Cauchy point. Unlike optimising a sigmoid of the pixels, it does not slow down the pixels near black or
white.

The direction comes from the compact form of the L-BFGS matrix (Byrd, Nocedal and Schnabel, 1994): two matrix
products over the remembered steps and some float64 algebra on matrices of at most 2·history rows, where the two-loop
recursion takes about ten vector operations per remembered step. On a GPU each operation costs a kernel launch, and
the Gatys loop is bound by launches, not arithmetic.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

# Remembered steps whose change of gradient is this close to orthogonal to them, or worse, are left out.
CURVATURE = 1e-10
# The optimiser stops after STALLS steps in a row that lower the loss by no more than STALL times its rounding.
STALL, STALLS = 10, 3
# A step along the gradient (the first, and after the memory is cleared) moves no coordinate by more than this
# share of the box: the gradient's own scale says nothing of the step (a Caffe network's loss is in the billions).
FIRST_STEP = 0.01
# With the line search to shorten it, the step along the gradient starts at this share instead: from the content
# (Tübingen or Chicago, Starry Night, VGG16), the loss after 5 and 20 passes is 0.72× and 0.90× what 0.01 leaves at
# 128 px, 0.39× and 0.90× at 256 px, 0.55× and 0.95× at 512 px.
SEARCHED_FIRST_STEP = 0.3


def lbfgs_direction(pairs: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
    """−H·``grad`` (flat) for the L-BFGS inverse-Hessian approximation H from ``pairs``: the remembered steps s, then
    their changes of gradient y, (2m, n), oldest first in each half; and whether any pair took part. A pair without
    positive curvature (sᵀy ≤ CURVATURE·|s|·|y|, whatever the loss's scale) is left out; H₀ = γI with γ = sᵀy/yᵀy of
    the newest pair (1 when it is left out). The two-loop recursion's vector, with no host synchronisation.
    """
    m = pairs.shape[0] // 2
    with _exact_float32_matmul(pairs.device):  # TF32 would round the inner products whose differences matter here
        gram = (pairs @ pairs.T).double()
        projections = (pairs @ grad).double()
    ss, sy, yy = gram[:m, :m], gram[:m, m:], gram[m:, m:]
    curvature = sy.diagonal()
    usable = curvature > CURVATURE * torch.sqrt(ss.diagonal() * yy.diagonal())
    kept = usable.double()
    both = kept[:, None] * kept[None, :]
    # a left-out pair becomes a unit row and column of R, which leaves the others' algebra as if it were absent
    r = torch.triu(sy * both) + torch.diag(1 - kept)
    yy = yy * both
    p, q = projections[:m] * kept, projections[m:] * kept
    gamma = torch.where(usable[-1], curvature[-1] / yy[-1, -1], 1.0)
    r_inv_p = torch.linalg.solve_triangular(r, p[:, None], upper=True)
    middle = (torch.diag(curvature * kept) + gamma * yy) @ r_inv_p - gamma * q[:, None]
    top = torch.linalg.solve_triangular(r.T, middle, upper=False)
    coefficients = torch.cat([top, -gamma * r_inv_p]).squeeze(1).to(grad.dtype)
    with _exact_float32_matmul(pairs.device):
        return torch.addmv(grad * gamma.to(grad.dtype), pairs.T, coefficients).neg_(), usable.any()


@contextmanager
def _exact_float32_matmul(device: torch.device) -> Iterator[None]:
    """float32 matrix products in full precision on CUDA, whatever the caller set for its own (TF32)."""
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul
    # torch >= 2.9 refuses to read the legacy flag once the caller has set TF32 through fp32_precision
    flag, exact = ("fp32_precision", "ieee") if hasattr(matmul, "fp32_precision") else ("allow_tf32", False)
    saved = getattr(matmul, flag)
    setattr(matmul, flag, exact)
    try:
        yield
    finally:
        setattr(matmul, flag, saved)


class BoxLBFGS:
    """Minimises ``closure()`` over one tensor ``variable`` kept within [``low``, ``high``]. ``closure`` evaluates the
    loss at ``variable``'s current value and leaves its gradient in ``variable.grad``. ``step`` runs one iteration;
    with ``line_search=False`` it takes the step ``lr`` (along the gradient, ``lr · FIRST_STEP`` of the box at most)
    without checking it. An iteration synchronises with the device once per loss evaluation."""

    def __init__(
        self,
        variable: Tensor,
        low: float = 0.0,
        high: float = 1.0,
        history: int = 8,
        lr: float = 1.0,
        line_search: bool = True,
        max_evaluations: int = 25,
        armijo: float = 1e-4,
    ) -> None:
        self.variable, self.low, self.high = variable, low, high
        self.lr, self.line_search, self.max_evaluations, self.armijo = lr, line_search, max_evaluations, armijo
        self.memory: deque[tuple[Tensor, Tensor]] = deque(maxlen=history)  # (step, change of gradient), flat
        self.loss: Tensor | None = None
        self.grad: Tensor | None = None
        self.converged = False  # the loss no longer falls beyond its rounding, even along the gradient
        self._stalls = 0

    def _evaluate(self, closure: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            loss = closure()
        assert self.variable.grad is not None, "the closure must leave the gradient in variable.grad"
        return loss.detach().reshape(()), self.variable.grad.detach().clone()

    def _direction(self, grad: Tensor, free: Tensor) -> tuple[Tensor, Tensor]:
        """The L-BFGS direction within the free coordinates (``lbfgs_direction`` over the remembered steps restricted
        to them: for steps that left the held coordinates where they were, the curvature of the free ones alone)."""
        pairs = torch.stack([s for s, _ in self.memory] + [y for _, y in self.memory]).mul_(free.reshape(-1))
        direction, used = lbfgs_direction(pairs, (grad * free).reshape(-1))
        return direction.view_as(grad), used

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:
        if self.loss is None or self.grad is None:
            self.loss, self.grad = self._evaluate(closure)
        if self.converged:
            return self.loss
        start, loss, grad = self.variable.detach().clone(), self.loss, self.grad
        at_low, at_high = start <= self.low, start >= self.high
        held = (at_low & (grad > 0)).logical_or_(at_high & (grad < 0))
        free = held.logical_not_()
        step = self.lr
        steepest = not self.memory
        if not steepest:
            direction, used = self._direction(grad, free)
            # a free coordinate on a bound may not be pushed out of the box: clipping would undo that part of the step
            outward = (at_low & (direction < 0)).logical_or_(at_high & (direction > 0))
            direction.masked_fill_(outward, 0)
            steepest = not bool(used & (torch.vdot(grad.reshape(-1), direction.reshape(-1)) < 0))
        if steepest:
            self.memory.clear()
            direction = -grad * free
            largest = float(direction.abs().max())
            if not math.isfinite(largest):  # a NaN in a remembered step's gradient comes here too, as no descent
                raise FloatingPointError(f"the gradient is not finite (its largest magnitude: {largest})")
            if largest == 0:
                self.converged = True
                return loss
            share = SEARCHED_FIRST_STEP if self.line_search else FIRST_STEP
            step = self.lr * share * (self.high - self.low) / largest
        for _ in range(self.max_evaluations if self.line_search else 1):
            torch.add(start, direction, alpha=step, out=self.variable).clamp_(self.low, self.high)
            new_loss, new_grad = self._evaluate(closure)
            moved = self.variable - start
            # one transfer for every decision below: the new loss, the old one, and the Armijo bound on the new
            slope = torch.vdot(grad.reshape(-1), moved.reshape(-1)).to(loss.dtype)
            bound = slope.clamp_(max=0).mul_(self.armijo).add_(loss)
            new, old, bound = torch.stack([new_loss.to(loss.dtype), loss, bound]).tolist()
            if not self.line_search or new <= bound:
                break
            step /= 2
        else:
            if not new < old:  # no progress along this direction: start again from the gradient
                self.variable.copy_(start)
                if steepest and not math.isfinite(new):  # the shortest step too: not a minimum but an overflow
                    self.loss = new_loss
                    raise FloatingPointError(
                        f"the loss is {new} at every step tried along the gradient, down to {step * 2:.3g} of it"
                    )
                self.memory.clear()
                self.converged = steepest
                return loss
        # a fall within the loss's rounding: at a minimum, the line search would go on halving through the noise
        rounding = STALL * torch.finfo(new_loss.dtype).eps * abs(old)
        self._stalls = self._stalls + 1 if old - new <= rounding else 0
        self.converged = self._stalls >= STALLS
        self.memory.append((moved.reshape(-1), (new_grad - grad).reshape(-1)))
        self.loss, self.grad = new_loss, new_grad
        return new_loss
