"""A plain Adam optimiser for the registration and part-distillation loops.

Same update as ``torch.optim.Adam`` with its defaults (bias-corrected moments, no weight
decay, no amsgrad), without its machinery: constructing ``torch.optim.Adam`` imports
``torch._dynamo`` (2.5-3.6 s per process, for every worker and benchmark child), and the
loops here need none of what that brings.
"""
from __future__ import annotations

import torch


class Adam:
    """Adam over a list of leaf tensors (``lr``, ``betas``, ``eps`` as in torch.optim.Adam)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("Adam: no parameters to optimise")
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self._m = [torch.zeros_like(p) for p in self.params]
        self._v = [torch.zeros_like(p) for p in self.params]
        self._t = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        self._t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1 ** self._t, 1.0 - b2 ** self._t
        for p, m, v in zip(self.params, self._m, self._v):
            if p.grad is None:
                continue
            g = p.grad
            m.mul_(b1).add_(g, alpha=1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = (v / c2).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / c1)
