"""L-BFGS on a box: the Gatys reference mode keeps its pixels in [0,1], as the reference code did with L-BFGS-B.

Each iteration holds the coordinates that sit on a bound with the gradient pushing them out, takes the L-BFGS
direction within the others (the two-loop recursion over the last ``history`` steps, restricted to the free
coordinates and scaled by the newest step's curvature), and searches along the projected path
``clip(x + t·d, low, high)``, halving t until the Armijo condition holds. It is a simpler relative of L-BFGS-B
(Byrd, Lu, Nocedal and Zhu, 1995), which also finds a generalised Cauchy point. Unlike optimising a sigmoid of the
pixels, it does not slow down the pixels near black or white.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch
from torch import Tensor

# Remembered steps whose change of gradient is this close to orthogonal to them, or worse, are left out.
CURVATURE = 1e-10
# The optimiser stops after STALLS steps in a row that lower the loss by no more than STALL times its rounding.
STALL, STALLS = 10, 3
# A step along the gradient (the first, and after the memory is cleared) moves no coordinate by more than this
# share of the box: the gradient's own scale says nothing of the step (a Caffe network's loss is in the billions).
FIRST_STEP = 0.01


class BoxLBFGS:
    """Minimises ``closure()`` over one tensor ``variable`` kept within [``low``, ``high``]. ``closure`` evaluates the
    loss at ``variable``'s current value and leaves its gradient in ``variable.grad``. ``step`` runs one iteration;
    with ``line_search=False`` it takes the step ``lr`` (along the gradient, ``lr · FIRST_STEP`` of the box at most)
    without checking it."""

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
        self.memory: deque[tuple[Tensor, Tensor]] = deque(maxlen=history)  # (step, change of gradient)
        self.loss: Tensor | None = None
        self.grad: Tensor | None = None
        self.converged = False  # the loss no longer falls beyond its rounding, even along the gradient
        self._stalls = 0

    def _evaluate(self, closure: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            loss = closure()
        assert self.variable.grad is not None, "the closure must leave the gradient in variable.grad"
        return loss.detach(), self.variable.grad.detach().clone()

    def _direction(self, grad: Tensor, free: Tensor) -> tuple[Tensor, Tensor]:
        """The two-loop recursion (over a non-empty memory) within the free coordinates, and whether any remembered
        step took part. Each step (s, y) is restricted to the free coordinates, which for steps that left the held
        ones where they were gives the curvature of the free ones alone; a step without positive curvature there
        (the angle between s and y, whatever the loss's scale) counts for nothing. No host synchronisation."""
        q = grad * free
        pairs = []
        for s, y in reversed(self.memory):
            s, y = s * free, y * free
            curvature, norm = torch.sum(s * y), torch.sum(y * y)
            usable = curvature > CURVATURE * torch.sqrt(torch.sum(s * s) * norm)
            inverse = torch.where(usable, 1 / curvature, 0.0)
            alpha = inverse * torch.sum(s * q)
            q.sub_(y * alpha)
            pairs.append((s, y, inverse, alpha, norm))
        if pairs:
            _, _, inverse, _, norm = pairs[0]  # the newest step's curvature sets the scale
            q.mul_(torch.where(inverse > 0, 1 / (inverse * norm), 1.0))
        for s, y, inverse, alpha, _ in reversed(pairs):
            q.add_(s * (alpha - inverse * torch.sum(y * q)))
        return q.neg_(), torch.stack([inverse > 0 for _, _, inverse, _, _ in pairs]).any()

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor]) -> Tensor:
        if self.loss is None or self.grad is None:
            self.loss, self.grad = self._evaluate(closure)
        if self.converged:
            return self.loss
        start, loss, grad = self.variable.detach().clone(), self.loss, self.grad
        free = ~(((start <= self.low) & (grad > 0)) | ((start >= self.high) & (grad < 0)))
        step = self.lr
        steepest = not self.memory
        if not steepest:
            direction, used = self._direction(grad, free)
            # a free coordinate on a bound may not be pushed out of the box: clipping would undo that part of the step
            outward = ((start <= self.low) & (direction < 0)) | ((start >= self.high) & (direction > 0))
            direction.masked_fill_(outward, 0)
            steepest = not bool(used & (torch.sum(grad * direction) < 0))
        if steepest:
            self.memory.clear()
            direction = -grad * free
            largest = float(direction.abs().max())
            if largest == 0:
                self.converged = True
                return loss
            step = self.lr * FIRST_STEP * (self.high - self.low) / largest
        for _ in range(self.max_evaluations if self.line_search else 1):
            self.variable.copy_((start + step * direction).clamp_(self.low, self.high))
            new_loss, new_grad = self._evaluate(closure)
            decrease = self.armijo * torch.sum(grad * (self.variable - start))
            if not self.line_search or float(new_loss) <= float(loss + torch.clamp(decrease, max=0)):
                break
            step /= 2
        else:
            if not float(new_loss) < float(loss):  # no progress along this direction: start again from the gradient
                self.variable.copy_(start)
                self.memory.clear()
                self.converged = steepest
                return loss
        # a fall within the loss's rounding: at a minimum, the line search would go on halving through the noise
        rounding = STALL * torch.finfo(new_loss.dtype).eps * abs(float(loss))
        self._stalls = self._stalls + 1 if float(loss) - float(new_loss) <= rounding else 0
        self.converged = self._stalls >= STALLS
        self.memory.append((self.variable - start, new_grad - grad))
        self.loss, self.grad = new_loss, new_grad
        return new_loss
